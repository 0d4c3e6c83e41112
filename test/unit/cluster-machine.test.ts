import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import { clusterView, initialState, leaseExpiresAt, MachineConfigError, step, type MachineState } from '../../src/cluster/machine';
import type { FencingPolicy, MachineAction, MachineEvent, PeerMessage, PersistedState } from '../../src/cluster/machine-types';
import {
  APART, CLAIM_RETRY, Driver, IN_SYNC, LEASE, MARGIN, START_WAIT, WITNESS_TIMEOUT, config, decision, logged, messages, none, one, only, result,
} from '../helpers/cluster-machine';

const witnessAsk = (acts: readonly MachineAction[], request: string): number => {
  const w = only(acts, 'witness').filter((a) => a.request === request);
  assert.equal(w.length, 1, `one ${request} request in ${JSON.stringify(acts)}`);
  return (w[0] as { seq: number }).seq;
};

// ---------------------------------------------------------------------------- configuration

test('a configuration the machine cannot run is refused with ERR_MACHINE_CONFIG', () => {
  const bad = [
    config('alpha', 'witness', { peer: 'alpha' }),
    config('alpha', 'witness', { leaseMs: 0 }),
    config('alpha', 'witness', { pools: [{ name: 'p', volumes: ['v'], preferredNode: 'gamma', autoFailback: false }] }),
    config('alpha', 'witness', { pools: [{ name: 'p', volumes: ['v'], preferredNode: 'alpha', autoFailback: false }, { name: 'q', volumes: ['v'], preferredNode: 'beta', autoFailback: false }] }),
    config('alpha', 'witness', { pools: [{ name: 'p', volumes: [], preferredNode: 'alpha', autoFailback: false }] }),
  ];
  for (const c of bad) assert.throws(() => initialState(c), (e: unknown) => e instanceof MachineConfigError && e.code === 'ERR_MACHINE_CONFIG');
});

// ---------------------------------------------------------------------------- start and meeting

test('a new cluster: every pool owned by its preferred node at term 1, persisted; nothing activates before meeting the peer', () => {
  const d = new Driver(config('alpha', 'witness'));
  const acts = d.start(null);
  assert.deepEqual(acts[0], { type: 'persist', state: { pools: { p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } }, maintenance: false } });
  none(acts, 'activate');
  none(acts, 'send-peer');
  assert.equal(d.pool('p0').phase, 'ORPHANED');
  assert.match(d.pool('p0').reason ?? '', /waiting up to 3000 ms to meet beta/);
  assert.equal(d.pool('p1').phase, 'STANDBY');
  d.volumes(IN_SYNC);
  const up = d.ev({ type: 'peer-up', incarnation: 5 });
  assert.deepEqual(messages(up), [{ kind: 'state', pools: d.records(), maintenance: false, active: [] }], 'our state goes to the peer on peer-up');
  none(up, 'activate');
  const met = d.peerState({ p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } });
  assert.deepEqual(only(met, 'activate'), [{ type: 'activate', pool: 'p0', term: 1 }]);
  none(met, 'persist');
  assert.equal(d.pool('p1').phase, 'STANDBY');
  d.ev({ type: 'activated', pool: 'p0', ok: true });
  assert.equal(d.pool('p0').phase, 'ACTIVE');
});

test('a failed activation is tried again on the daemon\'s timer only while this node owns the pool INACTIVE', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.start(null);
  d.volumes(IN_SYNC);
  d.ev({ type: 'peer-up', incarnation: 5 });
  d.peerState({ p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } });
  d.ev({ type: 'activated', pool: 'p0', ok: false, error: 'floating IP 198.18.0.10 is in use on the network already' });
  assert.equal(d.pool('p0').phase, 'INACTIVE');
  const again = d.ev({ type: 'retry-activate', pool: 'p0' });
  assert.deepEqual(only(again, 'activate'), [{ type: 'activate', pool: 'p0', term: 1 }], 'same term: it owns the pool already');
  assert.equal(d.pool('p0').phase, 'ACTIVATING');
  none(d.ev({ type: 'retry-activate', pool: 'p0' }), 'activate');
  d.ev({ type: 'activated', pool: 'p0', ok: true });
  none(d.ev({ type: 'retry-activate', pool: 'p0' }), 'activate');
  assert.equal(d.pool('p0').phase, 'ACTIVE', 'a late timer changes nothing');
  none(d.ev({ type: 'retry-activate', pool: 'p1' }), 'activate');
  assert.equal(d.pool('p1').phase, 'STANDBY', 'nor for a pool the peer owns');
});

test('restarting with persisted records keeps them, and persists nothing when nothing changed', () => {
  const d = new Driver(config('beta', 'witness'));
  const acts = d.start({ pools: { p0: { owner: 'beta', term: 4 }, p1: { owner: 'beta', term: 2 } }, maintenance: false });
  none(acts, 'persist');
  assert.deepEqual([d.pool('p0').owner, d.pool('p0').term], ['beta', 4]);
});

test('meeting: the higher term wins per pool, in both directions', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.start({ pools: { p0: { owner: 'alpha', term: 3 }, p1: { owner: 'beta', term: 1 } }, maintenance: false });
  d.volumes(IN_SYNC);
  d.ev({ type: 'peer-up', incarnation: 1 });
  const met = d.peerState({ p0: { owner: 'beta', term: 2 }, p1: { owner: 'alpha', term: 2 } });
  assert.deepEqual(one(met, 'persist').state.pools, { p0: { owner: 'alpha', term: 3 }, p1: { owner: 'alpha', term: 2 } }, 'p1 adopted before anything is done about it');
  assert.equal(met[0]?.type, 'persist');
  assert.deepEqual(only(met, 'activate').map((a) => [a.pool, a.term]), [['p0', 3], ['p1', 2]]);
  assert.deepEqual(messages(met).at(-1), { kind: 'state', pools: { p0: { owner: 'alpha', term: 3 }, p1: { owner: 'alpha', term: 2 } }, maintenance: false, active: [] });
});

test('meeting: a higher term for the peer deactivates a pool active here, then it is STANDBY', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  const acts = d.peerState({ p0: { owner: 'beta', term: 2 }, p1: { owner: 'beta', term: 1 } });
  assert.deepEqual(acts[0], { type: 'persist', state: { pools: { p0: { owner: 'beta', term: 2 }, p1: { owner: 'beta', term: 1 } }, maintenance: false } });
  one(acts, 'deactivate');
  assert.equal(d.pool('p0').phase, 'DEACTIVATING');
  d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(d.pool('p0').phase, 'STANDBY');
});

test('owner conflict: equal terms, different owners: logged as an error, and both nodes settle on the name that sorts first', () => {
  for (const self of ['alpha', 'beta'] as const) {
    const d = new Driver(config(self, 'witness'));
    d.start({ pools: { p0: { owner: self, term: 5 }, p1: { owner: 'beta', term: 1 } }, maintenance: false });
    d.volumes(IN_SYNC);
    d.ev({ type: 'peer-up', incarnation: 1 });
    const peer = self === 'alpha' ? 'beta' : 'alpha';
    const acts = d.peerState({ p0: { owner: peer, term: 5 }, p1: { owner: 'beta', term: 1 } });
    const conflict = only(acts, 'log').find((l) => l.event === 'owner-conflict');
    assert.equal(conflict?.level, 'error');
    assert.equal(d.pool('p0').owner, 'alpha', `${self} agrees that alpha keeps p0`);
    assert.equal(d.pool('p0').term, 5);
    if (self === 'alpha') assert.equal(one(acts, 'activate').pool, 'p0');
    else none(only(acts, 'activate').filter((a) => a.pool === 'p0'), 'activate');
  }
});

test('a state that came before the heartbeats brought the peer up does not count: both sides resend theirs every leaseMs', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.start();
  d.volumes(IN_SYNC);
  const early = d.peerState(d.records());
  none(early, 'activate');
  none(early, 'fence');
  // the peer may have changed its records since, and that news may have been lost with the sync link
  none(d.ev({ type: 'peer-up', incarnation: 1 }), 'activate');
  assert.match(d.pool('p0').reason ?? '', /state has not arrived/);
  none(d.tick(d.now + LEASE - 1), 'send-peer');
  assert.deepEqual(messages(d.tick(d.now + 1)), [{ kind: 'state', pools: d.records(), maintenance: false, active: [] }]);
  one(d.peerState(d.records()), 'activate');
});

// ---------------------------------------------------------------------------- not meeting the peer at start

function unmet(policy: FencingPolicy, persisted: PersistedState | null = null): { d: Driver; acts: MachineAction[] } {
  const d = new Driver(config('alpha', policy));
  d.start(persisted);
  d.volumes(APART);
  assert.deepEqual(d.tick(1000 + START_WAIT - 1), [], 'nothing before startWaitMs');
  return { d, acts: d.tick(1000 + START_WAIT) };
}

test('startWaitMs passes without meeting the peer, policy none: our pool stays down until an operator promotes it', () => {
  const { d, acts } = unmet('none');
  none(acts, 'activate');
  assert.ok(logged(acts, 'peer-not-seen'));
  assert.deepEqual([d.pool('p0').phase, d.pool('p0').reason], ['ORPHANED', 'peer not seen; policy none: an operator must promote']);
  assert.equal(d.pool('p1').phase, 'ORPHANED');
});

test('startWaitMs passes, policies ignore and manual: our pool activates; ignore also takes over the peer\'s', () => {
  const ig = unmet('ignore');
  assert.deepEqual(only(ig.acts, 'activate').map((a) => [a.pool, a.term]), [['p0', 1], ['p1', 2]]);
  const man = unmet('manual');
  assert.deepEqual(only(man.acts, 'activate').map((a) => [a.pool, a.term]), [['p0', 1]]);
  assert.match(man.d.pool('p1').reason ?? '', /tandem promote/);
});

// Changed with the rule of docs/cluster.md ("Not meeting the peer at start"): a start without meeting the peer
// fences only when the persisted state says this node fenced the peer and served alone since they last met.
// Without it the peer may have fenced this node and written alone meanwhile: no fence, nothing activated.
test('startWaitMs passes, policy fence, a new cluster: no fence; every pool waits ORPHANED for the peer or an operator', () => {
  const { d, acts } = unmet('fence');
  none(acts, 'fence');
  none(acts, 'activate');
  assert.ok(logged(acts, 'peer-not-seen'));
  for (const p of ['p0', 'p1']) {
    assert.equal(d.pool(p).phase, 'ORPHANED');
    assert.match(d.pool(p).reason ?? '', /beta not met since this node started.*waiting for beta, or an operator \(tandem promote\)/);
  }
  none(d.tick(1000 + START_WAIT + 60_000), 'fence');
});

test('startWaitMs passes, policy fence, this node had fenced the peer and served alone: fence first, then activate ours and take over the peer\'s', () => {
  const { d, acts } = unmet('fence', { pools: { p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } }, maintenance: false, aloneAfterFence: true });
  const f = one(acts, 'fence');
  none(acts, 'activate');
  assert.equal(d.pool('p0').phase, 'TAKING-OVER');
  const done = d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: f.seq });
  assert.deepEqual(only(done, 'activate').map((a) => [a.pool, a.term]), [['p0', 1], ['p1', 2]]);
  assert.equal(done[0]?.type, 'persist', 'the takeover is on disk before anything activates');
});

test('startWaitMs passes, policy witness: CLAIM first; refused → ORPHANED and retried every claimRetryMs; granted → activate', () => {
  const { d, acts } = unmet('witness');
  const seq = witnessAsk(acts, 'claim');
  none(acts, 'activate');
  const refused = d.ev({ type: 'witness-reply', request: 'claim', granted: false, reason: 'peer-alive', seq });
  none(refused, 'activate');
  assert.deepEqual([d.pool('p0').phase, d.pool('p0').reason], ['ORPHANED', `CLAIM refused: peer-alive; retrying every ${CLAIM_RETRY} ms`]);
  assert.deepEqual(only(d.tick(d.now + CLAIM_RETRY - 1), 'witness'), []);
  const again = d.tick(d.now + 1);
  const seq2 = witnessAsk(again, 'claim');
  // lastHeardAt is the start: our previous incarnation's echoes may carry the peer's lease until then + leaseMs
  const granted = d.ev({ type: 'witness-reply', request: 'claim', granted: true, reason: 'ok', seq: seq2 });
  assert.deepEqual(only(granted, 'activate').map((a) => [a.pool, a.term]), [['p0', 1], ['p1', 2]]);
});

test('a peer whose heartbeats arrive but whose state does not is never acted against', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.start(null);
  d.volumes(IN_SYNC);
  d.ev({ type: 'peer-up', incarnation: 1 });
  const acts = d.tick(1000 + START_WAIT + 5000);
  none(acts, 'fence');
  none(acts, 'activate');
  assert.match(d.pool('p0').reason ?? '', /state has not arrived/);
});

// ---------------------------------------------------------------------------- leases

function leased(): Driver {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  d.tick(10_000, 9_900, 9_950);
  assert.equal(d.pool('p0').phase, 'ACTIVE');
  return d;
}

test('lease: the owner suspends when neither the peer nor the witness heard it for leaseMs', () => {
  const d = leased();
  assert.equal(leaseExpiresAt(d.cfg, d.state), 9_950 + LEASE);
  none(d.tick(10_949, 9_900, 9_950), 'suspend');
  const acts = d.tick(10_950, 9_900, 9_950);
  assert.deepEqual(one(acts, 'suspend'), { type: 'suspend', pool: 'p0', reason: `lease lost: neither the peer nor the witness heard this node for leaseMs (${LEASE} ms)` });
  assert.equal(d.pool('p0').phase, 'SUSPENDED');
  assert.ok(logged(acts, 'suspended'));
});

test('lease: echoed heartbeats alone do not resume a suspended pool', () => {
  const d = leased();
  d.tick(11_000, 9_900, 9_950);
  // the peer echoes again: it may have taken the pool over meanwhile, and echoes whoever it hears
  const acts = d.tick(11_100, 11_050, 9_950);
  none(acts, 'resume');
  assert.equal(d.pool('p0').phase, 'SUSPENDED');
  none(d.tick(11_200, 11_150, 9_950), 'resume');
});

test('lease: a RENEW granted resumes only if it was sent after the suspension', () => {
  const d = leased();
  d.tick(11_000, 9_900, 9_950);
  none(d.tick(11_100, 9_900, 10_990), 'resume');
  assert.equal(d.pool('p0').phase, 'SUSPENDED');
  const acts = d.tick(11_200, 9_900, 11_050);
  one(acts, 'resume');
  assert.equal(d.pool('p0').phase, 'ACTIVE');
  assert.ok(logged(acts, 'resumed'));
});

test('lease: the peer\'s state confirming our ownership at our term resumes (with a valid lease); a higher term deactivates', () => {
  const d = leased();
  d.tick(11_000, 9_900, 9_950);
  // without any valid lease the next tick would suspend again: wait for the witness
  none(d.peerState(d.records()), 'resume');
  d.tick(11_100, 11_050, 9_950);
  one(d.peerState(d.records()), 'resume');
  assert.equal(d.pool('p0').phase, 'ACTIVE');

  const e = leased();
  e.tick(11_000, 9_900, 9_950);
  e.tick(11_100, 11_050, 9_950);
  const taken = e.peerState({ p0: { owner: 'beta', term: 2 }, p1: { owner: 'beta', term: 1 } });
  none(taken, 'resume');
  one(taken, 'deactivate');
});

test('lease: with no ack at all, it starts at the activation', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  const activatedAt = d.now;
  assert.equal(leaseExpiresAt(d.cfg, d.state), activatedAt + LEASE);
  one(d.tick(activatedAt + LEASE), 'suspend');
});

test('lease: other policies never suspend for it', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.meet();
  assert.equal(leaseExpiresAt(d.cfg, d.state), null);
  none(d.tick(1_000_000), 'suspend');
});

// ---------------------------------------------------------------------------- takeovers

test('witness takeover waits until lastHeardAt + leaseMs + takeoverMarginMs, even after CLAIM is granted', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  d.tick(10_000, 9_990, 9_990);
  const down = d.ev({ type: 'peer-down', lastHeardAt: 10_000 }, 11_000);
  const seq = witnessAsk(down, 'claim');
  none(d.ev({ type: 'witness-reply', request: 'claim', granted: true, reason: 'ok', seq }, 11_050), 'activate');
  assert.equal(d.pool('p1').phase, 'TAKING-OVER');
  none(d.tick(10_000 + LEASE + MARGIN - 1, null, 11_100), 'activate');
  const acts = d.tick(10_000 + LEASE + MARGIN, null, 11_100);
  assert.deepEqual(one(acts, 'activate'), { type: 'activate', pool: 'p1', term: 2 });
  assert.ok(logged(acts, 'takeover'));
  assert.ok(acts.findIndex((a) => a.type === 'persist') < acts.findIndex((a) => a.type === 'activate'));
});

test('witness takeover: when the margin has already passed at the grant, it starts at once', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  const down = d.ev({ type: 'peer-down', lastHeardAt: 5_000 }, 11_000);
  const acts = d.ev({ type: 'witness-reply', request: 'claim', granted: true, reason: 'ok', seq: witnessAsk(down, 'claim') });
  assert.equal(one(acts, 'activate').term, 2);
});

test('a takeover never promotes a copy that is not UpToDate: ORPHANED, naming the volume; an operator may force it', () => {
  const d = new Driver(config('alpha', 'ignore'));
  d.meet();
  d.volumes({ diskState: 'Outdated', connected: false, inSync: false }, ['v1']);
  const acts = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  none(acts, 'activate');
  assert.equal(d.pool('p1').phase, 'ORPHANED');
  assert.match(d.pool('p1').reason ?? '', /volume v1 is Outdated here/);
  const refused = d.command({ kind: 'promote', pool: 'p1', force: false });
  assert.match(result(refused.actions, refused.id).message, /v1 is Outdated.*force/);
  none(refused.actions, 'activate');
  const forced = d.command({ kind: 'promote', pool: 'p1', force: true });
  assert.deepEqual(one(forced.actions, 'activate'), { type: 'activate', pool: 'p1', term: 2 });
  assert.equal(only(forced.actions, 'log').find((l) => l.event === 'promote-forced')?.level, 'warn');
  assert.equal(result(d.ev({ type: 'activated', pool: 'p1', ok: true }), forced.id).ok, true);
});

test('a volume that never reported counts as not UpToDate, and no fence is started for pools that could not be promoted', () => {
  const d = new Driver(config('alpha', 'fence'));
  // persisted as fenced-and-alone: without it a start that does not meet the peer never fences (see above)
  d.start({ pools: { p0: { owner: 'alpha', term: 1 }, p1: { owner: 'beta', term: 1 } }, maintenance: false, aloneAfterFence: true });
  d.volumes({ diskState: 'Inconsistent', connected: false, inSync: false }, ['v0']);
  const acts = d.tick(1000 + START_WAIT);
  none(acts, 'fence');
  assert.match(d.pool('p0').reason ?? '', /volume v0 is Inconsistent here/);
  assert.match(d.pool('p1').reason ?? '', /volume v1 has not reported its disk state/);
  // once a copy can be promoted, the fence goes ahead for it
  one(d.volumes(APART, ['v1']), 'fence');
});

// ---------------------------------------------------------------------------- the peer comes back

test('after peer-up, the answer of a fence still running is ignored', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.meet();
  const f = one(d.ev({ type: 'peer-down', lastHeardAt: d.now }), 'fence');
  d.ev({ type: 'peer-up', incarnation: 8 });
  const before = d.state;
  const late = d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: f.seq });
  assert.equal(d.state, before, 'nothing changes');
  none(late, 'activate');
  assert.ok(logged(late, 'fence-stale'));
  assert.equal(clusterView(d.cfg, d.state).peer.fenced, false);
  // peer goes again: a new fence, and the old answer still does not count for it
  const f2 = one(d.ev({ type: 'peer-down', lastHeardAt: d.now }), 'fence');
  assert.notEqual(f2.seq, f.seq);
  none(d.ev({ type: 'fence-done', ok: true, detail: 'old', seq: f.seq }), 'activate');
  assert.equal(one(d.ev({ type: 'fence-done', ok: true, detail: 'new', seq: f2.seq }), 'activate').term, 2);
});

test('after peer-up, a late CLAIM grant does not take over, but the flag it set is cleared once in sync', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  const seq = witnessAsk(d.ev({ type: 'peer-down', lastHeardAt: d.now }), 'claim');
  d.ev({ type: 'peer-up', incarnation: 8 });
  d.peerState(d.records());
  const late = d.ev({ type: 'witness-reply', request: 'claim', granted: true, reason: 'ok', seq });
  none(late, 'activate');
  assert.ok(logged(late, 'witness-stale'));
  assert.equal(d.pool('p1').phase, 'STANDBY');
  witnessAsk(late, 'clear-fenced');
});

test('pools ORPHANED while the peer was down go back to STANDBY when its state arrives', () => {
  const d = new Driver(config('alpha', 'manual'));
  d.meet();
  d.ev({ type: 'peer-down', lastHeardAt: d.now });
  assert.equal(d.pool('p1').phase, 'ORPHANED');
  d.ev({ type: 'peer-up', incarnation: 9 });
  assert.equal(d.pool('p1').phase, 'ORPHANED', 'until its state says who owns what');
  d.peerState(d.records());
  assert.equal(d.pool('p1').phase, 'STANDBY');
});

// ---------------------------------------------------------------------------- alone requests

test('witness: one ALONE for many requests; granted → all allowed and later ones at once; reset when in sync', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet({ p0: { owner: 'alpha', term: 1 }, p1: { owner: 'alpha', term: 1 } });
  const a = d.alone('v0');
  const b = d.alone('v1');
  const seq = witnessAsk(a.actions, 'alone');
  none(b.actions, 'witness');
  none(b.actions, 'alone-decision');
  const granted = d.ev({ type: 'witness-reply', request: 'alone', granted: true, reason: 'ok', seq });
  assert.equal(decision(granted, a.id), true);
  assert.equal(decision(granted, b.id), true);
  const c = d.alone('v0');
  assert.equal(decision(c.actions, c.id), true);
  none(c.actions, 'witness');
  // in sync again (reported after the requests): CLEAR once, and the next separation asks again
  d.now += 10;
  const sync = d.volumes(IN_SYNC);
  witnessAsk(sync, 'clear-alone');
  none(d.volumes(IN_SYNC), 'witness');
  witnessAsk(d.alone('v0').actions, 'alone');
});

test('witness: ALONE refused (or unanswered) → every waiting request denied and the pool suspended', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  d.tick(10_000, 9_990, 9_990);
  const a = d.alone('v0');
  d.tick(10_000 + WITNESS_TIMEOUT - 1, 9_990, 10_400);
  const late = d.tick(10_000 + WITNESS_TIMEOUT, 9_990, 10_400);
  assert.equal(decision(late, a.id), false);
  assert.equal(d.pool('p0').phase, 'SUSPENDED');
  assert.match(d.pool('p0').reason ?? '', /refused ALONE: no reply within/);
  const b = d.alone('v0');
  assert.equal(decision(b.actions, b.id), false, 'a suspended pool denies at once');
});

test('fence: requests wait for one fence; ok → allowed and the peer stays fenced until it is up again', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.meet();
  const a = d.alone('v0');
  const f = one(a.actions, 'fence');
  const b = d.alone('v0');
  none(b.actions, 'fence');
  const done = d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: f.seq });
  assert.equal(decision(done, a.id), true);
  assert.equal(decision(done, b.id), true);
  const c = d.alone('v0');
  assert.equal(decision(c.actions, c.id), true);
  d.ev({ type: 'peer-up', incarnation: 3 });
  one(d.alone('v0').actions, 'fence');
});

test('policy none: the write fails and the pool drops to SECONDARY; only an operator brings it back', () => {
  const d = new Driver(config('alpha', 'none'));
  d.meet();
  const a = d.alone('v0');
  assert.equal(decision(a.actions, a.id), false);
  one(a.actions, 'deactivate');
  d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(d.pool('p0').phase, 'ORPHANED');
  assert.equal(d.pool('p0').owner, 'alpha');
  none(d.peerState(d.records()), 'activate');
  one(d.command({ kind: 'promote', pool: 'p0', force: false }).actions, 'activate');
});

// ---------------------------------------------------------------------------- commands

test('swap: deactivate, hand over at term + 1, the peer activates; messages passed across by hand', () => {
  const a = new Driver(config('alpha', 'witness'));
  const b = new Driver(config('beta', 'witness'));
  a.start();
  b.start();
  a.volumes(IN_SYNC);
  b.volumes(IN_SYNC);
  const pass = (from: Driver, to: Driver, acts: readonly MachineAction[]): MachineAction[] =>
    messages(acts).flatMap((message: PeerMessage) => to.ev({ type: 'peer-message', message }, from.now));
  const finish = (d: Driver, acts: readonly MachineAction[]): MachineAction[] =>
    only(acts, 'activate').flatMap((x) => d.ev({ type: 'activated', pool: x.pool, ok: true }));
  const aUp = a.ev({ type: 'peer-up', incarnation: 2 });
  const bUp = b.ev({ type: 'peer-up', incarnation: 1 });
  finish(b, pass(a, b, aUp));
  finish(a, pass(b, a, bUp));
  assert.equal(a.pool('p0').phase, 'ACTIVE');
  assert.equal(b.pool('p1').phase, 'ACTIVE');

  const swap = a.command({ kind: 'swap', pool: 'p0' });
  one(swap.actions, 'deactivate');
  const handed = a.ev({ type: 'deactivated', pool: 'p0' });
  assert.deepEqual(handed[0], { type: 'persist', state: { pools: { p0: { owner: 'beta', term: 2 }, p1: { owner: 'beta', term: 1 } }, maintenance: false } });
  assert.deepEqual(messages(handed)[0], { kind: 'handover', pool: 'p0', term: 2 });
  assert.equal(result(handed, swap.id).ok, true);
  assert.equal(a.pool('p0').phase, 'STANDBY');
  const received = pass(a, b, handed);
  assert.deepEqual(one(received, 'activate'), { type: 'activate', pool: 'p0', term: 2 });
  assert.equal(received[0]?.type, 'persist');
  b.ev({ type: 'activated', pool: 'p0', ok: true });
  assert.deepEqual([b.pool('p0').phase, b.pool('p0').owner, b.pool('p0').term], ['ACTIVE', 'beta', 2]);
  // the state that follows the handover changes nothing more
  none(pass(b, a, b.log.slice(-3)), 'activate');
});

test('swap refuses unless owned here, ACTIVE, the peer met and every volume in sync', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  const notOwned = d.command({ kind: 'swap', pool: 'p1' });
  assert.match(result(notOwned.actions, notOwned.id).message, /owned by beta/);
  d.volumes(APART, ['v0']);
  const apart = d.command({ kind: 'swap', pool: 'p0' });
  assert.match(result(apart.actions, apart.id).message, /v0 is not in sync/);
  d.ev({ type: 'peer-down', lastHeardAt: d.now });
  const gone = d.command({ kind: 'swap', pool: 'p0' });
  assert.match(result(gone.actions, gone.id).message, /beta is not up/);
});

test('swap is aborted when a write went without the peer while the pool was deactivating', () => {
  const d = new Driver(config('alpha', 'ignore'));
  d.meet();
  d.volumes(IN_SYNC, ['v0']);
  const swap = d.command({ kind: 'swap', pool: 'p0' });
  d.alone('v0');
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(result(done, swap.id).ok, false);
  none(done, 'send-peer');
  assert.equal(one(done, 'activate').term, 1, 'it stays here');
});

test('autoFailback: the preferred node back and in sync gets its pool handed back', () => {
  const cfg = config('alpha', 'ignore', { pools: [{ name: 'p1', volumes: ['v1'], preferredNode: 'beta', autoFailback: true }] });
  const d = new Driver(cfg);
  d.meet();
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  d.ev({ type: 'activated', pool: one(down, 'activate').pool, ok: true });
  d.volumes(APART);
  d.ev({ type: 'peer-up', incarnation: 2 });
  none(d.peerState({ p1: { owner: 'beta', term: 1 } }), 'deactivate');
  const sync = d.volumes(IN_SYNC);
  one(sync, 'deactivate');
  assert.ok(logged(sync, 'failback'));
  assert.deepEqual(messages(d.ev({ type: 'deactivated', pool: 'p1' }))[0], { kind: 'handover', pool: 'p1', term: 3 });
});

test('promote refuses a pool the peer owns while it is up; demote leaves ours inactive, not taken over by the peer', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  const p = d.command({ kind: 'promote', pool: 'p1', force: true });
  assert.deepEqual(result(p.actions, p.id), { type: 'command-result', id: p.id, ok: false, message: 'beta owns pool p1 and is up; use swap' });
  const dm = d.command({ kind: 'demote', pool: 'p0' });
  one(dm.actions, 'deactivate');
  none(dm.actions, 'command-result');
  const done = d.ev({ type: 'deactivated', pool: 'p0' });
  assert.equal(result(done, dm.id).ok, true);
  assert.deepEqual([d.pool('p0').phase, d.pool('p0').reason, d.pool('p0').owner], ['ORPHANED', 'demoted by operator', 'alpha']);
  none(d.peerState(d.records()), 'activate');
  const again = d.command({ kind: 'promote', pool: 'p0', force: false });
  assert.equal(one(again.actions, 'activate').term, 2);
});

test('an activation that fails leaves the pool INACTIVE with the error, without retry; promote retries', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.start();
  d.volumes(IN_SYNC);
  d.ev({ type: 'peer-up', incarnation: 1 });
  d.peerState(d.records());
  const failed = d.ev({ type: 'activated', pool: 'p0', ok: false, error: 'export busy' });
  assert.deepEqual([d.pool('p0').phase, d.pool('p0').reason], ['INACTIVE', 'activation failed: export busy']);
  assert.ok(logged(failed, 'activate-failed'));
  none(d.tick(100_000), 'activate');
  none(d.peerState(d.records()), 'activate');
  const p = d.command({ kind: 'promote', pool: 'p0', force: false });
  one(p.actions, 'activate');
});

test('maintenance: persisted and sent; the peer going down only logs; writes go on alone; no lease suspension', () => {
  const d = new Driver(config('alpha', 'witness'));
  d.meet();
  const m = d.command({ kind: 'maintenance', on: true });
  assert.deepEqual(m.actions[0], { type: 'persist', state: { pools: d.records(), maintenance: true } });
  assert.equal(result(m.actions, m.id).ok, true);
  assert.deepEqual(messages(m.actions), [{ kind: 'state', pools: d.records(), maintenance: true, active: ['p0'] }]);
  const down = d.ev({ type: 'peer-down', lastHeardAt: d.now });
  for (const t of ['witness', 'fence', 'activate', 'deactivate'] as const) none(down, t);
  assert.ok(logged(down, 'peer-down'));
  const a = d.alone('v0');
  assert.equal(decision(a.actions, a.id), true);
  none(d.tick(1_000_000), 'suspend');
  assert.equal(clusterView(d.cfg, d.state).maintenance.effective, true);
  const off = d.command({ kind: 'maintenance', on: false });
  witnessAsk(off.actions, 'claim');
  one(off.actions, 'suspend');
});

test('maintenance on the peer counts here too', () => {
  const d = new Driver(config('alpha', 'fence'));
  d.meet();
  d.peerState(d.records(), true);
  none(d.ev({ type: 'peer-down', lastHeardAt: d.now }), 'fence');
});

// ---------------------------------------------------------------------------- invalid events

test('invalid events change nothing and say so; commands still get their one answer', () => {
  const d = new Driver(config('alpha', 'witness'));
  const early = d.ev({ type: 'tick', peerAckSentAt: null, witnessAckSentAt: null });
  assert.deepEqual(early.map((a) => a.type), ['log']);
  d.meet();
  const cases: Array<Parameters<Driver['ev']>[0]> = [
    { type: 'activated', pool: 'nope', ok: true },
    { type: 'activated', pool: 'p0', ok: true },
    { type: 'activated', pool: 'p1', ok: true },
    { type: 'deactivated', pool: 'p0' },
    { type: 'volume', name: 'nope', facts: IN_SYNC },
    { type: 'peer-message', message: { kind: 'handover', pool: 'nope', term: 9 } },
    { type: 'peer-message', message: { kind: 'handover', pool: 'p1', term: 1 } },
    { type: 'fence-done', ok: true, detail: 'x' },
    { type: 'witness-reply', request: 'claim', granted: false, reason: 'x' },
    { type: 'start', persisted: null },
    { type: 'command', id: 77, command: { kind: 'promote', pool: 'nope', force: false } },
    { type: 'command', id: 78, command: { kind: 'swap', pool: 'nope' } },
    { type: 'alone-request', volume: 'nope', id: 79 },
  ];
  for (const e of cases) {
    const before = d.state;
    const acts = d.ev(e);
    assert.equal(d.state, before, `${JSON.stringify(e)} changes nothing`);
    assert.equal(acts[0]?.type, 'log', JSON.stringify(e));
    for (const a of acts.slice(1)) assert.ok(a.type === 'command-result' || a.type === 'alone-decision', JSON.stringify(e));
  }
  assert.equal(result(d.log, 77).ok, false);
  assert.equal(result(d.log, 78).ok, false);
  assert.equal(decision(d.log, 79), false);
});

// ---------------------------------------------------------------------------- properties

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

const eventArb = (): fc.Arbitrary<(now: number) => MachineEvent> => {
  const pool = fc.constantFrom('p0', 'p1');
  const volume = fc.constantFrom('v0', 'v1');
  const when = (f: (now: number) => MachineEvent): ((now: number) => MachineEvent) => f;
  return fc.oneof(
    fc.record({ p: fc.option(fc.nat(3000)), w: fc.option(fc.nat(3000)) }).map(({ p, w }) => when((now) => ({ type: 'tick', now, peerAckSentAt: p === null ? null : now - p, witnessAckSentAt: w === null ? null : now - w }))),
    fc.nat(5).map((i) => when((now) => ({ type: 'peer-up', now, incarnation: i }))),
    fc.nat(3000).map((ago) => when((now) => ({ type: 'peer-down', now, lastHeardAt: now - ago }))),
    fc.record({ p0: fc.record({ owner: fc.constantFrom('alpha', 'beta'), term: fc.integer({ min: 0, max: 4 }) }), p1: fc.record({ owner: fc.constantFrom('alpha', 'beta'), term: fc.integer({ min: 0, max: 4 }) }), m: fc.boolean() })
      .map(({ p0, p1, m }) => when((now) => ({ type: 'peer-message', now, message: { kind: 'state', pools: { p0, p1 }, maintenance: m } }))),
    fc.record({ pool, term: fc.integer({ min: 0, max: 5 }) }).map(({ pool: p, term }) => when((now) => ({ type: 'peer-message', now, message: { kind: 'handover', pool: p, term } }))),
    fc.record({ name: volume, d: fc.constantFrom('UpToDate', 'Outdated', 'Inconsistent') as fc.Arbitrary<'UpToDate' | 'Outdated' | 'Inconsistent'>, s: fc.boolean() })
      .map(({ name, d, s }) => when((now) => ({ type: 'volume', now, name, facts: { diskState: d, connected: s, inSync: s && d === 'UpToDate' } }))),
    fc.record({ pool, ok: fc.boolean() }).map(({ pool: p, ok }) => when((now) => ({ type: 'activated', now, pool: p, ok, error: 'no' }))),
    pool.map((p) => when((now) => ({ type: 'deactivated', now, pool: p }))),
    fc.boolean().map((ok) => when((now) => ({ type: 'fence-done', now, ok, detail: 'd' }))),
    fc.record({ r: fc.constantFrom('claim', 'alone', 'clear-alone', 'clear-fenced') as fc.Arbitrary<'claim' | 'alone'>, g: fc.boolean() })
      .map(({ r, g }) => when((now) => ({ type: 'witness-reply', now, request: r, granted: g, reason: g ? 'ok' : 'no' }))),
    fc.record({ v: volume, id: fc.nat(1000) }).map(({ v, id }) => when((now) => ({ type: 'alone-request', now, volume: v, id }))),
    fc.record({ id: fc.nat(1000), c: fc.oneof(
      fc.record({ kind: fc.constant('promote' as const), pool, force: fc.boolean() }),
      fc.record({ kind: fc.constant('demote' as const), pool }),
      fc.record({ kind: fc.constant('swap' as const), pool }),
      fc.record({ kind: fc.constant('maintenance' as const), on: fc.boolean() }),
    ) }).map(({ id, c }) => when((now) => ({ type: 'command', now, id, command: c }))),
  );
};

test('any sequence of events: the input state is never changed, persist comes first, activations only of UpToDate copies unless forced', () => {
  fc.assert(fc.property(
    fc.constantFrom<FencingPolicy>('none', 'ignore', 'manual', 'fence', 'witness'),
    fc.array(fc.tuple(fc.nat(700), eventArb()), { maxLength: 60 }),
    (policy, events) => {
      const cfg = config('alpha', policy);
      let s: MachineState = deepFreeze(step(cfg, initialState(cfg), { type: 'start', now: 0, persisted: null }).state);
      let now = 0;
      for (const [dt, make] of events) {
        now += dt;
        const e = make(now);
        const r = step(cfg, s, e);
        deepFreeze(r.state);
        const persistAt = r.actions.findIndex((a) => a.type === 'persist');
        assert.ok(persistAt <= 0, 'persist is the first action when there is one');
        const forced = e.type === 'command' && e.command.kind === 'promote' && e.command.force;
        for (const a of only(r.actions, 'activate')) {
          const vol = a.pool === 'p0' ? 'v0' : 'v1';
          if (!forced) assert.equal(r.state.volumes[vol]?.diskState, 'UpToDate', `${a.pool} activated without an UpToDate copy`);
        }
        if (e.type === 'command') assert.ok(only(r.actions, 'command-result').length <= 1);
        s = r.state;
      }
    },
  ));
});

test('an operator promote while the sync link is down makes an owner conflict that both keep until one side is demoted', () => {
  const a = new Driver(config('alpha', 'manual'));
  a.meet();
  assert.equal(a.pool('p0').phase, 'ACTIVE');
  // the sync link fails (heartbeats go on): alpha's volume stops mirroring
  a.ev({ type: 'volume', name: 'v0', facts: { diskState: 'UpToDate', connected: false, inSync: false } });
  // beta was promoted there; its state arrives once the link is back, before the copies meet again
  const r = a.ev({ type: 'peer-message', message: { kind: 'state', pools: { p0: { owner: 'beta', term: 2 }, p1: { owner: 'beta', term: 1 } }, maintenance: false, active: ['p0'] } });
  none(r, 'deactivate');
  assert.equal(a.pool('p0').phase, 'ACTIVE', 'alpha keeps serving: stepping down would not undo the split brain');
  assert.equal(a.pool('p0').owner, 'beta');
  // demoting alpha's side ends the conflict: beta keeps the pool
  const d = a.command({ kind: 'demote', pool: 'p0' });
  assert.ok(d.actions.some((x) => x.type === 'deactivate' && x.pool === 'p0'));
});
