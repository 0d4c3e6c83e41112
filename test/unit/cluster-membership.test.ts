// Taking a node offline and back, and removing it (docs/cluster.md, "Taking a node offline"):
// two real machines joined by a hand-run message queue, their daemons' answers given at once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stateMessage } from '../../src/cluster/machine';
import type { Command, FencingPolicy, MachineAction, PeerMessage, PoolSpec } from '../../src/cluster/machine-types';
import { APART, Driver, IN_SYNC, config, decision, logged, messages, none, only, result } from '../helpers/cluster-machine';

const P0: PoolSpec = { name: 'p0', volumes: ['v0'], preferredNode: 'alpha', autoFailback: false };
const P1: PoolSpec = { name: 'p1', volumes: ['v1'], preferredNode: 'beta', autoFailback: true };

/** alpha and beta, met and in sync; messages and the daemons' activations and deactivations run until nothing is left. */
class Pair {
  readonly alpha: Driver;
  readonly beta: Driver;
  /** messages held back (the sync link is cut) */
  cut = false;
  readonly lost: PeerMessage[] = [];

  constructor(policy: FencingPolicy) {
    this.alpha = new Driver(config('alpha', policy, { pools: [P0, P1] }));
    this.beta = new Driver(config('beta', policy, { pools: [P0, P1] }));
    for (const d of [this.alpha, this.beta]) {
      d.start();
      d.volumes(IN_SYNC);
      d.ev({ type: 'peer-up', incarnation: 1 });
    }
    this.run(this.alpha, this.alpha.peerState(this.beta.records()));
    this.run(this.beta, this.beta.ev({ type: 'peer-message', message: stateMessage(this.alpha.state) }));
    this.settle();
  }

  other(d: Driver): Driver {
    return d === this.alpha ? this.beta : this.alpha;
  }

  private readonly queue: Array<{ d: Driver; a: MachineAction }> = [];
  private running = false;

  /**
   * Carries out the actions of `d`'s step, and what they cause on both sides, in order: each
   * side's messages arrive in the order sent, and a daemon's answer comes after what was sent before it.
   */
  run(d: Driver, actions: readonly MachineAction[]): void {
    for (const a of actions) this.queue.push({ d, a });
    if (this.running) return;
    this.running = true;
    for (let t = this.queue.shift(); t !== undefined; t = this.queue.shift()) {
      const { d: n, a } = t;
      if (a.type === 'activate') this.run(n, n.ev({ type: 'activated', pool: a.pool, ok: true }));
      else if (a.type === 'deactivate') this.run(n, n.ev({ type: 'deactivated', pool: a.pool }));
      else if (a.type === 'send-peer' && this.cut) this.lost.push(a.message);
      else if (a.type === 'send-peer') this.run(this.other(n), this.other(n).ev({ type: 'peer-message', message: a.message }));
    }
    this.running = false;
  }

  /** Each side's state once more, as the daemons send it every lease. */
  settle(): void {
    for (const d of [this.alpha, this.beta]) this.run(this.other(d), this.other(d).ev({ type: 'peer-message', message: stateMessage(d.state) }));
  }

  command(d: Driver, command: Command): { id: number; actions: MachineAction[] } {
    const before = d.log.length;
    const { id, actions } = d.command(command);
    this.run(d, actions);
    return { id, actions: d.log.slice(before) };
  }
}

const phase = (d: Driver, pool: string): string => d.pool(pool).phase;

test('node offline hands the pools to the peer, then the node is offline once the peer took note; the peer holds it offline, both persisted', () => {
  const x = new Pair('fence');
  assert.deepEqual([phase(x.alpha, 'p0'), phase(x.beta, 'p1')], ['ACTIVE', 'ACTIVE']);
  const { id, actions } = x.command(x.alpha, { kind: 'offline', force: false });
  assert.deepEqual(result(actions, id), { type: 'command-result', id, ok: true, message: 'alpha is offline; beta took note' });
  assert.deepEqual([x.alpha.pool('p0').owner, phase(x.alpha, 'p0'), phase(x.beta, 'p0')], ['beta', 'STANDBY', 'ACTIVE']);
  assert.equal(x.alpha.state.membership, 'offline');
  assert.equal(x.beta.state.peerMembership, 'offline');
  const persisted = only(x.alpha.log, 'persist').at(-1)?.state;
  assert.equal(persisted?.offline, 'offline');
  assert.equal(only(x.beta.log, 'persist').at(-1)?.state.peer, 'offline');
  assert.ok(logged(x.beta.log, 'peer-offline'));
});

test('an offline node takes nothing: the peer going down starts no fence and no takeover; a handover to it goes back', () => {
  const x = new Pair('fence');
  x.command(x.alpha, { kind: 'offline', force: false });
  const down = x.alpha.ev({ type: 'peer-down', lastHeardAt: x.alpha.now });
  none(down, 'fence');
  none(down, 'activate');
  x.alpha.tick(x.alpha.now + 60_000);
  none(x.alpha.log.slice(-20), 'fence');
  assert.deepEqual([phase(x.alpha, 'p0'), phase(x.alpha, 'p1')], ['STANDBY', 'STANDBY']);
  // the operator's promote, swap and reattach are refused while it is out
  const promote = x.command(x.alpha, { kind: 'promote', pool: 'p0', force: true });
  assert.match(result(promote.actions, promote.id).message, /this node is offline: it takes no pool \(tandem node online first\)/);
});

test('policy fence: the peer of an offline node goes on alone without fencing it, and acts alone at a restart without meeting it', () => {
  const x = new Pair('fence');
  x.command(x.alpha, { kind: 'offline', force: false });
  const b = x.beta;
  b.ev({ type: 'peer-down', lastHeardAt: b.now });
  b.volumes(APART);
  const { id, actions } = b.alone('v0');
  assert.equal(decision(actions, id), true);
  none(actions, 'fence');
  // a restart of beta, alpha still away: it serves both pools at once, no fence
  const persisted = only(b.log, 'persist').at(-1)?.state ?? null;
  const again = new Driver(config('beta', 'fence', { pools: [P0, P1] }));
  again.start(persisted);
  again.volumes(APART);
  const acts = again.tick(again.now + 10_000);
  none(acts, 'fence');
  assert.deepEqual(only(acts, 'activate').map((a) => a.pool).sort(), ['p0', 'p1']);
});

test('policy witness keeps its rules for an offline peer: going on alone still asks the witness', () => {
  const x = new Pair('witness');
  x.command(x.alpha, { kind: 'offline', force: false });
  const b = x.beta;
  b.ev({ type: 'peer-down', lastHeardAt: b.now });
  const { actions } = b.alone('v0');
  assert.deepEqual(only(actions, 'witness').map((w) => w.request), ['alone']);
});

test('node offline is refused, changing nothing, when a copy is not in sync, when the peer is away, and when the peer is going offline too', () => {
  const x = new Pair('fence');
  x.alpha.volumes({ diskState: 'UpToDate', connected: true, inSync: false }, ['v0']);
  const r1 = x.command(x.alpha, { kind: 'offline', force: false });
  assert.equal(result(r1.actions, r1.id).ok, false);
  assert.match(result(r1.actions, r1.id).message, /pool p0: volume v0 is not in sync with beta/);
  assert.equal(x.alpha.state.membership, 'member');
  assert.equal(phase(x.alpha, 'p0'), 'ACTIVE');
  x.alpha.volumes(IN_SYNC, ['v0']);
  x.alpha.ev({ type: 'peer-down', lastHeardAt: x.alpha.now });
  const r2 = x.command(x.alpha, { kind: 'offline', force: false });
  assert.match(result(r2.actions, r2.id).message, /beta is not up and met: this node's pools would stop \(--force stops them\)/);
  // forced: the pools stop here, and the node is offline at once
  const r3 = x.command(x.alpha, { kind: 'offline', force: true });
  assert.equal(result(r3.actions, r3.id).ok, true);
  assert.equal(x.alpha.state.membership, 'offline');
  assert.equal(phase(x.alpha, 'p0'), 'ORPHANED');
  assert.equal(x.alpha.pool('p0').owner, 'alpha', 'the record stays: beta takes it when they meet');
});

test('a node that went offline alone hands its pools over when it meets the peer again', () => {
  const x = new Pair('manual');
  x.alpha.ev({ type: 'peer-down', lastHeardAt: x.alpha.now });
  x.command(x.alpha, { kind: 'offline', force: true });
  x.alpha.ev({ type: 'peer-up', incarnation: 2 });
  x.run(x.alpha, x.alpha.peerState(x.beta.records()));
  x.settle();
  assert.deepEqual([x.beta.pool('p0').owner, phase(x.beta, 'p0'), phase(x.alpha, 'p0')], ['beta', 'ACTIVE', 'STANDBY']);
});

test('node online: refused without the peer; with it, the node is a member again only once the peer took note; no failback to an offline node', () => {
  const x = new Pair('fence');
  x.command(x.alpha, { kind: 'offline', force: false });
  // p1 prefers beta and fails back: but nothing goes to alpha while it is out
  assert.equal(x.beta.pool('p0').owner, 'beta');
  x.alpha.ev({ type: 'peer-down', lastHeardAt: x.alpha.now });
  const refused = x.command(x.alpha, { kind: 'online', force: false });
  assert.match(result(refused.actions, refused.id).message, /beta is not up and met: it must take note first/);
  assert.equal(x.alpha.state.membership, 'offline');
  x.alpha.ev({ type: 'peer-up', incarnation: 3 });
  x.run(x.alpha, x.alpha.peerState(x.beta.records()));
  // the answer is lost: alpha stays out (rejoining) although beta holds it as a member
  x.cut = true;
  const r = x.command(x.alpha, { kind: 'online', force: false });
  assert.equal(x.alpha.state.membership, 'rejoining');
  assert.equal(only(r.actions, 'command-result').length, 0, 'answered when beta takes note');
  // an old state of beta's (from before alpha asked) does not count
  const old: PeerMessage = { kind: 'state', pools: x.beta.records(), maintenance: false, yourEpoch: x.alpha.state.membershipEpoch - 1 };
  x.alpha.ev({ type: 'peer-message', message: old });
  assert.equal(x.alpha.state.membership, 'rejoining');
  x.cut = false;
  for (const m of x.lost.splice(0)) x.run(x.beta, x.beta.ev({ type: 'peer-message', message: m }));
  x.settle();
  assert.equal(x.beta.state.peerMembership, 'member');
  assert.equal(x.alpha.state.membership, 'member');
  assert.equal(result(x.alpha.log, r.id).ok, true);
  // a member again: swap works again
  const swap = x.command(x.beta, { kind: 'swap', pool: 'p0' });
  assert.equal(result(swap.actions, swap.id).ok, true);
  assert.equal(phase(x.alpha, 'p0'), 'ACTIVE');
});

test('swap and reattach to an offline peer are refused', () => {
  const x = new Pair('fence');
  x.command(x.alpha, { kind: 'offline', force: false });
  const swap = x.command(x.beta, { kind: 'swap', pool: 'p0' });
  assert.match(result(swap.actions, swap.id).message, /alpha is offline: it takes no pool/);
  assert.equal(phase(x.beta, 'p0'), 'ACTIVE');
});

test('node remove: refused for a peer that is up or merely down; an offline peer is removed; told so, it stays out until node add and node online', () => {
  const x = new Pair('fence');
  const up = x.command(x.beta, { kind: 'remove-node', node: 'alpha', force: false });
  assert.match(result(up.actions, up.id).message, /alpha is up: take it offline first/);
  const self = x.command(x.beta, { kind: 'remove-node', node: 'beta', force: false });
  assert.match(result(self.actions, self.id).message, /a node does not remove itself/);
  const unknown = x.command(x.beta, { kind: 'remove-node', node: 'gamma', force: false });
  assert.match(result(unknown.actions, unknown.id).message, /unknown node "gamma"/);
  x.command(x.alpha, { kind: 'offline', force: false });
  const removed = x.command(x.beta, { kind: 'remove-node', node: 'alpha', force: false });
  assert.equal(result(removed.actions, removed.id).ok, true);
  assert.equal(only(x.beta.log, 'persist').at(-1)?.state.peer, 'removed');
  // alpha asks to come back: beta keeps it out
  x.command(x.alpha, { kind: 'online', force: false });
  x.settle();
  assert.equal(x.beta.state.peerMembership, 'removed');
  assert.equal(x.alpha.state.membership, 'offline', 'told it was removed, alpha stays out');
  assert.ok(logged(x.alpha.log, 'removed-by-peer'));
  x.command(x.beta, { kind: 'add-node', node: 'alpha' });
  assert.equal(x.beta.state.peerMembership, 'offline');
  x.command(x.alpha, { kind: 'online', force: false });
  x.settle();
  assert.deepEqual([x.alpha.state.membership, x.beta.state.peerMembership], ['member', 'member']);
});

test('node remove --force of a peer that is down but did not leave: it counts as fenced; when it shows up as a member it is told, and goes offline', () => {
  const x = new Pair('fence');
  const b = x.beta;
  x.cut = true;
  b.ev({ type: 'peer-down', lastHeardAt: b.now });
  x.alpha.ev({ type: 'peer-down', lastHeardAt: x.alpha.now });
  const refused = x.command(b, { kind: 'remove-node', node: 'alpha', force: false });
  assert.match(result(refused.actions, refused.id).message, /alpha is down but did not leave: --force once it is powered off for good/);
  const forced = x.command(b, { kind: 'remove-node', node: 'alpha', force: true });
  assert.equal(result(forced.actions, forced.id).ok, true);
  // beta takes alpha's pool over without a fence: the operator vouched that alpha is off
  none(forced.actions, 'fence');
  assert.equal(phase(b, 'p0'), 'ACTIVE');
  assert.equal(b.pool('p0').owner, 'beta');
  x.cut = false;
  x.lost.splice(0);
  b.ev({ type: 'peer-up', incarnation: 9 });
  x.alpha.ev({ type: 'peer-up', incarnation: 9 });
  x.settle();
  assert.equal(x.alpha.state.membership, 'offline');
  assert.deepEqual([phase(x.alpha, 'p0'), x.alpha.pool('p0').owner], ['STANDBY', 'beta']);
});

test('both nodes taking themselves offline at once: the first by name goes on, the other stays', () => {
  const x = new Pair('fence');
  x.cut = true;
  const a = x.command(x.alpha, { kind: 'offline', force: false });
  const b = x.command(x.beta, { kind: 'offline', force: false });
  x.cut = false;
  for (const m of x.lost.splice(0)) {
    const to = messages(only(x.alpha.log, 'send-peer')).includes(m) ? x.beta : x.alpha;
    x.run(to, to.ev({ type: 'peer-message', message: m }));
  }
  x.settle();
  x.settle();
  assert.deepEqual([x.alpha.state.membership, x.beta.state.membership], ['offline', 'member']);
  assert.equal(result(x.beta.log, b.id).ok, false);
  assert.equal(result(x.alpha.log, a.id).ok, true);
  assert.deepEqual([phase(x.beta, 'p0'), phase(x.beta, 'p1')], ['ACTIVE', 'ACTIVE']);
});
