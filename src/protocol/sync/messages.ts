// The messages of the sync link: one payload layout per frame type, each with
// an encoder and a strictly bounds-checked decoder. Big-endian throughout.
// Offsets, lengths and sizes are numbers below 2^53; identifiers, tokens and
// generation UUIDs are bigints (all 64 bits matter). Every message passes the
// same check on the way out (ERR_SYNC_ARGUMENT) and on the way in (ERR_SYNC_TRUNCATED).
import { SyncProtocolError } from './errors';
import { syncLimits, type SyncLimits } from './limits';

/** Frame types, under the protocol's own names. */
export const SyncMessageType = {
  HELLO: 1,
  AUTH: 2,
  AUTH_OK: 3,
  REJECT: 4,
  PING: 5,
  PONG: 6,
  WRITE: 16,
  WRITE_ACK: 17,
  ZERO: 18,
  TRIM: 19,
  FLUSH: 20,
  FLUSH_ACK: 21,
  GENERATIONS: 32,
  RESYNC_REQUEST: 33,
  RESYNC_DATA: 34,
  RESYNC_ZERO: 35,
  HASH_REQUEST: 36,
  HASH_REPLY: 37,
  RESYNC_START: 38,
  BITMAP: 39,
  RESYNC_DONE: 40,
  VOLUME_REFUSED: 41,
  CLUSTER: 48,
} as const;
export type SyncMessageType = (typeof SyncMessageType)[keyof typeof SyncMessageType];

/** Flags of WRITE, ZERO and TRIM (as NBD's: FUA for all three, NO_HOLE for ZERO only). */
export const SyncWriteFlags = { FUA: 1, NO_HOLE: 2 } as const;

/** Why a REJECT was sent. */
export const SyncRejectCode = { PROTOCOL: 1, VERSION: 2, CLUSTER: 3, NAME: 4, AUTH: 5 } as const;

/** GENERATIONS.diskState: the four states of storage/metadata's DISK_STATES, numbered for the wire */
export const SyncDiskState = { DISKLESS: 0, INCONSISTENT: 1, OUTDATED: 2, UP_TO_DATE: 3 } as const;

/** GENERATIONS.flags */
export const SyncGenerationFlags = { PRIMARY: 1, CRASHED_PRIMARY: 2, DISCARD_MY_DATA: 4 } as const;

/** RESYNC_START.mode (u8): resync the regions of both dirty bitmaps, or the whole volume */
export const SyncResyncMode = { BITMAP: 0, FULL: 1 } as const;

/** BITMAP.flags: LAST marks the chunk that ends the bitmap */
export const SyncBitmapFlags = { LAST: 1 } as const;

/** HASH_REQUEST.flags: SEND_DIFFERING asks the receiver to send the differing blocks (resync), not only to name them (verify) */
export const SyncHashFlags = { SEND_DIFFERING: 1 } as const;

/** Why a VOLUME_REFUSED was sent. Decoders accept any code >= 1: later versions may add some. */
export const SyncVolumeRefusal = {
  SIZE: 1, SPLIT_BRAIN: 2, UNRELATED: 3, BOTH_PRIMARY: 4, UNKNOWN_VOLUME: 5, PEER_NEWER: 6, BUSY: 7,
} as const;

type T = typeof SyncMessageType;

export interface Hello {
  readonly type: T['HELLO'];
  readonly clusterId: Buffer;
  readonly nonce: Buffer;
  readonly nodeName: string;
  /** protocol versions this node speaks, strictly ascending */
  readonly versions: readonly number[];
}
export interface Auth { readonly type: T['AUTH']; readonly mac: Buffer }
export interface AuthOk { readonly type: T['AUTH_OK'] }
export interface Reject { readonly type: T['REJECT']; readonly code: number; readonly reason: string }
export interface Ping { readonly type: T['PING']; readonly token: bigint }
export interface Pong { readonly type: T['PONG']; readonly token: bigint }
export interface Write {
  readonly type: T['WRITE'];
  readonly volumeId: Buffer;
  readonly requestId: bigint;
  readonly offset: number;
  readonly flags: number;
  readonly data: Buffer;
}
/** status is 0 or an NBD errno */
export interface WriteAck { readonly type: T['WRITE_ACK']; readonly requestId: bigint; readonly status: number }
interface RangeOp {
  readonly volumeId: Buffer;
  readonly requestId: bigint;
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
}
export interface Zero extends RangeOp { readonly type: T['ZERO'] }
export interface Trim extends RangeOp { readonly type: T['TRIM'] }
export interface Flush { readonly type: T['FLUSH']; readonly requestId: bigint }
export interface FlushAck { readonly type: T['FLUSH_ACK']; readonly requestId: bigint; readonly status: number }
export interface Generations {
  readonly type: T['GENERATIONS'];
  readonly volumeId: Buffer;
  readonly size: number;
  readonly current: bigint;
  readonly bitmap: bigint;
  readonly history0: bigint;
  readonly history1: bigint;
  readonly diskState: number;
  readonly flags: number;
  /** bytes this side wrote while apart from its peer */
  readonly dirtyBytes: number;
  /** when this side last became primary (ms since the epoch, the sender's clock), 0 if never */
  readonly becamePrimaryAt: number;
}
export interface ResyncRequest {
  readonly type: T['RESYNC_REQUEST'];
  readonly volumeId: Buffer;
  readonly requestId: bigint;
  readonly offset: number;
  readonly length: number;
}
export interface ResyncData {
  readonly type: T['RESYNC_DATA'];
  readonly volumeId: Buffer;
  readonly requestId: bigint;
  readonly offset: number;
  readonly data: Buffer;
}
export interface ResyncZero {
  readonly type: T['RESYNC_ZERO'];
  readonly volumeId: Buffer;
  readonly requestId: bigint;
  readonly offset: number;
  readonly length: number;
}
/**
 * hashes[i] is the SHA-256 of block i: [offset + i*blockSize, min(offset + (i+1)*blockSize, offset + length)).
 * Without SEND_DIFFERING the receiver answers with a HASH_REPLY naming the differing blocks (verify); with it
 * (resync, from the sync target) the receiver first sends RESYNC_DATA / RESYNC_ZERO for each differing run of
 * blocks under the same requestId, then the HASH_REPLY naming the blocks it sent.
 */
export interface HashRequest {
  readonly type: T['HASH_REQUEST'];
  readonly volumeId: Buffer;
  readonly requestId: bigint;
  readonly offset: number;
  readonly length: number;
  readonly blockSize: number;
  /** SyncHashFlags */
  readonly flags: number;
  readonly hashes: readonly Buffer[];
}
/** bit i (byte i>>3, bit i&7, least significant first) is set when block i differs; unused bits are 0 */
export interface HashReply {
  readonly type: T['HASH_REPLY'];
  readonly volumeId: Buffer;
  readonly requestId: bigint;
  readonly offset: number;
  readonly blocks: number;
  readonly bitmap: Buffer;
}

/** The sync source starts a resync of a volume; syncId (non-zero) names it. */
export interface ResyncStart {
  readonly type: T['RESYNC_START'];
  readonly volumeId: Buffer;
  readonly syncId: bigint;
  /** SyncResyncMode */
  readonly mode: number;
}
/**
 * One chunk of a side's dirty bitmap: bits = bytes [byteOffset, byteOffset + bits.length) of the whole
 * bitmap of regionCount regions of regionBytes each (bit i: byte i>>3, bit i&7, least significant first).
 * A bitmap travels as consecutive chunks; the last, and only the last, carries SyncBitmapFlags.LAST.
 */
export interface Bitmap {
  readonly type: T['BITMAP'];
  readonly volumeId: Buffer;
  readonly regionBytes: number;
  readonly regionCount: number;
  readonly byteOffset: number;
  /** SyncBitmapFlags */
  readonly flags: number;
  readonly bits: Buffer;
}
export interface ResyncDone { readonly type: T['RESYNC_DONE']; readonly volumeId: Buffer }
/** This side will not replicate the volume with the peer now; code is a SyncVolumeRefusal (or a later one). */
export interface VolumeRefused {
  readonly type: T['VOLUME_REFUSED'];
  readonly volumeId: Buffer;
  readonly code: number;
  readonly reason: string;
}

/**
 * A message between the two nodes' cluster machines (docs/cluster.md): a UTF-8 JSON document.
 * The codec checks only its size and that it is JSON; the cluster layer checks its shape.
 */
export interface Cluster { readonly type: T['CLUSTER']; readonly json: string }

export type SyncMessage =
  | Hello | Auth | AuthOk | Reject | Ping | Pong | Write | WriteAck | Zero | Trim | Flush | FlushAck
  | Generations | ResyncRequest | ResyncData | ResyncZero | HashRequest | HashReply
  | ResyncStart | Bitmap | ResyncDone | VolumeRefused | Cluster;

const NAMES = new Map<number, string>(Object.entries(SyncMessageType).map(([k, v]) => [v, k]));

export function isSyncMessageType(type: number): type is SyncMessageType {
  return NAMES.has(type);
}

/** HELLO, WRITE_ACK, ... or `type N` for an unknown type. */
export function syncMessageTypeName(type: number): string {
  return NAMES.get(type) ?? `type ${type}`;
}

// ---------------------------------------------------------------- checks

const U64_MAX = 0xffffffffffffffffn;

function u64Ok(v: bigint): boolean { return typeof v === 'bigint' && v >= 0n && v <= U64_MAX; }
function uintOk(n: number, max: number): boolean { return Number.isInteger(n) && n >= 0 && n <= max; }
function bytesOk(b: Buffer, n: number): boolean { return Buffer.isBuffer(b) && b.length === n; }

/** Text that survives a UTF-8 round trip exactly (no lone surrogates) and has no control characters. */
function textReason(s: string, max: number, controls: boolean): string | undefined {
  if (typeof s !== 'string') return 'is not a string';
  const b = Buffer.from(s, 'utf8');
  if (b.length > max) return `is longer than ${max} bytes`;
  if (b.toString('utf8') !== s) return 'is not valid UTF-8';
  if (!controls && /[\u0000-\u001f\u007f]/.test(s)) return 'contains control characters';
  return undefined;
}

function rangeReason(offset: number, length: number, lengthMax: number): string | undefined {
  if (!uintOk(offset, Number.MAX_SAFE_INTEGER)) return `offset ${offset} is not an integer in [0, 2^53)`;
  if (!uintOk(length, lengthMax) || length === 0) return `length ${length} is not in [1, ${lengthMax}]`;
  if (offset + length > Number.MAX_SAFE_INTEGER) return `range ${offset}+${length} ends beyond 2^53`;
  return undefined;
}

function flagsReason(flags: number, known: number): string | undefined {
  if (!uintOk(flags, 0xffffffff)) return `flags ${flags} are not a u32`;
  if ((flags & ~known) !== 0) return `unknown flags 0x${flags.toString(16)}`;
  return undefined;
}

/** The first reason in the list, if any: checks read top to bottom. */
function first(...reasons: Array<string | false | undefined>): string | undefined {
  for (const r of reasons) if (typeof r === 'string') return r;
  return undefined;
}

function volumeReason(m: { volumeId: Buffer; requestId: bigint }, l: SyncLimits): string | undefined {
  return first(
    volumeIdReason(m.volumeId, l),
    !u64Ok(m.requestId) && 'requestId is not a u64',
  );
}

function volumeIdReason(volumeId: Buffer, l: SyncLimits): string | undefined {
  return bytesOk(volumeId, l.volumeIdBytes) ? undefined : `volumeId is not ${l.volumeIdBytes} bytes`;
}

function safeReason(n: number, field: string): string | undefined {
  return uintOk(n, Number.MAX_SAFE_INTEGER) ? undefined : `${field} ${n} is not an integer in [0, 2^53)`;
}

/** Why a BITMAP chunk is impossible on its own (whether it follows the previous chunk is the receiver's to check). */
function bitmapReason(m: Bitmap, l: SyncLimits): string | undefined {
  const regionsOk = isPowerOfTwo(m.regionBytes) && m.regionBytes >= l.bitmapRegionBytesMin && m.regionBytes <= l.bitmapRegionBytesMax;
  const countOk = uintOk(m.regionCount, Number.MAX_SAFE_INTEGER) && m.regionCount >= 1;
  const bitsOk = Buffer.isBuffer(m.bits) && m.bits.length <= l.bitmapChunkBytesMax;
  const head = first(
    volumeIdReason(m.volumeId, l),
    !regionsOk && `regionBytes ${m.regionBytes} is not a power of two in [${l.bitmapRegionBytesMin}, ${l.bitmapRegionBytesMax}]`,
    !countOk && `regionCount ${m.regionCount} is not an integer in [1, 2^53)`,
    safeReason(m.byteOffset, 'byteOffset'),
    flagsReason(m.flags, SyncBitmapFlags.LAST),
    !bitsOk && `bits must be a Buffer of at most ${l.bitmapChunkBytesMax} bytes`,
  );
  if (head !== undefined) return head;
  const total = Math.ceil(m.regionCount / 8);
  const end = m.byteOffset + m.bits.length;
  if (end > total) return `bytes ${m.byteOffset}+${m.bits.length} run past the end of a ${total}-byte bitmap of ${m.regionCount} regions`;
  if ((m.flags & SyncBitmapFlags.LAST) !== 0 && end !== total) return `the LAST chunk ends at byte ${end}, not at the end of the ${total}-byte bitmap`;
  const spare = m.regionCount % 8;
  if (end === total && m.bits.length > 0 && spare !== 0 && ((m.bits[m.bits.length - 1] as number) >> spare) !== 0) {
    return `bits beyond region ${m.regionCount - 1} are set`;
  }
  return undefined;
}

function isPowerOfTwo(n: number): boolean { return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0; }

// ---------------------------------------------------------------- reading and writing

/** Reads a payload front to back; every read is bounds-checked and fails as ERR_SYNC_TRUNCATED. */
class Reader {
  private at = 0;
  constructor(private readonly b: Buffer, private readonly what: string) {}

  get remaining(): number { return this.b.length - this.at; }

  fail(reason: string): never {
    throw new SyncProtocolError('ERR_SYNC_TRUNCATED', `${this.what}: ${reason}`);
  }

  private take(n: number, field: string): number {
    if (this.remaining < n) this.fail(`${field} is cut short (${this.remaining} of ${n} bytes)`);
    const at = this.at;
    this.at += n;
    return at;
  }

  bytes(n: number, field: string): Buffer {
    const at = this.take(n, field);
    return this.b.subarray(at, at + n);
  }
  u8(field: string): number { return this.b.readUInt8(this.take(1, field)); }
  u16(field: string): number { return this.b.readUInt16BE(this.take(2, field)); }
  u32(field: string): number { return this.b.readUInt32BE(this.take(4, field)); }
  u64(field: string): bigint { return this.b.readBigUInt64BE(this.take(8, field)); }
  /** a u64 that must fit a JS number exactly */
  u53(field: string): number {
    const at = this.take(8, field);
    const hi = this.b.readUInt32BE(at);
    if (hi > 0x1fffff) this.fail(`${field} is 2^53 or more`);
    return hi * 0x100000000 + this.b.readUInt32BE(at + 4);
  }
  text(n: number, max: number, field: string, controls: boolean): string {
    if (n > max) this.fail(`${field} is longer than ${max} bytes`);
    const raw = this.bytes(n, field);
    const s = raw.toString('utf8');
    if (!Buffer.from(s, 'utf8').equals(raw)) this.fail(`${field} is not valid UTF-8`);
    const reason = textReason(s, max, controls);
    if (reason !== undefined) this.fail(`${field} ${reason}`);
    return s;
  }
  rest(): Buffer {
    const at = this.at;
    this.at = this.b.length;
    return this.b.subarray(at);
  }
  end(): void {
    if (this.remaining !== 0) this.fail(`${this.remaining} trailing bytes`);
  }
}

class Writer {
  private at = 0;
  readonly b: Buffer;
  constructor(size: number) { this.b = Buffer.alloc(size); }
  bytes(v: Buffer): this { v.copy(this.b, this.at); this.at += v.length; return this; }
  u8(v: number): this { this.at = this.b.writeUInt8(v, this.at); return this; }
  u16(v: number): this { this.at = this.b.writeUInt16BE(v, this.at); return this; }
  u32(v: number): this { this.at = this.b.writeUInt32BE(v, this.at); return this; }
  u64(v: bigint | number): this { this.at = this.b.writeBigUInt64BE(BigInt(v), this.at); return this; }
}

// ---------------------------------------------------------------- layouts

interface Spec<M extends SyncMessage> {
  /** the largest payload of this type */
  max(l: SyncLimits): number;
  /** why m cannot be sent or accepted, or undefined */
  check(m: M, l: SyncLimits): string | undefined;
  /** the payload, as pieces (bulk data is passed on, not copied) */
  encode(m: M, l: SyncLimits): Buffer[];
  /** reads the fields; check() runs afterwards */
  decode(r: Reader, l: SyncLimits): M;
}

type Specs = { [K in SyncMessageType]: Spec<Extract<SyncMessage, { type: K }>> };

const HELLO_FIXED = 16 + 32 + 2 + 2;
const WRITE_FIXED = 16 + 8 + 8 + 4;
const RANGE_OP_BYTES = 16 + 8 + 8 + 8 + 4;
const GENERATIONS_BYTES = 16 + 8 + 4 * 8 + 1 + 4 + 8 + 8;
const RESYNC_REQUEST_BYTES = 16 + 8 + 8 + 4;
const RESYNC_DATA_FIXED = 16 + 8 + 8;
const RESYNC_ZERO_BYTES = 16 + 8 + 8 + 8;
const HASH_REQUEST_FIXED = 16 + 8 + 8 + 8 + 4 + 4 + 4;
const HASH_REPLY_FIXED = 16 + 8 + 8 + 4;
const RESYNC_START_BYTES = 16 + 8 + 1;
const BITMAP_FIXED = 16 + 4 + 8 + 8 + 4;
const RESYNC_DONE_BYTES = 16;
const VOLUME_REFUSED_FIXED = 16 + 4 + 2;
const RESYNC_MODES: readonly number[] = Object.values(SyncResyncMode);

function token<M extends Ping | Pong>(type: M['type']): Spec<M> {
  return {
    max: () => 8,
    check: (m) => first(!u64Ok(m.token) && 'token is not a u64'),
    encode: (m) => [new Writer(8).u64(m.token).b],
    decode: (r) => ({ type, token: r.u64('token') }) as M,
  };
}

function requestStatus<M extends WriteAck | FlushAck>(type: M['type']): Spec<M> {
  return {
    max: () => 12,
    check: (m) => first(!u64Ok(m.requestId) && 'requestId is not a u64', !uintOk(m.status, 0xffffffff) && 'status is not a u32'),
    encode: (m) => [new Writer(12).u64(m.requestId).u32(m.status).b],
    decode: (r) => ({ type, requestId: r.u64('requestId'), status: r.u32('status') }) as M,
  };
}

function rangeOp<M extends Zero | Trim>(type: M['type'], known: number): Spec<M> {
  return {
    max: () => RANGE_OP_BYTES,
    check: (m, l) => first(volumeReason(m, l), rangeReason(m.offset, m.length, Number.MAX_SAFE_INTEGER), flagsReason(m.flags, known)),
    encode: (m) => [new Writer(RANGE_OP_BYTES).bytes(m.volumeId).u64(m.requestId).u64(m.offset).u64(m.length).u32(m.flags).b],
    decode: (r, l) => ({
      type,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      requestId: r.u64('requestId'),
      offset: r.u53('offset'),
      length: r.u53('length'),
      flags: r.u32('flags'),
    }) as M,
  };
}

const specs: Specs = {
  [SyncMessageType.HELLO]: {
    max: (l) => HELLO_FIXED + l.nodeNameBytesMax + 2 * l.versionsMax + l.helloExtensionBytesMax,
    check: (m, l) => {
      const name = textReason(m.nodeName, l.nodeNameBytesMax, false);
      const v = m.versions;
      return first(
        !bytesOk(m.clusterId, l.clusterIdBytes) && `clusterId is not ${l.clusterIdBytes} bytes`,
        !bytesOk(m.nonce, l.nonceBytes) && `nonce is not ${l.nonceBytes} bytes`,
        m.nodeName === '' && 'nodeName is empty',
        name !== undefined && `nodeName ${name}`,
        (!Array.isArray(v) || v.length === 0 || v.length > l.versionsMax) && `versions must list 1 to ${l.versionsMax} versions`,
        Array.isArray(v) && v.some((x, i) => !uintOk(x, 0xffff) || x === 0 || (i > 0 && x <= (v[i - 1] as number))) &&
          'versions must be u16 values above 0, strictly ascending',
      );
    },
    encode: (m) => {
      const name = Buffer.from(m.nodeName, 'utf8');
      const w = new Writer(HELLO_FIXED + name.length + 2 * m.versions.length)
        .bytes(m.clusterId).bytes(m.nonce).u16(name.length).bytes(name).u16(m.versions.length);
      for (const v of m.versions) w.u16(v);
      return [w.b];
    },
    decode: (r, l) => {
      const clusterId = r.bytes(l.clusterIdBytes, 'clusterId');
      const nonce = r.bytes(l.nonceBytes, 'nonce');
      const nodeName = r.text(r.u16('nodeName length'), l.nodeNameBytesMax, 'nodeName', false);
      const count = r.u16('version count');
      if (count > l.versionsMax) r.fail(`more than ${l.versionsMax} versions`);
      const versions: number[] = [];
      for (let i = 0; i < count; i++) versions.push(r.u16('version'));
      // later versions may append fields; version 1 ignores them (AUTH covers them all the same)
      if (r.rest().length > l.helloExtensionBytesMax) r.fail(`more than ${l.helloExtensionBytesMax} extension bytes`);
      return { type: SyncMessageType.HELLO, clusterId, nonce, nodeName, versions };
    },
  },
  [SyncMessageType.AUTH]: {
    max: (l) => l.authMacBytes,
    check: (m, l) => first(!bytesOk(m.mac, l.authMacBytes) && `mac is not ${l.authMacBytes} bytes`),
    encode: (m) => [Buffer.from(m.mac)],
    decode: (r, l) => ({ type: SyncMessageType.AUTH, mac: r.bytes(l.authMacBytes, 'mac') }),
  },
  [SyncMessageType.AUTH_OK]: {
    max: () => 0,
    check: () => undefined,
    encode: () => [],
    decode: () => ({ type: SyncMessageType.AUTH_OK }),
  },
  [SyncMessageType.REJECT]: {
    max: (l) => 6 + l.rejectReasonBytesMax,
    check: (m, l) => {
      const reason = textReason(m.reason, l.rejectReasonBytesMax, true);
      return first(!uintOk(m.code, 0xffffffff) && 'code is not a u32', reason !== undefined && `reason ${reason}`);
    },
    encode: (m) => {
      const reason = Buffer.from(m.reason, 'utf8');
      return [new Writer(6 + reason.length).u32(m.code).u16(reason.length).bytes(reason).b];
    },
    decode: (r, l) => {
      const code = r.u32('code');
      return { type: SyncMessageType.REJECT, code, reason: r.text(r.u16('reason length'), l.rejectReasonBytesMax, 'reason', true) };
    },
  },
  [SyncMessageType.PING]: token<Ping>(SyncMessageType.PING),
  [SyncMessageType.PONG]: token<Pong>(SyncMessageType.PONG),
  [SyncMessageType.WRITE]: {
    max: (l) => WRITE_FIXED + l.dataBytesMax,
    check: (m, l) => first(
      volumeReason(m, l),
      !Buffer.isBuffer(m.data) && 'data is not a Buffer',
      rangeReason(m.offset, Buffer.isBuffer(m.data) ? m.data.length : 0, l.dataBytesMax),
      flagsReason(m.flags, SyncWriteFlags.FUA),
    ),
    encode: (m) => [new Writer(WRITE_FIXED).bytes(m.volumeId).u64(m.requestId).u64(m.offset).u32(m.flags).b, m.data],
    decode: (r, l) => ({
      type: SyncMessageType.WRITE,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      requestId: r.u64('requestId'),
      offset: r.u53('offset'),
      flags: r.u32('flags'),
      data: r.rest(),
    }),
  },
  [SyncMessageType.WRITE_ACK]: requestStatus<WriteAck>(SyncMessageType.WRITE_ACK),
  [SyncMessageType.ZERO]: rangeOp<Zero>(SyncMessageType.ZERO, SyncWriteFlags.FUA | SyncWriteFlags.NO_HOLE),
  [SyncMessageType.TRIM]: rangeOp<Trim>(SyncMessageType.TRIM, SyncWriteFlags.FUA),
  [SyncMessageType.FLUSH]: {
    max: () => 8,
    check: (m) => first(!u64Ok(m.requestId) && 'requestId is not a u64'),
    encode: (m) => [new Writer(8).u64(m.requestId).b],
    decode: (r) => ({ type: SyncMessageType.FLUSH, requestId: r.u64('requestId') }),
  },
  [SyncMessageType.FLUSH_ACK]: requestStatus<FlushAck>(SyncMessageType.FLUSH_ACK),
  [SyncMessageType.GENERATIONS]: {
    max: () => GENERATIONS_BYTES,
    check: (m, l) => first(
      !bytesOk(m.volumeId, l.volumeIdBytes) && `volumeId is not ${l.volumeIdBytes} bytes`,
      !uintOk(m.size, Number.MAX_SAFE_INTEGER) && `size ${m.size} is not an integer in [0, 2^53)`,
      ![m.current, m.bitmap, m.history0, m.history1].every(u64Ok) && 'a generation is not a u64',
      !uintOk(m.diskState, SyncDiskState.UP_TO_DATE) && `unknown disk state ${m.diskState}`,
      flagsReason(m.flags, SyncGenerationFlags.PRIMARY | SyncGenerationFlags.CRASHED_PRIMARY | SyncGenerationFlags.DISCARD_MY_DATA),
      safeReason(m.dirtyBytes, 'dirtyBytes'),
      safeReason(m.becamePrimaryAt, 'becamePrimaryAt'),
    ),
    encode: (m) => [new Writer(GENERATIONS_BYTES).bytes(m.volumeId).u64(m.size).u64(m.current).u64(m.bitmap)
      .u64(m.history0).u64(m.history1).u8(m.diskState).u32(m.flags).u64(m.dirtyBytes).u64(m.becamePrimaryAt).b],
    decode: (r, l) => ({
      type: SyncMessageType.GENERATIONS,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      size: r.u53('size'),
      current: r.u64('current'),
      bitmap: r.u64('bitmap'),
      history0: r.u64('history0'),
      history1: r.u64('history1'),
      diskState: r.u8('diskState'),
      flags: r.u32('flags'),
      dirtyBytes: r.u53('dirtyBytes'),
      becamePrimaryAt: r.u53('becamePrimaryAt'),
    }),
  },
  [SyncMessageType.RESYNC_REQUEST]: {
    max: () => RESYNC_REQUEST_BYTES,
    check: (m, l) => first(volumeReason(m, l), rangeReason(m.offset, m.length, l.dataBytesMax)),
    encode: (m) => [new Writer(RESYNC_REQUEST_BYTES).bytes(m.volumeId).u64(m.requestId).u64(m.offset).u32(m.length).b],
    decode: (r, l) => ({
      type: SyncMessageType.RESYNC_REQUEST,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      requestId: r.u64('requestId'),
      offset: r.u53('offset'),
      length: r.u32('length'),
    }),
  },
  [SyncMessageType.RESYNC_DATA]: {
    max: (l) => RESYNC_DATA_FIXED + l.dataBytesMax,
    check: (m, l) => first(
      volumeReason(m, l),
      !Buffer.isBuffer(m.data) && 'data is not a Buffer',
      rangeReason(m.offset, Buffer.isBuffer(m.data) ? m.data.length : 0, l.dataBytesMax),
    ),
    encode: (m) => [new Writer(RESYNC_DATA_FIXED).bytes(m.volumeId).u64(m.requestId).u64(m.offset).b, m.data],
    decode: (r, l) => ({
      type: SyncMessageType.RESYNC_DATA,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      requestId: r.u64('requestId'),
      offset: r.u53('offset'),
      data: r.rest(),
    }),
  },
  [SyncMessageType.RESYNC_ZERO]: {
    max: () => RESYNC_ZERO_BYTES,
    check: (m, l) => first(volumeReason(m, l), rangeReason(m.offset, m.length, Number.MAX_SAFE_INTEGER)),
    encode: (m) => [new Writer(RESYNC_ZERO_BYTES).bytes(m.volumeId).u64(m.requestId).u64(m.offset).u64(m.length).b],
    decode: (r, l) => ({
      type: SyncMessageType.RESYNC_ZERO,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      requestId: r.u64('requestId'),
      offset: r.u53('offset'),
      length: r.u53('length'),
    }),
  },
  [SyncMessageType.HASH_REQUEST]: {
    max: (l) => HASH_REQUEST_FIXED + l.hashBytes * l.hashesMax,
    check: (m, l) => {
      const blocksOk = isPowerOfTwo(m.blockSize) && m.blockSize >= l.hashBlockBytesMin && m.blockSize <= l.hashBlockBytesMax;
      const hashes = Array.isArray(m.hashes) ? m.hashes : undefined;
      const blocks = Math.ceil(m.length / m.blockSize);
      return first(
        volumeReason(m, l),
        rangeReason(m.offset, m.length, Number.MAX_SAFE_INTEGER),
        !blocksOk && `blockSize ${m.blockSize} is not a power of two in [${l.hashBlockBytesMin}, ${l.hashBlockBytesMax}]`,
        flagsReason(m.flags, SyncHashFlags.SEND_DIFFERING),
        (hashes === undefined || hashes.length > l.hashesMax) && `hashes must be an array of at most ${l.hashesMax}`,
        hashes !== undefined && hashes.length !== blocks && `${hashes.length} hashes for ${blocks} blocks`,
        hashes !== undefined && hashes.some((h) => !bytesOk(h, l.hashBytes)) && `a hash is not ${l.hashBytes} bytes`,
      );
    },
    encode: (m, l) => {
      const w = new Writer(HASH_REQUEST_FIXED + l.hashBytes * m.hashes.length)
        .bytes(m.volumeId).u64(m.requestId).u64(m.offset).u64(m.length).u32(m.blockSize).u32(m.flags).u32(m.hashes.length);
      for (const h of m.hashes) w.bytes(h);
      return [w.b];
    },
    decode: (r, l) => {
      const volumeId = r.bytes(l.volumeIdBytes, 'volumeId');
      const requestId = r.u64('requestId');
      const offset = r.u53('offset');
      const length = r.u53('length');
      const blockSize = r.u32('blockSize');
      const flags = r.u32('flags');
      const count = r.u32('hash count');
      if (count > l.hashesMax) r.fail(`more than ${l.hashesMax} hashes`);
      if (r.remaining !== count * l.hashBytes) r.fail(`${r.remaining} bytes for ${count} hashes`);
      const hashes: Buffer[] = [];
      for (let i = 0; i < count; i++) hashes.push(r.bytes(l.hashBytes, 'hash'));
      return { type: SyncMessageType.HASH_REQUEST, volumeId, requestId, offset, length, blockSize, flags, hashes };
    },
  },
  [SyncMessageType.HASH_REPLY]: {
    max: (l) => HASH_REPLY_FIXED + Math.ceil(l.hashesMax / 8),
    check: (m, l) => {
      const bytes = Math.ceil(m.blocks / 8);
      const spare = m.blocks % 8;
      return first(
        volumeReason(m, l),
        !uintOk(m.offset, Number.MAX_SAFE_INTEGER) && `offset ${m.offset} is not an integer in [0, 2^53)`,
        (!uintOk(m.blocks, l.hashesMax) || m.blocks === 0) && `blocks ${m.blocks} is not in [1, ${l.hashesMax}]`,
        !bytesOk(m.bitmap, bytes) && `bitmap is not ${bytes} bytes`,
        spare !== 0 && bytesOk(m.bitmap, bytes) && ((m.bitmap[bytes - 1] as number) >> spare) !== 0 && 'bits beyond the last block are set',
      );
    },
    encode: (m) => [new Writer(HASH_REPLY_FIXED + m.bitmap.length).bytes(m.volumeId).u64(m.requestId).u64(m.offset).u32(m.blocks).bytes(m.bitmap).b],
    decode: (r, l) => {
      const volumeId = r.bytes(l.volumeIdBytes, 'volumeId');
      const requestId = r.u64('requestId');
      const offset = r.u53('offset');
      const blocks = r.u32('blocks');
      if (blocks > l.hashesMax) r.fail(`more than ${l.hashesMax} blocks`);
      return { type: SyncMessageType.HASH_REPLY, volumeId, requestId, offset, blocks, bitmap: r.bytes(Math.ceil(blocks / 8), 'bitmap') };
    },
  },
  [SyncMessageType.RESYNC_START]: {
    max: () => RESYNC_START_BYTES,
    check: (m, l) => first(
      volumeIdReason(m.volumeId, l),
      (!u64Ok(m.syncId) || m.syncId === 0n) && 'syncId is not a non-zero u64',
      !RESYNC_MODES.includes(m.mode) && `unknown resync mode ${m.mode}`,
    ),
    encode: (m) => [new Writer(RESYNC_START_BYTES).bytes(m.volumeId).u64(m.syncId).u8(m.mode).b],
    decode: (r, l) => ({
      type: SyncMessageType.RESYNC_START,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      syncId: r.u64('syncId'),
      mode: r.u8('mode'),
    }),
  },
  [SyncMessageType.BITMAP]: {
    max: (l) => BITMAP_FIXED + l.bitmapChunkBytesMax,
    check: bitmapReason,
    encode: (m) => [new Writer(BITMAP_FIXED).bytes(m.volumeId).u32(m.regionBytes).u64(m.regionCount).u64(m.byteOffset).u32(m.flags).b, m.bits],
    decode: (r, l) => ({
      type: SyncMessageType.BITMAP,
      volumeId: r.bytes(l.volumeIdBytes, 'volumeId'),
      regionBytes: r.u32('regionBytes'),
      regionCount: r.u53('regionCount'),
      byteOffset: r.u53('byteOffset'),
      flags: r.u32('flags'),
      bits: r.rest(),
    }),
  },
  [SyncMessageType.RESYNC_DONE]: {
    max: () => RESYNC_DONE_BYTES,
    check: (m, l) => volumeIdReason(m.volumeId, l),
    encode: (m) => [Buffer.from(m.volumeId)],
    decode: (r, l) => ({ type: SyncMessageType.RESYNC_DONE, volumeId: r.bytes(l.volumeIdBytes, 'volumeId') }),
  },
  [SyncMessageType.VOLUME_REFUSED]: {
    max: (l) => VOLUME_REFUSED_FIXED + l.rejectReasonBytesMax,
    check: (m, l) => {
      const reason = textReason(m.reason, l.rejectReasonBytesMax, false);
      return first(
        volumeIdReason(m.volumeId, l),
        (!uintOk(m.code, 0xffffffff) || m.code === 0) && `code ${m.code} is not a u32 above 0`,
        reason !== undefined && `reason ${reason}`,
      );
    },
    encode: (m) => {
      const reason = Buffer.from(m.reason, 'utf8');
      return [new Writer(VOLUME_REFUSED_FIXED + reason.length).bytes(m.volumeId).u32(m.code).u16(reason.length).bytes(reason).b];
    },
    decode: (r, l) => {
      const volumeId = r.bytes(l.volumeIdBytes, 'volumeId');
      const code = r.u32('code');
      const reason = r.text(r.u16('reason length'), l.rejectReasonBytesMax, 'reason', false);
      return { type: SyncMessageType.VOLUME_REFUSED, volumeId, code, reason };
    },
  },
  [SyncMessageType.CLUSTER]: {
    max: (l) => l.clusterMessageBytesMax,
    check: (m, l) => { const r = jsonReason(m.json, l.clusterMessageBytesMax); return r === undefined ? undefined : `json ${r}`; },
    encode: (m) => [Buffer.from(m.json, 'utf8')],
    decode: (r, l) => {
      const json = r.text(r.remaining, l.clusterMessageBytesMax, 'json', true);
      const why = jsonReason(json, l.clusterMessageBytesMax);
      if (why !== undefined) r.fail(`json ${why}`);
      return { type: SyncMessageType.CLUSTER, json };
    },
  },
};

function jsonReason(s: string, max: number): string | undefined {
  const t = textReason(s, max, true);
  if (t !== undefined) return t;
  try {
    JSON.parse(s);
    return undefined;
  } catch {
    return 'is not JSON';
  }
}

function specOf(type: number): Spec<SyncMessage> | undefined {
  return isSyncMessageType(type) ? (specs[type] as Spec<SyncMessage>) : undefined;
}

/** The largest payload a frame of this type may declare, or undefined for an unknown type. */
export function payloadBytesMax(type: number, limits: SyncLimits = syncLimits): number | undefined {
  return specOf(type)?.max(limits);
}

/** Why m cannot be sent, or undefined when it can. */
export function checkMessage(m: SyncMessage, limits: SyncLimits = syncLimits): string | undefined {
  const spec = specOf(m.type);
  if (spec === undefined) return `unknown message type ${String(m.type)}`;
  return spec.check(m, limits);
}

/**
 * The payload of m as pieces to send in order (a WRITE's or RESYNC_DATA's
 * data and a BITMAP's bits are one of them, not copied). Throws ERR_SYNC_ARGUMENT for a message
 * the peer would refuse.
 */
export function encodePayload(m: SyncMessage, limits: SyncLimits = syncLimits): Buffer[] {
  const spec = specOf(m.type);
  const reason = spec === undefined ? `unknown message type ${String(m.type)}` : spec.check(m, limits);
  if (spec === undefined || reason !== undefined) {
    throw new SyncProtocolError('ERR_SYNC_ARGUMENT', `cannot encode ${syncMessageTypeName(m.type)}: ${reason}`);
  }
  return spec.encode(m, limits);
}

/**
 * Decodes the payload of a frame of this type. Bulk fields (data, bits,
 * hashes, ids) are views into payload, not copies. Throws ERR_SYNC_TYPE for an
 * unknown type and ERR_SYNC_TRUNCATED for anything else wrong.
 */
export function decodeMessage(type: number, payload: Buffer, limits: SyncLimits = syncLimits): SyncMessage {
  const spec = specOf(type);
  if (spec === undefined) throw new SyncProtocolError('ERR_SYNC_TYPE', `unknown frame type ${type}`);
  const what = syncMessageTypeName(type);
  const r = new Reader(payload, what);
  const m = spec.decode(r, limits);
  r.end();
  const reason = spec.check(m, limits);
  if (reason !== undefined) r.fail(reason);
  return m;
}
