// GET /metrics renders the status JSON in the Prometheus text format: every
// sample line parses, every family has one HELP and one TYPE before its
// samples, counters end in _total, state sets hold exactly one 1, and label
// values are escaped.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderMetrics } from '../../src/node/metrics';
import type { NodeStatus, VolumeStatus } from '../../src/replication/status';

const MiB = 1024 * 1024;

function volume(over: Partial<VolumeStatus> = {}): VolumeStatus {
  return {
    name: 'vol0', role: 'PRIMARY', state: 'PRIM', diskState: 'UpToDate', peerDiskState: 'UpToDate', connection: 'connected',
    cacheMode: 'write-back', size: 64 * MiB, outOfSyncBytes: 0,
    generations: { current: '1111111111111111', bitmap: '0000000000000000', history: ['0000000000000000', '0000000000000000'] },
    resync: null, lastResync: null, splitBrain: null, suspended: null, error: null,
    counters: { writes: 12, writeBytes: 12 * 4096, peerWriteBytes: 8 * 4096, peerZeroBytes: 4 * 4096, resyncBytes: 0, resyncZeroBytes: 0, resyncSkippedBytes: 0 },
    ...over,
  };
}

function status(over: Partial<NodeStatus> = {}): NodeStatus {
  return {
    node: 'alpha', cluster: 'demo', peer: { name: 'beta', connected: true }, peerApi: '127.0.0.3:7780',
    volumes: [volume()],
    clusterState: {
      policy: 'witness', maintenance: false, membership: { self: 'member', peer: 'offline' }, peer: { up: true, links: { up: 1, total: 2 } },
      pools: [{ name: 'pool0', owner: 'alpha', term: 3, phase: 'ACTIVE', reason: null, floatingIps: ['127.0.0.10/8 on lo'], exports: ['nbd://127.0.0.10:10809'] }],
      heartbeat: { sent: 100, accepted: 98, badMac: 2 },
      activity: [],
      heartbeatLinks: [{ listen: '127.0.0.2:7789', peer: '127.0.0.3:7789', up: true }, { listen: '10.0.0.1:7789', peer: '10.0.0.2:7789', up: false }],
    },
    ...over,
  };
}

interface Sample { name: string; labels: Record<string, string>; value: number }

/** A strict reader of the text format: throws on any line it does not understand. */
function parse(text: string): { samples: Sample[]; types: Map<string, string>; helps: Map<string, string> } {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a line feed');
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Map<string, string>();
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      const into = kind === 'HELP' ? helps : types;
      assert.ok(!into.has(name), `a second ${kind} for ${name}`);
      assert.ok(!samples.some((s) => s.name === name), `${kind} of ${name} after its samples`);
      into.set(name, rest);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m !== null, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
    let at = 0;
    while (at < body.length) {
      re.lastIndex = at;
      const l = re.exec(body);
      assert.ok(l !== null, `bad labels in ${JSON.stringify(line)}`);
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      at = re.lastIndex;
    }
    const value = Number(m[3]);
    assert.ok(!Number.isNaN(value), `bad value in ${JSON.stringify(line)}`);
    samples.push({ name: m[1] as string, labels, value });
  }
  for (const s of samples) {
    assert.ok(types.has(s.name), `${s.name} has no TYPE`);
    assert.ok(helps.has(s.name), `${s.name} has no HELP`);
  }
  for (const [name, type] of types) {
    assert.ok(type === 'gauge' || type === 'counter', `${name}: type ${type}`);
    assert.equal(name.endsWith('_total'), type === 'counter', `${name}: counters, and only counters, end in _total`);
  }
  return { samples, types, helps };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

test('a primary in sync: role, state sets, counters, links, pools', () => {
  const { samples } = parse(renderMetrics(status()));
  assert.equal(value(samples, 'tandem_node_info', { node: 'alpha', peer: 'beta', cluster: 'demo', policy: 'witness' }), 1);
  assert.equal(value(samples, 'tandem_volume_primary', { volume: 'vol0' }), 1);
  const states = samples.filter((s) => s.name === 'tandem_volume_state');
  assert.deepEqual(states.map((s) => s.labels.state).sort(), ['ALONE', 'PRIM', 'SECOND', 'SPLIT-BRAIN', 'SYNCING', 'WAIT']);
  assert.deepEqual(states.filter((s) => s.value === 1).map((s) => s.labels.state), ['PRIM']);
  assert.equal(value(samples, 'tandem_volume_disk_state', { volume: 'vol0', state: 'UpToDate' }), 1);
  assert.equal(samples.filter((s) => s.name === 'tandem_volume_disk_state' && s.value === 1).length, 1);
  assert.equal(value(samples, 'tandem_volume_writes_total', { volume: 'vol0' }), 12);
  assert.equal(value(samples, 'tandem_volume_write_bytes_total', { volume: 'vol0' }), 12 * 4096);
  assert.equal(value(samples, 'tandem_volume_peer_write_bytes_total', { volume: 'vol0' }), 8 * 4096);
  assert.equal(value(samples, 'tandem_volume_peer_zero_bytes_total', { volume: 'vol0' }), 4 * 4096);
  assert.equal(value(samples, 'tandem_volume_out_of_sync_bytes', { volume: 'vol0' }), 0);
  assert.equal(value(samples, 'tandem_volume_resync_running', { volume: 'vol0', direction: 'to-peer' }), 0);
  assert.equal(value(samples, 'tandem_volume_resync_total_bytes', { volume: 'vol0' }), 0);
  assert.equal(value(samples, 'tandem_peer_sync_link_up'), 1);
  assert.equal(value(samples, 'tandem_peer_up'), 1);
  assert.equal(value(samples, 'tandem_heartbeat_links_up'), 1);
  assert.equal(value(samples, 'tandem_heartbeat_links_configured'), 2);
  assert.equal(value(samples, 'tandem_heartbeat_link_up', { link: '0', listen: '127.0.0.2:7789' }), 1);
  assert.equal(value(samples, 'tandem_heartbeat_link_up', { link: '1', peer: '10.0.0.2:7789' }), 0);
  assert.equal(value(samples, 'tandem_heartbeat_datagrams_total', { counter: 'badMac' }), 2);
  assert.equal(value(samples, 'tandem_maintenance'), 0);
  // the status in this test holds its peer offline (see status())
  assert.equal(value(samples, 'tandem_node_membership', { state: 'member' }), 1);
  assert.equal(value(samples, 'tandem_node_membership', { state: 'offline' }), 0);
  assert.equal(value(samples, 'tandem_peer_membership', { state: 'offline' }), 1);
  assert.equal(value(samples, 'tandem_peer_membership', { state: 'member' }), 0);
  assert.equal(value(samples, 'tandem_pool_owner', { pool: 'pool0', owner: 'alpha' }), 1);
  assert.equal(value(samples, 'tandem_pool_owned_here', { pool: 'pool0' }), 1);
  assert.equal(value(samples, 'tandem_pool_term', { pool: 'pool0' }), 3);
  const phases = samples.filter((s) => s.name === 'tandem_pool_phase');
  assert.equal(phases.length, 9, 'every phase, so an alert can say "== 0" without absent()');
  assert.deepEqual(phases.filter((s) => s.value === 1).map((s) => s.labels.phase), ['ACTIVE']);
});

test('a secondary being resynced, the peer gone from a pool owner, and a phase the renderer does not know', () => {
  const resync = {
    direction: 'from-peer' as const, mode: 'bitmap' as const, totalBytes: 48 * MiB, doneBytes: 12 * MiB, rateBytesPerSecond: 8 * MiB,
    etaSeconds: 5, sentBytes: 10 * MiB, zeroBytes: MiB, skippedBytes: MiB, startedAt: '2026-01-01T00:00:00.000Z', finishedAt: null,
  };
  const st = status({
    node: 'beta', peer: { name: 'alpha', connected: true },
    volumes: [volume({ role: 'SECONDARY', state: 'SYNCING', diskState: 'Inconsistent', outOfSyncBytes: 36 * MiB, resync })],
  });
  const cs = st.clusterState;
  assert.ok(cs !== undefined);
  cs.pools = [{ name: 'pool0', owner: 'alpha', term: 3, phase: 'SOMETHING-NEW', reason: null }];
  cs.heartbeatLinks = [{ listen: '127.0.0.3:7789', peer: '127.0.0.2:7789', up: null }];
  const { samples } = parse(renderMetrics(st));
  assert.equal(value(samples, 'tandem_volume_primary', { volume: 'vol0' }), 0);
  assert.equal(value(samples, 'tandem_volume_state', { volume: 'vol0', state: 'SYNCING' }), 1);
  assert.equal(value(samples, 'tandem_volume_disk_state', { volume: 'vol0', state: 'Inconsistent' }), 1);
  assert.equal(value(samples, 'tandem_volume_out_of_sync_bytes', { volume: 'vol0' }), 36 * MiB);
  assert.equal(value(samples, 'tandem_volume_resync_running', { volume: 'vol0', direction: 'from-peer' }), 1);
  assert.equal(value(samples, 'tandem_volume_resync_running', { volume: 'vol0', direction: 'to-peer' }), 0);
  assert.equal(value(samples, 'tandem_volume_resync_total_bytes', { volume: 'vol0' }), 48 * MiB);
  assert.equal(value(samples, 'tandem_volume_resync_done_bytes', { volume: 'vol0' }), 12 * MiB);
  assert.equal(value(samples, 'tandem_volume_resync_skipped_bytes', { volume: 'vol0' }), MiB);
  assert.equal(value(samples, 'tandem_volume_resync_rate_bytes_per_second', { volume: 'vol0' }), 8 * MiB);
  assert.equal(value(samples, 'tandem_pool_owned_here', { pool: 'pool0' }), 0);
  assert.equal(value(samples, 'tandem_pool_phase', { pool: 'pool0', phase: 'SOMETHING-NEW' }), 1);
  assert.equal(value(samples, 'tandem_pool_phase', { pool: 'pool0', phase: 'STANDBY' }), 0);
  assert.equal(samples.filter((s) => s.name === 'tandem_heartbeat_link_up').length, 0, 'a link whose state is unknown is left out, not reported down');
});

test('label values are escaped; a status without cluster state renders the volumes only', () => {
  const odd = 'v"ol\\1\nx';
  const st = status({ volumes: [volume({ name: odd })] });
  delete st.clusterState;
  const text = renderMetrics(st);
  const { samples } = parse(text);
  assert.equal(value(samples, 'tandem_volume_primary', { volume: odd }), 1);
  assert.match(text, /^tandem_volume_primary\{volume="v\\"ol\\\\1\\nx"\} 1$/m);
  assert.equal(samples.filter((s) => s.name.startsWith('tandem_pool_')).length, 0);
  assert.equal(value(samples, 'tandem_maintenance'), undefined);
  assert.match(text, /^tandem_node_info\{node="alpha",peer="beta",cluster="demo",policy="none"\} 1$/m);
});
