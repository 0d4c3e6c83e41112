// The status JSON of docs/mirroring.md, typed once: the API, the CLI, the
// tests and the bench all read this shape.
import type { ApplicationStatus } from '../app/application';
import type { DiskState, Generations } from '../storage/metadata';

export type Role = 'PRIMARY' | 'SECONDARY';
export type CacheMode = 'write-back' | 'write-through';
export type VolumeState = 'PRIM' | 'SECOND' | 'ALONE' | 'SYNCING' | 'SPLIT-BRAIN' | 'WAIT';
export type Connection = 'connecting' | 'connected' | 'standalone';

export interface ResyncStatus {
  direction: 'to-peer' | 'from-peer';
  mode: 'bitmap' | 'full';
  totalBytes: number;
  doneBytes: number;
  rateBytesPerSecond: number;
  etaSeconds: number | null;
  /** data that crossed the link */
  sentBytes: number;
  /** ranges that travelled as zero commands */
  zeroBytes: number;
  /** blocks whose hashes matched: nothing travelled */
  skippedBytes: number;
  startedAt: string;
  finishedAt: string | null;
}

export interface VolumeCounters {
  writes: number;
  writeBytes: number;
  peerWriteBytes: number;
  peerZeroBytes: number;
  resyncBytes: number;
  resyncZeroBytes: number;
  resyncSkippedBytes: number;
}

export interface VolumeStatus {
  name: string;
  role: Role;
  state: VolumeState;
  diskState: DiskState;
  peerDiskState: DiskState | null;
  connection: Connection;
  cacheMode: CacheMode;
  size: number;
  outOfSyncBytes: number;
  generations: Generations;
  resync: ResyncStatus | null;
  lastResync: ResyncStatus | null;
  splitBrain: { reason: string; since: string } | null;
  /** why client writes fail now: the cluster suspended them (lease lost, fence failed) */
  suspended: string | null;
  error: string | null;
  counters: VolumeCounters;
}

export interface PoolStatus {
  name: string;
  owner: string;
  term: number;
  phase: string;
  reason: string | null;
  /** managed by the cluster, unmanaged (left as it is) or exported (released on both nodes) */
  control?: string;
  /** the pool's floating IPs, "ADDR/PREFIX on IF" */
  floatingIps?: string[];
  /** where the owner exports the pool's volumes (nbd://HOST:PORT) */
  exports?: string[];
  /** the pool's filesystem as this node sees it (mounted only on the owner) */
  filesystem?: { volume: string; mountpoint: string; mounted: boolean };
  /** the pool's applications on this node: running on the owner, stopped elsewhere (docs/applications.md) */
  applications?: ApplicationStatus[];
}

/** one configured heartbeat link: `up` is null when only the count of links up is known */
export interface HeartbeatLinkStatus {
  listen: string;
  peer: string;
  up: boolean | null;
}

export interface ClusterStateStatus {
  policy: string;
  maintenance: boolean;
  /** docs/cluster.md, "Taking a node offline": this node's place, and how it holds its peer */
  membership: { self: 'member' | 'leaving' | 'offline' | 'rejoining'; peer: 'member' | 'offline' | 'removed' };
  peer: { up: boolean; links: { up: number; total: number } };
  pools: PoolStatus[];
  heartbeat: Record<string, number>;
  activity: Array<{ at: string; level: string; event: string; message: string; pool?: string; ms?: number; ok?: boolean }>;
  /** each heartbeat link, in configuration order */
  heartbeatLinks?: HeartbeatLinkStatus[];
}

export interface NodeStatus {
  node: string;
  cluster: string;
  peer: { name: string; connected: boolean };
  /** where the peer's API is, "HOST:PORT": peer.apiAddress of the node file, or guessed (docs/console.md) */
  peerApi?: string;
  /** peerApi comes from the node file (true), or is the peer's sync host with this node's API port (false) */
  peerApiConfigured?: boolean;
  volumes: VolumeStatus[];
  /** the cluster machine's view (docs/cluster.md) */
  clusterState?: ClusterStateStatus;
  /** this node's cluster configuration document (docs/pools.md, "The cluster configuration") */
  config?: ConfigStatus;
}

export interface ConfigStatus {
  epoch: number;
  changedBy: string;
  changedAt: string;
  change: string;
  hash: string;
  /** the peer's document was changed apart from this one: neither applies; what to do */
  diverged: string | null;
}
