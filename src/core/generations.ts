// Generation identifiers: which copy of a volume holds which data, and so who
// resyncs whom when the two nodes meet again. The ideas are DRBD's data
// generation UUIDs and after-split-brain policies; see docs/generations.md.
//
// Pure: no I/O, clocks or randomness. New identifiers are minted by the
// caller and passed in; every function returns a new value.
import { NO_GENERATION, type DiskState, type Generations } from '../storage/metadata';

/** What one node persists about its copy of a volume. */
export interface ReplicaState {
  readonly generations: Generations;
  readonly diskState: DiskState;
}

/** A transition that a disk state can refuse. */
export type Transition =
  | { readonly ok: true; readonly state: ReplicaState }
  | { readonly ok: false; readonly reason: string };

const GEN = /^[0-9a-f]{16}$/;

/** Throws unless `id` is a usable new identifier for `g` (16 hex digits, not zero, not already in use). */
function checkNewId(id: string, g?: Generations): void {
  if (!GEN.test(id) || id === NO_GENERATION) throw new RangeError(`generation id ${JSON.stringify(id)} is not 16 hex digits other than zero`);
  if (g !== undefined && (id === g.current || id === g.bitmap || g.history.includes(id))) {
    throw new RangeError(`generation id ${id} is already in use by this copy`);
  }
}

const consistent = (d: DiskState): boolean => d === 'UpToDate' || d === 'Outdated';

// ---------------------------------------------------------------------------
// Transitions

/**
 * A new volume. The initial source is UpToDate; the other copy is Inconsistent
 * until the initial full sync. Two copies created with the same id and both as
 * initial source are declared identical (e.g. both all zeros): no initial sync.
 */
export function newVolume(id: string, opts: { readonly initialSource: boolean }): ReplicaState {
  checkNewId(id);
  return {
    generations: { current: id, bitmap: NO_GENERATION, history: [NO_GENERATION, NO_GENERATION] },
    diskState: opts.initialSource ? 'UpToDate' : 'Inconsistent',
  };
}

/** Start tracking writes the peer does not see: bitmap ← current, current ← newId. */
function startTracking(g: Generations, newId: string): Generations {
  checkNewId(newId, g);
  return { current: newId, bitmap: g.current, history: g.history };
}

/**
 * Already tracking, but the peer may since have taken our current (it finished
 * a resync from us whose end we never recorded): keep the bitmap id — its dirty
 * regions still cover everything since then — and move on to a new current,
 * history ← [current, history[0]], so that what we write from now on can never
 * look equal to what the peer holds.
 */
function remint(g: Generations, newId: string): Generations {
  checkNewId(newId, g);
  return { current: newId, bitmap: g.bitmap, history: [g.current, g.history[0]] };
}

/**
 * The link to the peer failed (or this node restarts after a crash while it
 * was connected). Call it when this node is primary and goes on alone, and
 * also when it is a secondary whose bitmap id is set (it was, or may have
 * been, a resync source): before the first write the peer will not see.
 * Not tracking: start tracking. Tracking: mint a new current (see remint).
 */
export function onPeerLost(local: ReplicaState, newId: string): Transition {
  if (local.diskState !== 'UpToDate') {
    return { ok: false, reason: `local disk is ${local.diskState}: it cannot go on without its peer` };
  }
  const g = local.generations;
  return { ok: true, state: { generations: g.bitmap === NO_GENERATION ? startTracking(g, newId) : remint(g, newId), diskState: 'UpToDate' } };
}

/**
 * A secondary is promoted while its peer is unreachable. Only an UpToDate disk
 * may be promoted; `force` promotes an Outdated or Inconsistent one and marks
 * it UpToDate (the operator vouches for its data; it may lack writes).
 * Not tracking: start tracking. Already tracking: the ids stay (the link loss
 * that separated the two already minted a current the peer cannot hold), so
 * promotions and demotions while apart do not use up history.
 */
export function onBecomePrimaryWhileDisconnected(
  local: ReplicaState, newId: string, opts: { readonly force?: boolean } = {},
): Transition {
  if (local.diskState === 'Diskless') return { ok: false, reason: 'no local disk: cannot be primary without the peer' };
  if (local.diskState !== 'UpToDate' && opts.force !== true) {
    return { ok: false, reason: `local disk is ${local.diskState}: it may lack writes; promote with force to accept that` };
  }
  const g = local.generations;
  const generations = g.bitmap === NO_GENERATION ? startTracking(g, newId) : g;
  return { ok: true, state: { generations, diskState: 'UpToDate' } };
}

/**
 * A resync begins. The target turns Inconsistent and takes a sync id as its
 * current; the source records the same id as its bitmap id (its old bitmap id
 * moves into history). However often the link then fails, the target's current
 * stays the source's bitmap id, so the next meeting resumes the resync from the
 * bitmap (which, for a full sync, starts with every region set). When the
 * target's current already is the source's bitmap id (the plain incremental
 * case, or a resumed resync) nothing is renamed and `syncId` goes unused.
 * A target never tracks: its bitmap id is cleared.
 * The source mints `syncId` and sends it; both sides compute the same result.
 * The caller merges both bitmaps on both sides and resets the target's
 * own-write count (SyncSide.dirtyBytes): its own writes are being discarded.
 */
export function onResyncStart(
  source: ReplicaState, target: ReplicaState, syncId: string,
): { readonly source: ReplicaState; readonly target: ReplicaState } {
  if (!consistent(source.diskState)) throw new RangeError(`a ${source.diskState} copy cannot be a sync source`);
  if (target.diskState === 'Diskless') throw new RangeError('a Diskless copy cannot be a sync target');
  const s = source.generations;
  const t = target.generations;
  if (s.bitmap !== NO_GENERATION && t.current === s.bitmap) {
    return { source, target: { generations: { current: t.current, bitmap: NO_GENERATION, history: t.history }, diskState: 'Inconsistent' } };
  }
  checkNewId(syncId, s);
  checkNewId(syncId, t);
  return {
    source: {
      generations: { current: s.current, bitmap: syncId, history: s.bitmap === NO_GENERATION ? s.history : [s.bitmap, s.history[0]] },
      diskState: source.diskState,
    },
    target: { generations: { current: syncId, bitmap: NO_GENERATION, history: t.history }, diskState: 'Inconsistent' },
  };
}

/**
 * The resync finished. The source clears its bitmap (the bitmap id moves into
 * history); the target takes the source's generations and disk state. Both
 * sides end with identical generations. The target persists first, then the
 * source (if the source clears first and the target never finishes, the next
 * meeting needs a full sync, which is safe).
 */
export function onResyncDone(source: ReplicaState, target: ReplicaState): { readonly source: ReplicaState; readonly target: ReplicaState } {
  if (!consistent(source.diskState)) throw new RangeError(`a ${source.diskState} copy cannot have been a sync source`);
  if (target.diskState === 'Diskless') throw new RangeError('a Diskless copy cannot have been a sync target');
  const s = source.generations;
  const generations: Generations = s.bitmap === NO_GENERATION
    ? s
    : { current: s.current, bitmap: NO_GENERATION, history: [s.bitmap, s.history[0]] };
  return {
    source: { generations, diskState: source.diskState },
    target: { generations, diskState: source.diskState },
  };
}

/**
 * The peers met and `decideSync` said in-sync (equal currents): a leftover
 * bitmap id moves into history, and an Outdated copy next to an UpToDate one
 * holds the same data, so it is UpToDate again.
 */
export function onConnectedInSync(local: ReplicaState, peer: ReplicaState): ReplicaState {
  const g = local.generations;
  if (g.current !== peer.generations.current) throw new RangeError('onConnectedInSync needs equal current ids');
  if (local.diskState === 'Inconsistent' || peer.diskState === 'Inconsistent') {
    throw new RangeError('an Inconsistent copy is never in sync: it needs a resync');
  }
  const generations: Generations = g.bitmap === NO_GENERATION
    ? g
    : { current: g.current, bitmap: NO_GENERATION, history: [g.bitmap, g.history[0]] };
  const diskState: DiskState = local.diskState === 'Outdated' && peer.diskState === 'UpToDate' ? 'UpToDate' : local.diskState;
  return { generations, diskState };
}

/**
 * The primary learned that this copy missed writes (fencing): it is marked
 * Outdated and knows it, so it refuses promotion and is never a source over an
 * UpToDate copy. Generations do not change. An Inconsistent copy stays so.
 */
export function onPeerOutdated(outdated: ReplicaState): ReplicaState {
  return { generations: outdated.generations, diskState: outdated.diskState === 'UpToDate' ? 'Outdated' : outdated.diskState };
}

// ---------------------------------------------------------------------------
// Who syncs whom

/** One side of a meeting, as the handshake exchanges it. */
export interface SyncSide {
  readonly generations: Generations;
  readonly diskState: DiskState;
  /**
   * Bytes of this side's own writes that the peer may not have and that a
   * client was told succeeded (a write, or a flush that made earlier writes
   * durable here only): counted from when it starts tracking (onPeerLost,
   * onBecomePrimaryWhileDisconnected) until a resync between the two completes
   * or they meet in sync; a sync target resets it when the resync starts.
   * Regions merged from the peer's bitmap or replayed from the activity log
   * after a crash do not count, nor do writes the fencing policy refused (they
   * reached the local disk, so the copy moved on, but no client saw them
   * succeed: discarding them loses nothing). 0 means it wrote nothing apart.
   */
  readonly dirtyBytes: number;
  /**
   * It crashed while primary and has not met its peer since: writes in flight
   * then may have reached one copy only; their regions (the activity log) are
   * marked in its bitmap.
   */
  readonly crashedPrimary: boolean;
}

export type SyncDirection = 'local-to-peer' | 'peer-to-local';
/**
 * bitmap: copy the regions dirty in either side's bitmap (both sides merge their
 * bitmaps when the resync starts); full: copy everything.
 */
export type SyncMode = 'bitmap' | 'full';

export type SyncDecision =
  | { readonly kind: 'in-sync'; readonly reason: string }
  | { readonly kind: 'source'; readonly direction: SyncDirection; readonly mode: SyncMode; readonly reason: string }
  | {
    readonly kind: 'split-brain'; readonly localChanged: boolean; readonly peerChanged: boolean;
    /** how the loser is resynced once one side is discarded */
    readonly resyncMode: SyncMode; readonly reason: string;
  }
  | { readonly kind: 'unrelated'; readonly reason: string };

type Side = 'local' | 'peer';
const other = (s: Side): Side => (s === 'local' ? 'peer' : 'local');
const dirFrom = (s: Side): SyncDirection => (s === 'local' ? 'local-to-peer' : 'peer-to-local');

/** How two sets of generations relate, before disk states are considered. */
type Relation =
  | { readonly r: 'equal' }
  | { readonly r: 'newer'; readonly newer: Side; readonly mode: SyncMode; readonly why: string }
  | { readonly r: 'diverged'; readonly common: readonly string[]; readonly mode: SyncMode; readonly why: string }
  | { readonly r: 'none' };

const nonZero = (ids: readonly string[]): string[] => ids.filter((x) => x !== NO_GENERATION);

function relate(l: Generations, p: Generations): Relation {
  if (l.current === p.current) return { r: 'equal' };
  // Each rule is checked in both directions at once, so both sides reach mirror answers;
  // a pair that holds both ways is a cycle no real history produces.
  const peerFromUs = p.bitmap !== NO_GENERATION && l.current === p.bitmap;
  const usFromPeer = l.bitmap !== NO_GENERATION && p.current === l.bitmap;
  if (peerFromUs && usFromPeer) return { r: 'none' };
  if (peerFromUs) {
    return { r: 'newer', newer: 'peer', mode: 'bitmap', why: "peer's bitmap id is our current: peer moved on from us and tracked its writes" };
  }
  if (usFromPeer) {
    return { r: 'newer', newer: 'local', mode: 'bitmap', why: "our bitmap id is peer's current: we moved on from it and tracked our writes" };
  }
  const weInPeerHistory = nonZero(p.history).includes(l.current);
  const peerInOurHistory = nonZero(l.history).includes(p.current);
  if (weInPeerHistory && peerInOurHistory) return { r: 'none' };
  if (weInPeerHistory) {
    return { r: 'newer', newer: 'peer', mode: 'full', why: "our current is in peer's history but its bitmap no longer reaches it" };
  }
  if (peerInOurHistory) {
    return { r: 'newer', newer: 'local', mode: 'full', why: "peer's current is in our history but our bitmap no longer reaches it" };
  }
  if (l.bitmap !== NO_GENERATION && l.bitmap === p.bitmap) {
    return { r: 'diverged', common: [l.bitmap], mode: 'bitmap', why: `both moved on from ${l.bitmap} and tracked their writes` };
  }
  const ours = nonZero([l.bitmap, ...l.history]);
  const common = nonZero([p.bitmap, ...p.history]).filter((x) => ours.includes(x)).sort();
  if (common.length > 0) {
    return { r: 'diverged', common, mode: 'full', why: `both moved on from ${common.join(', ')}; their bitmaps do not share a start` };
  }
  return { r: 'none' };
}

const isFresh = (g: Generations): boolean =>
  g.bitmap === NO_GENERATION && g.history[0] === NO_GENERATION && g.history[1] === NO_GENERATION;

/**
 * Who resyncs whom when the two copies meet. Symmetric: the peer, given the
 * same facts the other way round, reaches the mirror decision.
 */
export function decideSync(local: SyncSide, peer: SyncSide): SyncDecision {
  const sides = { local, peer };
  if (local.diskState === 'Diskless' || peer.diskState === 'Diskless') {
    return { kind: 'unrelated', reason: `${local.diskState === 'Diskless' ? 'local' : 'peer'} side is Diskless: no data to compare` };
  }
  const okL = consistent(local.diskState);
  const okP = consistent(peer.diskState);
  if (!okL && !okP) {
    return { kind: 'unrelated', reason: 'both sides are Inconsistent: neither can be a source (mark one as the initial source)' };
  }
  /** the consistent side when exactly one is Inconsistent */
  const onlyConsistent: Side | undefined = okL && !okP ? 'local' : okP && !okL ? 'peer' : undefined;

  /** Names `from` as source, unless that would put an Outdated copy over an UpToDate one. */
  const source = (from: Side, mode: SyncMode, reason: string, changed: { local: boolean; peer: boolean }): SyncDecision => {
    if (sides[from].diskState === 'Outdated' && sides[other(from)].diskState === 'UpToDate') {
      return {
        kind: 'split-brain', localChanged: changed.local, peerChanged: changed.peer, resyncMode: mode,
        reason: `${reason}; but the ${from} side is Outdated and the other UpToDate: not overwriting an UpToDate copy automatically`,
      };
    }
    return { kind: 'source', direction: dirFrom(from), mode, reason };
  };
  const fromConsistent = (from: Side, mode: SyncMode, why: string): SyncDecision => ({
    kind: 'source', direction: dirFrom(from), mode,
    reason: `${other(from)} side is Inconsistent and can never be a source (${why})`,
  });

  const rel = relate(local.generations, peer.generations);
  switch (rel.r) {
    case 'equal': {
      if (onlyConsistent !== undefined) return fromConsistent(onlyConsistent, 'full', 'equal ids, but its contents are unknown');
      if (local.crashedPrimary && peer.crashedPrimary) {
        return {
          kind: 'split-brain', localChanged: false, peerChanged: false, resyncMode: 'bitmap',
          reason: 'equal ids, but both crashed as primary: their unacknowledged writes may differ',
        };
      }
      const crashed: Side | undefined = local.crashedPrimary ? 'local' : peer.crashedPrimary ? 'peer' : undefined;
      if (crashed !== undefined) {
        return source(crashed, 'bitmap', `equal ids; the ${crashed} side crashed as primary: resync its activity-log regions from it`,
          { local: false, peer: false });
      }
      return { kind: 'in-sync', reason: `equal current ids ${local.generations.current}` };
    }
    case 'newer': {
      if (sides[rel.newer].diskState === 'Inconsistent') return fromConsistent(other(rel.newer), rel.mode, rel.why);
      return source(rel.newer, rel.mode, `${rel.why}: ${rel.mode} resync from the ${rel.newer} side`,
        { local: rel.newer === 'local', peer: rel.newer === 'peer' });
    }
    case 'diverged': {
      if (onlyConsistent !== undefined) return fromConsistent(onlyConsistent, rel.mode, rel.why);
      // A side whose bitmap starts at a common ancestor knows what it wrote since; any other side may have written.
      const wrote = (x: SyncSide): boolean => !rel.common.includes(x.generations.bitmap) || x.dirtyBytes > 0;
      const changed = { local: wrote(local), peer: wrote(peer) };
      if (changed.local && changed.peer) {
        return { kind: 'split-brain', localChanged: true, peerChanged: true, resyncMode: rel.mode, reason: `split brain: ${rel.why}` };
      }
      if (changed.local !== changed.peer) {
        const writer: Side = changed.local ? 'local' : 'peer';
        return source(writer, rel.mode, `${rel.why}, but only the ${writer} side wrote: nothing to lose on the other`, changed);
      }
      // Neither wrote: same data. Any direction reunites the generations; pick one both sides agree on.
      const from: Side = local.diskState !== peer.diskState
        ? (local.diskState === 'UpToDate' ? 'local' : 'peer')
        : (local.generations.current > peer.generations.current ? 'local' : 'peer');
      return source(from, 'bitmap', `${rel.why}, but neither side wrote: the bitmaps are empty`, changed);
    }
    case 'none': {
      if (onlyConsistent !== undefined && isFresh(sides[other(onlyConsistent)].generations)) {
        return {
          kind: 'source', direction: dirFrom(onlyConsistent), mode: 'full',
          reason: `${other(onlyConsistent)} side is new (no history) and Inconsistent: initial full sync from the ${onlyConsistent} side`,
        };
      }
      if (isFresh(local.generations) && isFresh(peer.generations)) {
        return { kind: 'unrelated', reason: 'both sides are new and both claim to be the initial source' };
      }
      return { kind: 'unrelated', reason: 'no common generation: these copies do not share history' };
    }
  }
}

// ---------------------------------------------------------------------------
// Split brain

export type SplitBrainPolicy =
  | { readonly kind: 'disconnect' }
  | { readonly kind: 'discard-younger-primary' }
  | { readonly kind: 'discard-least-changes' }
  | { readonly kind: 'discard-node'; readonly node: string };

export const DEFAULT_SPLIT_BRAIN_POLICY: SplitBrainPolicy = { kind: 'disconnect' };

const NODE_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$/;

/** Returns the policy, or the reason the text is not one. */
export function parseSplitBrainPolicy(text: string): SplitBrainPolicy | string {
  const known = 'disconnect, discard-younger-primary, discard-least-changes, discard-node:NAME';
  switch (text) {
    case 'disconnect': return { kind: 'disconnect' };
    case 'discard-younger-primary': return { kind: 'discard-younger-primary' };
    case 'discard-least-changes': return { kind: 'discard-least-changes' };
  }
  if (text.startsWith('discard-node:')) {
    const node = text.slice('discard-node:'.length);
    if (!NODE_NAME.test(node)) {
      return `discard-node needs a node name (letters, digits, '.', '_', '-'; at most 63), got ${JSON.stringify(node)}`;
    }
    return { kind: 'discard-node', node };
  }
  return `unknown after-split-brain policy ${JSON.stringify(text)} (known: ${known})`;
}

export function formatSplitBrainPolicy(p: SplitBrainPolicy): string {
  return p.kind === 'discard-node' ? `discard-node:${p.node}` : p.kind;
}

export interface SplitBrainSide {
  /** the node's name, as discard-node names it */
  readonly node: string;
  /**
   * When it last became primary, on a counter both nodes compare the same way
   * (e.g. a cluster term bumped on every promotion); undefined if never.
   */
  readonly becamePrimaryAt: number | undefined;
  /** bytes it wrote while apart (as SyncSide.dirtyBytes) */
  readonly dirtyBytes: number;
  /** it is primary right now: discarding it would change data under its users */
  readonly primaryNow: boolean;
}

export interface SplitBrainFacts {
  readonly local: SplitBrainSide;
  readonly peer: SplitBrainSide;
}

export type SplitBrainResolution =
  | { readonly action: 'disconnect'; readonly reason: string }
  | { readonly action: 'discard'; readonly loser: 'local' | 'peer'; readonly reason: string };

/**
 * What the configured policy does with a split brain. Automatic policies never
 * discard a side that is primary now (demote it first, or use operatorResolve).
 */
export function resolveSplitBrain(policy: SplitBrainPolicy, facts: SplitBrainFacts): SplitBrainResolution {
  const disconnect = (why: string): SplitBrainResolution => ({ action: 'disconnect', reason: `split brain left unresolved: ${why}` });
  const discard = (loser: Side, why: string): SplitBrainResolution => {
    if (facts[loser].primaryNow) {
      return disconnect(`${policy.kind} would discard the ${loser} side (${facts[loser].node}), which is primary now`);
    }
    return { action: 'discard', loser, reason: `discarding the ${loser} side (${facts[loser].node}): ${why}` };
  };
  const { local, peer } = facts;
  switch (policy.kind) {
    case 'disconnect':
      return disconnect('policy is disconnect');
    case 'discard-younger-primary': {
      const l = local.becamePrimaryAt;
      const p = peer.becamePrimaryAt;
      if (l === undefined || p === undefined) return disconnect('discard-younger-primary needs both promotion times');
      if (l === p) return disconnect(`both became primary at ${l}`);
      return l > p ? discard('local', `it became primary later (${l} > ${p})`) : discard('peer', `it became primary later (${p} > ${l})`);
    }
    case 'discard-least-changes': {
      if (local.dirtyBytes === peer.dirtyBytes) return disconnect(`both changed ${local.dirtyBytes} bytes`);
      return local.dirtyBytes < peer.dirtyBytes
        ? discard('local', `it changed fewer bytes (${local.dirtyBytes} < ${peer.dirtyBytes})`)
        : discard('peer', `it changed fewer bytes (${peer.dirtyBytes} < ${local.dirtyBytes})`);
    }
    case 'discard-node': {
      const l = local.node === policy.node;
      const p = peer.node === policy.node;
      if (l === p) return disconnect(l ? `both sides are named ${policy.node}` : `neither side is named ${policy.node}`);
      return discard(l ? 'local' : 'peer', `policy discard-node:${policy.node}`);
    }
  }
}

/** The operator's explicit choice: that side's changes since the split are thrown away. */
export function operatorResolve(discard: 'local' | 'peer'): SplitBrainResolution {
  return { action: 'discard', loser: discard, reason: `operator chose to discard the ${discard} side's changes` };
}

/**
 * The resync that carries out a discard: from the winner, in the mode the split
 * brain allows. Copies that are 'unrelated' (no common generation left) can be
 * joined only by the operator's explicit discard, and then by a full sync; do
 * not call this for a Diskless copy or for two Inconsistent ones.
 */
export function resyncAfterDiscard(
  decision: Extract<SyncDecision, { kind: 'split-brain' | 'unrelated' }>, loser: 'local' | 'peer',
): Extract<SyncDecision, { kind: 'source' }> {
  const mode: SyncMode = decision.kind === 'split-brain' ? decision.resyncMode : 'full';
  const what = decision.kind === 'split-brain' ? 'split brain resolved' : 'unrelated copies joined';
  return {
    kind: 'source', direction: dirFrom(other(loser)), mode,
    reason: `${what} by discarding the ${loser} side: ${mode} resync from the ${other(loser)} side`,
  };
}
