import assert from 'node:assert/strict';
import { createHmac, hkdfSync } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import {
  WITNESS_MAGIC, decodeWitnessReply, decodeWitnessRequest, encodeWitnessReply, encodeWitnessRequest, singleClusterKey, witnessKey,
  type WitnessDecoded, type WitnessDropReason, type WitnessKeyLookup, type WitnessReplyMessage, type WitnessRequestMessage,
} from '../../src/protocol/witness/codec';
import { WitnessProtocolError } from '../../src/protocol/witness/errors';
import { witnessLimits } from '../../src/protocol/witness/limits';

const CLUSTER = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const OTHER = Buffer.from('ffeeddccbbaa99887766554433221100', 'hex');
const SECRET = Buffer.alloc(32, 0x5a);
const KEY = witnessKey(SECRET, CLUSTER);
const KEYS = singleClusterKey(CLUSTER, KEY);

function request(over: Partial<WitnessRequestMessage> = {}): WitnessRequestMessage {
  return { type: 'renew', clusterId: CLUSTER, requestId: 1_700_000_000_000_000n, leaseMs: 1000, sender: 'alpha', subject: '', clear: null, ...over };
}

function reply(over: Partial<WitnessReplyMessage> = {}): WitnessReplyMessage {
  return { granted: true, reason: 'ok', clusterId: CLUSTER, requestId: 42n, term: 7, sender: 'witness', ...over };
}

function ok<M>(d: WitnessDecoded<M>): M {
  assert.ok(d.ok, d.ok ? '' : `refused ${d.reason}: ${d.detail}`);
  return d.message;
}

function refused<M>(d: WitnessDecoded<M>, reason: WitnessDropReason, context = ''): void {
  assert.equal(d.ok, false, `expected ${reason} ${context}`);
  if (!d.ok) assert.equal(d.reason, reason, `${d.detail} ${context}`);
}

/** Rewrites the MAC after a change, so a test reaches the check after it. */
function remac(b: Buffer, key = KEY): Buffer {
  const end = b.length - 16;
  createHmac('sha256', key).update(b.subarray(0, end)).digest().copy(b, end, 0, 16);
  return b;
}

test('key: HKDF-SHA256(secret, salt = cluster id, info = "tandem-witness-v1"), 32 bytes', () => {
  const expected = Buffer.from(hkdfSync('sha256', SECRET, CLUSTER, 'tandem-witness-v1', 32));
  assert.deepEqual(KEY, expected);
  assert.notDeepEqual(witnessKey(SECRET, OTHER), KEY);
  assert.throws(() => witnessKey(Buffer.alloc(15), CLUSTER), WitnessProtocolError);
  assert.throws(() => witnessKey(SECRET, Buffer.alloc(15)), WitnessProtocolError);
});

test('the byte layout of a CLAIM, field by field, MAC over everything before it', () => {
  const b = encodeWitnessRequest(request({ type: 'claim', requestId: 0x0102030405060708n, leaseMs: 300, sender: 'beta', subject: 'alpha' }), KEY);
  assert.equal(b.length, 45 + 4 + 1 + 5 + 16);
  assert.equal(b.readUInt32BE(0), WITNESS_MAGIC);
  assert.equal(b.toString('latin1', 0, 4), 'TNWT');
  assert.equal(b[4], 1);
  assert.equal(b[5], 2);
  assert.equal(b[6], 0);
  assert.equal(b[7], 0);
  assert.deepEqual(b.subarray(8, 24), CLUSTER);
  assert.equal(b.readBigUInt64BE(24), 0x0102030405060708n);
  assert.equal(b.readBigUInt64BE(32), 0n);
  assert.equal(b.readUInt32BE(40), 300);
  assert.equal(b[44], 4);
  assert.equal(b.toString('latin1', 45, 49), 'beta');
  assert.equal(b[49], 5);
  assert.equal(b.toString('latin1', 50, 55), 'alpha');
  const mac = createHmac('sha256', KEY).update(b.subarray(0, 55)).digest().subarray(0, 16);
  assert.deepEqual(b.subarray(55), mac);
});

test('round trip of every request type and of both reply types', () => {
  const requests: WitnessRequestMessage[] = [
    request({ type: 'renew' }),
    request({ type: 'claim', subject: 'beta' }),
    request({ type: 'alone' }),
    request({ type: 'clear', leaseMs: 0, subject: 'beta', clear: 'alone' }),
    request({ type: 'clear', leaseMs: 0, subject: 'alpha', clear: 'fenced' }),
    request({ type: 'query', leaseMs: 0 }),
  ];
  const types = new Map<string, number>([['renew', 1], ['claim', 2], ['alone', 3], ['clear', 4], ['query', 5]]);
  for (const m of requests) {
    const b = encodeWitnessRequest(m, KEY);
    assert.equal(b[5], types.get(m.type));
    assert.equal(b[7], m.clear === null ? 0 : m.clear === 'alone' ? 1 : 2);
    assert.deepEqual(ok(decodeWitnessRequest(b, KEYS)), m);
    refused(decodeWitnessReply(b, KEYS), 'malformed', `${m.type} decoded as a reply`);
  }
  const reasons = new Map<string, number>([['fenced', 1], ['peer-alone', 2], ['peer-alive', 3], ['stale-request', 4], ['bad-request', 5]]);
  const replies = [reply(), ...[...reasons.keys()].map((r) => reply({ granted: false, reason: r as WitnessReplyMessage['reason'], term: 0 }))];
  for (const m of replies) {
    const b = encodeWitnessReply(m, KEY);
    assert.equal(b[5], m.granted ? 129 : 130);
    assert.equal(b[6], reasons.get(m.reason) ?? 0);
    assert.equal(b.readBigUInt64BE(32), BigInt(m.term));
    assert.deepEqual(ok(decodeWitnessReply(b, KEYS)), m);
    refused(decodeWitnessRequest(b, KEYS), 'malformed', `${m.reason} decoded as a request`);
  }
});

test('the encoders refuse what the protocol cannot carry', () => {
  const bad: Array<[string, () => Buffer]> = [
    ['claim without subject', () => encodeWitnessRequest(request({ type: 'claim' }), KEY)],
    ['renew with subject', () => encodeWitnessRequest(request({ subject: 'beta' }), KEY)],
    ['renew without lease', () => encodeWitnessRequest(request({ leaseMs: 0 }), KEY)],
    ['lease too long', () => encodeWitnessRequest(request({ leaseMs: witnessLimits.leaseMsMax + 1 }), KEY)],
    ['query with lease', () => encodeWitnessRequest(request({ type: 'query' }), KEY)],
    ['clear without kind', () => encodeWitnessRequest(request({ type: 'clear', leaseMs: 0, subject: 'beta' }), KEY)],
    ['renew with a clear kind', () => encodeWitnessRequest(request({ clear: 'alone' }), KEY)],
    ['bad sender', () => encodeWitnessRequest(request({ sender: '-alpha' }), KEY)],
    ['sender of 64', () => encodeWitnessRequest(request({ sender: 'a'.repeat(64) }), KEY)],
    ['non-ASCII sender', () => encodeWitnessRequest(request({ sender: 'alphä' }), KEY)],
    ['negative id', () => encodeWitnessRequest(request({ requestId: -1n }), KEY)],
    ['id beyond u64', () => encodeWitnessRequest(request({ requestId: 2n ** 64n }), KEY)],
    ['short cluster id', () => encodeWitnessRequest(request({ clusterId: Buffer.alloc(15) }), KEY)],
    ['short key', () => encodeWitnessRequest(request(), Buffer.alloc(16))],
    ['grant with a reason', () => encodeWitnessReply(reply({ reason: 'fenced' }), KEY)],
    ['refusal with ok', () => encodeWitnessReply(reply({ granted: false }), KEY)],
    ['fractional term', () => encodeWitnessReply(reply({ term: 1.5 }), KEY)],
  ];
  for (const [what, f] of bad) {
    assert.throws(f, (e: unknown) => e instanceof WitnessProtocolError && e.code === 'ERR_WITNESS_ARGUMENT', what);
  }
});

test('malformed: sizes, magic, version, types, fields, names, lengths - each before the cluster and MAC checks', () => {
  const good = encodeWitnessRequest(request({ type: 'claim', subject: 'beta' }), KEY);
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['one byte short of the minimum', Buffer.alloc(witnessLimits.datagramBytesMin - 1)],
    ['above the maximum', Buffer.concat([good, Buffer.alloc(witnessLimits.datagramBytesMax)])],
    ['trailing byte', remac(Buffer.concat([good, Buffer.alloc(1)]))],
    ['cut short', good.subarray(0, good.length - 1)],
  ];
  const edit = (what: string, f: (b: Buffer) => void): void => {
    const b = Buffer.from(good);
    f(b);
    cases.push([what, remac(b)]);
  };
  edit('magic', (b) => b.writeUInt32BE(0x544e4842, 0));
  edit('version 2', (b) => { b[4] = 2; });
  edit('type 0', (b) => { b[5] = 0; });
  edit('type 6', (b) => { b[5] = 6; });
  edit('a reply type', (b) => { b[5] = 129; });
  edit('reason in a request', (b) => { b[6] = 1; });
  edit('clear kind in a claim', (b) => { b[7] = 1; });
  edit('term in a request', (b) => { b.writeBigUInt64BE(1n, 32); });
  edit('claim without lease', (b) => { b.writeUInt32BE(0, 40); });
  edit('lease above the maximum', (b) => { b.writeUInt32BE(witnessLimits.leaseMsMax + 1, 40); });
  edit('sender length 0', (b) => { b[44] = 0; });
  edit('sender length 64', (b) => { b[44] = 64; });
  edit('sender length beyond the datagram', (b) => { b[44] = 60; });
  edit('subject length beyond the datagram', (b) => { b[50] = 40; });
  edit('sender with a space', (b) => { b[46] = 0x20; });
  edit('sender starting with a dot', (b) => { b[45] = 0x2e; });
  edit('sender with a high byte', (b) => { b[46] = 0xe4; });
  edit('subject with a slash', (b) => { b[52] = 0x2f; });
  edit('subject length says 0, the subject is still there', (b) => { b[50] = 0; });
  const renew = Buffer.from(encodeWitnessRequest(request(), KEY));
  renew[5] = 2;
  cases.push(['claim without subject', remac(renew)]);
  const claimAsRenew = Buffer.from(good);
  claimAsRenew[5] = 1;
  cases.push(['renew with a subject', remac(claimAsRenew)]);
  for (const [what, b] of cases) {
    // with no key at all, a cluster or MAC check would answer otherwise: malformed must come first
    refused(decodeWitnessRequest(b, () => undefined), 'malformed', what);
  }
  // a CLEAR needs its kind, and a QUERY takes neither lease nor subject
  const clear = encodeWitnessRequest(request({ type: 'clear', leaseMs: 0, subject: 'beta', clear: 'fenced' }), KEY);
  const noKind = Buffer.from(clear);
  noKind[7] = 0;
  refused(decodeWitnessRequest(remac(noKind), KEYS), 'malformed', 'clear without kind');
  const kind3 = Buffer.from(clear);
  kind3[7] = 3;
  refused(decodeWitnessRequest(remac(kind3), KEYS), 'malformed', 'clear kind 3');
  const query = encodeWitnessRequest(request({ type: 'query', leaseMs: 0 }), KEY);
  const leased = Buffer.from(query);
  leased.writeUInt32BE(5, 40);
  refused(decodeWitnessRequest(remac(leased), KEYS), 'malformed', 'query with lease');

  const r = encodeWitnessReply(reply(), KEY);
  const grantWithReason = Buffer.from(r);
  grantWithReason[6] = 3;
  refused(decodeWitnessReply(remac(grantWithReason), KEYS), 'malformed', 'grant with reason');
  const refuseOk = Buffer.from(r);
  refuseOk[5] = 130;
  refused(decodeWitnessReply(remac(refuseOk), KEYS), 'malformed', 'refuse with reason ok');
  const reason6 = Buffer.from(r);
  reason6[5] = 130;
  reason6[6] = 6;
  refused(decodeWitnessReply(remac(reason6), KEYS), 'malformed', 'reason 6');
  const hugeTerm = Buffer.from(r);
  hugeTerm.writeBigUInt64BE(2n ** 53n, 32);
  refused(decodeWitnessReply(remac(hugeTerm), KEYS), 'malformed', 'term beyond 2^53');
  const leaseInReply = Buffer.from(r);
  leaseInReply.writeUInt32BE(1, 40);
  refused(decodeWitnessReply(remac(leaseInReply), KEYS), 'malformed', 'lease in a reply');
});

test('unknownCluster: another cluster id, checked before the MAC', () => {
  const theirKey = witnessKey(SECRET, OTHER);
  const theirs = encodeWitnessRequest(request({ clusterId: OTHER }), theirKey);
  refused(decodeWitnessRequest(theirs, KEYS), 'unknownCluster');
  // a witness serving both clusters takes it, with the other cluster's key
  const both: WitnessKeyLookup = (id) => (id.equals(CLUSTER) ? KEY : id.equals(OTHER) ? theirKey : undefined);
  assert.deepEqual(ok(decodeWitnessRequest(theirs, both)).clusterId, OTHER);
  // the cluster id is looked up before the MAC is checked: a wrong MAC from another cluster is unknownCluster
  const broken = Buffer.from(theirs);
  broken[broken.length - 1] = (broken[broken.length - 1] as number) ^ 1;
  refused(decodeWitnessRequest(broken, KEYS), 'unknownCluster');
  refused(decodeWitnessReply(encodeWitnessReply(reply({ clusterId: OTHER }), theirKey), KEYS), 'unknownCluster');
});

test('badMac: any flipped bit, another secret, a key for another cluster', () => {
  const good = encodeWitnessRequest(request({ type: 'claim', subject: 'beta' }), KEY);
  assert.ok(decodeWitnessRequest(good, KEYS).ok);
  // flipping a bit of a field keeps the datagram well-formed; the MAC catches it
  for (const at of [25, 30, 42, 43, 46, 52, good.length - 16, good.length - 1]) {
    const b = Buffer.from(good);
    b[at] = (b[at] as number) ^ 0x01;
    refused(decodeWitnessRequest(b, KEYS), 'badMac', `bit flipped at ${at}`);
  }
  const otherSecret = encodeWitnessRequest(request(), witnessKey(Buffer.alloc(32, 0x5b), CLUSTER));
  refused(decodeWitnessRequest(otherSecret, KEYS), 'badMac', 'another secret');
  const crossKey = encodeWitnessRequest(request(), witnessKey(SECRET, OTHER));
  refused(decodeWitnessRequest(crossKey, KEYS), 'badMac', 'the same secret under another cluster id');
  const r = Buffer.from(encodeWitnessReply(reply(), KEY));
  r.writeBigUInt64BE(43n, 24);
  refused(decodeWitnessReply(r, KEYS), 'badMac', 'reply with another request id');
});

const name = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/);
const clusterId = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a));
const requestId = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const lease = fc.integer({ min: 1, max: witnessLimits.leaseMsMax });

const arbRequest: fc.Arbitrary<WitnessRequestMessage> = fc.record({
  kind: fc.constantFrom('renew', 'claim', 'alone', 'clear-alone', 'clear-fenced', 'query'),
  clusterId, requestId, lease, sender: name, subject: name,
}).map(({ kind, lease: l, subject, ...m }) => {
  const type = kind.startsWith('clear') ? 'clear' as const : kind as WitnessRequestMessage['type'];
  return {
    ...m,
    type,
    leaseMs: type === 'renew' || type === 'claim' || type === 'alone' ? l : 0,
    subject: type === 'claim' || type === 'clear' ? subject : '',
    clear: kind === 'clear-alone' ? 'alone' as const : kind === 'clear-fenced' ? 'fenced' as const : null,
  };
});

const arbReply: fc.Arbitrary<WitnessReplyMessage> = fc.record({
  reason: fc.constantFrom('ok', 'fenced', 'peer-alone', 'peer-alive', 'stale-request', 'bad-request'),
  clusterId, requestId, term: fc.maxSafeNat(), sender: name,
}).map((m) => ({ ...m, granted: m.reason === 'ok' }));

test('property: every request and reply round-trips, within the declared sizes, and only under its own key', () => {
  fc.assert(fc.property(arbRequest, fc.uint8Array({ minLength: 16, maxLength: 64 }), (m, secret) => {
    const key = witnessKey(Buffer.from(secret), m.clusterId);
    const b = encodeWitnessRequest(m, key);
    assert.ok(b.length >= witnessLimits.datagramBytesMin && b.length <= witnessLimits.datagramBytesMax, `${b.length} bytes`);
    const lookup = singleClusterKey(m.clusterId, key);
    assert.deepEqual(ok(decodeWitnessRequest(b, lookup)), m);
    refused(decodeWitnessRequest(b, singleClusterKey(m.clusterId, witnessKey(Buffer.alloc(16, 1), Buffer.alloc(16, 2)))), 'badMac');
    refused(decodeWitnessReply(b, lookup), 'malformed');
  }));
  fc.assert(fc.property(arbReply, (m) => {
    const key = witnessKey(SECRET, m.clusterId);
    const b = encodeWitnessReply(m, key);
    assert.ok(b.length >= witnessLimits.datagramBytesMin && b.length <= witnessLimits.datagramBytesMax, `${b.length} bytes`);
    assert.deepEqual(ok(decodeWitnessReply(b, singleClusterKey(m.clusterId, key))), m);
    refused(decodeWitnessRequest(b, singleClusterKey(m.clusterId, key)), 'malformed');
  }));
});

test('property: arbitrary bytes never throw, and nothing but a correctly MACed datagram is accepted', () => {
  const lookup: WitnessKeyLookup = () => KEY;
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
    const b = Buffer.from(a);
    const q = decodeWitnessRequest(b, lookup);
    const r = decodeWitnessReply(b, lookup);
    assert.equal(q.ok, false);
    assert.equal(r.ok, false);
  }));
  // and a valid datagram with any single byte changed is refused
  fc.assert(fc.property(arbRequest, fc.nat(), fc.integer({ min: 1, max: 255 }), (m, at, x) => {
    const key = witnessKey(SECRET, m.clusterId);
    const b = encodeWitnessRequest(m, key);
    const i = at % b.length;
    b[i] = (b[i] as number) ^ x;
    assert.equal(decodeWitnessRequest(b, () => key).ok, false, `byte ${i} ^ ${x}`);
  }));
});
