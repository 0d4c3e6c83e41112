// A store over one open file or block device.
//
// Small reads and writes are done with synchronous positional I/O: on a warm
// page cache the hop to libuv's thread pool costs more than the copy itself
// (DESIGN.md, performance notes). Larger ones go through the thread pool so
// one big request cannot hold the event loop for long.
//
// Bulk data nobody here reads back soon (a resync target's copy) can go
// around the page cache through a second descriptor opened with O_DIRECT:
// filling the cache with a whole volume costs CPU (allocating and copying
// every page), evicts what is worth caching, and leaves it all dirty for the
// next flush.
import fs from 'node:fs';
import { promisify } from 'node:util';
import { StoreError, type Backend, type StoreExtent, type ZeroOptions } from './backend';
import { native } from './native';

const readAsync = promisify(fs.read);
const fdatasyncAsync = promisify(fs.fdatasync);

export interface FileBackendOptions {
  readonly fd: number;
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockDevice: boolean;
  /** requests up to this size use synchronous I/O */
  readonly syncIoBytesMax: number;
  /** the same backing opened with O_DIRECT, for writeUncached(); the backend closes it */
  readonly directFd?: number | undefined;
}

/** O_DIRECT wants memory, offset and length aligned to the device's logical block: 4 KiB covers the usual ones */
const DIRECT_ALIGN_BYTES = 4096;
/** an uncached write is copied to aligned memory and written in steps of at most this */
const DIRECT_STAGE_BYTES = 4 * 1024 * 1024;
/** aligned staging buffers kept for reuse (the callers bound how many uncached writes run at once) */
const DIRECT_STAGES_KEPT = 4;

/**
 * Buffered writes go to the file in pieces of at most this. The page cache sizes a new folio by the
 * write that creates it, and a later small write into a large folio costs in proportion to the
 * folio's size (ext4 walks each of its blocks). Measured on Linux 6.18, ext4: a 4 KiB random write
 * into a file laid down in 1 MiB writes cost 13-20 us of system time, against 4 us after 64 KiB
 * writes; a mirrored 4 KiB QD32 load went from 14k to 24k IOPS. Large-folio allocation also made
 * 1 MiB writes to fresh pages up to ten times dearer than 64 KiB ones.
 */
const WRITE_PIECE_BYTES = 64 * 1024;

/** zero-filled source for writing zeroes where fallocate cannot */
const ZERO_CHUNK_BYTES = 1024 * 1024;
let zeroChunk: Buffer | undefined;
/** scratch for NBD_CMD_CACHE, which reads to warm the cache and discards the data */
const CACHE_CHUNK_BYTES = 1024 * 1024;
let cacheScratch: Buffer | undefined;

function storeError(e: unknown, what: string): StoreError {
  const err = e as NodeJS.ErrnoException;
  return new StoreError(typeof err.code === 'string' ? err.code : 'EIO', `${what}: ${err.message}`);
}

export class FileBackend implements Backend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly canTrim: boolean;
  readonly canZero = true;
  readonly canFastZero: boolean;
  readonly canExtents: boolean;
  private readonly fd: number;
  private readonly syncIoBytesMax: number;
  private punchHoleWorks = true;
  private zeroRangeWorks = true;
  private seekDataWorks = true;
  private readonly directFd: number | undefined;
  private directWorks = true;
  private readonly directStages: Buffer[] = [];
  private closed = false;

  constructor(o: FileBackendOptions) {
    this.fd = o.fd;
    this.size = o.size;
    this.readOnly = o.readOnly;
    this.syncIoBytesMax = o.syncIoBytesMax;
    this.directFd = o.directFd;
    this.canTrim = !o.readOnly;
    this.canFastZero = !o.readOnly;
    this.canExtents = true;
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    let done = 0;
    try {
      if (buf.length <= this.syncIoBytesMax) {
        while (done < buf.length) {
          const n = fs.readSync(this.fd, buf, done, buf.length - done, offset + done);
          if (n === 0) break;
          done += n;
        }
      } else {
        while (done < buf.length) {
          const { bytesRead } = await readAsync(this.fd, buf, done, buf.length - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
      }
    } catch (e) {
      throw storeError(e, `read ${buf.length} bytes at ${offset}`);
    }
    // the store has exactly `size` bytes; a short read means the backing shrank under us
    if (done < buf.length) throw new StoreError('EIO', `short read at ${offset + done}: backing is smaller than the volume`);
  }

  async write(buf: Buffer, offset: number): Promise<void> {
    let done = 0;
    try {
      if (buf.length <= this.syncIoBytesMax) {
        while (done < buf.length) done += fs.writeSync(this.fd, buf, done, Math.min(WRITE_PIECE_BYTES, buf.length - done), offset + done);
      } else {
        await native.pwritePieces(this.fd, buf, offset, WRITE_PIECE_BYTES);
      }
    } catch (e) {
      throw storeError(e, `write ${buf.length} bytes at ${offset}`);
    }
  }

  async writeUncached(buf: Buffer, offset: number): Promise<boolean> {
    const fd = this.directWorks ? this.directFd : undefined;
    // a small write costs little in the cache, done at once, where O_DIRECT would wait for the disk
    const aligned = offset % DIRECT_ALIGN_BYTES === 0 && buf.length % DIRECT_ALIGN_BYTES === 0;
    if (fd === undefined || buf.length <= this.syncIoBytesMax || !aligned) {
      await this.write(buf, offset);
      return false;
    }
    const stage = this.directStages.pop() ?? native.alignedBuffer(DIRECT_STAGE_BYTES, DIRECT_ALIGN_BYTES);
    try {
      for (let done = 0; done < buf.length; done += DIRECT_STAGE_BYTES) {
        await native.pwriteStaged(fd, buf.subarray(done, done + DIRECT_STAGE_BYTES), stage, offset + done);
      }
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw storeError(e, `write ${buf.length} bytes at ${offset}`);
      // the backing takes O_DIRECT at open but not these writes (it wants a larger alignment): through the
      // cache from now on. The descriptor stays open until close(): other writes may still be using it.
      this.directWorks = false;
      this.directStages.length = 0;
      await this.write(buf, offset);
      return false;
    } finally {
      if (this.directWorks && this.directStages.length < DIRECT_STAGES_KEPT) this.directStages.push(stage);
    }
  }

  async flush(): Promise<void> {
    try {
      await fdatasyncAsync(this.fd);
    } catch (e) {
      throw storeError(e, 'flush');
    }
  }

  async trim(offset: number, length: number): Promise<void> {
    // TRIM is advisory: where holes cannot be punched the data simply stays
    if (!this.punchHoleWorks) return;
    try {
      native.fallocate(this.fd, native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE, offset, length);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EOPNOTSUPP') { this.punchHoleWorks = false; return; }
      throw storeError(e, `trim ${length} bytes at ${offset}`);
    }
  }

  async zero(offset: number, length: number, o: ZeroOptions): Promise<void> {
    const modes: number[] = [];
    if (!o.noHole && this.punchHoleWorks) modes.push(native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE);
    if (this.zeroRangeWorks) modes.push(native.FALLOC_FL_ZERO_RANGE | native.FALLOC_FL_KEEP_SIZE);
    for (const mode of modes) {
      try {
        native.fallocate(this.fd, mode, offset, length);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EOPNOTSUPP') throw storeError(e, `zero ${length} bytes at ${offset}`);
        if (mode & native.FALLOC_FL_PUNCH_HOLE) this.punchHoleWorks = false;
        else this.zeroRangeWorks = false;
      }
    }
    if (o.fast) throw new StoreError('ENOTSUP', 'zeroing would not be faster than writing');
    zeroChunk ??= Buffer.alloc(ZERO_CHUNK_BYTES);
    for (let done = 0; done < length;) {
      const n = Math.min(ZERO_CHUNK_BYTES, length - done);
      try {
        await native.pwritePieces(this.fd, zeroChunk.subarray(0, n), offset + done, WRITE_PIECE_BYTES);
        done += n;
      } catch (e) {
        throw storeError(e, `write zeroes at ${offset + done}`);
      }
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    cacheScratch ??= Buffer.allocUnsafe(CACHE_CHUNK_BYTES);
    for (let done = 0; done < length;) {
      const n = Math.min(CACHE_CHUNK_BYTES, length - done);
      try {
        const { bytesRead } = await readAsync(this.fd, cacheScratch, 0, n, offset + done);
        if (bytesRead === 0) return;
        done += bytesRead;
      } catch (e) {
        throw storeError(e, `cache at ${offset + done}`);
      }
    }
  }

  async extents(offset: number, length: number, extentsMax: number): Promise<StoreExtent[]> {
    const end = Math.min(this.size, offset + length);
    if (!this.seekDataWorks) return [{ offset, length: end - offset, hole: false, zero: false }];
    const out: StoreExtent[] = [];
    let at = offset;
    try {
      while (at < end && out.length < extentsMax) {
        let data = native.lseek(this.fd, at, native.SEEK_DATA);
        if (data < 0 || data > end) data = end;
        if (data > at) {
          out.push({ offset: at, length: data - at, hole: true, zero: true });
          at = data;
          continue;
        }
        let hole = native.lseek(this.fd, at, native.SEEK_HOLE);
        if (hole < 0 || hole > end) hole = end;
        out.push({ offset: at, length: hole - at, hole: false, zero: false });
        at = hole;
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EINVAL' && code !== 'EOPNOTSUPP') throw storeError(e, `extents at ${at}`);
      // the backing cannot tell holes (some block devices): all data, which is always safe
      this.seekDataWorks = false;
      return [{ offset, length: end - offset, hole: false, zero: false }];
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.directStages.length = 0;
    if (this.directFd !== undefined) fs.closeSync(this.directFd);
    fs.closeSync(this.fd);
  }
}
