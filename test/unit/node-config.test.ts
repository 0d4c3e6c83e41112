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
  assert.deepEqual(c.pools, [{ name: 'vol0', volumes: ['vol0'], preferredNode: 'alpha', autoFailback: false, nbdListen: null }]);
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
