// BACKING.tandem.bitmap: a volume's dirty bitmap on disk, after a header page
// (tracking-file.ts). Persisting writes only the pages that changed since the
// last persist, with positional writes and one fdatasync.
//
// Persists run one at a time, through the thread pool: a persist that finds no
// changed page must still wait for one in progress before it may say the bits
// it saw are durable, and an older copy of a page must never land after a newer one.
import fs from 'node:fs';
import { BitmapError, bitmapGeometry, DirtyBitmap, dirtyBitmapLimits, type BitmapGeometry } from '../core/dirty-bitmap';
import {
  createTrackingFile, openTrackingFile, syncData, trackingFileLimits, TrackingFileError, writeAt, type TrackingFileFormat,
} from './tracking-file';

export const bitmapFileFormat: TrackingFileFormat = { magic: 'TNDMBMAP', version: 1, fields: ['volumeBytes', 'regionBytes'] };

export function bitmapPath(backingPath: string): string {
  return `${backingPath}.tandem.bitmap`;
}

function headerValues(g: BitmapGeometry): Record<string, number> {
  return { volumeBytes: g.volumeBytes, regionBytes: g.regionBytes };
}

export class BitmapFile {
  private closed = false;
  /** set by close(): no new persist is accepted */
  private closeDone: Promise<void> | undefined;

  private constructor(readonly path: string, private readonly fd: number, readonly bitmap: DirtyBitmap) {}

  /** Creates an all-clean bitmap file; refuses an existing file (TrackingFileError ERR_TRACKING_EXISTS). */
  static async create(file: string, geometry: BitmapGeometry): Promise<BitmapFile> {
    const bitmap = new DirtyBitmap(bitmapGeometry(geometry));
    createTrackingFile(file, bitmapFileFormat, headerValues(bitmap), bitmap.serializedBytes);
    return BitmapFile.open(file, geometry);
  }

  /** Opens and checks the file against the volume's geometry (TrackingFileError ERR_TRACKING_SIZE, _HEADER, _GEOMETRY, _CORRUPT). */
  static async open(file: string, geometry: BitmapGeometry): Promise<BitmapFile> {
    const g = bitmapGeometry(geometry);
    const serializedBytes = new DirtyBitmap(g).serializedBytes;
    const { fd, body } = openTrackingFile(file, bitmapFileFormat, headerValues(g), serializedBytes);
    try {
      return new BitmapFile(file, fd, DirtyBitmap.load(g, body));
    } catch (e) {
      fs.closeSync(fd);
      if (e instanceof BitmapError) throw new TrackingFileError('ERR_TRACKING_CORRUPT', `${file}: ${e.message}`);
      throw e;
    }
  }

  /**
   * Writes the pages that changed since the last persist and makes them durable; returns how many.
   * Every bit set before the call is durable when it resolves.
   */
  persist(): Promise<number> {
    if (this.closeDone !== undefined) return Promise.reject(this.closedError());
    const run = this.persisting.then(() => this.persistNow());
    this.persisting = run.then(() => undefined, () => undefined);
    return run;
  }

  private persisting: Promise<void> = Promise.resolve();

  private async persistNow(): Promise<number> {
    this.checkOpen();
    const pages = this.bitmap.takeDirtyPages();
    if (pages.length === 0) return 0;
    try {
      // consecutive pages go out in one write
      for (let i = 0; i < pages.length;) {
        let j = i + 1;
        while (j < pages.length && pages[j] === (pages[j - 1] as number) + 1) j++;
        const first = pages[i] as number;
        const data = Buffer.concat(pages.slice(i, j).map((p) => this.bitmap.page(p)));
        await writeAt(this.fd, data, trackingFileLimits.headerBytes + first * dirtyBitmapLimits.pageBytes, `write ${this.path}`);
        i = j;
      }
      await syncData(this.fd, `sync ${this.path}`);
    } catch (e) {
      // the pages may not be on disk: the next persist writes them again
      this.bitmap.markPagesDirty(pages);
      throw e;
    }
    return pages.length;
  }

  /** Closes without persisting: call persist() first for a clean stop. */
  close(): Promise<void> {
    // persists asked for before the close still run; a write still in the thread pool must not meet
    // a closed (or reused) descriptor
    this.closeDone ??= this.persisting.then(() => {
      this.closed = true;
      fs.closeSync(this.fd);
    });
    return this.closeDone;
  }

  private closedError(): TrackingFileError {
    return new TrackingFileError('ERR_TRACKING_CLOSED', `${this.path} is closed`);
  }

  private checkOpen(): void {
    if (this.closed) throw this.closedError();
  }
}
