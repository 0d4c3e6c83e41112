// The frame shared by the change-tracking files beside a volume: a 4 KiB
// header page (magic, version, the geometry as named u64 fields, CRC-32C),
// then the body. The header is written once, when the file is created
// atomically; afterwards only the body changes, by positional writes, so a
// crash can never leave a file whose geometry is unreadable.
import fs from 'node:fs';
import { crc32c } from '../core/crc32c';
import { writeFileAtomic } from './atomic-file';
import { CodedError } from '../util/coded-error';

export type TrackingFileErrorCode =
  | 'ERR_TRACKING_EXISTS' | 'ERR_TRACKING_NOT_FOUND' | 'ERR_TRACKING_SIZE' | 'ERR_TRACKING_HEADER'
  | 'ERR_TRACKING_GEOMETRY' | 'ERR_TRACKING_CORRUPT' | 'ERR_TRACKING_IO' | 'ERR_TRACKING_CLOSED' | 'ERR_TRACKING_BUSY';

export class TrackingFileError extends CodedError<TrackingFileErrorCode> {
  override readonly name = 'TrackingFileError';
}

export const trackingFileLimits = {
  /** one page, so the body starts page-aligned and body page i is file page i + 1 */
  headerBytes: 4096,
} as const;

export interface TrackingFileFormat {
  /** 8 ASCII characters */
  readonly magic: string;
  readonly version: number;
  /** names of the geometry fields, in the order they are stored */
  readonly fields: readonly string[];
}

/** header layout: magic (8), version u32, field count u32, fields u64 LE..., zeros, CRC-32C of the rest in the last 4 bytes */
const FIELDS_AT = 16;
const CHECKSUM_AT = trackingFileLimits.headerBytes - 4;

export function encodeHeader(f: TrackingFileFormat, values: Readonly<Record<string, number>>): Buffer {
  const b = Buffer.alloc(trackingFileLimits.headerBytes);
  b.write(f.magic, 0, 8, 'latin1');
  b.writeUInt32LE(f.version, 8);
  b.writeUInt32LE(f.fields.length, 12);
  f.fields.forEach((name, i) => b.writeBigUInt64LE(BigInt(values[name] ?? 0), FIELDS_AT + 8 * i));
  b.writeUInt32LE(crc32c(b, 0, CHECKSUM_AT), CHECKSUM_AT);
  return b;
}

/** The geometry fields, or the reason the page is not a header of this format. */
export function decodeHeader(f: TrackingFileFormat, page: Buffer): Record<string, number> | string {
  if (page.length !== trackingFileLimits.headerBytes) return `header is ${page.length} bytes`;
  if (page.toString('latin1', 0, 8) !== f.magic) return `not a ${f.magic} file`;
  if (page.readUInt32LE(CHECKSUM_AT) !== crc32c(page, 0, CHECKSUM_AT)) return 'header checksum mismatch';
  if (page.readUInt32LE(8) !== f.version) return `unsupported version ${page.readUInt32LE(8)}`;
  if (page.readUInt32LE(12) !== f.fields.length) return `header has ${page.readUInt32LE(12)} fields, not ${f.fields.length}`;
  const out: Record<string, number> = {};
  f.fields.forEach((name, i) => { out[name] = Number(page.readBigUInt64LE(FIELDS_AT + 8 * i)); });
  return out;
}

function ioError(e: unknown, what: string): TrackingFileError {
  const err = e as NodeJS.ErrnoException;
  return new TrackingFileError('ERR_TRACKING_IO', `${what}: ${err.code ?? 'EIO'} ${err.message}`);
}

/** Creates the file with its header and a zeroed body, atomically; refuses to replace an existing one. */
export function createTrackingFile(file: string, f: TrackingFileFormat, values: Readonly<Record<string, number>>, bodyBytes: number): void {
  if (fs.existsSync(file)) throw new TrackingFileError('ERR_TRACKING_EXISTS', `${file} already exists`);
  try {
    writeFileAtomic(file, Buffer.concat([encodeHeader(f, values), Buffer.alloc(bodyBytes)]));
  } catch (e) {
    throw ioError(e, `cannot create ${file}`);
  }
}

/**
 * Opens the file for reading and writing and checks it against the expected geometry: the header
 * must be intact, every field equal, and the size exactly header + body. Returns the fd and the body.
 */
export function openTrackingFile(
  file: string, f: TrackingFileFormat, expected: Readonly<Record<string, number>>, bodyBytes: number,
): { fd: number; body: Buffer } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new TrackingFileError('ERR_TRACKING_NOT_FOUND', `${file} does not exist`);
    throw ioError(e, `cannot open ${file}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const want = trackingFileLimits.headerBytes + bodyBytes;
    const wrongSize = (): TrackingFileError =>
      new TrackingFileError('ERR_TRACKING_SIZE', `${file} is ${size} bytes; its geometry needs ${want}`);
    if (size < trackingFileLimits.headerBytes) throw wrongSize();
    const h = decodeHeader(f, readExactly(fd, 0, trackingFileLimits.headerBytes, file));
    if (typeof h === 'string') throw new TrackingFileError('ERR_TRACKING_HEADER', `${file}: ${h}`);
    for (const name of f.fields) {
      if (h[name] !== expected[name]) {
        throw new TrackingFileError('ERR_TRACKING_GEOMETRY', `${file}: ${name} is ${h[name]}, expected ${expected[name]}`);
      }
    }
    if (size !== want) throw wrongSize();
    return { fd, body: readExactly(fd, trackingFileLimits.headerBytes, bodyBytes, file) };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function readExactly(fd: number, position: number, length: number, file: string): Buffer {
  const b = Buffer.alloc(length);
  let done = 0;
  try {
    while (done < length) {
      const n = fs.readSync(fd, b, done, length - done, position + done);
      if (n === 0) break;
      done += n;
    }
  } catch (e) {
    throw ioError(e, `read ${file}`);
  }
  if (done < length) throw new TrackingFileError('ERR_TRACKING_SIZE', `${file} ended ${length - done} bytes early`);
  return b;
}

/**
 * Writes all of `buf` at `position` through the thread pool: a log transaction's fdatasync can
 * take milliseconds behind a stream of data writeback, and the event loop (the sync link, the
 * other writes) must go on meanwhile.
 */
export async function writeAt(fd: number, buf: Buffer, position: number, what: string): Promise<void> {
  try {
    for (let done = 0; done < buf.length;) {
      done += await new Promise<number>((resolve, reject) => {
        fs.write(fd, buf, done, buf.length - done, position + done, (e, n) => { if (e === null) resolve(n); else reject(e); });
      });
    }
  } catch (e) {
    throw ioError(e, what);
  }
}

export async function syncData(fd: number, what: string): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (e) => { if (e === null) resolve(); else reject(e); }));
  } catch (e) {
    throw ioError(e, what);
  }
}
