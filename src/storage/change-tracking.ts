// A volume's change tracking: its bitmap and activity log files, and the order
// in which they are written, which is what makes a crash safe (docs/change-tracking.md):
//
//   1. a write starts only once its extents are durable in the log
//      (ActivityLog.beginWrite, then persistTransaction);
//   2. a record that drops extents from the log is written only after the
//      bitmap is durable (persistTransaction writes the bitmap pages first);
//   3. after a crash the logged extents go into the bitmap, and the bitmap is
//      durable before the log is emptied (open).
//
// So on disk, bitmap ∪ log covers every region where the copies may differ.
import fs from 'node:fs';
import {
  activityLogGeometry, extentRange, type ActivityLog, type ActivityLogGeometry, type AlTransaction,
} from '../core/activity-log';
import { bitmapGeometry, type BitmapGeometry, type DirtyBitmap } from '../core/dirty-bitmap';
import { ActivityLogFile, activityLogPath } from './activity-log-file';
import { BitmapFile, bitmapPath } from './bitmap-file';
import { TrackingFileError } from './tracking-file';

export interface ChangeTrackingGeometry {
  readonly bitmap: BitmapGeometry;
  readonly activityLog: ActivityLogGeometry;
}

/** Both geometries for one volume, defaults filled in and checked. */
export function changeTrackingGeometry(o: {
  readonly volumeBytes: number; readonly regionBytes?: number;
  readonly extentBytes?: number; readonly extentsMax?: number; readonly journalSlots?: number;
}): ChangeTrackingGeometry {
  const { volumeBytes, regionBytes, ...al } = o;
  return {
    bitmap: bitmapGeometry(regionBytes === undefined ? { volumeBytes } : { volumeBytes, regionBytes }),
    activityLog: activityLogGeometry({ volumeBytes, ...al }),
  };
}

export function changeTrackingPaths(backingPath: string): { readonly bitmapPath: string; readonly activityLogPath: string } {
  return { bitmapPath: bitmapPath(backingPath), activityLogPath: activityLogPath(backingPath) };
}

function addExtents(bitmap: DirtyBitmap, g: ActivityLogGeometry, extents: readonly number[]): void {
  for (const e of extents) {
    const r = extentRange(g, e);
    bitmap.set(r.offset, r.length);
  }
}

/**
 * Every region that may differ from the peer's copy, as the files say now: the bitmap ∪ the
 * extents of the newest intact log record. Reads only; the files are left as they are.
 */
export async function loadForRecovery(backingPath: string, g: ChangeTrackingGeometry): Promise<DirtyBitmap> {
  const paths = changeTrackingPaths(backingPath);
  const bitmapFile = await BitmapFile.open(paths.bitmapPath, g.bitmap);
  try {
    const al = await ActivityLogFile.open(paths.activityLogPath, g.activityLog);
    await al.close();
    addExtents(bitmapFile.bitmap, al.geometry, al.recovered.extents);
    return bitmapFile.bitmap;
  } finally {
    await bitmapFile.close();
  }
}

export class ChangeTracking {
  private constructor(readonly bitmapFile: BitmapFile, readonly activityLogFile: ActivityLogFile) {}

  get bitmap(): DirtyBitmap {
    return this.bitmapFile.bitmap;
  }

  get log(): ActivityLog {
    return this.activityLogFile.log;
  }

  /** Creates both files for a new volume (TrackingFileError ERR_TRACKING_EXISTS if either exists). */
  static async create(backingPath: string, g: ChangeTrackingGeometry): Promise<ChangeTracking> {
    const paths = changeTrackingPaths(backingPath);
    // check both first, so a refusal leaves nothing half-created
    for (const p of [paths.bitmapPath, paths.activityLogPath]) {
      if (fs.existsSync(p)) throw new TrackingFileError('ERR_TRACKING_EXISTS', `${p} already exists`);
    }
    const bitmapFile = await BitmapFile.create(paths.bitmapPath, g.bitmap);
    try {
      return new ChangeTracking(bitmapFile, await ActivityLogFile.create(paths.activityLogPath, g.activityLog));
    } catch (e) {
      await bitmapFile.close();
      fs.rmSync(paths.bitmapPath, { force: true });
      throw e;
    }
  }

  /**
   * Opens both files after a clean stop or a crash. Extents the log still lists (writes may have
   * been in flight there) are added to the bitmap, the bitmap is made durable, and only then is
   * an empty record written, so the next crash does not count them again.
   */
  static async open(backingPath: string, g: ChangeTrackingGeometry): Promise<ChangeTracking> {
    const paths = changeTrackingPaths(backingPath);
    const bitmapFile = await BitmapFile.open(paths.bitmapPath, g.bitmap);
    let al: ActivityLogFile;
    try {
      al = await ActivityLogFile.open(paths.activityLogPath, g.activityLog);
    } catch (e) {
      await bitmapFile.close();
      throw e;
    }
    const t = new ChangeTracking(bitmapFile, al);
    try {
      if (al.recovered.extents.length > 0) {
        addExtents(bitmapFile.bitmap, al.geometry, al.recovered.extents);
        await t.emptyLog();
      }
    } catch (e) {
      await t.close();
      throw e;
    }
    return t;
  }

  /** Persists a transaction from beginWrite or shrink: the bitmap pages first, then the record. */
  async persistTransaction(tx: AlTransaction): Promise<void> {
    // every changed page, not only the evicted extents': a few more 4 KiB writes, one fdatasync, no bookkeeping
    await this.bitmapFile.persist();
    await this.activityLogFile.persist(tx);
  }

  /** Persists the bitmap pages that changed; returns how many. */
  async persistBitmap(): Promise<number> {
    return this.bitmapFile.persist();
  }

  /** A clean stop: with no write in flight, persists the bitmap and an empty log, then closes. */
  async closeClean(): Promise<void> {
    await this.emptyLog();
    await this.close();
  }

  /** Closes both files without writing: what is on disk is what recovery will see. */
  async close(): Promise<void> {
    await this.bitmapFile.close();
    await this.activityLogFile.close();
  }

  private async emptyLog(): Promise<void> {
    const r = this.log.shrink();
    if (r.kind === 'wait') {
      throw new TrackingFileError('ERR_TRACKING_BUSY', `cannot empty the activity log: ${r.reason === 'busy' ? 'writes are in flight' : 'a transaction is being persisted'}`);
    }
    await this.persistTransaction(r.transaction);
  }
}
