import assert from 'node:assert/strict';
import { createHmac, hkdfSync } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import {
  HEARTBEAT_BYTES_MAX, HEARTBEAT_BYTES_MIN, HEARTBEAT_MAGIC, HeartbeatError, HeartbeatFlags, decodeHeartbeat, deriveHeartbeatKey, encodeHeartbeat,
  heartbeatLimits, type Heartbeat, type HeartbeatDecoded, type HeartbeatRefusal,
} from '../../src/protocol/heartbeat/codec';

const CLUSTER = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const SECRET = Buffer.alloc(32, 0x5e);
const KEY = deriveHeartbeatKey(SECRET, CLUSTER);

const SAMPLE: Heartbeat = {
  flags: HeartbeatFlags.MAINTENANCE,
  clusterId: CLUSTER,
  incarnation: 1_763_900_000_123,
  seq: 42,
  echoIncarnation: 1_763_800_000_456,
  echoSeq: 17,
  linkIndex: 1,
  name: 'alpha',
};

function refusal(d: HeartbeatDecoded): HeartbeatRefusal | undefined {
  return d.ok ? undefined : d.reason;
}

/** re-MACs b in place after an edit, so only the edited field can be the reason for a refusal */
function remac(b: Buffer, key = KEY): Buffer {
  const end = b.length - heartbeatLimits.macBytes;
  createHmac('sha256', key).update(b.subarray(0, end)).digest().copy(b, end, 0, heartbeatLimits.macBytes);
  return b;
}

function expectRefused(b: Buffer, reason: HeartbeatRefusal, what: string): void {
  const d = decodeHeartbeat(b, CLUSTER, KEY);
  assert.equal(refusal(d), reason, `${what}: ${d.ok ? 'accepted' : d.detail}`);
}

test('golden bytes: the layout of docs/cluster.md, MAC from an independent HMAC-SHA256', () => {
  const b = encodeHeartbeat(SAMPLE, KEY);
  const body = '544e4842' + '01' + '01' + '0001' + CLUSTER.toString('hex')
    + (1_763_900_000_123).toString(16).padStart(16, '0') + '000000000000002a'
    + (1_763_800_000_456).toString(16).padStart(16, '0') + '0000000000000011'
    + '00000001' + '05' + Buffer.from('alpha').toString('hex');
  const mac = createHmac('sha256', KEY).update(Buffer.from(body, 'hex')).digest('hex').slice(0, 32);
  assert.equal(b.toString('hex'), body + mac);
  assert.equal(b.length, 61 + 5 + 16);
});

test('the key is HKDF-SHA256(secret, salt = cluster id, info = "tandem-heartbeat-v1", 32 bytes)', () => {
  assert.deepEqual(KEY, Buffer.from(hkdfSync('sha256', SECRET, CLUSTER, 'tandem-heartbeat-v1', 32)));
  assert.notDeepEqual(deriveHeartbeatKey(SECRET, Buffer.alloc(16)), KEY, 'another cluster id gives another key');
  assert.throws(() => deriveHeartbeatKey(Buffer.alloc(15), CLUSTER), HeartbeatError);
  assert.throws(() => deriveHeartbeatKey(SECRET, Buffer.alloc(15)), HeartbeatError);
});

test('round trip, and the size bounds are those of the format', () => {
  const d = decodeHeartbeat(encodeHeartbeat(SAMPLE, KEY), CLUSTER, KEY);
  assert.ok(d.ok);
  assert.deepEqual(d.heartbeat, SAMPLE);
  assert.equal(encodeHeartbeat({ ...SAMPLE, name: 'a' }, KEY).length, HEARTBEAT_BYTES_MIN);
  assert.equal(encodeHeartbeat({ ...SAMPLE, name: 'b'.repeat(63) }, KEY).length, HEARTBEAT_BYTES_MAX);
  assert.ok(HEARTBEAT_BYTES_MAX <= heartbeatLimits.datagramBytesMax);
});

test('the encoder refuses what the format cannot carry', () => {
  const bad: Array<[string, Partial<Heartbeat>]> = [
    ['empty name', { name: '' }],
    ['long name', { name: 'n'.repeat(64) }],
    ['name with a space', { name: 'al pha' }],
    ['name starting with a dot', { name: '.alpha' }],
    ['non-ASCII name', { name: 'nodé' }],
    ['incarnation 0', { incarnation: 0 }],
    ['seq 0', { seq: 0 }],
    ['seq above 2^53 - 1', { seq: Number.MAX_SAFE_INTEGER + 1 }],
    ['fractional seq', { seq: 1.5 }],
    ['negative echo', { echoSeq: -1 }],
    ['echo seq without incarnation', { echoIncarnation: 0, echoSeq: 3 }],
    ['link index above u32', { linkIndex: 2 ** 32 }],
    ['unknown flag', { flags: 4 }],
    ['short cluster id', { clusterId: Buffer.alloc(15) }],
  ];
  for (const [what, edit] of bad) {
    assert.throws(() => encodeHeartbeat({ ...SAMPLE, ...edit }, KEY), (e: unknown) => e instanceof HeartbeatError && e.code === 'ERR_HEARTBEAT_ARGUMENT', what);
  }
  assert.throws(() => encodeHeartbeat(SAMPLE, Buffer.alloc(31)), HeartbeatError);
});

test('malformed: truncated at every length, oversize, trailing bytes', () => {
  const b = encodeHeartbeat(SAMPLE, KEY);
  for (let n = 0; n < b.length; n++) expectRefused(b.subarray(0, n), 'malformed', `cut to ${n} bytes`);
  expectRefused(Buffer.concat([b, Buffer.alloc(1)]), 'malformed', 'one trailing byte');
  expectRefused(Buffer.alloc(heartbeatLimits.datagramBytesMax + 1), 'malformed', 'oversize zeros');
  const big = Buffer.concat([b, Buffer.alloc(heartbeatLimits.datagramBytesMax + 1 - b.length)]);
  expectRefused(big, 'malformed', 'oversize, starting with a valid heartbeat');
  expectRefused(Buffer.alloc(65_000, 0x41), 'malformed', 'a jumbo datagram');
});

test('malformed: magic, version, type, flags, name, u64 range, zero incarnation or seq (even with a good MAC)', () => {
  const edits: Array<[string, (b: Buffer) => void]> = [
    ['magic', (b) => b.writeUInt32BE(HEARTBEAT_MAGIC ^ 1, 0)],
    ['version 2', (b) => b.writeUInt8(2, 4)],
    ['version 0', (b) => b.writeUInt8(0, 4)],
    ['type 2', (b) => b.writeUInt8(2, 5)],
    ['unknown flag bit', (b) => b.writeUInt16BE(0x8000, 6)],
    ['name length 0', (b) => b.writeUInt8(0, 60)],
    ['name length 64', (b) => b.writeUInt8(64, 60)],
    ['name length longer than the datagram', (b) => b.writeUInt8(6, 60)],
    ['name length shorter than the datagram', (b) => b.writeUInt8(4, 60)],
    ['name with a slash', (b) => b.write('/', 62, 'latin1')],
    ['name starting with "-"', (b) => b.write('-', 61, 'latin1')],
    ['name with a NUL', (b) => b.writeUInt8(0, 63)],
    ['name with a high byte', (b) => b.writeUInt8(0xe9, 63)],
    ['incarnation 0', (b) => b.writeBigUInt64BE(0n, 24)],
    ['seq 0', (b) => b.writeBigUInt64BE(0n, 32)],
    ['incarnation 2^53', (b) => b.writeBigUInt64BE(2n ** 53n, 24)],
    ['seq 2^64 - 1', (b) => b.writeBigUInt64BE(2n ** 64n - 1n, 32)],
    ['echo incarnation 2^63', (b) => b.writeBigUInt64BE(2n ** 63n, 40)],
    ['echo seq 2^53', (b) => b.writeBigUInt64BE(2n ** 53n, 48)],
    ['echo seq without an echo incarnation', (b) => b.writeBigUInt64BE(0n, 40)],
  ];
  for (const [what, edit] of edits) {
    const b = encodeHeartbeat(SAMPLE, KEY);
    edit(b);
    expectRefused(remac(b), 'malformed', what);
  }
});

test('otherCluster: another cluster id, checked before the MAC', () => {
  const other = Buffer.from(CLUSTER);
  other[15] = (other[15] as number) ^ 0x80;
  // a heartbeat of the other cluster under its own key, and the same bytes under ours
  expectRefused(encodeHeartbeat({ ...SAMPLE, clusterId: other }, deriveHeartbeatKey(SECRET, other)), 'otherCluster', 'under its own key');
  expectRefused(encodeHeartbeat({ ...SAMPLE, clusterId: other }, KEY), 'otherCluster', 'under our key');
  const d = decodeHeartbeat(encodeHeartbeat({ ...SAMPLE, clusterId: other }, KEY), CLUSTER, KEY);
  assert.ok(!d.ok && d.detail.includes(other.toString('hex')), 'the detail names the other cluster');
});

test('badMac: a flipped bit in the MAC or in any MACed byte that keeps the datagram well-formed; another secret', () => {
  const b = encodeHeartbeat(SAMPLE, KEY);
  for (let bit = 0; bit < heartbeatLimits.macBytes * 8; bit++) {
    const c = Buffer.from(b);
    const at = b.length - heartbeatLimits.macBytes + (bit >> 3);
    c[at] = (c[at] as number) ^ (1 << (bit & 7));
    expectRefused(c, 'badMac', `MAC bit ${bit}`);
  }
  // body bits whose flip leaves every field valid: incarnation, seq, echoes, link index
  const bodyBits: Array<[number, number]> = [[31, 0], [39, 1], [47, 0], [55, 3], [59, 7], [56, 0]];
  for (const [at, bit] of bodyBits) {
    const c = Buffer.from(b);
    c[at] = (c[at] as number) ^ (1 << bit);
    expectRefused(c, 'badMac', `body byte ${at} bit ${bit}`);
  }
  // the flags (maintenance off) and the name (alphb) stay well-formed too
  const flags = Buffer.from(b);
  flags[7] = 0;
  expectRefused(flags, 'badMac', 'maintenance flag cleared');
  const name = Buffer.from(b);
  name[65] = 0x62;
  expectRefused(name, 'badMac', 'name altered');
  expectRefused(encodeHeartbeat(SAMPLE, deriveHeartbeatKey(Buffer.alloc(32, 0x5f), CLUSTER)), 'badMac', 'another secret');
});

// ---------------------------------------------------------------- properties

const NAME_FIRST = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const arbName = fc.tuple(
  fc.constantFrom(...NAME_FIRST),
  fc.array(fc.constantFrom(...`${NAME_FIRST}._-`), { maxLength: 62 }),
).map(([first, rest]) => first + rest.join(''));
const safe = (min: number): fc.Arbitrary<number> => fc.integer({ min, max: Number.MAX_SAFE_INTEGER });

const arbHeartbeat: fc.Arbitrary<Heartbeat> = fc.record({
  flags: fc.integer({ min: 0, max: 3 }),
  clusterId: fc.constant(CLUSTER),
  incarnation: safe(1),
  seq: safe(1),
  echo: fc.option(fc.tuple(safe(1), safe(0)), { nil: undefined }),
  linkIndex: fc.integer({ min: 0, max: 0xffffffff }),
  name: arbName,
}).map(({ echo, ...h }) => ({ ...h, echoIncarnation: echo?.[0] ?? 0, echoSeq: echo?.[1] ?? 0 }));

test('property: every valid heartbeat round-trips, within the size limits', () => {
  fc.assert(fc.property(arbHeartbeat, (h) => {
    const b = encodeHeartbeat(h, KEY);
    assert.ok(b.length >= HEARTBEAT_BYTES_MIN && b.length <= HEARTBEAT_BYTES_MAX);
    const d = decodeHeartbeat(b, CLUSTER, KEY);
    assert.ok(d.ok, d.ok ? '' : d.detail);
    assert.deepEqual(d.heartbeat, h);
  }), { numRuns: 2000 });
});

test('property: any change to an encoded heartbeat is refused, never accepted and never thrown', () => {
  fc.assert(fc.property(
    arbHeartbeat,
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }),
    fc.integer({ min: -3, max: 3 }),
    (h, flips, resize) => {
      const b = encodeHeartbeat(h, KEY);
      const c = Buffer.from(b);
      for (const [at, x] of flips) c[at % c.length] = (c[at % c.length] as number) ^ x;
      const mutated = resize < 0 ? c.subarray(0, c.length + resize) : Buffer.concat([c, Buffer.alloc(resize)]);
      if (mutated.equals(b)) return; // flips that cancelled out
      assert.ok(!decodeHeartbeat(mutated, CLUSTER, KEY).ok);
    },
  ), { numRuns: 3000 });
});

test('property: random bytes are refused without throwing', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
    assert.ok(!decodeHeartbeat(Buffer.from(a), CLUSTER, KEY).ok);
  }), { numRuns: 2000 });
});
