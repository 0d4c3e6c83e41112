// The resync messages of the sync link (RESYNC_START, BITMAP, RESYNC_DONE,
// VOLUME_REFUSED) and the fields GENERATIONS and HASH_REQUEST gained: golden
// bytes, round trips, and every refusal on both sides of the codec.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import '../helpers/fc-seed';
import { SyncProtocolError, type SyncErrorCode } from '../../src/protocol/sync/errors';
import { FRAME_HEADER_BYTES, FrameDecoder, SYNC_MAGIC, encodeFrame, frameMac, type Frame } from '../../src/protocol/sync/frame';
import { syncLimits } from '../../src/protocol/sync/limits';
import {
  SyncBitmapFlags, SyncGenerationFlags, SyncHashFlags, SyncMessageType as M, SyncResyncMode, SyncVolumeRefusal,
  checkMessage, decodeMessage, encodePayload, payloadBytesMax, type SyncMessage,
} from '../../src/protocol/sync/messages';

const KEY = Buffer.alloc(32, 0x0b);
const VOLUME = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const ID = VOLUME.toString('hex');
const MiB = 1024 * 1024;

const hex = (n: bigint | number, bytes: number): string => BigInt(n).toString(16).padStart(2 * bytes, '0');
const u16 = (n: number): string => hex(n, 2);
const u32 = (n: number): string => hex(n, 4);
const u64 = (n: bigint | number): string => hex(n, 8);

function code(e: unknown): SyncErrorCode | undefined {
  return e instanceof SyncProtocolError ? e.code : undefined;
}

const show = (m: unknown): string => JSON.stringify(m, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))?.slice(0, 300) ?? '';

/** m survives encodePayload/decodeMessage and an authenticated frame unchanged. */
function roundTrip(m: SyncMessage): void {
  const payload = Buffer.concat(encodePayload(m));
  assert.ok(payload.length <= (payloadBytesMax(m.type) as number), `${show(m)} fits its maximum`);
  assert.deepEqual(decodeMessage(m.type, payload), m, show(m));
  const frames: Array<Frame<SyncMessage>> = [];
  new FrameDecoder((f) => frames.push(f), { key: KEY, nextSeq: 7n }).push(encodeFrame(m, 7n, KEY));
  assert.deepEqual(frames.map((f) => f.message), [m], show(m));
}

/** A keyed frame around any payload, built by hand. */
function rawFrame(type: number, payload: Buffer, seq = 1n): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32BE(SYNC_MAGIC, 0);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(seq, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload, frameMac(KEY, seq, [h, payload])]);
}

/** The payload is refused by its decoder (ERR_SYNC_TRUNCATED), and by a session decoder as a frame. */
function refusedOnDecode(name: string, type: number, payload: Buffer): void {
  assert.throws(() => decodeMessage(type, payload), (e: unknown) => code(e) === 'ERR_SYNC_TRUNCATED', name);
  const tooBig = payload.length > (payloadBytesMax(type) as number);
  const d = new FrameDecoder(() => assert.fail(`${name}: delivered`), { key: KEY });
  assert.throws(() => d.push(rawFrame(type, payload)), (e: unknown) => code(e) === (tooBig ? 'ERR_SYNC_TOO_BIG' : 'ERR_SYNC_TRUNCATED'), name);
}

/** The encoder refuses m (ERR_SYNC_ARGUMENT) and checkMessage names a reason. */
function refusedOnEncode(m: SyncMessage): void {
  assert.throws(() => encodePayload(m), (e: unknown) => code(e) === 'ERR_SYNC_ARGUMENT', show(m));
  assert.throws(() => encodeFrame(m, 1n, KEY), (e: unknown) => code(e) === 'ERR_SYNC_ARGUMENT', show(m));
  assert.equal(typeof checkMessage(m), 'string', show(m));
}

const generations = (over: Partial<Record<string, unknown>> = {}): SyncMessage => ({
  type: M.GENERATIONS, volumeId: VOLUME, size: 1 << 30, current: 0x1111n, bitmap: 0x2222n, history0: 0x3333n, history1: 0n,
  diskState: 3, flags: SyncGenerationFlags.PRIMARY, dirtyBytes: 12288, becamePrimaryAt: 1_700_000_000_000, ...over,
}) as SyncMessage;
const hashRequest = (over: Partial<Record<string, unknown>> = {}): SyncMessage => ({
  type: M.HASH_REQUEST, volumeId: VOLUME, requestId: 5n, offset: 4096, length: 8192, blockSize: 4096,
  flags: SyncHashFlags.SEND_DIFFERING, hashes: [Buffer.alloc(32, 0xa1), Buffer.alloc(32, 0xa2)], ...over,
}) as SyncMessage;
const resyncStart = (over: Partial<Record<string, unknown>> = {}): SyncMessage => ({
  type: M.RESYNC_START, volumeId: VOLUME, syncId: 0x0123456789abcdefn, mode: SyncResyncMode.BITMAP, ...over,
}) as SyncMessage;
/** 20 regions: a 3-byte bitmap whose last byte uses 4 bits */
const bitmap = (over: Partial<Record<string, unknown>> = {}): SyncMessage => ({
  type: M.BITMAP, volumeId: VOLUME, regionBytes: 4096, regionCount: 20, byteOffset: 0, flags: SyncBitmapFlags.LAST,
  bits: Buffer.from([0x81, 0xff, 0x0f]), ...over,
}) as SyncMessage;
const refused = (over: Partial<Record<string, unknown>> = {}): SyncMessage => ({
  type: M.VOLUME_REFUSED, volumeId: VOLUME, code: SyncVolumeRefusal.SPLIT_BRAIN, reason: 'split brain: both wrote', ...over,
}) as SyncMessage;

// ---------------------------------------------------------------- constants and limits

test('the new type numbers, flags, codes and limits are as documented', () => {
  assert.deepEqual([M.RESYNC_START, M.BITMAP, M.RESYNC_DONE, M.VOLUME_REFUSED], [38, 39, 40, 41]);
  assert.deepEqual(SyncResyncMode, { BITMAP: 0, FULL: 1 });
  assert.deepEqual(SyncBitmapFlags, { LAST: 1 });
  assert.deepEqual(SyncHashFlags, { SEND_DIFFERING: 1 });
  assert.deepEqual(SyncVolumeRefusal, { SIZE: 1, SPLIT_BRAIN: 2, UNRELATED: 3, BOTH_PRIMARY: 4, UNKNOWN_VOLUME: 5, PEER_NEWER: 6, BUSY: 7 });
  assert.equal(syncLimits.bitmapChunkBytesMax, MiB);
  assert.equal(syncLimits.bitmapRegionBytesMin, 4096);
  assert.equal(syncLimits.bitmapRegionBytesMax, 2 ** 30);
  assert.equal(payloadBytesMax(M.GENERATIONS), 16 + 8 + 32 + 1 + 4 + 16);
  assert.equal(payloadBytesMax(M.HASH_REQUEST), 16 + 8 + 8 + 8 + 4 + 4 + 4 + 32 * 65536);
  assert.equal(payloadBytesMax(M.RESYNC_START), 25);
  assert.equal(payloadBytesMax(M.BITMAP), 40 + MiB);
  assert.equal(payloadBytesMax(M.RESYNC_DONE), 16);
  assert.equal(payloadBytesMax(M.VOLUME_REFUSED), 22 + 1024);
  for (const t of [M.GENERATIONS, M.HASH_REQUEST, M.RESYNC_START, M.BITMAP, M.RESYNC_DONE, M.VOLUME_REFUSED]) {
    assert.ok(FRAME_HEADER_BYTES + (payloadBytesMax(t) as number) + syncLimits.macBytes <= syncLimits.frameBytesMax, `type ${t} fits a frame`);
  }
});

// ---------------------------------------------------------------- golden bytes

test('golden bytes: GENERATIONS ends with dirtyBytes and becamePrimaryAt', () => {
  const p = Buffer.concat(encodePayload(generations()));
  assert.equal(p.toString('hex'),
    ID + u64(1 << 30) + u64(0x1111) + u64(0x2222) + u64(0x3333) + u64(0) + '03' + '00000001' + u64(12288) + u64(1_700_000_000_000));
});

test('golden bytes: HASH_REQUEST carries flags between blockSize and count', () => {
  const p = Buffer.concat(encodePayload(hashRequest()));
  assert.equal(p.toString('hex'),
    ID + u64(5) + u64(4096) + u64(8192) + u32(4096) + u32(1) + u32(2) + 'a1'.repeat(32) + 'a2'.repeat(32));
});

test('golden bytes: RESYNC_START, BITMAP, RESYNC_DONE, VOLUME_REFUSED', () => {
  assert.equal(Buffer.concat(encodePayload(resyncStart({ mode: SyncResyncMode.FULL }))).toString('hex'), ID + '0123456789abcdef' + '01');
  assert.equal(Buffer.concat(encodePayload(bitmap({ regionBytes: 65536, regionCount: 2 ** 40, byteOffset: MiB, flags: 0, bits: Buffer.from('a5', 'hex') })))
    .toString('hex'), ID + u32(65536) + u64(2 ** 40) + u64(MiB) + u32(0) + 'a5');
  assert.equal(Buffer.concat(encodePayload({ type: M.RESYNC_DONE, volumeId: VOLUME })).toString('hex'), ID);
  assert.equal(Buffer.concat(encodePayload(refused({ code: 7, reason: 'busé' }))).toString('hex'), ID + u32(7) + u16(5) + '627573c3a9');
});

// ---------------------------------------------------------------- round trips

test('each new and changed message round-trips, at the edges of every field', () => {
  const samples: SyncMessage[] = [
    generations(),
    generations({ dirtyBytes: 0, becamePrimaryAt: 0, flags: 0, diskState: 0 }),
    generations({ dirtyBytes: Number.MAX_SAFE_INTEGER, becamePrimaryAt: Number.MAX_SAFE_INTEGER }),
    hashRequest(),
    hashRequest({ flags: 0 }),
    resyncStart(),
    resyncStart({ syncId: 1n, mode: SyncResyncMode.FULL }),
    resyncStart({ syncId: 2n ** 64n - 1n }),
    bitmap(),
    bitmap({ regionBytes: 2 ** 30, regionCount: 1, bits: Buffer.from([0x01]) }),
    bitmap({ regionCount: 16, bits: Buffer.from([0xff, 0xff]) }),
    // a middle chunk: its last byte is not the bitmap's, so all 8 of its bits are regions
    bitmap({ regionCount: 20, byteOffset: 0, flags: 0, bits: Buffer.from([0xff, 0xff]) }),
    bitmap({ regionCount: 20, byteOffset: 2, flags: SyncBitmapFlags.LAST, bits: Buffer.from([0x0f]) }),
    // an empty chunk: anywhere up to the end, and as the LAST one at the end
    bitmap({ regionCount: 20, byteOffset: 1, flags: 0, bits: Buffer.alloc(0) }),
    bitmap({ regionCount: 20, byteOffset: 3, flags: SyncBitmapFlags.LAST, bits: Buffer.alloc(0) }),
    bitmap({ regionCount: 20, byteOffset: 0, flags: 0, bits: Buffer.from([0, 0, 0x0f]) }),
    bitmap({ regionCount: 8 * MiB + 3, byteOffset: 0, flags: 0, bits: Buffer.alloc(MiB, 0xff) }),
    bitmap({ regionCount: 8 * MiB + 3, byteOffset: MiB, bits: Buffer.from([0x07]) }),
    bitmap({ regionCount: Number.MAX_SAFE_INTEGER, byteOffset: Math.ceil(Number.MAX_SAFE_INTEGER / 8) - 1, bits: Buffer.from([0x7f]) }),
    { type: M.RESYNC_DONE, volumeId: VOLUME },
    refused(),
    refused({ code: 99, reason: '' }),
    refused({ code: 0xffffffff, reason: 'ü'.repeat(512) }),
    ...Object.values(SyncVolumeRefusal).map((c) => refused({ code: c })),
  ];
  for (const m of samples) roundTrip(m);
});

test('BITMAP bits and HASH_REQUEST hashes decode as views into the payload; BITMAP bits are sent without a copy', () => {
  const bits = Buffer.alloc(4096, 0x55);
  const m = bitmap({ regionCount: 8 * 4096, bits });
  const parts = encodePayload(m);
  assert.ok(parts.includes(bits));
  const payload = Buffer.concat(parts);
  const d = decodeMessage(M.BITMAP, payload);
  assert.equal(d.type === M.BITMAP && d.bits.buffer, payload.buffer);
  const hp = Buffer.concat(encodePayload(hashRequest()));
  const h = decodeMessage(M.HASH_REQUEST, hp);
  assert.ok(h.type === M.HASH_REQUEST && h.hashes.every((x) => x.buffer === hp.buffer));
});

// ---------------------------------------------------------------- refusals

test('GENERATIONS: out-of-range dirtyBytes and becamePrimaryAt, and the old shorter layout, are refused', () => {
  const head = ID + u64(1) + u64(1).repeat(4) + '03' + '00000000';
  refusedOnDecode('dirtyBytes 2^53', M.GENERATIONS, Buffer.from(head + u64(2n ** 53n) + u64(0), 'hex'));
  refusedOnDecode('becamePrimaryAt 2^64-1', M.GENERATIONS, Buffer.from(head + u64(0) + u64(2n ** 64n - 1n), 'hex'));
  refusedOnDecode('without the new fields', M.GENERATIONS, Buffer.from(head, 'hex'));
  refusedOnDecode('becamePrimaryAt cut short', M.GENERATIONS, Buffer.from(head + u64(0) + '000000', 'hex'));
  refusedOnDecode('a trailing byte', M.GENERATIONS, Buffer.from(head + u64(0) + u64(0) + '00', 'hex'));
  assert.equal(decodeMessage(M.GENERATIONS, Buffer.from(head + u64(2n ** 53n - 1n) + u64(0), 'hex')).type, M.GENERATIONS);
  for (const over of [
    { dirtyBytes: -1 }, { dirtyBytes: 0.5 }, { dirtyBytes: 2 ** 53 }, { dirtyBytes: undefined }, { dirtyBytes: 1n },
    { becamePrimaryAt: -1 }, { becamePrimaryAt: 1.5 }, { becamePrimaryAt: Number.POSITIVE_INFINITY }, { becamePrimaryAt: undefined },
  ]) refusedOnEncode(generations(over));
});

test('HASH_REQUEST: unknown flags are refused', () => {
  const fixed = (flags: number): Buffer => Buffer.from(ID + u64(1) + u64(0) + u64(512) + u32(512) + u32(flags) + u32(1) + '00'.repeat(32), 'hex');
  refusedOnDecode('flag 2', M.HASH_REQUEST, fixed(2));
  refusedOnDecode('flags 0x80000000', M.HASH_REQUEST, fixed(0x80000000));
  refusedOnDecode('flags 3', M.HASH_REQUEST, fixed(3));
  assert.equal((decodeMessage(M.HASH_REQUEST, fixed(1)) as { flags: number }).flags, SyncHashFlags.SEND_DIFFERING);
  assert.equal((decodeMessage(M.HASH_REQUEST, fixed(0)) as { flags: number }).flags, 0);
  refusedOnDecode('a trailing byte', M.HASH_REQUEST, Buffer.concat([fixed(0), Buffer.alloc(1)]));
  for (const flags of [2, 3, -1, 0.5, 2 ** 32, undefined]) refusedOnEncode(hashRequest({ flags }));
});

test('RESYNC_START: a zero syncId, an unknown mode, short and trailing payloads are refused', () => {
  refusedOnDecode('syncId 0', M.RESYNC_START, Buffer.from(ID + u64(0) + '00', 'hex'));
  refusedOnDecode('mode 2', M.RESYNC_START, Buffer.from(ID + u64(1) + '02', 'hex'));
  refusedOnDecode('mode 255', M.RESYNC_START, Buffer.from(ID + u64(1) + 'ff', 'hex'));
  refusedOnDecode('mode missing', M.RESYNC_START, Buffer.from(ID + u64(1), 'hex'));
  refusedOnDecode('a trailing byte', M.RESYNC_START, Buffer.from(ID + u64(1) + '00' + '00', 'hex'));
  refusedOnDecode('volumeId cut short', M.RESYNC_START, Buffer.from(ID.slice(2), 'hex'));
  for (const over of [
    { syncId: 0n }, { syncId: -1n }, { syncId: 2n ** 64n }, { syncId: 1 }, { mode: 2 }, { mode: -1 }, { mode: 0.5 }, { mode: undefined },
    { volumeId: Buffer.alloc(15) }, { volumeId: 'x'.repeat(16) },
  ]) refusedOnEncode(resyncStart(over));
});

test('BITMAP: bad region geometry, bits past the end, set padding bits, oversize chunks and LAST misplaced are refused', () => {
  const payload = (regionBytes: number, regionCount: bigint | number, byteOffset: bigint | number, flags: number, bits: string): Buffer =>
    Buffer.from(ID + u32(regionBytes) + u64(regionCount) + u64(byteOffset) + u32(flags) + bits, 'hex');
  const LAST = SyncBitmapFlags.LAST;
  const cases: Array<[string, Buffer]> = [
    ['regionBytes not a power of two', payload(12288, 20, 0, LAST, '000000')],
    ['regionBytes 0', payload(0, 20, 0, LAST, '000000')],
    ['regionBytes below 4096', payload(2048, 20, 0, LAST, '000000')],
    ['regionBytes above 2^30', payload(2 ** 31, 20, 0, LAST, '000000')],
    ['regionCount 0', payload(4096, 0, 0, LAST, '')],
    ['regionCount 2^53', payload(4096, 2n ** 53n, 0, 0, '00')],
    ['byteOffset 2^53', payload(4096, 20, 2n ** 53n, 0, '')],
    ['bits past the end', payload(4096, 20, 0, LAST, '00000000')],
    ['bits past the end at an offset', payload(4096, 20, 2, LAST, '0000')],
    ['an empty chunk past the end', payload(4096, 20, 4, 0, '')],
    ['a padding bit set', payload(4096, 20, 0, LAST, '000010')],
    ['the top padding bit set', payload(4096, 20, 2, LAST, '80')],
    ['a padding bit set in the 1-region bitmap', payload(4096, 1, 0, LAST, '02')],
    ['a padding bit set in a chunk that ends the bitmap without LAST', payload(4096, 20, 2, 0, 'f0')],
    ['LAST on a chunk that does not reach the end', payload(4096, 20, 0, LAST, '0000')],
    ['LAST on an empty chunk before the end', payload(4096, 20, 1, LAST, '')],
    ['an unknown flag', payload(4096, 20, 0, 2 | LAST, '000000')],
    ['fields cut short', Buffer.from(ID + u32(4096) + u64(20) + u64(0) + '0000', 'hex')],
  ];
  for (const [name, p] of cases) refusedOnDecode(name, M.BITMAP, p);
  // one byte above the chunk maximum: refused by the decoder, and by a frame decoder on the header alone
  const huge = Buffer.concat([payload(4096, 2 ** 40, 0, 0, ''), Buffer.alloc(MiB + 1)]);
  refusedOnDecode('a chunk of 1 MiB + 1', M.BITMAP, huge);
  assert.equal(huge.length, (payloadBytesMax(M.BITMAP) as number) + 1);
  roundTrip(decodeMessage(M.BITMAP, huge.subarray(0, huge.length - 1)));

  for (const over of [
    { regionBytes: 12288 }, { regionBytes: 2048 }, { regionBytes: 2 ** 31 }, { regionBytes: 0 }, { regionBytes: 4096.5 },
    { regionCount: 0 }, { regionCount: 2 ** 53 }, { regionCount: 1.5 }, { regionCount: -8 },
    { byteOffset: -1 }, { byteOffset: 0.5 }, { byteOffset: 2 ** 53 },
    { bits: Buffer.from([0, 0, 0, 0]) },
    { byteOffset: 1, bits: Buffer.from([0, 0, 0]) },
    { bits: Buffer.from([0, 0, 0x10]) },
    { flags: SyncBitmapFlags.LAST, bits: Buffer.from([0, 0]) },
    { flags: 2 }, { flags: -1 }, { flags: 2 ** 32 },
    { regionCount: 2 ** 40, flags: 0, bits: Buffer.alloc(MiB + 1) },
    { bits: 'abc' }, { bits: undefined }, { volumeId: Buffer.alloc(17) },
  ]) refusedOnEncode(bitmap(over));
});

test('RESYNC_DONE: anything but a volume id is refused', () => {
  refusedOnDecode('empty', M.RESYNC_DONE, Buffer.alloc(0));
  refusedOnDecode('15 bytes', M.RESYNC_DONE, Buffer.alloc(15));
  refusedOnDecode('a trailing byte', M.RESYNC_DONE, Buffer.alloc(17));
  refusedOnEncode({ type: M.RESYNC_DONE, volumeId: Buffer.alloc(15) });
  refusedOnEncode({ type: M.RESYNC_DONE, volumeId: undefined } as unknown as SyncMessage);
});

test('VOLUME_REFUSED: code 0 and bad reason text are refused; unknown codes are accepted', () => {
  const payload = (c: number, reasonHex: string, length = reasonHex.length / 2): Buffer =>
    Buffer.from(ID + u32(c) + u16(length) + reasonHex, 'hex');
  const cases: Array<[string, Buffer]> = [
    ['code 0', payload(0, '6f6b')],
    ['a newline', payload(2, '610a62')],
    ['a NUL', payload(2, '00')],
    ['DEL', payload(2, '7f')],
    ['a tab', payload(2, '09')],
    ['invalid UTF-8', payload(2, 'ff')],
    ['a cut UTF-8 sequence', payload(2, 'c3')],
    ['an encoded surrogate', payload(2, 'eda080')],
    ['an overlong encoding', payload(2, 'c0af')],
    ['reason above 1 KiB', payload(2, '61'.repeat(1025))],
    ['reason cut short', payload(2, '6162', 5)],
    ['reason length missing', Buffer.from(ID + u32(2), 'hex')],
    ['a trailing byte', Buffer.concat([payload(2, '6f6b'), Buffer.alloc(1)])],
  ];
  for (const [name, p] of cases) refusedOnDecode(name, M.VOLUME_REFUSED, p);
  const unknown = decodeMessage(M.VOLUME_REFUSED, payload(1000, '6e6577'));
  assert.deepEqual(unknown, { type: M.VOLUME_REFUSED, volumeId: VOLUME, code: 1000, reason: 'new' });
  assert.equal((decodeMessage(M.VOLUME_REFUSED, payload(5, '61'.repeat(1024))) as { reason: string }).reason.length, 1024);

  for (const over of [
    { code: 0 }, { code: -1 }, { code: 2 ** 32 }, { code: 1.5 }, { code: undefined },
    { reason: 'a\nb' }, { reason: 'tab\there' }, { reason: '\u0000' }, { reason: '\u007f' }, { reason: '\ud800' },
    { reason: 'x'.repeat(1025) }, { reason: 'é'.repeat(513) }, { reason: undefined }, { reason: 5 },
    { volumeId: Buffer.alloc(0) },
  ]) refusedOnEncode(refused(over));
});

test('CLUSTER: a JSON document up to 512 KiB (a cluster configuration document travels whole) round-trips; anything else is refused both ways', () => {
  const m: SyncMessage = { type: M.CLUSTER, json: '{"kind":"state","pools":{"p":{"owner":"alpha","term":3}},"maintenance":false}' };
  roundTrip(m);
  assert.equal(M.CLUSTER, 48);
  assert.equal(payloadBytesMax(M.CLUSTER), 512 * 1024);
  assert.deepEqual(decodeMessage(M.CLUSTER, Buffer.from('[1,2]')), { type: M.CLUSTER, json: '[1,2]' });
  for (const [name, p] of [
    ['empty', Buffer.alloc(0)],
    ['not JSON', Buffer.from('{"kind":')],
    ['invalid UTF-8', Buffer.from('22ff22', 'hex')],
    ['over 512 KiB', Buffer.from(`"${'a'.repeat(512 * 1024)}"`)],
  ] as Array<[string, Buffer]>) refusedOnDecode(name, M.CLUSTER, p);
  for (const json of ['', '{', '\ud800', `"${'a'.repeat(512 * 1024)}"`]) refusedOnEncode({ type: M.CLUSTER, json });
});
