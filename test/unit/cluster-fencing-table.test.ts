// The fencing table of docs/cluster.md as data: each row drives a fresh machine
// (alpha) from its start through meeting beta, then beta goes down, and the row's
// replies come in. PRIMARY rows: alpha owns p0 and a replica asks to go on alone.
// SECONDARY rows: beta owns p1 and alpha decides whether to take it over.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FencingPolicy, MachineAction } from '../../src/cluster/machine-types';
import {
  CLAIM_RETRY, Driver, FENCE_RETRY, LEASE, MARGIN, WITNESS_TIMEOUT, config, decision, logged, one, only, result,
} from '../helpers/cluster-machine';

type Outcome = 'writes continue' | 'writes fail' | 'waits for operator';
type Reply = 'fence ok' | 'fence fails' | 'witness reachable' | 'witness unreachable' | 'claim granted' | 'claim refused' | null;

interface Row {
  readonly role: 'PRIMARY' | 'SECONDARY';
  readonly policy: FencingPolicy;
  readonly reply: Reply;
  readonly outcome: Outcome;
  /** the row's own words from docs/cluster.md */
  readonly doc: string;
}

const TABLE: readonly Row[] = [
  { role: 'SECONDARY', policy: 'none', reply: null, outcome: 'writes fail', doc: 'writes fail (there is no export here); no takeover' },
  { role: 'SECONDARY', policy: 'ignore', reply: null, outcome: 'writes continue', doc: 'takes over at once: writes succeed here' },
  { role: 'SECONDARY', policy: 'manual', reply: null, outcome: 'waits for operator', doc: 'waits for tandem promote, or for the peer to return' },
  { role: 'PRIMARY', policy: 'none', reply: null, outcome: 'writes fail', doc: 'writes fail and the copy drops to SECONDARY; an operator must promote it' },
  { role: 'PRIMARY', policy: 'ignore', reply: null, outcome: 'writes continue', doc: 'writes succeed; stays PRIMARY (ALONE)' },
  { role: 'PRIMARY', policy: 'manual', reply: null, outcome: 'writes continue', doc: 'writes succeed; stays PRIMARY (ALONE)' },
  { role: 'PRIMARY', policy: 'fence', reply: 'fence ok', outcome: 'writes continue', doc: 'writes succeed; this node is the owner' },
  { role: 'SECONDARY', policy: 'fence', reply: 'fence ok', outcome: 'writes continue', doc: 'writes succeed; this node becomes the owner' },
  { role: 'PRIMARY', policy: 'fence', reply: 'fence fails', outcome: 'writes fail', doc: 'writes fail until the peer returns (retried every fenceRetryMs)' },
  { role: 'SECONDARY', policy: 'fence', reply: 'fence fails', outcome: 'writes fail', doc: 'writes fail until the peer returns (retried every fenceRetryMs)' },
  { role: 'PRIMARY', policy: 'witness', reply: 'witness reachable', outcome: 'writes continue', doc: 'ALONE first, then writes succeed' },
  { role: 'PRIMARY', policy: 'witness', reply: 'witness unreachable', outcome: 'writes fail', doc: 'suspended at lease end; writes fail' },
  { role: 'SECONDARY', policy: 'witness', reply: 'claim granted', outcome: 'writes continue', doc: 'takes over after the lease margin' },
  { role: 'SECONDARY', policy: 'witness', reply: 'claim refused', outcome: 'writes fail', doc: 'no takeover; retried while the peer stays down' },
  { role: 'SECONDARY', policy: 'witness', reply: 'witness unreachable', outcome: 'writes fail', doc: 'a CLAIM without reply is refused; retried' },
];

/** Completes every activation among the actions; returns the terms they were for. */
function activate(d: Driver, actions: readonly MachineAction[]): number[] {
  return only(actions, 'activate').map((a) => {
    d.ev({ type: 'activated', pool: a.pool, ok: true });
    return a.term;
  });
}

for (const row of TABLE) {
  test(`${row.role} × ${row.policy}${row.reply === null ? '' : `, ${row.reply}`}: ${row.outcome} (${row.doc})`, () => {
    const d = new Driver(config('alpha', row.policy));
    d.meet();
    assert.equal(d.pool('p0').phase, 'ACTIVE', 'alpha serves p0 after meeting beta');
    assert.equal(d.pool('p1').phase, 'STANDBY');
    const pool = row.role === 'PRIMARY' ? 'p0' : 'p1';
    const term = d.pool(pool).term;
    let t = 10_000;
    // echoes and RENEWs keep alpha's lease until the peer goes
    d.tick(t, t - 100, t - 100);
    const lastHeard = t;
    t += LEASE;
    // RENEWs go on while the witness answers: an unreachable witness lets the lease run out
    if (row.reply !== 'witness unreachable') d.tick(t, lastHeard - 100, t - 50);
    const down = d.ev({ type: 'peer-down', lastHeardAt: lastHeard }, t);
    const acts: MachineAction[] = [...down];
    let aloneId: number | null = null;
    if (row.role === 'PRIMARY') {
      const r = d.alone('v0');
      aloneId = r.id;
      acts.push(...r.actions);
    }
    const take = (a: readonly MachineAction[]): void => { acts.push(...a); };
    const fenceSeq = (): number => one(acts, 'fence').seq;
    const witnessSeq = (request: string): number => {
      const w = only(acts, 'witness').filter((a) => a.request === request);
      assert.equal(w.length, 1, `one ${request} request`);
      return (w[0] as { seq: number }).seq;
    };
    switch (row.reply) {
      case 'fence ok': take(d.ev({ type: 'fence-done', ok: true, detail: 'off', seq: fenceSeq() }, t += 100)); break;
      case 'fence fails': {
        const seq = fenceSeq();
        take(d.ev({ type: 'fence-done', ok: false, detail: 'no answer', seq }, t += 100));
        if (row.role === 'SECONDARY') {
          // retried every fenceRetryMs while the peer stays down
          assert.deepEqual(only(d.tick(t + FENCE_RETRY - 1), 'fence'), []);
          assert.equal(only(d.tick(t + FENCE_RETRY), 'fence').length, 1, 'the fence is retried');
        }
        break;
      }
      case 'witness reachable': take(d.ev({ type: 'witness-reply', request: 'alone', granted: true, reason: 'ok', seq: witnessSeq('alone') }, t += 10)); break;
      case 'witness unreachable':
        if (row.role === 'PRIMARY') assert.match(d.pool(pool).reason ?? '', /lease lost/, 'suspended at lease end');
        // nothing answers: a request times out as a refusal, and nothing renews the lease
        take(d.tick(t += WITNESS_TIMEOUT));
        take(d.tick(t += LEASE));
        break;
      case 'claim granted': {
        take(d.ev({ type: 'witness-reply', request: 'claim', granted: true, reason: 'ok', seq: witnessSeq('claim') }, t += 10));
        assert.deepEqual(only(acts, 'activate'), [], 'no takeover before lastHeardAt + leaseMs + margin');
        assert.equal(d.pool(pool).phase, 'TAKING-OVER');
        take(d.tick(lastHeard + LEASE + MARGIN));
        break;
      }
      case 'claim refused': {
        take(d.ev({ type: 'witness-reply', request: 'claim', granted: false, reason: 'peer-alive', seq: witnessSeq('claim') }, t += 10));
        assert.match(d.pool(pool).reason ?? '', /CLAIM refused: peer-alive/);
        assert.equal(only(d.tick(t + CLAIM_RETRY), 'witness').filter((w) => w.request === 'claim').length, 1, 'the claim is retried');
        break;
      }
      case null: break;
    }
    const terms = activate(d, acts);
    const view = d.pool(pool);
    switch (row.outcome) {
      case 'writes continue':
        assert.equal(view.phase, 'ACTIVE');
        assert.equal(view.owner, 'alpha');
        if (aloneId !== null) assert.equal(decision(acts, aloneId), true, 'the write the peer did not take is acknowledged');
        if (row.role === 'SECONDARY') assert.deepEqual(terms, [term + 1], 'the takeover activates at term + 1');
        if (row.role === 'SECONDARY') assert.ok(logged(acts, 'takeover'));
        break;
      case 'writes fail':
        if (aloneId !== null) assert.equal(decision(acts, aloneId), false, 'the write the peer did not take fails');
        assert.notEqual(view.phase, 'ACTIVE');
        if (row.role === 'SECONDARY') assert.notEqual(view.owner, 'alpha', 'no takeover');
        if (row.role === 'PRIMARY' && row.policy !== 'none') assert.equal(view.phase, 'SUSPENDED');
        if (row.role === 'PRIMARY' && row.policy === 'none') {
          // the copy drops to SECONDARY: the pool is deactivated and only an operator brings it back
          one(acts, 'deactivate');
          d.ev({ type: 'deactivated', pool });
          assert.equal(d.pool(pool).phase, 'ORPHANED');
          assert.match(d.pool(pool).reason ?? '', /operator must promote/);
          const p = d.command({ kind: 'promote', pool, force: false });
          assert.equal(one(p.actions, 'activate').term, term + 1);
        }
        break;
      case 'waits for operator': {
        assert.equal(view.phase, 'ORPHANED');
        assert.match(view.reason ?? '', /tandem promote/);
        const p = d.command({ kind: 'promote', pool, force: false });
        assert.equal(one(p.actions, 'activate').term, term + 1);
        const done = d.ev({ type: 'activated', pool, ok: true });
        assert.equal(result(done, p.id).ok, true);
        assert.equal(d.pool(pool).phase, 'ACTIVE');
        break;
      }
    }
  });
}
