// The cluster machine (docs/cluster.md, "The cluster machine"): which node
// serves each pool, when to fence, claim, suspend or hand over. Pure: no
// timers, sockets, clocks, randomness or I/O; `now` comes with every event and
// every step returns a new state and the actions the daemon carries out, in
// order ('persist' first whenever the persisted records changed).
import { Ctx } from './machine-context';
import { abortLeaving, isMembershipCommand, membershipCommand, membershipFields, startMembership, takePeerMembership } from './machine-membership';
import { clearAloneAfterFence, EXPORTED_REASON, reconcile } from './machine-policy';
import {
  checkMachineConfig, controlOf, leaseExpiresAt, MachineConfigError, newPoolState, persistedOf, samePersisted, type MachineState, type PoolState,
} from './machine-state';
import type {
  Command, MachineAction, MachineConfig, MachineEvent, PeerMessage, PersistedState, PoolRecord, PoolSpec, WitnessRequest,
} from './machine-types';

export { checkMachineConfig, clusterView, initialState, leaseExpiresAt, MachineConfigError, persistedOf, poolViews } from './machine-state';
export type { ClusterView, MachineState, PoolState } from './machine-state';

export interface StepResult {
  readonly state: MachineState;
  readonly actions: MachineAction[];
}

/** Thrown inside a handler for an event that must change nothing: the step returns the old state and the log. */
class Invalid {
  constructor(readonly event: string, readonly message: string) {}
}

export function step(config: MachineConfig, state: MachineState, event: MachineEvent): StepResult {
  const c = new Ctx(config, state, event.now);
  try {
    if (event.type === 'start') start(c, event.persisted);
    else if (!state.started) throw new Invalid('not-started', `${event.type} before start`);
    else {
      // the configuration may come with any event: whatever changed is taken before the event itself
      // ('reconfigure' refuses one the machine cannot run; with another event it is left for later)
      if (event.type === 'reconfigure' || (configChanged(config, state) && configProblem(c) === null)) reconfigure(c);
      handle(c, event);
    }
  } catch (e) {
    if (!(e instanceof Invalid)) throw e;
    // the caller is still owed an answer; nothing else changes
    const actions: MachineAction[] = [{ type: 'log', level: 'warn', event: e.event, message: `ignored: ${e.message}` }];
    if (event.type === 'command') actions.push({ type: 'command-result', id: event.id, ok: false, message: e.message });
    if (event.type === 'alone-request') actions.push({ type: 'alone-decision', volume: event.volume, id: event.id, allow: false });
    return { state, actions };
  }
  reconcile(c);
  const before: PersistedState | null = event.type === 'start' ? event.persisted : persistedOf(state);
  const after = persistedOf(c.s);
  const changed = before === null || !samePersisted(before, after);
  const actions: MachineAction[] = changed ? [{ type: 'persist', state: after }, ...c.out] : c.out;
  // the peer learns only what is on disk here; at start nobody is listening yet
  if (event.type !== 'start' && (changed || c.sendState)) {
    actions.push({ type: 'send-peer', message: stateMessage(c.s) });
    c.set({ stateSentAt: c.now });
  }
  return { state: c.s, actions };
}

function handle(c: Ctx, e: Exclude<MachineEvent, { type: 'start' }>): void {
  switch (e.type) {
    case 'tick': return tick(c, e.peerAckSentAt, e.witnessAckSentAt);
    case 'peer-up': return peerUp(c, e.incarnation);
    case 'peer-down': return peerDown(c, e.lastHeardAt);
    case 'links': return links(c, e.up, e.total);
    case 'peer-message': return e.message.kind === 'state' ? peerState(c, e.message) : handover(c, e.message);
    case 'volume': {
      if (c.poolOfVolume(e.name) === undefined) throw new Invalid('unknown-volume', `facts about an unknown volume ${JSON.stringify(e.name)}`);
      c.set({ volumes: { ...c.s.volumes, [e.name]: e.facts }, factsAt: { ...c.s.factsAt, [e.name]: e.now } });
      return;
    }
    case 'activated': return activated(c, e.pool, e.ok, e.error);
    case 'retry-activate': return retryActivate(c, e.pool);
    case 'deactivated': return deactivated(c, e.pool);
    case 'fence-done': return fenceDone(c, e.ok, e.detail, e.seq);
    case 'witness-reply': return witnessReply(c, e.request, e.granted, e.reason, e.seq);
    case 'alone-request': return aloneRequest(c, e.volume, e.id);
    case 'command': return command(c, e.id, e.command);
    case 'reconfigure': return; // taken before the event (see step)
    case 'isolation': return isolation(c, e.isolated, e.detail);
  }
}

// ---------------------------------------------------------------------------- start, clock, peer

/** A pool as it starts (at the machine's start, or when the configuration adds it), in the phase its control and owner give. */
function startingPool(c: Ctx, spec: PoolSpec, rec: PoolRecord): PoolState {
  const p = newPoolState(spec, rec.owner, rec.term);
  const own = rec.owner === c.cfg.self;
  switch (p.control) {
    case 'exported': return { ...p, phase: 'EXPORTED', reason: EXPORTED_REASON };
    case 'unmanaged': return { ...p, phase: own ? 'ORPHANED' : 'STANDBY', reason: own ? 'unmanaged: the cluster leaves it as it is' : null };
    case 'managed': return { ...p, phase: own ? 'ORPHANED' : 'STANDBY', reason: own ? `waiting up to ${c.cfg.startWaitMs} ms to meet ${c.cfg.peer}` : null };
  }
}

function start(c: Ctx, persisted: PersistedState | null): void {
  if (c.s.started) throw new Invalid('already-started', 'a second start');
  const { self, peer } = c.cfg;
  // from the configuration of this step: it may have changed since initialState
  const pools = c.cfg.pools.map((spec) => {
    const r = persisted?.pools[spec.name];
    let rec: PoolRecord = { owner: spec.preferredNode, term: 1 };
    if (r !== undefined && (r.owner === self || r.owner === peer) && Number.isSafeInteger(r.term) && r.term >= 0) rec = r;
    else if (r !== undefined) c.log('error', 'persisted-invalid', `pool ${spec.name}: persisted record ${JSON.stringify(r)} is not usable; starting from ${rec.owner} at term ${rec.term}`);
    return startingPool(c, spec, rec);
  });
  for (const name of Object.keys(persisted?.pools ?? {})) {
    if (!c.cfg.pools.some((p) => p.name === name)) c.log('warn', 'persisted-unknown-pool', `pool ${name} is persisted but no longer configured: forgotten`);
  }
  c.set({
    started: true, startedAt: c.now, pools, maintenance: persisted?.maintenance ?? false,
    // only policy fence reads it; a state file that says anything but true says false
    aloneAfterFence: c.cfg.policy === 'fence' && persisted?.aloneAfterFence === true,
    aloneAfterFenceAt: c.cfg.policy === 'fence' && persisted?.aloneAfterFence === true ? c.now : null,
    // unknown after a restart: one CLEAR each at the first meeting in sync
    clearAlone: c.cfg.policy === 'witness' ? 0 : null, clearFenced: c.cfg.policy === 'witness' ? 0 : null,
  });
  startMembership(c, persisted);
  const control = (p: PoolState): string => (p.control === 'managed' ? '' : `, ${p.control}`);
  const out = `${c.s.membership === 'member' ? '' : `, this node ${c.s.membership}`}${c.s.peerMembership === 'member' ? '' : `, ${peer} ${c.s.peerMembership}`}`;
  c.log('info', 'start', `started (${c.cfg.policy} policy${c.s.maintenance ? ', maintenance' : ''}${c.s.aloneAfterFence ? `, ${peer} fenced by this node since they last met` : ''}${out}): ` +
    `${pools.map((p) => `${p.name} owned by ${p.owner} at term ${p.term}${control(p)}`).join(', ') || 'no pools'}`);
}

// ---------------------------------------------------------------------------- the configuration changes

/** Whether the configuration's pools (names and order, volumes, control) differ from the state's. */
function configChanged(config: MachineConfig, state: MachineState): boolean {
  const live = state.pools.filter((p) => !p.leaving);
  if (live.length !== config.pools.length) return true;
  return config.pools.some((spec, i) => {
    const p = live[i];
    return p === undefined || p.name !== spec.name || p.control !== controlOf(spec) ||
      p.volumes.length !== spec.volumes.length || p.volumes.some((v, j) => spec.volumes[j] !== v);
  });
}

/** Why the machine cannot take this step's configuration, or null. */
function configProblem(c: Ctx): string | null {
  try {
    checkMachineConfig(c.cfg);
  } catch (e) {
    if (e instanceof MachineConfigError) return e.message;
    throw e;
  }
  const { self, peer } = c.cfg;
  const stranger = c.s.pools.find((p) => p.owner !== self && p.owner !== peer);
  if (stranger !== undefined) return `it names ${self} and ${peer}, but pool ${stranger.name} is owned by ${stranger.owner}: only pools may change without a restart`;
  return null;
}

/**
 * Takes the configuration's pools: a new pool starts as at the machine's start (owned by its
 * preferred node at term 1, or by the peer's record if that is higher); a pool that left is
 * forgotten, after its deactivation if it is active here; a change of control is logged and
 * acted on by the policy at the end of the step. The state's pools follow the configuration's
 * order, then the pools still being released.
 */
function reconfigure(c: Ctx): void {
  const problem = configProblem(c);
  if (problem !== null) throw new Invalid('reconfigure-invalid', `the new configuration: ${problem}`);
  const old = new Map(c.s.pools.map((p) => [p.name, p]));
  const configured = new Set(c.cfg.pools.map((p) => p.name));
  const added: string[] = [];
  const back: string[] = [];
  const controls: Array<{ name: string; from: PoolState['control'] }> = [];
  const pools: PoolState[] = c.cfg.pools.map((spec) => {
    const p = old.get(spec.name);
    if (p === undefined) {
      added.push(spec.name);
      return { ...startingPool(c, spec, { owner: spec.preferredNode, term: 1 }), confirmAfter: c.s.peer.states };
    }
    if (p.leaving) back.push(spec.name);
    else if (p.control !== controlOf(spec)) controls.push({ name: spec.name, from: p.control });
    const regained = p.control !== 'managed' && controlOf(spec) === 'managed';
    return { ...p, volumes: spec.volumes, control: controlOf(spec), leaving: false, confirmAfter: regained ? c.s.peer.states : p.confirmAfter };
  });
  const removed = c.s.pools.filter((p) => !configured.has(p.name) && !p.leaving).map((p) => p.name);
  c.set({ pools: [...pools, ...c.s.pools.filter((p) => !configured.has(p.name)).map((p) => ({ ...p, leaving: true }))] });
  for (const name of added) {
    const p = c.p(name);
    c.log('info', 'pool-added', `pool ${name} joined the configuration: owned by ${p.owner} at term ${p.term}${p.control === 'managed' ? '' : `, ${p.control}`}`);
    // the peer may have had it in its configuration first, and taken it over meanwhile
    const r = c.s.peer.records?.[name];
    if (r !== undefined) compareRecord(c, p, r);
  }
  for (const name of back) {
    const p = c.p(name);
    c.log('info', 'pool-added', `pool ${name} is back in the configuration while it was being released: it stays, owned by ${p.owner} at term ${p.term}`);
    if (p.deactivation?.kind === 'remove') c.setPool(name, { deactivation: { kind: 'standby' } });
  }
  for (const { name, from } of controls) {
    const p = c.p(name);
    const to = p.control;
    const event = to === 'unmanaged' ? 'pool-unmanaged' : to === 'exported' ? 'pool-exported' : from === 'exported' ? 'pool-imported' : 'pool-managed';
    const what = to === 'unmanaged' ? `the cluster leaves it ${p.phase} and moves nothing until it is managed again`
      : to === 'exported' ? 'released here and never activated until it is imported'
        : `the normal rules apply again (owned by ${p.owner} at term ${p.term}, ${p.phase} here)`;
    c.log('info', event, `pool ${name}: control ${from} → ${to}: ${what}`);
    // a fence or CLAIM for it no longer happens: it is not about to be taken over
    if (to === 'unmanaged' && p.phase === 'TAKING-OVER') c.setPhase(name, 'ORPHANED', 'unmanaged: no takeover');
  }
  for (const name of removed) removePool(c, name);
}

/** A pool left the configuration: everything waiting on it is answered; it is forgotten now, or once released. */
function removePool(c: Ctx, name: string): void {
  const p = c.p(name);
  const why = `pool ${name} left the configuration`;
  c.denyHeld((h) => h.pool === name, why);
  if (p.commandId !== null) {
    c.commandResult(p.commandId, false, why);
    c.setPool(name, { commandId: null });
  }
  switch (p.phase) {
    case 'ACTIVE': case 'SUSPENDED':
      c.log('info', 'pool-removed', `${why}: releasing it here first`);
      c.deactivate(name, { kind: 'remove' }, null);
      return;
    case 'ACTIVATING':
      c.log('info', 'pool-removed', `${why}: releasing it here once its activation completes`);
      return;
    case 'DEACTIVATING':
      c.log('info', 'pool-removed', `${why}: forgotten once its deactivation completes`);
      c.setPool(name, { deactivation: { kind: 'remove' } });
      return;
    default:
      c.log('info', 'pool-removed', `${why}: forgotten (it was ${p.phase} here)`);
      forget(c, name);
  }
}

/** Drops the pool from the state (and so from the persisted records), with the facts of volumes no other pool has. */
function forget(c: Ctx, name: string): void {
  c.denyHeld((h) => h.pool === name, `pool ${name} left the configuration`);
  const p = c.p(name);
  const pools = c.s.pools.filter((x) => x.name !== name);
  const kept = new Set(pools.flatMap((x) => x.volumes));
  const gone = new Set(p.volumes.filter((v) => !kept.has(v)));
  const without = <T>(r: Readonly<Record<string, T>>): Record<string, T> => Object.fromEntries(Object.entries(r).filter(([k]) => !gone.has(k)));
  c.set({ pools, volumes: without(c.s.volumes), factsAt: without(c.s.factsAt), aloneAskedAt: without(c.s.aloneAskedAt) });
  c.log('info', 'pool-forgotten', `pool ${name}: forgotten here (owned by ${p.owner} at term ${p.term} when it left the configuration)`);
}

function isolation(c: Ctx, isolated: boolean, detail: string): void {
  const was = c.s.isolation;
  if (was.isolated === isolated && was.detail === detail) return;
  c.set({ isolation: { isolated, detail, since: isolated ? (was.isolated ? was.since : c.now) : null } });
  if (isolated === was.isolated) return;
  if (isolated) c.log('warn', 'isolated', `this node cannot reach its gateway (${detail}): it may be the isolated side; no takeover, fence or CLAIM, and nothing activated without ${c.cfg.peer}`);
  else c.log('info', 'isolation-cleared', `this node reaches its gateway again (${detail}): the normal rules apply`);
}

function tick(c: Ctx, peerAck: number | null, witnessAck: number | null): void {
  const later = (a: number | null, b: number | null): number | null => (b === null ? a : a === null ? b : Math.max(a, b));
  c.set({ acks: { ...c.s.acks, peer: later(c.s.acks.peer, peerAck), witness: later(c.s.acks.witness, witnessAck) } });
  // a state lost with a broken sync link, or sent before the peer could count it, is not waited for forever
  if (c.s.peer.up && (c.s.stateSentAt === null || c.now >= c.s.stateSentAt + c.cfg.leaseMs)) c.sendState = true;
  for (const [request, f] of Object.entries(c.s.witness)) {
    if (f !== undefined && c.now >= f.sentAt + c.cfg.witnessTimeoutMs) witnessAnswer(c, request as WitnessRequest, false, `no reply within ${c.cfg.witnessTimeoutMs} ms`, f.sentAt, f.seq);
  }
}

function peerUp(c: Ctx, incarnation: number): void {
  const s = c.s;
  c.log('info', 'peer-up', `${c.cfg.peer} is up (incarnation ${incarnation})`);
  clearAloneAfterFence(c, `${c.cfg.peer} is up`);
  // a fence or CLAIM started while the peer was gone no longer applies: its answer will be ignored
  if (s.fence !== null) c.log('info', 'fence-cancelled', 'the peer came back before the fence finished: its result will be ignored');
  if (s.witness.claim !== undefined || s.claimReadyAt !== null) c.log('info', 'claim-cancelled', 'the peer came back: no takeover');
  c.denyHeld((h) => h.waitFor === 'fence', 'the peer came back before the fence finished');
  c.forgetWitness('claim');
  c.set({
    // only a state that arrives from now on counts: one from before may have been followed by a
    // change (a takeover) that was lost with the sync link while the peer could not be heard
    peer: { ...s.peer, up: true, incarnation, lastHeardAt: c.now, stateSinceUp: false },
    fence: null, fenceRetryAt: null, fenceFailure: null, peerFenced: false,
    claimReadyAt: null, claimRetryAt: null, claimRefusal: null,
  });
  c.sendState = true;
}

function peerDown(c: Ctx, lastHeardAt: number): void {
  c.set({ peer: { ...c.s.peer, up: false, stateSinceUp: false, lastHeardAt } });
  c.log('warn', 'peer-down', `${c.cfg.peer} is down (last heard at ${lastHeardAt})${c.maintenance ? '; maintenance: nothing moves' : ''}`);
}

function links(c: Ctx, up: number, total: number): void {
  const was = c.s.links;
  c.set({ links: { up, total } });
  if (up > 0 && up < total && (was === null || was.up !== up)) c.log('warn', 'links-degraded', `${total - up} of ${total} heartbeat links down`);
  else if (up === total && was !== null && was.up < was.total && was.up > 0) c.log('info', 'links-ok', `all ${total} heartbeat links up`);
}

// ---------------------------------------------------------------------------- the peer's messages

function peerState(c: Ctx, m: Extract<PeerMessage, { kind: 'state' }>): void {
  const { peer } = c.cfg;
  clearAloneAfterFence(c, `${peer}'s state arrived`);
  takePeerMembership(c, m);
  if (m.maintenance !== c.s.peerMaintenance) c.log('info', 'peer-maintenance', `${peer} ${m.maintenance ? 'is in' : 'left'} maintenance`);
  const up = c.s.peer.up;
  c.set({ peerMaintenance: m.maintenance, peer: { ...c.s.peer, stateSinceUp: up, records: m.pools, active: m.active ?? [], met: c.s.peer.met || up, states: c.s.peer.states + 1 } });
  if (c.s.peerFenced) {
    // it runs again (its heartbeats may not have come through yet): writes without it need a new fence
    c.set({ peerFenced: false });
    c.log('info', 'fence-over', `${peer}'s state arrived: it runs again, and is no longer taken for fenced`);
  }
  if (c.s.claimReadyAt !== null || c.s.witness.claim !== undefined) {
    // nor is a CLAIM for a peer that was gone still a reason to take over: it may activate its pools as it meets
    // this node, whatever the witness says (a grant still to come is remembered for CLEAR, as after peer-up)
    c.forgetWitness('claim');
    c.set({ claimReadyAt: null, claimRefusal: null, claimRetryAt: c.now + c.cfg.claimRetryMs });
    c.log('info', 'claim-cancelled', `${peer}'s state arrived: it runs again; no takeover on the CLAIM asked while it was gone`);
  }
  for (const name of Object.keys(m.pools)) {
    if (c.pool(name) === undefined) c.log('warn', 'peer-unknown-pool', `${peer} has a record for pool ${name}, which is not configured here`);
  }
  for (const p of c.s.pools) {
    if (p.leaving) continue;
    const r = m.pools[p.name];
    // the two configurations may differ for a while: a change reaches the nodes one after the other
    if (r === undefined) { c.log('warn', 'peer-missing-pool', `${peer} has no record for pool ${p.name}`); continue; }
    compareRecord(c, p, r);
  }
}

/** One pool's record from the peer's state against ours: the higher term wins. */
function compareRecord(c: Ctx, p: PoolState, r: PoolRecord): void {
  const { self, peer } = c.cfg;
  if (r.owner !== self && r.owner !== peer) { c.log('error', 'peer-record-invalid', `${peer} says pool ${p.name} is owned by ${JSON.stringify(r.owner)}`); return; }
  // (an unmanaged pool is not suspended when its lease runs out, so ACTIVE says nothing of writes apart: it only takes the record)
  if (r.term > p.term && r.owner === peer && p.owner === self && p.phase === 'ACTIVE' && p.control === 'managed' && !c.mirroring(p.name)) {
    // both nodes accepted writes while apart (an operator promoted the other side, or `ignore`): stepping
    // down now would not undo that. Both keep serving until an operator demotes one and resolves the split brain
    c.setPool(p.name, { owner: peer, term: r.term, awaitOperator: false, conflict: true });
    c.log('error', 'owner-conflict', `pool ${p.name}: ${peer} took it at term ${r.term} while this node was writing: split brain; demote one side and resolve`);
  } else if (r.term > p.term) {
    adopt(c, p.name, r, `${peer}'s record has the higher term`);
  } else if (r.term === p.term && r.owner !== p.owner) {
    // the mirroring layer's generations detect whatever the two wrote; here only the owner is settled
    const winner = [self, peer].sort()[0] ?? self;
    c.log('error', 'owner-conflict', `pool ${p.name}: both nodes record a different owner at term ${p.term}; ${winner} (first by name) keeps it`);
    if (winner !== p.owner) adopt(c, p.name, { owner: winner, term: r.term }, 'owner conflict');
  } else if (r.term === p.term && r.owner === self && p.owner === self && p.phase === 'SUSPENDED' && c.managed(p)) {
    confirmed(c, p.name);
  }
}

/** Pools this node serves now, for the peer's view of an owner conflict. */
/** This node's 'state' message: its persisted records and the pools it serves now (an owner conflict shows in those). */
export function stateMessage(s: MachineState): PeerMessage {
  const { pools, maintenance } = persistedOf(s);
  return { kind: 'state', pools, maintenance, active: s.pools.filter((p) => p.phase === 'ACTIVE' || p.phase === 'SUSPENDED').map((p) => p.name), ...membershipFields(s) };
}

function adopt(c: Ctx, name: string, r: PoolRecord, why: string): void {
  const p = c.p(name);
  c.log('warn', 'adopt', `pool ${name}: ${p.owner} at term ${p.term} → ${r.owner} at term ${r.term} (${why})`);
  c.setPool(name, { owner: r.owner, term: r.term, awaitOperator: false });
  if (r.owner === c.cfg.self) return; // the policy activates it once the peer is present
  // the record only: an unmanaged pool stays as it is, an exported one is released by the policy
  if (p.control !== 'managed') return;
  switch (p.phase) {
    case 'ACTIVE': case 'SUSPENDED': c.deactivate(name, { kind: 'standby' }, null); return;
    case 'ACTIVATING': c.setPool(name, { deactivateWhenActivated: true }); return;
    case 'DEACTIVATING':
      if (p.deactivation?.kind === 'swap' && p.commandId !== null) c.commandResult(p.commandId, false, `${c.cfg.peer} took pool ${name} at term ${r.term} meanwhile`);
      c.setPool(name, { deactivation: { kind: 'standby' }, commandId: null });
      return;
    default: c.setPhase(name, 'STANDBY', null);
  }
}

/** The peer says this node still owns a suspended pool at its term: nobody took over before it sent that. */
function confirmed(c: Ctx, name: string): void {
  const p = c.p(name);
  if (p.suspended?.cause === 'fence') { c.resume(name, `${c.cfg.peer} is back and confirms this node owns the pool`); return; }
  // without a lease valid now the next tick would suspend again: wait for a RENEW instead
  const until = leaseExpiresAt(c.cfg, c.s);
  if (until !== null && c.now < until) c.resume(name, `${c.cfg.peer} confirms this node owns the pool at term ${p.term}`);
  else c.log('info', 'confirmed', `pool ${name}: ${c.cfg.peer} confirms the ownership, but no lease is valid: waiting for the witness`);
}

function handover(c: Ctx, m: Extract<PeerMessage, { kind: 'handover' }>): void {
  const p = c.pool(m.pool);
  if (p === undefined) throw new Invalid('unknown-pool', `handover of an unknown pool ${JSON.stringify(m.pool)}`);
  if (p.leaving) throw new Invalid('handover-ignored', `handover of pool ${m.pool}, which left the configuration here`);
  if (m.term <= p.term) throw new Invalid('handover-stale', `handover of pool ${m.pool} at term ${m.term}, not above ours (${p.term})`);
  c.log('info', 'handover-received', `pool ${m.pool}: ${c.cfg.peer} hands it over at term ${m.term}`);
  c.setPool(m.pool, { owner: c.cfg.self, term: m.term, awaitOperator: false });
  // unmanaged or exported: the record only; it is activated here when it is managed again. A node
  // that is out takes the record too (the peer released the pool on it), and hands it back
  if (p.control === 'managed' && !c.selfOut && p.phase !== 'ACTIVATING' && p.phase !== 'DEACTIVATING' && p.phase !== 'ACTIVE' && p.phase !== 'SUSPENDED') c.activateChecked(m.pool);
}

// ---------------------------------------------------------------------------- the daemon's answers

function activated(c: Ctx, name: string, ok: boolean, error: string | undefined): void {
  const p = c.pool(name);
  if (p === undefined) throw new Invalid('unknown-pool', `activated: unknown pool ${JSON.stringify(name)}`);
  if (p.phase !== 'ACTIVATING') throw new Invalid('activated-unexpected', `activated for pool ${name}, which is ${p.phase}, not ACTIVATING`);
  if (p.commandId !== null) c.commandResult(p.commandId, ok, ok ? `pool ${name} is active here at term ${p.term}` : `pool ${name} failed to activate: ${error ?? 'unknown error'}`);
  if (ok) {
    c.setPool(name, { phase: 'ACTIVE', reason: null, commandId: null });
    c.log('info', 'activated', `pool ${name}: ACTIVE at term ${p.term}`);
  } else {
    c.setPool(name, { phase: 'INACTIVE', reason: `activation failed: ${error ?? 'unknown error'}`, awaitOperator: true, commandId: null });
    c.log('error', 'activate-failed', `pool ${name}: activation failed: ${error ?? 'unknown error'}; an operator's promote or reattach retries it`);
  }
  if (p.leaving) {
    // it left the configuration while it was being activated
    if (ok) c.deactivate(name, { kind: 'remove' }, null);
    else forget(c, name);
    return;
  }
  if (p.deactivateWhenActivated && p.control === 'unmanaged') c.setPool(name, { deactivateWhenActivated: false });
  else if (p.deactivateWhenActivated) c.deactivate(name, { kind: 'standby' }, null);
}

/** Only a pool this node still owns and that is still INACTIVE: a late timer after anything else changed is ignored. */
function retryActivate(c: Ctx, name: string): void {
  const p = c.pool(name);
  if (p === undefined) throw new Invalid('unknown-pool', `retry-activate: unknown pool ${JSON.stringify(name)}`);
  if (p.owner !== c.cfg.self || p.phase !== 'INACTIVE' || !c.managed(p)) return;
  c.log('info', 'activate-retry', `pool ${name}: trying again (${p.reason ?? 'activation failed'})`);
  c.activateChecked(name);
}

function deactivated(c: Ctx, name: string): void {
  const p = c.pool(name);
  if (p === undefined) throw new Invalid('unknown-pool', `deactivated: unknown pool ${JSON.stringify(name)}`);
  if (p.phase !== 'DEACTIVATING') throw new Invalid('deactivated-unexpected', `deactivated for pool ${name}, which is ${p.phase}, not DEACTIVATING`);
  const d = p.deactivation ?? { kind: 'standby' };
  const cmd = p.commandId;
  c.setPool(name, { deactivation: null, commandId: null, conflict: false });
  switch (d.kind) {
    case 'remove':
      forget(c, name);
      return;
    case 'export':
      if (p.control === 'exported') c.setPhase(name, 'EXPORTED', EXPORTED_REASON);
      else c.setPhase(name, p.owner === c.cfg.self ? 'ORPHANED' : 'STANDBY', p.owner === c.cfg.self ? 'deactivated' : null);
      return;
    case 'standby':
      c.setPhase(name, p.owner === c.cfg.self ? 'ORPHANED' : 'STANDBY', p.owner === c.cfg.self ? 'deactivated' : null);
      if (cmd !== null) c.commandResult(cmd, true, `pool ${name} deactivated`);
      return;
    case 'reattach': {
      const why = !c.present ? `${c.cfg.peer} went away` : c.inSync(name);
      if (why !== null) {
        const reason = `handing it to ${c.cfg.peer} was aborted: ${why}`;
        c.setPool(name, { awaitOperator: true });
        c.setPhase(name, 'INACTIVE', reason, 'reattach-aborted');
        if (cmd !== null) c.commandResult(cmd, false, `pool ${name}: ${reason}; it stays INACTIVE here`);
        return;
      }
      c.handOver(name, p.term + 1, cmd);
      return;
    }
    case 'await-operator':
      c.setPool(name, { awaitOperator: true });
      c.setPhase(name, 'ORPHANED', d.reason);
      if (cmd !== null) c.commandResult(cmd, true, `pool ${name} is inactive here: ${d.reason}`);
      return;
    case 'swap': case 'offline': {
      // a write the peer missed while the pool was deactivating would be lost to a handover
      const why = !c.present ? `${c.cfg.peer} went away during the ${d.kind === 'swap' ? 'swap' : 'handover'}` : c.peerTakesNothing ?? c.inSync(name);
      if (why !== null) {
        // it stays owned here, and is activated again by the normal rules at the end of this step: at once with the
        // peer present; without it only as the policy allows (the peer may have taken it over while this node was
        // paused mid-swap: under witness that takes a CLAIM, which the witness refuses then)
        c.log('warn', 'swap-aborted', `pool ${name}: ${why}: it stays here`);
        if (d.kind === 'offline') abortLeaving(c, `pool ${name}: ${why}`);
        if (cmd !== null) c.commandResult(cmd, false, `${why}; pool ${name} stays here`);
        c.setPhase(name, 'ORPHANED', `swap aborted: ${why}`);
        return;
      }
      c.handOver(name, p.term + 1, cmd);
    }
  }
}

function fenceDone(c: Ctx, ok: boolean, detail: string, seq: number | undefined): void {
  const f = c.s.fence;
  if (f === null || (seq !== undefined && seq !== f.seq)) throw new Invalid('fence-stale', `a fence result (${ok ? 'ok' : 'failed'}: ${detail}) for no fence in flight`);
  c.set({ fence: null });
  if (ok) {
    // from now on this node's copies are the newest, until the two meet again (persisted before anything acts on the fence);
    // not after a start without meeting the peer: then the fence was for an operator's promote, and says nothing of the other pools
    const alone = c.cfg.policy === 'fence' && c.mayActAlone;
    c.set({ peerFenced: true, fenceFailure: null, fenceRetryAt: null });
    if (alone) c.set({ aloneAfterFence: true, aloneAfterFenceAt: c.now });
    c.log('warn', 'fence-done', `${c.cfg.peer} is fenced: ${detail}`);
    c.answerHeld((h) => h.waitFor === 'fence', true, `${c.cfg.peer} is fenced`);
    for (const p of c.s.pools) if (p.suspended?.cause === 'fence' && c.managed(p)) c.resume(p.name, `${c.cfg.peer} is fenced`);
    return;
  }
  c.set({ fenceFailure: detail, fenceRetryAt: c.now + c.cfg.fenceRetryMs });
  c.log('error', 'fence-failed', `fencing ${c.cfg.peer} failed: ${detail}; retrying in ${c.cfg.fenceRetryMs} ms`);
  const denied = c.answerHeld((h) => h.waitFor === 'fence', false, `fence failed: ${detail}`);
  for (const name of new Set(denied.map((h) => h.pool))) if (c.pool(name)?.phase === 'ACTIVE' && c.managed(c.p(name))) c.suspend(name, 'fence', `fence failed: ${detail}`);
}

function witnessReply(c: Ctx, request: WitnessRequest, granted: boolean, reason: string, seq: number | undefined): void {
  const f = c.s.witness[request];
  if (f !== undefined && (seq === undefined || seq === f.seq)) { witnessAnswer(c, request, granted, reason, f.sentAt, f.seq); return; }
  const what = `a witness reply to ${request.toUpperCase()} (${granted ? 'granted' : reason}) for no such request in flight`;
  if (!granted || (request !== 'claim' && request !== 'alone')) throw new Invalid('witness-stale', what);
  // ignored, but the witness did set a flag (the peer fenced, or this node alone) that only a CLEAR removes
  c.log('warn', 'witness-stale', `ignored: ${what}; the flag it set will be cleared once in sync`);
  const since = seq ?? c.s.nextSeq - 1;
  const key = request === 'claim' ? 'clearFenced' : 'clearAlone';
  c.set({ [key]: Math.max(c.s[key] ?? since, since) });
}

function witnessAnswer(c: Ctx, request: WitnessRequest, granted: boolean, reason: string, sentAt: number, seq: number): void {
  c.forgetWitness(request);
  const grant = Math.max(c.s.acks.grant ?? -Infinity, sentAt);
  switch (request) {
    case 'claim': {
      if (!granted) {
        c.set({ claimRefusal: reason, claimRetryAt: c.now + c.cfg.claimRetryMs });
        c.log('warn', 'claim-refused', `the witness refused CLAIM: ${reason}; retrying in ${c.cfg.claimRetryMs} ms`);
        return;
      }
      // the peer's own lease may rest on our echoes of its heartbeats: it lasts until lastHeard + leaseMs
      const heard = Math.max(c.s.peer.lastHeardAt ?? c.s.startedAt, c.s.startedAt);
      const readyAt = Math.max(c.now, heard + c.cfg.leaseMs + c.cfg.takeoverMarginMs);
      c.set({ claimReadyAt: readyAt, claimRefusal: null, clearFenced: seq, acks: { ...c.s.acks, grant } });
      c.log('warn', 'claim-granted', `the witness granted CLAIM: ${c.cfg.peer} is fenced there; taking over at ${readyAt}`);
      return;
    }
    case 'alone':
      if (granted) {
        c.set({ aloneGranted: true, clearAlone: seq, acks: { ...c.s.acks, grant } });
        c.log('warn', 'alone-granted', `the witness recorded that ${c.cfg.peer}'s copies are outdated`);
        c.answerHeld((h) => h.waitFor === 'alone', true, 'the witness granted ALONE');
      } else {
        c.log('error', 'alone-refused', `the witness refused ALONE: ${reason}`);
        const denied = c.answerHeld((h) => h.waitFor === 'alone', false, `the witness refused ALONE: ${reason}`);
        for (const name of new Set(denied.map((h) => h.pool))) if (c.pool(name)?.phase === 'ACTIVE' && c.managed(c.p(name))) c.suspend(name, 'alone', `the witness refused ALONE: ${reason}`);
      }
      return;
    case 'clear-alone': case 'clear-fenced': {
      const key = request === 'clear-alone' ? 'clearAlone' : 'clearFenced';
      if (!granted) {
        c.set({ clearRetryAt: c.now + c.cfg.claimRetryMs });
        c.log('warn', `${request}-refused`, `the witness refused ${request.toUpperCase()}: ${reason}; retrying in ${c.cfg.claimRetryMs} ms`);
        return;
      }
      // a flag set by a request sent after this CLEAR is still set
      const since = c.s[key];
      if (since !== null && since < seq) c.set({ [key]: null });
      c.log('info', `${request}-granted`, `the witness cleared ${request === 'clear-alone' ? 'this node\'s alone' : `${c.cfg.peer}'s fenced`} flag`);
    }
  }
}

// ---------------------------------------------------------------------------- requests from the replicas and the operator

function aloneRequest(c: Ctx, volume: string, id: number): void {
  const p = c.poolOfVolume(volume);
  if (p === undefined) throw new Invalid('unknown-volume', `alone-request for an unknown volume ${JSON.stringify(volume)}`);
  c.set({ aloneAskedAt: { ...c.s.aloneAskedAt, [volume]: c.now } });
  // ACTIVATING counts: the takeover was decided (fenced or granted) before activation began, and a
  // pool's own steps write (fsck replaying a journal, an application's recovery) before it is ACTIVE
  if (p.owner !== c.cfg.self || (p.phase !== 'ACTIVE' && p.phase !== 'ACTIVATING')) return c.decide(volume, id, false, `pool ${p.name} is ${p.phase} here`);
  // an operator who set maintenance takes the responsibility: nothing moves
  if (c.maintenance) return c.decide(volume, id, true, 'maintenance');
  switch (c.cfg.policy) {
    case 'ignore': case 'manual': return c.decide(volume, id, true, `policy ${c.cfg.policy}`);
    case 'none':
      if (c.peerOut) return c.decide(volume, id, true, `${c.cfg.peer} is ${c.s.peerMembership}: it takes nothing`);
      c.decide(volume, id, false, 'policy none');
      // unmanaged: the write fails, and the pool stays as it is
      if (c.managed(p)) c.deactivate(p.name, { kind: 'await-operator', reason: `${c.cfg.peer} did not take a write; policy none: an operator must promote` }, null);
      return;
    case 'fence':
      if (c.peerCannotWrite) return c.decide(volume, id, true, `${c.cfg.peer} is ${c.s.peerFenced ? 'fenced' : c.s.peerMembership}`);
      c.set({ heldAlone: [...c.s.heldAlone, { volume, id, pool: p.name, waitFor: 'fence' }] });
      return;
    case 'witness':
      if (c.s.aloneGranted) return c.decide(volume, id, true, 'the witness granted ALONE since the copies were last in sync');
      c.set({ heldAlone: [...c.s.heldAlone, { volume, id, pool: p.name, waitFor: 'alone' }] });
  }
}

function command(c: Ctx, id: number, cmd: Command): void {
  if (cmd.kind === 'maintenance') {
    c.set({ maintenance: cmd.on, peerMaintenance: !cmd.on && !c.s.peer.up ? false : c.s.peerMaintenance });
    c.log('warn', 'maintenance', `maintenance ${cmd.on ? 'on: no takeover, fence, claim, failback or lease suspension' : 'off'}`);
    if (cmd.on) c.answerHeld(() => true, true, 'maintenance');
    c.commandResult(id, true, `maintenance ${cmd.on ? 'on' : 'off'}`);
    return;
  }
  if (isMembershipCommand(cmd)) {
    return membershipCommand(c, id, cmd, (why) => { c.log('warn', `${cmd.kind}-refused`, `${cmd.kind}: ${why}`); c.commandResult(id, false, why); });
  }
  const p = c.pool(cmd.pool);
  if (p === undefined || p.leaving) throw new Invalid('unknown-pool', `${cmd.kind}: no pool ${JSON.stringify(cmd.pool)}${p === undefined ? '' : ' (it left the configuration and is being released)'}`);
  const refuse = (why: string): void => { c.log('warn', `${cmd.kind}-refused`, `${cmd.kind} ${p.name}: ${why}`); c.commandResult(id, false, why); };
  if (c.selfOut && cmd.kind !== 'demote') return refuse(`this node is ${c.s.membership}: it takes no pool (tandem node online first)`);
  if (cmd.kind === 'reattach') return reattach(c, id, p, cmd.node, refuse);
  if (p.control !== 'managed') return refuse(`pool ${p.name} is ${p.control}: ${p.control === 'exported' ? 'import' : 'manage'} it first`);
  if (p.phase === 'ACTIVATING' || p.phase === 'DEACTIVATING') return refuse(`pool ${p.name} is ${p.phase}: try again when it is done`);
  const own = p.owner === c.cfg.self;
  switch (cmd.kind) {
    case 'promote': {
      if (own && p.phase === 'ACTIVE') { c.commandResult(id, true, `pool ${p.name} is already active here`); return; }
      // with heartbeats but no sync link the peer may still be writing: the operator's promote then makes a
      // split brain on purpose, which the generations report at the next meeting (DRBD allows the same)
      if (!own && c.s.peer.up && c.mirroring(p.name)) return refuse(`${c.cfg.peer} owns pool ${p.name} and is up; use swap`);
      if (!own && c.s.peer.up) c.log('warn', 'promote-disconnected', `pool ${p.name}: promoted while ${c.cfg.peer} is up but not mirroring: if it writes too, that is a split brain`);
      if (own && p.phase === 'SUSPENDED' && c.s.peer.up && !cmd.force) {
        return refuse(`pool ${p.name} is suspended (${p.reason ?? ''}); it resumes when the witness or ${c.cfg.peer} confirms this node owns it (force overrides)`);
      }
      const bad = c.notUpToDate(p.name);
      if (bad !== null && !cmd.force) return refuse(`${bad}: it may lack writes; promote with force to accept that`);
      if (bad !== null) c.log('warn', 'promote-forced', `pool ${p.name}: promoted although ${bad}`);
      c.setPool(p.name, { owner: c.cfg.self, term: p.term + 1, awaitOperator: false });
      c.log('warn', 'promote', `pool ${p.name}: promoted by the operator at term ${p.term + 1}`);
      if (p.phase === 'SUSPENDED') {
        c.resume(p.name, 'promoted by the operator');
        c.commandResult(id, true, `pool ${p.name} resumed at term ${p.term + 1}`);
      } else {
        c.activate(p.name, id);
      }
      return;
    }
    case 'demote':
      if (!own && p.conflict && (p.phase === 'ACTIVE' || p.phase === 'SUSPENDED')) {
        // both wrote (an owner conflict kept for the operator): this side steps back and the peer keeps it
        c.setPool(p.name, { conflict: false });
        c.deactivate(p.name, { kind: 'standby' }, id);
        return;
      }
      if (own && (p.phase === 'ACTIVE' || p.phase === 'SUSPENDED') && c.s.peer.up && c.s.peer.active.includes(p.name)) {
        // the peer serves it too (an owner conflict): it keeps the pool, one term up, and this side stands by
        c.setPool(p.name, { owner: c.cfg.peer, term: p.term + 1, conflict: false });
        c.log('warn', 'conflict-resolved', `pool ${p.name}: demoted here while ${c.cfg.peer} serves it too: ${c.cfg.peer} keeps it at term ${p.term + 1}`);
        c.deactivate(p.name, { kind: 'standby' }, id);
        return;
      }
      if (!own) return refuse(`pool ${p.name} is owned by ${c.cfg.peer}`);
      if (p.phase === 'ACTIVE' || p.phase === 'SUSPENDED') { c.deactivate(p.name, { kind: 'await-operator', reason: 'demoted by operator' }, id); return; }
      c.setPool(p.name, { awaitOperator: true });
      c.setPhase(p.name, 'ORPHANED', 'demoted by operator');
      c.commandResult(id, true, `pool ${p.name} was not active; it stays inactive until promoted`);
      return;
    case 'swap': {
      if (!own) return refuse(`pool ${p.name} is owned by ${c.cfg.peer}`);
      if (p.phase !== 'ACTIVE') return refuse(`pool ${p.name} is ${p.phase} here, not ACTIVE`);
      if (!c.present) return refuse(`${c.cfg.peer} is not up and met`);
      if (c.peerTakesNothing !== null) return refuse(`${c.peerTakesNothing}: it takes no pool`);
      if (!c.peerKnows(p.name)) return refuse(`${c.cfg.peer} has no record of pool ${p.name}: its configuration is not the same yet`);
      const why = c.inSync(p.name);
      if (why !== null) return refuse(why);
      c.log('info', 'swap', `pool ${p.name}: handing over to ${c.cfg.peer}`);
      c.deactivate(p.name, { kind: 'swap' }, id);
    }
  }
}

/** An INACTIVE pool (its activation failed), asked of its owner: activate it here again now, or hand it to the peer. */
function reattach(c: Ctx, id: number, p: PoolState, node: string, refuse: (why: string) => void): void {
  const { self, peer } = c.cfg;
  if (node !== self && node !== peer) return refuse(`unknown node ${JSON.stringify(node)}: the nodes are ${self} and ${peer}`);
  if (p.owner !== self) return refuse(`pool ${p.name} is owned by ${p.owner}, not ${self}: ask ${p.owner}`);
  if (p.control !== 'managed') return refuse(`pool ${p.name} is ${p.control}: ${p.control === 'exported' ? 'import' : 'manage'} it first`);
  if (p.phase !== 'INACTIVE') return refuse(`pool ${p.name} is ${p.phase} here: reattach is for INACTIVE pools; use pool move / swap`);
  if (node === self) {
    const bad = c.notUpToDate(p.name);
    if (bad !== null) return refuse(`${bad}: a copy that is not UpToDate is never promoted (promote with force accepts that)`);
    c.log('info', 'reattach', `pool ${p.name}: activating it here again at term ${p.term} (operator; it was INACTIVE: ${p.reason ?? ''})`);
    c.activate(p.name, id);
    return;
  }
  if (!c.present) return refuse(`${peer} is not up and met`);
  if (c.peerTakesNothing !== null) return refuse(`${c.peerTakesNothing}: it takes no pool`);
  if (!c.peerKnows(p.name)) return refuse(`${peer} has no record of pool ${p.name}: its configuration is not the same yet`);
  const why = c.inSync(p.name);
  if (why !== null) return refuse(why);
  c.log('info', 'reattach', `pool ${p.name}: handing it to ${peer} (operator; it was INACTIVE here: ${p.reason ?? ''})`);
  c.deactivate(p.name, { kind: 'reattach' }, id);
}
