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
//    on exactly one node, which is writing.
// Under policy `ignore`, 1 and 2 are the documented hazard and are not checked.
import { initialState, persistedOf, poolViews, step as machineStep, type MachineState, type StepResult } from '../../src/cluster/machine';
import type {
  FencingPolicy, MachineAction, MachineConfig, MachineEvent, PeerMessage, PersistedState, WitnessRequest,
} from '../../src/cluster/machine-types';
import { handle as witnessHandle, startWitnessState, type WitnessState } from '../../src/cluster/witness-rules';
import type { WitnessRequestMessage } from '../../src/protocol/witness/codec';
import { EventQueue, NODES, Rng, describeFault, drawSchedule, other, type Fault, type NodeName } from './sim-support';

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

const POOLS = [{ name: 'p0', volume: 'v0', preferred: 'alpha' as NodeName }, { name: 'p1', volume: 'v1', preferred: 'beta' as NodeName }];
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
  readonly cfg: MachineConfig;
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
  sides: Record<string, Side>;
  copies: Record<string, Copy>;
  nextAloneId: number;
}

type Ev =
  | { k: 'tick'; node: NodeName; gen: number }
  | { k: 'hb'; node: NodeName; gen: number; inc: number; sentAt: number; echoInc: number | null; echoSentAt: number | null }
  | { k: 'msg'; node: NodeName; gen: number; epoch: number; message: PeerMessage }
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
  readonly volumes: Record<string, { connected: boolean; resyncDoneAt: number | null; source: NodeName | null }> = {};
  readonly latest: Record<string, { id: number; node: NodeName | null; at: number }> = {};
  writeIds = 0;
  writes = 0;
  takeovers = 0;
  readonly violations: string[] = [];
  readonly trace: string[] = [];
  readonly stepFn: StepFn;
  readonly checkSafety: boolean;
  readonly t: SimTiming;

  constructor(readonly o: SimOptions, autoFailback: boolean) {
    this.rng = new Rng(o.seed);
    this.t = { ...SIM_TIMING, ...o.timing };
    const t = this.t;
    this.stepFn = o.step ?? machineStep;
    this.checkSafety = o.checkSafety ?? o.policy !== 'ignore';
    const cfg = (self: NodeName): MachineConfig => ({
      self, peer: other(self), policy: o.policy,
      pools: POOLS.map((p) => ({ name: p.name, volumes: [p.volume], preferredNode: p.preferred, autoFailback })),
      leaseMs: t.leaseMs, takeoverMarginMs: t.marginMs, fenceRetryMs: t.fenceRetryMs,
      claimRetryMs: t.claimRetryMs, startWaitMs: t.startWaitMs, witnessTimeoutMs: t.witnessTimeoutMs,
    });
    const mk = (name: NodeName): SimNode => ({
      name, cfg: cfg(name), alive: false, gen: 0, pausedUntil: 0, incarnation: 0, machine: initialState(cfg(name)), disk: null,
      hb: { up: false, lastHeardAt: null, peerInc: null, peerSentAt: null, ackSentAt: null },
      witnessAck: null, nextRequest: 0, pending: new Map(), sides: {}, copies: {}, nextAloneId: 1,
    });
    this.nodes = { alpha: mk('alpha'), beta: mk('beta') };
    for (const p of POOLS) {
      this.volumes[p.name] = { connected: false, resyncDoneAt: null, source: null };
      this.latest[p.name] = { id: 0, node: null, at: 0 };
      for (const n of NODES) this.nodes[n].copies[p.name] = { head: 0, known: 'UpToDate', aloneOk: false, asking: null, meetings: 0, askedAt: 0, facts: '' };
    }
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
    for (const p of POOLS) {
      n.sides[p.name] = { primary: false, exported: false, suspended: false, since: 0, lastWriteAt: null };
      const c = n.copies[p.name];
      if (c !== undefined) { c.aloneOk = false; c.asking = null; c.facts = ''; }
    }
    n.machine = initialState(n.cfg);
    this.note(`${n.name}: start (incarnation ${n.incarnation}) with ${JSON.stringify(n.disk)}`);
    this.feed(n, { type: 'start', now: this.now, persisted: n.disk });
    this.sendFacts(n);
    this.q.push(this.delay(1, this.t.intervalMs), { k: 'tick', node: n.name, gen: n.gen });
  }

  kill(n: SimNode, why: string): void {
    if (!n.alive) return;
    n.alive = false;
    n.gen += 1;
    for (const s of Object.values(n.sides)) { s.primary = false; s.exported = false; s.suspended = false; }
    this.note(`${n.name}: DOWN (${why})`);
    this.refreshLinks();
  }

  feed(n: SimNode, e: MachineEvent): void {
    const r = this.stepFn(n.cfg, n.machine, e);
    n.machine = r.state;
    for (const a of r.actions) this.carry(n, a);
  }

  sendFacts(n: SimNode): void {
    for (const p of POOLS) {
      const c = n.copies[p.name];
      const v = this.volumes[p.name];
      if (c === undefined || v === undefined) continue;
      const inSync = v.connected && v.resyncDoneAt === null && this.nodes.alpha.copies[p.name]?.head === this.nodes.beta.copies[p.name]?.head;
      const facts = { diskState: c.known, connected: v.connected, inSync } as const;
      const key = `${facts.diskState}/${facts.connected}/${facts.inSync}`;
      if (key === c.facts) continue;
      c.facts = key;
      this.feed(n, { type: 'volume', now: this.now, name: p.volume, facts });
    }
  }

  carry(n: SimNode, a: MachineAction): void {
    switch (a.type) {
      case 'persist': n.disk = a.state; return;
      case 'activate': {
        const copy = n.copies[a.pool];
        const last = this.latest[a.pool];
        if (this.checkSafety && copy !== undefined && last !== undefined && copy.head !== last.id) {
          this.violation(`${n.name} activated ${a.pool} (term ${a.term}) on a copy missing write #${last.id}, acknowledged by ${last.node ?? '?'} at t=${last.at}`);
        }
        const side = n.sides[a.pool];
        if (side !== undefined) side.primary = true;
        this.refreshLinks();
        this.q.push(this.delay(5, 60), { k: 'activated', node: n.name, gen: n.gen, pool: a.pool });
        return;
      }
      case 'deactivate': {
        const side = n.sides[a.pool];
        if (side !== undefined) side.exported = false;
        this.q.push(this.delay(5, 60), { k: 'deactivated', node: n.name, gen: n.gen, pool: a.pool });
        return;
      }
      case 'suspend': { const s = n.sides[a.pool]; if (s !== undefined) s.suspended = true; return; }
      case 'resume': { const s = n.sides[a.pool]; if (s !== undefined) s.suspended = false; return; }
      case 'fence': this.q.push(this.delay(20, 300), { k: 'fence', node: n.name, gen: n.gen, seq: a.seq }); return;
      case 'witness': this.askWitness(n, a.request, a.seq); return;
      case 'alone-decision': {
        const pool = POOLS.find((p) => p.volume === a.volume)?.name ?? '';
        const c = n.copies[pool];
        if (c === undefined || c.asking !== a.id) return;
        c.asking = null;
        if (!a.allow) return;
        c.aloneOk = c.meetings === c.askedAt;
        this.write(n, pool); // the write that asked is acknowledged now (mirrored, if the copies met meanwhile)
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
          const p = persistedOf(n.machine);
          this.sendPeer(n, { kind: 'state', pools: p.pools, maintenance: p.maintenance });
        }
      }
    }
    for (const p of POOLS) {
      const v = this.volumes[p.name];
      const ca = a.copies[p.name];
      const cb = b.copies[p.name];
      if (v === undefined || ca === undefined || cb === undefined) continue;
      // the replicas refuse to mirror between two primaries
      const want = up && !(a.sides[p.name]?.primary === true && b.sides[p.name]?.primary === true);
      if (want && !v.connected) {
        if (ca.head === cb.head) {
          v.resyncDoneAt = null;
          ca.known = 'UpToDate';
          cb.known = 'UpToDate';
        } else {
          const source: NodeName = ca.head > cb.head ? 'alpha' : 'beta';
          const target = this.nodes[other(source)];
          if (target.sides[p.name]?.primary === true) continue; // a primary is never a sync target: it stays apart
          v.source = source;
          v.resyncDoneAt = this.now + this.t.resyncMs;
          const tc = target.copies[p.name];
          if (tc !== undefined) tc.known = 'Inconsistent';
        }
        v.connected = true;
        for (const c of [ca, cb]) { c.aloneOk = false; c.meetings += 1; }
      } else if (!want && v.connected) {
        v.connected = false;
        v.resyncDoneAt = null;
      }
      if (v.connected && v.resyncDoneAt !== null && this.now >= v.resyncDoneAt && v.source !== null) {
        const src = this.nodes[v.source].copies[p.name];
        const dst = this.nodes[other(v.source)].copies[p.name];
        if (src !== undefined && dst !== undefined) { dst.head = src.head; dst.known = 'UpToDate'; }
        v.resyncDoneAt = null;
      }
    }
  }

  /** One client write to the pool on node n, if the node serves it now. */
  write(n: SimNode, pool: string): void {
    const side = n.sides[pool];
    const copy = n.copies[pool];
    const v = this.volumes[pool];
    const last = this.latest[pool];
    if (side === undefined || copy === undefined || v === undefined || last === undefined) return;
    if (!n.alive || this.paused(n) || !side.exported || side.suspended) return;
    const mirrored = v.connected;
    if (mirrored && v.resyncDoneAt !== null && v.source !== n.name) return;
    if (!mirrored && !copy.aloneOk) {
      if (copy.asking === null) {
        copy.asking = n.nextAloneId++;
        copy.askedAt = copy.meetings;
        this.feed(n, { type: 'alone-request', now: this.now, volume: POOLS.find((p) => p.name === pool)?.volume ?? '', id: copy.asking });
      }
      return;
    }
    if (this.checkSafety) {
      if (copy.head !== last.id) {
        this.violation(`two writers on ${pool}: ${n.name} acknowledged a write on a copy missing write #${last.id}, acknowledged by ${last.node ?? '?'} at t=${last.at}`);
      }
      const o = this.nodes[other(n.name)];
      const os = o.sides[pool];
      if (o.alive && os !== undefined && os.exported && !os.suspended && os.lastWriteAt !== null && os.lastWriteAt >= side.since) {
        this.violation(`two writers on ${pool}: ${n.name} writes while ${o.name} holds it writable and wrote at t=${os.lastWriteAt}`);
      }
    }
    const id = ++this.writeIds;
    this.latest[pool] = { id, node: n.name, at: this.now };
    copy.head = id;
    if (mirrored && v.resyncDoneAt === null) {
      const oc = this.nodes[other(n.name)].copies[pool];
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
        const side = n.sides[e.pool];
        if (side !== undefined) { side.exported = true; side.suspended = false; side.since = this.now; }
        this.feed(n, { type: 'activated', now: this.now, pool: e.pool, ok: true });
        return;
      }
      case 'deactivated': {
        const n = this.nodes[e.node];
        const side = n.sides[e.pool];
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
    for (const p of POOLS) this.write(n, p.name);
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
    }
    this.note(`nemesis: ${describeFault(f)}`);
  }

  allInSync(): boolean {
    return POOLS.every((p) => this.volumes[p.name]?.connected === true && this.volumes[p.name]?.resyncDoneAt === null &&
      this.nodes.alpha.copies[p.name]?.head === this.nodes.beta.copies[p.name]?.head);
  }

  end(): void {
    this.note('nemesis: END: every link heals, every node runs');
    this.ended = true;
    this.cut.alpha = 0;
    this.cut.beta = 0;
    this.wcut.alpha = 0;
    this.wcut.beta = 0;
    this.fenceBroken = 0;
    for (const n of NODES) if (!this.nodes[n].alive) this.fault({ kind: 'revive', node: n });
  }

  checkLiveness(): void {
    for (const p of POOLS) {
      const serving = NODES.filter((x) => {
        const n = this.nodes[x];
        const view = poolViews(n.machine).find((v) => v.name === p.name);
        const side = n.sides[p.name];
        return n.alive && view?.phase === 'ACTIVE' && side !== undefined && side.exported && !side.suspended;
      });
      const views = NODES.map((x) => {
        const v = poolViews(this.nodes[x].machine).find((y) => y.name === p.name);
        return `${x}: ${v?.phase ?? '?'}${v?.reason === null || v === undefined ? '' : ` (${v.reason})`}`;
      }).join('; ');
      if (serving.length !== 1) { this.violation(`liveness: pool ${p.name} is ACTIVE on ${serving.length} nodes after the faults stopped (${views})`); continue; }
      const w = serving[0] === undefined ? null : this.nodes[serving[0]].sides[p.name]?.lastWriteAt ?? null;
      if (w === null || w < this.now - 1000) this.violation(`liveness: pool ${p.name} is ACTIVE on ${serving[0] ?? '?'} but no write was acknowledged in the last second (${views})`);
    }
  }
}

export function runSim(o: SimOptions): SimResult {
  const rng = new Rng(o.seed ^ 0x5bd1e995);
  const nemesisMs = o.nemesisMs ?? 12_000;
  const schedule = drawSchedule(rng, { untilMs: nemesisMs, leaseMs: o.timing?.leaseMs ?? SIM_TIMING.leaseMs, witness: o.policy === 'witness', fence: o.policy === 'fence' });
  const w = new World(o, rng.chance(0.5));
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
