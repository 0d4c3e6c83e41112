// The cluster machine's inputs and outputs (docs/cluster.md). The machine is
// pure: step(state, event) returns the next state and the actions the daemon
// must carry out; every event carries `now`, a monotonic clock in ms.
import type { DiskState } from '../storage/metadata';

export type FencingPolicy = 'none' | 'ignore' | 'manual' | 'fence' | 'witness';

/**
 * Who runs a pool:
 * - managed: the cluster machine (the default)
 * - unmanaged: nobody; the machine leaves the pool as it is (its services keep running) and
 *   neither activates, deactivates, suspends, takes over, fails back, fences nor claims for it
 * - exported: stopped and released on both nodes, its data kept; never activated until managed again
 */
export type PoolControl = 'managed' | 'unmanaged' | 'exported';

export interface PoolSpec {
  readonly name: string;
  readonly volumes: readonly string[];
  /** the node that owns the pool when the cluster is new; with autoFailback, where it returns */
  readonly preferredNode: string;
  readonly autoFailback: boolean;
  /** absent: managed */
  readonly control?: PoolControl;
}

export interface MachineConfig {
  readonly self: string;
  readonly peer: string;
  readonly policy: FencingPolicy;
  readonly pools: readonly PoolSpec[];
  /** = the heartbeat timeout: how long a lease lasts after the send time of the message it rests on */
  readonly leaseMs: number;
  /** added to leaseMs before a takeover under the witness policy */
  readonly takeoverMarginMs: number;
  readonly fenceRetryMs: number;
  readonly claimRetryMs: number;
  /** at start, how long to wait to meet the peer before acting on the policy alone */
  readonly startWaitMs: number;
  /** a witness request unanswered this long counts as refused */
  readonly witnessTimeoutMs: number;
}

/** What the machine persists per pool (the daemon writes it atomically before acting on it). */
export interface PoolRecord {
  readonly owner: string;
  readonly term: number;
}

export interface PersistedState {
  readonly pools: Readonly<Record<string, PoolRecord>>;
  readonly maintenance: boolean;
  /**
   * Policy fence: this node fenced its peer and has served without it since they last met, so its
   * copies are the newest. Only then may a node that restarts and does not meet its peer within
   * startWaitMs fence it and act alone. Absent (older state files): false.
   */
  readonly aloneAfterFence?: boolean;
  /** this node left the cluster (`tandem node offline`), or asked to come back and awaits the peer's word. Absent: a member */
  readonly offline?: 'offline' | 'rejoining';
  /** how many times this node's membership changed: the peer echoes it, so an old answer is told from a new one. Absent: 0 */
  readonly membershipEpoch?: number;
  /** the peer left the cluster and said so, or an operator removed it here. Absent: a member */
  readonly peer?: 'offline' | 'removed';
  /** the peer's membershipEpoch this node last took from its state. Absent: 0 */
  readonly peerEpoch?: number;
}

/**
 * Where a node stands in the cluster (docs/cluster.md, "Taking a node offline"):
 * - member: serves and takes over pools by the rules
 * - leaving: handing its pools to the peer (`tandem node offline`), then offline
 * - offline: owns and takes nothing; its copies mirror as secondaries; the peer needs no fence to go on without it
 * - rejoining: asked to be a member again (`tandem node online`); still offline until the peer's state says it took note
 */
export type Membership = 'member' | 'leaving' | 'offline' | 'rejoining';

/** How this node holds its peer: offline (it said it left) or removed (by an operator here). */
export type PeerMembership = 'member' | 'offline' | 'removed';

/**
 * A pool as this node sees it:
 * - ACTIVE: owned here, volumes PRIMARY, exports up, writes accepted
 * - ACTIVATING / DEACTIVATING: the daemon is carrying out activate / deactivate
 * - SUSPENDED: owned here, but writes fail (lease lost, fence failed, policy says so)
 * - STANDBY: owned by the peer; volumes SECONDARY here
 * - TAKING-OVER: the peer is down; fencing or claiming before activating here
 * - ORPHANED: the peer (owner) is down and the policy forbids a takeover: waiting for the peer or an operator.
 *   Also a pool owned here that nothing will activate by itself: still waiting to meet the peer at start,
 *   demoted by the operator, or dropped by policy `none` (`reason` says which)
 * - INACTIVE: owned here but activation failed; `reason` says why
 * - EXPORTED: control 'exported': released here (volumes SECONDARY), never activated until imported
 */
export type PoolPhase = 'ACTIVE' | 'ACTIVATING' | 'DEACTIVATING' | 'SUSPENDED' | 'STANDBY' | 'TAKING-OVER' | 'ORPHANED' | 'INACTIVE' | 'EXPORTED';

/** Per volume facts the replicas report (on change). */
export interface VolumeFacts {
  readonly diskState: DiskState;
  /** mirroring with the peer right now */
  readonly connected: boolean;
  /** connected, no resync running or pending, both copies UpToDate */
  readonly inSync: boolean;
}

/** Messages between the two machines, carried over the sync link (CLUSTER message). */
export type PeerMessage =
  /** sent on every (re)connect and after every change of owner, term or maintenance */
  | {
    readonly kind: 'state'; readonly pools: Readonly<Record<string, PoolRecord>>; readonly maintenance: boolean;
    /** pools the sender serves now (ACTIVE or SUSPENDED there): shows both sides an owner conflict */
    readonly active?: readonly string[];
    /** the sender is offline (persisted): it owns and takes nothing (absent: false) */
    readonly offline?: boolean;
    /** the sender is handing its pools over to go offline: nothing is handed to it (absent: false) */
    readonly leaving?: boolean;
    /** the sender's membershipEpoch (absent: 0) */
    readonly epoch?: number;
    /** how the sender holds the receiver (absent: as a member) */
    readonly youAre?: 'offline' | 'removed';
    /** the receiver's membershipEpoch as the sender last took it (absent: 0) */
    readonly yourEpoch?: number;
  }
  /** planned switchover: the sender has deactivated the pool and hands it over at `term` */
  | { readonly kind: 'handover'; readonly pool: string; readonly term: number };

export type Command =
  | { readonly kind: 'promote'; readonly pool: string; readonly force: boolean }
  | { readonly kind: 'demote'; readonly pool: string }
  | { readonly kind: 'swap'; readonly pool: string }
  /**
   * An INACTIVE pool (its activation failed), asked of its owner: node = this node activates it again
   * now; node = the peer (present, the pool in sync) gets it handed over as with swap
   */
  | { readonly kind: 'reattach'; readonly pool: string; readonly node: string }
  | { readonly kind: 'maintenance'; readonly on: boolean }
  /**
   * This node leaves: its pools go to the peer (as with swap: only in sync), then it owns and takes
   * nothing until `online`. force: with the peer absent, its pools are stopped instead
   */
  | { readonly kind: 'offline'; readonly force: boolean }
  /** Back from offline once the peer takes note; force: without the peer (its copies may be outdated) */
  | { readonly kind: 'online'; readonly force: boolean }
  /**
   * The peer leaves the cluster for good: it must be offline, or (force) down, the operator vouching
   * that it is powered off. A removed peer counts as fenced, and is told so when it shows up again
   */
  | { readonly kind: 'remove-node'; readonly node: string; readonly force: boolean }
  /** A removed peer may come back (it is then held offline until it runs `node online`) */
  | { readonly kind: 'add-node'; readonly node: string };

export type WitnessRequest = 'claim' | 'alone' | 'clear-alone' | 'clear-fenced';

export type MachineEvent =
  | { readonly type: 'start'; readonly now: number; readonly persisted: PersistedState | null }
  /**
   * Sent every heartbeat interval. peerAckSentAt / witnessAckSentAt: the local send time of the
   * newest heartbeat the peer echoed / of the newest RENEW the witness granted (null: none yet).
   */
  | { readonly type: 'tick'; readonly now: number; readonly peerAckSentAt: number | null; readonly witnessAckSentAt: number | null }
  | { readonly type: 'peer-up'; readonly now: number; readonly incarnation: number }
  | { readonly type: 'peer-down'; readonly now: number; readonly lastHeardAt: number }
  | { readonly type: 'links'; readonly now: number; readonly up: number; readonly total: number }
  | { readonly type: 'peer-message'; readonly now: number; readonly message: PeerMessage }
  | { readonly type: 'volume'; readonly now: number; readonly name: string; readonly facts: VolumeFacts }
  | { readonly type: 'activated'; readonly now: number; readonly pool: string; readonly ok: boolean; readonly error?: string }
  /** the daemon's timer after an activation failed for a cause that may clear by itself (an address or port still held) */
  | { readonly type: 'retry-activate'; readonly now: number; readonly pool: string }
  | { readonly type: 'deactivated'; readonly now: number; readonly pool: string }
  /**
   * seq: the seq of the 'fence' / 'witness' action answered. A reply whose seq is not the one in flight
   * (a fence or CLAIM cancelled when the peer came back, a request the machine already timed out) is
   * stale and ignored. Without seq, a reply is taken for the request of its kind in flight, if any.
   */
  | { readonly type: 'fence-done'; readonly now: number; readonly ok: boolean; readonly detail: string; readonly seq?: number }
  | {
    readonly type: 'witness-reply'; readonly now: number; readonly request: WitnessRequest; readonly granted: boolean; readonly reason: string;
    readonly seq?: number;
  }
  /** a replica must acknowledge a write the peer did not take: may it? answered by an 'alone-decision' */
  | { readonly type: 'alone-request'; readonly now: number; readonly volume: string; readonly id: number }
  | { readonly type: 'command'; readonly now: number; readonly id: number; readonly command: Command }
  /**
   * The configuration's pools changed: this step's config is the new one (and so is every later
   * step's). Pools are added, removed (after their deactivation here) and change control.
   */
  | { readonly type: 'reconfigure'; readonly now: number }
  /**
   * The result of pinging the configured gateway addresses changed: isolated = none answers. While
   * isolated the machine takes nothing over, starts no fence and no CLAIM, and activates nothing
   * without the peer (it may be the isolated side); pools active here stay active.
   */
  | { readonly type: 'isolation'; readonly now: number; readonly isolated: boolean; readonly detail: string };

export type MachineAction =
  /** promote the pool's volumes, then start its exports; answer with 'activated' */
  | { readonly type: 'activate'; readonly pool: string; readonly term: number }
  /** stop the pool's exports, flush and demote its volumes; answer with 'deactivated' */
  | { readonly type: 'deactivate'; readonly pool: string }
  /** client writes to the pool's volumes fail until 'resume' */
  | { readonly type: 'suspend'; readonly pool: string; readonly reason: string }
  | { readonly type: 'resume'; readonly pool: string }
  /** run the fence command against the peer; answer with 'fence-done' carrying the same seq */
  | { readonly type: 'fence'; readonly seq: number }
  /** send a witness request; answer with 'witness-reply' carrying the same seq (a timeout is a refusal) */
  | { readonly type: 'witness'; readonly request: WitnessRequest; readonly seq: number }
  | { readonly type: 'alone-decision'; readonly volume: string; readonly id: number; readonly allow: boolean }
  | { readonly type: 'send-peer'; readonly message: PeerMessage }
  /** write this state atomically before carrying out the actions after it */
  | { readonly type: 'persist'; readonly state: PersistedState }
  | { readonly type: 'command-result'; readonly id: number; readonly ok: boolean; readonly message: string }
  | { readonly type: 'log'; readonly level: 'info' | 'warn' | 'error'; readonly event: string; readonly message: string };

export interface PoolView {
  readonly name: string;
  readonly owner: string;
  readonly term: number;
  readonly phase: PoolPhase;
  /** why the pool is SUSPENDED, ORPHANED, INACTIVE or EXPORTED */
  readonly reason: string | null;
  readonly control: PoolControl;
}
