// The node configuration: every bad key is one clear error that names it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, parseNodeConfig } from '../../src/node/config';

const base = (): Record<string, unknown> => ({
  cluster: { name: 'c', id: '00112233445566778899aabbccddeeff', secret: 'ff'.repeat(32) },
  node: { name: 'alpha', dataDir: '/tmp/x', syncListen: '127.0.0.2:7788', apiListen: '127.0.0.2:7780', nbdListen: '127.0.0.2:10809' },
  peer: { name: 'beta', syncAddress: '127.0.0.3:7788' },
  volumes: [{ name: 'vol0', size: '1G', primary: 'alpha' }],
});

function refused(change: (c: Record<string, unknown>) => void, message: RegExp): void {
  const c = base();
  change(c);
  assert.throws(() => parseNodeConfig(JSON.stringify(c)), (e: unknown) => e instanceof ConfigError && message.test(e.message), message.source);
}

test('defaults: one heartbeat link beside the sync ports, policy manual, each volume a pool of its own', () => {
  const c = parseNodeConfig(JSON.stringify(base()));
  assert.deepEqual(c.heartbeat.links, [{ listen: { host: '127.0.0.2', port: 7789 }, peer: { host: '127.0.0.3', port: 7789 } }]);
  assert.equal(c.heartbeat.intervalMs, 200);
  assert.equal(c.heartbeat.timeoutMs, 1000);
  assert.equal(c.fencing.policy, 'manual');
  assert.deepEqual(c.pools, [{ name: 'vol0', volumes: ['vol0'], preferredNode: 'alpha', autoFailback: false, nbdListen: null, floatingIps: [], nbdPort: 10809, filesystem: null, applications: [], control: 'managed' }]);
  assert.deepEqual(c.floatingIp, { driver: 'linux', probeMs: 300, announceCount: 3 });
  assert.equal(c.volumes[0]?.activityLogExtents, 1017);
});

test('pools: the preferred node is where a new volume starts; volumes in exactly one pool', () => {
  const c = base();
  c.volumes = [{ name: 'a', size: '1M' }, { name: 'b', size: '1M' }];
  c.pools = [{ name: 'p', volumes: ['a', 'b'], preferredNode: 'beta', nbdListen: '127.0.0.10:10809' }];
  const parsed = parseNodeConfig(JSON.stringify(c));
  assert.deepEqual(parsed.volumes.map((v) => v.primary), ['beta', 'beta']);
  assert.deepEqual(parsed.pools[0]?.nbdListen, { host: '127.0.0.10', port: 10809 });
});

test('bad heartbeat, fencing and pool settings are refused, naming the key', () => {
  refused((c) => { c.heartbeat = { intervalMs: 200, timeoutMs: 500 }; }, /^heartbeat\.timeoutMs: must be at least 3 × intervalMs \(600\)/);
  refused((c) => { c.heartbeat = { links: [] }; }, /^heartbeat\.links: must be a non-empty list/);
  refused((c) => { c.heartbeat = { links: [{ listen: '127.0.0.2:1' }] }; }, /^heartbeat\.links\[0\]\.peer/);
  refused((c) => { c.fencing = { policy: 'stonith' }; }, /^fencing\.policy: must be one of none, ignore, manual, fence, witness/);
  refused((c) => { c.fencing = { policy: 'fence' }; }, /^fencing\.command: the fence policy needs a command/);
  refused((c) => { c.fencing = { policy: 'fence', command: ['ok', ''] }; }, /^fencing\.command: must be a list/);
  refused((c) => { c.fencing = { policy: 'ignore', checkAddresses: ['gateway'] }; }, /^fencing\.checkAddresses: must be a list of at most 8 IP addresses/);
  refused((c) => { c.pools = [{ name: 'p', volumes: ['vol0'], preferredNode: 'alpha', control: 'gone' }]; }, /^pools\[0\]\.control: must be one of managed, unmanaged, exported/);
  refused((c) => { c.fencing = { policy: 'witness' }; }, /^fencing\.witness: the witness policy needs the witness address/);
  refused((c) => { c.fencing = { policy: 'ignore', extra: 1 }; }, /^fencing\.extra: unknown key/);
  refused((c) => { c.pools = [{ name: 'p', volumes: ['nope'], preferredNode: 'alpha' }]; }, /^pools\[0\]\.volumes\[0\]: "nope" is not a configured volume/);
  refused((c) => { c.pools = [{ name: 'p', volumes: ['vol0'], preferredNode: 'gamma' }]; }, /^pools\[0\]\.preferredNode: must be alpha or beta/);
  refused((c) => { c.pools = [{ name: 'p', volumes: ['vol0'], preferredNode: 'beta' }]; }, /^volumes\[0\]\.primary: differs from the preferredNode of pool p/);
  refused((c) => {
    c.volumes = [{ name: 'a', size: '1M' }, { name: 'b', size: '1M' }];
    c.pools = [{ name: 'p', volumes: ['a'], preferredNode: 'alpha' }];
  }, /^pools: volume b is in no pool/);
  refused((c) => { (c.volumes as Array<Record<string, unknown>>)[0] = { name: 'vol0', size: '1G', primary: 'alpha', activityLogExtents: 2000 }; },
    /^volumes\[0\]\.activityLogExtents: must be an integer from 2 to 1017/);
  refused((c) => { c.extra = true; }, /^extra: unknown key/);
  refused((c) => { (c.cluster as Record<string, unknown>).id = 'xyz'; }, /^cluster\.id: must be 32 hex digits/);
});

test('floating IPs: ADDR/PREFIX on an interface, exported at the pool\'s nbdPort; one pool per address', () => {
  const c = base();
  c.volumes = [{ name: 'a', size: '1M' }, { name: 'b', size: '1M' }];
  c.pools = [
    { name: 'p1', volumes: ['a'], preferredNode: 'alpha', floatingIps: [{ address: '198.18.0.100/24', interface: 'eth0' }, { address: '2001:db8::10/64', interface: 'eth1' }], nbdPort: 10810 },
    { name: 'p2', volumes: ['b'], preferredNode: 'beta', floatingIps: [{ address: '198.18.0.101/24', interface: 'eth0' }] },
  ];
  const parsed = parseNodeConfig(JSON.stringify(c));
  assert.deepEqual(parsed.pools[0]?.floatingIps, [
    { address: '198.18.0.100', prefix: 24, family: 4, interface: 'eth0' },
    { address: '2001:db8::10', prefix: 64, family: 6, interface: 'eth1' },
  ]);
  assert.equal(parsed.pools[0]?.nbdPort, 10810);
  assert.equal(parsed.pools[1]?.nbdPort, 10809, 'the node\'s NBD port by default');
  const lo = base();
  lo.floatingIp = { driver: 'loopback' };
  lo.pools = [{ name: 'p', volumes: ['vol0'], preferredNode: 'alpha', floatingIps: [{ address: '127.0.0.10/8' }] }];
  assert.deepEqual(parseNodeConfig(JSON.stringify(lo)).pools[0]?.floatingIps, [{ address: '127.0.0.10', prefix: 8, family: 4, interface: 'lo' }]);
});

test('bad floating IPs are refused, naming the key', () => {
  const pool = (ips: unknown, extra: Record<string, unknown> = {}) => (c: Record<string, unknown>): void => {
    c.pools = [{ name: 'p', volumes: ['vol0'], preferredNode: 'alpha', floatingIps: ips, ...extra }];
  };
  refused(pool([{ address: '198.18.0.100', interface: 'eth0' }]), /^pools\[0\]\.floatingIps\[0\]\.address: "198\.18\.0\.100" lacks a prefix length/);
  refused(pool([{ address: '198.18.0.300/24', interface: 'eth0' }]), /^pools\[0\]\.floatingIps\[0\]\.address: "198\.18\.0\.300" is not an IPv4 or IPv6 address/);
  refused(pool([{ address: '198.18.0.100/33', interface: 'eth0' }]), /^pools\[0\]\.floatingIps\[0\]\.address: prefix "33" must be 0\.\.32/);
  refused(pool([{ address: '198.18.0.100/24' }]), /^pools\[0\]\.floatingIps\[0\]\.interface: must be a non-empty string/);
  refused(pool([{ address: '198.18.0.100/24', interface: 'a-very-long-interface' }]), /^pools\[0\]\.floatingIps\[0\]\.interface: "a-very-long-interface" is not an interface name \(at most 15/);
  refused(pool([{ address: '127.0.0.10/8', interface: 'lo' }]), /^pools\[0\]\.floatingIps\[0\]\.address: 127\.0\.0\.10 is a loopback address: use floatingIp\.driver "loopback"/);
  refused(pool([{ address: '198.18.0.100/24', interface: 'eth0' }], { nbdListen: '127.0.0.2:1' }), /^pools\[0\]\.nbdListen: a pool with floating IPs exports on them/);
  refused(pool([], { nbdPort: 10 }), /^pools\[0\]\.nbdPort: is the port on the floating IPs/);
  refused(pool(Array.from({ length: 17 }, (_, i) => ({ address: `198.18.0.${i + 1}/24`, interface: 'eth0' }))), /^pools\[0\]\.floatingIps: must be a list of at most 16/);
  refused((c) => { c.floatingIp = { driver: 'vrrp' }; }, /^floatingIp\.driver: must be one of linux, loopback/);
  refused((c) => {
    c.floatingIp = { driver: 'loopback' };
    pool([{ address: '198.18.0.100/24', interface: 'eth0' }])(c);
  }, /^pools\[0\]\.floatingIps\[0\]\.address: the loopback driver moves only 127\.0\.0\.0\/8/);
  refused((c) => {
    c.volumes = [{ name: 'a', size: '1M' }, { name: 'b', size: '1M' }];
    c.pools = [
      { name: 'p1', volumes: ['a'], preferredNode: 'alpha', floatingIps: [{ address: '198.18.0.100/24', interface: 'eth0' }] },
      { name: 'p2', volumes: ['b'], preferredNode: 'alpha', floatingIps: [{ address: '198.18.0.100/24', interface: 'eth1' }] },
    ];
  }, /^pools: floating IP 198\.18\.0\.100 is in pools p1 and p2/);
});
