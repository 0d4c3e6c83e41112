// BACKING.tandem.bitmap: a volume's dirty bitmap on disk, after a header page
// (tracking-file.ts). Persisting writes only the pages that changed since the
// last persist, with positional writes and one fdatasync.
//
// Methods return promises although the I/O is synchronous today (a few KiB
// per persist), so they can move to a worker without changing callers.
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

  /** Writes the pages that changed since the last persist and makes them durable; returns how many. */
  async persist(): Promise<number> {
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
        writeAt(this.fd, data, trackingFileLimits.headerBytes + first * dirtyBitmapLimits.pageBytes, `write ${this.path}`);
        i = j;
      }
      syncData(this.fd, `sync ${this.path}`);
    } catch (e) {
      // the pages may not be on disk: the next persist writes them again
      this.bitmap.markPagesDirty(pages);
      throw e;
    }
    return pages.length;
  }

  /** Closes without persisting: call persist() first for a clean stop. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }

  private checkOpen(): void {
    if (this.closed) throw new TrackingFileError('ERR_TRACKING_CLOSED', `${this.path} is closed`);
  }
}
