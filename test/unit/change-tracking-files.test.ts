import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import { activityLogLimits, type AlTransaction } from '../../src/core/activity-log';
import { DirtyBitmap } from '../../src/core/dirty-bitmap';
import { ActivityLogFile } from '../../src/storage/activity-log-file';
import { BitmapFile } from '../../src/storage/bitmap-file';
import { ChangeTracking, changeTrackingGeometry, changeTrackingPaths, loadForRecovery } from '../../src/storage/change-tracking';
import { trackingFileLimits, TrackingFileError } from '../../src/storage/tracking-file';
import { tempDir } from '../helpers/serve-process';

const tmp = tempDir('tandem-tracking-');
after(() => tmp.cleanup());
let n = 0;
const backing = (): string => path.join(tmp.dir, `v${n++}.img`);

const KiB = 1024;
const MiB = 1024 * KiB;
const HEADER = trackingFileLimits.headerBytes;
const isFileError = (code: string) => (e: unknown): boolean => e instanceof TrackingFileError && e.code === code;

/** 24 MiB and a bit: 385 regions of 64 KiB (the last short), 7 extents of 4 MiB */
const VOLUME = 24 * MiB + 5000;
const geometry = changeTrackingGeometry({ volumeBytes: VOLUME, extentsMax: 3, journalSlots: 4 });

test('the files are created beside the volume at their exact sizes, and refused if they exist', async () => {
  const b = backing();
  const t = await ChangeTracking.create(b, geometry);
  await t.close();
  const p = changeTrackingPaths(b);
  assert.equal(p.bitmapPath, `${b}.tandem.bitmap`);
  assert.equal(p.activityLogPath, `${b}.tandem.al`);
  assert.equal(fs.statSync(p.bitmapPath).size, HEADER + Math.ceil(385 / 8));
  assert.equal(fs.statSync(p.activityLogPath).size, HEADER + 4 * activityLogLimits.slotBytes);
  assert.deepEqual(fs.readdirSync(tmp.dir).filter((f) => f.endsWith('.tmp')), []);
  await assert.rejects(ChangeTracking.create(b, geometry), isFileError('ERR_TRACKING_EXISTS'));
  fs.rmSync(p.activityLogPath);
  await assert.rejects(ChangeTracking.create(b, geometry), isFileError('ERR_TRACKING_EXISTS'), 'either file existing is enough');
});

test('persist writes only the changed pages; a reopened bitmap is what was persisted', async () => {
  const b = backing();
  // 4 KiB regions over 300 MiB: 76800 regions, three bitmap pages
  const g = changeTrackingGeometry({ volumeBytes: 300 * MiB, regionBytes: 4 * KiB });
  const t = await ChangeTracking.create(b, g);
  assert.equal(t.bitmap.pageCount, 3);
  t.bitmap.set(0, 1);
  t.bitmap.set(299 * MiB, MiB);
  assert.equal(await t.persistBitmap(), 2);
  assert.equal(await t.persistBitmap(), 0, 'nothing changed since');
  t.bitmap.set(1, 1);
  assert.equal(await t.persistBitmap(), 0, 'setting a set bit changes nothing');
  t.bitmap.set(150 * MiB, 4 * KiB);
  assert.equal(await t.persistBitmap(), 1);
  const expected = t.bitmap.serialize();
  t.bitmap.set(100 * MiB, 1); // not persisted
  await t.close();
  const reopened = await BitmapFile.open(changeTrackingPaths(b).bitmapPath, g.bitmap);
  assert.deepEqual(reopened.bitmap.serialize(), expected);
  await reopened.close();
  await assert.rejects(reopened.persist(), isFileError('ERR_TRACKING_CLOSED'));
});

test('persists run one at a time: one that finds nothing to write still waits for the one in progress', async () => {
  const b = backing();
  const g = changeTrackingGeometry({ volumeBytes: 300 * MiB, regionBytes: 4 * KiB });
  const t = await ChangeTracking.create(b, g);
  const order: string[] = [];
  t.bitmap.set(0, 1);
  const first = t.persistBitmap().then((n) => { order.push(`first ${n}`); });
  // the first persist takes both pages; these find nothing left, but must not say so before its write is durable
  const second = t.persistBitmap().then((n) => { order.push(`second ${n}`); });
  t.bitmap.set(299 * MiB, 1);
  const third = t.persistBitmap().then((n) => { order.push(`third ${n}`); });
  // closing waits for them: the descriptor is not closed under a write
  await Promise.all([first, second, third, t.close()]);
  assert.deepEqual(order, ['first 2', 'second 0', 'third 0']);
  await assert.rejects(t.persistBitmap(), isFileError('ERR_TRACKING_CLOSED'));
  const reopened = await BitmapFile.open(changeTrackingPaths(b).bitmapPath, g.bitmap);
  assert.equal(reopened.bitmap.dirtyBytes, 8 * KiB, 'both bits reached the disk');
  await reopened.close();
});

test('a bitmap or log file that does not fit the volume is refused with a code', async () => {
  const b = backing();
  await (await ChangeTracking.create(b, geometry)).close();
  const p = changeTrackingPaths(b);
  const size = fs.statSync(p.bitmapPath).size;

  fs.truncateSync(p.bitmapPath, size + 1);
  await assert.rejects(BitmapFile.open(p.bitmapPath, geometry.bitmap), isFileError('ERR_TRACKING_SIZE'));
  fs.truncateSync(p.bitmapPath, size - 1);
  await assert.rejects(BitmapFile.open(p.bitmapPath, geometry.bitmap), isFileError('ERR_TRACKING_SIZE'));
  fs.truncateSync(p.bitmapPath, 100);
  await assert.rejects(BitmapFile.open(p.bitmapPath, geometry.bitmap), isFileError('ERR_TRACKING_SIZE'));
  fs.rmSync(p.bitmapPath);
  await assert.rejects(BitmapFile.open(p.bitmapPath, geometry.bitmap), isFileError('ERR_TRACKING_NOT_FOUND'));

  const other = changeTrackingGeometry({ volumeBytes: VOLUME, regionBytes: 128 * KiB, extentsMax: 3, journalSlots: 4 });
  await BitmapFile.create(p.bitmapPath, other.bitmap).then((f) => f.close());
  await assert.rejects(BitmapFile.open(p.bitmapPath, geometry.bitmap),
    (e: unknown) => isFileError('ERR_TRACKING_GEOMETRY')(e) && /regionBytes is 131072, expected 65536/.test((e as Error).message));
  await assert.rejects(BitmapFile.open(p.bitmapPath, { ...other.bitmap, volumeBytes: VOLUME + 1 }), isFileError('ERR_TRACKING_GEOMETRY'));

  const fd = fs.openSync(p.bitmapPath, 'r+');
  fs.writeSync(fd, Buffer.from([0xff]), 0, 1, 100);
  fs.closeSync(fd);
  await assert.rejects(BitmapFile.open(p.bitmapPath, other.bitmap), isFileError('ERR_TRACKING_HEADER'), 'a damaged header');
  await assert.rejects(BitmapFile.open(p.activityLogPath, geometry.bitmap), isFileError('ERR_TRACKING_HEADER'), 'another kind of file');

  fs.rmSync(p.bitmapPath);
  await BitmapFile.create(p.bitmapPath, geometry.bitmap).then((f) => f.close());
  const raw = fs.readFileSync(p.bitmapPath);
  raw[raw.length - 1] = 0xff; // bits past region 384
  fs.writeFileSync(p.bitmapPath, raw);
  await assert.rejects(BitmapFile.open(p.bitmapPath, geometry.bitmap), isFileError('ERR_TRACKING_CORRUPT'));

  await assert.rejects(ActivityLogFile.open(p.activityLogPath, { ...geometry.activityLog, journalSlots: 8 }), isFileError('ERR_TRACKING_GEOMETRY'));
  await assert.rejects(ActivityLogFile.open(p.activityLogPath, { ...geometry.activityLog, extentBytes: 2 * MiB }), isFileError('ERR_TRACKING_GEOMETRY'));
  const al = await ActivityLogFile.open(p.activityLogPath, { ...geometry.activityLog, extentsMax: 10 });
  await al.close(); // extentsMax is a policy of the running log, not part of the file
});

/** A replication engine in miniature: writes go through the log; some regions go out of sync. */
class Writer {
  /** admitted writes, not yet ended */
  readonly inFlight: Array<{ offset: number; length: number }> = [];
  /** regions written since the last log record was persisted */
  readonly sinceLastRecord = new Set<number>();
  constructor(readonly t: ChangeTracking) {}

  /** Begins a write, persisting a transaction if needed; ends writes until it is admitted. */
  async begin(offset: number, length: number): Promise<void> {
    for (;;) {
      const r = this.t.log.beginWrite(offset, length);
      if (r.kind === 'wait') {
        const w = this.inFlight.shift();
        assert.ok(w !== undefined, 'a wait with nothing in flight would never end');
        this.t.log.endWrite(w.offset, w.length);
        continue;
      }
      if (r.kind === 'persist') {
        await this.t.persistTransaction(r.transaction);
        this.sinceLastRecord.clear();
      }
      this.inFlight.push({ offset, length });
      for (const region of regionsOf(offset, length)) this.sinceLastRecord.add(region);
      return;
    }
  }
}

const regionsOf = (offset: number, length: number): number[] => {
  const out: number[] = [];
  for (let r = Math.floor(offset / (64 * KiB)); r * 64 * KiB < offset + length; r++) out.push(r);
  return out;
};

function assertCovers(recovered: DirtyBitmap, regions: Iterable<number>, what: string): void {
  for (const r of regions) assert.ok(recovered.isRegionDirty(r), `region ${r} (${what}) is not in bitmap ∪ log`);
}

test('recovery after a crash covers every region written since the last log record, every out-of-sync region and every write in flight', async () => {
  const b = backing();
  const t = await ChangeTracking.create(b, geometry);
  const w = new Writer(t);
  for (const [offset, length] of [[0, 4096], [5 * MiB, 70 * KiB], [9 * MiB - 10, 20], [16 * MiB, 1]] as const) {
    await w.begin(offset, length);
  }
  t.bitmap.set(5 * MiB, 70 * KiB); // the peer did not get this one
  // a fourth extent when three are active and busy: the oldest write ends, extent 1 is evicted,
  // and its dirty bits are persisted before the record that drops it
  await w.begin(VOLUME - 1, 1);
  // crash: no clean close, nothing more written
  const recovered = await loadForRecovery(b, geometry);
  assertCovers(recovered, w.sinceLastRecord, 'written since the last record');
  assertCovers(recovered, w.inFlight.flatMap((x) => regionsOf(x.offset, x.length)), 'in flight');
  assertCovers(recovered, regionsOf(5 * MiB, 70 * KiB), 'out of sync');
  assert.equal(recovered.isRegionDirty(0), false, 'extent 0 left the log with no dirty bit: its write completed on both copies');

  // reopening moves the logged extents into the bitmap and empties the log; a second crash loses nothing
  await t.close();
  const again = await ChangeTracking.open(b, geometry);
  assert.deepEqual(again.activityLogFile.recovered.extents, [2, 4, 6]);
  assert.deepEqual(again.bitmap.serialize(), recovered.serialize());
  const second = await loadForRecovery(b, geometry);
  assert.deepEqual(second.serialize(), recovered.serialize());
  const al = await ActivityLogFile.open(changeTrackingPaths(b).activityLogPath, geometry.activityLog);
  assert.deepEqual(al.recovered.extents, [], 'the log was emptied after the bitmap was durable');
  await al.close();

  // after a clean stop, recovery is the bitmap alone
  again.bitmap.clearAll(); // a resync brought the copies together
  await again.closeClean();
  assert.equal((await loadForRecovery(b, geometry)).dirtyRegions, 0);
});

test('a crash while a log record is half written loses nothing', async () => {
  const b = backing();
  const t = await ChangeTracking.create(b, geometry);
  const w = new Writer(t);
  for (const e of [0, 1, 2]) await w.begin(e * 4 * MiB + 100, 100);
  t.bitmap.set(100, 100); // the peer missed the write to extent 0, which then ends
  const first = w.inFlight.shift();
  assert.ok(first !== undefined);
  t.log.endWrite(first.offset, first.length);
  const r = t.log.beginWrite(3 * 4 * MiB, 1);
  assert.equal(r.kind, 'persist');
  const tx = (r as { transaction: AlTransaction }).transaction;
  assert.deepEqual(tx.evicted, [0]);
  // the bitmap goes first, then the record: here only its first sector reaches the disk
  await t.persistBitmap();
  const fd = fs.openSync(changeTrackingPaths(b).activityLogPath, 'r+');
  fs.writeSync(fd, tx.record, 0, 512, HEADER + tx.slot * activityLogLimits.slotBytes);
  fs.closeSync(fd);
  const recovered = await loadForRecovery(b, geometry);
  assertCovers(recovered, regionsOf(100, 100), 'out of sync in the evicted extent');
  assertCovers(recovered, w.inFlight.flatMap((x) => regionsOf(x.offset, x.length)), 'in flight');
  await t.close();
  const reopened = await ActivityLogFile.open(changeTrackingPaths(b).activityLogPath, geometry.activityLog);
  assert.deepEqual([reopened.recovered.extents, reopened.recovered.slotsDamaged], [[0, 1, 2], 1]);
  assert.equal(reopened.log.nextSequence, tx.sequence, 'the log resumes in the torn slot');
  await reopened.close();
});

test('a crash while the bitmap is being persisted, before a record that evicts, loses nothing', async () => {
  const b = backing();
  const t = await ChangeTracking.create(b, geometry);
  const w = new Writer(t);
  for (const e of [0, 1, 2]) await w.begin(e * 4 * MiB, 100);
  t.bitmap.set(0, 100);
  const first = w.inFlight.shift();
  assert.ok(first !== undefined);
  t.log.endWrite(first.offset, first.length);
  // the process dies inside the bitmap write: whatever comes after it never happens
  t.bitmapFile.persist = async (): Promise<number> => { throw new Error('crash'); };
  await assert.rejects(w.begin(3 * 4 * MiB, 1), /crash/);
  const recovered = await loadForRecovery(b, geometry);
  assertCovers(recovered, regionsOf(0, 100), 'out of sync in the extent being evicted');
  await t.close();
});

test('property: whatever the writes, a crash at any point is covered by bitmap ∪ log', async () => {
  const arbStep = fc.oneof(
    { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), offset: fc.nat(VOLUME - 1), length: fc.integer({ min: 1, max: 256 * KiB }), outOfSync: fc.boolean() }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('end' as const) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('persistBitmap' as const) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('resync' as const), offset: fc.nat(VOLUME - 1) }) },
  );
  await fc.assert(fc.asyncProperty(fc.array(arbStep, { maxLength: 40 }), async (steps) => {
    const b = backing();
    const t = await ChangeTracking.create(b, geometry);
    const w = new Writer(t);
    try {
      for (const s of steps) {
        if (s.op === 'write') {
          const length = Math.min(s.length, VOLUME - s.offset);
          await w.begin(s.offset, length);
          // a write the peer missed is marked before it ends, as the engine will
          if (s.outOfSync) t.bitmap.set(s.offset, length);
        } else if (s.op === 'end') {
          const x = w.inFlight.shift();
          if (x !== undefined) t.log.endWrite(x.offset, x.length);
        } else if (s.op === 'persistBitmap') {
          await t.persistBitmap();
        } else {
          t.bitmap.clear(s.offset, Math.min(MiB, VOLUME - s.offset));
        }
      }
      const recovered = await loadForRecovery(b, geometry);
      assertCovers(recovered, w.sinceLastRecord, 'written since the last record');
      assertCovers(recovered, w.inFlight.flatMap((x) => regionsOf(x.offset, x.length)), 'in flight');
      assertCovers(recovered, [...t.bitmap.dirtyRuns()].flatMap((x) => regionsOf(x.offset, x.length)), 'out of sync in memory');
    } finally {
      await t.close();
      for (const p of Object.values(changeTrackingPaths(b))) fs.rmSync(p, { force: true });
    }
  }), { numRuns: 60 });
});

test('loadForRecovery of a volume without tracking files says so', async () => {
  await assert.rejects(loadForRecovery(backing(), geometry), isFileError('ERR_TRACKING_NOT_FOUND'));
});
