// BACKING.tandem.al: a volume's activity log journal on disk, after a header
// page (tracking-file.ts): journalSlots slots of 4 KiB, one transaction each.
// Opening reads the journal back (recover()), and the log resumes after the
// newest intact record, so its next record lands in the slot after it.
//
// The ActivityLog allows one transaction pending at a time, so records never
// race each other to the disk.
import fs from 'node:fs';
import {
  ActivityLog, activityLogGeometry, activityLogLimits, journalBytes, recover,
  type ActivityLogGeometry, type AlTransaction, type RecoveredLog,
} from '../core/activity-log';
import {
  createTrackingFile, openTrackingFile, syncData, trackingFileLimits, TrackingFileError, writeAt, type TrackingFileFormat,
} from './tracking-file';

/** extentsMax is not stored: it only limits the running log, and any journal is readable with any value */
export const activityLogFileFormat: TrackingFileFormat = {
  magic: 'TNDMALOG', version: 1, fields: ['volumeBytes', 'extentBytes', 'journalSlots'],
};

export function activityLogPath(backingPath: string): string {
  return `${backingPath}.tandem.al`;
}

function headerValues(g: ActivityLogGeometry): Record<string, number> {
  return { volumeBytes: g.volumeBytes, extentBytes: g.extentBytes, journalSlots: g.journalSlots };
}

export class ActivityLogFile {
  readonly geometry: ActivityLogGeometry;
  /** what the journal held when the file was opened */
  readonly recovered: RecoveredLog;
  /** an empty log that continues the journal's sequence */
  readonly log: ActivityLog;
  /** set by close(): no new persist is accepted */
  private closeDone: Promise<void> | undefined;

  private constructor(readonly path: string, private readonly fd: number, geometry: ActivityLogGeometry, journal: Buffer) {
    this.geometry = geometry;
    this.recovered = recover(geometry, journal);
    this.log = new ActivityLog(geometry, this.recovered.sequence + 1);
  }

  /** Creates an empty journal; refuses an existing file (TrackingFileError ERR_TRACKING_EXISTS). */
  static async create(file: string, geometry: ActivityLogGeometry): Promise<ActivityLogFile> {
    const g = activityLogGeometry(geometry);
    createTrackingFile(file, activityLogFileFormat, headerValues(g), journalBytes(g));
    return ActivityLogFile.open(file, g);
  }

  /** Opens, checks the geometry (TrackingFileError ERR_TRACKING_SIZE, _HEADER, _GEOMETRY) and reads the journal back. */
  static async open(file: string, geometry: ActivityLogGeometry): Promise<ActivityLogFile> {
    const g = activityLogGeometry(geometry);
    const { fd, body } = openTrackingFile(file, activityLogFileFormat, headerValues(g), journalBytes(g));
    return new ActivityLogFile(file, fd, g, body);
  }

  /**
   * Writes the transaction's record into its slot, makes it durable, then commits it to the log.
   * The caller has already made the dirty bits of `t.evicted` durable (change-tracking.ts does both).
   */
  persist(t: AlTransaction): Promise<void> {
    if (this.closeDone !== undefined) return Promise.reject(new TrackingFileError('ERR_TRACKING_CLOSED', `${this.path} is closed`));
    const run = this.persistNow(t);
    this.persisting = run.then(() => undefined, () => undefined);
    return run;
  }

  private persisting: Promise<void> = Promise.resolve();

  private async persistNow(t: AlTransaction): Promise<void> {
    await writeAt(this.fd, t.record, trackingFileLimits.headerBytes + t.slot * activityLogLimits.slotBytes, `write ${this.path}`);
    await syncData(this.fd, `sync ${this.path}`);
    this.log.commit(t);
  }

  close(): Promise<void> {
    // persists asked for before the close still run; a write still in the thread pool must not meet
    // a closed (or reused) descriptor
    this.closeDone ??= this.persisting.then(() => {
      fs.closeSync(this.fd);
    });
    return this.closeDone;
  }

}
