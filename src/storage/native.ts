// The compiled helper for syscalls Node.js lacks (see src/native/tandem_native.c).
// The same addon also computes the sync link's frame MAC: src/protocol/sync/gmac.ts.
import path from 'node:path';

export interface Native {
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  /** -1 when there is no data (SEEK_DATA) or hole (SEEK_HOLE) at or after offset */
  lseek(fd: number, offset: number, whence: number): number;
  blockDeviceSize(fd: number): number;
  /** non-blocking flock; throws EWOULDBLOCK when another open file description holds it */
  flock(fd: number, exclusive: 0 | 1): void;
  /** uninitialised memory starting at a multiple of alignment (a power of two), for O_DIRECT */
  alignedBuffer(bytes: number, alignment: number): Buffer;
  /** copies src into the start of stage and writes it at offset, both on the thread pool (stage at least as long as src) */
  pwriteStaged(fd: number, src: Buffer, stage: Buffer, offset: number): Promise<void>;
  /** writes src at offset, one pwrite() per `piece` bytes at most, on the thread pool */
  pwritePieces(fd: number, src: Buffer, offset: number, piece: number): Promise<void>;
  readonly FALLOC_FL_KEEP_SIZE: number;
  readonly FALLOC_FL_PUNCH_HOLE: number;
  readonly FALLOC_FL_ZERO_RANGE: number;
  readonly SEEK_SET: number;
  readonly SEEK_END: number;
  readonly SEEK_DATA: number;
  readonly SEEK_HOLE: number;
}

// dist/src/storage → repo root is three levels up; build/ is where node-gyp puts the addon
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: Native = require(path.join(__dirname, '..', '..', '..', 'build', 'Release', 'tandem_native.node')) as Native;
