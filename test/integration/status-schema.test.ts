// docs/status.schema.json against the status JSON of real nodes: every status both nodes
// serve while a fresh cluster syncs, verifies, swaps its pool, loses and regains its sync
// link must match it, with no undeclared field in a closed object and no required one missing.
// A typed NodeStatus with every optional part present ties the schema to src/replication/status.ts
// for the branches a live cluster of this test does not reach (applications, a filesystem).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { freePort, sleep, withCluster, type Cluster, type NodeStatus } from '../helpers/cluster';
import { lintSchema, validate, type Schema } from '../helpers/json-schema';
import { repoRoot } from '../helpers/serve-process';

const SCHEMA_PATH = path.join(repoRoot, 'docs', 'status.schema.json');
const schema = JSON.parse(fs.readFileSync(SCHEMA_PATH, 'utf8')) as Schema;

/** Every status checked in this file adds the schema locations it reached. */
const reached = new Set<string>();

function conforms(s: unknown, what: string): void {
  const r = validate(schema, s);
  for (const v of r.visited) reached.add(v);
  assert.deepEqual(r.errors, [], `${what} does not match docs/status.schema.json:\n${r.errors.join('\n')}\n${JSON.stringify(s)}`);
}

/** Reads both nodes' status every 150 ms and checks each one, until stopped. */
function sampleStatuses(c: Cluster): { stop(): Promise<number> } {
  let stopped = false;
  let count = 0;
  const failures: string[] = [];
  const loop = (async () => {
    while (!stopped) {
      for (const n of c.nodes) {
        if (!n.running) continue;
        let s: NodeStatus;
        try {
          s = await n.status();
        } catch {
          continue; // a node between runs: its status is checked once it answers
        }
        const r = validate(schema, s);
        for (const v of r.visited) reached.add(v);
        count++;
        if (r.errors.length > 0 && failures.length < 5) failures.push(`${n.name}: ${r.errors.join('; ')}\n${JSON.stringify(s)}`);
      }
      await sleep(150);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      assert.deepEqual(failures, [], `statuses read along the way do not match docs/status.schema.json:\n${failures.join('\n')}`);
      return count;
    },
  };
}

async function bothConform(c: Cluster, what: string): Promise<[NodeStatus, NodeStatus]> {
  const [a, b] = await Promise.all([c.alpha.status(), c.beta.status()]);
  conforms(a, `alpha's status (${what})`);
  conforms(b, `beta's status (${what})`);
  return [a, b];
}

// the altered copies below reach into any part of a parsed status
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = Record<string, any>;

/** The schema must reject a status with a field it does not declare, or without one it requires. */
function assertSchemaBites(live: NodeStatus, t: TestContext): void {
  const cases: Array<[string, (s: Loose) => void, RegExp]> = [
    ['a new top-level field', (s) => { s.surprise = 1; }, /\$: undeclared property "surprise"/],
    ['a new volume field', (s) => { s.volumes[0].surprise = 'x'; }, /\$\.volumes\[0\]: undeclared property "surprise"/],
    ['a new counter', (s) => { s.volumes[0].counters.surprise = 0; }, /counters: undeclared property "surprise"/],
    ['a new pool field', (s) => { s.clusterState.pools[0].surprise = true; }, /pools\[0\]: undeclared property "surprise"/],
    ['a new activity field', (s) => { s.clusterState.activity[0].surprise = true; }, /activity\[0\]: undeclared property "surprise"/],
    ['a new resync field', (s) => { s.volumes[0].lastResync.surprise = 1; }, /undeclared property "surprise"/],
    ['no outOfSyncBytes', (s) => { delete s.volumes[0].outOfSyncBytes; }, /required property "outOfSyncBytes" is missing/],
    ['no pool phase', (s) => { delete s.clusterState.pools[0].phase; }, /required property "phase" is missing/],
    ['no peer', (s) => { delete s.peer; }, /\$: required property "peer" is missing/],
    ['an unknown state', (s) => { s.volumes[0].state = 'HAPPY'; }, /"HAPPY" is not one of/],
    ['a size that is text', (s) => { s.volumes[0].size = '64M'; }, /size: expected integer, got string/],
    ['a null where none is allowed', (s) => { s.volumes[0].counters = null; }, /counters: expected object, got null/],
  ];
  for (const [what, mutate, expected] of cases) {
    const copy = JSON.parse(JSON.stringify(live)) as Loose;
    mutate(copy);
    const errors = validate(schema, copy).errors;
    assert.ok(errors.some((e) => expected.test(e)), `${what}: the schema should refuse it with ${expected}, said: ${JSON.stringify(errors)}`);
  }
  t.diagnostic(`the schema refused all ${cases.length} altered copies of a live status`);
}

test('the schema is one this validator reads whole: every keyword known, every $ref resolves, every object but the counters closed', () => {
  const objects = lintSchema(schema);
  const open = objects.filter((o) => !o.closed).map((o) => o.where);
  assert.deepEqual(open, ['#/$defs/clusterState/properties/heartbeat'], 'objects the schema leaves open');
  assert.ok(objects.length >= 15, `only ${objects.length} object schemas: is the schema complete?`);
});

test('a NodeStatus with every optional part matches, and one with every nullable part null matches too', () => {
  const resync = {
    direction: 'from-peer', mode: 'bitmap', totalBytes: 10, doneBytes: 5, rateBytesPerSecond: 1, etaSeconds: 5,
    sentBytes: 5, zeroBytes: 0, skippedBytes: 0, startedAt: '2026-01-01T00:00:00.000Z', finishedAt: null,
  } as const;
  const full: NodeStatus = {
    node: 'alpha', cluster: 'c', peer: { name: 'beta', connected: true }, peerApi: '198.18.2.12:7780',
    volumes: [{
      name: 'vol0', role: 'PRIMARY', state: 'SPLIT-BRAIN', diskState: 'UpToDate', peerDiskState: 'Outdated', connection: 'standalone',
      cacheMode: 'write-through', size: 1024, outOfSyncBytes: 512,
      generations: { current: '0000000000000001', bitmap: '0000000000000000', history: ['0000000000000000', '0000000000000000'] },
      resync, lastResync: { ...resync, direction: 'to-peer', finishedAt: '2026-01-01T00:00:10.000Z', etaSeconds: null },
      splitBrain: { reason: 'both changed', since: '2026-01-01T00:00:00.000Z' }, suspended: 'lease lost', error: 'size mismatch',
      counters: { writes: 1, writeBytes: 2, peerWriteBytes: 3, peerZeroBytes: 4, resyncBytes: 5, resyncZeroBytes: 6, resyncSkippedBytes: 7 },
    }],
    clusterState: {
      policy: 'witness', maintenance: true, membership: { self: 'member', peer: 'offline' }, peer: { up: false, links: { up: 1, total: 2 } },
      pools: [{
        name: 'db', owner: 'alpha', term: 4, phase: 'ACTIVE', reason: 'why not', floatingIps: ['198.18.0.100/24 on eth0'], exports: ['nbd://198.18.0.100:10809'],
        filesystem: { volume: 'vol0', mountpoint: '/srv/db', mounted: true },
        applications: [{
          name: 'pg', module: 'postgresql', state: 'running', since: '2026-01-01T00:00:00.000Z', restarts: 1,
          lastCheck: { probe: 'sql', ok: true, message: 'SELECT 1', at: '2026-01-01T00:00:01.000Z' }, error: 'restarted once', output: 'started',
        }],
      }],
      heartbeat: { sent: 1, accepted: 1 },
      activity: [{ at: '2026-01-01T00:00:00.000Z', level: 'warn', event: 'pool-run', message: 'm', pool: 'db', ms: 3, ok: false }],
      heartbeatLinks: [{ listen: '198.18.2.11:7789', peer: '198.18.2.12:7789', up: null }],
    },
  };
  conforms(full, 'a status with every optional part');
  const bare: NodeStatus = {
    node: 'alpha', cluster: 'c', peer: { name: 'beta', connected: false },
    volumes: [{
      ...(full.volumes[0] as NodeStatus['volumes'][number]),
      peerDiskState: null, resync: null, lastResync: null, splitBrain: null, suspended: null, error: null,
    }],
    clusterState: {
      ...(full.clusterState as NonNullable<NodeStatus['clusterState']>),
      heartbeat: {},
      pools: [{
        name: 'db', owner: 'beta', term: 0, phase: 'STANDBY', reason: null,
        applications: [{ name: 'pg', module: 'generic', state: 'stopped', since: 'x', restarts: 0, lastCheck: null, error: null, output: '' }],
      }],
    },
  };
  conforms(bare, 'a status with every nullable part null');
  conforms({ node: 'alpha', cluster: 'c', peer: { name: 'beta', connected: false }, volumes: [] } satisfies NodeStatus, 'a status without a cluster state');
});

test('live statuses of both nodes match the schema: fresh, resyncing both ways, after a verify, a swap, a cut and a reconnect', { timeout: 180_000 }, async (t) => {
  const vip = `127.0.${100 + Math.floor(Math.random() * 100)}.${10 + Math.floor(Math.random() * 200)}`;
  const nbdPort = await freePort(vip);
  await withCluster({
    size: '64M',
    // the initial sync of 64 MiB takes about 8 s at this rate: long enough to be seen resyncing
    resyncRate: '8M',
    prefix: 'tandem-status-schema-',
    extraConfig: () => ({ floatingIp: { driver: 'loopback' } }),
    pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', floatingIps: [{ address: `${vip}/8` }], nbdPort }],
  }, async (c) => {
    const sampler = sampleStatuses(c);
    const [fresh] = await bothConform(c, 'fresh');
    assert.equal(fresh.node, 'alpha');

    const during = await c.waitFor((v) => v.beta?.resync?.direction === 'from-peer' && v.beta.resync.totalBytes > 0, 30_000, 'beta resyncing from alpha');
    t.diagnostic(`beta resyncing: ${JSON.stringify(during.beta?.resync)}`);
    const [a1, b1] = await bothConform(c, 'resyncing');
    assert.ok(a1.volumes[0]?.resync !== null || b1.volumes[0]?.resync !== null, 'neither node showed the resync it runs');

    await c.waitForStates('PRIM', 'SECOND', 60_000);
    const [, b2] = await bothConform(c, 'in sync');
    assert.notEqual(b2.volumes[0]?.lastResync, null, 'beta keeps no lastResync after its resync');

    const verify = await c.alpha.postOk<{ differingBytes: number }>('/api/v1/volumes/vol0/verify', { resync: false });
    assert.equal(verify.differingBytes, 0, 'the copies differ after the initial sync');
    const [afterVerify] = await bothConform(c, 'after a verify');

    const swap = await c.alpha.post('/api/v1/pools/pool0/swap', {});
    assert.equal(swap.status, 200, `swap: HTTP ${swap.status} ${JSON.stringify(swap.body)}`);
    await c.waitForStates('SECOND', 'PRIM', 30_000);
    const [, b3] = await bothConform(c, 'after a swap');
    assert.equal(b3.clusterState?.pools[0]?.owner, 'beta');

    c.cutLink();
    await c.waitFor((v) => v.beta?.state === 'ALONE' && v.alpha?.state === 'WAIT', 20_000, 'beta ALONE and alpha WAIT after the cut');
    await bothConform(c, 'with the sync link cut');
    c.restoreLink();
    await c.waitForStates('SECOND', 'PRIM', 60_000);
    await bothConform(c, 'after the reconnect');

    const sampled = await sampler.stop();
    t.diagnostic(`${sampled} statuses sampled along the way, all matching`);
    assert.ok(sampled >= 20, `only ${sampled} statuses sampled`);

    // the optional and nullable branches this scenario is there to reach
    const wanted = [
      '#/$defs/resync', '#/properties/peerApi', '#/$defs/clusterState/properties/heartbeatLinks', '#/$defs/heartbeatLink',
      '#/$defs/pool/properties/floatingIps/items', '#/$defs/pool/properties/exports/items',
      '#/$defs/activityEntry/properties/pool', '#/$defs/activityEntry/properties/ms', '#/$defs/activityEntry/properties/ok',
      '#/$defs/clusterState/properties/heartbeat/additionalProperties',
    ];
    assert.deepEqual(wanted.filter((w) => !reached.has(w)), [], 'parts of the schema no live status reached');
    assertSchemaBites(afterVerify, t);
  });
});
