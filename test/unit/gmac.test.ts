import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import { SyncProtocolError } from '../../src/protocol/sync/errors';
import { GMAC_TAG_BYTES, Gmac } from '../../src/protocol/sync/gmac';

/** The definition the native MAC must match: Node's own AES-256-GCM, one setAAD per non-empty piece. */
function reference(key: Buffer, seq: bigint, pieces: readonly Uint8Array[]): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(seq, 4);
  const gcm = createCipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
  for (const p of pieces) if (p.length > 0) gcm.setAAD(p);
  gcm.final();
  return gcm.getAuthTag();
}

/** whole cut at the given points, in order, repeats kept: empty pieces anywhere, views at odd offsets. */
function cutAt(whole: Buffer, cuts: readonly number[]): Buffer[] {
  const points = cuts.map((c) => c % (whole.length + 1)).sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let last = 0;
  for (const p of points) { pieces.push(whole.subarray(last, p)); last = p; }
  pieces.push(whole.subarray(last));
  return pieces;
}

const SPECIAL_SEQS = [0n, 1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 32n + 1n, 2n ** 63n, 2n ** 64n - 2n, 2n ** 64n - 1n];
const seqs = fc.oneof(fc.constantFrom(...SPECIAL_SEQS), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const keys = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a));

const isArgument = (e: unknown): boolean => e instanceof SyncProtocolError && e.code === 'ERR_SYNC_ARGUMENT';

test('the native MAC equals createCipheriv(aes-256-gcm) for random keys, seqs and splits of the AAD', () => {
  fc.assert(fc.property(keys, seqs, fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(), { maxLength: 10 }), (key, seq, raw, cuts) => {
    const whole = Buffer.from(raw);
    const pieces = cutAt(whole, cuts);
    const g = new Gmac(key);
    const want = reference(key, seq, [whole]);
    assert.deepEqual(g.mac(seq, pieces), want);
    assert.deepEqual(g.mac(seq, [whole]), want);
    // the context is reused: the same call again gives the same tag
    assert.deepEqual(g.mac(seq, pieces), want);
    g.free();
  }), { numRuns: 2000 });
});

test('every special seq, no AAD at all, only empty pieces, and plain Uint8Arrays', () => {
  const key = randomBytes(32);
  const g = new Gmac(key);
  for (const seq of SPECIAL_SEQS) {
    assert.deepEqual(g.mac(seq, []), reference(key, seq, []), `seq ${seq}`);
    assert.deepEqual(g.mac(seq, [Buffer.alloc(0), new Uint8Array(0)]), reference(key, seq, []), `seq ${seq}`);
    const header = randomBytes(20);
    assert.deepEqual(g.mac(seq, [header]), reference(key, seq, [header]), `seq ${seq}`);
    // the IV carries the whole seq: neighbours and the other 32-bit half never collide
    if (seq > 0n) assert.notDeepEqual(g.mac(seq, [header]), g.mac(seq - 1n, [header]), `seq ${seq}`);
  }
  const bytes = new Uint8Array(randomBytes(77));
  assert.deepEqual(g.mac(5n, [bytes.subarray(3, 40), bytes.subarray(40)]), reference(key, 5n, [bytes.subarray(3)]));
});

test('a 1 MiB piece (and one of odd size), whole and split, with empty pieces between; more pieces than fit on the stack', () => {
  const key = randomBytes(32);
  const g = new Gmac(key);
  for (const size of [1 << 20, (1 << 20) + 37]) {
    const data = randomBytes(size);
    const header = randomBytes(20);
    const fields = randomBytes(36);
    const want = reference(key, 9n, [header, fields, data]);
    assert.deepEqual(g.mac(9n, [header, fields, data]), want);
    assert.deepEqual(g.mac(9n, [header, Buffer.alloc(0), fields, Buffer.alloc(0), data, Buffer.alloc(0)]), want);
    assert.deepEqual(g.mac(9n, [Buffer.concat([header, fields, data])]), want);
    assert.deepEqual(g.mac(9n, [header, fields, data.subarray(0, 4097), data.subarray(4097)]), want);
    // 1000 pieces of 1 to 2 KiB
    const many: Buffer[] = [];
    for (let at = 0, i = 0; at < size; i++) { const n = 1 + ((i * 977) % 2048); many.push(data.subarray(at, at + n)); at += n; }
    assert.ok(many.length > 500);
    assert.deepEqual(g.mac(9n, [header, fields, ...many]), want);
  }
});

test('mac writes into out when given and returns it; otherwise a new Buffer each time', () => {
  const key = randomBytes(32);
  const g = new Gmac(key);
  const out = Buffer.alloc(GMAC_TAG_BYTES, 0xee);
  const tag = g.mac(3n, [Buffer.from('abc')], out);
  assert.equal(tag, out);
  assert.deepEqual(out, reference(key, 3n, [Buffer.from('abc')]));
  const a = g.mac(3n, [Buffer.from('abc')]);
  const b = g.mac(3n, [Buffer.from('abc')]);
  assert.notEqual(a, b);
  assert.deepEqual(a, b);
  // out overwritten whole by the next MAC
  g.mac(4n, [Buffer.from('abc')], out);
  assert.deepEqual(out, reference(key, 4n, [Buffer.from('abc')]));
});

test('two Gmacs with different keys, used interleaved, do not disturb each other', () => {
  fc.assert(fc.property(keys, keys, fc.array(fc.tuple(fc.boolean(), seqs, fc.uint8Array({ maxLength: 100 })), { minLength: 1, maxLength: 20 }),
    (k1, k2, calls) => {
      fc.pre(!k1.equals(k2));
      const g1 = new Gmac(k1);
      const g2 = new Gmac(k2);
      for (const [first, seq, raw] of calls) {
        const data = Buffer.from(raw);
        const [g, k] = first ? [g1, k1] : [g2, k2];
        assert.deepEqual(g.mac(seq, [data.subarray(0, 7), data.subarray(7)]), reference(k, seq, [data]));
        // the same seq and data under the other key give another tag
        assert.notDeepEqual((first ? g2 : g1).mac(seq, [data]), reference(k, seq, [data]));
      }
      g1.free();
      g2.free();
    }), { numRuns: 300 });
});

test('a failed call leaves the context usable: the next MAC is still right', () => {
  const key = randomBytes(32);
  const g = new Gmac(key);
  const data = randomBytes(100);
  assert.throws(() => g.mac(1n, [data, 'x' as unknown as Buffer]), isArgument);
  assert.deepEqual(g.mac(1n, [data]), reference(key, 1n, [data]));
});

test('bad arguments throw ERR_SYNC_ARGUMENT', () => {
  for (const key of [Buffer.alloc(0), Buffer.alloc(16), Buffer.alloc(31), Buffer.alloc(33), 'k'.repeat(32), [...Buffer.alloc(32)], undefined, null]) {
    assert.throws(() => new Gmac(key as unknown as Buffer), isArgument, String(key));
  }
  const g = new Gmac(randomBytes(32));
  for (const seq of [-1n, 2n ** 64n, 2n ** 70n, 1, '1', undefined]) {
    assert.throws(() => g.mac(seq as unknown as bigint, [Buffer.alloc(1)]), isArgument, String(seq));
  }
  for (const pieces of [undefined, null, Buffer.alloc(4), 'abc', { length: 1, 0: Buffer.alloc(1) }]) {
    assert.throws(() => g.mac(1n, pieces as unknown as Buffer[]), isArgument, String(pieces));
  }
  for (const piece of ['abc', 1, null, undefined, new ArrayBuffer(4), new Uint16Array(2), new DataView(new ArrayBuffer(4)), [1, 2]]) {
    assert.throws(() => g.mac(1n, [Buffer.alloc(1), piece as unknown as Buffer]), isArgument, String(piece));
  }
  for (const out of [Buffer.alloc(15), Buffer.alloc(17), Buffer.alloc(0), new Uint8Array(16), 'x'.repeat(16)]) {
    assert.throws(() => g.mac(1n, [Buffer.alloc(1)], out as unknown as Buffer), isArgument, String(out));
  }
  g.free();
  g.free(); // twice is harmless
  assert.throws(() => g.mac(1n, [Buffer.alloc(1)]), isArgument);
});

// ------------------------------------------------ the addon's own checks, without the TypeScript layer in front

interface RawGmac { mac(seq: unknown, pieces: unknown, out: unknown): Uint8Array; free(): void }
// dist/test/unit → the repository root is three levels up
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require(path.join(__dirname, '..', '..', '..', 'build', 'Release', 'tandem_native.node')) as {
  Gmac: new (key: unknown) => RawGmac;
};

const hasCode = (name: string, code: string) => (e: unknown): boolean =>
  e instanceof Error && e.name === name && (e as Error & { code?: string }).code === code;

test('the addon refuses bad arguments itself', () => {
  const key = randomBytes(32);
  for (const bad of [Buffer.alloc(31), Buffer.alloc(33), new Uint8Array(16)]) assert.throws(() => new addon.Gmac(bad), hasCode('RangeError', 'ERR_RANGE'));
  for (const bad of ['k'.repeat(32), new Uint16Array(16), new ArrayBuffer(32), undefined]) assert.throws(() => new addon.Gmac(bad), hasCode('TypeError', 'ERR_ARGS'));
  assert.throws(() => (addon.Gmac as unknown as (k: unknown) => unknown)(key), TypeError);
  const g = new addon.Gmac(key);
  const out = Buffer.alloc(16);
  assert.throws(() => g.mac(-1n, [], out), hasCode('RangeError', 'ERR_RANGE'));
  assert.throws(() => g.mac(2n ** 64n, [], out), hasCode('RangeError', 'ERR_RANGE'));
  assert.throws(() => g.mac(1, [], out), hasCode('TypeError', 'ERR_ARGS'));
  assert.throws(() => g.mac(1n, Buffer.alloc(1), out), hasCode('TypeError', 'ERR_ARGS'));
  assert.throws(() => g.mac(1n, [Buffer.alloc(1), 'x'], out), hasCode('TypeError', 'ERR_ARGS'));
  assert.throws(() => g.mac(1n, [new Float64Array(1)], out), hasCode('TypeError', 'ERR_ARGS'));
  assert.throws(() => g.mac(1n, [], Buffer.alloc(15)), hasCode('RangeError', 'ERR_RANGE'));
  assert.throws(() => g.mac(1n, [], new Uint32Array(4)), hasCode('TypeError', 'ERR_ARGS'));
  assert.throws(() => Reflect.apply(g.mac, g, [1n, []]) as unknown, hasCode('TypeError', 'ERR_ARGS'));
  // a Uint8Array that is not a Buffer is a valid out and piece
  const plain = new Uint8Array(16);
  assert.equal(g.mac(7n, [new Uint8Array([1, 2, 3])], plain), plain);
  assert.deepEqual(Buffer.from(plain), reference(key, 7n, [Buffer.from([1, 2, 3])]));
  g.free();
  assert.throws(() => g.mac(1n, [], out), hasCode('Error', 'ERR_GMAC_FREED'));
});

/** pieces whose element at `at` is a getter that runs `effect` first, then yields `value` */
function withGetter(pieces: unknown[], at: number, effect: () => void, value: unknown): unknown[] {
  Object.defineProperty(pieces, at, { enumerable: true, get: () => { effect(); return value; } });
  return pieces;
}

const detach = (b: Buffer): void => { const ab = b.buffer as ArrayBuffer; structuredClone(ab, { transfer: [ab] }); };

test('JS run while the addon reads the pieces array cannot make it use freed memory', () => {
  const key = randomBytes(32);
  // the getter frees the Gmac: the addon notices before touching the context
  const g = new addon.Gmac(key);
  assert.throws(() => g.mac(1n, withGetter([Buffer.alloc(3)], 1, () => g.free(), Buffer.alloc(1)), Buffer.alloc(16)),
    hasCode('Error', 'ERR_GMAC_FREED'));
  // the getter detaches out: the addon sees an empty out and writes nothing
  const h = new addon.Gmac(key);
  const out = Buffer.alloc(16);
  assert.throws(() => h.mac(1n, withGetter([Buffer.alloc(3)], 1, () => detach(out), Buffer.alloc(1)), out), hasCode('RangeError', 'ERR_RANGE'));
  // the getter detaches an earlier piece: it reads as empty, so the tag is that of the other piece alone
  const first = Buffer.alloc(64, 1);
  const second = Buffer.from('second');
  const tag = Buffer.alloc(16);
  h.mac(2n, withGetter([first], 1, () => detach(first), second), tag);
  assert.deepEqual(tag, reference(key, 2n, [second]));
});

test('many short-lived Gmacs left to the garbage collector', () => {
  const key = randomBytes(32);
  const want = reference(key, 1n, [key]);
  for (let i = 0; i < 20000; i++) assert.deepEqual(new Gmac(key).mac(1n, [key]), want);
});
