// The cluster machine with a configuration that changes while it runs (docs/cluster.md,
// "Pools that come, go and change control"), the reattach command, and the gateway check
// ("A node that cannot reach its gateway").
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import { clusterView, initialState, step, type MachineState } from '../../src/cluster/machine';
import type { FencingPolicy, MachineAction, MachineConfig, MachineEvent, PoolControl, PoolSpec } from '../../src/cluster/machine-types';
import {
  APART, Driver, IN_SYNC, LEASE, START_WAIT, config, decision, logged, messages, none, one, only, result,
} from '../helpers/cluster-machine';

const P0: PoolSpec = { name: 'p0', volumes: ['v0'], preferredNode: 'alpha', autoFailback: false };
const P1: PoolSpec = { name: 'p1', volumes: ['v1'], preferredNode: 'beta', autoFailback: false };
const P2: PoolSpec = { name: 'p2', volumes: ['v2'], preferredNode: 'alpha', autoFailback: false };

const withPools = (d: Driver, pools: readonly PoolSpec[]): MachineConfig => ({ ...d.cfg, pools });
const ctl = (spec: PoolSpec, control: PoolControl): PoolSpec => ({ ...spec, control });

/** The daemon takes a new configuration: every later step gets it, and this one says so. */
function reconfigure(d: Driver, pools: readonly PoolSpec[]): MachineAction[] {
  // Driver's cfg is read-only to its users; the daemon's changes with the configuration file
  Object.assign(d, { cfg: withPools(d, pools) });
  return d.ev({ type: 'reconfigure' });
}

const names = (d: Driver): string[] => d.state.pools.map((p) => p.name);

/** alpha meets beta, both pools settled: p0 ACTIVE here, p1 STANDBY. */
function running(policy: FencingPolicy, pools: readonly PoolSpec[] = [P0, P1]): Driver {
  const d = new Driver(config('alpha', policy, { pools }));
  d.meet();
  return d;
}

/** Every activation among the actions completes. */
function activateAll(d: Driver, actions: readonly MachineAction[]): MachineAction[] {
  return only(actions, 'activate').flatMap((a) => d.ev({ type: 'activated', pool: a.pool, ok: true }));
}

// ---------------------------------------------------------------------------- pools added

test('a pool added to the configuration starts like a pool at start: its preferred node owns it at term 1, persisted first', () => {
  const d = running('witness');
  const acts = reconfigure(d, [P0, P2, P1]);
  assert.deepEqual(acts[0], { type: 'persist', state: { pools: { p0: { owner: 'alpha', term: 1 }, p2: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } }, maintenance: false } });
  assert.ok(logged(acts, 'pool-added'));
  assert.deepEqual(names(d), ['p0', 'p2', 'p1'], 'the configuration\'s order');
  assert.deepEqual(messages(acts).at(-1), { kind: 'state', pools: d.records(), maintenance: false, active: ['p0'] }, 'the peer learns the new record');
  // as at a meeting: not before the peer's state says who owns it (the peer may have had it first, and taken it over)
  none(acts, 'activate');
  assert.equal(d.pool('p2').phase, 'ORPHANED');
  assert.match(d.pool('p2').reason ?? '', /waiting for beta's state since the configuration changed/);
  // a state without it: the peer has not taken it into its configuration yet
  d.peerState({ p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } });
  assert.match(d.pool('p2').reason ?? '', /waiting for beta to have pool p2 in its configuration/);
  // its volume reports (a new pool's copy on the preferred node is the UpToDate one), and the peer's state has it
  d.volumes(IN_SYNC, ['v2']);
  const met = d.peerState(d.records());
  assert.deepEqual(one(met, 'activate'), { type: 'activate', pool: 'p2', term: 1 });
  d.ev({ type: 'activated', pool: 'p2', ok: true });
  assert.deepEqual([d.pool('p2').phase, d.pool('p2').control], ['ACTIVE', 'managed']);
});

test('a pool added while the peer is absent is activated by the policy (manual: ours at once); the peer\'s preferred pool stands by', () => {
  const d = running('manual');
  d.ev({ type: 'peer-down', lastHeardAt: d.now });
  const acts = reconfigure(d, [P0, P1, P2, { ...P2, name: 'p3', volumes: ['v3'], preferredNode: 'beta' }]);
  none(acts, 'activate');
  assert.match(d.pool('p2').reason ?? '', /volume v2 has not reported/, 'not before its copy reports UpToDate');
  one(d.volumes(APART, ['v2']), 'activate');
  d.volumes(APART, ['v3']);
  assert.equal(d.pool('p3').phase, 'ORPHANED');
  assert.match(d.pool('p3').reason ?? '', /tandem promote/);
});

test('a brand-new pool: the preferred node\'s copy is UpToDate and it serves; the other node never promotes its Inconsistent copy', () => {
  const d = new Driver(config('beta', 'ignore'));
  d.meet();
  reconfigure(d, [P0, P1, P2]);
  d.volumes({ diskState: 'Inconsistent', connected: true, inSync: false }, ['v2']);
  d.peerState({ ...d.records(), p2: { owner: 'alpha', term: 1 } });
  assert.equal(d.pool('p2').phase, 'STANDBY');
  // alpha goes before the initial sync is done: policy ignore would take it over, but not this copy
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  assert.ok(!only(down, 'activate').some((a) => a.pool === 'p2'));
  assert.match(d.pool('p2').reason ?? '', /volume v2 is Inconsistent here/);
});

test('a pool added here that the peer already took over at a higher term: the peer\'s record wins at once', () => {
  const d = running('witness');
  // the peer had the new configuration first, and its state said so
  d.peerState({ ...d.records(), p2: { owner: 'beta', term: 2 } });
  const acts = reconfigure(d, [P0, P1, P2]);
  none(acts, 'activate');
  assert.deepEqual([d.pool('p2').owner, d.pool('p2').term, d.pool('p2').phase], ['beta', 2, 'STANDBY']);
  assert.deepEqual(one(acts, 'persist').state.pools.p2, { owner: 'beta', term: 2 });
});

test('the configuration may come with any event: the machine takes it before the event', () => {
  const d = running('witness');
  Object.assign(d, { cfg: withPools(d, [P0, P1, P2]) });
  // the daemon reports the new volume's facts before it sends 'reconfigure'
  const acts = d.volumes(IN_SYNC, ['v2']);
  assert.ok(logged(acts, 'pool-added'));
  assert.equal(d.state.volumes.v2?.diskState, 'UpToDate', 'the facts of the new pool\'s volume are taken');
  const again = d.ev({ type: 'reconfigure' });
  assert.ok(!logged(again, 'pool-added'), 'nothing more to take');
});

test('an invalid new configuration changes nothing', () => {
  const d = running('witness');
  const before = d.state;
  const acts = reconfigure(d, [P0, P1, { ...P2, volumes: ['v1'] }]);
  assert.equal(d.state, before);
  assert.deepEqual(acts.map((a) => a.type), ['log']);
  assert.ok(logged(acts, 'reconfigure-invalid'));
  // the daemon keeps passing it: the other events still count (here the lease runs out), the pools stay as they were
  one(d.tick(d.now + 10 * LEASE), 'suspend');
  assert.deepEqual(names(d), ['p0', 'p1']);
});

// ---------------------------------------------------------------------------- pools removed

test('a pool removed that is not active here is forgotten at once, with its record and its volumes\' facts', () => {
  const d = running('witness');
  assert.ok(d.state.volumes.v1 !== undefined);
  const acts = reconfigure(d, [P0]);
  assert.deepEqual(acts[0], { type: 'persist', state: { pools: { p0: { owner: 'alpha', term: 1 } }, maintenance: false } });
  assert.ok(logged(acts, 'pool-removed'));
  none(acts, 'deactivate');
  assert.deepEqual(names(d), ['p0']);
  assert.equal(d.state.volumes.v1, undefined, 'facts forgotten');
  // its volume is unknown now: a write that asks is refused, a command on the pool too
  const a = d.alone('v1');
  assert.equal(decision(a.actions, a.id), false);
  const c = d.command({ kind: 'promote', pool: 'p1', force: false });
  assert.equal(result(c.actions, c.id).ok, false);
});

test('a pool removed while active here is deactivated first and forgotten when that is done; waiting writes are refused', () => {
  const d = running('fence');
  d.ev({ type: 'peer-down', lastHeardAt: d.now });
  d.ev({ type: 'fence-done', ok: false, detail: 'device busy', seq: d.state.fence?.seq ?? 0 });
  const held = d.alone('v0');
  one(held.actions, 'fence');
  const acts = reconfigure(d, [P1]);
  assert.equal(decision(acts, held.id), false, 'the write that waited for a fence is refused');
  assert.deepEqual(one(acts, 'deactivate'), { type: 'deactivate', pool: 'p0' });
  none(acts, 'persist');
  assert.deepEqual(names(d), ['p1', 'p0'], 'configured pools first, then the ones being released');
  assert.equal(d.pool('p0').phase, 'DEACTIVATING');
  const none2 = d.command({ kind: 'promote', pool: 'p0', force: false });
  assert.match(result(none2.actions, none2.id).message, /left the configuration/);
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.deepEqual(done[0], { type: 'persist', state: { pools: { p1: { owner: 'beta', term: 1 } }, maintenance: false } });
  assert.ok(logged(done, 'pool-forgotten'));
  assert.deepEqual(names(d), ['p1']);
});

test('a pool removed while activating: the command waiting on it is answered, and it is released once active', () => {
  const d = new Driver(config('alpha', 'manual'));
  d.start();
  d.volumes(APART);
  d.tick(1000 + START_WAIT);
  d.ev({ type: 'activated', pool: 'p0', ok: false, error: 'address in use' });
  const p = d.command({ kind: 'promote', pool: 'p0', force: false });
  one(p.actions, 'activate');
  const acts = reconfigure(d, [P1]);
  assert.equal(result(acts, p.id).ok, false);
  assert.match(result(acts, p.id).message, /left the configuration/);
  none(acts, 'deactivate');
  const up = d.ev({ type: 'activated', pool: 'p0', ok: true });
  one(up, 'deactivate');
  assert.ok(!only(up, 'command-result').some((r) => r.id === p.id), 'answered once');
  d.ev({ type: 'deactivated', pool: 'p0' });
  assert.deepEqual(names(d), ['p1']);
});

test('a pool back in the configuration while it is being released stays, and is served again', () => {
  const d = running('witness');
  reconfigure(d, [P1]);
  assert.equal(d.pool('p0').phase, 'DEACTIVATING');
  reconfigure(d, [P0, P1]);
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.deepEqual(names(d), ['p0', 'p1']);
  assert.deepEqual(one(done, 'activate'), { type: 'activate', pool: 'p0', term: 1 });
});

test('a new pool with a volume of a pool still being released waits for the release', () => {
  const d = running('witness');
  const moved: PoolSpec = { name: 'p0b', volumes: ['v0'], preferredNode: 'alpha', autoFailback: false };
  const acts = reconfigure(d, [moved, P1]);
  one(acts, 'deactivate');
  none(acts, 'activate');
  d.peerState({ ...d.records(), p0b: { owner: 'alpha', term: 1 } });
  assert.match(d.pool('p0b').reason ?? '', /volume v0 is still being released by pool p0/);
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(d.state.volumes.v0?.diskState, 'UpToDate', 'the volume\'s facts stay: a configured pool has it');
  assert.deepEqual(one(done, 'activate'), { type: 'activate', pool: 'p0b', term: 1 });
});

test('a peer whose state has no record of a pool (its configuration is behind, or it removed the pool) does not let ours activate', () => {
  const d = new Driver(config('beta', 'witness'));
  d.start({ pools: { p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } }, maintenance: false });
  d.volumes(IN_SYNC);
  d.ev({ type: 'peer-up', incarnation: 3 });
  // alpha took p1 over at a higher term, then removed it: its record went with it
  const acts = d.peerState({ p0: { owner: 'alpha', term: 1 } });
  none(acts, 'activate');
  assert.match(d.pool('p1').reason ?? '', /waiting for alpha to have pool p1 in its configuration/);
  reconfigure(d, [P0]);
  assert.deepEqual(names(d), ['p0']);
});

// ---------------------------------------------------------------------------- exported

test('export: the node serving the pool deactivates it, then EXPORTED; the other node is EXPORTED at once; the records stay', () => {
  const a = running('witness');
  const acts = reconfigure(a, [ctl(P0, 'exported'), P1]);
  assert.ok(logged(acts, 'pool-exported'));
  one(acts, 'deactivate');
  none(acts, 'persist');
  assert.equal(a.pool('p0').phase, 'DEACTIVATING');
  a.ev({ type: 'deactivated', pool: 'p0' });
  assert.deepEqual([a.pool('p0').phase, a.pool('p0').owner, a.pool('p0').control], ['EXPORTED', 'alpha', 'exported']);
  assert.match(a.pool('p0').reason ?? '', /import/);

  const b = new Driver(config('beta', 'witness'));
  b.meet();
  const bActs = reconfigure(b, [ctl(P0, 'exported'), P1]);
  none(bActs, 'deactivate');
  assert.equal(b.pool('p0').phase, 'EXPORTED');
});

test('an exported pool is never activated, taken over, fenced or claimed for; its volumes\' writes are refused', () => {
  for (const policy of ['ignore', 'fence', 'witness'] as const) {
    const d = new Driver(config('beta', policy));
    d.meet();
    reconfigure(d, [ctl(P0, 'exported'), ctl(P1, 'exported')]);
    one(d.log.slice(-10), 'deactivate');
    d.ev({ type: 'deactivated', pool: 'p1' });
    const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
    for (const t of ['activate', 'fence', 'witness'] as const) none([...down, ...d.tick(d.now + 60_000)], t);
    assert.deepEqual([d.pool('p0').phase, d.pool('p1').phase], ['EXPORTED', 'EXPORTED'], policy);
    const p = d.command({ kind: 'promote', pool: 'p1', force: true });
    assert.match(result(p.actions, p.id).message, /exported: import it first/);
    const w = d.alone('v1');
    assert.equal(decision(w.actions, w.id), false);
  }
});

test('import: the recorded owner activates it by the normal rules; the other node stands by', () => {
  const a = running('witness');
  reconfigure(a, [ctl(P0, 'exported'), P1]);
  a.ev({ type: 'deactivated', pool: 'p0' });
  const acts = reconfigure(a, [P0, P1]);
  assert.ok(logged(acts, 'pool-imported'));
  // as at a meeting, on the peer's next state: it may have taken the pool over while the sync link was down
  none(acts, 'activate');
  assert.match(a.pool('p0').reason ?? '', /waiting for beta's state/);
  assert.deepEqual(one(a.peerState(a.records()), 'activate'), { type: 'activate', pool: 'p0', term: 1 });

  const b = new Driver(config('beta', 'witness'));
  b.meet();
  reconfigure(b, [ctl(P0, 'exported'), P1]);
  reconfigure(b, [P0, P1]);
  assert.equal(b.pool('p0').phase, 'STANDBY');
});

test('import while the owner is absent: the other node takes it over by the policy', () => {
  const d = new Driver(config('beta', 'ignore'));
  d.meet();
  reconfigure(d, [ctl(P0, 'exported'), P1]);
  d.ev({ type: 'peer-down', lastHeardAt: d.now });
  assert.equal(d.pool('p0').phase, 'EXPORTED');
  const acts = reconfigure(d, [P0, P1]);
  assert.deepEqual(one(acts, 'activate'), { type: 'activate', pool: 'p0', term: 2 });
});

// ---------------------------------------------------------------------------- unmanaged

test('unmanaged: the pool stays as it is: no lease suspension, no deactivation for the peer\'s higher term, no takeover', () => {
  const d = running('witness');
  d.tick(10_000, 9_900, 9_900);
  const acts = reconfigure(d, [ctl(P0, 'unmanaged'), ctl(P1, 'unmanaged')]);
  assert.ok(logged(acts, 'pool-unmanaged'));
  assert.equal(d.pool('p0').control, 'unmanaged');
  none(d.tick(10_000 + 5 * LEASE, 9_900, 9_900), 'suspend');
  assert.equal(d.pool('p0').phase, 'ACTIVE');
  const higher = d.peerState({ p0: { owner: 'beta', term: 2 }, p1: { owner: 'beta', term: 1 } });
  none(higher, 'deactivate');
  assert.deepEqual([d.pool('p0').owner, d.pool('p0').term, d.pool('p0').phase], ['beta', 2, 'ACTIVE'], 'the record only');
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  none(down, 'witness');
  none(down, 'activate');
  assert.equal(d.pool('p1').phase, 'STANDBY');
  for (const command of [{ kind: 'demote', pool: 'p0' }, { kind: 'swap', pool: 'p0' }, { kind: 'promote', pool: 'p1', force: true }] as const) {
    const c = d.command(command);
    assert.match(result(c.actions, c.id).message, /unmanaged: manage it first/);
  }
  // managed again: the normal rules from where it is; ACTIVE here but owned by the peer → deactivated as always
  const back = reconfigure(d, [P0, P1]);
  assert.ok(logged(back, 'pool-managed'));
  one(back.filter((a) => a.type !== 'deactivate' || a.pool === 'p0'), 'deactivate');
});

test('unmanaged, then managed again: an ACTIVE pool owned here stays ACTIVE; an ORPHANED one is activated once the peer is met', () => {
  const d = running('fence');
  reconfigure(d, [ctl(P0, 'unmanaged'), P1]);
  const back = reconfigure(d, [P0, P1]);
  none(back, 'activate');
  none(back, 'deactivate');
  assert.equal(d.pool('p0').phase, 'ACTIVE');

  const e = new Driver(config('alpha', 'fence', { pools: [ctl(P0, 'unmanaged'), P1] }));
  e.start();
  assert.deepEqual([e.pool('p0').phase, e.pool('p0').reason], ['ORPHANED', 'unmanaged: the cluster leaves it as it is']);
  e.volumes(IN_SYNC);
  e.ev({ type: 'peer-up', incarnation: 2 });
  none(e.peerState(e.records()), 'activate');
  assert.equal(e.pool('p0').phase, 'ORPHANED');
  none(reconfigure(e, [P0, P1]), 'activate');
  one(e.peerState(e.records()), 'activate');
});

test('unmanaged, policy fence: the peer going down starts no fence for the pool; a write it did not take still needs one', () => {
  const d = running('fence', [ctl(P0, 'unmanaged'), ctl(P1, 'unmanaged')]);
  // started unmanaged: nothing activated p0, nothing will
  assert.equal(d.pool('p0').phase, 'ORPHANED');
  const e = running('fence');
  reconfigure(e, [ctl(P0, 'unmanaged'), ctl(P1, 'unmanaged')]);
  const down = e.ev({ type: 'peer-down', lastHeardAt: e.now });
  none(down, 'fence');
  const w = e.alone('v0');
  const f = one(w.actions, 'fence');
  const failed = e.ev({ type: 'fence-done', ok: false, detail: 'no', seq: f.seq });
  assert.equal(decision(failed, w.id), false);
  none(failed, 'suspend');
  assert.equal(e.pool('p0').phase, 'ACTIVE', 'unmanaged: not suspended');
});

// ---------------------------------------------------------------------------- reattach

function inactive(policy: FencingPolicy = 'witness'): Driver {
  const d = new Driver(config('alpha', policy));
  d.start();
  d.volumes(IN_SYNC);
  d.ev({ type: 'peer-up', incarnation: 4 });
  d.peerState(d.records());
  d.ev({ type: 'activated', pool: 'p0', ok: false, error: 'mount failed' });
  assert.equal(d.pool('p0').phase, 'INACTIVE');
  return d;
}

test('reattach to this node: activated again now at the same term, answered when the activation completes', () => {
  const d = inactive();
  const r = d.command({ kind: 'reattach', pool: 'p0', node: 'alpha' });
  assert.deepEqual(one(r.actions, 'activate'), { type: 'activate', pool: 'p0', term: 1 });
  none(r.actions, 'command-result');
  const done = d.ev({ type: 'activated', pool: 'p0', ok: true });
  assert.equal(result(done, r.id).ok, true);
  assert.equal(d.pool('p0').phase, 'ACTIVE');
});

test('reattach to the peer: handed over as a swap does, at term + 1', () => {
  const d = inactive();
  const r = d.command({ kind: 'reattach', pool: 'p0', node: 'beta' });
  one(r.actions, 'deactivate');
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(done[0]?.type, 'persist');
  assert.deepEqual(messages(done)[0], { kind: 'handover', pool: 'p0', term: 2 });
  assert.equal(result(done, r.id).ok, true);
  assert.deepEqual([d.pool('p0').owner, d.pool('p0').phase], ['beta', 'STANDBY']);
});

test('reattach to the peer is aborted if the peer went away meanwhile: INACTIVE again', () => {
  const d = inactive();
  const r = d.command({ kind: 'reattach', pool: 'p0', node: 'beta' });
  d.ev({ type: 'peer-down', lastHeardAt: d.now });
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(result(done, r.id).ok, false);
  none(done, 'send-peer');
  assert.deepEqual([d.pool('p0').owner, d.pool('p0').phase], ['alpha', 'INACTIVE']);
  assert.match(d.pool('p0').reason ?? '', /aborted: beta went away/);
});

test('reattach refuses, with the reason', () => {
  const d = inactive();
  const msg = (command: { kind: 'reattach'; pool: string; node: string }): string => {
    const r = d.command(command);
    const res = result(r.actions, r.id);
    assert.equal(res.ok, false);
    none(r.actions, 'activate');
    none(r.actions, 'deactivate');
    return res.message;
  };
  assert.match(msg({ kind: 'reattach', pool: 'nope', node: 'alpha' }), /no pool "nope"/);
  assert.match(msg({ kind: 'reattach', pool: 'p0', node: 'gamma' }), /unknown node "gamma"/);
  assert.match(msg({ kind: 'reattach', pool: 'p1', node: 'alpha' }), /owned by beta.*ask beta/);
  d.command({ kind: 'reattach', pool: 'p0', node: 'alpha' });
  d.ev({ type: 'activated', pool: 'p0', ok: true });
  assert.match(msg({ kind: 'reattach', pool: 'p0', node: 'beta' }), /reattach is for INACTIVE pools; use pool move \/ swap/);
  reconfigure(d, [ctl(P0, 'unmanaged'), P1]);
  assert.match(msg({ kind: 'reattach', pool: 'p0', node: 'beta' }), /unmanaged/);
  const e = inactive();
  e.ev({ type: 'peer-down', lastHeardAt: e.now });
  assert.match((() => { const r = e.command({ kind: 'reattach', pool: 'p0', node: 'beta' }); return result(r.actions, r.id).message; })(), /beta is not up and met/);
});

// ---------------------------------------------------------------------------- the gateway check

test('isolated, policy witness: no CLAIM while the peer is down; the pool says why; once the gateway answers, the CLAIM goes', () => {
  const d = running('witness');
  const iso = d.ev({ type: 'isolation', isolated: true, detail: '192.0.2.254: no reply' });
  assert.equal(only(iso, 'log').find((l) => l.event === 'isolated')?.level, 'warn');
  assert.deepEqual(clusterView(d.cfg, d.state).isolation, { isolated: true, detail: '192.0.2.254: no reply', since: d.now });
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  none(down, 'witness');
  assert.equal(d.pool('p1').phase, 'ORPHANED');
  assert.equal(d.pool('p1').reason, 'not taking over: this node cannot reach its gateway (192.0.2.254: no reply): it may be the isolated side');
  none(d.tick(d.now + 60_000), 'witness');
  const clear = d.ev({ type: 'isolation', isolated: false, detail: '192.0.2.254 answers' });
  assert.ok(logged(clear, 'isolation-cleared'));
  assert.equal(one(clear, 'witness').request, 'claim');
});

test('isolated, policy fence: no fence for a takeover nor for a write; the pool active here is not suspended', () => {
  const d = running('fence');
  d.ev({ type: 'isolation', isolated: true, detail: 'gw' });
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  none(down, 'fence');
  assert.match(d.pool('p1').reason ?? '', /cannot reach its gateway/);
  const w = d.alone('v0');
  none(w.actions, 'fence');
  assert.equal(decision(w.actions, w.id), false);
  none(w.actions, 'suspend');
  assert.equal(d.pool('p0').phase, 'ACTIVE');
  const clear = d.ev({ type: 'isolation', isolated: false, detail: 'gw' });
  one(clear, 'fence');
});

test('isolated: a CLAIM granted before does not lead to a takeover until the gateway answers again', () => {
  const d = running('witness');
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  const seq = only(down, 'witness').find((w) => w.request === 'claim')?.seq ?? -1;
  d.ev({ type: 'witness-reply', request: 'claim', granted: true, reason: 'ok', seq });
  d.ev({ type: 'isolation', isolated: true, detail: 'gw' });
  none(d.tick(d.now + 10 * LEASE), 'activate');
  assert.equal(d.pool('p1').phase, 'ORPHANED');
  assert.equal(one(d.ev({ type: 'isolation', isolated: false, detail: 'gw' }), 'activate').pool, 'p1');
});

test('isolated at start: a pool owned here is not activated without the peer (ignore, manual), and nothing is taken over; with the peer it is', () => {
  for (const policy of ['ignore', 'manual'] as const) {
    const d = new Driver(config('alpha', policy));
    d.start();
    d.volumes(APART);
    d.ev({ type: 'isolation', isolated: true, detail: 'gw' });
    const acts = d.tick(1000 + START_WAIT);
    none(acts, 'activate');
    assert.match(d.pool('p0').reason ?? '', /not activating without beta: this node cannot reach its gateway/);
    d.volumes(IN_SYNC);
    d.ev({ type: 'peer-up', incarnation: 2 });
    assert.deepEqual(only(d.peerState(d.records()), 'activate').map((a) => a.pool), ['p0'], `${policy}: with the peer, as always`);
  }
});

test('isolation changes are logged once each; the same report again changes nothing', () => {
  const d = running('manual');
  assert.ok(logged(d.ev({ type: 'isolation', isolated: true, detail: 'gw' }), 'isolated'));
  const before = d.state;
  assert.deepEqual(d.ev({ type: 'isolation', isolated: true, detail: 'gw' }), []);
  assert.equal(d.state, before);
  assert.ok(logged(d.ev({ type: 'isolation', isolated: false, detail: 'gw' }), 'isolation-cleared'));
});

// ---------------------------------------------------------------------------- fenced and alone (policy fence)

test('policy fence: a successful fence is persisted as fenced-and-alone before the takeover; the peer back clears it', () => {
  const d = running('fence');
  const f = one(d.ev({ type: 'peer-down', lastHeardAt: d.now }), 'fence');
  const done = d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: f.seq });
  assert.deepEqual(done[0], { type: 'persist', state: { pools: { p0: { owner: 'alpha', term: 1 }, p1: { owner: 'alpha', term: 2 } }, maintenance: false, aloneAfterFence: true } });
  assert.equal(clusterView(d.cfg, d.state).aloneAfterFence, true);
  activateAll(d, done);
  const up = d.ev({ type: 'peer-up', incarnation: 9 });
  assert.deepEqual(up[0], { type: 'persist', state: { pools: d.records(), maintenance: false } });
  assert.ok(logged(up, 'alone-after-fence-cleared'));
});

test('policy fence: the flag also goes when the peer\'s state arrives or the copies are in sync, whichever comes first', () => {
  for (const how of ['state', 'in sync'] as const) {
    const d = running('fence');
    const f = one(d.ev({ type: 'peer-down', lastHeardAt: d.now }), 'fence');
    activateAll(d, d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: f.seq }));
    d.volumes(APART);
    assert.equal(d.state.aloneAfterFence, true);
    d.now += 10;
    const acts = how === 'state' ? d.peerState(d.records()) : d.volumes(IN_SYNC);
    assert.equal(d.state.aloneAfterFence, false, how);
    assert.equal(only(acts, 'persist').at(-1)?.state.aloneAfterFence, undefined, how);
  }
});

test('policy fence: an operator\'s promote at a start without the peer may fence for its writes, but that takes nothing else over', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.start();
  d.volumes(APART);
  d.tick(1000 + START_WAIT);
  const p = d.command({ kind: 'promote', pool: 'p0', force: false });
  d.ev({ type: 'activated', pool: 'p0', ok: true });
  assert.equal(result(d.log, p.id).ok, true);
  const w = d.alone('v0');
  const f = one(w.actions, 'fence');
  const done = d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: f.seq });
  assert.equal(decision(done, w.id), true);
  none(done, 'activate');
  assert.equal(d.pool('p1').phase, 'ORPHANED');
  assert.match(d.pool('p1').reason ?? '', /not met since this node started/);
  assert.equal(d.state.aloneAfterFence, false, 'the other pools\' copies are not known to be the newest');
});

test('a state file from before the flag (no aloneAfterFence) loads as not fenced-and-alone, and persists nothing new', () => {
  const d = new Driver(config('alpha', 'fence'));
  const acts = d.start({ pools: { p0: { owner: 'alpha', term: 3 }, p1: { owner: 'beta', term: 1 } }, maintenance: false });
  none(acts, 'persist');
  assert.equal(d.state.aloneAfterFence, false);
  const other = new Driver(config('alpha', 'witness'));
  other.start({ pools: { p0: { owner: 'alpha', term: 3 }, p1: { owner: 'beta', term: 1 } }, maintenance: false, aloneAfterFence: true });
  assert.equal(other.state.aloneAfterFence, false, 'only policy fence reads it');
});

test('imported while only the heartbeats come through: the pool waits for the peer\'s state, which shows the peer took it over', () => {
  const d = new Driver(config('beta', 'witness'));
  d.meet();
  reconfigure(d, [P0, ctl(P1, 'exported')]);
  d.ev({ type: 'deactivated', pool: 'p1' });
  // the sync link breaks; the heartbeats go on, so the peer still counts as met here; it takes p1 over
  d.volumes(APART);
  none(reconfigure(d, [P0, P1]), 'activate');
  none(d.tick(d.now + 10 * LEASE), 'activate');
  assert.equal(d.pool('p1').phase, 'ORPHANED');
  const taken = d.peerState({ p0: { owner: 'alpha', term: 1 }, p1: { owner: 'alpha', term: 2 } });
  none(taken, 'activate');
  assert.deepEqual([d.pool('p1').owner, d.pool('p1').phase], ['alpha', 'STANDBY']);
});

test('policy fence: a state from the fenced peer means it runs again: a write without it needs a new fence', () => {
  const d = running('fence');
  const f = one(d.alone('v0').actions, 'fence');
  d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: f.seq });
  const ok = d.alone('v0');
  assert.equal(decision(ok.actions, ok.id), true);
  // it rebooted; its state comes over the sync link before its heartbeats are heard
  const back = d.peerState(d.records());
  assert.ok(logged(back, 'fence-over'));
  assert.equal(clusterView(d.cfg, d.state).peer.fenced, false);
  const again = d.alone('v0');
  one(again.actions, 'fence');
});

// ---------------------------------------------------------------------------- properties

const controlArb: fc.Arbitrary<PoolControl> = fc.constantFrom('managed', 'managed', 'unmanaged', 'exported');

/** A configuration: any of p0, p1, p2, in any order, each with any control. */
const poolsArb: fc.Arbitrary<PoolSpec[]> = fc.tuple(fc.subarray([P0, P1, P2]), fc.array(controlArb, { minLength: 3, maxLength: 3 }), fc.boolean())
  .map(([pools, controls, reversed]) => {
    const out = pools.map((p, i) => ({ ...p, control: controls[i] ?? 'managed' }));
    return reversed ? out.reverse() : out;
  });

type Make = (now: number) => MachineEvent;

const eventArb: fc.Arbitrary<{ pools: PoolSpec[] | null; make: Make }> = (() => {
  const pool = fc.constantFrom('p0', 'p1', 'p2');
  const volume = fc.constantFrom('v0', 'v1', 'v2');
  const rec = fc.record({ owner: fc.constantFrom('alpha', 'beta'), term: fc.integer({ min: 0, max: 4 }) });
  const plain = (m: fc.Arbitrary<Make>): fc.Arbitrary<{ pools: PoolSpec[] | null; make: Make }> => m.map((make) => ({ pools: null, make }));
  // weighted toward what makes things happen: the peer up and its state, copies UpToDate, the peer going away
  const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>): { weight: number; arbitrary: fc.Arbitrary<T> } => ({ weight, arbitrary });
  return fc.oneof(
    w(3, poolsArb.map((pools) => ({ pools, make: (now: number): MachineEvent => ({ type: 'reconfigure', now }) }))),
    w(2, plain(fc.record({ p: fc.option(fc.nat(3000)), w: fc.option(fc.nat(3000)) }).map(({ p, w: a }) => (now: number): MachineEvent => ({ type: 'tick', now, peerAckSentAt: p === null ? null : now - p, witnessAckSentAt: a === null ? null : now - a })))),
    w(2, plain(fc.nat(5).map((i) => (now: number): MachineEvent => ({ type: 'peer-up', now, incarnation: i })))),
    w(2, plain(fc.nat(3000).map((ago) => (now: number): MachineEvent => ({ type: 'peer-down', now, lastHeardAt: now - ago })))),
    w(3, plain(fc.record({ p0: fc.option(rec), p1: fc.option(rec), p2: fc.option(rec) }).map((r) => (now: number): MachineEvent => ({
      type: 'peer-message', now,
      message: { kind: 'state', pools: Object.fromEntries(Object.entries(r).flatMap(([k, v]) => (v === null ? [] : [[k, v] as const]))), maintenance: false },
    })))),
    w(1, plain(fc.record({ pool, term: fc.integer({ min: 0, max: 5 }) }).map(({ pool: p, term }) => (now: number): MachineEvent => ({ type: 'peer-message', now, message: { kind: 'handover', pool: p, term } })))),
    w(3, plain(fc.record({ name: volume, d: fc.constantFrom('UpToDate', 'UpToDate', 'Outdated', 'Inconsistent') as fc.Arbitrary<'UpToDate' | 'Outdated' | 'Inconsistent'>, s: fc.boolean() })
      .map(({ name, d, s: sync }) => (now: number): MachineEvent => ({ type: 'volume', now, name, facts: { diskState: d, connected: sync, inSync: sync && d === 'UpToDate' } })))),
    w(2, plain(fc.record({ pool, ok: fc.boolean() }).map(({ pool: p, ok }) => (now: number): MachineEvent => ({ type: 'activated', now, pool: p, ok, error: 'no' })))),
    w(2, plain(pool.map((p) => (now: number): MachineEvent => ({ type: 'deactivated', now, pool: p })))),
    w(1, plain(fc.boolean().map((ok) => (now: number): MachineEvent => ({ type: 'fence-done', now, ok, detail: 'd' })))),
    w(1, plain(fc.record({ r: fc.constantFrom('claim', 'alone') as fc.Arbitrary<'claim' | 'alone'>, g: fc.boolean() })
      .map(({ r, g }) => (now: number): MachineEvent => ({ type: 'witness-reply', now, request: r, granted: g, reason: g ? 'ok' : 'no' })))),
    w(1, plain(fc.record({ v: volume, id: fc.nat(1000) }).map(({ v, id }) => (now: number): MachineEvent => ({ type: 'alone-request', now, volume: v, id })))),
    w(2, plain(fc.boolean().map((isolated) => (now: number): MachineEvent => ({ type: 'isolation', now, isolated, detail: 'gw' })))),
    w(1, plain(fc.record({ id: fc.nat(1000), c: fc.oneof(
      fc.record({ kind: fc.constant('promote' as const), pool, force: fc.boolean() }),
      fc.record({ kind: fc.constant('demote' as const), pool }),
      fc.record({ kind: fc.constant('swap' as const), pool }),
      fc.record({ kind: fc.constant('reattach' as const), pool, node: fc.constantFrom('alpha', 'beta', 'gamma') }),
    ) }).map(({ id, c }) => (now: number): MachineEvent => ({ type: 'command', now, id, command: c })))),
  );
})();

test('any configurations and events: exported and unmanaged pools are never activated (nor unmanaged ones deactivated or suspended), ' +
  'nothing is taken over, fenced or claimed while isolated, and the pools follow the configuration\'s order', () => {
  fc.assert(fc.property(
    fc.constantFrom<FencingPolicy>('none', 'ignore', 'manual', 'fence', 'witness'),
    poolsArb,
    fc.boolean(),
    fc.array(fc.tuple(fc.nat(1500), eventArb), { maxLength: 80 }),
    (policy, first, meet, events) => {
      let cfg = config('alpha', policy, { pools: first });
      let s: MachineState = step(cfg, initialState(cfg), { type: 'start', now: 0, persisted: null }).state;
      let now = 0;
      if (meet) {
        // half the runs start from a meeting: the copies UpToDate, the peer up, its state in
        for (const name of ['v0', 'v1', 'v2']) if (cfg.pools.some((p) => p.volumes.includes(name))) s = step(cfg, s, { type: 'volume', now, name, facts: IN_SYNC }).state;
        s = step(cfg, s, { type: 'peer-up', now, incarnation: 1 }).state;
        s = step(cfg, s, { type: 'peer-message', now, message: { kind: 'state', pools: Object.fromEntries(s.pools.map((p) => [p.name, { owner: p.owner, term: p.term }])), maintenance: false } }).state;
      }
      for (const [dt, { pools, make }] of events) {
        now += dt;
        if (pools !== null) cfg = { ...cfg, pools };
        const e = make(now);
        const isolated = s.isolation.isolated && !(e.type === 'isolation' && !e.isolated);
        const r = step(cfg, s, e);
        const control = (name: string): PoolControl | undefined => cfg.pools.find((p) => p.name === name)?.control ?? 'managed';
        const configured = (name: string): boolean => cfg.pools.some((p) => p.name === name);
        assert.ok(r.actions.findIndex((a) => a.type === 'persist') <= 0, 'persist first');
        for (const a of r.actions) {
          if (a.type === 'activate') {
            assert.ok(configured(a.pool) && control(a.pool) === 'managed', `activated ${a.pool} (${configured(a.pool) ? control(a.pool) ?? '' : 'not configured'})`);
          }
          if ((a.type === 'deactivate' || a.type === 'suspend') && configured(a.pool)) assert.notEqual(control(a.pool), 'unmanaged', `${a.type} of unmanaged ${a.pool}`);
          if (isolated) {
            assert.notEqual(a.type, 'fence', 'a fence while isolated');
            assert.ok(!(a.type === 'witness' && a.request === 'claim'), 'a CLAIM while isolated');
            assert.ok(!(a.type === 'log' && a.event === 'takeover'), 'a takeover while isolated');
          }
        }
        if (e.type === 'command') assert.ok(only(r.actions, 'command-result').length <= 1);
        const live = r.state.pools.filter((p) => !p.leaving).map((p) => p.name);
        // a step refused (an invalid event) keeps the old state, whose pools may follow the old configuration
        if (r.state !== s) assert.deepEqual(live, cfg.pools.map((p) => p.name), 'configured pools in the configuration\'s order');
        for (const p of r.state.pools) if (p.leaving) assert.ok(p.phase === 'ACTIVATING' || p.phase === 'DEACTIVATING', `${p.name} left and is ${p.phase}`);
        s = r.state;
      }
    },
  ), { numRuns: 500 });
});

test('witness: no CLEAR while the peer still has a pool this node removed: it could take that over with copies that missed writes', () => {
  const d = running('witness');
  const a = d.alone('v0');
  const seq = only(a.actions, 'witness').find((w) => w.request === 'alone')?.seq ?? -1;
  assert.equal(decision(d.ev({ type: 'witness-reply', request: 'alone', granted: true, reason: 'ok', seq }), a.id), true);
  reconfigure(d, [P1]);
  d.ev({ type: 'deactivated', pool: 'p0' });
  d.now += 10;
  // every pool left here is in sync: without the check, the flag that keeps the peer from claiming would go
  const synced = d.volumes(IN_SYNC, ['v1']);
  const stale = d.peerState({ p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } });
  assert.ok(![...synced, ...stale].some((x) => x.type === 'witness' && x.request === 'clear-alone'), 'no CLEAR-ALONE yet');
  const caughtUp = d.peerState({ p1: { owner: 'beta', term: 1 } });
  assert.equal(only(caughtUp, 'witness').filter((w) => w.request === 'clear-alone').length, 1);
});

test('witness: a CLAIM granted while the peer was gone no longer leads to a takeover once its state arrives (it runs again)', () => {
  const d = running('witness', [P0, ctl(P1, 'unmanaged')]);
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  const seq = only(down, 'witness').find((w) => w.request === 'claim')?.seq;
  assert.equal(seq, undefined, 'nothing to claim for yet: p1 is unmanaged');
  reconfigure(d, [ctl(P0, 'unmanaged'), P1]);
  const claim = only(d.log.slice(-20), 'witness').find((w) => w.request === 'claim')?.seq ?? -1;
  d.ev({ type: 'witness-reply', request: 'claim', granted: true, reason: 'ok', seq: claim }, d.now + 10);
  assert.equal(d.pool('p1').phase, 'TAKING-OVER');
  // the peer restarted and its state comes over the sync link before its heartbeats are heard
  const back = d.peerState(d.records());
  assert.ok(logged(back, 'claim-cancelled'));
  none(d.tick(d.now + 10 * LEASE), 'activate');
  assert.notEqual(d.pool('p1').owner, 'alpha');
});

test('a swap aborted because the peer went away is activated again only as the policy allows (the peer may have taken the pool over meanwhile)', () => {
  const d = running('witness');
  const swap = d.command({ kind: 'swap', pool: 'p0' });
  one(swap.actions, 'deactivate');
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(result(done, swap.id).ok, false);
  assert.ok(logged(done, 'swap-aborted'));
  none(done, 'activate');
  assert.deepEqual([d.pool('p0').owner, d.pool('p0').phase], ['alpha', 'TAKING-OVER']);
  const seq = only([...down, ...done], 'witness').find((w) => w.request === 'claim')?.seq ?? -1;
  // the peer took it over while this node was deactivating (this node was paused): the witness refuses
  d.ev({ type: 'witness-reply', request: 'claim', granted: false, reason: 'peer-alone', seq });
  none(d.tick(d.now + 100), 'activate');
  assert.match(d.pool('p0').reason ?? '', /CLAIM refused: peer-alone/);
});

test('isolated: a swap aborted because the peer went away is not activated here again until the gateway answers', () => {
  const d = running('fence');
  const swap = d.command({ kind: 'swap', pool: 'p0' });
  one(swap.actions, 'deactivate');
  d.ev({ type: 'isolation', isolated: true, detail: 'gw' });
  d.ev({ type: 'peer-down', lastHeardAt: d.now });
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  none(done, 'activate');
  none(done, 'fence');
  assert.equal(result(done, swap.id).ok, false);
  assert.deepEqual([d.pool('p0').phase, d.pool('p0').owner], ['ORPHANED', 'alpha']);
  assert.match(d.pool('p0').reason ?? '', /not activating without beta: this node cannot reach its gateway/);
  // once it answers: policy fence, fence first (this node met its peer since it started)
  const clear = d.ev({ type: 'isolation', isolated: false, detail: 'gw' });
  one(clear, 'fence');
  none(clear, 'activate');
});
