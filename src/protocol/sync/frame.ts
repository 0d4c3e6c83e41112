// Frames of the sync link: a 20-byte header, the payload, and - once the
// session is authenticated - a 16-byte MAC over header and payload. A
// streaming decoder checks every header before it allocates for the payload.
//
//   0  u32 magic "TNDS"   4  u16 version (1)   6  u16 type
//   8  u64 seq            16 u32 payload length
//   20 payload            20+length  MAC (authenticated sessions only)
//
// The MAC is AES-256-GCM used as a MAC (GMAC): an empty plaintext, header and
// payload as the additional authenticated data, and the frame's seq in the
// IV. Every mirrored byte is MACed once on each node, and GMAC runs about five
// times as fast as HMAC-SHA256 (see docs/sync-protocol.md).
import { timingSafeEqual } from 'node:crypto';
import { SyncProtocolError } from './errors';
import { GMAC_TAG_BYTES, Gmac } from './gmac';
import { syncLimits, type SyncLimits } from './limits';
import {
  decodeMessage, encodePayload, isSyncMessageType, payloadBytesMax, syncMessageTypeName, type SyncMessage, type SyncMessageType,
} from './messages';

/** "TNDS": the first four bytes of every frame */
export const SYNC_MAGIC = 0x544e4453;
/** the version of the framing; HELLO negotiates the protocol version spoken inside it */
export const SYNC_FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 20;
const SEQ_MAX = 0xffffffffffffffffn;
const EMPTY = Buffer.alloc(0);

export interface FrameHeader {
  readonly type: number;
  readonly seq: bigint;
  readonly length: number;
}

export interface Frame<M = SyncMessage> {
  readonly type: SyncMessageType;
  readonly seq: bigint;
  /** header and payload exactly as received: what the MAC covers, and the handshake transcript */
  readonly bytes: Buffer;
  readonly payload: Buffer;
  readonly message: M;
}

export function encodeFrameHeader(h: FrameHeader): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  b.writeUInt32BE(SYNC_MAGIC, 0);
  b.writeUInt16BE(SYNC_FRAME_VERSION, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.seq, 8);
  b.writeUInt32BE(h.length, 16);
  return b;
}

/** Reads the header at `at` and checks what needs no session state: magic, version, type. */
export function decodeFrameHeader(b: Buffer, at = 0): FrameHeader {
  if (b.length - at < FRAME_HEADER_BYTES) throw new SyncProtocolError('ERR_SYNC_TRUNCATED', 'frame header is cut short');
  const magic = b.readUInt32BE(at);
  if (magic !== SYNC_MAGIC) throw new SyncProtocolError('ERR_SYNC_MAGIC', `bad frame magic 0x${magic.toString(16)}`);
  const version = b.readUInt16BE(at + 4);
  if (version !== SYNC_FRAME_VERSION) throw new SyncProtocolError('ERR_SYNC_VERSION', `frame version ${version}, expected ${SYNC_FRAME_VERSION}`);
  const type = b.readUInt16BE(at + 6);
  if (!isSyncMessageType(type)) throw new SyncProtocolError('ERR_SYNC_TYPE', `unknown frame type ${type}`);
  return { type, seq: b.readBigUInt64BE(at + 8), length: b.readUInt32BE(at + 16) };
}

/**
 * The MAC of the frame numbered seq whose header and payload are the pieces,
 * in order: AES-256-GCM under key with an empty plaintext, the pieces as
 * additional authenticated data, and IV = 4 zero bytes || seq (u64 BE). The
 * tag is limits.macBytes (16) bytes.
 *
 * GCM must never see the same IV twice under one key: each direction of each
 * session has its own key (HKDF over both nonces), and seq strictly increases
 * within a direction and never wraps (the encoder stops at 2^64 - 1).
 *
 * Computed by the native addon with OpenSSL's GCM (see ./gmac.ts): the same
 * tag, bit for bit, as createCipheriv('aes-256-gcm') with one setAAD() per
 * piece, without Node building a cipher object per frame. FrameEncoder and
 * FrameDecoder keep one OpenSSL context per session key; this one-off form
 * sets a key up for a single MAC.
 *
 * The pieces go to GCM one by one, so bulk data is never concatenated or
 * copied. That is correct: for GCM OpenSSL accepts any number of AAD updates
 * (EVP_EncryptUpdate with out = NULL) before the first plaintext byte,
 * carrying partial 16-byte blocks over from one call to the next (CCM, unlike
 * GCM, takes its AAD in one call). So pieces [a, b] give the tag of [a || b]
 * for any split: pinned by unit tests with odd-length and empty pieces, and
 * against Node's createCipheriv. Empty pieces are skipped.
 *
 * Throws ERR_SYNC_ARGUMENT for a key that is not limits.sessionKeyBytes or a
 * seq that is not a u64.
 */
export function frameMac(key: Buffer, seq: bigint, pieces: readonly Buffer[], limits: SyncLimits = syncLimits): Buffer {
  checkKey(key, limits);
  if (typeof seq !== 'bigint' || seq < 0n || seq > SEQ_MAX) throw new SyncProtocolError('ERR_SYNC_ARGUMENT', `sequence number ${String(seq)} is not a u64`);
  const gmac = new Gmac(key);
  try {
    return gmac.mac(seq, pieces);
  } finally {
    gmac.free();
  }
}

function checkKey(key: Buffer, limits: SyncLimits): Buffer {
  if (!Buffer.isBuffer(key) || key.length !== limits.sessionKeyBytes) {
    throw new SyncProtocolError('ERR_SYNC_ARGUMENT', `a session key is ${limits.sessionKeyBytes} bytes`);
  }
  return key;
}

function checkSeq(seq: bigint): bigint {
  if (typeof seq !== 'bigint' || seq < 1n || seq > SEQ_MAX) throw new SyncProtocolError('ERR_SYNC_ARGUMENT', `sequence number ${String(seq)} is not in [1, 2^64)`);
  return seq;
}

/** Why a frame of this type and payload length may not be sent or accepted, or undefined. */
function lengthReason(type: number, length: number, authenticated: boolean, limits: SyncLimits): string | undefined {
  const typeMax = payloadBytesMax(type, limits) ?? 0;
  if (length > typeMax) return `${syncMessageTypeName(type)} of ${length} bytes exceeds its maximum of ${typeMax}`;
  const frameMax = authenticated ? limits.frameBytesMax : limits.unauthenticatedFrameBytesMax;
  const total = FRAME_HEADER_BYTES + length + (authenticated ? limits.macBytes : 0);
  if (total > frameMax) return `frame of ${total} bytes exceeds the maximum of ${frameMax}${authenticated ? '' : ' before authentication'}`;
  return undefined;
}

/**
 * One frame as the pieces to write in order: header, payload pieces (bulk
 * data is not copied), and the MAC when a key is given. Throws ERR_SYNC_ARGUMENT.
 */
export function encodeFrameParts(m: SyncMessage, seq: bigint, key?: Buffer, limits: SyncLimits = syncLimits): Buffer[] {
  checkSeq(seq);
  if (key !== undefined) checkKey(key, limits);
  const parts = unmacedParts(m, seq, key !== undefined, limits);
  if (key !== undefined) parts.push(frameMac(key, seq, parts, limits));
  return parts;
}

/** Header and payload pieces of a frame whose seq was checked; the MAC is the caller's. */
function unmacedParts(m: SyncMessage, seq: bigint, authenticated: boolean, limits: SyncLimits): Buffer[] {
  const payload = encodePayload(m, limits);
  const length = payload.reduce((n, p) => n + p.length, 0);
  const reason = lengthReason(m.type, length, authenticated, limits);
  if (reason !== undefined) throw new SyncProtocolError('ERR_SYNC_ARGUMENT', `cannot encode: ${reason}`);
  const header = encodeFrameHeader({ type: m.type, seq, length });
  return [header, ...payload.filter((p) => p.length > 0)];
}

/** One frame in one buffer. */
export function encodeFrame(m: SyncMessage, seq: bigint, key?: Buffer, limits: SyncLimits = syncLimits): Buffer {
  return Buffer.concat(encodeFrameParts(m, seq, key, limits));
}

export interface FrameEncoderOptions {
  readonly limits?: SyncLimits;
  /** frames carry a MAC under this key from the first one on; without it, from authenticate() on */
  readonly key?: Buffer;
  /** the sequence number of the first frame: 1 for a new session */
  readonly nextSeq?: bigint;
}

/** Numbers the frames of one direction of one session and MACs them once it is authenticated. */
export class FrameEncoder {
  private readonly limits: SyncLimits;
  /** the session key, set up once for every frame of the session */
  private gmac: Gmac | undefined;
  private seq: bigint;

  constructor(options: FrameEncoderOptions = {}) {
    this.limits = options.limits ?? syncLimits;
    this.gmac = options.key === undefined ? undefined : new Gmac(checkKey(options.key, this.limits));
    this.seq = checkSeq(options.nextSeq ?? 1n);
  }

  get nextSeq(): bigint { return this.seq; }
  get authenticated(): boolean { return this.gmac !== undefined; }

  /** Every frame after this call carries a MAC under key. */
  authenticate(key: Buffer): void {
    if (this.gmac !== undefined) throw new SyncProtocolError('ERR_SYNC_STATE', 'the encoder is already authenticated');
    this.gmac = new Gmac(checkKey(key, this.limits));
  }

  encodeParts(m: SyncMessage): Buffer[] {
    if (this.seq > SEQ_MAX) throw new SyncProtocolError('ERR_SYNC_STATE', 'sequence numbers are exhausted');
    const parts = unmacedParts(m, this.seq, this.gmac !== undefined, this.limits);
    if (this.gmac !== undefined) parts.push(this.gmac.mac(this.seq, parts));
    this.seq += 1n;
    return parts;
  }

  encode(m: SyncMessage): Buffer {
    return Buffer.concat(this.encodeParts(m));
  }
}

export type PayloadDecoder<M> = (type: SyncMessageType, payload: Buffer, limits: SyncLimits) => M;

export interface FrameDecoderOptions<M = SyncMessage> {
  readonly limits?: SyncLimits;
  /** frames carry a MAC under this key from the first one on; without it, from authenticate() on */
  readonly key?: Buffer;
  /** the sequence number the first frame must carry: 1 for a new session */
  readonly nextSeq?: bigint;
  /** turns a payload into the frame's message, throwing SyncProtocolError; decodeMessage by default */
  readonly decode?: PayloadDecoder<M>;
  /**
   * memory for a frame that spans chunks, at least `bytes` long (a pool's); Buffer.allocUnsafe by
   * default. Only called once the header passed its checks.
   */
  readonly allocate?: (bytes: number) => Buffer;
}

interface Partial {
  readonly header: FrameHeader;
  /** header, payload and MAC of the frame */
  readonly buf: Buffer;
  fill: number;
}

/**
 * Splits a byte stream into checked frames and hands each to onFrame, in
 * order, as soon as it is complete. Holds at most one partial frame, and
 * allocates for it only after its header passed every check (magic, version,
 * type, length caps, sequence number). A frame that lies whole within one
 * chunk is handed on as a view into that chunk: do not reuse pushed buffers.
 *
 * The first failure throws a SyncProtocolError from push(); the decoder is
 * dead afterwards and every later push() throws the same error. An exception
 * thrown by onFrame also ends the decoder and propagates from push().
 */
export class FrameDecoder<M = SyncMessage> {
  private readonly limits: SyncLimits;
  private readonly decode: PayloadDecoder<M>;
  private readonly allocate: (bytes: number) => Buffer;
  /** the session key, set up once for every frame of the session */
  private gmac: Gmac | undefined;
  /** every frame's expected MAC goes here: verifying allocates nothing per frame */
  private readonly expected = Buffer.alloc(GMAC_TAG_BYTES);
  private seq: bigint;
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFill = 0;
  private current: Partial | undefined;
  private chunk: Buffer = EMPTY;
  private at = 0;
  private error: SyncProtocolError | undefined;
  private detached = false;

  constructor(private readonly onFrame: (frame: Frame<M>) => void, options: FrameDecoderOptions<M> = {}) {
    this.limits = options.limits ?? syncLimits;
    this.decode = options.decode ?? (decodeMessage as unknown as PayloadDecoder<M>);
    this.allocate = options.allocate ?? ((n) => Buffer.allocUnsafe(n));
    this.gmac = options.key === undefined ? undefined : new Gmac(checkKey(options.key, this.limits));
    this.seq = checkSeq(options.nextSeq ?? 1n);
  }

  /** the sequence number the next frame must carry */
  get nextSeq(): bigint { return this.seq; }
  get authenticated(): boolean { return this.gmac !== undefined; }
  /** bytes of the one partial frame held */
  get buffered(): number { return this.headerFill + (this.current?.fill ?? 0); }

  /**
   * Every frame after the current one must carry a MAC under key. Call it
   * from onFrame (or between frames): the next header is read only after
   * onFrame returns.
   */
  authenticate(key: Buffer): void {
    if (this.gmac !== undefined) throw new SyncProtocolError('ERR_SYNC_STATE', 'the decoder is already authenticated');
    if (this.buffered > 0) throw new SyncProtocolError('ERR_SYNC_STATE', 'cannot authenticate in the middle of a frame');
    this.gmac = new Gmac(checkKey(key, this.limits));
  }

  /**
   * Stops decoding and returns every byte received but not yet decoded (the
   * rest of the chunk being pushed, when called from onFrame). The decoder
   * accepts nothing more; the bytes belong to whoever reads the stream next.
   */
  detach(): Buffer {
    this.detached = true;
    const held: Buffer[] = [];
    if (this.headerFill > 0) held.push(Buffer.from(this.header.subarray(0, this.headerFill)));
    if (this.current !== undefined) held.push(this.current.buf.subarray(0, this.current.fill));
    const rest = this.chunk.subarray(this.at);
    this.headerFill = 0;
    this.current = undefined;
    this.at = this.chunk.length;
    return held.length === 0 ? rest : Buffer.concat([...held, rest]);
  }

  push(chunk: Buffer): void {
    if (this.error !== undefined) throw this.error;
    if (this.detached) throw new SyncProtocolError('ERR_SYNC_STATE', 'the decoder was detached');
    this.chunk = chunk;
    this.at = 0;
    try {
      this.run();
    } catch (e) {
      this.error = e instanceof SyncProtocolError ? e : new SyncProtocolError('ERR_SYNC_STATE', 'an earlier frame handler failed');
      throw e;
    } finally {
      this.chunk = EMPTY;
      this.at = 0;
    }
  }

  private run(): void {
    const chunk = this.chunk;
    while (!this.detached && this.at < chunk.length) {
      let cur = this.current;
      if (cur === undefined) {
        const available = chunk.length - this.at;
        if (this.headerFill === 0 && available >= FRAME_HEADER_BYTES) {
          const h = this.checkHeader(chunk, this.at);
          const total = this.frameBytes(h);
          if (available >= total) {
            const frame = chunk.subarray(this.at, this.at + total);
            this.at += total;
            this.deliver(h, frame);
            continue;
          }
          cur = this.current = { header: h, buf: this.allocate(total).subarray(0, total), fill: 0 };
        } else {
          const n = Math.min(FRAME_HEADER_BYTES - this.headerFill, available);
          chunk.copy(this.header, this.headerFill, this.at, this.at + n);
          this.headerFill += n;
          this.at += n;
          if (this.headerFill < FRAME_HEADER_BYTES) return;
          const h = this.checkHeader(this.header, 0);
          const total = this.frameBytes(h);
          cur = this.current = { header: h, buf: this.allocate(total).subarray(0, total), fill: FRAME_HEADER_BYTES };
          this.header.copy(cur.buf, 0);
          this.headerFill = 0;
        }
      }
      const n = Math.min(cur.buf.length - cur.fill, chunk.length - this.at);
      chunk.copy(cur.buf, cur.fill, this.at, this.at + n);
      cur.fill += n;
      this.at += n;
      if (cur.fill < cur.buf.length) return;
      this.current = undefined;
      this.deliver(cur.header, cur.buf);
    }
  }

  private frameBytes(h: FrameHeader): number {
    return FRAME_HEADER_BYTES + h.length + (this.gmac === undefined ? 0 : this.limits.macBytes);
  }

  /** Everything that can be known from the header, before any payload is allocated. */
  private checkHeader(b: Buffer, at: number): FrameHeader {
    const h = decodeFrameHeader(b, at);
    const reason = lengthReason(h.type, h.length, this.gmac !== undefined, this.limits);
    if (reason !== undefined) throw new SyncProtocolError('ERR_SYNC_TOO_BIG', reason);
    if (h.seq !== this.seq) throw new SyncProtocolError('ERR_SYNC_REPLAY', `sequence number ${h.seq}, expected ${this.seq}`);
    return h;
  }

  private deliver(h: FrameHeader, frame: Buffer): void {
    const end = FRAME_HEADER_BYTES + h.length;
    const bytes = frame.subarray(0, end);
    if (this.gmac !== undefined) {
      const mac = frame.subarray(end);
      // constant time; mac is limits.macBytes long because the frame's length was fixed by its header
      if (!timingSafeEqual(mac, this.gmac.mac(h.seq, [bytes], this.expected))) {
        throw new SyncProtocolError('ERR_SYNC_MAC', `${syncMessageTypeName(h.type)} ${h.seq} fails its MAC`);
      }
    }
    const payload = frame.subarray(FRAME_HEADER_BYTES, end);
    const type = h.type as SyncMessageType;
    const message = this.decode(type, payload, this.limits);
    this.seq += 1n;
    this.onFrame({ type, seq: h.seq, bytes, payload, message });
  }
}
