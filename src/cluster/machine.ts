// The cluster machine (docs/cluster.md, "The cluster machine"): which node
// serves each pool, when to fence, claim, suspend or hand over. Pure: no
// timers, sockets, clocks, randomness or I/O; `now` comes with every event and
// every step returns a new state and the actions the daemon carries out, in
// order ('persist' first whenever the persisted records changed).
import { Ctx } from './machine-context';
import { reconcile } from './machine-policy';
import { leaseExpiresAt, persistedOf, samePersisted, type MachineState } from './machine-state';
import type { Command, MachineAction, MachineConfig, MachineEvent, PeerMessage, PersistedState, PoolRecord, WitnessRequest } from './machine-types';

export { clusterView, initialState, leaseExpiresAt, MachineConfigError, persistedOf, poolViews } from './machine-state';
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
    else handle(c, event);
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
  }
}

// ---------------------------------------------------------------------------- start, clock, peer

function start(c: Ctx, persisted: PersistedState | null): void {
  if (c.s.started) throw new Invalid('already-started', 'a second start');
  const { self, peer } = c.cfg;
  const pools = c.s.pools.map((p) => {
    const spec = c.cfg.pools.find((x) => x.name === p.name);
    const r = persisted?.pools[p.name];
    let rec: PoolRecord = { owner: spec?.preferredNode ?? p.owner, term: 1 };
    if (r !== undefined && (r.owner === self || r.owner === peer) && Number.isSafeInteger(r.term) && r.term >= 0) rec = r;
    else if (r !== undefined) c.log('error', 'persisted-invalid', `pool ${p.name}: persisted record ${JSON.stringify(r)} is not usable; starting from ${rec.owner} at term ${rec.term}`);
    const own = rec.owner === self;
    return { ...p, ...rec, phase: own ? 'ORPHANED' as const : 'STANDBY' as const, reason: own ? `waiting up to ${c.cfg.startWaitMs} ms to meet ${peer}` : null };
  });
  for (const name of Object.keys(persisted?.pools ?? {})) {
    if (!c.cfg.pools.some((p) => p.name === name)) c.log('warn', 'persisted-unknown-pool', `pool ${name} is persisted but no longer configured: forgotten`);
  }
  c.set({
    started: true, startedAt: c.now, pools, maintenance: persisted?.maintenance ?? false,
    // unknown after a restart: one CLEAR each at the first meeting in sync
    clearAlone: c.cfg.policy === 'witness' ? 0 : null, clearFenced: c.cfg.policy === 'witness' ? 0 : null,
  });
  c.log('info', 'start', `started (${c.cfg.policy} policy${c.s.maintenance ? ', maintenance' : ''}): ${pools.map((p) => `${p.name} owned by ${p.owner} at term ${p.term}`).join(', ')}`);
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
  const { self, peer } = c.cfg;
  if (m.maintenance !== c.s.peerMaintenance) c.log('info', 'peer-maintenance', `${peer} ${m.maintenance ? 'is in' : 'left'} maintenance`);
  const up = c.s.peer.up;
  c.set({ peerMaintenance: m.maintenance, peer: { ...c.s.peer, stateSinceUp: up, records: m.pools, active: m.active ?? [], met: c.s.peer.met || up } });
  for (const name of Object.keys(m.pools)) {
    if (c.pool(name) === undefined) c.log('warn', 'peer-unknown-pool', `${peer} has a record for pool ${name}, which is not configured here`);
  }
  for (const p of c.s.pools) {
    const r = m.pools[p.name];
    if (r === undefined) { c.log('warn', 'peer-missing-pool', `${peer} has no record for pool ${p.name}`); continue; }
    if (r.owner !== self && r.owner !== peer) { c.log('error', 'peer-record-invalid', `${peer} says pool ${p.name} is owned by ${JSON.stringify(r.owner)}`); continue; }
    if (r.term > p.term && r.owner === peer && p.owner === self && p.phase === 'ACTIVE' && !c.mirroring(p.name)) {
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
    } else if (r.term === p.term && r.owner === self && p.owner === self && p.phase === 'SUSPENDED') {
      confirmed(c, p.name);
    }
  }
}

/** Pools this node serves now, for the peer's view of an owner conflict. */
/** This node's 'state' message: its persisted records and the pools it serves now (an owner conflict shows in those). */
export function stateMessage(s: MachineState): PeerMessage {
  const { pools, maintenance } = persistedOf(s);
  return { kind: 'state', pools, maintenance, active: s.pools.filter((p) => p.phase === 'ACTIVE' || p.phase === 'SUSPENDED').map((p) => p.name) };
}

function adopt(c: Ctx, name: string, r: PoolRecord, why: string): void {
  const p = c.p(name);
  c.log('warn', 'adopt', `pool ${name}: ${p.owner} at term ${p.term} → ${r.owner} at term ${r.term} (${why})`);
  c.setPool(name, { owner: r.owner, term: r.term, awaitOperator: false });
  if (r.owner === c.cfg.self) return; // the policy activates it once the peer is present
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
  if (m.term <= p.term) throw new Invalid('handover-stale', `handover of pool ${m.pool} at term ${m.term}, not above ours (${p.term})`);
  c.log('info', 'handover-received', `pool ${m.pool}: ${c.cfg.peer} hands it over at term ${m.term}`);
  c.setPool(m.pool, { owner: c.cfg.self, term: m.term, awaitOperator: false });
  if (p.phase !== 'ACTIVATING' && p.phase !== 'DEACTIVATING' && p.phase !== 'ACTIVE' && p.phase !== 'SUSPENDED') c.activateChecked(m.pool);
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
    c.log('error', 'activate-failed', `pool ${name}: activation failed: ${error ?? 'unknown error'}; an operator's promote retries it`);
  }
  if (p.deactivateWhenActivated) c.deactivate(name, { kind: 'standby' }, null);
}

/** Only a pool this node still owns and that is still INACTIVE: a late timer after anything else changed is ignored. */
function retryActivate(c: Ctx, name: string): void {
  const p = c.pool(name);
  if (p === undefined) throw new Invalid('unknown-pool', `retry-activate: unknown pool ${JSON.stringify(name)}`);
  if (p.owner !== c.cfg.self || p.phase !== 'INACTIVE') return;
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
    case 'standby':
      c.setPhase(name, p.owner === c.cfg.self ? 'ORPHANED' : 'STANDBY', p.owner === c.cfg.self ? 'deactivated' : null);
      if (cmd !== null) c.commandResult(cmd, true, `pool ${name} deactivated`);
      return;
    case 'await-operator':
      c.setPool(name, { awaitOperator: true });
      c.setPhase(name, 'ORPHANED', d.reason);
      if (cmd !== null) c.commandResult(cmd, true, `pool ${name} is inactive here: ${d.reason}`);
      return;
    case 'swap': {
      // a write the peer missed while the pool was deactivating would be lost to a handover
      const why = !c.present ? `${c.cfg.peer} went away during the swap` : c.inSync(name);
      if (why !== null) {
        c.log('warn', 'swap-aborted', `pool ${name}: ${why}: activating here again`);
        if (cmd !== null) c.commandResult(cmd, false, `${why}; pool ${name} stays here`);
        c.activate(name, null);
        return;
      }
      c.setPool(name, { owner: c.cfg.peer, term: p.term + 1 });
      c.setPhase(name, 'STANDBY', null, 'handover');
      c.emit({ type: 'send-peer', message: { kind: 'handover', pool: name, term: p.term + 1 } });
      if (cmd !== null) c.commandResult(cmd, true, `pool ${name} handed over to ${c.cfg.peer} at term ${p.term + 1}`);
    }
  }
}

function fenceDone(c: Ctx, ok: boolean, detail: string, seq: number | undefined): void {
  const f = c.s.fence;
  if (f === null || (seq !== undefined && seq !== f.seq)) throw new Invalid('fence-stale', `a fence result (${ok ? 'ok' : 'failed'}: ${detail}) for no fence in flight`);
  c.set({ fence: null });
  if (ok) {
    c.set({ peerFenced: true, fenceFailure: null, fenceRetryAt: null });
    c.log('warn', 'fence-done', `${c.cfg.peer} is fenced: ${detail}`);
    c.answerHeld((h) => h.waitFor === 'fence', true, `${c.cfg.peer} is fenced`);
    for (const p of c.s.pools) if (p.suspended?.cause === 'fence') c.resume(p.name, `${c.cfg.peer} is fenced`);
    return;
  }
  c.set({ fenceFailure: detail, fenceRetryAt: c.now + c.cfg.fenceRetryMs });
  c.log('error', 'fence-failed', `fencing ${c.cfg.peer} failed: ${detail}; retrying in ${c.cfg.fenceRetryMs} ms`);
  const denied = c.answerHeld((h) => h.waitFor === 'fence', false, `fence failed: ${detail}`);
  for (const name of new Set(denied.map((h) => h.pool))) if (c.p(name).phase === 'ACTIVE') c.suspend(name, 'fence', `fence failed: ${detail}`);
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
        for (const name of new Set(denied.map((h) => h.pool))) if (c.p(name).phase === 'ACTIVE') c.suspend(name, 'alone', `the witness refused ALONE: ${reason}`);
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
      c.decide(volume, id, false, 'policy none');
      c.deactivate(p.name, { kind: 'await-operator', reason: `${c.cfg.peer} did not take a write; policy none: an operator must promote` }, null);
      return;
    case 'fence':
      if (c.s.peerFenced) return c.decide(volume, id, true, `${c.cfg.peer} is fenced`);
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
  const p = c.pool(cmd.pool);
  if (p === undefined) throw new Invalid('unknown-pool', `${cmd.kind}: no pool ${JSON.stringify(cmd.pool)}`);
  const refuse = (why: string): void => { c.log('warn', `${cmd.kind}-refused`, `${cmd.kind} ${p.name}: ${why}`); c.commandResult(id, false, why); };
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
      const why = c.inSync(p.name);
      if (why !== null) return refuse(why);
      c.log('info', 'swap', `pool ${p.name}: handing over to ${c.cfg.peer}`);
      c.deactivate(p.name, { kind: 'swap' }, id);
    }
  }
}
