// One volume on one node: its copy, its role, and its half of the replication
// with the peer. The primary's writes go to the local store and to the peer at
// once and complete when both have them; a write the peer did not take is
// marked in the bitmap (under an active activity-log extent, so the mark is on
// disk before the write is acknowledged) after the generations have recorded
// that this copy moved on alone. See docs/mirroring.md.
import { randomBytes } from 'node:crypto';
import {
  decideSync, DEFAULT_SPLIT_BRAIN_POLICY, onBecomePrimaryWhileDisconnected, onConnectedInSync, onPeerLost,
  onResyncDone, onResyncStart, operatorResolve, resolveSplitBrain, resyncAfterDiscard,
  type ReplicaState, type SplitBrainPolicy, type SyncDecision, type SyncSide,
} from '../core/generations';
import { DirtyBitmap } from '../core/dirty-bitmap';
import {
  SyncBitmapFlags, SyncDiskState, SyncGenerationFlags, SyncHashFlags, SyncMessageType, SyncResyncMode, SyncVolumeRefusal,
  syncMessageTypeName, type SyncMessage,
} from '../protocol/sync/messages';
import { NO_GENERATION, type DiskState, type Generations, type VolumeMetadata } from '../storage/metadata';
import type { Backend, StoreExtent, ZeroOptions } from '../storage/backend';
import type { ChangeTracking } from '../storage/change-tracking';
import { writeMetadata, type Volume } from '../storage/volume-store';
import { BufferPool } from '../io/buffer-pool';
import { ByteBudget } from '../util/byte-budget';
import { CodedError } from '../util/coded-error';
import type { Logger } from '../util/log';
import { replicationLimits } from './limits';
import type { PeerResult, PeerSession } from './peer-session';
import { RangeLocks } from './range-locks';
import { forEachPiece, readFast, sha256 } from './read-fast';
import { ResyncTarget, type ResyncProgress } from './resync-target';

import type { CacheMode, Connection, ResyncStatus, Role, VolumeCounters, VolumeState, VolumeStatus } from './status';

export type { CacheMode, Connection, Role, VolumeState } from './status';

export class ReplicaError extends CodedError<string> {
  override readonly name = 'ReplicaError';
}

/**
 * Whether this copy may acknowledge writes its peer did not take (docs/cluster.md): the cluster's
 * fencing policy decides. Without one, a copy goes on alone.
 */
export interface AlonePolicy {
  /** asked once per absence of the peer, before the first such write is acknowledged */
  decide(volume: string): Promise<boolean>;
  /** checked before every such acknowledgement (the witness lease) */
  mayAckAlone(): boolean;
}

export interface ReplicaOptions {
  readonly name: string;
  /** the id both nodes use for this volume on the wire */
  readonly wireId: Buffer;
  readonly nodeName: string;
  readonly peerName: string;
  readonly volume: Volume;
  readonly tracking: ChangeTracking;
  readonly role: Role;
  readonly cacheMode: CacheMode;
  readonly splitBrainPolicy?: SplitBrainPolicy;
  readonly resyncRateBytesPerSecond: number;
  readonly checksumResync: boolean;
  readonly log: Logger;
  readonly alonePolicy?: AlonePolicy;
  /** the cluster decides the role: start SECONDARY whatever the metadata says */
  readonly roleFromCluster?: boolean;
  /** shared by every volume of the node: bytes being applied for the peer */
  readonly applyBudget: ByteBudget;
  /**
   * A deliberately broken build (faults.ackBeforePeer): a client's write is acknowledged once the
   * local copy has it, and reaches the peer ACK_BEFORE_PEER_DELAY_MS later. The torture checker
   * must catch the writes this loses when the primary dies in between (docs/torture.md).
   */
  readonly ackBeforePeer?: boolean;
}

export interface ResyncReport extends ResyncProgress {
  readonly direction: 'to-peer' | 'from-peer';
  readonly mode: 'bitmap' | 'full';
}

export interface VerifyResult {
  checkedBytes: number;
  differingBytes: number;
  differing: Array<{ offset: number; length: number }>;
  resentBytes: number;
}

/**
 * A resync reads the whole volume, or hundreds of scattered regions: fresh memory per request
 * costs page faults and, as external memory, extra collections (a 1 % incremental resync ran
 * two mark-compacts), so read buffers of a region and up are reused.
 */
const resyncBufferPool = (): BufferPool => new BufferPool(replicationLimits.resyncPoolBytesMax);
const genToWire = (g: string): bigint => BigInt(`0x${g}`);
const genFromWire = (v: bigint): string => v.toString(16).padStart(16, '0');
const newGenerationId = (): string => {
  for (;;) {
    const id = randomBytes(8).toString('hex');
    if (id !== NO_GENERATION) return id;
  }
};
const DISK_TO_WIRE: Record<DiskState, number> = {
  Diskless: SyncDiskState.DISKLESS, Inconsistent: SyncDiskState.INCONSISTENT,
  Outdated: SyncDiskState.OUTDATED, UpToDate: SyncDiskState.UP_TO_DATE,
};
const DISK_FROM_WIRE: readonly DiskState[] = ['Diskless', 'Inconsistent', 'Outdated', 'UpToDate'];
const EIO = 5;
/** ackBeforePeer: long enough that a kill -9 of the primary under load reliably lands inside it */
export const ACK_BEFORE_PEER_DELAY_MS = 500;
/**
 * While client writes flow, the span of their acknowledgements is logged at least this often, so a
 * node killed with kill -9 leaves a record of when it accepted writes up to this close to its death.
 */
export const ACK_REPORT_MS = 1000;

interface PeerView {
  readonly side: SyncSide;
  readonly primary: boolean;
  readonly discardMyData: boolean;
  readonly becamePrimaryAt: number;
  readonly size: number;
}

type HandshakePhase = 'idle' | 'sent';

export class Replica {
  readonly name: string;
  readonly wireId: Buffer;
  private meta: VolumeMetadata;
  private roleNow: Role;
  private readonly backend: Backend;
  private readonly tracking: ChangeTracking;
  private readonly log: Logger;
  private readonly locks = new RangeLocks();
  private readonly inFlight = new ByteBudget(replicationLimits.inFlightBytesMax);
  private session: PeerSession | undefined;
  private connection: Connection = 'connecting';
  /** the peer takes this node's writes (it is SECONDARY and in sync or a resync target) */
  private mirroring = false;
  private peerView: PeerView | undefined;
  private handshake: HandshakePhase = 'idle';
  /** control messages (handshake, resync start and end) run one at a time, in order */
  private control: Promise<void> = Promise.resolve();
  /** new client I/O waits while this is set (handshake, role change) */
  private gate: Promise<void> | undefined;
  private openGateNow: (() => void) | undefined;
  private opsActive = 0;
  private opsIdle: Array<() => void> = [];
  /** since the last meeting, this copy went on alone and recorded it in its generations */
  private trackingAlone = false;
  private tracked: Promise<void> | undefined;
  /** regions written in write-back mode that the peer has in its cache only; [0] is the newest epoch */
  private unflushed: DirtyBitmap[];
  private resyncTarget: ResyncTarget | undefined;
  private resyncSource: { progress: ResyncProgress; mode: 'bitmap' | 'full' } | undefined;
  private last: ResyncReport | undefined;
  private splitBrain: { reason: string; since: string } | undefined;
  private error: string | undefined;
  private discardMyData = false;
  private incomingBitmap: Buffer | undefined;
  /** serveResync's read buffers of whole chunks, kept for reuse while this node is a resync source */
  private resyncBuffers = resyncBufferPool();
  private readonly verifyPending = new Map<bigint, (m: Extract<SyncMessage, { type: 37 }>) => void>();
  private metaDirty = false;
  /** why client writes fail now (the cluster's decision), if they do */
  private suspended: string | undefined;
  /** the policy let this copy go on alone since the last meeting */
  private aloneAllowed = false;
  private aloneDecision: { readonly meeting: number; readonly answer: Promise<boolean> } | undefined;
  /** meetings with the peer so far: an absence of the peer lasts from one to the next */
  private meetings = 0;
  /** writes waiting for room in the activity log or for its pending commit */
  private logWaiters: Array<() => void> = [];
  private metaSavedAt = 0;
  /** met the peer as a sync target; its RESYNC_START has not come yet */
  private awaitingResync = false;
  private closed = false;
  /** the last meeting was refused because both sides were (or claimed) primary: a demotion here meets again */
  private roleConflict = false;
  /** client writes acknowledged since the last 'accepted client writes' line: first and last ack (ms since the epoch) */
  private ackRun: { from: number; until: number; writes: number } | undefined;
  readonly counters: VolumeCounters = { writes: 0, writeBytes: 0, peerWriteBytes: 0, peerZeroBytes: 0, resyncBytes: 0, resyncZeroBytes: 0, resyncSkippedBytes: 0 };

  constructor(private readonly o: ReplicaOptions) {
    this.name = o.name;
    this.wireId = o.wireId;
    this.meta = o.volume.meta;
    this.backend = o.volume.backend;
    this.tracking = o.tracking;
    this.log = o.log;
    // the role last set by an operator outlives restarts; the configured one is for the first start.
    // Under a cluster, every copy starts SECONDARY and the cluster promotes the owner's
    this.roleNow = o.roleFromCluster === true ? 'SECONDARY' : this.meta.role ?? o.role;
    this.unflushed = [this.newBitmap()];
    if (this.meta.primaryOpen === true) {
      // it was primary when it stopped without closing: writes in flight then may be on one copy only
      this.saveMeta({ ...this.meta, primaryOpen: false, crashedPrimary: true });
      this.log.warn('crashed while primary: its activity-log extents will be resynced from this copy', { volume: this.name });
    }
    if (this.roleNow === 'PRIMARY') {
      if (this.meta.diskState !== 'UpToDate') {
        throw new ReplicaError('ERR_NOT_UP_TO_DATE', `volume ${this.name} is ${this.meta.diskState} here: it cannot start as primary`);
      }
      this.saveMeta({ ...this.meta, role: 'PRIMARY', primaryOpen: true, becamePrimaryAt: this.meta.becamePrimaryAt ?? Date.now() });
    }
    if (o.ackBeforePeer === true) {
      this.log.warn(`BROKEN ON PURPOSE (faults.ackBeforePeer): client writes are acknowledged before the peer has them and reach it ${ACK_BEFORE_PEER_DELAY_MS} ms later; ` +
        'a primary that dies loses acknowledged writes. Never run this outside the torture test.', { volume: this.name });
    }
  }

  get role(): Role { return this.roleNow; }
  /** mirroring with the peer now */
  get isConnected(): boolean { return this.connection === 'connected'; }
  /** client writes are suspended by the cluster */
  get isSuspended(): boolean { return this.suspended !== undefined; }
  /** no meeting with the peer under way: connected, standalone, or no link at all */
  get settled(): boolean { return this.session === undefined || this.connection !== 'connecting'; }
  /** connected, no resync running or owed, both copies UpToDate */
  get inSync(): boolean {
    return this.connection === 'connected' && this.resyncTarget === undefined && this.resyncSource === undefined && !this.awaitingResync &&
      this.splitBrain === undefined && this.meta.diskState === 'UpToDate' && this.peerView?.side.diskState === 'UpToDate';
  }
  get size(): number { return this.backend.size; }
  get diskState(): DiskState { return this.meta.diskState; }
  get generations(): Generations { return this.meta.generations; }

  get state(): VolumeState {
    if (this.splitBrain !== undefined) return 'SPLIT-BRAIN';
    if (this.resyncTarget !== undefined || this.awaitingResync || this.meta.diskState === 'Inconsistent') return 'SYNCING';
    // PRIM means the peer has every write: not while it is still being brought up to date
    if (this.roleNow === 'PRIMARY') return this.mirroring && this.resyncSource === undefined ? 'PRIM' : 'ALONE';
    return this.connection === 'connected' ? 'SECOND' : 'WAIT';
  }

  status(): VolumeStatus {
    const resync: ResyncReport | null = this.resyncTarget !== undefined
      ? { direction: 'from-peer', mode: this.resyncTarget.mode, ...this.resyncTarget.progress() }
      : this.resyncSource !== undefined ? { direction: 'to-peer', mode: this.resyncSource.mode, ...this.resyncSource.progress } : null;
    return {
      name: this.name,
      role: this.roleNow,
      state: this.state,
      diskState: this.meta.diskState,
      peerDiskState: this.peerView?.side.diskState ?? null,
      connection: this.connection,
      cacheMode: this.o.cacheMode,
      size: this.size,
      outOfSyncBytes: this.tracking.bitmap.dirtyBytes,
      generations: this.meta.generations,
      resync: resync === null ? null : withoutClock(resync),
      lastResync: this.last === undefined ? null : withoutClock(this.last),
      splitBrain: this.splitBrain ?? null,
      suspended: this.suspended ?? null,
      error: this.error ?? null,
      counters: { ...this.counters },
    };
  }

  // ------------------------------------------------------------------ client I/O (primary)

  /** The store clients reach through the export: reads local, writes mirrored. */
  backendForExport(): Backend {
    const b = this.backend;
    return {
      size: b.size,
      readOnly: false,
      canTrim: b.canTrim,
      canZero: b.canZero,
      canFastZero: false,
      canExtents: b.canExtents,
      wholeWrites: true,
      read: async (buf, offset) => { this.checkPrimary(); await b.read(buf, offset); },
      write: (buf, offset) => this.mirroredOp(offset, buf.length, 'write', buf),
      flush: () => this.flush(),
      trim: (offset, length) => this.mirroredOp(offset, length, 'trim'),
      zero: (offset, length, zo: ZeroOptions) => this.mirroredOp(offset, length, 'zero', undefined, zo),
      cache: (offset, length) => b.cache(offset, length),
      extents: (offset, length, max): Promise<StoreExtent[]> => b.extents(offset, length, max),
      close: async () => undefined,
    };
  }

  private checkNotSuspended(): void {
    if (this.suspended !== undefined) throw new ReplicaError('EIO', `volume ${this.name}: writes are suspended: ${this.suspended}`);
  }

  private checkPrimary(): void {
    if (this.roleNow !== 'PRIMARY' || this.closed) {
      throw new ReplicaError('EIO', `volume ${this.name} is not primary on this node`);
    }
  }

  private async admit(bytes: number): Promise<void> {
    while (this.gate !== undefined) await this.gate;
    this.checkPrimary();
    this.checkNotSuspended();
    this.opsActive++;
    while (!this.inFlight.tryTake(bytes)) await new Promise<void>((r) => this.inFlight.waitForRelease(r));
  }

  private done(bytes: number): void {
    this.inFlight.release(bytes);
    if (--this.opsActive === 0) for (const f of this.opsIdle.splice(0)) f();
  }

  /** Stops admitting client I/O and waits for what is in flight; returns the function that reopens. */
  private async closeGate(): Promise<() => void> {
    while (this.gate !== undefined) await this.gate;
    this.gate = new Promise<void>((r) => { this.openGateNow = r; });
    if (this.opsActive > 0) await new Promise<void>((r) => this.opsIdle.push(r));
    return () => {
      const open = this.openGateNow;
      this.gate = undefined;
      this.openGateNow = undefined;
      open?.();
    };
  }

  private async mirroredOp(offset: number, length: number, kind: 'write' | 'trim' | 'zero', data?: Buffer, zo?: ZeroOptions): Promise<void> {
    const charge = kind === 'write' ? length : 0;
    await this.admit(charge);
    try {
      const release = await this.locks.acquire(offset, length);
      try {
        await this.activityLogBegin(offset, length);
        try {
          await this.carryOut(offset, length, kind, data, zo);
          this.noteAck();
        } finally {
          this.tracking.log.endWrite(offset, length);
          if (this.logWaiters.length > 0) this.wakeLogWaiters();
        }
      } finally {
        release();
      }
    } finally {
      this.done(charge);
    }
  }

  private async activityLogBegin(offset: number, length: number): Promise<void> {
    const log = this.tracking.log;
    for (;;) {
      const r = log.beginWrite(offset, length);
      if (r.kind === 'ready') return;
      if (r.kind === 'persist') {
        try {
          // persists the bitmap pages, then the record, then commits it to the log
          await this.tracking.persistTransaction(r.transaction);
        } catch (e) {
          log.endWrite(offset, length);
          log.abort(r.transaction);
          this.log.error('could not persist an activity-log transaction: the write fails', { volume: this.name, offset, length, error: String(e) });
          throw e;
        } finally {
          this.wakeLogWaiters();
        }
        return;
      }
      // another transaction is being persisted, or every extent is busy: wait for a commit or an end
      await new Promise<void>((res) => { this.logWaiters.push(res); setTimeout(res, 1); });
    }
  }

  private wakeLogWaiters(): void {
    for (const f of this.logWaiters.splice(0)) f();
  }

  private async carryOut(offset: number, length: number, kind: 'write' | 'trim' | 'zero', data?: Buffer, zo?: ZeroOptions): Promise<void> {
    const writeThrough = this.o.cacheMode === 'write-through';
    const session = this.mirroring ? this.session : undefined;
    let peer: Promise<PeerResult> | undefined;
    if (session !== undefined) {
      const id = session.newId();
      const flags = writeThrough ? 1 : 0;
      // an all-zero block crosses the link as a command; NO_HOLE keeps the peer's allocation like ours
      const zeroData = kind === 'write' && length >= replicationLimits.hashBlockBytes && isZero(data as Buffer);
      if (zeroData) this.counters.peerZeroBytes += length;
      const m: SyncMessage = zeroData
        ? { type: SyncMessageType.ZERO, volumeId: this.wireId, requestId: id, offset, length, flags: flags | 2 }
        : kind === 'write'
        ? { type: SyncMessageType.WRITE, volumeId: this.wireId, requestId: id, offset, flags, data: data as Buffer }
        : kind === 'zero'
          ? { type: SyncMessageType.ZERO, volumeId: this.wireId, requestId: id, offset, length, flags: flags | (zo?.noHole === true ? 2 : 0) }
          : { type: SyncMessageType.TRIM, volumeId: this.wireId, requestId: id, offset, length, flags };
      // remembered from the moment it is sent: if the link fails before the peer's next FLUSH,
      // even an acknowledged write may exist only in the peer's cache
      if (!writeThrough) (this.unflushed[0] as DirtyBitmap).set(offset, length);
      if (this.o.ackBeforePeer === true) {
        await this.carryOutAckBeforePeer(session, id, m, offset, length, kind, data, zo);
        return;
      }
      peer = session.request(id, m, `${kind} ${offset}+${length}`);
    }
    let localError: unknown;
    try {
      // let the link send first: small local writes are synchronous and would hold it back
      if (peer !== undefined) await new Promise<void>((r) => process.nextTick(r));
      if (kind === 'write') await this.backend.write(data as Buffer, offset);
      else if (kind === 'zero') await this.backend.zero(offset, length, zo ?? { noHole: false, fast: false });
      else await this.backend.trim(offset, length);
      if (writeThrough) await this.backend.flush();
    } catch (e) {
      localError = e;
    }
    const r = peer === undefined ? 'lost' : await peer;
    if (r === 0) {
      this.counters.peerWriteBytes += length;
    } else {
      if (r !== 'lost') {
        this.log.error('the peer failed a write: its copy is marked out of sync there', { volume: this.name, offset, length, errno: r });
        session?.link.close(`the peer failed a write with errno ${r}`);
      }
      await this.recordMissed(offset, length);
    }
    if (localError !== undefined) throw localError;
    this.counters.writes++;
    this.counters.writeBytes += length;
    if (r !== 0) {
      await this.checkAlone();
      this.countAckedAlone(length);
    }
  }

  /** The broken write path of faults.ackBeforePeer: local write, acknowledgement, and the peer only later. */
  private async carryOutAckBeforePeer(
    session: PeerSession, id: bigint, m: SyncMessage, offset: number, length: number, kind: 'write' | 'trim' | 'zero', data?: Buffer, zo?: ZeroOptions,
  ): Promise<void> {
    if (kind === 'write') await this.backend.write(data as Buffer, offset);
    else if (kind === 'zero') await this.backend.zero(offset, length, zo ?? { noHole: false, fast: false });
    else await this.backend.trim(offset, length);
    if (this.o.cacheMode === 'write-through') await this.backend.flush();
    // the NBD connection reuses its buffer once the write is acknowledged
    const late: SyncMessage = m.type === SyncMessageType.WRITE ? { ...m, data: Buffer.from(m.data) } : m;
    setTimeout(() => {
      void session.request(id, late, `${kind} ${offset}+${length} (sent late)`).then(async (r) => {
        if (r === 0) { this.counters.peerWriteBytes += length; return; }
        await this.recordMissed(offset, length);
        this.countAckedAlone(length);
      }).catch((e: unknown) => this.log.error('a late peer write could not be recorded as missed', { volume: this.name, offset, length, error: String(e) }));
    }, ACK_BEFORE_PEER_DELAY_MS);
    this.counters.writes++;
    this.counters.writeBytes += length;
  }

  private noteAck(): void {
    const now = Date.now();
    const r = this.ackRun;
    if (r === undefined) this.ackRun = { from: now, until: now, writes: 1 };
    else { r.until = now; r.writes++; }
  }

  /**
   * One line per span of acknowledged client writes: with the peer's, it shows whether two nodes ever
   * accepted writes for this volume at the same time (the torture checker reads it).
   */
  private reportAcks(): void {
    const r = this.ackRun;
    if (r === undefined) return;
    this.ackRun = undefined;
    this.log.info('accepted client writes', { volume: this.name, from: new Date(r.from).toISOString(), until: new Date(r.until).toISOString(), writes: r.writes });
  }

  /** Throws EIO unless the policy lets this copy acknowledge a write the peer lacks. */
  private async checkAlone(): Promise<void> {
    const p = this.o.alonePolicy;
    if (p === undefined) return;
    if (!this.aloneAllowed) {
      // a meeting while the decision was pending starts a new absence: its answer must not carry over
      const meeting = this.meetings;
      if (this.aloneDecision?.meeting !== meeting) {
        const d = { meeting, answer: p.decide(this.name) };
        this.aloneDecision = d;
        const clear = (): void => { if (this.aloneDecision === d) this.aloneDecision = undefined; };
        d.answer.then(clear, clear);
      }
      if (!(await this.aloneDecision.answer)) {
        throw new ReplicaError('EIO', `volume ${this.name}: the peer lacks this write and the fencing policy forbids going on alone`);
      }
      if (meeting === this.meetings) this.aloneAllowed = true;
    }
    if (!p.mayAckAlone()) throw new ReplicaError('EIO', `volume ${this.name}: the peer lacks this write and this node's lease has run out`);
  }

  /** Client writes and flushes fail with EIO until resume(): the cluster no longer lets this copy accept them. */
  suspend(reason: string): void {
    if (this.suspended === reason) return;
    this.reportAcks();
    this.suspended = reason;
    this.log.warn('writes suspended', { volume: this.name, reason });
  }

  resume(): void {
    if (this.suspended === undefined) return;
    this.suspended = undefined;
    this.log.info('writes resumed', { volume: this.name });
  }

  /**
   * The peer lacks [offset, offset+length): mark it, and be sure the generations say this copy moved on.
   * The local write happened whether or not the fencing policy then lets it be acknowledged, so this
   * copy's data differs from the peer's either way: the bitmap and a new current say so. Whether it
   * counts as written apart is countAckedAlone's, once the acknowledgement is allowed.
   */
  private async recordMissed(offset: number, length: number): Promise<void> {
    this.tracking.bitmap.set(offset, length);
    await this.ensureTrackingAlone('a write the peer did not take');
  }

  /**
   * Bytes a client is about to be told are written (or durable) while the peer may lack them: what
   * decideSync weighs as this copy having written apart. A write the fencing policy refused is not
   * counted: its client never saw it succeed, so a resync from the peer may overwrite it; counted, an
   * old primary fenced by a takeover would meet the new one as a split brain. The first count since
   * the last meeting is on disk before the acknowledgement, so a crash right after it still says so.
   */
  private countAckedAlone(bytes: number): void {
    if (bytes === 0) return;
    const first = (this.meta.dirtyBytes ?? 0) === 0;
    this.meta = { ...this.meta, dirtyBytes: (this.meta.dirtyBytes ?? 0) + bytes };
    if (first) this.saveMeta(this.meta);
    else this.metaDirty = true;
  }

  private ensureTrackingAlone(why: string): Promise<void> {
    if (this.trackingAlone) return Promise.resolve();
    this.tracked ??= (async () => {
      const t = onPeerLost({ generations: this.meta.generations, diskState: this.meta.diskState }, newGenerationId());
      if (!t.ok) throw new ReplicaError('EIO', `volume ${this.name} cannot go on without its peer: ${t.reason}`);
      this.saveMeta({ ...this.meta, generations: t.state.generations, diskState: t.state.diskState }, `going on without the peer: ${why}`);
      this.trackingAlone = true;
      this.log.warn('writing without the peer: changes are tracked for resync', { volume: this.name, current: t.state.generations.current });
    })().finally(() => { this.tracked = undefined; });
    return this.tracked;
  }

  async flush(): Promise<void> {
    this.checkPrimary();
    this.checkNotSuspended();
    await this.flushBoth(true);
  }

  /** Makes every write so far durable here and, if connected, on the peer; checkAlone: no acknowledgement is owed (a demotion). */
  private async flushBoth(checkAlone: boolean): Promise<void> {
    const session = this.mirroring ? this.session : undefined;
    const epoch = this.unflushed[0] as DirtyBitmap;
    this.unflushed.unshift(this.newBitmap());
    let peer: Promise<PeerResult> | undefined;
    if (session !== undefined) {
      const id = session.newId();
      peer = session.request(id, { type: SyncMessageType.FLUSH, requestId: id }, 'flush');
    }
    await this.backend.flush();
    const r = peer === undefined ? 'lost' : await peer;
    const i = this.unflushed.indexOf(epoch);
    if (i >= 0) this.unflushed.splice(i, 1);
    if (r !== 0 && epoch.dirtyRegions > 0) {
      // those writes may have been in the peer's cache only
      this.tracking.bitmap.union(epoch);
      await this.ensureTrackingAlone('a flush the peer did not take');
      await this.tracking.persistBitmap();
      if (checkAlone) {
        await this.checkAlone();
        // the client is told these writes are durable, and only this copy surely holds them
        this.countAckedAlone(epoch.dirtyBytes);
      }
    }
  }

  private newBitmap(): DirtyBitmap {
    return new DirtyBitmap({ volumeBytes: this.size, regionBytes: this.tracking.bitmap.regionBytes });
  }

  // ------------------------------------------------------------------ peer attach / detach

  attach(session: PeerSession): void {
    this.session = session;
    this.connection = 'connecting';
    this.handshake = 'idle';
    this.runControl(async () => { await this.startHandshake(); });
  }

  detach(reason: string): void {
    if (this.session === undefined) return;
    this.session = undefined;
    const wasMirroring = this.mirroring;
    this.mirroring = false;
    this.peerView = undefined;
    this.handshake = 'idle';
    if (this.connection !== 'standalone') this.connection = 'connecting';
    this.resyncTarget?.stop(reason);
    this.resyncTarget = undefined;
    if (this.resyncSource !== undefined) {
      this.last = { direction: 'to-peer', mode: this.resyncSource.mode, ...this.resyncSource.progress };
      this.resyncSource = undefined;
      this.resyncBuffers = resyncBufferPool();
    }
    this.incomingBitmap = undefined;
    this.awaitingResync = false;
    this.reopenGateIfWaiting();
    for (const f of this.verifyPending.values()) f({ type: SyncMessageType.HASH_REPLY, volumeId: this.wireId, requestId: 0n, offset: 0, blocks: 0, bitmap: Buffer.alloc(0) });
    this.verifyPending.clear();
    if (wasMirroring && this.roleNow === 'PRIMARY') {
      this.log.warn('peer lost: going on ALONE', { volume: this.name, reason });
      // writes the peer held in its cache only may be lost with it
      const pending = this.unflushed.splice(0, this.unflushed.length, this.newBitmap());
      const any = pending.some((b) => b.dirtyRegions > 0);
      for (const b of pending) this.tracking.bitmap.union(b);
      if (any) {
        void this.ensureTrackingAlone('the peer was lost with writes in its cache').then(() => this.tracking.persistBitmap()).catch((e: unknown) => {
          this.log.error('could not record the writes the peer may have lost', { volume: this.name, error: String(e) });
        });
      }
    }
  }

  /** The operator cuts (or restores) this volume's replication. */
  async disconnect(): Promise<void> {
    const s = this.session;
    if (s !== undefined) {
      this.send({ type: SyncMessageType.VOLUME_REFUSED, volumeId: this.wireId, code: SyncVolumeRefusal.BUSY, reason: 'disconnected by the operator' });
    }
    this.detach('disconnected by the operator');
    this.session = s;
    this.connection = 'standalone';
    this.error = 'disconnected by the operator';
  }

  connect(): void {
    this.error = undefined;
    this.splitBrain = undefined;
    if (this.session === undefined || !this.session.open) {
      this.session = undefined;
      this.connection = 'connecting';
      return;
    }
    const s = this.session;
    this.session = undefined;
    this.attach(s);
  }

  /** After a split brain: this side's changes are to be thrown away at the next meeting. */
  resolveDiscardLocal(): void {
    if (this.roleNow === 'PRIMARY') {
      throw new ReplicaError('ERR_PRIMARY', `volume ${this.name} is primary here: demote it before discarding its data`);
    }
    this.discardMyData = true;
    this.log.warn('operator: this copy\'s changes will be discarded at the next meeting', { volume: this.name });
    this.connect();
  }

  private send(m: SyncMessage): void {
    this.session?.link.send(m);
  }

  private runControl(f: () => Promise<void>): void {
    this.control = this.control.then(f).catch((e: unknown) => {
      this.log.error('replication step failed', { volume: this.name, error: e instanceof Error ? e.message : String(e) });
      this.error = e instanceof Error ? e.message : String(e);
      this.session?.link.close(`volume ${this.name}: ${this.error}`);
    });
  }

  private myGenerations(): SyncMessage {
    const g = this.meta.generations;
    let flags = 0;
    if (this.roleNow === 'PRIMARY') flags |= SyncGenerationFlags.PRIMARY;
    if (this.meta.crashedPrimary === true) flags |= SyncGenerationFlags.CRASHED_PRIMARY;
    if (this.discardMyData) flags |= SyncGenerationFlags.DISCARD_MY_DATA;
    return {
      type: SyncMessageType.GENERATIONS, volumeId: this.wireId, size: this.size,
      current: genToWire(g.current), bitmap: genToWire(g.bitmap), history0: genToWire(g.history[0]), history1: genToWire(g.history[1]),
      diskState: DISK_TO_WIRE[this.meta.diskState], flags,
      dirtyBytes: this.meta.dirtyBytes ?? 0, becamePrimaryAt: this.meta.becamePrimaryAt ?? 0,
    };
  }

  /** Sends this side's GENERATIONS; false if the link this meeting began on is gone meanwhile. */
  private async startHandshake(): Promise<boolean> {
    const session = this.session;
    if (session === undefined) return false;
    if (this.handshake === 'sent') return true;
    if (this.roleNow === 'PRIMARY') {
      // no write may slip between the generations we send and the decision
      const reopen = await this.closeGate();
      if (this.session !== session) {
        reopen();
        return false;
      }
      this.reopenAfterHandshake = reopen;
      setTimeout(() => {
        if (this.reopenAfterHandshake !== reopen) return;
        // the peer did not answer: meet again on a new link rather than guess what it decided
        session?.link.close(`peer did not answer the meeting for ${this.name} within ${this.handshakeTimeoutMs} ms`);
        this.reopenGateIfWaiting();
      }, this.handshakeTimeoutMs).unref();
    }
    this.handshake = 'sent';
    this.send(this.myGenerations());
    return true;
  }

  private reopenAfterHandshake: (() => void) | undefined;
  handshakeTimeoutMs = 3000;

  private reopenGateIfWaiting(): void {
    const f = this.reopenAfterHandshake;
    this.reopenAfterHandshake = undefined;
    f?.();
  }

  // ------------------------------------------------------------------ messages from the peer

  /** Every message for this volume, in arrival order. */
  receive(m: SyncMessage): void {
    switch (m.type) {
      case SyncMessageType.GENERATIONS:
        this.runControl(() => this.onPeerGenerations(m));
        return;
      case SyncMessageType.RESYNC_START:
        this.runControl(() => this.onResyncStart(m.syncId, m.mode));
        return;
      case SyncMessageType.BITMAP:
        this.runControl(() => this.onBitmap(m));
        return;
      case SyncMessageType.RESYNC_DONE:
        this.runControl(() => this.onResyncDone());
        return;
      case SyncMessageType.VOLUME_REFUSED:
        if (m.code === SyncVolumeRefusal.UNKNOWN_VOLUME) {
          // a volume just added to the cluster configuration: the peer is still creating its copy,
          // and its GENERATIONS will start the meeting when it has
          this.log.info('the peer has no copy of this volume yet: waiting for it', { volume: this.name });
          this.runControl(async () => this.stopMirroring('connecting'));
          return;
        }
        this.log.warn('the peer refused this volume', { volume: this.name, code: m.code, reason: m.reason });
        if (m.code === SyncVolumeRefusal.BOTH_PRIMARY || m.code === SyncVolumeRefusal.PEER_NEWER) this.roleConflict = true;
        this.error = `peer: ${m.reason}`;
        this.runControl(async () => this.stopMirroring('standalone'));
        return;
      case SyncMessageType.WRITE:
      case SyncMessageType.ZERO:
      case SyncMessageType.TRIM:
        this.applyPeerWrite(m);
        return;
      case SyncMessageType.RESYNC_DATA:
      case SyncMessageType.RESYNC_ZERO:
        if (this.resyncTarget === undefined) {
          this.session?.link.close(`${syncMessageTypeName(m.type)} for ${this.name} while no resync runs`);
          return;
        }
        this.resyncTarget.onData(m);
        return;
      case SyncMessageType.RESYNC_REQUEST:
        void this.serveResync(m.requestId, m.offset, m.length, undefined);
        return;
      case SyncMessageType.HASH_REQUEST:
        if ((m.flags & SyncHashFlags.SEND_DIFFERING) !== 0) void this.serveResync(m.requestId, m.offset, m.length, m);
        else void this.answerVerify(m);
        return;
      case SyncMessageType.HASH_REPLY: {
        if (this.resyncTarget?.onHashReply(m) === true) return;
        const f = this.verifyPending.get(m.requestId);
        if (f !== undefined) { this.verifyPending.delete(m.requestId); f(m); }
        return;
      }
      default:
        throw new ReplicaError('ERR_SYNC_STATE', `${syncMessageTypeName(m.type)} is not a volume message`);
    }
  }

  private peerSide(m: Extract<SyncMessage, { type: 32 }>): PeerView {
    const diskState = DISK_FROM_WIRE[m.diskState] ?? 'Diskless';
    return {
      side: {
        generations: { current: genFromWire(m.current), bitmap: genFromWire(m.bitmap), history: [genFromWire(m.history0), genFromWire(m.history1)] },
        diskState, dirtyBytes: m.dirtyBytes, crashedPrimary: (m.flags & SyncGenerationFlags.CRASHED_PRIMARY) !== 0,
      },
      primary: (m.flags & SyncGenerationFlags.PRIMARY) !== 0,
      discardMyData: (m.flags & SyncGenerationFlags.DISCARD_MY_DATA) !== 0,
      becamePrimaryAt: m.becamePrimaryAt,
      size: m.size,
    };
  }

  private localSide(): SyncSide {
    return {
      generations: this.meta.generations, diskState: this.meta.diskState,
      dirtyBytes: this.meta.dirtyBytes ?? 0, crashedPrimary: this.meta.crashedPrimary === true,
    };
  }

  private refuse(code: number, reason: string, splitBrain = false): void {
    this.log.error(splitBrain ? 'split brain' : 'replication refused', { volume: this.name, peer: this.o.peerName, reason });
    if (splitBrain) this.splitBrain = { reason, since: new Date().toISOString() };
    else this.error = reason;
    this.send({ type: SyncMessageType.VOLUME_REFUSED, volumeId: this.wireId, code, reason });
    this.stopMirroring('standalone');
  }

  /**
   * A meeting refused for the roles, not the data: the old primary came back (paused, cut off) before
   * the cluster demoted it. Not a split brain: whichever side is demoted meets again at once, and the
   * generations then decide as always (a real split brain is still found there).
   */
  private refuseRoles(code: number, reason: string): void {
    this.roleConflict = true;
    this.refuse(code, reason);
  }

  private stopMirroring(connection: Connection): void {
    this.mirroring = false;
    this.connection = connection;
    this.handshake = 'idle';
    this.reopenGateIfWaiting();
  }

  private async onPeerGenerations(m: Extract<SyncMessage, { type: 32 }>): Promise<void> {
    if (this.session === undefined) return;
    if (this.handshake !== 'sent') {
      // the peer started a new meeting (a reconnect, or an operator's resolve): answer it
      this.error = undefined;
      this.splitBrain = undefined;
      if (!await this.startHandshake()) return;
    }
    this.handshake = 'idle';
    const peer = this.peerSide(m);
    this.peerView = peer;
    if (peer.size !== this.size) {
      this.refuse(SyncVolumeRefusal.SIZE, `volume ${this.name} is ${this.size} bytes here and ${peer.size} bytes on ${this.o.peerName}: sizes must match`);
      return;
    }
    if (peer.primary && this.roleNow === 'PRIMARY') {
      // both changed the data: a split brain, said at once; otherwise only the roles are in conflict
      const kind = decideSync(this.localSide(), peer.side).kind;
      const reason = `volume ${this.name} is primary on both ${this.o.nodeName} and ${this.o.peerName}: demote one`;
      if (kind === 'split-brain' || kind === 'unrelated') this.refuse(SyncVolumeRefusal.SPLIT_BRAIN, `${reason} (both changed the data)`, true);
      else this.refuseRoles(SyncVolumeRefusal.BOTH_PRIMARY, reason);
      return;
    }
    let decision: SyncDecision = decideSync(this.localSide(), peer.side);
    const local = this.localSide();
    this.log.info('peer met', {
      volume: this.name, decision: decision.kind, reason: decision.reason,
      local: formatGenerations(local.generations, local.diskState), localDirtyBytes: local.dirtyBytes,
      peer: formatGenerations(peer.side.generations, peer.side.diskState), peerDirtyBytes: peer.side.dirtyBytes,
    });
    if (decision.kind === 'split-brain' || decision.kind === 'unrelated') {
      const resolution = this.discardMyData !== peer.discardMyData
        ? operatorResolve(this.discardMyData ? 'local' : 'peer')
        : decision.kind === 'split-brain'
          ? resolveSplitBrain(this.o.splitBrainPolicy ?? DEFAULT_SPLIT_BRAIN_POLICY, {
            local: { node: this.o.nodeName, becamePrimaryAt: this.meta.becamePrimaryAt || undefined, dirtyBytes: this.meta.dirtyBytes ?? 0, primaryNow: this.roleNow === 'PRIMARY' },
            peer: { node: this.o.peerName, becamePrimaryAt: peer.becamePrimaryAt || undefined, dirtyBytes: peer.side.dirtyBytes, primaryNow: peer.primary },
          })
          : { action: 'disconnect' as const, reason: decision.reason };
      if (resolution.action === 'disconnect') {
        this.refuse(decision.kind === 'split-brain' ? SyncVolumeRefusal.SPLIT_BRAIN : SyncVolumeRefusal.UNRELATED,
          `${decision.reason}; ${resolution.reason}`, decision.kind === 'split-brain');
        return;
      }
      this.log.warn('split brain resolved', { volume: this.name, reason: resolution.reason });
      decision = resyncAfterDiscard(decision, resolution.loser);
    }
    this.splitBrain = undefined;
    this.error = undefined;
    if (decision.kind === 'in-sync') {
      const s = onConnectedInSync({ generations: this.meta.generations, diskState: this.meta.diskState }, { generations: peer.side.generations, diskState: peer.side.diskState });
      this.metMeta(s, 'met the peer in sync');
      this.connected();
      return;
    }
    if (decision.kind !== 'source') return;
    if (decision.direction === 'peer-to-local') {
      if (this.roleNow === 'PRIMARY') {
        this.refuseRoles(SyncVolumeRefusal.PEER_NEWER, `${this.o.peerName} holds newer data for ${this.name} (${decision.reason}): demote this node to resync from it`);
        return;
      }
      // wait for the peer's RESYNC_START
      this.connection = 'connected';
      this.awaitingResync = true;
      return;
    }
    if (peer.primary) {
      this.refuseRoles(SyncVolumeRefusal.PEER_NEWER, `this node holds newer data for ${this.name} but ${this.o.peerName} is primary: demote it to resync`);
      return;
    }
    await this.startAsSource(decision.mode, peer);
  }

  private metMeta(s: ReplicaState, why: string, extra: Partial<VolumeMetadata> = {}): void {
    this.trackingAlone = false;
    this.aloneAllowed = false;
    this.meetings++;
    this.discardMyData = false;
    this.saveMeta({ ...this.meta, generations: s.generations, diskState: s.diskState, dirtyBytes: 0, crashedPrimary: false, ...extra }, why);
  }

  private connected(): void {
    this.connection = 'connected';
    this.roleConflict = false;
    this.mirroring = this.roleNow === 'PRIMARY';
    this.reopenGateIfWaiting();
  }

  private async startAsSource(mode: 'bitmap' | 'full', peer: PeerView): Promise<void> {
    const syncId = newGenerationId();
    const r = onResyncStart({ generations: this.meta.generations, diskState: this.meta.diskState },
      { generations: peer.side.generations, diskState: peer.side.diskState }, syncId);
    this.metMeta(r.source, 'resync start as the source', { dirtyBytes: 0 });
    this.send({ type: SyncMessageType.RESYNC_START, volumeId: this.wireId, syncId: genToWire(syncId), mode: mode === 'full' ? SyncResyncMode.FULL : SyncResyncMode.BITMAP });
    const total = mode === 'full' ? this.size : this.tracking.bitmap.dirtyBytes;
    if (mode === 'bitmap') {
      const bits = this.tracking.bitmap.serialize();
      const chunk = replicationLimits.bitmapChunkBytes;
      for (let at = 0; at === 0 || at < bits.length; at += chunk) {
        const piece = bits.subarray(at, Math.min(at + chunk, bits.length));
        this.send({
          type: SyncMessageType.BITMAP, volumeId: this.wireId, regionBytes: this.tracking.bitmap.regionBytes,
          regionCount: this.tracking.bitmap.regionCount, byteOffset: at, flags: at + chunk >= bits.length ? SyncBitmapFlags.LAST : 0, bits: piece,
        });
      }
    }
    this.resyncSource = { mode, progress: freshProgress(total) };
    this.log.info('resync started: this node is the source', { volume: this.name, mode, bytes: total });
    this.connected();
  }

  private async onResyncStart(syncIdWire: bigint, modeWire: number): Promise<void> {
    const peer = this.peerView;
    if (peer === undefined || this.session === undefined) return;
    this.awaitingResync = false;
    const mode = modeWire === SyncResyncMode.FULL ? 'full' : 'bitmap';
    const r = onResyncStart({ generations: peer.side.generations, diskState: peer.side.diskState },
      { generations: this.meta.generations, diskState: this.meta.diskState }, genFromWire(syncIdWire));
    // Inconsistent is on disk before any resync data lands
    this.metMeta(r.target, 'resync start as the target');
    // the source moved its generations too: remember them as they are now, for the end of the resync
    this.peerView = { ...peer, side: { ...peer.side, generations: r.source.generations } };
    if (mode === 'full') {
      this.tracking.bitmap.set(0, this.size);
      await this.startTarget('full');
    } else {
      this.incomingBitmap = Buffer.alloc(this.tracking.bitmap.serializedBytes);
    }
  }

  private async onBitmap(m: Extract<SyncMessage, { type: 39 }>): Promise<void> {
    const into = this.incomingBitmap;
    if (into === undefined) throw new ReplicaError('ERR_SYNC_STATE', 'BITMAP outside a resync start');
    const b = this.tracking.bitmap;
    if (m.regionBytes !== b.regionBytes || m.regionCount !== b.regionCount || m.byteOffset + m.bits.length > into.length) {
      throw new ReplicaError('ERR_SYNC_STATE', `peer's bitmap geometry ${m.regionCount}×${m.regionBytes} differs from ours ${b.regionCount}×${b.regionBytes}`);
    }
    m.bits.copy(into, m.byteOffset);
    if ((m.flags & SyncBitmapFlags.LAST) === 0) return;
    this.incomingBitmap = undefined;
    b.union(DirtyBitmap.load({ volumeBytes: this.size, regionBytes: b.regionBytes }, into));
    await this.startTarget('bitmap');
  }

  private async startTarget(mode: 'bitmap' | 'full'): Promise<void> {
    const session = this.session;
    if (session === undefined) return;
    // what is left to copy must survive a crash before the first region is copied
    await this.tracking.persistBitmap();
    this.connection = 'connected';
    this.resyncTarget = new ResyncTarget({
      mode, session, wireId: this.wireId, backend: this.backend, bitmap: this.tracking.bitmap, locks: this.locks,
      checksums: this.o.checksumResync, rateBytesPerSecond: this.o.resyncRateBytesPerSecond, log: this.log,
      checkpoint: async () => { await this.backend.flush(); await this.tracking.persistBitmap(); },
      counters: this.counters,
      finished: (p) => this.runControl(() => this.targetFinished(p)),
    });
    this.log.info('resync started: this node is the target', { volume: this.name, mode, bytes: this.tracking.bitmap.dirtyBytes });
    this.resyncTarget.start();
  }

  private async targetFinished(p: ResyncProgress): Promise<void> {
    const peer = this.peerView;
    const t = this.resyncTarget;
    if (peer === undefined || t === undefined || this.session === undefined) return;
    await this.backend.flush();
    await this.tracking.persistBitmap();
    const r = onResyncDone({ generations: peer.side.generations, diskState: peer.side.diskState }, { generations: this.meta.generations, diskState: this.meta.diskState });
    // The source's generations moved at the start; recompute its side as it now is
    this.saveMeta({ ...this.meta, generations: r.target.generations, diskState: 'UpToDate' }, 'resync done as the target');
    this.resyncTarget = undefined;
    this.last = { direction: 'from-peer', mode: t.mode, ...p };
    this.send({ type: SyncMessageType.RESYNC_DONE, volumeId: this.wireId });
    this.log.info('resync done: this copy is UpToDate', { volume: this.name, ...summary(p) });
  }

  private async onResyncDone(): Promise<void> {
    const src = this.resyncSource;
    if (src === undefined) return;
    const r = onResyncDone({ generations: this.meta.generations, diskState: this.meta.diskState }, { generations: this.meta.generations, diskState: 'Inconsistent' });
    const left = this.tracking.bitmap.dirtyBytes;
    if (left > 0) this.log.warn('resync done with regions still marked here: cleared', { volume: this.name, bytes: left });
    this.tracking.bitmap.clearAll();
    await this.tracking.persistBitmap();
    this.saveMeta({ ...this.meta, generations: r.source.generations }, 'resync done as the source');
    src.progress.finishedAt = new Date().toISOString();
    src.progress.doneBytes = src.progress.totalBytes;
    src.progress.etaSeconds = 0;
    this.last = { direction: 'to-peer', mode: src.mode, ...src.progress };
    this.resyncSource = undefined;
    this.resyncBuffers = resyncBufferPool();
    this.peerView = this.peerView === undefined ? undefined : { ...this.peerView, side: { ...this.peerView.side, diskState: 'UpToDate' } };
    this.log.info('resync done: the peer is UpToDate', { volume: this.name, ...summary(this.last) });
  }

  // ------------------------------------------------------------------ applying the primary's writes

  private applyPeerWrite(m: Extract<SyncMessage, { type: 16 | 18 | 19 }>): void {
    const length = m.type === SyncMessageType.WRITE ? m.data.length : m.length;
    const session = this.session;
    const ack = (status: number): void => {
      session?.link.send({ type: SyncMessageType.WRITE_ACK, requestId: m.requestId, status });
    };
    if (m.offset + length > this.size) {
      session?.link.close(`peer wrote ${m.offset}+${length} past the end of the ${this.size}-byte volume ${this.name}`);
      return;
    }
    if (this.roleNow === 'PRIMARY' || this.connection !== 'connected') {
      this.log.warn('peer write refused', { volume: this.name, offset: m.offset, length, role: this.roleNow, connection: this.connection });
      ack(EIO);
      return;
    }
    const charge = m.type === SyncMessageType.WRITE ? length : 0;
    const budget = this.o.applyBudget;
    const paused = !budget.tryTake(charge);
    if (paused) {
      // over the node's budget: stop reading the link until this one fits
      session?.link.pause();
    }
    const lock = this.locks.acquire(m.offset, length);
    void (async () => {
      if (paused) {
        while (!budget.tryTake(charge)) await new Promise<void>((r) => budget.waitForRelease(r));
        session?.link.resume();
      }
      const release = await lock;
      let status = 0;
      try {
        if (m.type === SyncMessageType.WRITE) await this.backend.write(m.data, m.offset);
        else if (m.type === SyncMessageType.ZERO) await this.backend.zero(m.offset, m.length, { noHole: (m.flags & 2) !== 0, fast: false });
        else await this.backend.trim(m.offset, m.length);
        if ((m.flags & 1) !== 0) await this.backend.flush();
        this.counters.peerWriteBytes += length;
        if (m.type === SyncMessageType.WRITE) session?.link.recycle(m.data);
      } catch (e) {
        this.log.error('applying a peer write failed', { volume: this.name, offset: m.offset, length, error: String(e) });
        status = EIO;
      } finally {
        release();
        budget.release(charge);
      }
      ack(status);
    })();
  }

  /** A FLUSH from the peer: everything received before it is applied, then made durable. */
  async flushForPeer(): Promise<void> {
    await this.locks.drain();
    await this.backend.flush();
  }

  // ------------------------------------------------------------------ serving a resync and a verify

  private async serveResync(requestId: bigint, offset: number, length: number, hashes: Extract<SyncMessage, { type: 36 }> | undefined): Promise<void> {
    const src = this.resyncSource;
    if (offset + length > this.size || this.session === undefined) {
      this.session?.link.close(`peer asked for ${offset}+${length} of the ${this.size}-byte volume ${this.name}`);
      return;
    }
    const release = await this.locks.acquire(offset, length);
    const whole = this.resyncBuffers.take(length);
    const buf = whole.subarray(0, length);
    // the buffer is reused once this request is served and the link has written every piece sent from it
    let holders = 1;
    const letGo = (): void => {
      // a pool replaced since (the resync ended) refuses it: its memory goes with the garbage
      if (--holders === 0) this.resyncBuffers.give(whole);
    };
    try {
      const sendRun = (at: number, len: number, zero: boolean): void => {
        if (zero) {
          this.send({ type: SyncMessageType.RESYNC_ZERO, volumeId: this.wireId, requestId, offset: at, length: len });
          this.counters.resyncZeroBytes += len;
          if (src !== undefined) src.progress.zeroBytes += len;
        } else {
          const data = buf.subarray(at - offset, at - offset + len);
          holders++;
          if (this.session?.link.send({ type: SyncMessageType.RESYNC_DATA, volumeId: this.wireId, requestId, offset: at, data }, letGo) !== true) holders--;
          this.counters.resyncBytes += len;
          if (src !== undefined) src.progress.sentBytes += len;
        }
      };
      if (hashes === undefined) {
        // zero and data pieces, so holes travel as commands; a piece wholly in a hole is neither filled nor compared
        const holes = await readFast(this.backend, buf, offset, false);
        let runStart = offset;
        let runZero: boolean | undefined;
        forEachPiece(buf, holes, replicationLimits.hashBlockBytes * 16, (start, end, known) => {
          const z = known || isZero(buf.subarray(start, end));
          if (runZero === undefined) runZero = z;
          else if (z !== runZero) { sendRun(runStart, offset + start - runStart, runZero); runStart = offset + start; runZero = z; }
        });
        sendRun(runStart, offset + length - runStart, runZero ?? true);
      } else {
        await readFast(this.backend, buf, offset);
        const bits = Buffer.alloc(Math.ceil(hashes.hashes.length / 8));
        let runStart = -1;
        const bs = hashes.blockSize;
        for (let i = 0; i <= hashes.hashes.length; i++) {
          const at = offset + i * bs;
          const len = Math.min(bs, offset + length - at);
          const differs = i < hashes.hashes.length && !sha256(buf.subarray(at - offset, at - offset + len)).equals(hashes.hashes[i] as Buffer);
          if (differs) {
            bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7));
            if (runStart < 0) runStart = at;
          } else {
            if (runStart >= 0) { sendRun(runStart, at - runStart, isZero(buf.subarray(runStart - offset, at - offset))); runStart = -1; }
            if (i < hashes.hashes.length) {
              this.counters.resyncSkippedBytes += len;
              if (src !== undefined) src.progress.skippedBytes += len;
            }
          }
        }
        this.send({ type: SyncMessageType.HASH_REPLY, volumeId: this.wireId, requestId, offset, blocks: hashes.hashes.length, bitmap: bits });
      }
      this.tracking.bitmap.clear(offset, length);
      if (src !== undefined) {
        src.progress.doneBytes = Math.min(src.progress.totalBytes, src.progress.doneBytes + length);
        updateRate(src.progress);
      }
    } catch (e) {
      this.session?.link.close(`serving resync of ${this.name} failed: ${String(e)}`);
    } finally {
      release();
      letGo();
    }
  }

  private async answerVerify(m: Extract<SyncMessage, { type: 36 }>): Promise<void> {
    if (m.offset + m.length > this.size) {
      this.session?.link.close(`peer asked to verify ${m.offset}+${m.length} of the ${this.size}-byte volume ${this.name}`);
      return;
    }
    const release = await this.locks.acquire(m.offset, m.length);
    try {
      const buf = Buffer.allocUnsafe(m.length);
      await readFast(this.backend, buf, m.offset);
      const bits = Buffer.alloc(Math.ceil(m.hashes.length / 8));
      m.hashes.forEach((h, i) => {
        const at = i * m.blockSize;
        if (!sha256(buf.subarray(at, Math.min(at + m.blockSize, m.length))).equals(h)) bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7));
      });
      this.send({ type: SyncMessageType.HASH_REPLY, volumeId: this.wireId, requestId: m.requestId, offset: m.offset, blocks: m.hashes.length, bitmap: bits });
    } finally {
      release();
    }
  }

  /** Compares every block with the peer's; with `resync`, sends this node's version of each differing block. */
  async verify(opts: { resync: boolean }): Promise<VerifyResult> {
    const session = this.session;
    if (session === undefined || this.connection !== 'connected' || this.resyncTarget !== undefined || this.resyncSource !== undefined) {
      throw new ReplicaError('ERR_NOT_CONNECTED', `volume ${this.name} is not connected and in sync with its peer`);
    }
    if (this.roleNow !== 'PRIMARY' && this.peerView?.primary === true) {
      throw new ReplicaError('ERR_NOT_PRIMARY', `run verify on the primary of ${this.name} (${this.o.peerName})`);
    }
    const result: VerifyResult = { checkedBytes: 0, differingBytes: 0, differing: [], resentBytes: 0 };
    const bs = replicationLimits.hashBlockBytes;
    const push = (offset: number, length: number): void => {
      result.differingBytes += length;
      const last = result.differing[result.differing.length - 1];
      if (last !== undefined && last.offset + last.length === offset) last.length += length;
      else if (result.differing.length < replicationLimits.verifyRangesMax) result.differing.push({ offset, length });
    };
    for (let offset = 0; offset < this.size; offset += replicationLimits.verifyChunkBytes) {
      const length = Math.min(replicationLimits.verifyChunkBytes, this.size - offset);
      const release = await this.locks.acquire(offset, length);
      let reply: Promise<Extract<SyncMessage, { type: 37 }>>;
      try {
        const buf = Buffer.allocUnsafe(length);
        await readFast(this.backend, buf, offset);
        const hashes: Buffer[] = [];
        for (let at = 0; at < length; at += bs) hashes.push(sha256(buf.subarray(at, Math.min(at + bs, length))));
        const id = session.newId();
        reply = new Promise((r) => this.verifyPending.set(id, r));
        if (!session.link.send({ type: SyncMessageType.HASH_REQUEST, volumeId: this.wireId, requestId: id, offset, length, blockSize: bs, flags: 0, hashes })) {
          throw new ReplicaError('ERR_NOT_CONNECTED', 'the link closed during verify');
        }
      } finally {
        release();
      }
      const r = await reply;
      if (r.blocks === 0) throw new ReplicaError('ERR_NOT_CONNECTED', 'the link closed during verify');
      for (let i = 0; i < r.blocks; i++) {
        if ((((r.bitmap[i >> 3] as number) >> (i & 7)) & 1) === 1) push(offset + i * bs, Math.min(bs, length - i * bs));
      }
      result.checkedBytes += length;
    }
    if (result.differingBytes > 0) this.log.warn('verify found differing blocks', { volume: this.name, bytes: result.differingBytes });
    if (opts.resync) {
      for (const d of result.differing) result.resentBytes += await this.resend(d.offset, d.length);
    }
    return result;
  }

  /** Sends this node's version of a range to the peer as ordinary mirrored writes. */
  private async resend(offset: number, length: number): Promise<number> {
    let sent = 0;
    for (let at = offset; at < offset + length; at += replicationLimits.resyncChunkBytes) {
      const len = Math.min(replicationLimits.resyncChunkBytes, offset + length - at);
      const release = await this.locks.acquire(at, len);
      try {
        const buf = Buffer.allocUnsafe(len);
        await readFast(this.backend, buf, at);
        const session = this.session;
        const r = session === undefined ? 'lost' : await (async () => {
          const id = session.newId();
          return session.request(id, { type: SyncMessageType.WRITE, volumeId: this.wireId, requestId: id, offset: at, flags: 0, data: buf }, `resend ${at}+${len}`);
        })();
        if (r !== 0) {
          this.tracking.bitmap.set(at, len);
          await this.tracking.persistBitmap();
        } else {
          sent += len;
        }
      } finally {
        release();
      }
    }
    return sent;
  }

  // ------------------------------------------------------------------ roles

  async promote(opts: { force: boolean }): Promise<void> {
    if (this.roleNow === 'PRIMARY') return;
    if (this.session !== undefined && this.connection === 'connected') {
      // connected: only an in-sync pair may change hands, and only while the peer is not primary
      if (this.peerView?.primary === true) {
        throw new ReplicaError('ERR_PEER_PRIMARY', `volume ${this.name} is primary on ${this.o.peerName}: demote it there first`);
      }
      // a resync source may serve (DRBD's SyncSource may be primary); a target lacks data
      if (this.meta.diskState !== 'UpToDate' || this.resyncTarget !== undefined || this.awaitingResync) {
        throw new ReplicaError('ERR_NOT_UP_TO_DATE', `volume ${this.name} is being resynced from its peer: promote it once it is in sync`);
      }
      this.saveMeta({ ...this.meta, role: 'PRIMARY', primaryOpen: true, becamePrimaryAt: Date.now() });
      this.roleNow = 'PRIMARY';
      this.suspended = undefined;
      this.log.info('promoted: PRIMARY', { volume: this.name });
      // meet again, so the peer learns the new roles before the first write
      this.connect();
      return;
    }
    const t = onBecomePrimaryWhileDisconnected({ generations: this.meta.generations, diskState: this.meta.diskState }, newGenerationId(), { force: opts.force });
    if (!t.ok) throw new ReplicaError('ERR_NOT_UP_TO_DATE', `cannot promote ${this.name}: ${t.reason}`);
    if (opts.force && this.meta.diskState !== 'UpToDate') this.log.warn('forced promotion of a copy that may lack writes', { volume: this.name, diskState: this.meta.diskState });
    this.trackingAlone = t.state.generations.bitmap !== NO_GENERATION;
    this.saveMeta({ ...this.meta, generations: t.state.generations, diskState: t.state.diskState, role: 'PRIMARY', primaryOpen: true, becamePrimaryAt: Date.now() },
      'promoted without the peer');
    this.roleNow = 'PRIMARY';
    this.suspended = undefined;
    this.log.info('promoted: PRIMARY (without its peer)', { volume: this.name });
  }

  async demote(): Promise<void> {
    if (this.roleNow !== 'PRIMARY') return;
    const reopen = await this.closeGate();
    try {
      await this.flushBoth(false);
      this.reportAcks();
      this.roleNow = 'SECONDARY';
      this.mirroring = false;
      this.saveMeta({ ...this.meta, role: 'SECONDARY', primaryOpen: false });
      this.log.info('demoted: SECONDARY', { volume: this.name });
    } finally {
      reopen();
    }
    // after a meeting refused for the roles, this demotion is what it waited for
    if (this.connection === 'connected' || this.roleConflict) {
      if (this.roleConflict) this.log.info('meeting the peer again: the role conflict is gone', { volume: this.name });
      this.roleConflict = false;
      this.connect();
    }
  }

  // ------------------------------------------------------------------ housekeeping

  tick(): void {
    if (this.ackRun !== undefined && Date.now() - this.ackRun.from >= ACK_REPORT_MS) this.reportAcks();
    // the count of bytes written apart is advisory (discard-least-changes): a few seconds stale is fine
    if (this.metaDirty && Date.now() - this.metaSavedAt >= replicationLimits.metadataSaveMs) this.saveMeta(this.meta);
    this.resyncTarget?.tick();
  }

  /** `why` names the cause when the generations or the disk state change: the log keeps their history for a post-mortem. */
  private saveMeta(m: VolumeMetadata, why = 'unchanged'): void {
    writeMetadata(this.o.volume.metaPath, m);
    this.logGenerationChange(this.meta, m, why);
    this.meta = m;
    this.metaDirty = false;
    this.metaSavedAt = Date.now();
  }

  private logGenerationChange(before: VolumeMetadata, after: VolumeMetadata, why: string): void {
    const b = before.generations;
    const a = after.generations;
    const same = b.current === a.current && b.bitmap === a.bitmap && b.history[0] === a.history[0] && b.history[1] === a.history[1];
    if (same && before.diskState === after.diskState) return;
    this.log.info('generations changed', {
      volume: this.name, why, from: formatGenerations(b, before.diskState), to: formatGenerations(a, after.diskState),
      dirtyBytes: after.dirtyBytes ?? 0, role: this.roleNow,
    });
  }

  /** A clean stop: in-flight I/O finishes, everything is made durable, the primary flag is cleared. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.roleNow === 'PRIMARY') await this.closeGate();
    this.reportAcks();
    this.closed = true;
    this.resyncTarget?.stop('node stopping');
    await this.locks.drain();
    await this.backend.flush();
    await this.tracking.closeClean();
    this.saveMeta({ ...this.meta, primaryOpen: false });
    await this.backend.close();
  }
}

/** current/bitmap/history0/history1 and the disk state, as one token for the log */
function formatGenerations(g: Generations, d: DiskState): string {
  return `${g.current}/${g.bitmap}/${g.history[0]}/${g.history[1]}:${d}`;
}

function isZero(b: Buffer): boolean {
  const Z = ZERO_PAGE;
  for (let at = 0; at < b.length; at += Z.length) {
    const n = Math.min(Z.length, b.length - at);
    if (b.compare(Z, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}
const ZERO_PAGE = Buffer.alloc(64 * 1024);

export function freshProgress(totalBytes: number): ResyncProgress {
  return {
    totalBytes, doneBytes: 0, rateBytesPerSecond: 0, etaSeconds: null, sentBytes: 0, zeroBytes: 0, skippedBytes: 0,
    startedAt: new Date().toISOString(), finishedAt: null, startedMs: Date.now(),
  };
}

export function updateRate(p: ResyncProgress): void {
  const s = (Date.now() - p.startedMs) / 1000;
  if (s <= 0) return;
  p.rateBytesPerSecond = Math.round(p.doneBytes / s);
  p.etaSeconds = p.rateBytesPerSecond > 0 ? Math.ceil((p.totalBytes - p.doneBytes) / p.rateBytesPerSecond) : null;
}

/** progress as shown: the monotonic start time is internal */
function withoutClock(p: ResyncReport): ResyncStatus {
  const shown: Partial<ResyncReport> = { ...p };
  delete shown.startedMs;
  return shown as ResyncStatus;
}

function summary(p: ResyncProgress): Record<string, unknown> {
  return { total: p.totalBytes, sent: p.sentBytes, zero: p.zeroBytes, skipped: p.skippedBytes };
}
