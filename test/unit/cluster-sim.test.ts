// Two cluster machines, the witness and a seeded nemesis (test/sim/cluster-sim.ts).
// The seeds start at a fixed base so the suite is deterministic; TANDEM_SEED sets
// another base, TANDEM_SIM_SEEDS scales how many seeds each policy runs (a failure
// prints the seed, the fault schedule and a trace, and how to replay it).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { step } from '../../src/cluster/machine';
import type { FencingPolicy, MachineAction } from '../../src/cluster/machine-types';
import { formatFailure, runSim, type SimOptions, type SimResult, type StepFn } from '../sim/cluster-sim';

const base = Number(process.env.TANDEM_SEED ?? 20261123);
if (!Number.isSafeInteger(base)) throw new Error(`TANDEM_SEED must be an integer, not ${process.env.TANDEM_SEED}`);
const scale = Number(process.env.TANDEM_SIM_SEEDS ?? 1);
if (!(scale > 0)) throw new Error(`TANDEM_SIM_SEEDS must be above 0, not ${process.env.TANDEM_SIM_SEEDS}`);
const seeds = (n: number): number => Math.max(1, Math.round(n * scale));

const replay = (r: SimResult, o: Omit<SimOptions, 'seed'>): string =>
  `TANDEM_SEED=${r.seed} TANDEM_SIM_SEEDS=0.0001 node --test dist/test/unit/cluster-sim.test.js  (runSim(${JSON.stringify({ ...o, seed: r.seed, step: undefined })}))`;

function sweep(n: number, o: Omit<SimOptions, 'seed'>): { writes: number; takeovers: number } {
  let writes = 0;
  let takeovers = 0;
  for (let i = 0; i < n; i++) {
    const r = runSim({ ...o, seed: base + i });
    if (r.violations.length > 0) assert.fail(formatFailure(r, replay(r, o)));
    writes += r.writes;
    takeovers += r.takeovers;
  }
  // a run in which nothing was written or nothing ever moved would prove little
  assert.ok(writes > n * 50, `writes happened (${writes})`);
  return { writes, takeovers };
}

test(`witness policy, ${seeds(1200)} seeds: never two writers, never an outdated copy promoted, every pool served once the faults stop`, () => {
  const { takeovers } = sweep(seeds(1200), { policy: 'witness' });
  assert.ok(takeovers > seeds(1200) / 4, `takeovers happened (${takeovers})`);
});

test(`fence policy, ${seeds(1500)} seeds of the faults it is made for: the same three checks`, () => {
  const { takeovers } = sweep(seeds(1500), { policy: 'fence', careful: true });
  assert.ok(takeovers > seeds(1500) / 4, `takeovers happened (${takeovers})`);
});

test(`witness policy, ${seeds(200)} seeds with startWaitMs below the lease, no takeover margin and a slow witness`, () => {
  sweep(seeds(200), { policy: 'witness', timing: { startWaitMs: 300, marginMs: 0, witnessTimeoutMs: 1000, claimRetryMs: 100 } });
});

test(`manual policy, ${seeds(300)} seeds: the primary goes on alone, nothing is taken over, every pool served once the faults stop`, () => {
  sweep(seeds(300), { policy: 'manual' });
});

test(`none policy, ${seeds(300)} seeds: never two writers (an operator must bring dropped pools back, so no liveness check)`, () => {
  sweep(seeds(300), { policy: 'none', checkLiveness: false });
});

test('the same seed replays the same run', () => {
  const a = runSim({ seed: base, policy: 'witness' });
  const b = runSim({ seed: base, policy: 'witness' });
  assert.deepEqual(a, b);
});

// ---------------------------------------------------------------------------- the checker can fail

/** The first seed (of up to `tries`) on which the checker finds two writers or an outdated copy promoted. */
function caught(policy: FencingPolicy, broken: StepFn, o: Partial<SimOptions> = {}, tries = 100): SimResult | null {
  for (let i = 0; i < tries; i++) {
    const r = runSim({ policy, ...o, seed: base + i, step: broken });
    if (r.violations.some((v) => !v.includes('liveness'))) return r;
  }
  return null;
}

test('the checker catches a machine that acknowledges writes without its peer and without asking the witness', () => {
  const skipsAlone: StepFn = (config, state, event) =>
    event.type === 'alone-request' && state.started
      ? { state, actions: [{ type: 'alone-decision', volume: event.volume, id: event.id, allow: true }] }
      : step(config, state, event);
  const r = caught('witness', skipsAlone);
  assert.ok(r !== null, 'some seed shows it');
  assert.match(r.violations.join('\n'), /two writers|on a copy missing write/);
});

test('the checker catches a machine that takes the peer for fenced without fencing it', () => {
  const pretends: StepFn = (config, state, event) => {
    let r = step(config, state, event);
    for (let f = r.actions.find((a) => a.type === 'fence'); f?.type === 'fence'; f = r.actions.find((a) => a.type === 'fence')) {
      const done = step(config, r.state, { type: 'fence-done', now: event.now, ok: true, detail: 'pretended', seq: f.seq });
      const fence: MachineAction = f;
      r = { state: done.state, actions: [...r.actions.filter((a) => a !== fence), ...done.actions] };
    }
    return r;
  };
  const r = caught('fence', pretends, { careful: true });
  assert.ok(r !== null, 'some seed shows it');
  assert.match(r.violations.join('\n'), /two writers|on a copy missing write/);
});

test('under policy ignore the simulator finds the documented hazard: two writers', () => {
  const r = caught('ignore', step, { checkSafety: true });
  assert.ok(r !== null, 'some seed shows it');
});

// ---------------------------------------------------------------------------- inherent in the design

test('fence policy, any faults: a node restarted behind a one-way cut never meets its peer, fences it and promotes its outdated copy', {
  todo: 'inherent in docs/cluster.md: after startWaitMs a node acts on the fence policy as if the peer went down at start, ' +
    'and nothing tells it that the peer wrote alone meanwhile (its copy says UpToDate). Seed 24: alpha crashes, beta fences it ' +
    'and writes alone, alpha restarts while beta→alpha is cut, fences beta and activates p0 at its old term 1 without beta\'s writes. ' +
    'A fix needs the design to change: a node that starts without meeting its peer must not act on `fence` alone ' +
    '(wait for the peer or an operator), or the fence must also mark the fenced node\'s copy Outdated where it will see it at start.',
}, () => {
  const r = runSim({ seed: 24, policy: 'fence' });
  if (r.violations.length > 0) assert.fail(formatFailure(r, 'runSim({ seed: 24, policy: "fence" })'));
});
