// The nemesis's schedule: which fault, when, against whom, for how long. A pure
// function of the seed and the run's options, so a failing run is replayed with
// its seed alone. Targets name roles ('primary', 'secondary'), resolved against
// the pool's owner at the moment the fault fires: the schedule stays the same
// even though who owns the pool depends on what happened before.

/** crash: a node's machine loses power (kill -9 of its daemon, its switch port down) and boots again after the
 *  duration (its floating IPs gone, as after any boot; port up; daemon started). kill: kill -9 of a process alone,
 *  the machine staying up, started again after the duration. isolate: every link of a host cut (its switch port
 *  down). cut: both directions between two hosts. cut-one-way: packets from one host to another dropped. pause:
 *  SIGSTOP, SIGCONT after the duration. disk-stall: the node's client I/O hangs for the duration. */
export const FAULT_KINDS = ['crash', 'kill', 'isolate', 'cut', 'cut-one-way', 'pause', 'disk-stall'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** a node by its role at the moment the fault fires, or the witness */
export type Target = 'primary' | 'secondary' | 'witness';

export interface ScheduledFault {
  /** 1-based, in time order */
  readonly n: number;
  /** ms after the nemesis starts */
  readonly atMs: number;
  readonly kind: FaultKind;
  readonly target: Target;
  /** cut and cut-one-way: the other end (for cut-one-way, packets from target to peer are dropped) */
  readonly peer?: Target;
  /** until the heal (restart, link up, SIGCONT), or the stall's length */
  readonly durationMs: number;
}

export const SCHEDULE_PROFILES = ['random', 'crash-primary'] as const;
export type ScheduleProfile = (typeof SCHEDULE_PROFILES)[number];

export interface ScheduleOptions {
  readonly seed: number;
  /** the nemesis's run time: every fault is healed by then */
  readonly durationMs: number;
  readonly profile: ScheduleProfile;
  /** the kinds the random profile draws from (default: all) */
  readonly kinds?: readonly FaultKind[];
}

/** the schedule's bounds, in ms */
export const scheduleLimits = {
  /** clients write undisturbed this long first */
  warmupMs: 3_000,
  /** the random profile: time between the starts of two faults */
  gapMinMs: 2_000,
  gapMaxMs: 9_000,
  /** crash-primary: time between two crashes, and how long the crashed node stays down */
  crashEveryMs: 12_000,
  crashDownMs: 3_000,
  durationMaxMs: 24 * 3600_000,
} as const;

/** How long each kind lasts, [min, max] ms: around the heartbeat timeout and the lease (600 ms in the torture's
 *  configuration), the sync timeout (1.5 s) and the main-stall limit (3 s), so some faults fail a node over and
 *  some must not. */
const DURATION: Readonly<Record<FaultKind, readonly [number, number]>> = {
  crash: [1_000, 8_000],
  kill: [1_000, 8_000],
  isolate: [1_000, 8_000],
  cut: [1_000, 8_000],
  'cut-one-way': [1_000, 8_000],
  pause: [300, 5_000],
  'disk-stall': [300, 5_000],
};

/** how often each kind is drawn, relative */
const WEIGHT: Readonly<Record<FaultKind, number>> = {
  crash: 3, kill: 2, isolate: 2, cut: 2, 'cut-one-way': 2, pause: 3, 'disk-stall': 2,
};

/** mulberry32: a small, fast PRNG with a 32-bit state; good enough to spread faults, and the same everywhere */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class ScheduleError extends Error {
  override readonly name = 'ScheduleError';
}

export function generateSchedule(o: ScheduleOptions): ScheduledFault[] {
  if (!Number.isSafeInteger(o.seed) || o.seed < 0 || o.seed > 0xffff_ffff) throw new ScheduleError(`seed must be an integer in 0..4294967295, not ${o.seed}`);
  if (!Number.isSafeInteger(o.durationMs) || o.durationMs < 1_000 || o.durationMs > scheduleLimits.durationMaxMs) {
    throw new ScheduleError(`duration must be 1 s to 24 h, not ${o.durationMs} ms`);
  }
  const kinds = o.kinds ?? FAULT_KINDS;
  if (kinds.length === 0) throw new ScheduleError('no fault kinds to draw from');
  for (const k of kinds) if (!FAULT_KINDS.includes(k)) throw new ScheduleError(`unknown fault kind ${JSON.stringify(k)}`);
  const rnd = prng(o.seed);
  const between = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const out: ScheduledFault[] = [];
  const add = (f: Omit<ScheduledFault, 'n'>): void => { out.push({ n: out.length + 1, ...f }); };

  if (o.profile === 'crash-primary') {
    // crash the primary while writes flow, again and again: what it acknowledged alone dies with it
    for (let at = scheduleLimits.warmupMs + between(0, 1_000); at + scheduleLimits.crashDownMs <= o.durationMs; at += scheduleLimits.crashEveryMs + between(0, 2_000)) {
      add({ atMs: at, kind: 'crash', target: 'primary', durationMs: scheduleLimits.crashDownMs + between(0, 1_000) });
    }
    return out.filter((f) => f.atMs + f.durationMs <= o.durationMs).map((f, i) => ({ ...f, n: i + 1 }));
  }

  const weighted = kinds.flatMap((k) => Array.from({ length: WEIGHT[k] }, () => k));
  for (let at = scheduleLimits.warmupMs + between(0, scheduleLimits.gapMinMs); ; at += between(scheduleLimits.gapMinMs, scheduleLimits.gapMaxMs)) {
    const kind = pick(weighted);
    const [lo, hi] = DURATION[kind];
    // every fault is over by the end of the run; one that cannot fit at its shortest ends the schedule
    const room = o.durationMs - at;
    if (room < lo) break;
    const durationMs = Math.min(between(lo, hi), room);
    switch (kind) {
      case 'crash':
        add({ atMs: at, kind, target: rnd() < 0.7 ? 'primary' : 'secondary', durationMs });
        break;
      case 'kill':
        // the witness restarts too: its state file must carry who is fenced and who went on alone
        add({ atMs: at, kind, target: rnd() < 0.15 ? 'witness' : rnd() < 0.7 ? 'primary' : 'secondary', durationMs });
        break;
      case 'isolate':
      case 'pause':
        add({ atMs: at, kind, target: rnd() < 0.15 ? 'witness' : rnd() < 0.6 ? 'primary' : 'secondary', durationMs });
        break;
      case 'cut':
      case 'cut-one-way': {
        const pairs: ReadonlyArray<readonly [Target, Target]> = [['primary', 'secondary'], ['secondary', 'primary'], ['primary', 'witness'], ['witness', 'primary'],
          ['secondary', 'witness'], ['witness', 'secondary']];
        const [target, peer] = pick(pairs);
        add({ atMs: at, kind, target, peer, durationMs });
        break;
      }
      case 'disk-stall':
        // client I/O only reaches the primary: a stall on the secondary would block nothing
        add({ atMs: at, kind, target: 'primary', durationMs });
        break;
    }
  }
  return out;
}

/** "2m", "90s", "1500ms", "10m30s" or a bare number of seconds → ms */
export function parseDuration(text: string): number | string {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/gy;
  let ms = 0;
  let at = 0;
  for (let m = re.exec(t); m !== null; m = re.exec(t)) {
    const n = Number(m[1]);
    ms += n * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 3600_000);
    at = re.lastIndex;
  }
  if (t === '' || at !== t.length) return `${JSON.stringify(text)} is not a duration (e.g. 10m, 120s, 1m30s)`;
  return Math.round(ms);
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** One line per fault, as the run prints it. */
export function describeFault(f: ScheduledFault): string {
  const d = seconds(f.durationMs);
  switch (f.kind) {
    case 'crash': return `crash ${f.target} (power off), boot it again after ${d}`;
    case 'kill': return `kill -9 ${f.target}, start it again after ${d}`;
    case 'isolate': return `isolate ${f.target} (every link down) for ${d}`;
    case 'cut': return `cut ${f.target} <-> ${f.peer ?? '?'} for ${d}`;
    case 'cut-one-way': return `drop ${f.target} -> ${f.peer ?? '?'} for ${d}`;
    case 'pause': return `pause ${f.target} (SIGSTOP) for ${d}`;
    case 'disk-stall': return `stall ${f.target}'s disk for ${d}`;
  }
}

export function formatSchedule(s: readonly ScheduledFault[]): string {
  if (s.length === 0) return '  (no faults)';
  return s.map((f) => `  #${String(f.n).padStart(3)}  t+${(f.atMs / 1000).toFixed(1).padStart(6)} s  ${describeFault(f)}`).join('\n');
}

/** faults by kind, for the summary */
export function countKinds(kinds: readonly FaultKind[]): string {
  const counts = new Map<FaultKind, number>();
  for (const k of kinds) counts.set(k, (counts.get(k) ?? 0) + 1);
  return FAULT_KINDS.filter((k) => counts.has(k)).map((k) => `${k} ${counts.get(k) ?? 0}`).join(', ') || 'none';
}
