// The cluster simulator's deterministic parts: a seeded PRNG, an event queue
// ordered by simulated time, and the nemesis schedule drawn from the seed.
// Nothing here reads a clock or Math.random: a seed replays exactly.

/** mulberry32: small, fast, and good enough to draw fault schedules. */
export class Rng {
  private s: number;

  constructor(seed: number) {
    this.s = (seed ^ 0x9e3779b9) >>> 0;
  }

  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** an integer in [lo, hi] */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  pick<T>(xs: readonly T[]): T {
    const x = xs[Math.floor(this.next() * xs.length)];
    if (x === undefined) throw new Error('pick from an empty list');
    return x;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** A binary heap of events by (time, insertion order): equal times run in the order they were scheduled. */
export class EventQueue<E> {
  private readonly heap: Array<{ at: number; n: number; e: E }> = [];
  private n = 0;

  get size(): number {
    return this.heap.length;
  }

  push(at: number, e: E): void {
    const h = this.heap;
    h.push({ at, n: this.n++, e });
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { at: number; e: E } | undefined {
    const h = this.heap;
    const top = h[0];
    if (top === undefined) return undefined;
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(l, m)) m = l;
        if (r < h.length && this.less(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return { at: top.at, e: top.e };
  }

  private less(i: number, j: number): boolean {
    const a = this.heap[i];
    const b = this.heap[j];
    if (a === undefined || b === undefined) return false;
    return a.at < b.at || (a.at === b.at && a.n < b.n);
  }

  private swap(i: number, j: number): void {
    const h = this.heap;
    const a = h[i];
    const b = h[j];
    if (a === undefined || b === undefined) return;
    h[i] = b;
    h[j] = a;
  }
}

export type NodeName = 'alpha' | 'beta';
export const NODES: readonly NodeName[] = ['alpha', 'beta'];
export const other = (n: NodeName): NodeName => (n === 'alpha' ? 'beta' : 'alpha');

/** One fault the nemesis starts; each carries its own end (a heal, a restart, a resume). */
export type Fault =
  | { readonly kind: 'cut'; readonly from: NodeName | 'both'; readonly ms: number }
  | { readonly kind: 'witness-cut'; readonly node: NodeName; readonly ms: number }
  | { readonly kind: 'crash'; readonly node: NodeName; readonly ms: number }
  | { readonly kind: 'revive'; readonly node: NodeName }
  | { readonly kind: 'pause'; readonly node: NodeName; readonly ms: number }
  | { readonly kind: 'fence-broken'; readonly ms: number }
  /** the node's gateway check fails for ms; with cut, the node is also cut from its peer and the witness meanwhile */
  | { readonly kind: 'isolate'; readonly node: NodeName; readonly ms: number; readonly cut: boolean }
  /** the operator, on node `via` (or the other if it cannot), sets the pool of volume slot's control for ms, then back to managed */
  | { readonly kind: 'control'; readonly slot: number; readonly via: NodeName; readonly control: 'unmanaged' | 'exported'; readonly ms: number }
  /**
   * the operator removes the pool of volume slot, and once both nodes have let it go and its copies
   * are in sync, creates a pool of the same volume under a new name, preferring `preferred`
   */
  | { readonly kind: 'remove'; readonly slot: number; readonly via: NodeName; readonly preferred: NodeName }
  /**
   * the operator takes the node offline (its pools go to the peer), and ms later online again; with
   * remove, the peer removes it meanwhile and adds it back before it comes online
   */
  | { readonly kind: 'leave'; readonly node: NodeName; readonly ms: number; readonly remove: boolean };

export interface ScheduledFault {
  readonly at: number;
  readonly fault: Fault;
}

export interface NemesisOptions {
  readonly untilMs: number;
  readonly leaseMs: number;
  readonly witness: boolean;
  readonly fence: boolean;
}

/** The faults of one run, drawn from the seed before the run starts (so a failure prints them whole). */
export function drawSchedule(rng: Rng, o: NemesisOptions): ScheduledFault[] {
  const kinds: Array<Fault['kind']> = ['cut', 'cut', 'cut', 'crash', 'revive', 'pause', 'pause'];
  if (o.witness) kinds.push('witness-cut', 'witness-cut', 'witness-cut');
  if (o.fence) kinds.push('fence-broken', 'fence-broken');
  const out: ScheduledFault[] = [];
  for (let at = rng.int(300, 1500); at < o.untilMs; at += rng.int(100, 2500)) {
    const node = rng.pick(NODES);
    const kind = rng.pick(kinds);
    switch (kind) {
      case 'cut': out.push({ at, fault: { kind, from: rng.pick(['alpha', 'beta', 'both'] as const), ms: rng.int(100, 8 * o.leaseMs) } }); break;
      case 'witness-cut': out.push({ at, fault: { kind, node, ms: rng.int(100, 10 * o.leaseMs) } }); break;
      case 'crash': out.push({ at, fault: { kind, node, ms: rng.int(100, 10 * o.leaseMs) } }); break;
      case 'revive': out.push({ at, fault: { kind, node } }); break;
      case 'pause': out.push({ at, fault: { kind, node, ms: rng.int(50, 4 * o.leaseMs) } }); break;
      case 'fence-broken': out.push({ at, fault: { kind, ms: rng.int(200, 10 * o.leaseMs) } }); break;
    }
  }
  return out;
}

export interface OperatorOptions {
  readonly untilMs: number;
  readonly leaseMs: number;
  readonly slots: number;
}

/**
 * The operator's control changes and the gateway's failures, drawn from their own generator: a
 * seed's faults (drawSchedule) stay what they were without them.
 */
export function drawOperations(rng: Rng, o: OperatorOptions): ScheduledFault[] {
  const out: ScheduledFault[] = [];
  for (let at = rng.int(500, 3000); at < o.untilMs; at += rng.int(500, 4000)) {
    const node = rng.pick(NODES);
    const slot = rng.int(0, o.slots - 1);
    switch (rng.pick(['isolate', 'isolate', 'unmanaged', 'exported', 'remove'] as const)) {
      case 'isolate': out.push({ at, fault: { kind: 'isolate', node, ms: rng.int(100, 8 * o.leaseMs), cut: rng.chance(0.5) } }); break;
      case 'unmanaged': out.push({ at, fault: { kind: 'control', slot, via: node, control: 'unmanaged', ms: rng.int(100, 8 * o.leaseMs) } }); break;
      case 'exported': out.push({ at, fault: { kind: 'control', slot, via: node, control: 'exported', ms: rng.int(100, 8 * o.leaseMs) } }); break;
      case 'remove': out.push({ at, fault: { kind: 'remove', slot, via: node, preferred: rng.pick(NODES) } }); break;
    }
  }
  return out;
}

/** The operator's node offline / online (and remove / add), from a generator of their own: the other schedules stay as they were. */
export function drawMembership(rng: Rng, o: OperatorOptions): ScheduledFault[] {
  const out: ScheduledFault[] = [];
  for (let at = rng.int(1000, 5000); at < o.untilMs; at += rng.int(2000, 8000)) {
    out.push({ at, fault: { kind: 'leave', node: rng.pick(NODES), ms: rng.int(200, 10 * o.leaseMs), remove: rng.chance(0.3) } });
  }
  return out;
}

export function describeFault(f: Fault): string {
  switch (f.kind) {
    case 'cut': return f.from === 'both' ? `cut alpha<->beta for ${f.ms} ms` : `cut ${f.from}->${other(f.from)} for ${f.ms} ms`;
    case 'witness-cut': return `cut ${f.node}<->witness for ${f.ms} ms`;
    case 'crash': return `crash ${f.node} for ${f.ms} ms`;
    case 'revive': return `restart ${f.node} if it is down`;
    case 'pause': return `pause ${f.node} for ${f.ms} ms`;
    case 'fence-broken': return `fence device broken for ${f.ms} ms`;
    case 'isolate': return `${f.node} cannot reach its gateway for ${f.ms} ms${f.cut ? ' (and is cut from its peer and the witness)' : ''}`;
    case 'control': return `operator on ${f.via}: pool of volume v${f.slot} ${f.control === 'exported' ? 'exported' : 'unmanaged'} for ${f.ms} ms, then managed again`;
    case 'remove': return `operator on ${f.via}: pool of volume v${f.slot} removed, then created again under a new name (preferring ${f.preferred}) once it can be`;
    case 'leave': return `operator: node offline on ${f.node} for ${f.ms} ms${f.remove ? `, removed on ${other(f.node)} meanwhile and added back` : ''}, then node online`;
  }
}
