import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import { SyncProtocolError, type SyncErrorCode } from '../../src/protocol/sync/errors';
import {
  FRAME_HEADER_BYTES, FrameDecoder, FrameEncoder, SYNC_MAGIC, encodeFrame, encodeFrameParts, frameMac, type Frame,
} from '../../src/protocol/sync/frame';
import { syncLimits } from '../../src/protocol/sync/limits';
import {
  SyncBitmapFlags, SyncDiskState, SyncHashFlags, SyncMessageType as M, SyncResyncMode, SyncWriteFlags, decodeMessage, encodePayload,
  payloadBytesMax, type SyncMessage,
} from '../../src/protocol/sync/messages';

const KEY = Buffer.alloc(32, 0x0b);
const VOLUME = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');

/** A frame built by hand, independently of the encoder: any type, seq and payload. */
function rawFrame(type: number, seq: bigint, payload: Buffer, key?: Buffer, length = payload.length): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32BE(SYNC_MAGIC, 0);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(seq, 8);
  h.writeUInt32BE(length, 16);
  const parts = [h, payload];
  if (key !== undefined) parts.push(frameMac(key, seq, parts));
  return Buffer.concat(parts);
}

interface Decoded { frames: Array<Frame<SyncMessage>>; error: unknown }

/** Pushes the chunks in order until the decoder throws; never throws itself. */
function decode(chunks: Buffer[], key?: Buffer, onFrame?: (f: Frame<SyncMessage>, d: FrameDecoder) => void): Decoded {
  const out: Decoded = { frames: [], error: undefined };
  const d: FrameDecoder = new FrameDecoder((f) => { out.frames.push(f); onFrame?.(f, d); }, key === undefined ? {} : { key });
  try {
    for (const c of chunks) d.push(c);
  } catch (e) {
    out.error = e;
  }
  return out;
}

function code(e: unknown): SyncErrorCode | undefined {
  return e instanceof SyncProtocolError ? e.code : undefined;
}

function expectCode(chunks: Buffer[], expected: SyncErrorCode, key?: Buffer): Decoded {
  const r = decode(chunks, key);
  assert.ok(r.error instanceof SyncProtocolError, `expected ${expected}, got ${String(r.error)}`);
  assert.equal(code(r.error), expected, (r.error as Error).message);
  return r;
}

function splits(stream: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let last = 0;
  for (const p of points) { chunks.push(stream.subarray(last, p)); last = p; }
  chunks.push(stream.subarray(last));
  return chunks;
}

// ---------------------------------------------------------------- arbitraries

const bytes = (n: number): fc.Arbitrary<Buffer> => fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a));
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const data = fc.uint8Array({ minLength: 1, maxLength: 600 }).map((a) => Buffer.from(a));
const text = (maxBytes: number, controls: boolean): fc.Arbitrary<string> =>
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 })
    .map((s) => (controls ? s : s.replace(/[\u0000-\u001f\u007f]/g, '')))
    .filter((s) => s !== '' && Buffer.byteLength(s) <= maxBytes && Buffer.from(s).toString() === s);
/** an offset and a length with offset + length <= 2^53 - 1 */
const range = (lengthMax: number): fc.Arbitrary<{ offset: number; length: number }> =>
  fc.tuple(fc.integer({ min: 1, max: lengthMax }), fc.maxSafeNat())
    .map(([length, o]) => ({ length, offset: Math.min(o, Number.MAX_SAFE_INTEGER - length) }));
const offsetFor = (length: number): fc.Arbitrary<number> => fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER - length });

const arbMessage: fc.Arbitrary<SyncMessage> = fc.oneof(
  fc.record({
    clusterId: bytes(16), nonce: bytes(32), nodeName: text(64, false),
    versions: fc.uniqueArray(fc.integer({ min: 1, max: 0xffff }), { minLength: 1, maxLength: 16 }).map((v) => v.sort((a, b) => a - b)),
  }).map((m) => ({ type: M.HELLO, ...m })),
  bytes(32).map((mac) => ({ type: M.AUTH, mac })),
  fc.constant({ type: M.AUTH_OK }),
  fc.record({ code: u32, reason: fc.oneof(fc.constant(''), text(1024, true)) }).map((m) => ({ type: M.REJECT, ...m })),
  u64.map((token) => ({ type: M.PING, token })),
  u64.map((token) => ({ type: M.PONG, token })),
  fc.record({ volumeId: bytes(16), requestId: u64, data, flags: fc.constantFrom(0, SyncWriteFlags.FUA) })
    .chain((m) => offsetFor(m.data.length).map((offset) => ({ type: M.WRITE, ...m, offset }))),
  fc.record({ requestId: u64, status: u32 }).map((m) => ({ type: M.WRITE_ACK, ...m })),
  fc.record({ volumeId: bytes(16), requestId: u64, r: range(Number.MAX_SAFE_INTEGER), flags: fc.integer({ min: 0, max: 3 }) })
    .map(({ r, ...m }) => ({ type: M.ZERO, ...m, ...r })),
  fc.record({ volumeId: bytes(16), requestId: u64, r: range(Number.MAX_SAFE_INTEGER), flags: fc.constantFrom(0, SyncWriteFlags.FUA) })
    .map(({ r, ...m }) => ({ type: M.TRIM, ...m, ...r })),
  u64.map((requestId) => ({ type: M.FLUSH, requestId })),
  fc.record({ requestId: u64, status: u32 }).map((m) => ({ type: M.FLUSH_ACK, ...m })),
  fc.record({
    volumeId: bytes(16), size: fc.maxSafeNat(), current: u64, bitmap: u64, history0: u64, history1: u64,
    diskState: fc.integer({ min: 0, max: SyncDiskState.UP_TO_DATE }), flags: fc.integer({ min: 0, max: 7 }),
    dirtyBytes: fc.maxSafeNat(), becamePrimaryAt: fc.oneof(fc.constant(0), fc.maxSafeNat()),
  }).map((m) => ({ type: M.GENERATIONS, ...m })),
  fc.record({ volumeId: bytes(16), requestId: u64, r: range(syncLimits.dataBytesMax) })
    .map(({ r, ...m }) => ({ type: M.RESYNC_REQUEST, ...m, ...r })),
  fc.record({ volumeId: bytes(16), requestId: u64, data })
    .chain((m) => offsetFor(m.data.length).map((offset) => ({ type: M.RESYNC_DATA, ...m, offset }))),
  fc.record({ volumeId: bytes(16), requestId: u64, r: range(Number.MAX_SAFE_INTEGER) })
    .map(({ r, ...m }) => ({ type: M.RESYNC_ZERO, ...m, ...r })),
  fc.record({
    volumeId: bytes(16), requestId: u64, shift: fc.integer({ min: 9, max: 20 }), count: fc.integer({ min: 1, max: 40 }), cut: fc.nat(),
    flags: fc.constantFrom(0, SyncHashFlags.SEND_DIFFERING),
  }).chain(({ shift, count, cut, ...m }) => {
    const blockSize = 2 ** shift;
    const length = (count - 1) * blockSize + 1 + (cut % blockSize);
    return fc.tuple(offsetFor(length), fc.array(bytes(32), { minLength: count, maxLength: count }))
      .map(([offset, hashes]) => ({ type: M.HASH_REQUEST, ...m, offset, length, blockSize, hashes }));
  }),
  fc.record({ volumeId: bytes(16), requestId: u64, offset: fc.maxSafeNat(), blocks: fc.integer({ min: 1, max: 300 }), seed: fc.nat() })
    .chain(({ seed, blocks, ...m }) => bytes(Math.ceil(blocks / 8)).map((bitmap) => {
      const spare = blocks % 8;
      if (spare !== 0) bitmap[bitmap.length - 1] = (bitmap[bitmap.length - 1] as number) & ((1 << spare) - 1) & (seed | 1);
      return { type: M.HASH_REPLY, ...m, blocks, bitmap };
    })),
  fc.record({ volumeId: bytes(16), syncId: fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }), mode: fc.constantFrom(SyncResyncMode.BITMAP, SyncResyncMode.FULL) })
    .map((m) => ({ type: M.RESYNC_START, ...m })),
  fc.record({
    volumeId: bytes(16), shift: fc.integer({ min: 12, max: 30 }), regionCount: fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.maxSafeNat().filter((n) => n > 0)),
    from: fc.nat(), size: fc.integer({ min: 0, max: 300 }), toEnd: fc.boolean(), seed: bytes(300),
  }).map(({ shift, regionCount, from, size, toEnd, seed, ...m }) => {
    const total = Math.ceil(regionCount / 8);
    const length = Math.min(size, total);
    const byteOffset = toEnd ? total - length : from % (total - length + 1);
    const bits = Buffer.from(seed.subarray(0, length));
    const atEnd = byteOffset + length === total;
    const spare = regionCount % 8;
    if (atEnd && length > 0 && spare !== 0) bits[length - 1] = (bits[length - 1] as number) & ((1 << spare) - 1);
    // LAST only on a chunk that reaches the end; a chunk may reach the end without it (an empty LAST may follow)
    const flags = toEnd ? SyncBitmapFlags.LAST : 0;
    return { type: M.BITMAP, ...m, regionBytes: 2 ** shift, regionCount, byteOffset, flags, bits };
  }),
  bytes(16).map((volumeId) => ({ type: M.RESYNC_DONE, volumeId })),
  fc.record({ volumeId: bytes(16), code: fc.integer({ min: 1, max: 0xffffffff }), reason: fc.oneof(fc.constant(''), text(1024, false)) })
    .map((m) => ({ type: M.VOLUME_REFUSED, ...m })),
  fc.jsonValue({ maxDepth: 3 }).map((v) => ({ type: M.CLUSTER, json: JSON.stringify(v) }))
    .filter((m) => Buffer.byteLength(m.json) <= 64 * 1024 && Buffer.from(m.json).toString() === m.json),
) as fc.Arbitrary<SyncMessage>;

// ---------------------------------------------------------------- golden bytes

test('golden bytes: an unauthenticated PING', () => {
  const f = encodeFrame({ type: M.PING, token: 0x0102030405060708n }, 1n);
  assert.equal(f.toString('hex'), '544e4453' + '0001' + '0005' + '0000000000000001' + '00000008' + '0102030405060708');
});

test('golden bytes: an authenticated WRITE with FUA (MAC from an independent AES-256-GCM: Python cryptography AESGCM)', () => {
  const f = encodeFrame({ type: M.WRITE, volumeId: VOLUME, requestId: 42n, offset: 4096, flags: SyncWriteFlags.FUA, data: Buffer.from('hello') }, 7n, KEY);
  assert.equal(f.toString('hex'),
    '544e4453' + '0001' + '0010' + '0000000000000007' + '00000029' +
    '000102030405060708090a0b0c0d0e0f' + '000000000000002a' + '0000000000001000' + '00000001' + '68656c6c6f' +
    '1e073da45145f640bbdf14a5ad20a0e6');
});

test('golden bytes: HELLO, REJECT, WRITE_ACK and HASH_REPLY payloads', () => {
  const hello = encodePayload({ type: M.HELLO, clusterId: VOLUME, nonce: Buffer.alloc(32, 0xaa), nodeName: 'nodé', versions: [1, 3] });
  assert.equal(Buffer.concat(hello).toString('hex'),
    '000102030405060708090a0b0c0d0e0f' + 'aa'.repeat(32) + '0005' + '6e6f64c3a9' + '0002' + '0001' + '0003');
  assert.equal(Buffer.concat(encodePayload({ type: M.REJECT, code: 3, reason: 'no' })).toString('hex'), '00000003' + '0002' + '6e6f');
  assert.equal(Buffer.concat(encodePayload({ type: M.WRITE_ACK, requestId: 2n ** 64n - 1n, status: 5 })).toString('hex'), 'ffffffffffffffff' + '00000005');
  const reply = encodePayload({ type: M.HASH_REPLY, volumeId: VOLUME, requestId: 1n, offset: 512, blocks: 10, bitmap: Buffer.from([0x81, 0x02]) });
  assert.equal(Buffer.concat(reply).toString('hex'),
    '000102030405060708090a0b0c0d0e0f' + '0000000000000001' + '0000000000000200' + '0000000a' + '8102');
});

// ---------------------------------------------------------------- round trips

test('every message type round-trips through a frame, with and without a MAC', () => {
  const seen = new Set<number>();
  fc.assert(fc.property(arbMessage, fc.boolean(), fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }), (m, keyed, seq) => {
    seen.add(m.type);
    const key = keyed ? KEY : undefined;
    const frame = encodeFrame(m, seq, key);
    const frames: Array<Frame<SyncMessage>> = [];
    new FrameDecoder((f) => frames.push(f), key === undefined ? { nextSeq: seq } : { key, nextSeq: seq }).push(frame);
    assert.equal(frames.length, 1);
    const f = frames[0] as Frame<SyncMessage>;
    assert.deepEqual(f.message, m);
    assert.equal(f.seq, seq);
    assert.equal(f.type, m.type);
    assert.deepEqual(f.bytes, frame.subarray(0, frame.length - (keyed ? 16 : 0)));
    assert.deepEqual(decodeMessage(m.type, Buffer.concat(encodePayload(m))), m);
  }), { numRuns: 3000 });
  assert.equal(seen.size, Object.keys(M).length, 'every type was generated');
});

test('the encoder numbers frames from 1, MACs them after authenticate(), and does not copy bulk data', () => {
  const e = new FrameEncoder();
  const first = e.encode({ type: M.PING, token: 1n });
  assert.equal(first.readBigUInt64BE(8), 1n);
  assert.equal(first.length, FRAME_HEADER_BYTES + 8);
  e.authenticate(KEY);
  const big = Buffer.alloc(1 << 20, 7);
  const parts = e.encodeParts({ type: M.WRITE, volumeId: VOLUME, requestId: 1n, offset: 0, flags: 0, data: big });
  assert.ok(parts.includes(big), 'the data is one of the pieces, not a copy');
  assert.equal((parts[0] as Buffer).readBigUInt64BE(8), 2n);
  assert.equal((parts[parts.length - 1] as Buffer).length, 16);
  assert.equal(e.nextSeq, 3n);
  const r = decode([first, Buffer.concat(parts)], undefined, (f, d) => { if (f.seq === 1n) d.authenticate(KEY); });
  assert.equal(r.error, undefined);
  assert.deepEqual((r.frames[1]?.message as { data: Buffer }).data, big);
});

// ---------------------------------------------------------------- streaming

function sampleStream(): { stream: Buffer; messages: SyncMessage[] } {
  const messages: SyncMessage[] = [
    { type: M.AUTH_OK },
    { type: M.WRITE, volumeId: VOLUME, requestId: 1n, offset: 0, flags: 0, data: Buffer.from('first write') },
    { type: M.PING, token: 99n },
    { type: M.HASH_REQUEST, volumeId: VOLUME, requestId: 2n, offset: 0, length: 1000, blockSize: 512, flags: 0, hashes: [Buffer.alloc(32, 1), Buffer.alloc(32, 2)] },
    { type: M.FLUSH, requestId: 3n },
    { type: M.RESYNC_DATA, volumeId: VOLUME, requestId: 4n, offset: 8, data: Buffer.from('zz') },
  ];
  const e = new FrameEncoder({ key: KEY });
  return { stream: Buffer.concat(messages.map((m) => e.encode(m))), messages };
}

test('a stream of authenticated frames split at every byte offset yields the same messages', () => {
  const { stream, messages } = sampleStream();
  for (let i = 0; i <= stream.length; i++) {
    for (let j = i; j <= stream.length; j += 5) {
      const r = decode([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)], KEY);
      assert.equal(r.error, undefined);
      assert.deepEqual(r.frames.map((f) => f.message), messages, `split at ${i}, ${j}`);
    }
  }
});

test('switching to MACs between frames works wherever the stream is split', () => {
  const e = new FrameEncoder();
  const plain = [e.encode({ type: M.AUTH, mac: Buffer.alloc(32, 3) })];
  e.authenticate(KEY);
  const keyed = [e.encode({ type: M.AUTH_OK }), e.encode({ type: M.PING, token: 5n })];
  const stream = Buffer.concat([...plain, ...keyed]);
  for (let i = 0; i <= stream.length; i++) {
    const r = decode([stream.subarray(0, i), stream.subarray(i)], undefined, (f, d) => { if (f.type === M.AUTH) d.authenticate(KEY); });
    assert.equal(r.error, undefined, `split at ${i}`);
    assert.deepEqual(r.frames.map((f) => f.type), [M.AUTH, M.AUTH_OK, M.PING]);
  }
});

test('random frame streams in random chunks decode to the same messages', () => {
  fc.assert(fc.property(fc.array(arbMessage, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (ms, cuts) => {
    const e = new FrameEncoder({ key: KEY });
    const stream = Buffer.concat(ms.map((m) => e.encode(m)));
    const r = decode(splits(stream, cuts), KEY);
    assert.equal(r.error, undefined);
    assert.deepEqual(r.frames.map((f) => f.message), ms);
  }), { numRuns: 500 });
});

test('detach() inside onFrame returns exactly the bytes after that frame, and ends the decoder', () => {
  const { stream } = sampleStream();
  const firstLength = FRAME_HEADER_BYTES + 16; // AUTH_OK with its MAC
  for (let i = 0; i <= stream.length; i++) {
    let rest: Buffer | undefined;
    const chunks = [stream.subarray(0, i), stream.subarray(i)];
    const d: FrameDecoder = new FrameDecoder(() => { rest = d.detach(); }, { key: KEY });
    let late = Buffer.alloc(0);
    for (const c of chunks) {
      if (rest === undefined) d.push(c);
      else late = Buffer.concat([late, c]);
    }
    assert.deepEqual(Buffer.concat([rest ?? Buffer.alloc(0), late]), stream.subarray(firstLength), `split at ${i}`);
    assert.throws(() => d.push(Buffer.alloc(1)), (e: unknown) => code(e) === 'ERR_SYNC_STATE');
  }
});

test('authenticate() in the middle of a frame is refused', () => {
  const d = new FrameDecoder(() => undefined);
  d.push(encodeFrame({ type: M.PING, token: 1n }, 1n).subarray(0, 10));
  assert.equal(d.buffered, 10);
  assert.throws(() => d.authenticate(KEY), (e: unknown) => code(e) === 'ERR_SYNC_STATE');
});

// ---------------------------------------------------------------- rejection

test('an oversized declared length is rejected on its header alone, before any payload arrives', () => {
  const cases: Array<[string, number, number, Buffer | undefined]> = [
    ['WRITE above the frame maximum', M.WRITE, syncLimits.frameBytesMax, KEY],
    ['WRITE of 4 GiB', M.WRITE, 0xffffffff, KEY],
    ['WRITE one byte above its maximum', M.WRITE, (payloadBytesMax(M.WRITE) as number) + 1, KEY],
    ['PING of 9 bytes', M.PING, 9, KEY],
    ['AUTH_OK with a payload', M.AUTH_OK, 1, KEY],
    ['HASH_REQUEST above its maximum', M.HASH_REQUEST, (payloadBytesMax(M.HASH_REQUEST) as number) + 1, KEY],
    ['HELLO above the unauthenticated frame maximum', M.HELLO, syncLimits.unauthenticatedFrameBytesMax, undefined],
    ['WRITE of 64 KiB before authentication', M.WRITE, 64 * 1024, undefined],
  ];
  for (const [name, type, length, key] of cases) {
    const header = rawFrame(type, 1n, Buffer.alloc(0), undefined, length);
    const r = expectCode([header], 'ERR_SYNC_TOO_BIG', key);
    assert.equal(r.frames.length, 0, name);
  }
  // the largest WRITE is accepted on its header: the decoder waits for the payload
  const d = new FrameDecoder(() => undefined, { key: KEY });
  d.push(rawFrame(M.WRITE, 1n, Buffer.alloc(0), undefined, payloadBytesMax(M.WRITE) as number));
  assert.equal(d.buffered, FRAME_HEADER_BYTES);
  assert.ok(FRAME_HEADER_BYTES + (payloadBytesMax(M.WRITE) as number) + 16 <= syncLimits.frameBytesMax);
});

test('bad magic, version and type are rejected with their codes', () => {
  const good = encodeFrame({ type: M.PING, token: 1n }, 1n);
  const magic = Buffer.from(good); magic.writeUInt32BE(0x12345678, 0);
  const version = Buffer.from(good); version.writeUInt16BE(2, 4);
  const type = Buffer.from(good); type.writeUInt16BE(999, 6);
  assert.match((expectCode([magic], 'ERR_SYNC_MAGIC').error as Error).message, /0x12345678/);
  expectCode([version], 'ERR_SYNC_VERSION');
  expectCode([type], 'ERR_SYNC_TYPE');
});

test('a replayed frame (same seq), a skipped seq and a seq of 0 are rejected', () => {
  const one = encodeFrame({ type: M.PING, token: 1n }, 1n, KEY);
  const r = expectCode([one, one], 'ERR_SYNC_REPLAY', KEY);
  assert.equal(r.frames.length, 1);
  expectCode([one, encodeFrame({ type: M.PING, token: 1n }, 3n, KEY)], 'ERR_SYNC_REPLAY', KEY);
  expectCode([rawFrame(M.PING, 0n, Buffer.alloc(8), KEY)], 'ERR_SYNC_REPLAY', KEY);
  // a frame of another session (same seq, other key) fails its MAC
  expectCode([encodeFrame({ type: M.PING, token: 1n }, 1n, Buffer.alloc(32, 0x0c))], 'ERR_SYNC_MAC', KEY);
});

test('a flipped bit anywhere in the MAC or the payload fails the MAC; a missing MAC is not accepted', () => {
  const frame = encodeFrame({ type: M.WRITE, volumeId: VOLUME, requestId: 9n, offset: 0, flags: 0, data: Buffer.from('abc') }, 1n, KEY);
  for (let bit = 0; bit < 8 * frame.length; bit++) {
    const bad = Buffer.from(frame);
    bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7));
    const r = decode([bad], KEY);
    assert.equal(r.frames.length, 0, `bit ${bit}`);
    // a flipped length bit may leave the decoder waiting for more bytes; any other flip is an error
    const inLength = bit >= 8 * 16 && bit < 8 * FRAME_HEADER_BYTES;
    assert.ok(r.error instanceof SyncProtocolError || (inLength && r.error === undefined), `bit ${bit}`);
    if (bit >= 8 * FRAME_HEADER_BYTES) assert.equal(code(r.error), 'ERR_SYNC_MAC', `bit ${bit}`);
  }
  // an unauthenticated frame sent into an authenticated session: its first bytes are read as the MAC
  const plain = encodeFrame({ type: M.PING, token: 1n }, 1n);
  expectCode([plain, plain], 'ERR_SYNC_MAC', KEY);
});

// ---------------------------------------------------------------- the frame MAC (AES-256-GCM as GMAC)

const flip = (b: Buffer, bit: number): Buffer => {
  const c = Buffer.from(b);
  c[bit >> 3] = (c[bit >> 3] as number) ^ (1 << (bit & 7));
  return c;
};

/** Decodes one stream with a decoder that expects nextSeq; never throws. */
function decodeAt(stream: Buffer, nextSeq: bigint, key: Buffer = KEY): Decoded {
  const out: Decoded = { frames: [], error: undefined };
  try {
    new FrameDecoder((f) => out.frames.push(f), { key, nextSeq }).push(stream);
  } catch (e) {
    out.error = e;
  }
  return out;
}

test('golden GMAC tags (computed independently with Python cryptography AESGCM: empty plaintext, IV = 0^32 || seq)', () => {
  const seq = 0x0102030405060708n;
  const header = Buffer.from('544e4453' + '0001' + '0005' + '0102030405060708' + '00000008', 'hex');
  const payload = Buffer.from('0000000000000001', 'hex');
  const tag = '5f793c97dbf22e6326e277cfbb1b4c19';
  assert.equal(frameMac(KEY, seq, [header, payload]).toString('hex'), tag);
  assert.equal(encodeFrame({ type: M.PING, token: 1n }, seq, KEY).toString('hex'), header.toString('hex') + payload.toString('hex') + tag);
  // AUTH_OK has no payload: the MAC covers the header alone
  assert.equal(encodeFrame({ type: M.AUTH_OK }, 3n, KEY).subarray(FRAME_HEADER_BYTES).toString('hex'), '95c2ba3c2f0027ec8badb88a290084d0');
  assert.equal(frameMac(KEY, seq, [header, payload]).length, syncLimits.macBytes);
});

test('an encoder and a decoder holding a session key MAC exactly as createCipheriv(aes-256-gcm) does', () => {
  const nodeMac = (key: Buffer, seq: bigint, body: Buffer): Buffer => {
    const iv = Buffer.alloc(12);
    iv.writeBigUInt64BE(seq, 4);
    const gcm = createCipheriv('aes-256-gcm', key, iv);
    gcm.setAAD(body);
    gcm.final();
    return gcm.getAuthTag();
  };
  fc.assert(fc.property(fc.array(arbMessage, { minLength: 1, maxLength: 8 }), fc.bigInt({ min: 1n, max: 2n ** 64n - 9n }), fc.boolean(),
    (messages, first, viaAuthenticate) => {
      const key = randomBytes(32);
      const e = viaAuthenticate ? new FrameEncoder({ nextSeq: first }) : new FrameEncoder({ key, nextSeq: first });
      if (viaAuthenticate) e.authenticate(key);
      const frames = messages.map((m) => e.encode(m));
      frames.forEach((f, i) => {
        const end = f.length - syncLimits.macBytes;
        assert.deepEqual(f.subarray(end), nodeMac(key, first + BigInt(i), f.subarray(0, end)));
      });
      // the decoder, fed frames MACed by Node, accepts them all and refuses one MACed under another key
      const got: SyncMessage[] = [];
      const d = new FrameDecoder((f) => got.push(f.message), viaAuthenticate ? { nextSeq: first } : { key, nextSeq: first });
      if (viaAuthenticate) d.authenticate(key);
      d.push(Buffer.concat(frames));
      assert.deepEqual(got, messages);
      const other = Buffer.from(frames[0] as Buffer);
      const end = other.length - syncLimits.macBytes;
      nodeMac(randomBytes(32), first, other.subarray(0, end)).copy(other, end);
      assert.equal(code(decodeAt(other, first, key).error), 'ERR_SYNC_MAC');
    }), { numRuns: 200 });
});

test('the MAC over pieces (one setAAD per piece) equals the MAC over their concatenation, however the bytes are split', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(), { maxLength: 8 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    (raw, cuts, seq) => {
      const whole = Buffer.from(raw);
      const pieces = splits(whole, cuts); // odd lengths and empty pieces included
      assert.deepEqual(frameMac(KEY, seq, pieces), frameMac(KEY, seq, [whole]));
    }), { numRuns: 1000 });
  // a WRITE of bulk data as the encoder sends it: header, fields, data (odd sizes, not block-aligned)
  const data = Buffer.alloc((1 << 20) + 37, 0x5a);
  const parts = encodeFrameParts({ type: M.WRITE, volumeId: VOLUME, requestId: 1n, offset: 0, flags: 0, data }, 9n, KEY);
  assert.ok(parts.includes(data), 'the data is MACed in place, not copied');
  const mac = parts[parts.length - 1] as Buffer;
  assert.deepEqual(mac, frameMac(KEY, 9n, [Buffer.concat(parts.slice(0, -1))]));
  const r = decodeAt(Buffer.concat(parts), 9n);
  assert.equal(r.error, undefined);
  assert.equal(r.frames.length, 1);
});

test('a flipped bit anywhere in header, payload or MAC fails the MAC', () => {
  const seq = 0x0102030405060708n; // flipping one bit of it never gives 0
  const frame = encodeFrame({ type: M.WRITE, volumeId: VOLUME, requestId: 9n, offset: 0, flags: 0, data: Buffer.from('abcdefgh') }, seq, KEY);
  const end = frame.length - syncLimits.macBytes;
  for (let bit = 0; bit < 8 * frame.length; bit++) {
    const bad = flip(frame, bit);
    // the MAC itself: recomputed over the altered header and payload under the frame's seq, it never matches the altered tag
    assert.notDeepEqual(frameMac(KEY, seq, [bad.subarray(0, end)]), bad.subarray(end), `bit ${bit}`);
    // the decoder, expecting whatever seq the altered header claims: the frame is never delivered
    const claimed = bad.readBigUInt64BE(8);
    const r = decodeAt(bad, claimed);
    assert.equal(r.frames.length, 0, `bit ${bit}`);
    const byte = bit >> 3;
    if (byte < 4) assert.equal(code(r.error), 'ERR_SYNC_MAGIC', `bit ${bit}`);
    else if (byte < 6) assert.equal(code(r.error), 'ERR_SYNC_VERSION', `bit ${bit}`);
    else if (byte < 8) {
      // another type: unknown, too long for it, or known and fitting - then its MAC fails
      assert.ok(['ERR_SYNC_TYPE', 'ERR_SYNC_TOO_BIG', 'ERR_SYNC_MAC'].includes(code(r.error) ?? ''), `bit ${bit}: ${String(r.error)}`);
    } else if (byte < 16) assert.equal(code(r.error), 'ERR_SYNC_MAC', `bit ${bit} (seq)`);
    else if (byte < FRAME_HEADER_BYTES) {
      // another length: too long for the type, still waiting for bytes, or shorter - then its MAC fails
      assert.ok(r.error === undefined || ['ERR_SYNC_TOO_BIG', 'ERR_SYNC_MAC'].includes(code(r.error) ?? ''), `bit ${bit}: ${String(r.error)}`);
    } else assert.equal(code(r.error), 'ERR_SYNC_MAC', `bit ${bit}`);
  }
  assert.equal(decodeAt(frame, seq).frames.length, 1, 'the unaltered frame verifies');
});

test('a frame MACed under one seq does not verify under another', () => {
  fc.assert(fc.property(arbMessage, fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }), (m, s1, s2) => {
    fc.pre(s1 !== s2);
    const frame = encodeFrame(m, s1, KEY);
    const end = frame.length - syncLimits.macBytes;
    const body = frame.subarray(0, end);
    assert.notDeepEqual(frameMac(KEY, s2, [body]), frameMac(KEY, s1, [body]));
    // the header renumbered to s2, the MAC of s1 kept
    const moved = Buffer.from(frame);
    moved.writeBigUInt64BE(s2, 8);
    assert.equal(code(decodeAt(moved, s2).error), 'ERR_SYNC_MAC');
    // the IV binds the seq on its own: header says s2 and the MAC covers that header, but under the IV of s1
    const ivOnly = Buffer.concat([moved.subarray(0, end), frameMac(KEY, s1, [moved.subarray(0, end)])]);
    assert.equal(code(decodeAt(ivOnly, s2).error), 'ERR_SYNC_MAC');
    // control: MACed under s2, it verifies at s2
    const good = Buffer.concat([moved.subarray(0, end), frameMac(KEY, s2, [moved.subarray(0, end)])]);
    assert.deepEqual(decodeAt(good, s2).frames.map((f) => f.message), [m]);
  }), { numRuns: 500 });
});

test('frameMac refuses a key of the wrong size and a seq that is not a u64; an encoder never reuses a seq', () => {
  const isArg = (e: unknown): boolean => code(e) === 'ERR_SYNC_ARGUMENT';
  assert.throws(() => frameMac(Buffer.alloc(16), 1n, [Buffer.alloc(1)]), isArg);
  assert.throws(() => frameMac(KEY, -1n, [Buffer.alloc(1)]), isArg);
  assert.throws(() => frameMac(KEY, 2n ** 64n, [Buffer.alloc(1)]), isArg);
  assert.throws(() => frameMac(KEY, 1 as unknown as bigint, [Buffer.alloc(1)]), isArg);
  // the last seq is used once, then the encoder stops: the GCM IV never wraps around
  const e = new FrameEncoder({ key: KEY, nextSeq: 2n ** 64n - 1n });
  const last = e.encode({ type: M.PING, token: 1n });
  assert.equal(last.readBigUInt64BE(8), 2n ** 64n - 1n);
  assert.throws(() => e.encode({ type: M.PING, token: 2n }), (err: unknown) => code(err) === 'ERR_SYNC_STATE');
  assert.equal(decodeAt(last, 2n ** 64n - 1n).frames.length, 1);
});

test('after an error the decoder stays failed with the same error', () => {
  const d = new FrameDecoder(() => undefined);
  assert.throws(() => d.push(Buffer.alloc(20)), (e: unknown) => code(e) === 'ERR_SYNC_MAGIC');
  assert.throws(() => d.push(encodeFrame({ type: M.PING, token: 1n }, 1n)), (e: unknown) => code(e) === 'ERR_SYNC_MAGIC');
});

test('payloads that fail their type\'s decoder are ERR_SYNC_TRUNCATED', () => {
  const id = VOLUME.toString('hex');
  const u64h = (n: bigint): string => n.toString(16).padStart(16, '0');
  const cases: Array<[string, number, string]> = [
    ['PING short', M.PING, '00'],
    ['PING trailing byte', M.PING, '000000000000000100'],
    ['AUTH short', M.AUTH, '00'.repeat(31)],
    ['HELLO empty name', M.HELLO, id + '00'.repeat(32) + '0000' + '0001' + '0001'],
    ['HELLO name with a newline', M.HELLO, id + '00'.repeat(32) + '0002' + '610a' + '0001' + '0001'],
    ['HELLO name is invalid UTF-8', M.HELLO, id + '00'.repeat(32) + '0003' + 'f09f98' + '0001' + '0001'],
    ['HELLO name longer than 64 bytes', M.HELLO, id + '00'.repeat(32) + '0041' + '61'.repeat(65) + '0001' + '0001'],
    ['HELLO no versions', M.HELLO, id + '00'.repeat(32) + '0001' + '61' + '0000'],
    ['HELLO versions not ascending', M.HELLO, id + '00'.repeat(32) + '0001' + '61' + '0002' + '0002' + '0001'],
    ['HELLO version 0', M.HELLO, id + '00'.repeat(32) + '0001' + '61' + '0001' + '0000'],
    ['HELLO 17 versions', M.HELLO, id + '00'.repeat(32) + '0001' + '61' + '0011' + '0001'.repeat(17)],
    ['HELLO extension above its maximum', M.HELLO, id + '00'.repeat(32) + '0001' + '61' + '0001' + '0001' + '00'.repeat(1025)],
    ['REJECT reason cut short', M.REJECT, '00000001' + '0005' + '6162'],
    ['REJECT reason invalid UTF-8', M.REJECT, '00000001' + '0001' + 'ff'],
    ['WRITE without data', M.WRITE, id + u64h(1n) + u64h(0n) + '00000000'],
    ['WRITE with unknown flags', M.WRITE, id + u64h(1n) + u64h(0n) + '00000002' + '61'],
    ['WRITE at offset 2^53', M.WRITE, id + u64h(1n) + u64h(2n ** 53n) + '00000000' + '61'],
    ['WRITE ending beyond 2^53', M.WRITE, id + u64h(1n) + u64h(2n ** 53n - 1n) + '00000000' + '61'],
    ['ZERO of length 0', M.ZERO, id + u64h(1n) + u64h(0n) + u64h(0n) + '00000000'],
    ['ZERO with unknown flags', M.ZERO, id + u64h(1n) + u64h(0n) + u64h(1n) + '00000004'],
    ['TRIM with NO_HOLE', M.TRIM, id + u64h(1n) + u64h(0n) + u64h(1n) + '00000002'],
    ['RESYNC_REQUEST above the data maximum', M.RESYNC_REQUEST, id + u64h(1n) + u64h(0n) + (syncLimits.dataBytesMax + 1).toString(16).padStart(8, '0')],
    ['GENERATIONS unknown disk state', M.GENERATIONS, id + u64h(1n) + u64h(1n).repeat(4) + '04' + '00000000' + u64h(0n) + u64h(0n)],
    ['GENERATIONS unknown flags', M.GENERATIONS, id + u64h(1n) + u64h(1n).repeat(4) + '00' + '00000008' + u64h(0n) + u64h(0n)],
    ['HASH_REQUEST count does not match the range', M.HASH_REQUEST, id + u64h(1n) + u64h(0n) + u64h(1024n) + '00000200' + '00000000' + '00000001' + '00'.repeat(32)],
    ['HASH_REQUEST block size not a power of two', M.HASH_REQUEST, id + u64h(1n) + u64h(0n) + u64h(600n) + '00000258' + '00000000' + '00000001' + '00'.repeat(32)],
    ['HASH_REQUEST block size too small', M.HASH_REQUEST, id + u64h(1n) + u64h(0n) + u64h(256n) + '00000100' + '00000000' + '00000001' + '00'.repeat(32)],
    ['HASH_REQUEST hashes cut short', M.HASH_REQUEST, id + u64h(1n) + u64h(0n) + u64h(512n) + '00000200' + '00000000' + '00000001' + '00'.repeat(31)],
    ['HASH_REQUEST count above its maximum', M.HASH_REQUEST, id + u64h(1n) + u64h(0n) + u64h(512n) + '00000200' + '00000000' + 'ffffffff'],
    ['HASH_REPLY bit beyond the last block', M.HASH_REPLY, id + u64h(1n) + u64h(0n) + '00000003' + '08'],
    ['HASH_REPLY no blocks', M.HASH_REPLY, id + u64h(1n) + u64h(0n) + '00000000'],
  ];
  for (const [name, type, hex] of cases) {
    const payload = Buffer.from(hex, 'hex');
    assert.throws(() => decodeMessage(type, payload), (e: unknown) => code(e) === 'ERR_SYNC_TRUNCATED', name);
    // in a frame, a payload longer than its type allows is already refused on the header
    const tooBig = payload.length > (payloadBytesMax(type) as number);
    expectCode([rawFrame(type, 1n, payload, KEY)], tooBig ? 'ERR_SYNC_TOO_BIG' : 'ERR_SYNC_TRUNCATED', KEY);
  }
  // a HELLO may carry extension bytes for later versions
  const hello = decodeMessage(M.HELLO, Buffer.from(id + '00'.repeat(32) + '0001' + '61' + '0001' + '0001' + 'ee'.repeat(1024), 'hex'));
  assert.equal(hello.type === M.HELLO && hello.nodeName, 'a');
});

test('encoders refuse what the decoders would refuse, with ERR_SYNC_ARGUMENT', () => {
  const bad: SyncMessage[] = [
    { type: M.WRITE, volumeId: VOLUME, requestId: 1n, offset: 0, flags: 0, data: Buffer.alloc(0) },
    { type: M.WRITE, volumeId: Buffer.alloc(15), requestId: 1n, offset: 0, flags: 0, data: Buffer.alloc(1) },
    { type: M.WRITE, volumeId: VOLUME, requestId: -1n, offset: 0, flags: 0, data: Buffer.alloc(1) },
    { type: M.WRITE, volumeId: VOLUME, requestId: 1n, offset: 0.5, flags: 0, data: Buffer.alloc(1) },
    { type: M.ZERO, volumeId: VOLUME, requestId: 1n, offset: Number.MAX_SAFE_INTEGER, length: 1, flags: 0 },
    { type: M.PING, token: 2n ** 64n },
    { type: M.HELLO, clusterId: VOLUME, nonce: Buffer.alloc(32), nodeName: 'a'.repeat(65), versions: [1] },
    { type: M.HELLO, clusterId: VOLUME, nonce: Buffer.alloc(32), nodeName: '\ud800', versions: [1] },
    { type: M.HELLO, clusterId: VOLUME, nonce: Buffer.alloc(31), nodeName: 'a', versions: [1] },
    { type: M.HELLO, clusterId: VOLUME, nonce: Buffer.alloc(32), nodeName: 'a', versions: [2, 1] },
    { type: M.REJECT, code: 1, reason: 'x'.repeat(1025) },
    { type: M.HASH_REQUEST, volumeId: VOLUME, requestId: 1n, offset: 0, length: 1025, blockSize: 512, flags: 0, hashes: [Buffer.alloc(32), Buffer.alloc(32)] },
    { type: M.HASH_REPLY, volumeId: VOLUME, requestId: 1n, offset: 0, blocks: 9, bitmap: Buffer.alloc(1) },
    { type: 99 } as unknown as SyncMessage,
  ];
  for (const m of bad) {
    assert.throws(() => encodeFrame(m, 1n, KEY), (e: unknown) => code(e) === 'ERR_SYNC_ARGUMENT', JSON.stringify(m, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
  }
  // frames above the unauthenticated maximum cannot be sent before authentication
  const big = { type: M.WRITE, volumeId: VOLUME, requestId: 1n, offset: 0, flags: 0, data: Buffer.alloc(8192) } as const;
  assert.throws(() => encodeFrame(big, 1n), (e: unknown) => code(e) === 'ERR_SYNC_ARGUMENT');
  assert.doesNotThrow(() => encodeFrameParts(big, 1n, KEY));
  assert.throws(() => encodeFrame({ type: M.PING, token: 1n }, 0n), (e: unknown) => code(e) === 'ERR_SYNC_ARGUMENT');
  assert.throws(() => new FrameDecoder(() => undefined, { key: Buffer.alloc(16) }), (e: unknown) => code(e) === 'ERR_SYNC_ARGUMENT');
});

// ---------------------------------------------------------------- fuzz

test('random bytes only ever raise SyncProtocolError', () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 6 }), fc.boolean(), (chunks, keyed) => {
    const r = decode(chunks.map((c) => Buffer.from(c)), keyed ? KEY : undefined);
    assert.ok(r.error === undefined || r.error instanceof SyncProtocolError, String(r.error));
  }), { numRuns: 2000 });
});

test('random payloads under valid headers only ever raise SyncProtocolError', () => {
  const types = Object.values(M);
  fc.assert(fc.property(fc.constantFrom(...types), fc.uint8Array({ maxLength: 400 }), fc.boolean(), (type, payload, keyed) => {
    const key = keyed ? KEY : undefined;
    const r = decode([rawFrame(type, 1n, Buffer.from(payload), key)], key);
    assert.ok(r.error === undefined || r.error instanceof SyncProtocolError, String(r.error));
    try {
      decodeMessage(type, Buffer.from(payload));
    } catch (e) {
      assert.equal(code(e), 'ERR_SYNC_TRUNCATED', String(e));
    }
  }), { numRuns: 5000 });
});

test('mutated authenticated frames are never delivered: only the frames before the first mutation arrive', () => {
  fc.assert(fc.property(
    fc.array(arbMessage, { minLength: 1, maxLength: 6 }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }),
    fc.array(fc.nat(), { maxLength: 6 }),
    (ms, mutations, cuts) => {
      const e = new FrameEncoder({ key: KEY });
      const frames = ms.map((m) => e.encode(m));
      const stream = Buffer.concat(frames);
      const bad = Buffer.from(stream);
      for (const [at, x] of mutations) {
        const i = at % stream.length;
        bad[i] = (bad[i] as number) ^ x;
      }
      // two mutations of one byte can cancel out: the first byte that really differs counts
      let firstAt = 0;
      while (firstAt < stream.length && bad[firstAt] === stream[firstAt]) firstAt++;
      let end = 0;
      let intact = 0;
      for (const f of frames) { end += f.length; if (end <= firstAt) intact++; }
      const r = decode(splits(bad, cuts), KEY);
      // a mutated length may leave the decoder waiting for bytes that never come; otherwise it fails
      assert.ok(r.error === undefined || r.error instanceof SyncProtocolError, String(r.error));
      assert.equal(r.frames.length, intact);
      assert.deepEqual(r.frames.map((f) => f.message), ms.slice(0, intact));
    },
  ), { numRuns: 1000 });
});

test('mutated unauthenticated frames raise only SyncProtocolError', () => {
  fc.assert(fc.property(
    fc.array(arbMessage, { minLength: 1, maxLength: 4 }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }),
    (ms, mutations) => {
      const stream = Buffer.concat(ms.map((m, i) => encodeFrame(m, BigInt(i + 1))));
      for (const [at, x] of mutations) stream[at % stream.length] = (stream[at % stream.length] as number) ^ x;
      const r = decode([stream]);
      assert.ok(r.error === undefined || r.error instanceof SyncProtocolError, String(r.error));
    },
  ), { numRuns: 1000 });
});
