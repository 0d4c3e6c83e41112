// The cluster machine's state (docs/cluster.md, "The cluster machine") and the
// read-only views the daemon's status API takes from it. Pure data: the
// machine never mutates a state, it returns a new one.
import { CodedError } from '../util/coded-error';
import type {
  FencingPolicy, MachineConfig, Membership, PeerMembership, PersistedState, PoolControl, PoolPhase, PoolRecord, PoolSpec, PoolView, VolumeFacts, WitnessRequest,
} from './machine-types';

export class MachineConfigError extends CodedError<'ERR_MACHINE_CONFIG'> {
  override readonly name = 'MachineConfigError';
}

/** Why writes to a pool owned here fail while it stays activated. */
export type SuspendCause = 'lease' | 'alone' | 'fence';

/** What a deactivation under way is for: where the pool goes when the daemon reports 'deactivated'. */
export type Deactivation =
  | { readonly kind: 'standby' }
  | { readonly kind: 'await-operator'; readonly reason: string }
  | { readonly kind: 'swap' }
  /** an INACTIVE pool handed to the peer by the operator's reattach: on abort it is INACTIVE again */
  | { readonly kind: 'reattach' }
  /** control 'exported': EXPORTED once released */
  | { readonly kind: 'export' }
  /** the pool left the configuration: forgotten once released */
  | { readonly kind: 'remove' }
  /** `node offline`: handed to the peer as with swap; an abort fails the offline command */
  | { readonly kind: 'offline' };

export interface PoolState {
  readonly name: string;
  readonly owner: string;
  readonly term: number;
  readonly phase: PoolPhase;
  readonly reason: string | null;
  /** owned here, not active, and only an operator's promote may change that */
  readonly awaitOperator: boolean;
  readonly suspended: { readonly cause: SuspendCause; readonly at: number } | null;
  readonly deactivation: Deactivation | null;
  /** the peer's higher term arrived while the daemon was activating: deactivate when it is done */
  readonly deactivateWhenActivated: boolean;
  /** the command answered when the activation or deactivation under way completes */
  readonly commandId: number | null;
  /**
   * both nodes accepted writes while apart (an operator promoted the other side, or `ignore`): this
   * side keeps serving although the peer holds the higher term, until an operator demotes one side
   */
  readonly conflict: boolean;
  /** as the configuration says (PoolSpec.volumes; for a pool leaving it, as it said) */
  readonly volumes: readonly string[];
  /** as the configuration says (PoolSpec.control, absent = managed) */
  readonly control: PoolControl;
  /** the pool left the configuration but is still being released here (ACTIVATING or DEACTIVATING); forgotten once released */
  readonly leaving: boolean;
  /**
   * The configuration added the pool, or gave it back to the cluster (import, manage): with the
   * peer present, it is activated here only on a state from the peer that arrived after that
   * (PeerState.states above this count), as at a meeting: heartbeats may go on after the sync
   * link broke, and the peer may have taken the pool over meanwhile. Null: no such wait.
   */
  readonly confirmAfter: number | null;
}

export interface PeerState {
  /** heartbeats arrive */
  readonly up: boolean;
  readonly incarnation: number | null;
  readonly lastHeardAt: number | null;
  /** its 'state' message arrived since it came up: the two machines have compared records */
  readonly stateSinceUp: boolean;
  /** the records of its newest 'state' message */
  readonly records: Readonly<Record<string, PoolRecord>> | null;
  /** the pools its newest 'state' message says it serves */
  readonly active: readonly string[];
  /** it was up with its state arrived at least once since this machine started: the start wait is over */
  readonly met: boolean;
  /** how many 'state' messages arrived since this machine started */
  readonly states: number;
}

/** A fence or witness request the daemon is carrying out. */
export interface InFlight {
  readonly seq: number;
  readonly sentAt: number;
}

/** An alone-request waiting for a fence or for the witness's answer to ALONE. */
export interface HeldAlone {
  readonly volume: string;
  readonly id: number;
  readonly pool: string;
  readonly waitFor: 'fence' | 'alone';
}

export interface MachineState {
  readonly started: boolean;
  readonly startedAt: number;
  /** this node's maintenance switch (persisted) */
  readonly maintenance: boolean;
  /** the peer's, from its latest 'state' message */
  readonly peerMaintenance: boolean;
  readonly peer: PeerState;
  readonly links: { readonly up: number; readonly total: number } | null;
  /** in configuration order */
  readonly pools: readonly PoolState[];
  readonly volumes: Readonly<Record<string, VolumeFacts>>;
  /** when each volume's facts arrived, and when it last asked to go on alone: facts older than that are stale */
  readonly factsAt: Readonly<Record<string, number>>;
  readonly aloneAskedAt: Readonly<Record<string, number>>;
  /** local send times of the newest message the peer / the witness proved it heard (null: none) */
  readonly acks: { readonly peer: number | null; readonly witness: number | null; readonly grant: number | null };
  /** when this node last started activating a pool: the lease's start while no ack exists at all */
  readonly activatedAt: number | null;
  readonly nextSeq: number;
  readonly fence: InFlight | null;
  readonly fenceRetryAt: number | null;
  readonly fenceFailure: string | null;
  /** a fence succeeded since the peer was last up: it cannot be writing */
  readonly peerFenced: boolean;
  readonly witness: Readonly<Partial<Record<WitnessRequest, InFlight>>>;
  /** CLAIM granted: the earliest moment a takeover may start (the peer's lease plus the margin) */
  readonly claimReadyAt: number | null;
  readonly claimRetryAt: number | null;
  readonly claimRefusal: string | null;
  readonly clearRetryAt: number | null;
  readonly heldAlone: readonly HeldAlone[];
  /** the witness granted ALONE since the copies were last in sync */
  readonly aloneGranted: boolean;
  /**
   * The seq of the newest granted request that may have set a flag at the witness which a CLEAR
   * must remove (this node's `alone`; the peer's `fenced`), or null when it is known clear. A
   * restarted machine cannot know, so it starts at 0: one CLEAR at the first meeting in sync.
   */
  readonly clearAlone: number | null;
  readonly clearFenced: number | null;
  readonly startWaitOver: boolean;
  /** when our state last went to the peer: it goes again every leaseMs while the peer is up */
  readonly stateSentAt: number | null;
  /** the daemon's gateway check: while isolated, nothing is taken over, fenced, claimed or activated without the peer */
  readonly isolation: { readonly isolated: boolean; readonly detail: string; readonly since: number | null };
  /** persisted (PersistedState.aloneAfterFence): this node fenced the peer and has served alone since they last met */
  readonly aloneAfterFence: boolean;
  /** when it was set (or the start, when it was loaded): only in-sync facts reported after that clear it */
  readonly aloneAfterFenceAt: number | null;
  /** this node's place in the cluster ('offline' and 'rejoining' persisted) */
  readonly membership: Membership;
  /** `node offline` in progress: the command answered once every pool owned here is with the peer */
  readonly goingOffline: { readonly commandId: number; readonly force: boolean } | null;
  /** `node online` waiting for the peer's state to take note */
  readonly rejoinCommand: number | null;
  /** persisted: counts this node's membership changes */
  readonly membershipEpoch: number;
  /** how this node holds the peer (persisted) */
  readonly peerMembership: PeerMembership;
  /** persisted: the peer's membershipEpoch as last taken from its state */
  readonly peerEpoch: number;
  /** the peer's newest state says it is handing its pools over to go offline */
  readonly peerLeaving: boolean;
}

const CONTROLS: readonly PoolControl[] = ['managed', 'unmanaged', 'exported'];

export const controlOf = (spec: PoolSpec): PoolControl => spec.control ?? 'managed';

const positive = (v: number): boolean => Number.isFinite(v) && v > 0;
const nonNegative = (v: number): boolean => Number.isFinite(v) && v >= 0;

/** Throws MachineConfigError for a configuration the machine cannot run (initialState and 'reconfigure' check it). */
export function checkMachineConfig(c: MachineConfig): void {
  const bad = (why: string): never => { throw new MachineConfigError('ERR_MACHINE_CONFIG', why); };
  if (c.self === '' || c.peer === '' || c.self === c.peer) bad(`self and peer must be two different names, not ${JSON.stringify(c.self)} and ${JSON.stringify(c.peer)}`);
  for (const k of ['leaseMs', 'fenceRetryMs', 'claimRetryMs', 'witnessTimeoutMs'] as const) if (!positive(c[k])) bad(`${k} must be above 0, not ${c[k]}`);
  for (const k of ['takeoverMarginMs', 'startWaitMs'] as const) if (!nonNegative(c[k])) bad(`${k} must be 0 or more, not ${c[k]}`);
  const pools = new Set<string>();
  const volumes = new Set<string>();
  for (const p of c.pools) {
    if (p.name === '' || pools.has(p.name)) bad(`pool names must be unique and not empty: ${JSON.stringify(p.name)}`);
    pools.add(p.name);
    if (p.preferredNode !== c.self && p.preferredNode !== c.peer) bad(`pool ${p.name}: preferredNode ${JSON.stringify(p.preferredNode)} is neither ${c.self} nor ${c.peer}`);
    if (p.volumes.length === 0) bad(`pool ${p.name} has no volumes`);
    if (p.control !== undefined && !CONTROLS.includes(p.control)) bad(`pool ${p.name}: control ${JSON.stringify(p.control)} is not one of ${CONTROLS.join(', ')}`);
    for (const v of p.volumes) {
      if (volumes.has(v)) bad(`volume ${JSON.stringify(v)} is listed twice (a volume belongs to one pool)`);
      volumes.add(v);
    }
  }
}

/** The state before the 'start' event; throws MachineConfigError for a configuration the machine cannot run. */
export function initialState(config: MachineConfig): MachineState {
  checkMachineConfig(config);
  return {
    started: false,
    startedAt: 0,
    maintenance: false,
    peerMaintenance: false,
    peer: { up: false, incarnation: null, lastHeardAt: null, stateSinceUp: false, records: null, active: [], met: false, states: 0 },
    links: null,
    pools: config.pools.map((p) => ({ ...newPoolState(p, p.preferredNode, 0), phase: 'ORPHANED', reason: 'the cluster machine has not started' })),
    volumes: {},
    factsAt: {},
    aloneAskedAt: {},
    acks: { peer: null, witness: null, grant: null },
    activatedAt: null,
    nextSeq: 1,
    fence: null,
    fenceRetryAt: null,
    fenceFailure: null,
    peerFenced: false,
    witness: {},
    claimReadyAt: null,
    claimRetryAt: null,
    claimRefusal: null,
    clearRetryAt: null,
    heldAlone: [],
    aloneGranted: false,
    clearAlone: null,
    clearFenced: null,
    startWaitOver: false,
    stateSentAt: null,
    isolation: { isolated: false, detail: '', since: null },
    aloneAfterFence: false,
    aloneAfterFenceAt: null,
    membership: 'member',
    goingOffline: null,
    rejoinCommand: null,
    membershipEpoch: 0,
    peerMembership: 'member',
    peerEpoch: 0,
    peerLeaving: false,
  };
}

/** A pool's state before anything happened to it: the caller sets the phase it starts in. */
export function newPoolState(spec: PoolSpec, owner: string, term: number): PoolState {
  return {
    name: spec.name, owner, term, phase: 'STANDBY', reason: null,
    awaitOperator: false, suspended: null, deactivation: null, deactivateWhenActivated: false, commandId: null, conflict: false,
    volumes: spec.volumes, control: controlOf(spec), leaving: false, confirmAfter: null,
  };
}

/** What the daemon keeps on disk: the 'persist' action carries the same. */
export function persistedOf(state: MachineState): PersistedState {
  const pools: Record<string, { owner: string; term: number }> = {};
  for (const p of state.pools) pools[p.name] = { owner: p.owner, term: p.term };
  // written only when set: state files without them stay as they were
  const offline = state.membership === 'offline' || state.membership === 'rejoining' ? state.membership : undefined;
  const peer = state.peerMembership === 'member' ? undefined : state.peerMembership;
  return {
    pools, maintenance: state.maintenance,
    ...(state.aloneAfterFence ? { aloneAfterFence: true } : {}),
    ...(offline === undefined ? {} : { offline }),
    ...(state.membershipEpoch === 0 ? {} : { membershipEpoch: state.membershipEpoch }),
    ...(peer === undefined ? {} : { peer }),
    ...(state.peerEpoch === 0 ? {} : { peerEpoch: state.peerEpoch }),
  };
}

export function samePersisted(a: PersistedState, b: PersistedState): boolean {
  if (a.maintenance !== b.maintenance || (a.aloneAfterFence ?? false) !== (b.aloneAfterFence ?? false)) return false;
  if (a.offline !== b.offline || a.peer !== b.peer || (a.membershipEpoch ?? 0) !== (b.membershipEpoch ?? 0) || (a.peerEpoch ?? 0) !== (b.peerEpoch ?? 0)) return false;
  const ka = Object.keys(a.pools);
  if (ka.length !== Object.keys(b.pools).length) return false;
  return ka.every((k) => {
    const x = a.pools[k];
    const y = b.pools[k];
    return x !== undefined && y !== undefined && x.owner === y.owner && x.term === y.term;
  });
}

export function poolViews(state: MachineState): PoolView[] {
  return state.pools.map((p) => ({ name: p.name, owner: p.owner, term: p.term, phase: p.phase, reason: p.reason, control: p.control }));
}

/**
 * Under the witness policy, when this node's lease runs out: the newest send time the peer
 * (echo) or the witness (RENEW, ALONE, CLAIM granted) proved it heard, plus leaseMs; with no
 * proof at all, the last activation's start plus leaseMs. Null for other policies or before
 * anything was activated. The write path may check it too, between ticks.
 */
export function leaseExpiresAt(config: MachineConfig, state: MachineState): number | null {
  if (config.policy !== 'witness') return null;
  const proofs = [state.acks.peer, state.acks.witness, state.acks.grant].filter((t): t is number => t !== null);
  const base = proofs.length > 0 ? Math.max(...proofs) : state.activatedAt;
  return base === null ? null : base + config.leaseMs;
}

export interface ClusterView {
  readonly started: boolean;
  readonly policy: FencingPolicy;
  readonly membership: Membership;
  readonly peer: {
    readonly name: string;
    readonly membership: PeerMembership;
    readonly up: boolean;
    /** up, and its state arrived since it came up: ownership compared */
    readonly met: boolean;
    readonly lastHeardAt: number | null;
    readonly fenced: boolean;
  };
  /** the gateway check (isolation event); since: when it last changed to isolated */
  readonly isolation: { readonly isolated: boolean; readonly detail: string; readonly since: number | null };
  /** policy fence: this node fenced the peer and has served alone since they last met (persisted) */
  readonly aloneAfterFence: boolean;
  /** null until the heartbeat layer reported links; warning when some but not all are down */
  readonly links: { readonly up: number; readonly total: number; readonly warning: string | null } | null;
  readonly maintenance: { readonly self: boolean; readonly peer: boolean; readonly effective: boolean };
  readonly fence: { readonly inFlight: boolean; readonly retryAt: number | null; readonly lastFailure: string | null };
  readonly claim: {
    readonly inFlight: boolean; readonly granted: boolean; readonly takeoverAt: number | null;
    readonly retryAt: number | null; readonly lastRefusal: string | null;
  };
  readonly alone: { readonly granted: boolean; readonly inFlight: boolean; readonly waiting: number };
  readonly leaseExpiresAt: number | null;
  readonly pools: readonly PoolView[];
}

export function clusterView(config: MachineConfig, state: MachineState): ClusterView {
  const l = state.links;
  return {
    started: state.started,
    policy: config.policy,
    membership: state.membership,
    peer: { name: config.peer, membership: state.peerMembership, up: state.peer.up, met: state.peer.up && state.peer.stateSinceUp, lastHeardAt: state.peer.lastHeardAt, fenced: state.peerFenced },
    isolation: state.isolation,
    aloneAfterFence: state.aloneAfterFence,
    links: l === null ? null : {
      up: l.up, total: l.total,
      warning: l.up > 0 && l.up < l.total ? `${l.total - l.up} of ${l.total} heartbeat links down` : null,
    },
    maintenance: { self: state.maintenance, peer: state.peerMaintenance, effective: state.maintenance || state.peerMaintenance },
    fence: { inFlight: state.fence !== null, retryAt: state.fenceRetryAt, lastFailure: state.fenceFailure },
    claim: {
      inFlight: state.witness.claim !== undefined, granted: state.claimReadyAt !== null, takeoverAt: state.claimReadyAt,
      retryAt: state.claimRetryAt, lastRefusal: state.claimRefusal,
    },
    alone: { granted: state.aloneGranted, inFlight: state.witness.alone !== undefined, waiting: state.heldAlone.length },
    leaseExpiresAt: leaseExpiresAt(config, state),
    pools: poolViews(state),
  };
}
