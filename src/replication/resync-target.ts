// The target side of a resync: it walks its own bitmap (every region that may
// differ, merged with the source's at the start) and pulls those regions from
// the source, a bounded window of requests at a time, within a rate limit.
// A region's bit is cleared only once its new data is written, and the bitmap
// reaches the disk only after a data flush, so a crash or a reconnect resumes
// from what is left rather than from zero.
import type { DirtyBitmap } from '../core/dirty-bitmap';
import { SyncHashFlags, SyncMessageType, type SyncMessage } from '../protocol/sync/messages';
import type { Backend } from '../storage/backend';
import type { Logger } from '../util/log';
import { replicationLimits } from './limits';
import { forEachPiece, readFast, sha256, zeroHash } from './read-fast';
import type { PeerSession } from './peer-session';
import type { RangeLocks } from './range-locks';
import type { ResyncStatus } from './status';

/** a resync's figures as it runs (status.ts ResyncStatus without who and how), and its start on the clock */
export type ResyncProgress = Omit<ResyncStatus, 'direction' | 'mode'> & { startedMs: number };

export interface ResyncTargetOptions {
  readonly mode: 'bitmap' | 'full';
  readonly session: PeerSession;
  readonly wireId: Buffer;
  readonly backend: Backend;
  readonly bitmap: DirtyBitmap;
  readonly locks: RangeLocks;
  readonly checksums: boolean;
  /** 0: unlimited */
  readonly rateBytesPerSecond: number;
  readonly log: Logger;
  readonly checkpoint: () => Promise<void>;
  readonly counters: { resyncBytes: number; resyncZeroBytes: number; resyncSkippedBytes: number };
  readonly finished: (p: ResyncProgress) => void;
}

interface Request {
  readonly offset: number;
  readonly length: number;
  covered: number;
  readonly writes: Array<Promise<void>>;
  readonly hashed: boolean;
}

export class ResyncTarget {
  readonly mode: 'bitmap' | 'full';
  private readonly p: ResyncProgress;
  private readonly pending = new Map<bigint, Request>();
  /** regions [first, end) of every outstanding request, so the scan does not ask twice */
  private readonly busy = new Set<number>();
  private cursor = 0;
  private requestedBytes = 0;
  /** bytes of the requests in `pending` */
  private outstandingBytes = 0;
  private stopped = false;
  private done = false;
  private pumping = false;
  private checkpointing = false;
  private lastCheckpoint = Date.now();
  private rateTimer: NodeJS.Timeout | undefined;
  /** data writes to the store under way; more wait in `writeWaiters`, in arrival order */
  private writing = 0;
  private readonly writeWaiters: Array<() => void> = [];
  /** bytes written through the page cache since the last background flush started */
  private cachedBytes = 0;
  private writingBack = false;

  constructor(private readonly o: ResyncTargetOptions) {
    this.mode = o.mode;
    const now = Date.now();
    this.p = {
      totalBytes: o.bitmap.dirtyBytes, doneBytes: 0, rateBytesPerSecond: 0, etaSeconds: null,
      sentBytes: 0, zeroBytes: 0, skippedBytes: 0, startedAt: new Date(now).toISOString(), finishedAt: null, startedMs: now,
    };
  }

  progress(): ResyncProgress {
    const s = (Date.now() - this.p.startedMs) / 1000;
    const rate = s > 0 ? Math.round(this.p.doneBytes / s) : 0;
    const left = this.o.bitmap.dirtyBytes;
    return { ...this.p, rateBytesPerSecond: rate, etaSeconds: rate > 0 ? Math.ceil(left / rate) : null };
  }

  start(): void {
    void this.pump();
  }

  stop(reason: string): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.rateTimer !== undefined) clearTimeout(this.rateTimer);
    this.pending.clear();
    this.outstandingBytes = 0;
    this.busy.clear();
    this.o.log.warn('resync interrupted: it resumes from the regions left', { reason, leftBytes: this.o.bitmap.dirtyBytes });
  }

  tick(): void {
    if (this.stopped || this.done) return;
    if (Date.now() - this.lastCheckpoint >= replicationLimits.checkpointMs && !this.checkpointing) {
      this.checkpointing = true;
      this.o.checkpoint().catch((e: unknown) => this.o.log.error('resync checkpoint failed', { error: String(e) }))
        .finally(() => { this.checkpointing = false; this.lastCheckpoint = Date.now(); });
    }
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.stopped && this.pending.size < replicationLimits.resyncWindow
        && (this.outstandingBytes === 0 || this.outstandingBytes + replicationLimits.resyncChunkBytes <= replicationLimits.resyncWindowBytes)) {
        const wait = this.rateWaitMs();
        if (wait > 0) {
          this.rateTimer ??= setTimeout(() => { this.rateTimer = undefined; void this.pump(); }, wait);
          return;
        }
        const chunk = this.nextChunk();
        if (chunk === undefined) break;
        await this.request(chunk.offset, chunk.length, chunk.first, chunk.end);
      }
      this.maybeFinish();
    } finally {
      this.pumping = false;
    }
  }

  private rateWaitMs(): number {
    const rate = this.o.rateBytesPerSecond;
    if (rate <= 0) return 0;
    const allowed = ((Date.now() - this.p.startedMs) / 1000) * rate;
    return this.requestedBytes <= allowed ? 0 : Math.ceil(((this.requestedBytes - allowed) / rate) * 1000);
  }

  /** The next run of dirty regions nobody asked for yet, at most one chunk long. */
  private nextChunk(): { offset: number; length: number; first: number; end: number } | undefined {
    const b = this.o.bitmap;
    const n = b.regionCount;
    const most = Math.max(1, Math.floor(replicationLimits.resyncChunkBytes / b.regionBytes));
    for (let scanned = 0; scanned < n; scanned++) {
      const r = (this.cursor + scanned) % n;
      if (!b.isRegionDirty(r) || this.busy.has(r)) continue;
      let end = r + 1;
      while (end < n && end - r < most && b.isRegionDirty(end) && !this.busy.has(end)) end++;
      this.cursor = end % n;
      const offset = r * b.regionBytes;
      return { offset, length: Math.min(end * b.regionBytes, b.volumeBytes) - offset, first: r, end };
    }
    return undefined;
  }

  private async request(offset: number, length: number, first: number, end: number): Promise<void> {
    for (let r = first; r < end; r++) this.busy.add(r);
    const session = this.o.session;
    const id = session.newId();
    this.requestedBytes += length;
    this.outstandingBytes += length;
    if (!this.o.checksums) {
      this.pending.set(id, { offset, length, covered: 0, writes: [], hashed: false });
      session.link.send({ type: SyncMessageType.RESYNC_REQUEST, volumeId: this.o.wireId, requestId: id, offset, length });
      return;
    }
    // hash what this copy holds, under the lock so the hashes match a point in the primary's order
    const bs = replicationLimits.hashBlockBytes;
    const release = await this.o.locks.acquire(offset, length);
    let hashes: Buffer[];
    try {
      const buf = Buffer.allocUnsafe(length);
      // blocks in holes (all of them, on a copy that starts empty) are neither read nor hashed
      const holes = await readFast(this.o.backend, buf, offset, false);
      const out: Buffer[] = [];
      forEachPiece(buf, holes, bs, (start, end, known) => out.push(known ? zeroHash(end - start) : sha256(buf.subarray(start, end))));
      hashes = out;
    } finally {
      release();
    }
    if (this.stopped) return;
    this.pending.set(id, { offset, length, covered: 0, writes: [], hashed: true });
    session.link.send({
      type: SyncMessageType.HASH_REQUEST, volumeId: this.o.wireId, requestId: id, offset, length, blockSize: bs,
      flags: SyncHashFlags.SEND_DIFFERING, hashes,
    });
  }

  onData(m: Extract<SyncMessage, { type: 34 | 35 }>): void {
    const req = this.pending.get(m.requestId);
    const length = m.type === SyncMessageType.RESYNC_DATA ? m.data.length : m.length;
    if (req === undefined || m.offset < req.offset || m.offset + length > req.offset + req.length) {
      this.o.session.link.close(`resync data ${m.offset}+${length} answers no outstanding request`);
      return;
    }
    const lock = this.o.locks.acquire(m.offset, length);
    req.writes.push((async () => {
      const release = await lock;
      try {
        if (m.type === SyncMessageType.RESYNC_DATA) {
          await this.writeSlot();
          // a store without writeUncached writes through its cache
          let cached = true;
          try {
            const b = this.o.backend;
            if (b.writeUncached !== undefined) cached = !(await b.writeUncached(m.data, m.offset));
            else await b.write(m.data, m.offset);
          } finally {
            this.writeDone();
          }
          if (cached) this.wroteCached(length);
          // written: the frame's memory may carry a later one (only after a write that settled well)
          this.o.session.link.recycle(m.data);
          this.p.sentBytes += length;
          this.o.counters.resyncBytes += length;
        } else {
          await this.o.backend.zero(m.offset, m.length, { noHole: false, fast: false });
          this.p.zeroBytes += length;
          this.o.counters.resyncZeroBytes += length;
        }
      } finally {
        release();
      }
    })());
    req.covered += length;
    if (!req.hashed && req.covered === req.length) void this.complete(m.requestId, req);
  }

  /**
   * A turn to write. A few large writes at a time keep the disk busy; more would only queue in
   * the thread pool ahead of the checkpoint's flush, and contend for the file's lock in the kernel.
   */
  private async writeSlot(): Promise<void> {
    if (this.writing < replicationLimits.resyncWritesMax) {
      this.writing++;
      return;
    }
    // writeDone() hands its turn over without giving it back
    await new Promise<void>((resolve) => this.writeWaiters.push(resolve));
  }

  private writeDone(): void {
    const next = this.writeWaiters.shift();
    if (next !== undefined) next();
    else this.writing--;
  }

  /**
   * Data written through the page cache waits there for the next flush; scattered regions (an
   * incremental resync) leave tens of megabytes that the flush at the end would write while
   * everything waits. A flush started in the background every so often writes them as they come.
   */
  private wroteCached(bytes: number): void {
    this.cachedBytes += bytes;
    if (this.cachedBytes < replicationLimits.resyncWritebackBytes || this.writingBack || this.stopped) return;
    this.cachedBytes = 0;
    this.writingBack = true;
    // an error here comes back from the checkpoint's or the final flush, which decide what it costs
    this.o.backend.flush().catch((e: unknown) => this.o.log.warn('background flush of resync data failed', { error: String(e) }))
      .finally(() => { this.writingBack = false; });
  }

  /** true if the reply belonged to this resync */
  onHashReply(m: Extract<SyncMessage, { type: 37 }>): boolean {
    const req = this.pending.get(m.requestId);
    if (req === undefined || !req.hashed) return false;
    // every differing block arrived before this reply; what did not arrive matched
    const skipped = Math.max(0, req.length - req.covered);
    this.p.skippedBytes += skipped;
    this.o.counters.resyncSkippedBytes += skipped;
    void this.complete(m.requestId, req);
    return true;
  }

  private async complete(id: bigint, req: Request): Promise<void> {
    try {
      await Promise.all(req.writes);
    } catch (e) {
      this.o.log.error('writing resync data failed', { offset: req.offset, length: req.length, error: String(e) });
      this.o.session.link.close(`writing resync data failed: ${String(e)}`);
      return;
    }
    if (this.stopped || this.pending.get(id) !== req) return;
    this.pending.delete(id);
    this.outstandingBytes -= req.length;
    this.o.bitmap.clear(req.offset, req.length);
    const b = this.o.bitmap;
    for (let r = Math.floor(req.offset / b.regionBytes); r * b.regionBytes < req.offset + req.length; r++) this.busy.delete(r);
    this.p.doneBytes = Math.min(this.p.totalBytes, this.p.doneBytes + req.length);
    // a window full of small requests (scattered regions) refills a batch at a time; large ones, bound by bytes, stay under it
    if (this.pending.size <= replicationLimits.resyncWindow - replicationLimits.resyncRequestBatch) void this.pump();
  }

  private maybeFinish(): void {
    if (this.done || this.stopped || this.pending.size > 0 || this.o.bitmap.dirtyRegions > 0) return;
    this.done = true;
    this.p.doneBytes = this.p.totalBytes;
    this.p.finishedAt = new Date().toISOString();
    const s = (Date.now() - this.p.startedMs) / 1000;
    this.p.rateBytesPerSecond = s > 0 ? Math.round(this.p.totalBytes / s) : this.p.totalBytes;
    this.p.etaSeconds = 0;
    this.o.finished({ ...this.p });
  }
}
