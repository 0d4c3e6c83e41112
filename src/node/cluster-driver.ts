// The daemon side of the cluster machine (docs/cluster.md): it turns heartbeats,
// CLUSTER messages, volume states, witness replies, fence results, commands and
// the clock into events, feeds them to the pure machine, and carries out the
// actions it returns. The machine decides; this file only does.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Heartbeat } from '../cluster/heartbeat';
import { initialState, leaseExpiresAt, poolViews, stateMessage, step, type MachineState } from '../cluster/machine';
import type {
  Command, MachineAction, MachineConfig, MachineEvent, PeerMessage, PersistedState, PoolRecord, VolumeFacts, WitnessRequest,
} from '../cluster/machine-types';
import { StepFailed, type StepReporter } from '../pool/steps';
import type { AlonePolicy } from '../replication/replica';
import type { ClusterStateStatus } from '../replication/status';
import { writeFileAtomic } from '../storage/atomic-file';
import { monotonicMs } from '../util/clock';
import { CodedError } from '../util/coded-error';
import type { Logger } from '../util/log';
import type { NodeConfig, PoolConfig } from './config';

export class ClusterError extends CodedError<'ERR_CLUSTER_STATE' | 'ERR_CLUSTER_STOPPED' | 'ERR_UNKNOWN_POOL'> {
  override readonly name = 'ClusterError';
}

/** What the driver needs from the daemon. */
export interface ClusterHost {
  /**
   * promotes the pool's volumes, adds its floating IPs, starts its exports; throws why it could not,
   * having undone the steps before the failing one. Reports every step.
   */
  activate(pool: PoolConfig, report: StepReporter): Promise<void>;
  /** stops the pool's exports, removes its floating IPs, then flushes and demotes its volumes */
  deactivate(pool: PoolConfig, report: StepReporter): Promise<void>;
  /** writes fail; exports stop and floating IPs go, so the peer may take them */
  suspend(pool: PoolConfig, reason: string): void;
  resume(pool: PoolConfig, report: StepReporter): void;
  volumeFacts(volume: string): VolumeFacts;
  /** sends a CLUSTER message if the sync link is up; false if it is not */
  sendPeer(json: string): boolean;
}

export interface ActivityEntry {
  readonly at: string;
  readonly level: 'info' | 'warn' | 'error';
  readonly event: string;
  readonly message: string;
  /** for a pool step: which pool, how long it took, whether it worked */
  readonly pool?: string;
  readonly ms?: number;
  readonly ok?: boolean;
}

export const clusterLimits = { activateRetryFirstMs: 1000, activateRetryMaxMs: 30_000, poolsInMessage: 1024, activityEntries: 200, fenceOutputBytes: 64 * 1024, stateFileBytes: 1024 * 1024 } as const;

const STATE_FILE = 'cluster-state.json';

/** the failed step's codes that an activation retries by itself (see scheduleRetry) */
const RETRYABLE_ACTIVATION: ReadonlySet<string> = new Set(['ERR_ADDRESS_IN_USE', 'ERR_PEER_PRIMARY']);

function machineConfig(cfg: NodeConfig): MachineConfig {
  return {
    self: cfg.node.name,
    peer: cfg.peer.name,
    policy: cfg.fencing.policy,
    pools: cfg.pools.map((p) => ({ name: p.name, volumes: p.volumes, preferredNode: p.preferredNode, autoFailback: p.autoFailback, control: p.control })),
    leaseMs: cfg.heartbeat.timeoutMs,
    takeoverMarginMs: cfg.fencing.takeoverMarginMs,
    fenceRetryMs: cfg.fencing.retryMs,
    claimRetryMs: cfg.fencing.retryMs,
    startWaitMs: cfg.fencing.startWaitMs,
    witnessTimeoutMs: cfg.fencing.witnessTimeoutMs,
  };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parsePools(v: unknown, where: string): Record<string, PoolRecord> {
  if (!isRecord(v)) throw new ClusterError('ERR_CLUSTER_STATE', `${where}: pools must be an object`);
  if (Object.keys(v).length > clusterLimits.poolsInMessage) throw new ClusterError('ERR_CLUSTER_STATE', `${where}: more than ${clusterLimits.poolsInMessage} pools`);
  const out: Record<string, PoolRecord> = {};
  for (const [name, r] of Object.entries(v)) {
    if (!isRecord(r) || typeof r.owner !== 'string' || r.owner.length === 0 || r.owner.length > 63 ||
      typeof r.term !== 'number' || !Number.isSafeInteger(r.term) || r.term < 0) {
      throw new ClusterError('ERR_CLUSTER_STATE', `${where}: pool ${JSON.stringify(name)} must be { owner, term }`);
    }
    out[name] = { owner: r.owner, term: r.term };
  }
  return out;
}

/** A CLUSTER message's document, checked before the machine sees it (the peer may speak garbage). */
export function parsePeerMessage(v: unknown): PeerMessage {
  if (!isRecord(v)) throw new ClusterError('ERR_CLUSTER_STATE', 'CLUSTER message: not an object');
  if (v.kind === 'state') {
    if (typeof v.maintenance !== 'boolean') throw new ClusterError('ERR_CLUSTER_STATE', 'CLUSTER state: maintenance must be a boolean');
    const active = v.active ?? [];
    if (!Array.isArray(active) || active.length > clusterLimits.poolsInMessage || !active.every((x): x is string => typeof x === 'string' && x.length <= 63)) {
      throw new ClusterError('ERR_CLUSTER_STATE', 'CLUSTER state: active must be a list of pool names');
    }
    const epoch = (k: string): number | undefined => {
      const n = v[k];
      if (n === undefined) return undefined;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new ClusterError('ERR_CLUSTER_STATE', `CLUSTER state: ${k} must be an integer ≥ 0`);
      return n;
    };
    if (v.leaving !== undefined && typeof v.leaving !== 'boolean') throw new ClusterError('ERR_CLUSTER_STATE', 'CLUSTER state: leaving must be a boolean');
    if (v.offline !== undefined && typeof v.offline !== 'boolean') throw new ClusterError('ERR_CLUSTER_STATE', 'CLUSTER state: offline must be a boolean');
    if (v.youAre !== undefined && v.youAre !== 'offline' && v.youAre !== 'removed') throw new ClusterError('ERR_CLUSTER_STATE', 'CLUSTER state: youAre must be "offline" or "removed"');
    const ep = epoch('epoch');
    const yours = epoch('yourEpoch');
    return {
      kind: 'state', pools: parsePools(v.pools, 'CLUSTER state'), maintenance: v.maintenance, active,
      ...(v.offline === true ? { offline: true } : {}), ...(v.leaving === true ? { leaving: true } : {}), ...(ep === undefined ? {} : { epoch: ep }),
      ...(v.youAre === undefined ? {} : { youAre: v.youAre }), ...(yours === undefined ? {} : { yourEpoch: yours }),
    };
  }
  if (v.kind === 'handover') {
    if (typeof v.pool !== 'string' || typeof v.term !== 'number' || !Number.isSafeInteger(v.term) || v.term < 1) {
      throw new ClusterError('ERR_CLUSTER_STATE', 'CLUSTER handover: needs pool (string) and term (integer ≥ 1)');
    }
    return { kind: 'handover', pool: v.pool, term: v.term };
  }
  throw new ClusterError('ERR_CLUSTER_STATE', `CLUSTER message: unknown kind ${JSON.stringify(v.kind)}`);
}

function loadState(file: string): PersistedState | null {
  let text: string;
  try {
    if (fs.statSync(file).size > clusterLimits.stateFileBytes) throw new ClusterError('ERR_CLUSTER_STATE', `${file}: larger than ${clusterLimits.stateFileBytes} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ClusterError('ERR_CLUSTER_STATE', `${file}: not JSON: ${(e as Error).message}`);
  }
  if (!isRecord(v) || v.version !== 1 || typeof v.maintenance !== 'boolean') {
    throw new ClusterError('ERR_CLUSTER_STATE', `${file}: not a version 1 cluster state`);
  }
  // absent in files written before it existed: false, the careful answer (wait for the peer)
  const epoch = (k: string): number => {
    const n = v[k] ?? 0;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new ClusterError('ERR_CLUSTER_STATE', `${file}: ${k} must be an integer ≥ 0`);
    return n;
  };
  if (v.offline !== undefined && v.offline !== 'offline' && v.offline !== 'rejoining') throw new ClusterError('ERR_CLUSTER_STATE', `${file}: offline must be "offline" or "rejoining"`);
  if (v.peer !== undefined && v.peer !== 'offline' && v.peer !== 'removed') throw new ClusterError('ERR_CLUSTER_STATE', `${file}: peer must be "offline" or "removed"`);
  return {
    pools: parsePools(v.pools, file), maintenance: v.maintenance, ...(v.aloneAfterFence === true ? { aloneAfterFence: true } : {}),
    ...(v.offline === undefined ? {} : { offline: v.offline }), membershipEpoch: epoch('membershipEpoch'),
    ...(v.peer === undefined ? {} : { peer: v.peer }), peerEpoch: epoch('peerEpoch'),
  };
}

export class ClusterDriver {
  config: MachineConfig;
  private state: MachineState;
  /** pools removed from the configuration that the machine has not let go of yet */
  private readonly departed = new Map<string, PoolConfig>();
  private readonly forgottenWaiters: Array<() => void> = [];
  private readonly stateFile: string;
  private heartbeat: Heartbeat | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private readonly facts = new Map<string, string>();
  private readonly aloneWaiters = new Map<number, (allow: boolean) => void>();
  private readonly commandWaiters = new Map<number, (r: { ok: boolean; message: string }) => void>();
  private nextId = 1;
  /** the peer's last state over the current sync link */
  private peerState: PeerMessage | undefined;
  private readonly activity: ActivityEntry[] = [];
  private readonly activityListeners: Array<(e: ActivityEntry) => void> = [];
  /** activation retries per pool since its last success, and their timers */
  private readonly retries = new Map<string, number>();
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private stopped = false;
  /** the split-brain checker (fencing.checkAddresses): its timer, a check under way, its last verdict */
  private isolationTimer: NodeJS.Timeout | undefined;
  private checking = false;
  private isolated = false;

  constructor(private cfg: NodeConfig, private readonly host: ClusterHost, private readonly log: Logger) {
    this.config = machineConfig(cfg);
    this.state = initialState(this.config);
    this.stateFile = path.join(cfg.node.dataDir, STATE_FILE);
  }

  async start(): Promise<void> {
    const persisted = loadState(this.stateFile);
    const cfg = this.cfg;
    const incarnation = Date.now();
    this.heartbeat = new Heartbeat({
      clusterId: cfg.cluster.id, secret: cfg.cluster.secret, selfName: cfg.node.name, peerName: cfg.peer.name, incarnation,
      intervalMs: cfg.heartbeat.intervalMs, timeoutMs: cfg.heartbeat.timeoutMs, mainStallMs: cfg.heartbeat.mainStallMs,
      links: cfg.heartbeat.links, witness: cfg.fencing.policy === 'witness' ? cfg.fencing.witness : null,
      witnessTimeoutMs: cfg.fencing.witnessTimeoutMs,
    });
    this.heartbeat.on('peer-up', (incarnationSeen: number) => {
      this.dispatch({ type: 'peer-up', now: monotonicMs(), incarnation: incarnationSeen });
      // the sync link may have brought the peer's state before its first heartbeat: it still holds
      if (this.peerState !== undefined) this.dispatch({ type: 'peer-message', now: monotonicMs(), message: this.peerState });
    });
    this.heartbeat.on('peer-down', (lastHeardAt: number) => {
      this.dispatch({ type: 'peer-down', now: monotonicMs(), lastHeardAt });
    });
    this.heartbeat.on('links', (up: number, total: number) => {
      this.dispatch({ type: 'links', now: monotonicMs(), up, total });
    });
    await this.heartbeat.start();
    if (cfg.fencing.policy === 'witness') this.heartbeat.setRenewing(true);
    this.dispatch({ type: 'start', now: monotonicMs(), persisted });
    if (cfg.fencing.checkAddresses.length > 0) {
      // always, not only once the peer is gone: the answer must be fresh when a takeover is decided
      this.isolationTimer = setInterval(() => this.checkIsolation(), cfg.fencing.checkIntervalMs);
      this.checkIsolation();
    }
    // the machine judges takeovers by the copies' disk states: it knows them from the start
    this.reportVolumes(monotonicMs());
    this.ticker = setInterval(() => this.tick(), cfg.heartbeat.intervalMs);
  }

  private tick(): void {
    const hb = this.heartbeat;
    if (hb === undefined) return;
    hb.stampMain();
    const now = monotonicMs();
    this.reportVolumes(now);
    const s = hb.acks();
    this.dispatch({ type: 'tick', now, peerAckSentAt: s.peerAckSentAt, witnessAckSentAt: s.witnessAckSentAt });
  }

  /** Volume facts that changed since the last report. */
  private reportVolumes(now: number): void {
    for (const p of this.cfg.pools) {
      for (const v of p.volumes) {
        const f = this.host.volumeFacts(v);
        const key = `${f.diskState}/${f.connected}/${f.inSync}`;
        if (this.facts.get(v) !== key) {
          this.facts.set(v, key);
          this.dispatch({ type: 'volume', now, name: v, facts: f });
        }
      }
    }
  }

  onLinkDown(): void {
    this.peerState = undefined;
  }

  /** The sync link is up: the peer's machine needs ours before anything else. */
  onLinkUp(): void {
    this.sendPeer(stateMessage(this.state));
  }

  /** A CLUSTER message for the machine, as parsed from its JSON. */
  onPeerMessage(v: unknown): void {
    let message: PeerMessage;
    try {
      message = parsePeerMessage(v);
    } catch (e) {
      this.note('warn', 'peer-garbage', `a CLUSTER message from the peer was refused: ${(e as Error).message}`);
      return;
    }
    if (message.kind === 'state') this.peerState = message;
    this.dispatch({ type: 'peer-message', now: monotonicMs(), message });
  }

  /** The fencing policy's say over acknowledging writes the peer lacks, for one pool's replicas. */
  alonePolicy(): AlonePolicy {
    return {
      decide: (volume) => new Promise<boolean>((resolve) => {
        // a stopped machine answers nothing: the write fails rather than wait for ever
        if (this.stopped) { resolve(false); return; }
        const id = this.nextId++;
        this.aloneWaiters.set(id, resolve);
        this.dispatch({ type: 'alone-request', now: monotonicMs(), volume, id });
      }),
      mayAckAlone: () => {
        if (this.config.policy !== 'witness' || this.state.maintenance || this.state.peerMaintenance) return true;
        const s = this.heartbeat?.acks();
        const acked = Math.max(s?.peerAckSentAt ?? -Infinity, s?.witnessAckSentAt ?? -Infinity);
        return monotonicMs() < acked + this.config.leaseMs;
      },
    };
  }

  command(command: Command): Promise<{ ok: boolean; message: string }> {
    if (this.stopped) return Promise.resolve({ ok: false, message: 'the node is stopping' });
    return new Promise((resolve) => {
      const id = this.nextId++;
      this.commandWaiters.set(id, resolve);
      // an operator's reattach starts the activation retries afresh
      if (command.kind === 'reattach') this.retries.delete(command.pool);
      // an operator acts on what status showed: the machine must know it too
      this.reportVolumes(monotonicMs());
      this.dispatch({ type: 'command', now: monotonicMs(), id, command });
    });
  }

  /**
   * The cluster configuration changed: the machine takes the new pool list (it deactivates a
   * removed pool that is active here before it forgets it).
   */
  reconfigure(cfg: NodeConfig): void {
    for (const p of this.cfg.pools) if (!cfg.pools.some((q) => q.name === p.name)) this.departed.set(p.name, p);
    this.cfg = cfg;
    this.config = machineConfig(cfg);
    if (!this.state.started) return;
    const now = monotonicMs();
    this.dispatch({ type: 'reconfigure', now });
    // the machine forgot the facts of volumes in no pool: one that comes back must be reported again
    const configured = new Set(cfg.pools.flatMap((p) => p.volumes));
    for (const v of [...this.facts.keys()]) if (!configured.has(v)) this.facts.delete(v);
    // the new pools' copies exist already: the machine judges their activation by these
    this.reportVolumes(now);
  }

  /** Resolves once the machine holds no state for the pool (it was removed and released), or the node stops. */
  async untilForgotten(pool: string): Promise<void> {
    while (!this.stopped && this.state.pools.some((p) => p.name === pool)) {
      await new Promise<void>((r) => { this.forgottenWaiters.push(r); });
    }
    this.departed.delete(pool);
  }

  poolOf(volume: string): PoolConfig | undefined {
    return this.cfg.pools.find((p) => p.volumes.includes(volume));
  }

  /**
   * The API answers before the machine starts: until then its membership is the one on disk,
   * not the machine's defaults (a node that left must never look like a member, even for a moment).
   */
  private membershipView(): ClusterStateStatus['membership'] {
    if (this.state.started) return { self: this.state.membership, peer: this.state.peerMembership };
    let persisted: PersistedState | null = null;
    try {
      persisted = loadState(this.stateFile);
    } catch {
      // start() reports a bad state file; status goes on with the defaults
    }
    return { self: persisted?.offline ?? 'member', peer: persisted?.peer ?? 'member' };
  }

  status(): ClusterStateStatus {
    return {
      policy: this.config.policy,
      maintenance: this.state.maintenance,
      membership: this.membershipView(),
      // the machine's view: what it decides on is what status shows
      peer: { up: this.state.peer.up, links: { ...(this.state.links ?? { up: 0, total: this.cfg.heartbeat.links.length }) } },
      pools: poolViews(this.state),
      heartbeat: { ...(this.heartbeat?.snapshot().counters ?? {}) },
      activity: [...this.activity],
    };
  }

  private dispatch(event: MachineEvent): void {
    if (this.stopped) return;
    // the machine learns the worker's acks on ticks: after a stall of this thread, an event that
    // comes before the next tick must not be judged on the acks of the tick before the stall
    const hb = this.heartbeat;
    const until = leaseExpiresAt(this.config, this.state);
    if (event.type !== 'tick' && hb !== undefined && this.state.started && until !== null && event.now >= until) {
      const s = hb.acks();
      this.dispatch({ type: 'tick', now: event.now, peerAckSentAt: s.peerAckSentAt, witnessAckSentAt: s.witnessAckSentAt });
    }
    const r = step(this.config, this.state, event);
    const poolsBefore = this.state.pools.length;
    this.state = r.state;
    for (const a of r.actions) this.carryOut(a);
    if (this.state.pools.length < poolsBefore) for (const w of this.forgottenWaiters.splice(0)) w();
  }

  private carryOut(a: MachineAction): void {
    switch (a.type) {
      case 'persist':
        // before any action after it: a takeover must be on disk before the pool comes up
        writeFileAtomic(this.stateFile, JSON.stringify({ version: 1, ...a.state }, null, 2) + '\n');
        return;
      case 'activate': {
        const pool = this.pool(a.pool);
        this.host.activate(pool, this.stepReporter(a.pool)).then(
          () => { this.retries.delete(a.pool); this.dispatch({ type: 'activated', now: monotonicMs(), pool: a.pool, ok: true }); },
          (e: unknown) => {
            this.dispatch({ type: 'activated', now: monotonicMs(), pool: a.pool, ok: false, error: (e as Error).message });
            this.scheduleRetry(a.pool, e);
          },
        );
        return;
      }
      case 'deactivate': {
        const pool = this.pool(a.pool);
        this.host.deactivate(pool, this.stepReporter(a.pool)).catch((e: unknown) => {
          this.note('error', 'deactivate-failed', `pool ${a.pool}: ${(e as Error).message}`);
        }).finally(() => this.dispatch({ type: 'deactivated', now: monotonicMs(), pool: a.pool }));
        return;
      }
      case 'suspend':
        this.host.suspend(this.pool(a.pool), a.reason);
        return;
      case 'resume':
        this.host.resume(this.pool(a.pool), this.stepReporter(a.pool));
        return;
      case 'fence':
        this.runFence(a.seq);
        return;
      case 'witness':
        this.askWitness(a.request, a.seq);
        return;
      case 'alone-decision': {
        const w = this.aloneWaiters.get(a.id);
        this.aloneWaiters.delete(a.id);
        w?.(a.allow);
        return;
      }
      case 'send-peer':
        this.sendPeer(a.message);
        return;
      case 'command-result': {
        const w = this.commandWaiters.get(a.id);
        this.commandWaiters.delete(a.id);
        w?.({ ok: a.ok, message: a.message });
        return;
      }
      case 'log':
        this.note(a.level, a.event, a.message);
        return;
    }
  }

  private pool(name: string): PoolConfig {
    // a pool removed from the configuration is still released by its old definition
    const p = this.cfg.pools.find((x) => x.name === name) ?? this.departed.get(name);
    if (p === undefined) throw new ClusterError('ERR_UNKNOWN_POOL', `the cluster machine named an unknown pool ${JSON.stringify(name)}`);
    return p;
  }

  private sendPeer(m: PeerMessage): void {
    this.host.sendPeer(JSON.stringify(m));
  }

  /**
   * An address still answering, or the peer's copy still primary, usually clears by itself: the old
   * owner's daemon restarts and removes what its crash left, a suspended owner lets go once it runs
   * again, a demotion reaches this node with the next meeting.
   * Retried with a growing pause while this node still owns the pool INACTIVE; anything else waits
   * for an operator.
   */
  private scheduleRetry(pool: string, error: unknown): void {
    const cause = error instanceof StepFailed ? error.cause : error;
    const code = (cause as { code?: unknown } | null)?.code;
    if (typeof code !== 'string' || !RETRYABLE_ACTIVATION.has(code) || this.stopped) return;
    const attempt = (this.retries.get(pool) ?? 0) + 1;
    this.retries.set(pool, attempt);
    const ms = Math.min(clusterLimits.activateRetryMaxMs, clusterLimits.activateRetryFirstMs * 2 ** (attempt - 1));
    this.note('warn', 'activate-retry-scheduled', `pool ${pool}: trying again in ${ms} ms (attempt ${attempt + 1})`, { pool });
    const t = setTimeout(() => {
      this.retryTimers.delete(t);
      if (!this.stopped) this.dispatch({ type: 'retry-activate', now: monotonicMs(), pool });
    }, ms);
    this.retryTimers.add(t);
  }

  /** called with every new activity-log entry, in order (notification hooks) */
  onActivity(listener: (e: ActivityEntry) => void): void {
    this.activityListeners.push(listener);
  }

  /** an entry in the activity log (and the node's log): the pool steps, the cluster's decisions, application events */
  note(level: ActivityEntry['level'], event: string, message: string, extra: Pick<ActivityEntry, 'pool' | 'ms' | 'ok'> = {}): void {
    this.log[level](message, { event, ...extra });
    const entry: ActivityEntry = { at: new Date().toISOString(), level, event, message, ...extra };
    this.activity.push(entry);
    if (this.activity.length > clusterLimits.activityEntries) this.activity.shift();
    for (const l of this.activityListeners) l(entry);
  }

  /** every step of taking a pool up or down goes to the activity log with its outcome and duration */
  private stepReporter(pool: string): StepReporter {
    return (r) => {
      const verb = r.phase === 'run' ? '' : r.phase === 'undo' ? 'undo ' : 'release ';
      const outcome = r.ok ? `done in ${r.ms} ms` : `failed after ${r.ms} ms: ${r.error ?? 'unknown error'}`;
      this.note(r.ok ? 'info' : 'error', `pool-${r.phase}`, `pool ${pool}: ${verb}${r.step}: ${outcome}`, { pool, ms: r.ms, ok: r.ok });
    };
  }

  private runFence(seq: number): void {
    const cmd = this.cfg.fencing.command;
    if (cmd === null) {
      this.dispatch({ type: 'fence-done', now: monotonicMs(), ok: false, detail: 'no fence command configured', seq });
      return;
    }
    const started = monotonicMs();
    this.note('warn', 'fence-run', `fencing ${this.cfg.peer.name}: ${cmd.join(' ')}`);
    execFile(cmd[0] as string, cmd.slice(1), {
      timeout: this.cfg.fencing.commandTimeoutMs, killSignal: 'SIGKILL', maxBuffer: clusterLimits.fenceOutputBytes,
      env: { ...process.env, TANDEM_PEER: this.cfg.peer.name, TANDEM_NODE: this.cfg.node.name, TANDEM_CLUSTER: this.cfg.cluster.name },
    }, (err, stdout, stderr) => {
      const out = `${stdout}${stderr}`.trim().slice(-1024);
      const ms = monotonicMs() - started;
      const detail = err === null
        ? `exit 0 after ${ms} ms${out === '' ? '' : `: ${out}`}`
        : `${err.killed ? `killed after the ${this.cfg.fencing.commandTimeoutMs} ms timeout` : `failed (${err.code ?? err.message})`} after ${ms} ms${out === '' ? '' : `: ${out}`}`;
      this.dispatch({ type: 'fence-done', now: monotonicMs(), ok: err === null, detail, seq });
    });
  }

  private askWitness(request: WitnessRequest, seq: number): void {
    const hb = this.heartbeat;
    if (hb === undefined || this.cfg.fencing.witness === null) {
      this.dispatch({ type: 'witness-reply', now: monotonicMs(), request, granted: false, reason: 'no witness configured', seq });
      return;
    }
    // through the worker's client: one sender, one sequence of request ids at the witness
    const peer = this.cfg.peer.name;
    const p = request === 'claim' ? hb.witnessRequest('claim', peer)
      : request === 'alone' ? hb.witnessRequest('alone')
        : request === 'clear-alone' ? hb.witnessRequest('clear-alone', this.cfg.node.name)
          : hb.witnessRequest('clear-fenced', peer);
    p.then(
      (r) => this.dispatch({ type: 'witness-reply', now: monotonicMs(), request, granted: r.granted, reason: r.reason, seq }),
      (e: unknown) => this.dispatch({ type: 'witness-reply', now: monotonicMs(), request, granted: false, reason: (e as Error).message, seq }),
    );
  }

  /**
   * Pings the configured addresses; none answering means this node may be the one cut off, and
   * the machine takes nothing over while that lasts. Only a change is an event.
   */
  private checkIsolation(): void {
    if (this.checking || this.stopped) return;
    this.checking = true;
    const f = this.cfg.fencing;
    const seconds = (f.checkTimeoutMs / 1000).toFixed(3);
    const ping = (address: string): Promise<boolean> => new Promise((resolve) => {
      execFile('ping', ['-n', '-q', '-c', '1', '-W', seconds, address], { timeout: f.checkTimeoutMs + 500 }, (err) => resolve(err === null));
    });
    Promise.all(f.checkAddresses.map(ping)).then((answers) => {
      this.checking = false;
      const isolated = !answers.some((ok) => ok);
      if (isolated === this.isolated || this.stopped) return;
      this.isolated = isolated;
      const detail = isolated
        ? `no answer from ${f.checkAddresses.join(', ')} within ${f.checkTimeoutMs} ms`
        : `${f.checkAddresses.filter((_, i) => answers[i]).join(', ')} answers again`;
      this.dispatch({ type: 'isolation', now: monotonicMs(), isolated, detail });
    }, () => { this.checking = false; });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.isolationTimer !== undefined) clearInterval(this.isolationTimer);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    if (this.ticker !== undefined) clearInterval(this.ticker);
    for (const w of this.aloneWaiters.values()) w(false);
    this.aloneWaiters.clear();
    for (const w of this.commandWaiters.values()) w({ ok: false, message: 'the node is stopping' });
    this.commandWaiters.clear();
    for (const w of this.forgottenWaiters.splice(0)) w();
    await this.heartbeat?.close();
  }
}
