// The pieces of `tandem cluster create` / `join` (docs/cluster-setup.md) without processes:
// the token codec, the MACs of the join exchange, the one-time nonces, the join request's
// checks, and the files each node ends up with.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test } from 'node:test';
import { canonicalJson } from '../../src/util/canonical-json';
import { parseNodeConfig } from '../../src/node/config';
import { acceptMac, canonicalFields, joinAuthLimits, joinKey, macMatches, NonceStore, requestMac, type JoinRequestFields } from '../../src/node/join-auth';
import {
  configText, isWaitingConfigText, joinedConfigObject, joinerConfigObject, parseWaitingConfig, tokenOf, waitingConfigObject, type CreateOptions,
} from '../../src/node/join-files';
import { parseJoinRequest } from '../../src/node/join';
import {
  JoinTokenError, checkSharedSettings, decodeJoinToken, encodeJoinToken, joinTokenLimits, sharedSettingsOf, type JoinToken,
} from '../../src/node/join-token';

const ID = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const SECRET = Buffer.alloc(32, 0x5a);

function token(over: Partial<JoinToken> = {}): JoinToken {
  return {
    cluster: { name: 'store', id: ID, secret: SECRET },
    node: {
      name: 'alpha',
      sync: { host: '192.0.2.1', port: 7788, text: '192.0.2.1:7788' },
      api: { host: '192.0.2.1', port: 7780, text: '192.0.2.1:7780' },
      heartbeat: [{ host: '198.51.100.1', port: 7789, text: '198.51.100.1:7789' }, { host: '2001:db8::1', port: 7789, text: '[2001:db8::1]:7789' }],
    },
    settings: { heartbeat: { intervalMs: 100, timeoutMs: 500 }, fencing: { policy: 'witness', witness: '203.0.113.9:7790' }, floatingIp: { driver: 'linux' } },
    ...over,
  };
}

/** base64url of a JSON document after the prefix, for tokens the encoder would never make */
function raw(doc: unknown): string {
  return `tandem1.${Buffer.from(JSON.stringify(doc)).toString('base64url')}`;
}

function docOf(t: JoinToken): Record<string, unknown> {
  return JSON.parse(Buffer.from(encodeJoinToken(t).slice('tandem1.'.length), 'base64url').toString('utf8')) as Record<string, unknown>;
}

type Obj = Record<string, unknown>;
interface Doc { cluster: Obj; node: Obj; settings: Obj }

function refusedToken(text: string, message: RegExp): void {
  assert.throws(() => decodeJoinToken(text), (e: unknown) => e instanceof JoinTokenError && message.test(e.message), message.source);
}

test('token: what is encoded is decoded, prefix tandem1. and base64url JSON', () => {
  const t = token();
  const text = encodeJoinToken(t);
  assert.match(text, /^tandem1\.[A-Za-z0-9_-]+$/);
  assert.deepEqual(decodeJoinToken(text), t);
  // copied with a newline or blanks around it
  assert.deepEqual(decodeJoinToken(`  ${text}\n`), t);
  const doc = docOf(t) as { cluster: { secret: string }; node: { heartbeat: string[] } };
  assert.equal(doc.cluster.secret, SECRET.toString('hex'), 'the token holds the secret');
  assert.deepEqual(doc.node.heartbeat, ['198.51.100.1:7789', '[2001:db8::1]:7789']);
});

test('token: garbage and every bad field are refused with what is wrong', () => {
  const good = docOf(token()) as unknown as Doc;
  const bad = (change: (d: Doc) => void): string => {
    const d = structuredClone(good);
    change(d);
    return raw(d);
  };
  refusedToken('', /must start with "tandem1\."/);
  refusedToken('hello', /must start with "tandem1\."/);
  refusedToken('tandem2.eyJ9', /must start with "tandem1\."/);
  refusedToken('tandem1.', /base64url/);
  refusedToken('tandem1.abc def', /base64url/);
  refusedToken('tandem1.abc+/=', /base64url/);
  refusedToken('tandem1.aGVsbG8', /does not decode/);
  refusedToken(encodeJoinToken(token()).slice(0, 60), /does not decode/);
  refusedToken(`tandem1.${'A'.repeat(joinTokenLimits.textCharsMax)}`, /longer than 8192/);
  refusedToken(raw([]), /token: must be an object/);
  refusedToken(raw({ ...good, extra: 1 }), /token\.extra: unknown key/);
  refusedToken(bad((d) => { delete (d as Partial<Doc>).cluster; }), /token\.cluster: must be an object/);
  refusedToken(bad((d) => { d.cluster.id = 'abcd'; }), /token\.cluster\.id: must be 32 hex digits/);
  refusedToken(bad((d) => { d.cluster.secret = 'zz'.repeat(32); }), /token\.cluster\.secret: must be 32 to 2048 hex digits/);
  refusedToken(bad((d) => { d.cluster.secret = 'ab'.repeat(8); }), /token\.cluster\.secret/);
  refusedToken(bad((d) => { d.cluster.name = 'a b'; }), /token\.cluster\.name: "a b" is not a name/);
  refusedToken(bad((d) => { d.node.name = 7; }), /token\.node\.name: 7 is not a name/);
  refusedToken(bad((d) => { d.node.sync = 'nowhere'; }), /token\.node\.sync: "nowhere" is not HOST:PORT/);
  refusedToken(bad((d) => { d.node.api = '0.0.0.0:7780'; }), /token\.node\.api: 0\.0\.0\.0 is a wildcard/);
  refusedToken(bad((d) => { d.node.sync = '192.0.2.1:0'; }), /token\.node\.sync: port 0/);
  refusedToken(bad((d) => { d.node.heartbeat = ['hb.example:7789']; }), /token\.node\.heartbeat\[0\]: hb\.example is not an IP address/);
  refusedToken(bad((d) => { d.node.heartbeat = Array(9).fill('192.0.2.1:1'); }), /token\.node\.heartbeat: must be a list of at most 8/);
  refusedToken(bad((d) => { d.node.role = 'admin'; }), /token\.node\.role: unknown key/);
  refusedToken(bad((d) => { d.settings.fencing = { policy: 'stonith' }; }), /token\.settings\.fencing\.policy: must be one of none, ignore, manual, fence, witness/);
  refusedToken(bad((d) => { d.settings.fencing = { command: ['/bin/sh'] }; }), /token\.settings\.fencing\.command: unknown key/);
  refusedToken(bad((d) => { d.settings.heartbeat = { intervalMs: '100' }; }), /token\.settings\.heartbeat\.intervalMs: must be a non-negative integer/);
  refusedToken(bad((d) => { d.settings.heartbeat = { links: [] }; }), /token\.settings\.heartbeat\.links: unknown key/);
  refusedToken(bad((d) => { d.settings.floatingIp = { driver: 'magic' }; }), /token\.settings\.floatingIp\.driver: must be one of linux, loopback/);
  refusedToken(bad((d) => { d.settings.notify = {}; }), /token\.settings\.notify: unknown key/);
});

test('shared settings: only the keys both nodes must agree on, compared canonically', () => {
  const file = {
    cluster: {}, node: {},
    heartbeat: { intervalMs: 100, links: [{ listen: '192.0.2.1:7789' }] },
    fencing: { policy: 'fence', command: ['/usr/sbin/fence_ipmilan', '--ip=10.0.0.2'], retryMs: 2000 },
    floatingIp: { driver: 'loopback' }, notify: [],
  };
  assert.deepEqual(sharedSettingsOf(file), { heartbeat: { intervalMs: 100 }, fencing: { policy: 'fence', retryMs: 2000 }, floatingIp: { driver: 'loopback' } });
  assert.deepEqual(sharedSettingsOf({}), {});
  assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: 'x' } }), '{"a":{"c":"x","d":[1,{"x":1,"y":2}]},"b":1}');
  assert.equal(canonicalJson(checkSharedSettings({ fencing: { witness: '203.0.113.9:7790', policy: 'witness' } })),
    canonicalJson(checkSharedSettings({ fencing: { policy: 'witness', witness: '203.0.113.9:7790' } })));
});

function fields(over: Partial<JoinRequestFields> = {}): JoinRequestFields {
  return {
    clusterId: ID.toString('hex'), node: 'beta', syncAddress: '192.0.2.2:7788', apiAddress: '198.51.100.2:7780', heartbeat: ['198.51.100.2:7789'],
    settings: { heartbeat: { intervalMs: 100 } }, nonce: 'ab'.repeat(32), ...over,
  };
}

test('join MAC: covers every field, needs the secret, and is checked in constant time on exact hex', () => {
  const key = joinKey(ID, SECRET);
  const mac = requestMac(key, fields());
  assert.equal(mac.length, joinAuthLimits.macBytes);
  assert.deepEqual(requestMac(joinKey(ID, Buffer.from(SECRET)), fields()), mac, 'deterministic');
  assert.equal(macMatches(mac, mac.toString('hex')), true);
  const changed: Array<Partial<JoinRequestFields>> = [
    { clusterId: 'ff'.repeat(16) }, { node: 'gamma' }, { syncAddress: '192.0.2.2:7789' }, { heartbeat: [] },
    { heartbeat: ['198.51.100.2:7789', '198.51.100.3:7789'] }, { settings: {} }, { settings: { heartbeat: { intervalMs: 101 } } }, { nonce: 'cd'.repeat(32) },
  ];
  for (const c of changed) assert.equal(macMatches(requestMac(key, fields(c)), mac.toString('hex')), false, JSON.stringify(c));
  // another secret, or the same secret of another cluster id: another key
  assert.equal(macMatches(requestMac(joinKey(ID, crypto.randomBytes(32)), fields()), mac.toString('hex')), false);
  assert.equal(macMatches(requestMac(joinKey(Buffer.alloc(16, 1), SECRET), fields()), mac.toString('hex')), false);
  // not 64 lowercase hex digits: never a match, never a throw
  for (const given of [undefined, 42, '', mac.toString('hex').slice(2), mac.toString('hex').toUpperCase(), `${mac.toString('hex')}00`, 'zz'.repeat(32)]) {
    assert.equal(macMatches(mac, given), false, String(given));
  }
  // the answer is bound to the request it accepts
  const a = acceptMac(key, { clusterId: ID.toString('hex'), nonce: 'ab'.repeat(32), requestMac: mac.toString('hex'), node: 'alpha', peer: 'beta' });
  assert.notDeepEqual(a, acceptMac(key, { clusterId: ID.toString('hex'), nonce: 'ab'.repeat(32), requestMac: mac.toString('hex'), node: 'alpha', peer: 'gamma' }));
  assert.notDeepEqual(a, mac);
});

test('canonical fields: within one layout, no two field lists encode alike', () => {
  assert.notDeepEqual(canonicalFields(['ab', 'c']), canonicalFields(['a', 'bc']));
  assert.notDeepEqual(canonicalFields(['', 'a']), canonicalFields(['a', '']));
  assert.notDeepEqual(canonicalFields([['a', 'b'], 'c']), canonicalFields([['a'], 'b', 'c']));
  assert.notDeepEqual(canonicalFields([[], 'a']), canonicalFields([['a'], '']));
  assert.deepEqual(canonicalFields(['é']), Buffer.from([0, 0, 0, 2, 0xc3, 0xa9]));
});

test('nonces: each good once, for a short time; the oldest go when too many are out', () => {
  let now = 1_000_000;
  let n = 0;
  const store = new NonceStore(() => now, (bytes) => { const b = Buffer.alloc(bytes); b.writeUInt32BE(++n); return b; });
  const a = store.issue();
  assert.equal(a.nonce.length, 64);
  assert.equal(a.expiresInMs, joinAuthLimits.nonceTtlMs);
  assert.equal(store.consume(a.nonce), true);
  assert.equal(store.consume(a.nonce), false, 'used');
  assert.equal(store.consume('00'.repeat(32)), false, 'never handed out');
  const b = store.issue();
  now += joinAuthLimits.nonceTtlMs;
  assert.equal(store.consume(b.nonce), true, 'good up to the end of its time');
  const c = store.issue();
  now += joinAuthLimits.nonceTtlMs + 1;
  assert.equal(store.consume(c.nonce), false, 'stale');
  const many = Array.from({ length: joinAuthLimits.noncesOutstandingMax + 1 }, () => store.issue().nonce);
  assert.equal(store.outstanding, joinAuthLimits.noncesOutstandingMax);
  assert.equal(store.consume(many[0] as string), false, 'the oldest went');
  assert.equal(store.consume(many[many.length - 1] as string), true);
  // real randomness by default
  const real = new NonceStore();
  assert.notEqual(real.issue().nonce, real.issue().nonce);
});

test('join request: every field checked, unknown ones refused', () => {
  const key = joinKey(ID, SECRET);
  const good = (): Record<string, unknown> => ({ ...fields(), mac: requestMac(key, fields()).toString('hex') });
  const r = parseJoinRequest(good());
  assert.equal(r.node, 'beta');
  assert.deepEqual(r.heartbeat, ['198.51.100.2:7789']);
  const refused = (change: (b: Record<string, unknown>) => void, message: RegExp): void => {
    const b = good();
    change(b);
    assert.throws(() => parseJoinRequest(b), (e: unknown) => (e as { code?: string }).code === 'ERR_BAD_REQUEST' && message.test((e as Error).message), message.source);
  };
  refused((b) => { b.admin = true; }, /unknown field "admin"/);
  refused((b) => { delete b.mac; }, /mac must be 64 lowercase hex digits/);
  refused((b) => { b.nonce = 'AB'.repeat(32); }, /nonce must be 64 lowercase hex digits/);
  refused((b) => { b.clusterId = 'ab'; }, /clusterId must be 32 lowercase hex digits/);
  refused((b) => { b.node = '../etc'; }, /node must be a node name/);
  refused((b) => { b.syncAddress = '0.0.0.0:7788'; }, /syncAddress: 0\.0\.0\.0 is a wildcard/);
  refused((b) => { b.heartbeat = 'x'; }, /heartbeat must be a list/);
  refused((b) => { b.heartbeat = ['name.example:1']; }, /heartbeat\[0\]: name\.example is not an IP address/);
  refused((b) => { b.settings = { fencing: { command: ['x'] } }; }, /settings\.fencing\.command: unknown key/);
});

const create = (over: Partial<CreateOptions> = {}): CreateOptions => ({
  clusterName: 'store', clusterId: ID, secret: SECRET, nodeName: 'alpha', dataDir: '/var/lib/tandem',
  sync: '127.0.0.41:7788', api: '127.0.0.41:7780', nbd: '127.0.0.41:10809', heartbeat: ['127.0.0.41:7791', '127.0.0.43:7791'],
  heartbeatIntervalMs: 100, fencingPolicy: 'fence', fenceCommand: ['/bin/true', 'beta'], floatingIpDriver: 'loopback', ...over,
});

test('files: the waiting file, the first node once joined, and the joining node pair link i with link i', () => {
  const text = configText(waitingConfigObject(create()), true);
  assert.equal(isWaitingConfigText(text), true);
  const w = parseWaitingConfig(text);
  assert.deepEqual(w.heartbeatListens.map((h) => h.text), ['127.0.0.41:7791', '127.0.0.43:7791']);
  assert.deepEqual(w.settings, { heartbeat: { intervalMs: 100 }, fencing: { policy: 'fence' }, floatingIp: { driver: 'loopback' } });
  const t = tokenOf(w);
  assert.deepEqual(decodeJoinToken(encodeJoinToken(t)), t);

  const joined = parseNodeConfig(configText(joinedConfigObject(w.raw, { name: 'beta', syncAddress: '127.0.0.42:7788', apiAddress: '127.0.0.44:7780' }, ['127.0.0.42:7791', '127.0.0.44:7791'])));
  assert.deepEqual(joined.peer.apiAddress, { host: '127.0.0.44', port: 7780 }, 'the peer\'s API as it said at the join');
  assert.equal(joined.peer.name, 'beta');
  assert.deepEqual(joined.heartbeat.links.map((l) => [`${l.listen.host}:${l.listen.port}`, `${l.peer.host}:${l.peer.port}`]),
    [['127.0.0.41:7791', '127.0.0.42:7791'], ['127.0.0.43:7791', '127.0.0.44:7791']]);
  assert.deepEqual(joined.fencing.command, ['/bin/true', 'beta']);
  assert.equal(isWaitingConfigText(configText(joinedConfigObject(w.raw, { name: 'beta', syncAddress: '127.0.0.42:7788', apiAddress: '127.0.0.42:7780' }, ['127.0.0.42:7791', '127.0.0.44:7791']))), false);

  const joiner = parseNodeConfig(configText(joinerConfigObject(t, {
    nodeName: 'beta', dataDir: '/var/lib/tandem', sync: '127.0.0.42:7788', api: '127.0.0.42:7780', nbd: '127.0.0.42:10809',
    heartbeat: ['127.0.0.42:7791', '127.0.0.44:7791'], fenceCommand: ['/bin/true', 'alpha'],
  })));
  assert.deepEqual(joiner.cluster, joined.cluster);
  assert.deepEqual(joiner.peer, { name: 'alpha', syncAddress: { host: '127.0.0.41', port: 7788 }, apiAddress: { host: '127.0.0.41', port: 7780 } });
  assert.deepEqual(joiner.heartbeat.links.map((l) => [l.peer, l.listen]), joined.heartbeat.links.map((l) => [l.listen, l.peer]));
  assert.equal(joiner.heartbeat.intervalMs, 100);
  assert.equal(joiner.fencing.policy, 'fence');
  assert.deepEqual(joiner.fencing.command, ['/bin/true', 'alpha']);
  assert.equal(joiner.floatingIp.driver, 'loopback');
});

test('files: a waiting file without links uses the default link; a bad one is refused naming the key', () => {
  const w = parseWaitingConfig(configText(waitingConfigObject(create({ heartbeat: [], fencingPolicy: undefined, fenceCommand: undefined })), true));
  assert.deepEqual(w.heartbeatListens, []);
  assert.deepEqual(w.cfg.heartbeat.links.map((l) => l.listen), [{ host: '127.0.0.41', port: 7789 }]);
  const refused = (change: (o: Record<string, unknown>) => void, message: RegExp): void => {
    const o = waitingConfigObject(create());
    change(o);
    assert.throws(() => parseWaitingConfig(JSON.stringify(o)), (e: unknown) => e instanceof Error && message.test(e.message), message.source);
  };
  refused((o) => { o.volumes = [{ name: 'v', size: '1G' }]; }, /^volumes: a node that waits for a peer to join has none yet/);
  refused((o) => { (o.heartbeat as { links: unknown[] }).links = [{ listen: '127.0.0.41:7791', peer: '127.0.0.42:7791' }]; }, /^heartbeat\.links\[0\]\.peer: unknown key/);
  refused((o) => { (o.node as Record<string, unknown>).syncListen = '0.0.0.0:7788'; }, /^node\.syncListen: 0\.0\.0\.0 is a wildcard/);
  refused((o) => { (o.fencing as Record<string, unknown>).command = undefined; }, /^fencing\.command: the fence policy needs a command/);
  refused((o) => { (o.cluster as Record<string, unknown>).id = 'x'; }, /^cluster\.id: must be 32 hex digits/);
  assert.equal(isWaitingConfigText('{"peer": {}}'), false);
  assert.equal(isWaitingConfigText('not json'), false);
});
