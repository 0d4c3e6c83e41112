// Transmission-phase requests: a streaming parser that never concatenates
// payloads (a WRITE's data is handed on in the slices it arrived in), and
// the validation every request passes before any work is done.
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_CACHE, NBD_CMD_DISC, NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES, NBD_EINVAL, NBD_ENOSPC, NBD_EPERM, NBD_REQUEST_MAGIC, REQUEST_HEADER_BYTES,
} from './constants';
import type { Negotiated } from './handshake';
import type { NbdLimits } from './limits';

export interface RequestHeader {
  readonly flags: number;
  readonly type: number;
  /** the 64-bit cookie, kept as the two halves the reply echoes */
  readonly cookieHi: number;
  readonly cookieLo: number;
  /** offsets past 2^53 are clamped to Number.MAX_SAFE_INTEGER, which no export reaches */
  readonly offset: number;
  readonly length: number;
}

export function decodeRequestHeader(b: Buffer, at: number): RequestHeader | string {
  const magic = b.readUInt32BE(at);
  if (magic !== NBD_REQUEST_MAGIC) return `bad request magic 0x${magic.toString(16)}`;
  const hi = b.readUInt32BE(at + 16);
  const offset = hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + b.readUInt32BE(at + 20);
  return {
    flags: b.readUInt16BE(at + 4),
    type: b.readUInt16BE(at + 6),
    cookieHi: b.readUInt32BE(at + 8),
    cookieLo: b.readUInt32BE(at + 12),
    offset,
    length: b.readUInt32BE(at + 24),
  };
}

export function encodeRequestHeader(r: RequestHeader): Buffer {
  const b = Buffer.alloc(REQUEST_HEADER_BYTES);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeUInt32BE(r.cookieHi, 8);
  b.writeUInt32BE(r.cookieLo, 12);
  b.writeBigUInt64BE(BigInt(r.offset), 16);
  b.writeUInt32BE(r.length, 24);
  return b;
}

/** Receives parsed requests. Returning false from admit stalls the parser until resume(). */
export interface RequestSink {
  admit(req: RequestHeader): boolean;
  /** a WRITE's payload, in order, as it arrives; `at` is the position within the payload */
  payload(req: RequestHeader, data: Buffer, at: number): void;
  /** every request ends here, after its payload if it has one */
  end(req: RequestHeader): void;
  framingError(reason: string): void;
}

/**
 * Splits a byte stream into requests. Holds at most one partial header and,
 * while stalled, the unprocessed rest of one chunk: memory stays bounded
 * however fast the client sends, as long as the caller stops reading while stalled.
 */
export class RequestParser {
  private readonly header = Buffer.alloc(REQUEST_HEADER_BYTES);
  private headerFill = 0;
  private current: RequestHeader | undefined;
  private admitted = false;
  private payloadAt = 0;
  private held: Buffer | undefined;
  private failed = false;

  constructor(private readonly sink: RequestSink) {}

  get stalled(): boolean { return this.held !== undefined; }

  push(chunk: Buffer): void {
    if (this.failed) return;
    if (this.held !== undefined) {
      // the caller kept reading while stalled: keep order, bounded by the caller's pause
      this.held = Buffer.concat([this.held, chunk]);
      return;
    }
    this.run(chunk);
  }

  /** Continues after admit() returned false. */
  resume(): void {
    const held = this.held;
    if (held === undefined || this.failed) return;
    this.held = undefined;
    this.run(held);
  }

  private run(chunk: Buffer): void {
    let at = 0;
    while (at <= chunk.length && !this.failed) {
      if (this.current === undefined) {
        const need = REQUEST_HEADER_BYTES - this.headerFill;
        const n = Math.min(need, chunk.length - at);
        if (n === 0) return;
        chunk.copy(this.header, this.headerFill, at, at + n);
        this.headerFill += n;
        at += n;
        if (this.headerFill < REQUEST_HEADER_BYTES) return;
        this.headerFill = 0;
        const h = decodeRequestHeader(this.header, 0);
        if (typeof h === 'string') {
          this.failed = true;
          this.sink.framingError(h);
          return;
        }
        this.current = h;
        this.admitted = false;
        this.payloadAt = 0;
      }
      const req = this.current;
      if (!this.admitted) {
        if (!this.sink.admit(req)) {
          this.held = chunk.subarray(at);
          return;
        }
        this.admitted = true;
      }
      const payloadLength = req.type === NBD_CMD_WRITE ? req.length : 0;
      if (this.payloadAt < payloadLength) {
        const n = Math.min(payloadLength - this.payloadAt, chunk.length - at);
        if (n === 0) return;
        this.sink.payload(req, chunk.subarray(at, at + n), this.payloadAt);
        this.payloadAt += n;
        at += n;
        if (this.payloadAt < payloadLength) return;
      }
      this.current = undefined;
      this.sink.end(req);
    }
  }
}

export interface Rejection {
  readonly errno: number;
  readonly message: string;
}

// proto.md: FUA "is valid for all commands, provided NBD_FLAG_SEND_FUA has been
// negotiated"; the others belong to one command each.
const KNOWN_FLAGS: Record<number, number> = {
  [NBD_CMD_READ]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF,
  [NBD_CMD_WRITE]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_DISC]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_FLUSH]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_TRIM]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_CACHE]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_WRITE_ZEROES]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
  [NBD_CMD_BLOCK_STATUS]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
};

/**
 * Checks a request against the export and what was negotiated, before any
 * work (nbdkit's validate_request). Returns undefined when it may proceed.
 */
export function validateRequest(req: RequestHeader, n: Negotiated, limits: NbdLimits): Rejection | undefined {
  const e = n.export;
  const known = KNOWN_FLAGS[req.type];
  if (known === undefined) return { errno: NBD_EINVAL, message: `unknown command ${req.type}` };
  if ((req.flags & ~known) !== 0) return { errno: NBD_EINVAL, message: `flags 0x${req.flags.toString(16)} not valid for command ${req.type}` };
  const f = req.flags;
  if ((f & NBD_CMD_FLAG_FUA) !== 0 && !e.canFua) return { errno: NBD_EINVAL, message: 'FUA was not negotiated' };
  if ((f & NBD_CMD_FLAG_DF) !== 0 && !n.structuredReplies) return { errno: NBD_EINVAL, message: 'DF needs structured replies' };
  if ((f & NBD_CMD_FLAG_FAST_ZERO) !== 0 && !e.canFastZero) return { errno: NBD_EINVAL, message: 'FAST_ZERO was not negotiated' };
  const hasRange = req.type !== NBD_CMD_FLUSH && req.type !== NBD_CMD_DISC;
  if (!hasRange) {
    if (req.offset !== 0 || req.length !== 0) return { errno: NBD_EINVAL, message: 'offset and length must be 0' };
    if (req.type === NBD_CMD_FLUSH && !e.canFlush) return { errno: NBD_EINVAL, message: 'flush is not supported' };
    return undefined;
  }
  const writes = req.type === NBD_CMD_WRITE || req.type === NBD_CMD_TRIM || req.type === NBD_CMD_WRITE_ZEROES;
  if (writes && e.readOnly) return { errno: NBD_EPERM, message: 'export is read-only' };
  if (req.type === NBD_CMD_TRIM && !e.canTrim) return { errno: NBD_EINVAL, message: 'trim is not supported' };
  if (req.type === NBD_CMD_WRITE_ZEROES && !e.canZero) return { errno: NBD_EINVAL, message: 'write zeroes is not supported' };
  if (req.type === NBD_CMD_CACHE && !e.canCache) return { errno: NBD_EINVAL, message: 'cache is not supported' };
  if (req.type === NBD_CMD_BLOCK_STATUS && n.baseAllocationId === undefined) {
    return { errno: NBD_EINVAL, message: 'no metadata context was negotiated' };
  }
  const hasPayload = req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE;
  if (hasPayload && req.length > Math.min(e.blockSizeMax, limits.payloadBytesMax)) {
    return { errno: NBD_EINVAL, message: `length ${req.length} exceeds the maximum payload ${e.blockSizeMax}` };
  }
  if (req.length === 0 && req.type !== NBD_CMD_READ && req.type !== NBD_CMD_WRITE) {
    return { errno: NBD_EINVAL, message: 'length must not be 0' };
  }
  if (e.blockSizeMin > 1 && (req.offset % e.blockSizeMin !== 0 || req.length % e.blockSizeMin !== 0)) {
    return { errno: NBD_EINVAL, message: `request not aligned to ${e.blockSizeMin} bytes` };
  }
  if (req.offset > e.size || req.length > e.size - req.offset) {
    // proto.md "Error values": ENOSPC for writes past the end, EINVAL for the rest
    const grows = req.type === NBD_CMD_WRITE || req.type === NBD_CMD_WRITE_ZEROES;
    return { errno: grows ? NBD_ENOSPC : NBD_EINVAL, message: `range ${req.offset}+${req.length} is outside the export (size ${e.size})` };
  }
  return undefined;
}
