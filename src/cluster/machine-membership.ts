// A node leaves the cluster and comes back (docs/cluster.md, "Taking a node offline"):
// `node offline` hands this node's pools to the peer, then holds it out; `node online`
// brings it back once the peer took note; `node remove` and `node add` run on the
// other node. Both sides persist where they stand before they say it, and the 'state'
// message carries it with epochs, so an old answer is never taken for a new one.
//
// What an offline peer buys: under policies fence and none, going on without it needs
// no fence, as DRBD needs none for a peer that disconnected cleanly and marked its disk
// Outdated. It can only become a member again through this node's note. The witness
// policy keeps its rules: the witness, not this node, says who may write.
import type { Ctx } from './machine-context';
import type { PoolState } from './machine-state';
import type { Command, PeerMessage, PersistedState } from './machine-types';

type MembershipCommand = Extract<Command, { kind: 'offline' | 'online' | 'remove-node' | 'add-node' }>;

export function isMembershipCommand(cmd: Command): cmd is MembershipCommand {
  return cmd.kind === 'offline' || cmd.kind === 'online' || cmd.kind === 'remove-node' || cmd.kind === 'add-node';
}

const epochOf = (n: number | undefined): number => (n !== undefined && Number.isSafeInteger(n) && n >= 0 ? n : 0);

export function startMembership(c: Ctx, persisted: PersistedState | null): void {
  const off = persisted?.offline;
  const peer = persisted?.peer;
  c.set({
    membership: off === 'offline' || off === 'rejoining' ? off : 'member',
    membershipEpoch: epochOf(persisted?.membershipEpoch),
    peerMembership: peer === 'offline' || peer === 'removed' ? peer : 'member',
    peerEpoch: epochOf(persisted?.peerEpoch),
  });
}

/** The membership part of this node's 'state' message. */
export function membershipFields(c: Pick<Ctx, 's'>['s']): Pick<Extract<PeerMessage, { kind: 'state' }>, 'offline' | 'epoch' | 'youAre' | 'yourEpoch'> {
  return {
    // only once persisted: a node still handing its pools over may yet abort and serve them
    ...(c.membership === 'offline' ? { offline: true } : {}),
    ...(c.membership === 'leaving' ? { leaving: true } : {}),
    ...(c.membershipEpoch > 0 ? { epoch: c.membershipEpoch } : {}),
    ...(c.peerMembership !== 'member' ? { youAre: c.peerMembership } : {}),
    ...(c.peerEpoch > 0 ? { yourEpoch: c.peerEpoch } : {}),
  };
}

function bump(c: Ctx, membership: 'member' | 'offline' | 'rejoining'): void {
  c.set({ membership, membershipEpoch: c.s.membershipEpoch + 1 });
}

/** The peer's 'state': how it stands (it may have left or come back), and how it holds this node. */
export function takePeerMembership(c: Ctx, m: Extract<PeerMessage, { kind: 'state' }>): void {
  const { peer, self } = c.cfg;
  c.set({ peerLeaving: m.leaving === true });
  // both nodes went offline at once: the first by name goes on, the other stays
  if (m.leaving === true && c.s.membership === 'leaving' && [self, peer].sort()[0] === peer) abortLeaving(c, `${peer} is going offline too, and goes first`);
  const epoch = epochOf(m.epoch);
  if (epoch >= c.s.peerEpoch) {
    const was = c.s.peerMembership;
    const next = was === 'removed' ? 'removed' : m.offline === true ? 'offline' : 'member';
    if (was === 'removed' && m.offline !== true && epoch > c.s.peerEpoch) {
      c.log('error', 'removed-node-seen', `${peer} was removed from the cluster here but runs as a member: it is told so and holds itself offline; tandem node add ${peer} lets it back`);
    }
    c.set({ peerEpoch: epoch, peerMembership: next });
    if (next !== was) {
      c.log('info', next === 'offline' ? 'peer-offline' : 'peer-online', next === 'offline'
        ? `${peer} left the cluster (offline): it owns and takes nothing; going on without it needs no fence`
        : `${peer} is a member again`);
    }
  }
  // an answer to an older membership of ours says nothing of the present one
  if (epochOf(m.yourEpoch) < c.s.membershipEpoch) return;
  const g = c.s.goingOffline;
  if (m.youAre === 'removed' && c.s.membership !== 'offline') {
    if (g !== null) c.commandResult(g.commandId, false, `${peer} removed ${self} from the cluster meanwhile`);
    answerRejoin(c, false, `${peer} removed ${self} from the cluster: tandem node add ${self} on ${peer} first`);
    bump(c, 'offline');
    c.set({ goingOffline: null });
    c.log('error', 'removed-by-peer', `${peer} removed this node from the cluster: it is offline until ${peer} adds it back and tandem node online runs here`);
    return;
  }
  if (c.s.membership === 'offline' && m.youAre === 'offline' && g !== null) {
    c.commandResult(g.commandId, true, `${self} is offline; ${peer} took note`);
    c.set({ goingOffline: null });
  }
  if (c.s.membership === 'rejoining' && m.youAre === undefined) {
    c.set({ membership: 'member' });
    c.log('info', 'node-online', `${peer} took note: this node is a member again`);
    answerRejoin(c, true, `${self} is a member again`);
  }
}

function answerRejoin(c: Ctx, ok: boolean, message: string): void {
  if (c.s.rejoinCommand === null) return;
  c.commandResult(c.s.rejoinCommand, ok, message);
  c.set({ rejoinCommand: null });
}

/** Ends `node offline`: once every pool owned here went to the peer (or, forced, stopped), and the peer took note. */
export function settleMembership(c: Ctx): void {
  const g = c.s.goingOffline;
  const { peer, self } = c.cfg;
  if (c.s.membership === 'rejoining' && c.s.rejoinCommand !== null && !c.present) {
    answerRejoin(c, false, `${peer} went away before it took note: ${self} stays out, and is a member once they meet`);
  }
  if (g === null) return;
  if (c.s.membership === 'offline') {
    if (c.present) return;
    c.commandResult(g.commandId, true, `${self} is offline; ${peer} learns it when they next meet`);
    c.set({ goingOffline: null });
    return;
  }
  const own = c.s.pools.filter((p) => p.owner === self && c.managed(p));
  const serving = (p: PoolState): boolean => p.phase === 'ACTIVE' || p.phase === 'SUSPENDED' || p.phase === 'ACTIVATING' || p.phase === 'DEACTIVATING';
  if (own.some(serving)) {
    if (!g.force && !c.present) abortLeaving(c, `${peer} went away`);
    return;
  }
  if (c.present && !c.peerOut) {
    // done once the peer's own state shows it took every pool handed to it (a handover may be lost with the
    // sync link): until then this node may have to serve them again; settlePool hands over the ones still here
    if (own.length > 0 || !c.peerAgrees() || c.s.peerLeaving) return;
  } else if (!g.force) {
    abortLeaving(c, `${peer} went away`);
    return;
  }
  bump(c, 'offline');
  c.log('warn', 'node-offline', `this node left the cluster: ${own.length === 0 ? `its pools are with ${peer}` : `pools ${own.map((p) => p.name).join(', ')} stopped here`}; ` +
    'it owns and takes nothing until tandem node online');
  if (!c.present) {
    c.commandResult(g.commandId, true, `${self} is offline; ${peer} learns it when they next meet`);
    c.set({ goingOffline: null });
  }
}

/** `node offline` cannot finish: the pools still here are served again by the normal rules. */
export function abortLeaving(c: Ctx, why: string): void {
  const g = c.s.goingOffline;
  if (g === null || c.s.membership !== 'leaving') return;
  c.set({ goingOffline: null, membership: 'member' });
  c.sendState = true;
  c.commandResult(g.commandId, false, `node offline aborted: ${why}; the pools not yet with ${c.cfg.peer} stay here`);
  c.log('warn', 'node-offline-aborted', `node offline aborted: ${why}`);
}

/** A pool while this node is out (leaving, offline, rejoining): nothing is taken; what it owns goes to the peer. */
export function settleOut(c: Ctx, name: string): void {
  const p = c.p(name);
  const { peer } = c.cfg;
  const serving = p.phase === 'ACTIVE' || p.phase === 'SUSPENDED';
  if (p.owner === peer) {
    if (serving && !p.conflict) c.deactivate(name, { kind: 'standby' }, null);
    else if (!serving) c.setPhase(name, 'STANDBY', null);
    return;
  }
  const handing = c.present && c.peerTakesNothing === null && c.peerKnows(name);
  if (serving) {
    // `node offline` deactivated what served here; this is a pool activated since by an operator's promote before
    if (c.s.membership === 'leaving') return;
    if (handing && c.inSync(name) === null) c.deactivate(name, { kind: 'offline' }, null);
    else c.deactivate(name, { kind: 'await-operator', reason: `this node is ${c.s.membership}` }, null);
    return;
  }
  // as with swap: a write the peer's copy lacks (made here before the pool stopped) would be lost to a handover
  const apart = handing ? c.inSync(name) : null;
  if (apart !== null) return c.setPhase(name, 'ORPHANED', `this node is ${c.s.membership}: it hands the pool to ${peer} once the copies are in sync (${apart})`);
  if (handing) {
    c.log('info', 'offline-handover', `pool ${name}: this node is ${c.s.membership}: handing it to ${peer}`);
    c.handOver(name, p.term + 1, null);
    return;
  }
  c.setPhase(name, 'ORPHANED', `this node is ${c.s.membership}: it waits for ${peer} to take it${c.peerOut ? ` (${peer} is ${c.s.peerMembership})` : ''}`);
}

export function membershipCommand(c: Ctx, id: number, cmd: MembershipCommand, refuse: (why: string) => void): void {
  const { self, peer } = c.cfg;
  switch (cmd.kind) {
    case 'offline': return offline(c, id, cmd.force, refuse);
    case 'online': {
      const m = c.s.membership;
      if (m === 'member') return c.commandResult(id, true, `${self} is a member`);
      if (m === 'leaving') return refuse(`${self} is going offline: try again when it is offline`);
      if (cmd.force) {
        bump(c, 'member');
        answerRejoin(c, false, 'forced online');
        c.log('error', 'node-online-forced', `this node is a member again without ${peer}'s note (operator): ` +
          `if ${peer} served without it, its copies here lack those writes, and ${peer} may go on without fencing it`);
        return c.commandResult(id, true, `${self} is a member again (forced, without ${peer})`);
      }
      if (!c.present) return refuse(`${peer} is not up and met: it must take note first (--force: without it, once it is down for good)`);
      if (c.s.rejoinCommand !== null) c.commandResult(c.s.rejoinCommand, false, 'a newer node online');
      if (m === 'offline') bump(c, 'rejoining');
      c.set({ rejoinCommand: id });
      c.log('info', 'node-rejoining', `this node asks ${peer} to hold it as a member again`);
      return;
    }
    case 'remove-node': {
      if (cmd.node === self) return refuse(`a node does not remove itself: take it offline (tandem node offline), then remove it on ${peer}`);
      if (cmd.node !== peer) return refuse(`unknown node ${JSON.stringify(cmd.node)}: the nodes are ${self} and ${peer}`);
      const was = c.s.peerMembership;
      if (was === 'removed') return c.commandResult(id, true, `${peer} is removed already`);
      if (was === 'member') {
        if (c.s.peer.up) return refuse(`${peer} is up: take it offline first (tandem node offline, on ${peer})`);
        if (!cmd.force) return refuse(`${peer} is down but did not leave: --force once it is powered off for good (it then counts as fenced)`);
      }
      c.set({ peerMembership: 'removed' });
      c.log(was === 'member' ? 'error' : 'warn', 'node-removed', `${peer} removed from the cluster by the operator${was === 'member' ? ' while down, without leaving: the operator vouches it is powered off' : ''}; ` +
        `this node goes on without it, and tells it so if it shows up again`);
      return c.commandResult(id, true, `${peer} removed from the cluster`);
    }
    case 'add-node': {
      if (cmd.node !== peer) return refuse(`unknown node ${JSON.stringify(cmd.node)}: ${cmd.node === self ? 'this node is a member of its own cluster' : `the peer is ${peer}`}`);
      if (c.s.peerMembership !== 'removed') return c.commandResult(id, true, `${peer} is not removed (${c.s.peerMembership})`);
      c.set({ peerMembership: 'offline' });
      c.log('info', 'node-added', `${peer} may come back: it is held offline until it runs tandem node online`);
      return c.commandResult(id, true, `${peer} may come back: run tandem node online on it`);
    }
  }
}

function offline(c: Ctx, id: number, force: boolean, refuse: (why: string) => void): void {
  const { self, peer } = c.cfg;
  const m = c.s.membership;
  if (m === 'offline') return c.commandResult(id, true, `${self} is offline`);
  if (m === 'leaving') return refuse(`${self} is going offline already`);
  if (m === 'rejoining') {
    answerRejoin(c, false, 'node offline');
    bump(c, 'offline');
    c.log('warn', 'node-offline', 'this node stays offline (it was rejoining)');
    return c.commandResult(id, true, `${self} is offline`);
  }
  if (c.s.peerLeaving && c.present) return refuse(`${peer} is going offline: both cannot leave`);
  const handing = c.present && !c.peerOut;
  if (!handing && !force) {
    return refuse(c.peerOut ? `${peer} is ${c.s.peerMembership}: nobody would take this node's pools (--force stops them)`
      : `${peer} is not up and met: this node's pools would stop (--force stops them)`);
  }
  const own = c.s.pools.filter((p) => p.owner === self && !p.leaving);
  for (const p of own) {
    if (p.control === 'unmanaged' && (p.phase === 'ACTIVE' || p.phase === 'SUSPENDED')) return refuse(`pool ${p.name} is unmanaged and active here: manage or export it first`);
    if (p.control !== 'managed') continue;
    if (p.phase === 'ACTIVATING' || p.phase === 'DEACTIVATING') return refuse(`pool ${p.name} is ${p.phase}: try again when it is done`);
    if (!handing) continue;
    if (p.phase === 'SUSPENDED') return refuse(`pool ${p.name} is suspended (${p.reason ?? ''}): it cannot be handed over now`);
    if (!c.peerKnows(p.name)) return refuse(`${peer} has no record of pool ${p.name}: its configuration is not the same yet`);
    const why = c.inSync(p.name);
    if (why !== null) return refuse(`pool ${p.name}: ${why}`);
  }
  c.set({ membership: 'leaving', goingOffline: { commandId: id, force } });
  // the peer hands nothing to a node that is leaving
  c.sendState = true;
  c.log('warn', 'node-leaving', handing ? `this node leaves the cluster: handing its pools to ${peer}` : `this node leaves the cluster without ${peer} (forced): its pools stop`);
  for (const p of own) {
    if (p.control !== 'managed' || (p.phase !== 'ACTIVE' && p.phase !== 'SUSPENDED')) continue;
    c.deactivate(p.name, handing ? { kind: 'offline' } : { kind: 'await-operator', reason: 'this node went offline' }, null);
  }
}
