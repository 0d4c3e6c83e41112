// GET /metrics: the node's status in the Prometheus text format (version 0.0.4),
// rendered from the same NodeStatus the API and the console serve, so the
// numbers never disagree with `tandem status` (docs/console.md lists them).
import type { PoolPhase } from '../cluster/machine-types';
import type { NodeStatus, VolumeState } from '../replication/status';
import { DISK_STATES } from '../storage/metadata';

export const metricsContentType = 'text/plain; version=0.0.4; charset=utf-8';

// Records, so a state added to the type and forgotten here fails the build
const volumeStates: Record<VolumeState, true> = { PRIM: true, SECOND: true, ALONE: true, SYNCING: true, 'SPLIT-BRAIN': true, WAIT: true };
const poolPhases: Record<PoolPhase, true> = {
  ACTIVE: true, ACTIVATING: true, DEACTIVATING: true, SUSPENDED: true, STANDBY: true, 'TAKING-OVER': true, ORPHANED: true, INACTIVE: true, EXPORTED: true,
};

type Labels = Readonly<Record<string, string>>;

function labelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function number(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Metric families in the order they were first named, each with its HELP, TYPE and samples. */
class Exposition {
  private readonly families = new Map<string, { help: string; type: 'gauge' | 'counter'; samples: string[] }>();

  add(name: string, type: 'gauge' | 'counter', help: string, labels: Labels, value: number): void {
    let f = this.families.get(name);
    if (f === undefined) {
      f = { help, type, samples: [] };
      this.families.set(name, f);
    }
    const l = Object.entries(labels).map(([k, v]) => `${k}="${labelValue(v)}"`).join(',');
    f.samples.push(`${name}${l === '' ? '' : `{${l}}`} ${number(value)}`);
  }

  text(): string {
    let out = '';
    for (const [name, f] of this.families) {
      out += `# HELP ${name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${f.type}\n${f.samples.join('\n')}\n`;
    }
    return out;
  }
}

const bool = (b: boolean): number => (b ? 1 : 0);

export function renderMetrics(st: NodeStatus): string {
  const m = new Exposition();
  const cs = st.clusterState;
  m.add('tandem_node_info', 'gauge', 'This node: its name, its peer, the cluster and the fencing policy (always 1).',
    { node: st.node, peer: st.peer.name, cluster: st.cluster, policy: cs?.policy ?? 'none' }, 1);
  m.add('tandem_peer_sync_link_up', 'gauge', 'The sync link to the peer is connected (1) or not (0).', {}, bool(st.peer.connected));

  for (const v of st.volumes) {
    const vol = { volume: v.name };
    m.add('tandem_volume_primary', 'gauge', 'The volume\'s role here: 1 PRIMARY, 0 SECONDARY.', vol, bool(v.role === 'PRIMARY'));
    for (const s of Object.keys(volumeStates)) {
      m.add('tandem_volume_state', 'gauge', 'The volume\'s state here (PRIM, SECOND, ALONE, SYNCING, SPLIT-BRAIN, WAIT): 1 for the current one.', { ...vol, state: s }, bool(v.state === s));
    }
    for (const s of DISK_STATES) {
      m.add('tandem_volume_disk_state', 'gauge', 'This copy\'s disk state: 1 for the current one.', { ...vol, state: s }, bool(v.diskState === s));
    }
    m.add('tandem_volume_peer_connected', 'gauge', 'The volume replicates with the peer (connection "connected").', vol, bool(v.connection === 'connected'));
    m.add('tandem_volume_size_bytes', 'gauge', 'The volume\'s size.', vol, v.size);
    m.add('tandem_volume_out_of_sync_bytes', 'gauge', 'Bytes the two copies may differ by: what a resync will copy.', vol, v.outOfSyncBytes);
    m.add('tandem_volume_split_brain', 'gauge', 'The copies diverged and nothing resolved it yet.', vol, bool(v.splitBrain !== null));
    m.add('tandem_volume_writes_suspended', 'gauge', 'The cluster suspended client writes (lease lost, fence failed).', vol, bool(v.suspended !== null));
    const c = v.counters;
    m.add('tandem_volume_writes_total', 'counter', 'Client writes since the node started.', vol, c.writes);
    m.add('tandem_volume_write_bytes_total', 'counter', 'Bytes of client writes since the node started.', vol, c.writeBytes);
    m.add('tandem_volume_peer_write_bytes_total', 'counter', 'Bytes of client writes sent to the peer as data.', vol, c.peerWriteBytes);
    m.add('tandem_volume_peer_zero_bytes_total', 'counter', 'Bytes of client writes sent to the peer as zero commands.', vol, c.peerZeroBytes);
    m.add('tandem_volume_resync_bytes_total', 'counter', 'Bytes this copy took by resync as data.', vol, c.resyncBytes);
    m.add('tandem_volume_resync_zero_bytes_total', 'counter', 'Bytes this copy took by resync as zero commands.', vol, c.resyncZeroBytes);
    m.add('tandem_volume_resync_skipped_bytes_total', 'counter', 'Bytes a resync did not send because the block hashes matched.', vol, c.resyncSkippedBytes);
    const r = v.resync;
    m.add('tandem_volume_resync_running', 'gauge', 'A resync of the volume runs now, by direction: to-peer (this node is the source) or from-peer.',
      { ...vol, direction: 'to-peer' }, bool(r?.direction === 'to-peer'));
    m.add('tandem_volume_resync_running', 'gauge', '', { ...vol, direction: 'from-peer' }, bool(r?.direction === 'from-peer'));
    m.add('tandem_volume_resync_total_bytes', 'gauge', 'The running resync\'s size (0 when none runs).', vol, r?.totalBytes ?? 0);
    m.add('tandem_volume_resync_done_bytes', 'gauge', 'What the running resync has done (0 when none runs).', vol, r?.doneBytes ?? 0);
    m.add('tandem_volume_resync_skipped_bytes', 'gauge', 'What the running resync skipped because the hashes matched (0 when none runs).', vol, r?.skippedBytes ?? 0);
    m.add('tandem_volume_resync_rate_bytes_per_second', 'gauge', 'The running resync\'s rate (0 when none runs).', vol, r?.rateBytesPerSecond ?? 0);
  }

  if (cs !== undefined) {
    m.add('tandem_maintenance', 'gauge', 'Maintenance is on: nothing fails over automatically.', {}, bool(cs.maintenance));
    m.add('tandem_peer_up', 'gauge', 'The peer\'s heartbeats are heard on some link.', {}, bool(cs.peer.up));
    // one series per state, 1 for the current one: an alert matches {state!="member"}
    for (const state of ['member', 'leaving', 'offline', 'rejoining']) {
      m.add('tandem_node_membership', 'gauge', 'This node\'s place in the cluster (docs/cluster.md, "Taking a node offline").', { state }, bool(cs.membership.self === state));
    }
    for (const state of ['member', 'offline', 'removed']) {
      m.add('tandem_peer_membership', 'gauge', 'How this node holds its peer.', { state }, bool(cs.membership.peer === state));
    }
    m.add('tandem_heartbeat_links_up', 'gauge', 'Heartbeat links that deliver the peer\'s heartbeats.', {}, cs.peer.links.up);
    m.add('tandem_heartbeat_links_configured', 'gauge', 'Configured heartbeat links.', {}, cs.peer.links.total);
    (cs.heartbeatLinks ?? []).forEach((l, i) => {
      if (l.up === null) return;
      m.add('tandem_heartbeat_link_up', 'gauge', 'One heartbeat link delivers the peer\'s heartbeats.', { link: String(i), listen: l.listen, peer: l.peer }, bool(l.up));
    });
    for (const [k, v] of Object.entries(cs.heartbeat)) {
      if (typeof v !== 'number') continue;
      m.add('tandem_heartbeat_datagrams_total', 'counter', 'Heartbeat datagrams by counter: sent, accepted, and each reason for refusing one.', { counter: k }, v);
    }
    for (const p of cs.pools) {
      const pool = { pool: p.name };
      m.add('tandem_pool_owner', 'gauge', 'Which node owns the pool, as this node knows it (always 1; the owner is a label).', { ...pool, owner: p.owner }, 1);
      m.add('tandem_pool_owned_here', 'gauge', 'This node owns the pool.', pool, bool(p.owner === st.node));
      m.add('tandem_pool_term', 'gauge', 'The pool\'s term: bumped at every change of owner.', pool, p.term);
      const phases = Object.keys(poolPhases);
      if (!phases.includes(p.phase)) phases.push(p.phase);
      for (const ph of phases) {
        m.add('tandem_pool_phase', 'gauge', 'The pool\'s phase on this node: 1 for the current one.', { ...pool, phase: ph }, bool(p.phase === ph));
      }
    }
  }
  return m.text();
}
