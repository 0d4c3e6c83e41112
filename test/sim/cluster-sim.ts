// A deterministic simulator of two cluster machines, the witness, heartbeats,
// the sync link, the daemons' side of every action and the data the nodes
// acknowledge, under a fault schedule drawn from a seed (docs/cluster.md).
// Time is simulated (ms); nothing here reads a clock or Math.random.
//
// It checks, for every run:
// 1. two writers: every acknowledged write must extend the newest acknowledged
//    write of its pool (a write on a copy that misses one means two nodes wrote
//    apart), and no node writes while the other holds the pool writable and
//    wrote since the first one's tenure began;
// 2. no activation of a copy that misses an acknowledged write;
// 3. liveness: once the faults stop and everything heals, each pool is ACTIVE
//    on exactly one node, which is writing (the operator manages every pool
//    again and creates again every pool it removed);
// 4. control and isolation: no pool is activated while it is exported or
//    unmanaged, deactivated or suspended while it is unmanaged; a node told it
//    cannot reach its gateway starts no fence and no CLAIM, takes nothing over
//    and activates nothing without its peer.
// Under policy `ignore`, 1 and 2 are the documented hazard and are not checked.
//
// The operator changes the cluster configuration on one node; the change goes
// to the other over the sync link (the newer version wins), so the two may run
// different configurations for a while, as real nodes do.
import { initialState, poolViews, stateMessage, step as machineStep, type MachineState, type StepResult } from '../../src/cluster/machine';
import type {
  Command, FencingPolicy, MachineAction, MachineConfig, MachineEvent, PeerMessage, PersistedState, PoolControl, WitnessRequest,
} from '../../src/cluster/machine-types';
import { handle as witnessHandle, startWitnessState, type WitnessState } from '../../src/cluster/witness-rules';
import type { WitnessRequestMessage } from '../../src/protocol/witness/codec';
import { EventQueue, NODES, Rng, describeFault, drawMembership, drawOperations, drawSchedule, other, type Fault, type NodeName, type ScheduledFault } from './sim-support';

export type StepFn = (config: MachineConfig, state: MachineState, event: MachineEvent) => StepResult;

export interface SimTiming {
  readonly intervalMs: number;
  /** = the heartbeat timeout */
  readonly leaseMs: number;
  readonly marginMs: number;
  readonly startWaitMs: number;
  readonly fenceRetryMs: number;
  readonly claimRetryMs: number;
  readonly witnessTimeoutMs: number;
  readonly resyncMs: number;
}

export const SIM_TIMING: SimTiming = {
  intervalMs: 100, leaseMs: 500, marginMs: 100, startWaitMs: 1500, fenceRetryMs: 700, claimRetryMs: 400, witnessTimeoutMs: 300, resyncMs: 300,
};

export interface SimOptions {
  readonly seed: number;
  readonly policy: FencingPolicy;
  /** faults start during this time */
  readonly nemesisMs?: number;
  /** then everything heals; by its end every pool must be served */
  readonly settleMs?: number;
  /**
   * Faults the fence policy cannot survive are left out (docs/cluster.md, "The cluster
   * machine"): a node restarts only with its link to the peer whole, nothing happens while
   * it meets the peer, and a node crashes only while both copies are in sync.
   */
  readonly careful?: boolean;
  /** replaces the machine's step: a deliberately broken variant shows the checker can fail */
  readonly step?: StepFn;
  readonly checkLiveness?: boolean;
  /** check two writers and stale activations (default: every policy but `ignore`, whose hazard they are) */
  readonly checkSafety?: boolean;
  readonly timing?: Partial<SimTiming>;
  /**
   * The operator's control changes (unmanage, export, remove and create again under a new name)
   * and the gateway's failures, drawn from their own generator (default true; false replays the
   * runs from before they existed, seed for seed).
   */
  readonly operator?: boolean;
  /** the operator's node offline / online and remove / add, from a generator of their own (default true) */
  readonly membership?: boolean;
}

export interface SimResult {
  readonly seed: number;
  readonly policy: FencingPolicy;
  readonly violations: readonly string[];
  readonly schedule: readonly string[];
  readonly trace: readonly string[];
  readonly writes: number;
  readonly takeovers: number;
}

/** A pool of the cluster configuration: in the simulator each pool has one volume. */
interface SimPool {
  readonly name: string;
  readonly volume: string;
  readonly preferred: NodeName;
  readonly control: PoolControl;
}

const VOLUMES = ['v0', 'v1'] as const;
const FIRST_POOLS: readonly SimPool[] = [
  { name: 'p0', volume: 'v0', preferred: 'alpha', control: 'managed' },
  { name: 'p1', volume: 'v1', preferred: 'beta', control: 'managed' },
];
const OPERATOR_RETRY_MS = 200;
const CLUSTER_ID = Buffer.alloc(16, 7);
const TRACE_MAX = 1500;

interface Side {
  /** volumes PRIMARY here (from the start of activation to the end of deactivation) */
  primary: boolean;
  /** exports up: from 'activated' to 'deactivate' */
  exported: boolean;
  suspended: boolean;
  since: number;
  lastWriteAt: number | null;
}

interface Copy {
  /** the newest acknowledged write this copy holds */
  head: number;
  /** what the node knows of its copy: it cannot know that the other wrote while they were apart */
  known: 'UpToDate' | 'Inconsistent';
  aloneOk: boolean;
  asking: number | null;
  /** meetings with the peer so far: a permission asked before the last one is for a separation that ended */
  meetings: number;
  askedAt: number;
  facts: string;
}

interface SimNode {
  readonly name: NodeName;
  /** the cluster configuration's version this node has (its file: it survives a crash) */
  version: number;
  cfg: MachineConfig;
  /** what the node's gateway check last told its machine */
  toldIsolated: boolean;
  alive: boolean;
  gen: number;
  pausedUntil: number;
  incarnation: number;
  machine: MachineState;
  disk: PersistedState | null;
  hb: { up: boolean; lastHeardAt: number | null; peerInc: number | null; peerSentAt: number | null; ackSentAt: number | null };
  witnessAck: number | null;
  nextRequest: number;
  pending: Map<number, { request: WitnessRequest | 'renew'; seq: number; sentAt: number }>;
  /** per volume */
  sides: Record<string, Side>;
  copies: Record<string, Copy>;
  nextAloneId: number;
}

type Ev =
  | { k: 'tick'; node: NodeName; gen: number }
  | { k: 'hb'; node: NodeName; gen: number; inc: number; sentAt: number; echoInc: number | null; echoSentAt: number | null }
  | { k: 'msg'; node: NodeName; gen: number; epoch: number; message: PeerMessage }
  | { k: 'cfg'; node: NodeName; gen: number; epoch: number; version: number }
  | { k: 'iso'; node: NodeName; gen: number }
  /** an operator's step: done, or tried again a little later */
  | { k: 'op'; what: string; apply: () => boolean }
  | { k: 'w-arrive'; from: NodeName; req: WitnessRequestMessage; id: number; gen: number }
  | { k: 'w-reply'; node: NodeName; gen: number; id: number; granted: boolean; reason: string }
  | { k: 'w-timeout'; node: NodeName; gen: number; id: number }
  | { k: 'activated'; node: NodeName; gen: number; pool: string }
  | { k: 'deactivated'; node: NodeName; gen: number; pool: string }
  | { k: 'fence'; node: NodeName; gen: number; seq: number }
  | { k: 'fault'; fault: Fault }
  | { k: 'heal'; undo: () => void }
  | { k: 'end' };

const nodeOf = (e: Ev): NodeName | null => ('node' in e ? e.node : null);

class World {
  readonly rng: Rng;
  readonly q = new EventQueue<Ev>();
  readonly nodes: Record<NodeName, SimNode>;
  now = 0;
  witness: WitnessState = startWitnessState(0, [CLUSTER_ID.toString('hex')]);
  /** counts of active cuts: node→node per sending node, node↔witness per node */
  readonly cut: Record<NodeName, number> = { alpha: 0, beta: 0 };
  readonly wcut: Record<NodeName, number> = { alpha: 0, beta: 0 };
  fenceBroken = 0;
  syncUp = false;
  readonly lastDelivery = new Map<string, number>();
  epoch = 0;
  ended = false;
  quietUntil = 0;
  /** per volume */
  readonly volumes: Record<string, { connected: boolean; resyncDoneAt: number | null; source: NodeName | null }> = {};
  readonly latest: Record<string, { id: number; node: NodeName | null; at: number }> = {};
  nextCommand = 1;
  /** the cluster configuration's versions; a node runs the one its `version` names */
  readonly configs: Array<readonly SimPool[]> = [FIRST_POOLS];
  /** every pool name ever configured → its volume */
  readonly poolVolume = new Map<string, string>(FIRST_POOLS.map((p) => [p.name, p.volume]));
  /** the newest version sent to each node over the current sync link */
  readonly configSent: Record<NodeName, { version: number; epoch: number }> = { alpha: { version: 0, epoch: -1 }, beta: { version: 0, epoch: -1 } };
  /** gateway failures in force per node */
  readonly isolated: Record<NodeName, number> = { alpha: 0, beta: 0 };
  /** volumes whose pool was removed and is not created again yet */
  readonly removing = new Set<string>();
  poolNames = 0;
  /** when a node last went down: a pool is created again only with both nodes up and in sync */
  lastDownAt = 0;
  writeIds = 0;
  writes = 0;
  takeovers = 0;
  readonly violations: string[] = [];
  readonly trace: string[] = [];
  readonly stepFn: StepFn;
  readonly checkSafety: boolean;
  readonly t: SimTiming;

  constructor(readonly o: SimOptions, readonly autoFailback: boolean) {
    this.rng = new Rng(o.seed);
    this.t = { ...SIM_TIMING, ...o.timing };
    this.stepFn = o.step ?? machineStep;
    this.checkSafety = o.checkSafety ?? o.policy !== 'ignore';
    const mk = (name: NodeName): SimNode => ({
      name, version: 0, cfg: this.machineConfig(name, 0), toldIsolated: false, alive: false, gen: 0, pausedUntil: 0, incarnation: 0,
      machine: initialState(this.machineConfig(name, 0)), disk: null,
      hb: { up: false, lastHeardAt: null, peerInc: null, peerSentAt: null, ackSentAt: null },
      witnessAck: null, nextRequest: 0, pending: new Map(), sides: {}, copies: {}, nextAloneId: 1,
    });
    this.nodes = { alpha: mk('alpha'), beta: mk('beta') };
    for (const v of VOLUMES) {
      this.volumes[v] = { connected: false, resyncDoneAt: null, source: null };
      this.latest[v] = { id: 0, node: null, at: 0 };
      for (const n of NODES) this.nodes[n].copies[v] = { head: 0, known: 'UpToDate', aloneOk: false, asking: null, meetings: 0, askedAt: 0, facts: '' };
    }
  }

  machineConfig(self: NodeName, version: number): MachineConfig {
    const t = this.t;
    return {
      self, peer: other(self), policy: this.o.policy,
      pools: (this.configs[version] ?? []).map((p) => ({ name: p.name, volumes: [p.volume], preferredNode: p.preferred, autoFailback: this.autoFailback, control: p.control })),
      leaseMs: t.leaseMs, takeoverMarginMs: t.marginMs, fenceRetryMs: t.fenceRetryMs,
      claimRetryMs: t.claimRetryMs, startWaitMs: t.startWaitMs, witnessTimeoutMs: t.witnessTimeoutMs,
    };
  }

  get newest(): number {
    return this.configs.length - 1;
  }

  /** The pool holding the volume in the given configuration version. */
  poolOf(volume: string, version = this.newest): SimPool | undefined {
    return this.configs[version]?.find((p) => p.volume === volume);
  }

  note(line: string): void {
    this.trace.push(`${String(this.now).padStart(6)} ${line}`);
    if (this.trace.length > TRACE_MAX) this.trace.shift();
  }

  violation(what: string): void {
    this.violations.push(`t=${this.now}: ${what}`);
    this.note(`VIOLATION ${what}`);
  }

  delay(lo: number, hi: number): number {
    return this.now + this.rng.int(lo, hi);
  }

  paused(n: SimNode): boolean {
    return this.now < n.pausedUntil;
  }

  // -------------------------------------------------------------------------- nodes

  boot(n: SimNode): void {
    n.alive = true;
    n.gen += 1;
    n.pausedUntil = 0;
    n.incarnation = 1_000_000 + this.now * 10 + n.gen;
    n.nextRequest = 0;
    n.pending = new Map();
    n.hb = { up: false, lastHeardAt: null, peerInc: null, peerSentAt: null, ackSentAt: null };
    n.witnessAck = null;
    n.toldIsolated = false;
    for (const v of VOLUMES) {
      n.sides[v] = { primary: false, exported: false, suspended: false, since: 0, lastWriteAt: null };
      const c = n.copies[v];
      if (c !== undefined) { c.aloneOk = false; c.asking = null; c.facts = ''; }
    }
    n.machine = initialState(n.cfg);
    this.note(`${n.name}: start (incarnation ${n.incarnation}, configuration version ${n.version}) with ${JSON.stringify(n.disk)}`);
    this.feed(n, { type: 'start', now: this.now, persisted: n.disk });
    this.sendFacts(n);
    this.tellIsolation(n);
    this.q.push(this.delay(1, this.t.intervalMs), { k: 'tick', node: n.name, gen: n.gen });
  }

  kill(n: SimNode, why: string): void {
    if (!n.alive) return;
    this.lastDownAt = this.now;
    n.alive = false;
    n.gen += 1;
    for (const s of Object.values(n.sides)) { s.primary = false; s.exported = false; s.suspended = false; }
    this.note(`${n.name}: DOWN (${why})`);
    this.refreshLinks();
  }

  feed(n: SimNode, e: MachineEvent): void {
    const r = this.stepFn(n.cfg, n.machine, e);
    n.machine = r.state;
    this.checkStep(n, e, r);
    for (const a of r.actions) this.carry(n, a);
  }

  /** Invariant 4, on every step: what the machine may not do to a pool by its control, or while its node is isolated. */
  checkStep(n: SimNode, e: MachineEvent, r: StepResult): void {
    const control = (pool: string): PoolControl | undefined => n.cfg.pools.find((p) => p.name === pool)?.control;
    for (const a of r.actions) {
      if (a.type === 'activate' && control(a.pool) !== undefined && control(a.pool) !== 'managed') this.violation(`${n.name} activated pool ${a.pool}, which is ${control(a.pool) ?? ''} there`);
      if (a.type === 'activate' && r.state.membership !== 'member') this.violation(`${n.name} activated pool ${a.pool} while ${r.state.membership}`);
      if ((a.type === 'deactivate' || a.type === 'suspend') && control(a.pool) === 'unmanaged') this.violation(`${n.name}: ${a.type} of pool ${a.pool}, which is unmanaged there`);
    }
    if (!n.toldIsolated) return;
    const present = r.state.peer.up && r.state.peer.stateSinceUp;
    const handedOver = e.type === 'peer-message' && e.message.kind === 'handover';
    for (const a of r.actions) {
      const what = a.type === 'fence' ? 'started a fence'
        : a.type === 'witness' && a.request === 'claim' ? 'asked the witness for CLAIM'
          : a.type === 'log' && a.event === 'takeover' ? `took a pool over (${a.message})`
            : a.type === 'activate' && !present && !handedOver ? `activated pool ${a.pool} without its peer` : null;
      if (what !== null) this.violation(`${n.name} ${what} while it cannot reach its gateway`);
    }
  }

  sendFacts(n: SimNode): void {
    const configured = new Set(n.cfg.pools.flatMap((p) => p.volumes));
    for (const name of VOLUMES) {
      const c = n.copies[name];
      const v = this.volumes[name];
      if (c === undefined || v === undefined) continue;
      // as the daemon does: only volumes of its configuration, and all of a volume's facts again when it comes back
      if (!configured.has(name)) { c.facts = ''; continue; }
      const inSync = v.connected && v.resyncDoneAt === null && this.nodes.alpha.copies[name]?.head === this.nodes.beta.copies[name]?.head;
      const facts = { diskState: c.known, connected: v.connected, inSync } as const;
      const key = `${facts.diskState}/${facts.connected}/${facts.inSync}`;
      if (key === c.facts) continue;
      c.facts = key;
      this.feed(n, { type: 'volume', now: this.now, name, facts });
    }
  }

  /** The node's gateway check reports a change to its machine (when the node runs and is not paused). */
  tellIsolation(n: SimNode): void {
    const isolated = this.isolated[n.name] > 0;
    if (!n.alive || isolated === n.toldIsolated) return;
    n.toldIsolated = isolated;
    this.feed(n, { type: 'isolation', now: this.now, isolated, detail: isolated ? '192.0.2.254: no reply' : '192.0.2.254 answers' });
  }

  carry(n: SimNode, a: MachineAction): void {
    switch (a.type) {
      case 'persist': n.disk = a.state; return;
      case 'activate': {
        const volume = this.poolVolume.get(a.pool) ?? '';
        const copy = n.copies[volume];
        const last = this.latest[volume];
        if (this.checkSafety && copy !== undefined && last !== undefined && copy.head !== last.id) {
          this.violation(`${n.name} activated ${a.pool} (term ${a.term}) on a copy of ${volume} missing write #${last.id}, acknowledged by ${last.node ?? '?'} at t=${last.at}`);
        }
        const side = n.sides[volume];
        if (side !== undefined) side.primary = true;
        this.refreshLinks();
        this.q.push(this.delay(5, 60), { k: 'activated', node: n.name, gen: n.gen, pool: a.pool });
        return;
      }
      case 'deactivate': {
        const side = n.sides[this.poolVolume.get(a.pool) ?? ''];
        if (side !== undefined) side.exported = false;
        this.q.push(this.delay(5, 60), { k: 'deactivated', node: n.name, gen: n.gen, pool: a.pool });
        return;
      }
      case 'suspend': { const s = n.sides[this.poolVolume.get(a.pool) ?? '']; if (s !== undefined) s.suspended = true; return; }
      case 'resume': { const s = n.sides[this.poolVolume.get(a.pool) ?? '']; if (s !== undefined) s.suspended = false; return; }
      case 'fence': this.q.push(this.delay(20, 300), { k: 'fence', node: n.name, gen: n.gen, seq: a.seq }); return;
      case 'witness': this.askWitness(n, a.request, a.seq); return;
      case 'alone-decision': {
        const c = n.copies[a.volume];
        if (c === undefined || c.asking !== a.id) return;
        c.asking = null;
        if (!a.allow) return;
        c.aloneOk = c.meetings === c.askedAt;
        this.write(n, a.volume); // the write that asked is acknowledged now (mirrored, if the copies met meanwhile)
        return;
      }
      case 'send-peer': this.sendPeer(n, a.message); return;
      case 'command-result': return;
      case 'log':
        if (a.event === 'takeover') this.takeovers += 1;
        this.note(`${n.name}: [${a.level}] ${a.event}: ${a.message}`);
    }
  }

  /** A delivery time on a path that keeps its order (a TCP stream; a UDP path, almost always). */
  fifo(path: string, lo: number, hi: number): number {
    const at = Math.max(this.delay(lo, hi), this.lastDelivery.get(path) ?? 0);
    this.lastDelivery.set(path, at);
    return at;
  }

  sendPeer(n: SimNode, message: PeerMessage): void {
    if (!this.syncUp) return;
    const to = other(n.name);
    this.q.push(this.fifo(`${n.name}>${to}`, 1, 15), { k: 'msg', node: to, gen: this.nodes[to].gen, epoch: this.epoch, message });
  }

  askWitness(n: SimNode, request: WitnessRequest | 'renew', seq: number): void {
    const id = n.nextRequest++;
    n.pending.set(id, { request, seq, sentAt: this.now });
    this.q.push(this.now + this.t.witnessTimeoutMs, { k: 'w-timeout', node: n.name, gen: n.gen, id });
    const peer = other(n.name);
    const base = { clusterId: CLUSTER_ID, requestId: BigInt(n.incarnation) * 100_000n + BigInt(id), sender: n.name };
    const req: WitnessRequestMessage =
      request === 'renew' ? { ...base, type: 'renew', leaseMs: this.t.leaseMs, subject: '', clear: null }
        : request === 'alone' ? { ...base, type: 'alone', leaseMs: this.t.leaseMs, subject: '', clear: null }
          : request === 'claim' ? { ...base, type: 'claim', leaseMs: this.t.leaseMs, subject: peer, clear: null }
            : request === 'clear-alone' ? { ...base, type: 'clear', leaseMs: 0, subject: n.name, clear: 'alone' }
              : { ...base, type: 'clear', leaseMs: 0, subject: peer, clear: 'fenced' };
    if (this.wcut[n.name] === 0) this.q.push(this.fifo(`${n.name}>w`, 1, 20), { k: 'w-arrive', from: n.name, req, id, gen: n.gen });
  }

  // -------------------------------------------------------------------------- links and data

  /** The sync link (TCP: both directions or nothing) and each volume's replication over it. */
  refreshLinks(): void {
    const a = this.nodes.alpha;
    const b = this.nodes.beta;
    const up = a.alive && b.alive && !this.paused(a) && !this.paused(b) && this.cut.alpha === 0 && this.cut.beta === 0;
    if (up !== this.syncUp) {
      this.syncUp = up;
      this.note(`sync link ${up ? 'UP' : 'down'}`);
      if (up) {
        this.epoch += 1;
        // as the daemon does on every (re)connect: the peer's machine needs ours first
        for (const n of [a, b]) {
          this.sendPeer(n, stateMessage(n.machine));
        }
        this.pushConfig();
      }
    }
    for (const name of VOLUMES) {
      const v = this.volumes[name];
      const ca = a.copies[name];
      const cb = b.copies[name];
      if (v === undefined || ca === undefined || cb === undefined) continue;
      // the replicas refuse to mirror between two primaries
      const want = up && !(a.sides[name]?.primary === true && b.sides[name]?.primary === true);
      if (want && !v.connected) {
        if (ca.head === cb.head) {
          v.resyncDoneAt = null;
          ca.known = 'UpToDate';
          cb.known = 'UpToDate';
        } else {
          const source: NodeName = ca.head > cb.head ? 'alpha' : 'beta';
          const target = this.nodes[other(source)];
          if (target.sides[name]?.primary === true) continue; // a primary is never a sync target: it stays apart
          v.source = source;
          v.resyncDoneAt = this.now + this.t.resyncMs;
          const tc = target.copies[name];
          if (tc !== undefined) tc.known = 'Inconsistent';
        }
        v.connected = true;
        for (const c of [ca, cb]) { c.aloneOk = false; c.meetings += 1; }
      } else if (!want && v.connected) {
        v.connected = false;
        v.resyncDoneAt = null;
      }
      if (v.connected && v.resyncDoneAt !== null && this.now >= v.resyncDoneAt && v.source !== null) {
        const src = this.nodes[v.source].copies[name];
        const dst = this.nodes[other(v.source)].copies[name];
        if (src !== undefined && dst !== undefined) { dst.head = src.head; dst.known = 'UpToDate'; }
        v.resyncDoneAt = null;
      }
    }
  }

  /** One client write to the volume on node n, if the node serves its pool now. */
  write(n: SimNode, volume: string): void {
    const side = n.sides[volume];
    const copy = n.copies[volume];
    const v = this.volumes[volume];
    const last = this.latest[volume];
    if (side === undefined || copy === undefined || v === undefined || last === undefined) return;
    if (!n.alive || this.paused(n) || !side.exported || side.suspended) return;
    const mirrored = v.connected;
    if (mirrored && v.resyncDoneAt !== null && v.source !== n.name) return;
    if (!mirrored && !copy.aloneOk) {
      if (copy.asking === null) {
        copy.asking = n.nextAloneId++;
        copy.askedAt = copy.meetings;
        this.feed(n, { type: 'alone-request', now: this.now, volume, id: copy.asking });
      }
      return;
    }
    if (this.checkSafety) {
      if (copy.head !== last.id) {
        this.violation(`two writers on ${volume}: ${n.name} acknowledged a write on a copy missing write #${last.id}, acknowledged by ${last.node ?? '?'} at t=${last.at}`);
      }
      const o = this.nodes[other(n.name)];
      const os = o.sides[volume];
      if (o.alive && os !== undefined && os.exported && !os.suspended && os.lastWriteAt !== null && os.lastWriteAt >= side.since) {
        this.violation(`two writers on ${volume}: ${n.name} writes while ${o.name} holds it writable and wrote at t=${os.lastWriteAt}`);
      }
    }
    const id = ++this.writeIds;
    this.latest[volume] = { id, node: n.name, at: this.now };
    copy.head = id;
    if (mirrored && v.resyncDoneAt === null) {
      const oc = this.nodes[other(n.name)].copies[volume];
      if (oc !== undefined) oc.head = id;
    }
    side.lastWriteAt = this.now;
    this.writes += 1;
  }

  // -------------------------------------------------------------------------- events

  run(): void {
    const end = (this.o.nemesisMs ?? 12_000) + (this.o.settleMs ?? 8_000);
    for (;;) {
      const next = this.q.pop();
      if (next === undefined || next.at > end || this.violations.length >= 3) break;
      this.now = next.at;
      const e = next.e;
      const target = nodeOf(e);
      if (target !== null) {
        const n = this.nodes[target];
        if (!n.alive || !('gen' in e) || e.gen !== n.gen) continue;
        if (this.paused(n)) {
          // a paused process reads nothing; datagrams and the stalled TCP stream are lost, the rest waits
          if (e.k !== 'hb' && e.k !== 'msg') this.q.push(n.pausedUntil, e);
          continue;
        }
      }
      this.refreshLinks();
      this.dispatch(e);
      this.refreshLinks();
    }
    this.now = end;
    if (this.o.checkLiveness !== false) this.checkLiveness();
  }

  dispatch(e: Ev): void {
    switch (e.k) {
      case 'tick': return this.tick(this.nodes[e.node]);
      case 'hb': return this.heartbeat(this.nodes[e.node], e);
      case 'msg': if (e.epoch === this.epoch && this.syncUp) this.feed(this.nodes[e.node], { type: 'peer-message', now: this.now, message: e.message }); return;
      case 'cfg': if (e.epoch === this.epoch && this.syncUp) this.adoptConfig(this.nodes[e.node], e.version); return;
      case 'iso': return this.tellIsolation(this.nodes[e.node]);
      case 'op':
        if (!e.apply()) this.q.push(this.now + OPERATOR_RETRY_MS, e);
        return;
      case 'w-arrive': return this.witnessArrive(e);
      case 'w-reply': case 'w-timeout': {
        const n = this.nodes[e.node];
        const p = n.pending.get(e.id);
        if (p === undefined) return;
        n.pending.delete(e.id);
        const granted = e.k === 'w-reply' && e.granted;
        const reason = e.k === 'w-reply' ? e.reason : 'timeout';
        if (p.request === 'renew') { if (granted) n.witnessAck = Math.max(n.witnessAck ?? -Infinity, p.sentAt); return; }
        this.feed(n, { type: 'witness-reply', now: this.now, request: p.request, granted, reason, seq: p.seq });
        return;
      }
      case 'activated': {
        const n = this.nodes[e.node];
        const side = n.sides[this.poolVolume.get(e.pool) ?? ''];
        if (side !== undefined) { side.exported = true; side.suspended = false; side.since = this.now; }
        this.feed(n, { type: 'activated', now: this.now, pool: e.pool, ok: true });
        return;
      }
      case 'deactivated': {
        const n = this.nodes[e.node];
        const side = n.sides[this.poolVolume.get(e.pool) ?? ''];
        if (side !== undefined) { side.primary = false; side.suspended = false; }
        this.refreshLinks();
        this.feed(n, { type: 'deactivated', now: this.now, pool: e.pool });
        return;
      }
      case 'fence': {
        const n = this.nodes[e.node];
        if (this.fenceBroken > 0) { this.feed(n, { type: 'fence-done', now: this.now, ok: false, detail: 'the fence device does not answer', seq: e.seq }); return; }
        const victim = this.nodes[other(n.name)];
        if (victim.alive) {
          this.kill(victim, `fenced by ${n.name}`);
          // a fence power-cycles the node: it boots again a little later
          this.q.push(this.delay(1000, 5000), { k: 'fault', fault: { kind: 'revive', node: victim.name } });
        }
        this.feed(n, { type: 'fence-done', now: this.now, ok: true, detail: 'powered off', seq: e.seq });
        return;
      }
      case 'fault': return this.fault(e.fault);
      case 'heal': if (!this.ended) e.undo(); return;
      case 'end': return this.end();
    }
  }

  tick(n: SimNode): void {
    this.q.push(this.now + this.t.intervalMs, { k: 'tick', node: n.name, gen: n.gen });
    if (n.hb.up && n.hb.lastHeardAt !== null && this.now - n.hb.lastHeardAt >= this.t.leaseMs) {
      n.hb.up = false;
      this.feed(n, { type: 'peer-down', now: this.now, lastHeardAt: n.hb.lastHeardAt });
    }
    this.sendFacts(n);
    this.feed(n, { type: 'tick', now: this.now, peerAckSentAt: n.hb.ackSentAt, witnessAckSentAt: n.witnessAck });
    const peer = other(n.name);
    if (this.cut[n.name] === 0) {
      this.q.push(this.delay(1, 20), {
        k: 'hb', node: peer, gen: this.nodes[peer].gen, inc: n.incarnation, sentAt: this.now, echoInc: n.hb.peerInc, echoSentAt: n.hb.peerSentAt,
      });
    }
    if (this.o.policy === 'witness') this.askWitness(n, 'renew', 0);
    for (const v of VOLUMES) this.write(n, v);
  }

  heartbeat(n: SimNode, e: Extract<Ev, { k: 'hb' }>): void {
    const hb = n.hb;
    if (hb.peerInc !== null && (e.inc < hb.peerInc || (e.inc === hb.peerInc && hb.peerSentAt !== null && e.sentAt <= hb.peerSentAt))) return;
    const restarted = hb.peerInc !== null && e.inc !== hb.peerInc;
    hb.peerInc = e.inc;
    hb.peerSentAt = e.sentAt;
    hb.lastHeardAt = this.now;
    if (e.echoInc === n.incarnation && e.echoSentAt !== null) hb.ackSentAt = Math.max(hb.ackSentAt ?? -Infinity, e.echoSentAt);
    if (!hb.up || restarted) {
      hb.up = true;
      this.feed(n, { type: 'peer-up', now: this.now, incarnation: e.inc });
    }
  }

  witnessArrive(e: Extract<Ev, { k: 'w-arrive' }>): void {
    if (this.wcut[e.from] > 0) return;
    const d = witnessHandle(this.witness, this.now, e.req);
    this.witness = d.state;
    if (e.req.type !== 'renew') this.note(`witness: ${e.req.type}${e.req.clear === null ? '' : `-${e.req.clear}`} from ${e.from}${e.req.subject === '' ? '' : ` about ${e.req.subject}`}: ${d.reply.granted ? 'GRANT' : `REFUSE ${d.reply.reason}`}`);
    this.q.push(this.fifo(`w>${e.from}`, 1, 20), { k: 'w-reply', node: e.from, gen: e.gen, id: e.id, granted: d.reply.granted, reason: d.reply.reason });
  }

  // -------------------------------------------------------------------------- the nemesis

  later(ms: number, undo: () => void): void {
    this.q.push(this.now + ms, { k: 'heal', undo });
  }

  fault(f: Fault): void {
    if (this.ended && f.kind !== 'revive') return;
    const careful = this.o.careful === true;
    if (careful && this.now < this.quietUntil && f.kind !== 'revive') return;
    switch (f.kind) {
      case 'cut': {
        const from: NodeName[] = f.from === 'both' ? ['alpha', 'beta'] : [f.from];
        for (const x of from) this.cut[x] += 1;
        this.later(f.ms, () => { for (const x of from) this.cut[x] -= 1; this.note(`nemesis: heal ${describeFault(f)}`); });
        break;
      }
      case 'witness-cut':
        this.wcut[f.node] += 1;
        this.later(f.ms, () => { this.wcut[f.node] -= 1; this.note(`nemesis: heal ${describeFault(f)}`); });
        break;
      case 'crash': {
        const n = this.nodes[f.node];
        if (!n.alive || (careful && !this.allInSync())) return;
        this.kill(n, 'crashed');
        this.q.push(this.now + f.ms, { k: 'fault', fault: { kind: 'revive', node: f.node } });
        break;
      }
      case 'revive': {
        const n = this.nodes[f.node];
        if (n.alive) return;
        const peer = this.nodes[other(f.node)];
        if (careful && (this.cut.alpha > 0 || this.cut.beta > 0 || (peer.alive && this.paused(peer)) || (!peer.alive && !this.ended))) {
          this.q.push(this.now + 200, { k: 'fault', fault: f });
          return;
        }
        if (careful) this.quietUntil = this.now + this.t.startWaitMs + 3 * this.t.leaseMs;
        this.note(`nemesis: ${describeFault(f)}`);
        this.boot(n);
        return;
      }
      case 'pause': {
        const n = this.nodes[f.node];
        if (!n.alive || this.paused(n)) return;
        n.pausedUntil = this.now + f.ms;
        this.q.push(n.pausedUntil, { k: 'heal', undo: () => this.note(`nemesis: ${n.name} resumes`) });
        break;
      }
      case 'fence-broken':
        this.fenceBroken += 1;
        this.later(f.ms, () => { this.fenceBroken -= 1; this.note(`nemesis: heal ${describeFault(f)}`); });
        break;
      case 'isolate': {
        const cuts = (d: number): void => {
          if (!f.cut) return;
          this.cut[f.node] += d;
          this.cut[other(f.node)] += d;
          this.wcut[f.node] += d;
        };
        this.isolated[f.node] += 1;
        cuts(1);
        this.q.push(this.now, { k: 'iso', node: f.node, gen: this.nodes[f.node].gen });
        this.later(f.ms, () => {
          this.isolated[f.node] -= 1;
          cuts(-1);
          this.q.push(this.now, { k: 'iso', node: f.node, gen: this.nodes[f.node].gen });
          this.note(`nemesis: heal ${describeFault(f)}`);
        });
        break;
      }
      case 'control': {
        const pool = this.poolOf(`v${f.slot}`);
        if (pool === undefined || pool.control !== 'managed') { this.note(`operator: skipped (${describeFault(f)}): the pool is ${pool?.control ?? 'removed'}`); return; }
        this.operate(`${f.control === 'exported' ? 'export' : 'unmanage'} ${pool.name}`, f.via, (pools) => pools.map((p) => (p.name === pool.name && p.control === 'managed' ? { ...p, control: f.control } : p)));
        this.q.push(this.now + f.ms, {
          k: 'op', what: `${f.control === 'exported' ? 'import' : 'manage'} ${pool.name}`,
          apply: () => this.change(null, `${f.control === 'exported' ? 'import' : 'manage'} ${pool.name}`,
            (pools) => pools.map((p) => (p.name === pool.name && p.control === f.control ? { ...p, control: 'managed' } : p))),
        });
        break;
      }
      case 'leave': {
        const n = this.nodes[f.node];
        if (!n.alive || this.paused(n)) { this.note(`operator: skipped (${describeFault(f)}): ${f.node} does not run`); return; }
        this.command(n, { kind: 'offline', force: false });
        if (f.remove) {
          this.q.push(this.now + Math.floor(f.ms / 2), {
            k: 'op', what: `node remove ${f.node}`,
            apply: () => { const o = this.nodes[other(f.node)]; if (o.alive && !this.paused(o)) this.command(o, { kind: 'remove-node', node: f.node, force: false }); return true; },
          });
        }
        this.q.push(this.now + f.ms, { k: 'op', what: `node online ${f.node}`, apply: () => this.bringOnline(f.node) });
        break;
      }
      case 'remove': {
        const volume = `v${f.slot}`;
        const pool = this.poolOf(volume);
        if (pool === undefined || this.removing.has(volume)) { this.note(`operator: skipped (${describeFault(f)}): it is being removed already`); return; }
        this.removing.add(volume);
        this.operate(`remove ${pool.name}`, f.via, (pools) => pools.filter((p) => p.name !== pool.name));
        this.q.push(this.now + OPERATOR_RETRY_MS, { k: 'op', what: `create a pool of ${volume} again`, apply: () => this.createAgain(pool, f.preferred) });
        break;
      }
    }
    this.note(`nemesis: ${describeFault(f)}`);
  }

  // -------------------------------------------------------------------------- the operator and the configuration

  command(n: SimNode, command: Command): void {
    this.feed(n, { type: 'command', now: this.now, id: this.nextCommand++, command });
  }

  /** node add on the peer if it removed the node, then node online until the node is a member (each try waits for both to run). */
  bringOnline(name: NodeName): boolean {
    const n = this.nodes[name];
    const o = this.nodes[other(name)];
    if (n.machine.membership === 'member') return true;
    if (!n.alive || this.paused(n) || !o.alive || this.paused(o)) return false;
    if (o.machine.peerMembership === 'removed') this.command(o, { kind: 'add-node', node: name });
    this.command(n, { kind: 'online', force: false });
    return (n.machine.membership as string) === 'member';
  }

  /** Queues a configuration change: made as soon as it can be (see change). */
  operate(what: string, via: NodeName, f: (pools: readonly SimPool[]) => readonly SimPool[]): void {
    // not made by the end of the faults: given up (the operator then manages every pool)
    this.q.push(this.now, { k: 'op', what, apply: () => this.ended || this.change(via, what, f) });
  }

  /**
   * The operator changes the configuration on a running node that has its newest version (via if it
   * can, else the other); false when none can now. The node takes it at once, and sends it to its peer
   * over the sync link.
   */
  change(via: NodeName | null, what: string, f: (pools: readonly SimPool[]) => readonly SimPool[]): boolean {
    const can = (x: NodeName): boolean => this.nodes[x].alive && !this.paused(this.nodes[x]) && this.nodes[x].version === this.newest;
    const at = via !== null && can(via) ? via : NODES.find(can);
    if (at === undefined) return false;
    const current = this.configs[this.newest] ?? [];
    const next = f(current);
    if (next.length === current.length && next.every((p, i) => p === current[i])) { this.note(`operator: ${what}: nothing to change`); return true; }
    this.configs.push(next);
    for (const p of next) this.poolVolume.set(p.name, p.volume);
    this.note(`operator on ${at}: ${what}: version ${this.newest}: ${next.map((p) => `${p.name}(${p.volume}, ${p.preferred}, ${p.control})`).join(' ')}`);
    this.adoptConfig(this.nodes[at], this.newest);
    return true;
  }

  /** A node takes a newer configuration (from the operator or over the sync link), as the daemon does. */
  adoptConfig(n: SimNode, version: number): void {
    if (version <= n.version || !n.alive) return;
    n.version = version;
    n.cfg = this.machineConfig(n.name, version);
    this.note(`${n.name}: configuration version ${version}`);
    // the daemon reports its volumes' facts with the new configuration, then the change itself
    this.sendFacts(n);
    this.feed(n, { type: 'reconfigure', now: this.now });
    this.pushConfig();
  }

  /** Over the sync link, a node behind gets the newer configuration (once per link and version). */
  pushConfig(): void {
    if (!this.syncUp) return;
    for (const from of NODES) {
      const to = other(from);
      const v = this.nodes[from].version;
      const sent = this.configSent[to];
      if (v <= this.nodes[to].version || (sent.version >= v && sent.epoch === this.epoch)) continue;
      this.configSent[to] = { version: v, epoch: this.epoch };
      this.q.push(this.fifo(`${from}>${to}`, 1, 15), { k: 'cfg', node: to, gen: this.nodes[to].gen, epoch: this.epoch, version: v });
    }
  }

  /**
   * A removed pool's volume goes into a new pool once the removal reached both nodes, both let the
   * old pool go, and the copies are in sync (the operator waits for that, as `pool remove` and a
   * sync check would): nobody writes the volume meanwhile, so its owner-to-be has all of it.
   */
  createAgain(old: SimPool, preferred: NodeName): boolean {
    const v = this.volumes[old.volume];
    const ready = NODES.every((x) => this.nodes[x].alive && this.nodes[x].version === this.newest && !this.nodes[x].machine.pools.some((p) => p.name === old.name)) &&
      v !== undefined && v.connected && v.resyncDoneAt === null && this.nodes.alpha.copies[old.volume]?.head === this.nodes.beta.copies[old.volume]?.head;
    if (!ready) return false;
    const name = `${old.name.split('.')[0] ?? old.name}.${++this.poolNames}`;
    const done = this.change(null, `create ${name} with ${old.volume}`, (pools) => [...pools, { name, volume: old.volume, preferred, control: 'managed' }]);
    if (done) this.removing.delete(old.volume);
    return done;
  }

  allInSync(): boolean {
    return VOLUMES.every((v) => this.volumes[v]?.connected === true && this.volumes[v]?.resyncDoneAt === null &&
      this.nodes.alpha.copies[v]?.head === this.nodes.beta.copies[v]?.head);
  }

  end(): void {
    this.note('nemesis: END: every link heals, every node runs');
    this.ended = true;
    this.cut.alpha = 0;
    this.cut.beta = 0;
    this.wcut.alpha = 0;
    this.wcut.beta = 0;
    this.fenceBroken = 0;
    for (const n of NODES) {
      this.isolated[n] = 0;
      this.q.push(this.now, { k: 'iso', node: n, gen: this.nodes[n].gen });
    }
    for (const n of NODES) if (!this.nodes[n].alive) this.fault({ kind: 'revive', node: n });
    for (const n of NODES) this.q.push(this.now, { k: 'op', what: `node online ${n}`, apply: () => this.bringOnline(n) });
    // the operator brings every pool back under the cluster's control (pools removed come back as they can)
    this.q.push(this.now, {
      k: 'op', what: 'manage every pool',
      apply: () => this.change(null, 'manage every pool', (pools) => (pools.every((p) => p.control === 'managed') ? pools : pools.map((p) => ({ ...p, control: 'managed' })))),
    });
  }

  checkLiveness(): void {
    for (const x of NODES) {
      if (this.nodes[x].version !== this.newest) this.violation(`liveness: ${x} runs configuration version ${this.nodes[x].version}, not the newest (${this.newest})`);
    }
    // (a fence that went on after the faults stopped may have left too little time to meet and resync first)
    const settled = this.now - this.lastDownAt >= 3 * this.t.startWaitMs;
    for (const v of VOLUMES) {
      if (this.poolOf(v) !== undefined) continue;
      if (settled) this.violation(`liveness: no pool holds ${v}: it was removed and never created again`);
      else this.note(`liveness: no pool holds ${v} yet: a node went down at t=${this.lastDownAt}`);
    }
    for (const p of this.configs[this.newest] ?? []) {
      const serving = NODES.filter((x) => {
        const n = this.nodes[x];
        const view = poolViews(n.machine).find((v) => v.name === p.name);
        const side = n.sides[p.volume];
        return n.alive && view?.phase === 'ACTIVE' && side !== undefined && side.exported && !side.suspended;
      });
      const views = NODES.map((x) => {
        const v = poolViews(this.nodes[x].machine).find((y) => y.name === p.name);
        return `${x}: ${v?.phase ?? '?'}${v?.reason === null || v === undefined ? '' : ` (${v.reason})`}`;
      }).join('; ');
      if (serving.length !== 1) { this.violation(`liveness: pool ${p.name} is ACTIVE on ${serving.length} nodes after the faults stopped (${views})`); continue; }
      const w = serving[0] === undefined ? null : this.nodes[serving[0]].sides[p.volume]?.lastWriteAt ?? null;
      if (w === null || w < this.now - 1000) this.violation(`liveness: pool ${p.name} is ACTIVE on ${serving[0] ?? '?'} but no write was acknowledged in the last second (${views})`);
    }
  }
}

export function runSim(o: SimOptions): SimResult {
  const rng = new Rng(o.seed ^ 0x5bd1e995);
  const nemesisMs = o.nemesisMs ?? 12_000;
  const leaseMs = o.timing?.leaseMs ?? SIM_TIMING.leaseMs;
  const faults = drawSchedule(rng, { untilMs: nemesisMs, leaseMs, witness: o.policy === 'witness', fence: o.policy === 'fence' });
  const w = new World(o, rng.chance(0.5));
  const operations = o.operator === false ? [] : drawOperations(new Rng(o.seed ^ 0x68e31da4), { untilMs: nemesisMs, leaseMs, slots: VOLUMES.length });
  const membership = o.membership === false ? [] : drawMembership(new Rng(o.seed ^ 0x2f6b1c37), { untilMs: nemesisMs, leaseMs, slots: VOLUMES.length });
  // by time; at equal times the faults first (the sort is stable)
  const schedule: ScheduledFault[] = [...faults, ...operations, ...membership].sort((a, b) => a.at - b.at);
  for (const s of schedule) w.q.push(s.at, { k: 'fault', fault: s.fault });
  w.q.push(nemesisMs, { k: 'end' });
  for (const n of NODES) w.boot(w.nodes[n]);
  w.run();
  return {
    seed: o.seed, policy: o.policy, violations: w.violations, writes: w.writes, takeovers: w.takeovers, trace: w.trace,
    schedule: schedule.map((s) => `t=${s.at}: ${describeFault(s.fault)}`),
  };
}

/** Everything needed to replay a failing run. */
export function formatFailure(r: SimResult, replay: string): string {
  return [
    `cluster simulator: seed ${r.seed}, policy ${r.policy}: ${r.violations.length} violation(s)`,
    ...r.violations.map((v) => `  ${v}`),
    `replay: ${replay}`,
    'schedule:', ...r.schedule.map((s) => `  ${s}`),
    `trace (last ${r.trace.length} lines):`, ...r.trace.map((t) => `  ${t}`),
  ].join('\n');
}
