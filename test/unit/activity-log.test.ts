import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import {
  ActivityLog, ActivityLogError, activityLogGeometry, activityLogLimits, decodeRecord, encodeRecord, journalBytes, recover,
  type ActivityLogGeometry, type AlTransaction, type BeginWriteResult,
} from '../../src/core/activity-log';
import { crc32c } from '../../src/core/crc32c';

const MiB = 1024 * 1024;
const SLOT = activityLogLimits.slotBytes;
const g = activityLogGeometry({ volumeBytes: 16 * MiB, extentBytes: MiB, extentsMax: 3, journalSlots: 4 });

const isAlError = (code: string) => (e: unknown): boolean => e instanceof ActivityLogError && e.code === code;

/** an in-memory journal: what the file layer does, minus the file */
class Journal {
  readonly bytes: Buffer;
  constructor(readonly geometry: ActivityLogGeometry) {
    this.bytes = Buffer.alloc(journalBytes(geometry));
  }
  write(t: AlTransaction): void {
    t.record.copy(this.bytes, t.slot * SLOT);
  }
  persist(log: ActivityLog, t: AlTransaction): void {
    this.write(t);
    log.commit(t);
  }
  recover(): ReturnType<typeof recover> {
    return recover(this.geometry, this.bytes);
  }
}

function persisted(r: BeginWriteResult): AlTransaction {
  assert.equal(r.kind, 'persist');
  return (r as { transaction: AlTransaction }).transaction;
}

/** one whole write: begin, persist if needed, end */
function writeRange(log: ActivityLog, j: Journal, offset: number, length: number): BeginWriteResult {
  const r = log.beginWrite(offset, length);
  if (r.kind === 'persist') j.persist(log, r.transaction);
  if (r.kind !== 'wait') log.endWrite(offset, length);
  return r;
}

const writeTo = (log: ActivityLog, j: Journal, extent: number): BeginWriteResult => writeRange(log, j, extent * MiB, 4096);

test('crc32c matches the standard check value', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
});

test('geometry defaults and limits', () => {
  const d = activityLogGeometry({ volumeBytes: 1 << 30 });
  assert.deepEqual(d, { volumeBytes: 1 << 30, extentBytes: 4 * MiB, extentsMax: 1017, journalSlots: 8 });
  assert.equal(activityLogLimits.recordExtentsMax, 1017);
  assert.throws(() => activityLogGeometry({ volumeBytes: MiB, extentBytes: 3 * MiB }), isAlError('ERR_AL_GEOMETRY'));
  assert.throws(() => activityLogGeometry({ volumeBytes: MiB, extentsMax: 1018 }), isAlError('ERR_AL_GEOMETRY'));
  assert.throws(() => activityLogGeometry({ volumeBytes: MiB, journalSlots: 1 }), isAlError('ERR_AL_GEOMETRY'));
  assert.throws(() => activityLogGeometry({ volumeBytes: 0 }), isAlError('ERR_AL_GEOMETRY'));
});

test('new extents need a transaction; hot ones do not; a full log evicts the least recently used', () => {
  const log = new ActivityLog(g);
  const j = new Journal(g);
  const t0 = persisted(writeTo(log, j, 0));
  assert.deepEqual([t0.sequence, t0.slot, t0.added, t0.evicted, t0.extents], [1, 1, [0], [], [0]]);
  persisted(writeTo(log, j, 1));
  persisted(writeTo(log, j, 2));
  assert.equal(writeTo(log, j, 0).kind, 'ready', 'extent 0 is hot: no transaction');
  const t = persisted(writeTo(log, j, 3));
  assert.deepEqual(t.added, [3]);
  assert.deepEqual(t.evicted, [1], 'extent 1 is now the least recently used');
  assert.deepEqual(t.extents, [0, 2, 3]);
  assert.deepEqual(log.activeExtents(), [0, 2, 3]);
  // a write over two new extents evicts two
  const t2 = persisted(writeRange(log, j, 5 * MiB - 10, 20));
  assert.deepEqual([t2.added, t2.evicted, t2.extents], [[4, 5], [2, 0], [3, 4, 5]]);
});

test('an extent with writes in flight is never evicted: the writer must wait', () => {
  const log = new ActivityLog(g);
  const j = new Journal(g);
  for (const e of [0, 1, 2]) j.persist(log, persisted(log.beginWrite(e * MiB, 512)));
  assert.deepEqual(log.beginWrite(3 * MiB, 512), { kind: 'wait', reason: 'busy' });
  assert.deepEqual(log.activeExtents(), [0, 1, 2], 'a wait changes nothing');
  assert.equal(log.beginWrite(MiB + 512, 512).kind, 'ready', 'more writes to a hot extent proceed');
  log.endWrite(MiB, 512);
  assert.equal(log.beginWrite(3 * MiB, 512).kind, 'wait', 'extent 1 still has a write in flight');
  log.endWrite(MiB + 512, 512);
  const t = persisted(log.beginWrite(3 * MiB, 512));
  assert.deepEqual(t.evicted, [1]);
  assert.equal(log.inFlight(0), 1);
  assert.throws(() => log.beginWrite(0, 4 * MiB), isAlError('ERR_AL_RANGE'), 'four extents never fit in three');
  assert.throws(() => log.beginWrite(16 * MiB, 1), isAlError('ERR_AL_RANGE'));
  assert.throws(() => log.endWrite(5 * MiB, 1), isAlError('ERR_AL_NOT_IN_FLIGHT'));
});

test('while a transaction is being persisted, writes that depend on it wait', () => {
  const log = new ActivityLog(g);
  const j = new Journal(g);
  j.persist(log, persisted(log.beginWrite(0, 1)));
  const t = persisted(log.beginWrite(MiB, 1));
  assert.deepEqual(log.beginWrite(MiB + 1, 1), { kind: 'wait', reason: 'committing' }, 'its extent is not durable yet');
  assert.deepEqual(log.beginWrite(2 * MiB, 1), { kind: 'wait', reason: 'committing' }, 'one transaction at a time');
  assert.equal(log.beginWrite(1, 1).kind, 'ready', 'a committed extent is unaffected');
  assert.throws(() => log.commit({ ...t, sequence: t.sequence + 1 }), isAlError('ERR_AL_TRANSACTION'));
  j.persist(log, t);
  assert.equal(log.beginWrite(MiB + 1, 1).kind, 'ready');
  assert.throws(() => log.commit(t), isAlError('ERR_AL_TRANSACTION'), 'a transaction commits once');
});

test('writes that waited for a commit share the next transaction (group commit)', () => {
  const g6 = activityLogGeometry({ volumeBytes: 16 * MiB, extentBytes: MiB, extentsMax: 6, journalSlots: 4 });
  const log = new ActivityLog(g6);
  const j = new Journal(g6);
  const first = persisted(log.beginWrite(0, 1));
  for (const e of [1, 2, 3]) assert.deepEqual(log.beginWrite(e * MiB, 1), { kind: 'wait', reason: 'committing' });
  j.persist(log, first);
  // the first writer to retry persists one transaction for all three waiting writers
  const next = persisted(log.beginWrite(MiB, 1));
  assert.deepEqual(next.added, [1, 2, 3]);
  assert.deepEqual(log.beginWrite(2 * MiB, 1), { kind: 'wait', reason: 'committing' }, 'not durable until that commit');
  j.persist(log, next);
  assert.equal(log.beginWrite(2 * MiB, 1).kind, 'ready');
  assert.equal(log.beginWrite(3 * MiB, 1).kind, 'ready');
  assert.deepEqual(j.recover().extents, [0, 1, 2, 3]);
  assert.equal(log.inFlight(1), 1);
});

test('group commit never takes more extents than there is room for, and evicts only idle ones', () => {
  const log = new ActivityLog(g); // three extents
  const j = new Journal(g);
  const first = persisted(log.beginWrite(0, 1));
  for (const e of [4, 5, 6, 7]) assert.equal(log.beginWrite(e * MiB, 1).kind, 'wait');
  j.persist(log, first);
  // extent 0 has a write in flight: room for two, the retrying writer's own extent first
  const next = persisted(log.beginWrite(7 * MiB, 1));
  assert.deepEqual(next.added, [4, 7]);
  assert.deepEqual(next.evicted, []);
  assert.deepEqual(next.extents, [0, 4, 7]);
});

test('shrink empties the log once no write is in flight', () => {
  const log = new ActivityLog(g);
  const j = new Journal(g);
  j.persist(log, persisted(log.beginWrite(0, 1)));
  assert.deepEqual(log.shrink(), { kind: 'wait', reason: 'busy' });
  log.endWrite(0, 1);
  const r = log.shrink();
  assert.equal(r.kind, 'persist');
  if (r.kind !== 'persist') return;
  assert.deepEqual([r.transaction.extents, r.transaction.evicted], [[], [0]]);
  j.persist(log, r.transaction);
  assert.deepEqual(j.recover().extents, []);
});

test('the journal round-trips through the ring, and the log resumes after the newest record', () => {
  const log = new ActivityLog(g);
  const j = new Journal(g);
  assert.deepEqual(j.recover(), { extents: [], sequence: 0, slotsValid: 0, slotsBlank: 4, slotsDamaged: 0 });
  for (const e of [0, 1, 2, 3, 4, 5, 6, 2, 9, 15]) writeTo(log, j, e);
  const r = j.recover();
  assert.deepEqual(r.extents, log.activeExtents());
  assert.equal(r.sequence, log.nextSequence - 1);
  assert.deepEqual([r.slotsValid, r.slotsBlank, r.slotsDamaged], [4, 0, 0]);
  const resumed = new ActivityLog(g, r.sequence + 1);
  const t = persisted(resumed.beginWrite(7 * MiB, 1));
  assert.equal(t.sequence, r.sequence + 1);
  j.persist(resumed, t);
  assert.deepEqual(j.recover().extents, [7]);
  const rec = decodeRecord(g, encodeRecord(g, 6, [1, 5, 15]), 2);
  assert.deepEqual(rec, { sequence: 6, extents: [1, 5, 15] });
  assert.match(decodeRecord(g, encodeRecord(g, 6, [1]), 1) as string, /slot/, 'a record in the wrong slot is refused');
  assert.match(decodeRecord(g, encodeRecord(g, 6, [16]), 2) as string, /past the end/);
  assert.match(decodeRecord(g, encodeRecord(g, 6, [3, 2]), 2) as string, /ascending/);
  const other = activityLogGeometry({ ...g, extentBytes: 2 * MiB });
  assert.match(decodeRecord(other, encodeRecord(g, 6, [1]), 2) as string, /extents/);
});

test('a torn last record is detected and the record before it is used', () => {
  const log = new ActivityLog(g);
  const j = new Journal(g);
  for (const e of [0, 1, 2, 3, 4]) writeTo(log, j, e);
  const before = j.recover();
  assert.deepEqual(before.extents, [2, 3, 4]);
  // the next transaction reaches the disk only in part: its first sector, or all but its last
  const t = persisted(log.beginWrite(5 * MiB, 1));
  for (const part of [512, SLOT - 512, SLOT - 1]) {
    const torn = Buffer.from(j.bytes);
    t.record.copy(torn, t.slot * SLOT, 0, part);
    const r = recover(g, torn);
    assert.deepEqual([r.extents, r.sequence, r.slotsDamaged], [before.extents, before.sequence, 1], `torn after ${part} bytes`);
  }
  j.persist(log, t);
  assert.deepEqual(j.recover().extents, [3, 4, 5]);
});

test('a journal of the wrong size is refused with the module error', () => {
  assert.throws(() => recover(g, Buffer.alloc(journalBytes(g) - 1)), isAlError('ERR_AL_JOURNAL_SIZE'));
  assert.throws(() => recover(g, Buffer.alloc(journalBytes(g) + SLOT)), isAlError('ERR_AL_JOURNAL_SIZE'));
});

type Step =
  | { readonly op: 'begin'; readonly extent: number; readonly span: number }
  | { readonly op: 'end'; readonly pick: number }
  | { readonly op: 'commit' };

const arbStep: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('begin' as const), extent: fc.nat(15), span: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('end' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.constant({ op: 'commit' as const }) },
);

type Damage =
  | { readonly kind: 'byte'; readonly at: number; readonly value: number }
  | { readonly kind: 'zero'; readonly at: number; readonly length: number }
  | { readonly kind: 'resize'; readonly delta: number };

const arbDamage: fc.Arbitrary<Damage> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 2 * SLOT }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('resize' as const), delta: fc.integer({ min: -SLOT, max: SLOT }) }) },
);

test('property: writes start only inside durable extents; busy extents stay; corruption falls back to the newest intact record', () => {
  const arbGeometry = fc.record({ extentsMax: fc.integer({ min: 2, max: 5 }), journalSlots: fc.integer({ min: 2, max: 6 }) });
  fc.assert(fc.property(arbGeometry, fc.array(arbStep, { maxLength: 80 }), fc.array(arbDamage, { maxLength: 6 }), (geo, steps, damage) => {
    const gg = activityLogGeometry({ volumeBytes: 16 * MiB, extentBytes: MiB, ...geo });
    const log = new ActivityLog(gg);
    const j = new Journal(gg);
    /** writes admitted: started (durable) or waiting for their transaction */
    const writes: Array<{ offset: number; length: number; started: boolean }> = [];
    /** what each sequence number recorded as active */
    const written = new Map<number, readonly number[]>();
    for (const s of steps) {
      if (s.op === 'begin') {
        const offset = s.extent * MiB + (s.span === 2 ? MiB - 100 : 0);
        const length = Math.min(s.span === 2 ? 200 : 100, 16 * MiB - offset);
        const before = log.activeExtents();
        const busy = before.filter((e) => log.inFlight(e) > 0);
        const r = log.beginWrite(offset, length);
        if (r.kind === 'wait') {
          assert.deepEqual(log.activeExtents(), before, 'a wait changes nothing');
        } else {
          writes.push({ offset, length, started: r.kind === 'ready' });
          if (r.kind === 'persist') {
            for (const e of busy) assert.ok(!r.transaction.evicted.includes(e), `busy extent ${e} evicted`);
            written.set(r.transaction.sequence, r.transaction.extents);
          }
        }
      } else if (s.op === 'commit') {
        const t = log.pendingTransaction;
        if (t !== undefined) {
          // the record reaches the disk only now, as the file layer's write + fdatasync would
          j.write(t);
          log.commit(t);
          for (const w of writes) w.started = true;
        }
      } else if (writes.length > 0 && log.pendingTransaction === undefined) {
        const [w] = writes.splice(s.pick % writes.length, 1);
        if (w !== undefined) log.endWrite(w.offset, w.length);
      }
      assert.ok(log.activeExtents().length <= gg.extentsMax);
      // the safety invariant: every started write lies in extents the journal on disk lists as active
      const onDisk = new Set(j.recover().extents);
      for (const w of writes.filter((x) => x.started)) {
        for (const e of log.extentsOf(w.offset, w.length)) assert.ok(onDisk.has(e), `write in extent ${e} started before it was durable`);
      }
    }

    // now damage the journal; recovery must never throw anything but its own error, and must
    // return exactly the newest record whose slot survived intact
    const damaged = Buffer.from(j.bytes);
    let delta = 0;
    for (const d of damage) {
      if (d.kind === 'byte') damaged[d.at % damaged.length] = d.value;
      else if (d.kind === 'zero') damaged.fill(0, d.at % damaged.length, Math.min(damaged.length, (d.at % damaged.length) + d.length));
      else delta = d.delta;
    }
    const bytes = delta >= 0 ? Buffer.concat([damaged, Buffer.alloc(delta)]) : damaged.subarray(0, damaged.length + delta);
    let r: ReturnType<typeof recover>;
    try {
      r = recover(gg, bytes);
    } catch (e) {
      assert.ok(isAlError('ERR_AL_JOURNAL_SIZE')(e), `unexpected ${String(e)}`);
      assert.notEqual(bytes.length, journalBytes(gg));
      return;
    }
    let newest = 0;
    for (const [seq] of written) {
      const slot = seq % gg.journalSlots;
      const intact = damaged.subarray(slot * SLOT, (slot + 1) * SLOT).equals(j.bytes.subarray(slot * SLOT, (slot + 1) * SLOT)) &&
        j.bytes.readBigUInt64LE(slot * SLOT + 8) === BigInt(seq);
      if (intact && seq > newest) newest = seq;
    }
    assert.equal(r.sequence, newest);
    assert.deepEqual(r.extents, written.get(newest) ?? [], 'no extent of the newest intact record is lost');
  }), { numRuns: 500 });
});

test('a sequential stream adds the extents ahead of it in one transaction; random writes do not', () => {
  const g40 = activityLogGeometry({ volumeBytes: 64 * MiB, extentBytes: MiB, extentsMax: 40, journalSlots: 4 });
  const log = new ActivityLog(g40, 1, { readAheadExtents: 7 });
  const j = new Journal(g40);
  // the first write of a stream is not known to be one
  assert.deepEqual(persisted(writeRange(log, j, 0, MiB / 2)).added, [0]);
  // the next starts where it ended; extent 0 is active, so no transaction yet
  assert.equal(writeRange(log, j, MiB / 2, MiB / 2).kind, 'ready');
  // crossing into extent 1: the stream is recognised, 1..8 are added at once
  assert.deepEqual(persisted(writeRange(log, j, MiB, MiB)).added, [1, 2, 3, 4, 5, 6, 7, 8]);
  let transactions = 0;
  for (let at = 2 * MiB; at < 9 * MiB; at += MiB) if (writeRange(log, j, at, MiB).kind === 'persist') transactions++;
  assert.equal(transactions, 0, 'the stream runs through the extents read ahead');
  assert.deepEqual(persisted(writeRange(log, j, 9 * MiB, MiB)).added, [9, 10, 11, 12, 13, 14, 15, 16]);
  assert.deepEqual(j.recover().extents, Array.from({ length: 17 }, (_, i) => i), 'what is read ahead is in the record');
  // a write elsewhere is not part of the stream
  assert.deepEqual(persisted(writeRange(log, j, 30 * MiB + 4096, 4096)).added, [30]);
  // read-ahead stops at the end of the volume
  assert.deepEqual(persisted(writeRange(log, j, 60 * MiB, MiB)).added, [60]);
  assert.deepEqual(persisted(writeRange(log, j, 61 * MiB, MiB)).added, [61, 62, 63]);
});

test('read-ahead only takes room that is free or idle: it never makes a write wait', () => {
  const g4 = activityLogGeometry({ volumeBytes: 64 * MiB, extentBytes: MiB, extentsMax: 4, journalSlots: 4 });
  const log = new ActivityLog(g4, 1, { readAheadExtents: 31 });
  const j = new Journal(g4);
  // a write in flight in extent 20 pins it
  j.persist(log, persisted(log.beginWrite(20 * MiB, 1)));
  assert.deepEqual(persisted(writeRange(log, j, 0, MiB)).added, [0]);
  const t = persisted(writeRange(log, j, MiB, MiB));
  assert.deepEqual(t.added, [1, 2, 3], 'read-ahead takes the room left beside the pinned extent, not 31');
  assert.deepEqual(t.evicted, [0], 'the idle extent makes room');
  assert.deepEqual(log.activeExtents(), [1, 2, 3, 20]);
  assert.equal(log.inFlight(20), 1);
  assert.throws(() => new ActivityLog(g4, 1, { readAheadExtents: -1 }), isAlError('ERR_AL_GEOMETRY'));
});

test('a transaction that could not be persisted is aborted: its extents leave the log and the next write retries', () => {
  const log = new ActivityLog(g, 1, { readAheadExtents: 0 });
  const j = new Journal(g);
  j.persist(log, persisted(log.beginWrite(0, 1)));
  log.endWrite(0, 1);
  const failed = persisted(log.beginWrite(MiB, 1));
  assert.deepEqual(log.beginWrite(MiB + 1, 1), { kind: 'wait', reason: 'committing' });
  log.endWrite(MiB, 1);
  log.abort(failed);
  assert.deepEqual(log.activeExtents(), [0], 'the extent the failed record added is not active');
  assert.throws(() => log.abort(failed), isAlError('ERR_AL_TRANSACTION'), 'only the pending transaction can be aborted');
  const retry = persisted(log.beginWrite(MiB + 1, 1));
  assert.deepEqual(retry.added, [1]);
  assert.equal(retry.sequence, failed.sequence + 1, 'a new record, in the next slot');
  j.persist(log, retry);
  assert.deepEqual(j.recover().extents, [0, 1]);
});
