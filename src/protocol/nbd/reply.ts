// Transmission-phase replies: simple replies and structured reply chunks.
// Headers are encoded into fresh small buffers; read data is never copied.
import {
  NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_TYPE_ERROR, NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_TYPE_OFFSET_HOLE, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STATE_HOLE, NBD_STATE_ZERO, SIMPLE_REPLY_HEADER_BYTES, STRUCTURED_REPLY_HEADER_BYTES,
} from './constants';
import type { RequestHeader } from './request';

type Cookie = Pick<RequestHeader, 'cookieHi' | 'cookieLo'>;

export function simpleReply(c: Cookie, errno: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno, 4);
  b.writeUInt32BE(c.cookieHi, 8);
  b.writeUInt32BE(c.cookieLo, 12);
  return b;
}

function chunkHeader(b: Buffer, c: Cookie, done: boolean, type: number, length: number): void {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(done ? NBD_REPLY_FLAG_DONE : 0, 4);
  b.writeUInt16BE(type, 6);
  b.writeUInt32BE(c.cookieHi, 8);
  b.writeUInt32BE(c.cookieLo, 12);
  b.writeUInt32BE(length, 16);
}

function writeOffset(b: Buffer, at: number, offset: number): void {
  b.writeUInt32BE(Math.floor(offset / 0x100000000), at);
  b.writeUInt32BE(offset >>> 0, at + 4);
}

export function noneChunk(c: Cookie): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  chunkHeader(b, c, true, NBD_REPLY_TYPE_NONE, 0);
  return b;
}

/** Header of an OFFSET_DATA chunk; the caller sends `dataLength` bytes after it. */
export function offsetDataHeader(c: Cookie, done: boolean, offset: number, dataLength: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  chunkHeader(b, c, done, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataLength);
  writeOffset(b, STRUCTURED_REPLY_HEADER_BYTES, offset);
  return b;
}

export function offsetHoleChunk(c: Cookie, done: boolean, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 12);
  chunkHeader(b, c, done, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
  writeOffset(b, STRUCTURED_REPLY_HEADER_BYTES, offset);
  b.writeUInt32BE(length, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return b;
}

export function errorChunk(c: Cookie, errno: number, message: string): Buffer {
  // proto.md: strings are at most 4096 bytes; cut longer messages on a character boundary
  const text = Buffer.from(message.slice(0, 1024), 'utf8');
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 6 + text.length);
  chunkHeader(b, c, true, NBD_REPLY_TYPE_ERROR, 6 + text.length);
  b.writeUInt32BE(errno, STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  text.copy(b, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return b;
}

export interface Extent {
  readonly length: number;
  readonly hole: boolean;
  readonly zero: boolean;
}

export function blockStatusChunk(c: Cookie, contextId: number, extents: readonly Extent[]): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * extents.length);
  chunkHeader(b, c, true, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * extents.length);
  b.writeUInt32BE(contextId, STRUCTURED_REPLY_HEADER_BYTES);
  let at = STRUCTURED_REPLY_HEADER_BYTES + 4;
  for (const e of extents) {
    b.writeUInt32BE(e.length, at);
    b.writeUInt32BE((e.hole ? NBD_STATE_HOLE : 0) | (e.zero ? NBD_STATE_ZERO : 0), at + 4);
    at += 8;
  }
  return b;
}
