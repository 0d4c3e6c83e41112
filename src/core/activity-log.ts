// The activity log, as in DRBD: the set of "hot" extents in which writes may be
// in flight. A write may only start once every extent it touches is recorded
// as active on disk, so after a crash the extents of the newest record bound
// every place where the two copies may differ without a dirty bit. Pure: the
// caller persists each transaction (storage/activity-log-file.ts) and then
// calls commit().
//
// At most one transaction is being persisted at a time: a write that needs a
// new extent meanwhile, or touches one the pending transaction adds, must wait
// for the commit. Otherwise it could start before its extent is durable.
// Group commit: the extents such writes need are queued, and the next
// transaction adds them all at once, so N writers waiting behind one commit
// cost one more transaction, not N.
//
// Read-ahead: a write that starts where a recent one ended is part of a
// sequential stream, and when it needs a new extent the transaction also adds
// the next readAheadExtents ones (room permitting, never waiting for it). A
// stream then pays one transaction per 32 extents rather than per extent; the
// cost is that a crash of the primary resyncs up to that much more.
import { ActivityLogError, encodeRecord, extentCount, type ActivityLogGeometry } from './activity-log-journal';

export {
  ActivityLogError, activityLogDefaults, activityLogGeometry, activityLogLimits, decodeRecord, encodeRecord,
  extentCount, extentRange, journalBytes, recover,
} from './activity-log-journal';
export type { ActivityLogErrorCode, ActivityLogGeometry, JournalRecord, RecoveredLog } from './activity-log-journal';

export interface AlTransaction {
  readonly sequence: number;
  /** write `record` at slot × slotBytes of the journal */
  readonly slot: number;
  readonly record: Buffer;
  /** every extent active once this is committed, ascending */
  readonly extents: readonly number[];
  readonly added: readonly number[];
  /** extents leaving the log: their dirty bits must be durable before `record` is written */
  readonly evicted: readonly number[];
}

export type BeginWriteResult =
  /** every extent is already durable in the log: write now */
  | { readonly kind: 'ready' }
  /** persist the transaction and commit() it, then write */
  | { readonly kind: 'persist'; readonly transaction: AlTransaction }
  /**
   * nothing changed; try again after an endWrite() ('busy': every extent that could make room
   * has writes in flight) or after the pending commit() ('committing')
   */
  | { readonly kind: 'wait'; readonly reason: 'busy' | 'committing' };

export interface ActivityLogOptions {
  /** extents added ahead of a sequential stream (0: none); at most the geometry's extentsMax - 1 */
  readonly readAheadExtents?: number;
}

export const activityLogReadAhead = {
  /** 31 × 4 MiB: a 1 MiB sequential stream persists a transaction every 128 MiB */
  extents: 31,
  /** ends of this many recent writes are remembered to recognise a stream */
  recentWrites: 16,
} as const;

export class ActivityLog {
  readonly geometry: ActivityLogGeometry;
  private readonly readAhead: number;
  /** where the most recent admitted writes ended, oldest first */
  private readonly recentEnds: number[] = [];
  /** active extent → writes in flight; Map order is least recently used first */
  private readonly active = new Map<number, number>();
  private pending: AlTransaction | undefined;
  /** extents wanted by writes that waited for the pending commit, in arrival order */
  private readonly queued = new Set<number>();
  private sequence: number;

  /** An empty log whose first transaction gets `nextSequence` (after recovery: the recovered sequence + 1). */
  constructor(geometry: ActivityLogGeometry, nextSequence = 1, options: ActivityLogOptions = {}) {
    if (!Number.isSafeInteger(nextSequence) || nextSequence < 1) {
      throw new ActivityLogError('ERR_AL_TRANSACTION', `sequence ${nextSequence} is not a positive integer`);
    }
    const readAhead = options.readAheadExtents ?? activityLogReadAhead.extents;
    if (!Number.isInteger(readAhead) || readAhead < 0) {
      throw new ActivityLogError('ERR_AL_GEOMETRY', `readAheadExtents ${readAhead} is not a non-negative integer`);
    }
    this.readAhead = Math.min(readAhead, geometry.extentsMax - 1);
    this.geometry = geometry;
    this.sequence = nextSequence;
  }

  /** Admits a write of `length` bytes at `offset`, or says what must happen first. */
  beginWrite(offset: number, length: number): BeginWriteResult {
    const touched = this.extentsOf(offset, length);
    const pendingAdds = this.pending?.added ?? [];
    if (touched.some((e) => pendingAdds.includes(e))) return { kind: 'wait', reason: 'committing' };
    const missing = touched.filter((e) => !this.active.has(e));
    if (missing.length === 0) {
      for (const e of touched) this.touch(e, 1);
      this.noteEnd(offset + length);
      return { kind: 'ready' };
    }
    if (this.pending !== undefined) {
      for (const e of missing) if (this.queued.size < this.geometry.extentsMax) this.queued.add(e);
      return { kind: 'wait', reason: 'committing' };
    }
    const evictable: number[] = [];
    for (const [e, inFlight] of this.active) if (inFlight === 0 && !touched.includes(e)) evictable.push(e);
    const free = this.geometry.extentsMax - this.active.size + evictable.length;
    if (free < missing.length) return { kind: 'wait', reason: 'busy' };
    // queued extents ride along while there is room; they stay idle until their writers retry
    const added = [...missing];
    for (const e of this.queued) {
      if (added.length >= free) break;
      if (!this.active.has(e) && !added.includes(e)) added.push(e);
    }
    this.queued.clear();
    if (this.readAhead > 0 && this.recentEnds.includes(offset)) {
      const last = extentCount(this.geometry);
      const from = (touched[touched.length - 1] as number) + 1;
      for (let e = from; e < from + this.readAhead && e < last && added.length < free; e++) {
        if (!this.active.has(e) && !added.includes(e)) added.push(e);
      }
    }
    const evicted = evictable.slice(0, Math.max(0, this.active.size + added.length - this.geometry.extentsMax));
    for (const e of evicted) this.active.delete(e);
    for (const e of added) if (!touched.includes(e)) this.touch(e, 0);
    for (const e of touched) this.touch(e, 1);
    this.noteEnd(offset + length);
    return { kind: 'persist', transaction: this.transaction(added.sort((a, b) => a - b), evicted) };
  }

  private noteEnd(end: number): void {
    if (this.recentEnds.length >= activityLogReadAhead.recentWrites) this.recentEnds.shift();
    this.recentEnds.push(end);
  }

  /** Ends a write admitted by beginWrite (whether or not it was carried out). */
  endWrite(offset: number, length: number): void {
    const touched = this.extentsOf(offset, length);
    const idle = touched.find((e) => (this.active.get(e) ?? 0) === 0);
    if (idle !== undefined) throw new ActivityLogError('ERR_AL_NOT_IN_FLIGHT', `no write in flight in extent ${idle}`);
    for (const e of touched) this.active.set(e, (this.active.get(e) as number) - 1);
  }

  /** Marks the pending transaction durable. */
  commit(t: AlTransaction): void {
    if (this.pending === undefined || this.pending.sequence !== t.sequence) {
      throw new ActivityLogError('ERR_AL_TRANSACTION', `transaction ${t.sequence} is not the pending one`);
    }
    this.pending = undefined;
  }

  /**
   * The pending transaction could not be persisted (its record may or may not be on disk): the
   * extents it added leave the log again, so no write starts in them on the strength of it, and
   * the next write that needs them tries a new transaction. Call it after endWrite() of the write
   * that began it. What it evicted stays out: their dirty bits were made durable before the record.
   */
  abort(t: AlTransaction): void {
    if (this.pending === undefined || this.pending.sequence !== t.sequence) {
      throw new ActivityLogError('ERR_AL_TRANSACTION', `transaction ${t.sequence} is not the pending one`);
    }
    this.pending = undefined;
    for (const e of t.added) if ((this.active.get(e) ?? 0) === 0) this.active.delete(e);
  }

  /**
   * Empties the log, for a clean stop or after recovery has moved the old extents into the bitmap:
   * a transaction listing no extents, once no write is in flight or being committed.
   */
  shrink(): { readonly kind: 'persist'; readonly transaction: AlTransaction } | { readonly kind: 'wait'; readonly reason: 'busy' | 'committing' } {
    if (this.pending !== undefined) return { kind: 'wait', reason: 'committing' };
    if ([...this.active.values()].some((n) => n > 0)) return { kind: 'wait', reason: 'busy' };
    const evicted = [...this.active.keys()];
    this.active.clear();
    return { kind: 'persist', transaction: this.transaction([], evicted) };
  }

  /** active extents, ascending (including those of a pending transaction) */
  activeExtents(): number[] {
    return [...this.active.keys()].sort((a, b) => a - b);
  }

  inFlight(extent: number): number {
    return this.active.get(extent) ?? 0;
  }

  get pendingTransaction(): AlTransaction | undefined {
    return this.pending;
  }

  get nextSequence(): number {
    return this.sequence;
  }

  /** the extents a byte range touches, ascending */
  extentsOf(offset: number, length: number): number[] {
    const g = this.geometry;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > g.volumeBytes) {
      throw new ActivityLogError('ERR_AL_RANGE', `range ${offset}+${length} is outside the ${g.volumeBytes}-byte volume`);
    }
    if (length === 0) return [];
    const first = Math.floor(offset / g.extentBytes);
    const end = Math.ceil((offset + length) / g.extentBytes);
    if (end - first > g.extentsMax) {
      throw new ActivityLogError('ERR_AL_RANGE', `a write over ${end - first} extents can never fit in ${g.extentsMax} active extents`);
    }
    return Array.from({ length: end - first }, (_, i) => first + i);
  }

  /** moves an extent to the most recently used end, adding `writes` to its count */
  private touch(extent: number, writes: number): void {
    const n = this.active.get(extent) ?? 0;
    this.active.delete(extent);
    this.active.set(extent, n + writes);
  }

  private transaction(added: readonly number[], evicted: readonly number[]): AlTransaction {
    const extents = this.activeExtents();
    const sequence = this.sequence++;
    const t: AlTransaction = {
      sequence,
      slot: sequence % this.geometry.journalSlots,
      record: encodeRecord(this.geometry, sequence, extents),
      extents,
      added,
      evicted,
    };
    this.pending = t;
    return t;
  }
}

