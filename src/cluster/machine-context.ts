// One step of the cluster machine in progress: the state so far and the
// actions so far, with the operations the event handlers and the policy share.
// The state objects are never changed in place: every update replaces them.
import type { Deactivation, HeldAlone, InFlight, MachineState, PoolState, SuspendCause } from './machine-state';
import type { MachineAction, MachineConfig, PoolPhase, WitnessRequest } from './machine-types';

type Level = 'info' | 'warn' | 'error';

export class Ctx {
  readonly out: MachineAction[] = [];
  /** send our 'state' to the peer at the end of the step even if nothing persisted changed */
  sendState = false;

  constructor(readonly cfg: MachineConfig, public s: MachineState, readonly now: number) {}

  log(level: Level, event: string, message: string): void {
    this.out.push({ type: 'log', level, event, message });
  }

  emit(a: MachineAction): void {
    this.out.push(a);
  }

  set(patch: Partial<MachineState>): void {
    this.s = { ...this.s, ...patch };
  }

  pool(name: string): PoolState | undefined {
    return this.s.pools.find((p) => p.name === name);
  }

  /** The pool, which the caller knows exists. */
  p(name: string): PoolState {
    const p = this.pool(name);
    if (p === undefined) throw new Error(`no pool ${name}`);
    return p;
  }

  setPool(name: string, patch: Partial<PoolState>): void {
    this.set({ pools: this.s.pools.map((p) => (p.name === name ? { ...p, ...patch } : p)) });
  }

  poolOfVolume(volume: string): PoolState | undefined {
    const spec = this.cfg.pools.find((p) => p.volumes.includes(volume));
    return spec === undefined ? undefined : this.pool(spec.name);
  }

  /** The pool's volumes as configured (for a pool leaving the configuration: as they were). */
  volumesOf(pool: string): readonly string[] {
    return this.pool(pool)?.volumes ?? [];
  }

  /** Configured and under the machine's control (not unmanaged, not exported, not leaving the configuration). */
  managed(pool: PoolState): boolean {
    return pool.control === 'managed' && !pool.leaving;
  }

  /** A pool that left the configuration and still holds one of this pool's volumes here, if any. */
  heldByLeaving(pool: PoolState): { readonly pool: string; readonly volume: string } | null {
    for (const q of this.s.pools) {
      if (!q.leaving || q.name === pool.name) continue;
      const v = q.volumes.find((x) => pool.volumes.includes(x));
      if (v !== undefined) return { pool: q.name, volume: v };
    }
    return null;
  }

  // ------------------------------------------------------------------ facts

  get maintenance(): boolean {
    return this.s.maintenance || this.s.peerMaintenance;
  }

  /** heartbeats arrive and the two machines have compared records since */
  get present(): boolean {
    return this.s.peer.up && this.s.peer.stateSinceUp;
  }

  /** the policy decides without the peer: it went down after the meeting, or was never met within startWaitMs */
  get absent(): boolean {
    return !this.s.peer.up && (this.s.peer.met || this.s.startWaitOver);
  }

  /** the daemon's gateway check fails: this node may be the isolated side, and acts on nothing without the peer */
  get isolated(): boolean {
    return this.s.isolation.isolated;
  }

  isolationReason(doing: string): string {
    return `${doing}: this node cannot reach its gateway (${this.s.isolation.detail}): it may be the isolated side`;
  }

  /**
   * Policy fence: whether this node may fence the peer and act alone. Not after a start without
   * meeting the peer, unless it fenced the peer and served alone since they last met (then its
   * copies are the newest): the peer may have fenced this node and written alone meanwhile, and
   * nothing here would show it (DRBD's degraded-wait-for-connection).
   */
  get mayActAlone(): boolean {
    return this.cfg.policy !== 'fence' || this.s.peer.met || this.s.aloneAfterFence || this.peerOut;
  }

  /** this node takes nothing: it is leaving, offline or rejoining (docs/cluster.md, "Taking a node offline") */
  get selfOut(): boolean {
    return this.s.membership !== 'member';
  }

  /** the peer left (offline) or was removed here: it owns and takes nothing, and comes back only once this node took note */
  get peerOut(): boolean {
    return this.s.peerMembership !== 'member';
  }

  /** Why nothing may be handed to the peer (it left, was removed, or is leaving), or null. */
  get peerTakesNothing(): string | null {
    if (this.s.peerLeaving) return `${this.cfg.peer} is going offline`;
    return this.peerOut ? `${this.cfg.peer} is ${this.s.peerMembership}` : null;
  }

  /** policies fence and none: the peer cannot be writing, so going on without it needs no fence: fenced since it was last up, offline or removed */
  get peerCannotWrite(): boolean {
    return this.s.peerFenced || this.peerOut;
  }

  /** Why a node under policy fence that has not met its peer since it started does not act alone. */
  unmetReason(doing: string): string {
    return `${doing}: ${this.cfg.peer} not met since this node started, and this node did not fence it and serve alone since they last met ` +
      `(its copies may be outdated): waiting for ${this.cfg.peer}, or an operator (tandem promote)`;
  }

  /** Why the pool's copy may not be promoted here, or null when every volume is UpToDate. */
  notUpToDate(pool: string): string | null {
    for (const v of this.volumesOf(pool)) {
      const f = this.s.volumes[v];
      if (f === undefined) return `volume ${v} has not reported its disk state`;
      if (f.diskState !== 'UpToDate') return `volume ${v} is ${f.diskState} here`;
    }
    return null;
  }

  /**
   * Why the pool's copies may differ, or null when every volume reported in sync after it last
   * asked to go on alone. Facts come on change and may lag; an alone-request proves the peer
   * missed a write, so in-sync facts older than it say nothing.
   */
  inSync(pool: string): string | null {
    for (const v of this.volumesOf(pool)) {
      const f = this.s.volumes[v];
      if (f === undefined || !f.inSync) return `volume ${v} is not in sync with ${this.cfg.peer}`;
      const asked = this.s.aloneAskedAt[v];
      if (asked !== undefined && (this.s.factsAt[v] ?? -Infinity) <= asked) return `volume ${v} went on without ${this.cfg.peer} since it last reported in sync`;
    }
    return null;
  }

  /** Whether every volume of the pool mirrors with the peer now (the sync link carries its writes). */
  mirroring(pool: string): boolean {
    return this.volumesOf(pool).every((v) => this.s.volumes[v]?.connected === true);
  }

  allInSync(): boolean {
    return this.s.pools.every((p) => p.leaving || this.inSync(p.name) === null);
  }

  /**
   * The peer's newest state has a record of the pool. Without one, the peer's configuration differs
   * from ours: it has not taken the pool in yet, or it has removed it, perhaps after taking it over
   * at a higher term than ours. Either way the two have not compared records for it.
   */
  peerKnows(pool: string): boolean {
    return this.s.peer.records?.[pool] !== undefined;
  }

  /**
   * The peer's newest state has records of pools this node has not (or no longer has) in its
   * configuration: until its configuration catches up, it may still serve or take over such a pool
   * with copies this node's writes never reached, and this node's in-sync facts say nothing of them.
   */
  peerHasOtherPools(): boolean {
    const r = this.s.peer.records;
    return r !== null && Object.keys(r).some((name) => !this.s.pools.some((p) => p.name === name && !p.leaving));
  }

  /** Every volume reported in sync with the peer after `since` (facts come on change: older ones may be stale): the peer runs and has our writes. */
  allInSyncSince(since: number): boolean {
    const pools = this.s.pools.filter((p) => !p.leaving);
    return pools.length > 0 && pools.every((p) => this.volumesOf(p.name).every((v) => this.s.volumes[v]?.inSync === true && (this.s.factsAt[v] ?? -Infinity) > since));
  }

  /**
   * The peer's newest state holds exactly our records: it has adopted every change of owner we made.
   * A pool it has no record of (its configuration is behind or ahead of ours) it cannot serve, so it
   * does not count.
   */
  peerAgrees(): boolean {
    const r = this.s.peer.records;
    return r !== null && this.s.pools.every((p) => p.leaving || r[p.name] === undefined || (r[p.name]?.owner === p.owner && r[p.name]?.term === p.term));
  }

  // ------------------------------------------------------------------ pool operations

  setPhase(name: string, phase: PoolPhase, reason: string | null, event?: string): void {
    const p = this.p(name);
    if (p.phase === phase && p.reason === reason) return;
    this.setPool(name, { phase, reason });
    const level: Level = phase === 'ORPHANED' || phase === 'TAKING-OVER' ? 'warn' : 'info';
    this.log(level, event ?? phase.toLowerCase(), `pool ${name}: ${phase}${reason === null ? '' : `: ${reason}`}`);
  }

  activate(name: string, commandId: number | null): void {
    const p = this.p(name);
    this.setPool(name, { phase: 'ACTIVATING', reason: null, commandId, awaitOperator: false, suspended: null, deactivateWhenActivated: false });
    this.set({ activatedAt: this.now });
    this.emit({ type: 'activate', pool: name, term: p.term });
    this.log('info', 'activate', `pool ${name}: activating at term ${p.term}`);
  }

  /** Activates unless a volume is not UpToDate; then the pool waits, ORPHANED, and says which volume. */
  activateChecked(name: string): void {
    const bad = this.notUpToDate(name);
    if (bad === null) this.activate(name, null);
    else this.setPhase(name, 'ORPHANED', `not activating: ${bad} (a copy that is not UpToDate is never promoted)`, 'activate-refused');
  }

  /** Owner ← this node at term + 1, then activate: unless a volume is not UpToDate. */
  takeover(name: string, why: string): void {
    const bad = this.notUpToDate(name);
    if (bad !== null) {
      this.setPhase(name, 'ORPHANED', `not taking over: ${bad} (a copy that is not UpToDate is never promoted; an operator may force it)`, 'takeover-refused');
      return;
    }
    const p = this.p(name);
    this.setPool(name, { owner: this.cfg.self, term: p.term + 1 });
    this.log('warn', 'takeover', `pool ${name}: taking over from ${p.owner} at term ${p.term + 1}: ${why}`);
    this.activate(name, null);
  }

  /** Owner ← the peer at `term` (persisted first), then the handover goes to it. */
  handOver(name: string, term: number, cmd: number | null): void {
    this.setPool(name, { owner: this.cfg.peer, term });
    this.setPhase(name, 'STANDBY', null, 'handover');
    this.emit({ type: 'send-peer', message: { kind: 'handover', pool: name, term } });
    if (cmd !== null) this.commandResult(cmd, true, `pool ${name} handed over to ${this.cfg.peer} at term ${term}`);
  }

  deactivate(name: string, deactivation: Deactivation, commandId: number | null): void {
    this.denyHeld((h) => h.pool === name, `pool ${name} is being deactivated`);
    this.setPool(name, { phase: 'DEACTIVATING', reason: null, deactivation, commandId, suspended: null });
    this.emit({ type: 'deactivate', pool: name });
    this.log('info', 'deactivate', `pool ${name}: deactivating (${deactivation.kind})`);
  }

  suspend(name: string, cause: SuspendCause, reason: string): void {
    this.denyHeld((h) => h.pool === name, `pool ${name} is suspended: ${reason}`);
    this.setPool(name, { phase: 'SUSPENDED', reason, suspended: { cause, at: this.now } });
    this.emit({ type: 'suspend', pool: name, reason });
    this.log('error', 'suspended', `pool ${name}: writes suspended: ${reason}`);
  }

  resume(name: string, why: string): void {
    this.setPool(name, { phase: 'ACTIVE', reason: null, suspended: null });
    this.emit({ type: 'resume', pool: name });
    this.log('info', 'resumed', `pool ${name}: writes resumed: ${why}`);
  }

  // ------------------------------------------------------------------ alone requests

  decide(volume: string, id: number, allow: boolean, why: string): void {
    this.emit({ type: 'alone-decision', volume, id, allow });
    this.log(allow ? 'info' : 'warn', allow ? 'alone-allowed' : 'alone-denied', `volume ${volume}: ${allow ? 'may' : 'may not'} go on without ${this.cfg.peer}: ${why}`);
  }

  /** Answers and forgets the held requests that match. */
  answerHeld(match: (h: HeldAlone) => boolean, allow: boolean, why: string): HeldAlone[] {
    const answered = this.s.heldAlone.filter(match);
    if (answered.length === 0) return [];
    this.set({ heldAlone: this.s.heldAlone.filter((h) => !match(h)) });
    for (const h of answered) this.decide(h.volume, h.id, allow, why);
    return answered;
  }

  denyHeld(match: (h: HeldAlone) => boolean, why: string): void {
    this.answerHeld(match, false, why);
  }

  // ------------------------------------------------------------------ requests to the daemon

  nextSeq(): number {
    const seq = this.s.nextSeq;
    this.set({ nextSeq: seq + 1 });
    return seq;
  }

  startFence(why: string): void {
    const seq = this.nextSeq();
    this.set({ fence: { seq, sentAt: this.now }, fenceRetryAt: null });
    this.emit({ type: 'fence', seq });
    this.log('warn', 'fence-start', `fencing ${this.cfg.peer}: ${why}`);
  }

  askWitness(request: WitnessRequest, why: string): void {
    const seq = this.nextSeq();
    const f: InFlight = { seq, sentAt: this.now };
    this.set({ witness: { ...this.s.witness, [request]: f } });
    this.emit({ type: 'witness', request, seq });
    this.log(request === 'claim' || request === 'alone' ? 'warn' : 'info', `${request}-start`, `asking the witness for ${request.toUpperCase()}: ${why}`);
  }

  forgetWitness(request: WitnessRequest): void {
    const w = { ...this.s.witness };
    delete w[request];
    this.set({ witness: w });
  }

  commandResult(id: number, ok: boolean, message: string): void {
    this.emit({ type: 'command-result', id, ok, message });
  }
}
