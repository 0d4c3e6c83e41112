// What the witness decides (docs/cluster.md, "Leases and the witness"), as a
// pure function: handle(state, now, request) returns the reply, the next
// state, and whether the persisted part changed. No sockets, timers, clocks or
// files: `now` is the witness's monotonic clock, passed in.
import type { WitnessReason, WitnessRequestMessage } from '../protocol/witness/codec';
import { witnessLimits } from '../protocol/witness/limits';

export interface WitnessNodeState {
  /** when the node last proved it was alive (RENEW, ALONE, CLAIM), or the witness's start if later */
  readonly lastRenewAt: number;
  /** the lease the node last declared; 0 until it declares one */
  readonly leaseMs: number;
  /** the node acknowledged writes without its peer: the peer's copies are outdated */
  readonly alone: boolean;
  /** the peer took over from this node: its RENEW, ALONE and CLAIM are refused */
  readonly fenced: boolean;
  /** the highest request id taken from the node; -1 before the first */
  readonly lastRequestId: bigint;
}

export interface WitnessClusterState {
  readonly term: number;
  readonly nodes: ReadonlyMap<string, WitnessNodeState>;
}

export interface WitnessState {
  /** when this witness process started, on the clock `now` comes from */
  readonly startedAt: number;
  /** by cluster id in hex */
  readonly clusters: ReadonlyMap<string, WitnessClusterState>;
}

export interface WitnessVerdict {
  readonly granted: boolean;
  /** 'ok' exactly when granted */
  readonly reason: WitnessReason;
  /** the cluster's term after the decision; 0 for a cluster the witness does not serve */
  readonly term: number;
}

export interface WitnessDecision {
  readonly reply: WitnessVerdict;
  readonly state: WitnessState;
  /** the persisted part changed: write it durably before sending the reply */
  readonly persist: boolean;
  /** nodes the witness heard of for the first time */
  readonly learned: readonly string[];
}

/**
 * What survives a restart. lastRenewAt does not: a restarted witness cannot
 * know when a node last renewed, so it assumes at its start. The lease is kept
 * so that the assumption lasts as long as the node's lease really does.
 */
export interface PersistedWitnessNode {
  readonly leaseMs: number;
  readonly alone: boolean;
  readonly fenced: boolean;
  readonly lastRequestId: bigint;
}

export interface PersistedWitnessCluster {
  readonly term: number;
  readonly nodes: ReadonlyMap<string, PersistedWitnessNode>;
}

/** by cluster id in hex */
export type PersistedWitnessState = ReadonlyMap<string, PersistedWitnessCluster>;

function unheard(startedAt: number): WitnessNodeState {
  return { lastRenewAt: startedAt, leaseMs: 0, alone: false, fenced: false, lastRequestId: -1n };
}

/**
 * The state of a witness starting at `startedAt`: every configured cluster,
 * and every persisted one (a cluster left out of the configuration by mistake
 * must not lose its fenced flags). Every known node counts as renewed at the
 * start, so no CLAIM is granted during the first lease of the witness's life.
 */
export function startWitnessState(startedAt: number, clusterIds: readonly string[], persisted: PersistedWitnessState = new Map()): WitnessState {
  const clusters = new Map<string, WitnessClusterState>();
  for (const id of clusterIds) clusters.set(id, { term: 0, nodes: new Map() });
  for (const [id, c] of persisted) {
    const nodes = new Map<string, WitnessNodeState>();
    for (const [name, n] of c.nodes) nodes.set(name, { ...n, lastRenewAt: startedAt });
    clusters.set(id, { term: c.term, nodes });
  }
  return { startedAt, clusters };
}

export function persistedView(s: WitnessState): PersistedWitnessState {
  const out = new Map<string, PersistedWitnessCluster>();
  for (const [id, c] of s.clusters) {
    const nodes = new Map<string, PersistedWitnessNode>();
    for (const [name, n] of c.nodes) nodes.set(name, { leaseMs: n.leaseMs, alone: n.alone, fenced: n.fenced, lastRequestId: n.lastRequestId });
    out.set(id, { term: c.term, nodes });
  }
  return out;
}

function samePersisted(a: WitnessNodeState | undefined, b: WitnessNodeState): boolean {
  return a !== undefined && a.leaseMs === b.leaseMs && a.alone === b.alone && a.fenced === b.fenced;
}

/**
 * One request, decided per docs/cluster.md. Beyond the rules there:
 * - bad-request: a cluster the witness does not serve, a third node name
 *   (as sender or subject), a CLAIM against the sender itself. Such a
 *   refusal changes nothing.
 * - stale-request: a request id not above the last taken from the sender.
 *   Every other request uses up its id, granted or not, so no request can
 *   be replayed for a different answer later.
 * - CLAIM compares against the longer of the subject's lease and the
 *   claimer's, so a subject whose lease the witness has not learned yet
 *   (unheard since the witness started) is not taken over early. A CLAIM
 *   against a node already fenced is granted again without a new term.
 * - CLEAR about a node the witness never heard of is granted: the flag is clear.
 * - CLAIM, ALONE and CLEAR are always persisted, so their ids outlive a
 *   restart; RENEW and QUERY only when they change a persisted field.
 */
export function handle(state: WitnessState, now: number, req: WitnessRequestMessage): WitnessDecision {
  const clusterId = req.clusterId.toString('hex');
  const cluster = state.clusters.get(clusterId);
  const refuseUnchanged = (reason: WitnessReason): WitnessDecision =>
    ({ reply: { granted: false, reason, term: cluster?.term ?? 0 }, state, persist: false, learned: [] });
  if (cluster === undefined) return refuseUnchanged('bad-request');
  const subjected = req.type === 'claim' || req.type === 'clear';
  if (subjected !== (req.subject !== '') || (req.type === 'clear') !== (req.clear !== null)) return refuseUnchanged('bad-request');
  if (req.type === 'claim' && req.subject === req.sender) return refuseUnchanged('bad-request');
  const names = new Set([req.sender, ...(req.subject === '' ? [] : [req.subject])]);
  const newcomers = [...names].filter((n) => !cluster.nodes.has(n)).length;
  if (cluster.nodes.size + newcomers > witnessLimits.nodesPerClusterMax) return refuseUnchanged('bad-request');

  const before = cluster.nodes.get(req.sender);
  if (before !== undefined && req.requestId <= before.lastRequestId) return refuseUnchanged('stale-request');

  const nodes = new Map(cluster.nodes);
  const learned = before === undefined ? [req.sender] : [];
  let x: WitnessNodeState = { ...(before ?? unheard(state.startedAt)), lastRequestId: req.requestId };
  let term = cluster.term;
  let reason: WitnessReason = 'ok';
  let changed = false;
  const alive = (): void => { x = { ...x, lastRenewAt: now, leaseMs: req.leaseMs }; };

  switch (req.type) {
    case 'renew':
      if (x.fenced) reason = 'fenced';
      else alive();
      break;
    case 'alone':
      if (x.fenced) reason = 'fenced';
      else { alive(); x = { ...x, alone: true }; }
      break;
    case 'claim': {
      if (x.fenced) { reason = 'fenced'; break; }
      alive();
      const known = nodes.get(req.subject);
      const y = known ?? unheard(state.startedAt);
      if (y.alone) reason = 'peer-alone';
      else if (now - y.lastRenewAt < Math.max(y.leaseMs, req.leaseMs)) reason = 'peer-alive';
      else if (!y.fenced) {
        nodes.set(req.subject, { ...y, fenced: true });
        if (known === undefined) learned.push(req.subject);
        term += 1;
        changed = true;
      }
      break;
    }
    case 'clear': {
      const flag = req.clear === 'alone' ? 'alone' : 'fenced';
      if (req.subject === req.sender) x = { ...x, [flag]: false };
      else {
        const y = nodes.get(req.subject);
        if (y !== undefined && y[flag]) { nodes.set(req.subject, { ...y, [flag]: false }); changed = true; }
      }
      break;
    }
    case 'query':
      break;
  }
  nodes.set(req.sender, x);
  changed ||= !samePersisted(before, x) || learned.length > 0;
  const granted = reason === 'ok';
  const clusters = new Map(state.clusters);
  clusters.set(clusterId, { term, nodes });
  return {
    reply: { granted, reason, term },
    state: { startedAt: state.startedAt, clusters },
    persist: changed || req.type === 'claim' || req.type === 'alone' || req.type === 'clear',
    learned,
  };
}
