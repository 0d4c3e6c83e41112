// What the fencing policy does with the facts the event handlers recorded
// (docs/cluster.md, "Fencing policies" and "The cluster machine"). It runs at
// the end of every step, so every decision is re-derived from the state:
// timers are deadlines compared with the event's `now`, never callbacks.
import type { Ctx } from './machine-context';
import { settleMembership, settleOut } from './machine-membership';
import { leaseExpiresAt, type PoolState } from './machine-state';

export const EXPORTED_REASON = 'exported: released, its data kept; import it (control managed) to serve it again';

export function reconcile(c: Ctx): void {
  settleMembership(c);
  startWait(c);
  metPeer(c);
  leases(c);
  fenceSuspensions(c);
  requests(c);
  for (const p of c.s.pools) settlePool(c, p.name);
  clears(c);
  failback(c);
}

function startWait(c: Ctx): void {
  const s = c.s;
  if (s.peer.met || s.startWaitOver || c.now < s.startedAt + c.cfg.startWaitMs) return;
  c.set({ startWaitOver: true });
  c.log('warn', 'peer-not-seen', s.peer.up
    ? `${c.cfg.peer} sends heartbeats but its state has not arrived within ${c.cfg.startWaitMs} ms: waiting for it (a live peer is never taken over)`
    : !c.mayActAlone
      ? `${c.cfg.peer} not met within ${c.cfg.startWaitMs} ms of the start: policy fence, but nothing shows this node's copies are the newest: ` +
        'no fence; waiting for it or an operator'
      : `${c.cfg.peer} not met within ${c.cfg.startWaitMs} ms of the start: acting on policy ${c.cfg.policy} as if it went down`);
}

/**
 * Policy fence: this node's copies are the newest only until the peer runs again. Once it comes
 * up, or its state arrives, or the copies report in sync after the fence, it may meet this node
 * (perhaps before this node hears of it) and then take over by the normal rules; a later start
 * without meeting it waits. (The peer-up and state handlers clear the flag first thing in their step.)
 */
function metPeer(c: Ctx): void {
  const since = c.s.aloneAfterFenceAt;
  if (c.s.aloneAfterFence && since !== null && c.allInSyncSince(since)) clearAloneAfterFence(c, `in sync with ${c.cfg.peer} again`);
}

export function clearAloneAfterFence(c: Ctx, why: string): void {
  if (!c.s.aloneAfterFence) return;
  c.set({ aloneAfterFence: false, aloneAfterFenceAt: null });
  c.log('info', 'alone-after-fence-cleared', `${why}: no longer known to hold the newest copies; a start without meeting ${c.cfg.peer} will wait for it`);
}

/**
 * Witness policy: an owner that neither the peer nor the witness heard for leaseMs
 * stops writing, because the peer may take over from then on (after its margin).
 *
 * Resuming needs proof that nobody took over meanwhile, obtained after the suspension:
 * a RENEW (or other request) the witness granted that was sent after it (the witness
 * refuses a fenced node), or the peer's 'state' showing this node still owns the pool at
 * its term (handled with the message). Echoed heartbeats alone are no such proof: the
 * peer echoes whoever it hears, and it may have taken the pool over while this node was
 * cut off or paused and only then heard it again; the echo would renew a lease the
 * peer no longer honours.
 */
function leases(c: Ctx): void {
  if (c.cfg.policy !== 'witness') return;
  const until = leaseExpiresAt(c.cfg, c.s);
  if (until === null) return;
  const proof = Math.max(c.s.acks.witness ?? -Infinity, c.s.acks.grant ?? -Infinity);
  for (const p of c.s.pools) {
    if (p.owner !== c.cfg.self || !c.managed(p)) continue;
    if (p.phase === 'ACTIVE' && !c.maintenance && c.now >= until) {
      c.suspend(p.name, 'lease', `lease lost: neither the peer nor the witness heard this node for leaseMs (${c.cfg.leaseMs} ms)`);
    } else if (p.phase === 'SUSPENDED' && p.suspended !== null && p.suspended.cause !== 'fence' && proof > p.suspended.at && c.now < until) {
      c.resume(p.name, 'the witness granted a request sent after the suspension: no takeover happened');
    }
  }
}

/**
 * A pool suspended because a fence failed resumes once the peer is back and its volumes
 * mirror again: writes reach the peer, and going on without it still needs a fence. (The
 * peer's state may have arrived before the fence failed, so waiting for one could be forever.)
 */
function fenceSuspensions(c: Ctx): void {
  if (!c.present) return;
  for (const p of c.s.pools) {
    if (p.suspended?.cause !== 'fence' || p.owner !== c.cfg.self || !c.managed(p)) continue;
    if (c.volumesOf(p.name).every((v) => c.s.volumes[v]?.connected === true)) c.resume(p.name, `${c.cfg.peer} is back and takes the writes again`);
  }
}

/**
 * Pools the policy would obtain without the peer: its pools, and ours not yet active. A pool
 * whose copy here is not UpToDate is left out: it could not be promoted, so fencing or
 * claiming for it would only take the cluster down.
 */
function wanted(c: Ctx): string[] {
  if (c.selfOut) return [];
  const notActive = (p: PoolState): boolean => p.phase === 'ORPHANED' || p.phase === 'TAKING-OVER' || p.phase === 'STANDBY' || p.phase === 'EXPORTED';
  return c.s.pools.filter((p) => c.managed(p) && c.heldByLeaving(p) === null && (p.owner === c.cfg.peer || (!p.awaitOperator && notActive(p))) &&
    c.notUpToDate(p.name) === null).map((p) => p.name);
}

function requests(c: Ctx): void {
  const s = c.s;
  const due = (at: number | null): boolean => at === null || c.now >= at;
  if (c.cfg.policy === 'fence' && s.fence === null) {
    // an isolated node does not fence: it may be the side that is cut off, and would take down the one that serves
    if (c.isolated) c.denyHeld((h) => h.waitFor === 'fence', c.isolationReason('not fencing'));
    const forAlone = c.s.heldAlone.some((h) => h.waitFor === 'fence');
    const forTakeover = !c.maintenance && !c.isolated && c.mayActAlone && c.absent && !c.peerCannotWrite && wanted(c).length > 0;
    const forSuspended = !c.maintenance && !c.isolated && !c.present && !c.peerCannotWrite && s.pools.some((p) => c.managed(p) && p.suspended?.cause === 'fence');
    // a write waiting for the answer does not wait for the retry timer as well
    if (forAlone) c.startFence('a write must be acknowledged without the peer');
    else if ((forTakeover || forSuspended) && due(s.fenceRetryAt)) {
      c.startFence(forTakeover ? `${c.cfg.peer} is down and owns pools this node must serve` : 'pools are suspended until the peer is fenced or returns');
    }
  }
  if (c.cfg.policy === 'witness') {
    if (!c.maintenance && !c.isolated && c.absent && wanted(c).length > 0 && s.claimReadyAt === null && s.witness.claim === undefined && due(s.claimRetryAt)) {
      c.set({ claimRetryAt: null });
      c.askWitness('claim', `${c.cfg.peer} is down and owns pools this node must serve`);
    }
    if (s.heldAlone.some((h) => h.waitFor === 'alone') && s.witness.alone === undefined) {
      c.askWitness('alone', 'a write must be acknowledged without the peer');
    }
  }
}

function settlePool(c: Ctx, name: string): void {
  const p = c.p(name);
  if (p.leaving || p.phase === 'ACTIVATING' || p.phase === 'DEACTIVATING') return;
  // unmanaged: left as it is, whatever it is
  if (p.control === 'unmanaged') return;
  if (p.control === 'exported') {
    if (p.phase === 'ACTIVE' || p.phase === 'SUSPENDED') return c.deactivate(name, { kind: 'export' }, null);
    if (p.phase === 'EXPORTED') return;
    c.setPool(name, { awaitOperator: false, conflict: false, suspended: null });
    return c.setPhase(name, 'EXPORTED', EXPORTED_REASON);
  }
  const { self, peer, policy } = c.cfg;
  if (c.selfOut) return settleOut(c, name);
  if (p.confirmAfter !== null && c.s.peer.states > p.confirmAfter) c.setPool(name, { confirmAfter: null });
  const held = p.phase === 'ACTIVE' || p.phase === 'SUSPENDED' ? null : c.heldByLeaving(p);
  if (held !== null) return c.setPhase(name, 'ORPHANED', `volume ${held.volume} is still being released by pool ${held.pool}, which left the configuration`);
  if (p.owner === peer) {
    if (p.conflict && (p.phase === 'ACTIVE' || p.phase === 'SUSPENDED')) return;
    if (p.phase === 'ACTIVE' || p.phase === 'SUSPENDED') {
      c.deactivate(name, { kind: 'standby' }, null);
      return;
    }
    if (c.present || (!c.s.peer.up && !c.absent) || (p.phase === 'STANDBY' && c.s.peer.up)) {
      c.setPhase(name, 'STANDBY', null);
      return;
    }
    if (c.s.peer.up) {
      c.setPhase(name, 'ORPHANED', `${peer} is back: waiting for its state`);
      return;
    }
    if (c.maintenance) return c.setPhase(name, 'ORPHANED', `${peer} is down; maintenance: no takeover`);
    if (c.isolated && policy !== 'none' && policy !== 'manual') return c.setPhase(name, 'ORPHANED', c.isolationReason('not taking over'));
    switch (policy) {
      case 'none': return c.setPhase(name, 'ORPHANED', `${peer} is down; policy none: no takeover`);
      case 'manual': return c.setPhase(name, 'ORPHANED', 'waiting for an operator: tandem promote');
      case 'ignore': return c.takeover(name, `${peer} is down; policy ignore`);
      case 'fence':
        if (!c.mayActAlone) return c.setPhase(name, 'ORPHANED', c.unmetReason('not taking over'));
        return c.peerCannotWrite ? c.takeover(name, `${peer} ${c.s.peerFenced ? 'was fenced' : `is ${c.s.peerMembership}`}`) : obtain(c, name, waitFence);
      case 'witness': return claimReady(c) ? c.takeover(name, 'the witness granted CLAIM and the peer\'s lease has run out') : obtain(c, name, waitClaim);
    }
  }
  if (p.owner !== self || p.phase === 'ACTIVE' || p.phase === 'SUSPENDED' || p.awaitOperator) return;
  if (c.present && c.p(name).confirmAfter !== null) return c.setPhase(name, 'ORPHANED', `waiting for ${peer}'s state since the configuration changed: it may have taken the pool over`);
  if (c.present && !c.peerKnows(name)) return c.setPhase(name, 'ORPHANED', `waiting for ${peer} to have pool ${name} in its configuration (its state has no record of it)`);
  if (c.present) return c.activateChecked(name);
  if (c.s.peer.up) return c.setPhase(name, 'ORPHANED', `${peer} sends heartbeats but its state has not arrived: waiting for it`);
  if (!c.absent) return c.setPhase(name, 'ORPHANED', `waiting up to ${c.cfg.startWaitMs} ms to meet ${peer}`);
  if (c.maintenance) return c.setPhase(name, 'ORPHANED', `${peer} is ${c.s.peer.met ? 'down' : 'not seen'}; maintenance: not activating without it`);
  if (c.isolated && (policy !== 'none' || c.peerOut)) return c.setPhase(name, 'ORPHANED', c.isolationReason(`not activating without ${peer}`));
  switch (policy) {
    case 'none':
      if (c.peerOut) return c.activateChecked(name);
      return c.setPhase(name, 'ORPHANED', `${c.s.peer.met ? `${peer} is down` : 'peer not seen'}; policy none: an operator must promote`);
    case 'ignore': case 'manual': return c.activateChecked(name);
    case 'fence':
      if (!c.mayActAlone) return c.setPhase(name, 'ORPHANED', c.unmetReason('not activating'));
      return c.peerCannotWrite ? c.activateChecked(name) : obtain(c, name, waitFence);
    case 'witness': return claimReady(c) ? c.activateChecked(name) : obtain(c, name, waitClaim);
  }
}

/** Waits for the fence or the claim, unless the copy here could not be promoted anyway. */
function obtain(c: Ctx, name: string, wait: (c: Ctx, name: string) => void): void {
  const bad = c.notUpToDate(name);
  if (bad === null) wait(c, name);
  else c.setPhase(name, 'ORPHANED', `not taking over: ${bad} (a copy that is not UpToDate is never promoted; an operator may force it)`, 'takeover-refused');
}

function claimReady(c: Ctx): boolean {
  return c.s.claimReadyAt !== null && c.now >= c.s.claimReadyAt;
}

function waitFence(c: Ctx, name: string): void {
  if (c.s.fence !== null) c.setPhase(name, 'TAKING-OVER', `fencing ${c.cfg.peer}`);
  else if (c.s.fenceFailure !== null) c.setPhase(name, 'ORPHANED', `fence failed: ${c.s.fenceFailure}; retrying every ${c.cfg.fenceRetryMs} ms`);
  else c.setPhase(name, 'TAKING-OVER', `about to fence ${c.cfg.peer}`);
}

function waitClaim(c: Ctx, name: string): void {
  const s = c.s;
  if (s.witness.claim !== undefined) c.setPhase(name, 'TAKING-OVER', 'waiting for the witness to grant CLAIM');
  else if (s.claimReadyAt !== null) c.setPhase(name, 'TAKING-OVER', `CLAIM granted; taking over at ${s.claimReadyAt}, when the peer's lease and the margin have run out`);
  else if (s.claimRefusal !== null) c.setPhase(name, 'ORPHANED', `CLAIM refused: ${s.claimRefusal}; retrying every ${c.cfg.claimRetryMs} ms`);
  else c.setPhase(name, 'TAKING-OVER', 'about to ask the witness for CLAIM');
}

/** Witness policy: once the copies are in sync again, the flags that kept the peer out go. */
function clears(c: Ctx): void {
  if (c.cfg.policy !== 'witness' || !c.allInSync()) return;
  if (c.s.aloneGranted) c.set({ aloneGranted: false });
  // a pool the peer still has and this node removed may hold writes it never took: its flag keeps it out
  if (!c.present || c.peerHasOtherPools() || !(c.s.clearRetryAt === null || c.now >= c.s.clearRetryAt)) return;
  if (c.s.clearAlone !== null && c.s.witness['clear-alone'] === undefined) c.askWitness('clear-alone', `in sync with ${c.cfg.peer} again: its copies are no longer outdated`);
  // only once the peer has adopted our records: cleared earlier, it could renew and resume a pool we took over
  if (c.s.clearFenced !== null && c.s.witness['clear-fenced'] === undefined && c.peerAgrees()) {
    c.askWitness('clear-fenced', `${c.cfg.peer} is back, in sync, and holds our records`);
  }
}

function failback(c: Ctx): void {
  if (c.maintenance || !c.present || c.selfOut || c.peerTakesNothing !== null) return;
  for (const spec of c.cfg.pools) {
    const p = c.pool(spec.name);
    if (p === undefined || !c.managed(p)) continue;
    if (!spec.autoFailback || spec.preferredNode !== c.cfg.peer || p.owner !== c.cfg.self || p.phase !== 'ACTIVE' || !c.peerKnows(p.name)) continue;
    if (c.inSync(spec.name) !== null) continue;
    c.log('info', 'failback', `pool ${spec.name}: ${c.cfg.peer} is its preferred node and is in sync again: handing it back`);
    c.deactivate(spec.name, { kind: 'swap' }, null);
  }
}
