// `tandem status` for a person at a terminal: the nodes and their links, the pools with where
// they are served, the volumes with their resync. The same facts as the status JSON
// (docs/status.schema.json), nothing more; `--json` prints the JSON itself.
import type { NodeStatus, PoolStatus, VolumeStatus } from '../replication/status';
import { formatSize } from '../util/size';
import { describeFigures, resyncFigures, table, type Painter, type TableRow, type Tone } from './format';

const STATE_TONE: Record<VolumeStatus['state'], Tone | null> = {
  PRIM: 'good', SECOND: null, ALONE: 'bad', SYNCING: 'warn', 'SPLIT-BRAIN': 'bad', WAIT: 'warn',
};

function phaseTone(phase: string): Tone | null {
  if (phase === 'ACTIVE') return 'good';
  if (phase === 'STANDBY') return null;
  if (phase === 'EXPORTED') return 'warn';
  if (phase === 'INACTIVE' || phase === 'ORPHANED' || phase === 'SUSPENDED') return 'bad';
  return 'warn';
}

function diskTone(d: string | null): Tone | null {
  return d === null || d === 'UpToDate' ? null : 'warn';
}

function time(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function nodesSection(s: NodeStatus, api: string, p: Painter): string[] {
  const c = s.clusterState;
  const m = c?.membership;
  // a member is the normal case: only a node that left (or is leaving, or was removed) says so
  const self = m === undefined || m.self === 'member' ? 'this node' : `this node, ${p.paint(m.self.toUpperCase(), 'warn')}`;
  const peer = m === undefined || m.peer === 'member' ? 'peer' : `peer, ${p.paint(m.peer.toUpperCase(), 'warn')}`;
  const rows: TableRow[] = [[s.node, self, '-', '-', '-', api]];
  const sync = s.peer.connected ? p.paint('connected', 'good') : p.paint('not connected', 'bad');
  let heard = '-';
  let links = '-';
  if (c !== undefined) {
    heard = c.peer.up ? p.paint('up', 'good') : p.paint('DOWN', 'bad');
    const l = c.peer.links;
    links = p.paint(`${l.up}/${l.total} up`, l.up === l.total ? 'good' : l.up === 0 ? 'bad' : 'warn');
  }
  // derived from the peer's sync address (docs/console.md): a guess, so it says so
  rows.push([s.peer.name, peer, sync, heard, links, s.peerApi === undefined ? '-' : s.peerApiConfigured === true ? s.peerApi : `${s.peerApi} (expected)`]);
  for (const l of c?.heartbeatLinks ?? []) {
    const up = l.up === null ? 'unknown' : l.up ? p.paint('up', 'good') : p.paint('down', 'bad');
    rows.push({ note: `heartbeat link ${l.listen} -> ${l.peer}: ${up}` });
  }
  return ['NODES', ...table(['NODE', 'IS', 'SYNC LINK', 'HEARTBEATS', 'LINKS', 'API'], rows)];
}

function poolNotes(pool: PoolStatus, p: Painter): TableRow[] {
  const notes: TableRow[] = [];
  for (const ip of pool.floatingIps ?? []) notes.push({ note: `floating IP  ${ip}` });
  const served = pool.phase === 'ACTIVE' ? '' : ' (when active here)';
  for (const e of pool.exports ?? []) notes.push({ note: `export       ${e}${served}` });
  const fs = pool.filesystem;
  if (fs !== undefined) {
    notes.push({ note: `filesystem   ${fs.volume} on ${fs.mountpoint}: ${fs.mounted ? p.paint('mounted', 'good') : 'not mounted'}` });
  }
  for (const a of pool.applications ?? []) {
    const tone: Tone | null = a.state === 'running' ? 'good' : a.state === 'failed' ? 'bad' : a.state === 'stopped' ? null : 'warn';
    const check = a.lastCheck === null ? '' : `; last check ${a.lastCheck.probe}: ${a.lastCheck.ok ? 'ok' : p.paint(`failed: ${a.lastCheck.message}`, 'bad')}`;
    const restarts = a.restarts > 0 ? `, ${a.restarts} restart${a.restarts === 1 ? '' : 's'}` : '';
    notes.push({ note: `application  ${a.name} (${a.module}): ${p.paint(a.state, tone)} since ${time(a.since)}${restarts}${check}` });
    if (a.error !== null) notes.push({ note: `             ${p.paint(`error: ${a.error}`, 'bad')}` });
  }
  return notes;
}

function poolsSection(s: NodeStatus, p: Painter): string[] {
  const c = s.clusterState;
  if (c === undefined) return [];
  const rows: TableRow[] = [];
  for (const pool of c.pools) {
    rows.push([pool.name, pool.owner === s.node ? p.paint(pool.owner, 'strong') : pool.owner, String(pool.term), p.paint(pool.phase, phaseTone(pool.phase)), pool.reason ?? '']);
    rows.push(...poolNotes(pool, p));
    if (pool.control !== undefined && pool.control !== 'managed') {
      rows.push({ note: p.paint(pool.control === 'exported' ? `exported: released on both nodes, data kept (tandem pool import ${pool.name})` : `unmanaged: the cluster leaves it as it is (tandem pool manage ${pool.name})`, 'warn') });
    }
    if (pool.phase === 'INACTIVE' || pool.phase === 'ORPHANED' || pool.phase === 'SUSPENDED') {
      rows.push({ note: p.paint(`why: tandem activity --pool ${pool.name} (docs/troubleshooting.md)`, 'dim') });
    }
  }
  return ['POOLS', ...table(['POOL', 'OWNER', 'TERM', 'PHASE', 'REASON'], rows)];
}

function resyncCell(v: VolumeStatus, peer: string): string {
  const r = v.resync;
  if (r === null) return '-';
  const f = resyncFigures(r);
  const way = r.direction === 'to-peer' ? `to ${peer}` : `from ${peer}`;
  if (f.fraction === null && r.direction === 'to-peer') return `${way} (${r.mode}): running; ${peer} shows its progress`;
  return `${way} (${r.mode}): ${describeFigures(f)}`;
}

function volumesSection(s: NodeStatus, p: Painter): string[] {
  const rows: TableRow[] = [];
  for (const v of s.volumes) {
    rows.push([
      v.name, v.role, p.paint(v.state, STATE_TONE[v.state]), p.paint(v.diskState, diskTone(v.diskState)),
      p.paint(v.peerDiskState ?? '-', diskTone(v.peerDiskState)), v.connection,
      v.outOfSyncBytes === 0 ? '0' : p.paint(formatSize(v.outOfSyncBytes), 'warn'), resyncCell(v, s.peer.name),
    ]);
    if (v.state === 'ALONE' && v.resync === null) rows.push({ note: p.paint(`writes go on without ${s.peer.name}: redundancy lost`, 'bad') });
    if (v.splitBrain !== null) rows.push({ note: p.paint(`split brain since ${time(v.splitBrain.since)}: ${v.splitBrain.reason}`, 'bad') });
    if (v.suspended !== null) rows.push({ note: p.paint(`writes suspended: ${v.suspended}`, 'bad') });
    if (v.error !== null) rows.push({ note: p.paint(`error: ${v.error}`, 'bad') });
  }
  return ['VOLUMES', ...table(['VOLUME', 'ROLE', 'STATE', 'DISK', 'PEER DISK', 'CONNECTION', 'OUT OF SYNC', 'RESYNC'], rows)];
}

/** The status as tables; `api` is the address it was read from. */
export function formatStatus(s: NodeStatus, api: string, p: Painter): string {
  const c = s.clusterState;
  let head = `cluster ${p.paint(s.cluster, 'strong')} as seen by ${p.paint(s.node, 'strong')}`;
  if (c !== undefined) {
    head += `   fencing: ${c.policy}`;
    // the status carries this node's switch only; the peer's counts as well (docs/cluster.md)
    head += c.maintenance ? `   ${p.paint(`MAINTENANCE ON at ${s.node}: nothing moves automatically`, 'warn')}` : `   maintenance at ${s.node}: off`;
  }
  if (s.config !== undefined) {
    head += `\nconfiguration epoch ${s.config.epoch} (${s.config.change}, by ${s.config.changedBy})`;
    if (s.config.diverged !== null) head += `\n${p.paint(`configuration diverged: ${s.config.diverged}`, 'bad')}`;
  }
  const sections = [nodesSection(s, api, p), poolsSection(s, p), volumesSection(s, p)].filter((x) => x.length > 0);
  return [head, ...sections.map((x) => ['', ...x]).flat()].join('\n') + '\n';
}
