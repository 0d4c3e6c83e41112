// No false failover under load (docs/cluster.md, "Fault injection"): two real
// nodes and a real witness, fio saturating the pool's address, and the
// primary's disk made to hang for several seconds through the fault-injection
// API. Its main thread is blocked all that time, yet the heartbeat worker keeps
// the peer convinced it is alive: no peer-down, no takeover, and the writes are
// late but not failed. A control shows the same setup does fail over a node
// whose main thread stays silent beyond mainStallMs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test, type TestContext } from 'node:test';
import {
  freePort, httpJson, sha256File, sleep, startCluster, type Cluster, type NodeStatus, type TandemNode, type VolumeStatus,
} from '../helpers/cluster';
import { describeFio, qemuIoExpect, startFio, type FioJob, type RunningFio } from '../helpers/fio';
import { NbdClient } from '../helpers/nbd-client';
import { startWitness, type WitnessProcess } from '../helpers/witness-process';

const POOL_HOST = '127.0.0.12';
const WITNESS_HOST = '127.0.0.6';
const HEARTBEAT_INTERVAL_MS = 100;
const HEARTBEAT_TIMEOUT_MS = 600;
/** over 6 × the heartbeat timeout, under the default mainStallMs (10 000) */
const STALL_MS = 4000;
const STALL_API = '/api/v1/faults/disk-stall';

type Activity = NonNullable<NodeStatus['clusterState']>['activity'][number];

interface Sample {
  readonly at: number;
  readonly tookMs: number;
  readonly status?: NodeStatus;
  readonly error?: string;
}

/** GET status every intervalMs (one request at a time) until stopped; keeps what it saw. */
function startPoller(n: TandemNode, intervalMs: number): { samples: Sample[]; stop: () => Promise<void> } {
  const samples: Sample[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const at = Date.now();
      try {
        const r = await httpJson<NodeStatus>('GET', n.addr.api.host, n.addr.api.port, '/api/v1/status', undefined, 20_000);
        if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`);
        samples.push({ at, tookMs: Date.now() - at, status: r.body });
      } catch (e) {
        samples.push({ at, tookMs: Date.now() - at, error: (e as Error).message });
      }
      await sleep(Math.max(0, intervalMs - (Date.now() - at)));
    }
  })();
  return { samples, stop: async () => { stopped = true; await loop; } };
}

const activityKey = (a: Activity): string => `${a.at}|${a.event}|${a.message}`;

/** Activity entries in the samples that were not in `before`, in order of first sight. */
function newActivity(samples: readonly Sample[], before: ReadonlySet<string>): Activity[] {
  const seen = new Map<string, Activity>();
  for (const s of samples) {
    for (const a of s.status?.clusterState?.activity ?? []) {
      const k = activityKey(a);
      if (!before.has(k) && !seen.has(k)) seen.set(k, a);
    }
  }
  return [...seen.values()];
}

async function activityKeys(n: TandemNode): Promise<Set<string>> {
  return new Set((await n.status()).clusterState?.activity.map(activityKey) ?? []);
}

/** Waits for PRIM/SECOND with nothing out of sync on either side. */
function waitInSync(c: Cluster, timeoutMs: number): Promise<{ alpha: VolumeStatus | undefined; beta: VolumeStatus | undefined }> {
  return c.waitFor((v) => v.alpha?.state === 'PRIM' && v.beta?.state === 'SECOND' &&
    v.alpha.outOfSyncBytes === 0 && v.beta.outOfSyncBytes === 0 && v.alpha.resync === null && v.beta.resync === null,
  timeoutMs, 'alpha PRIM and beta SECOND, nothing out of sync, no resync running');
}

/** fio's worst total latency of a job's writes, in ms */
function maxWriteLatencyMs(j: FioJob): number {
  const w = j.write as FioJob['write'] & { lat_ns?: { max?: number } };
  return (w.lat_ns?.max ?? 0) / 1e6;
}

/** A cluster with a witness, the pool on its own address, and fault injection on alpha. */
async function setUp(prefix: string, alphaMainStallMs?: number): Promise<{ c: Cluster; witness: WitnessProcess | undefined; poolUri: string; poolPort: number }> {
  const poolPort = await freePort(POOL_HOST);
  const witnessPort = await freePort(WITNESS_HOST);
  const c = await startCluster({
    size: '64M', start: false, prefix,
    heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    fencing: { policy: 'witness', witness: `${WITNESS_HOST}:${witnessPort}` },
    pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', nbdListen: `${POOL_HOST}:${poolPort}` }],
    extraConfig: (node) => (node === 'alpha' ? { faults: { enabled: true } } : {}),
  });
  let witness: WitnessProcess | undefined;
  try {
    if (alphaMainStallMs !== undefined) {
      // the helper writes the heartbeat section (with the links it chose): adjust one key in alpha's file
      const cfg = JSON.parse(fs.readFileSync(c.alpha.configPath, 'utf8')) as { heartbeat: Record<string, unknown> };
      cfg.heartbeat.mainStallMs = alphaMainStallMs;
      fs.writeFileSync(c.alpha.configPath, JSON.stringify(cfg, null, 2) + '\n');
    }
    witness = await startWitness(c.dir, WITNESS_HOST, witnessPort, c);
    await Promise.all(c.nodes.map((n) => n.start()));
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    return { c, witness, poolUri: `nbd://${POOL_HOST}:${poolPort}/vol0`, poolPort };
  } catch (e) {
    annotate(e, c, witness);
    await tearDown(c, witness);
    throw e;
  }
}

/** Appends both nodes' logs and the witness's output to a failure. */
function annotate(e: unknown, c: Cluster, witness: WitnessProcess | undefined): void {
  if (e instanceof Error && !e.message.includes('--- alpha log ---')) {
    e.message += `\n${c.logs(80)}\n--- witness ---\n${witness?.output() ?? '(not started)'}`;
  }
}

/** Ends the witness and the nodes (by their own handles) and removes the cluster's directory. */
async function tearDown(c: Cluster, witness: WitnessProcess | undefined): Promise<void> {
  await witness?.stop();
  await c.cleanup();
}

/** POSTs the stall; resolves with the time the answer took and when it came. */
async function stallAlpha(c: Cluster, ms: number): Promise<{ sentAt: number; answeredAt: number }> {
  const sentAt = Date.now();
  const r = await httpJson<{ ok: boolean; stallMs: number }>('POST', c.alpha.addr.api.host, c.alpha.addr.api.port, STALL_API, { ms }, 10_000);
  const answeredAt = Date.now();
  assert.equal(r.status, 200, `the stall request failed: ${JSON.stringify(r.body)}`);
  assert.deepEqual(r.body, { ok: true, stallMs: ms });
  return { sentAt, answeredAt };
}

test('the primary\'s disk hangs 4 s under a saturating fio load: heartbeats keep flowing, the peer does not take over, writes are late but not failed', { timeout: 180_000 }, async (t: TestContext) => {
  const { c, witness, poolUri } = await setUp('tandem-no-false-failover-');
  let fio: RunningFio | undefined;
  const pollers: Array<{ stop: () => Promise<void> }> = [];
  try {
    // the endpoint: off where the config does not enable it, bounded where it does
    const off = await httpJson<{ error: { code: string } }>('POST', c.beta.addr.api.host, c.beta.addr.api.port, STALL_API, { ms: 100 });
    assert.equal(off.status, 404);
    assert.equal(off.body.error.code, 'ERR_FAULTS_DISABLED');
    for (const ms of [0, 60_001, 1.5, '100', null]) {
      const bad = await httpJson<{ error: { code: string } }>('POST', c.alpha.addr.api.host, c.alpha.addr.api.port, STALL_API, { ms });
      assert.equal(bad.status, 400, `ms ${JSON.stringify(ms)} was accepted`);
    }
    const wrongMethod = await httpJson('GET', c.alpha.addr.api.host, c.alpha.addr.api.port, STALL_API);
    assert.equal(wrongMethod.status, 405);

    const beforeBeta = await activityKeys(c.beta);
    const beforeAlpha = await activityKeys(c.alpha);
    const alphaMark = c.alpha.log().length;
    const betaMark = c.beta.log().length;

    const fioStart = Date.now();
    fio = startFio([
      '--name=load', '--ioengine=nbd', `--uri=${poolUri}`, '--rw=randwrite', '--bs=4k', '--iodepth=32', '--numjobs=2',
      '--time_based', '--runtime=10', '--randseed=20261124',
    ], { timeoutMs: 60_000 });
    const betaPoll = startPoller(c.beta, 100);
    pollers.push(betaPoll);
    const alphaPoll = startPoller(c.alpha, 100);
    pollers.push(alphaPoll);
    await c.waitFor((v) => (v.alpha?.counters.writes ?? 0) > 1000, 10_000, 'fio\'s writes on alpha');
    await sleep(Math.max(0, fioStart + 2000 - Date.now()));

    const { sentAt, answeredAt } = await stallAlpha(c, STALL_MS);
    // the API answers before the stall starts; it starts at fio's next request, within ms under this load.
    // A request sent at once could be served before that request arrives, so wait a little first.
    await sleep(200);
    const probe = await httpJson('GET', c.alpha.addr.api.host, c.alpha.addr.api.port, '/api/v1/status', undefined, 20_000);
    const probeTook = Date.now() - answeredAt;
    assert.equal(probe.status, 200);
    t.diagnostic(`stall of ${STALL_MS} ms requested ${sentAt - fioStart} ms into fio; the API answered in ${answeredAt - sentAt} ms; a status request right after took ${probeTook} ms`);

    const r = await fio.done;
    const fioEnd = Date.now();
    await sleep(500);
    await betaPoll.stop();
    await alphaPoll.stop();

    // fio: every write completed, some only after the stall
    assert.equal(r.code, 0, `fio failed:\n${describeFio(r)}`);
    assert.equal(r.jobs.length, 2, `expected two fio jobs:\n${describeFio(r)}`);
    for (const j of r.jobs) {
      assert.equal(j.error, 0, describeFio(r));
      assert.equal(j.total_err ?? 0, 0, describeFio(r));
      assert.ok(j.write.total_ios > 0, `a fio job wrote nothing:\n${describeFio(r)}`);
    }
    const worst = Math.max(...r.jobs.map(maxWriteLatencyMs));
    const ios = r.jobs.reduce((n, j) => n + j.write.total_ios, 0);
    t.diagnostic(`fio: ${ios} writes of 4 KiB in ${fioEnd - fioStart} ms, none failed; worst write latency ${worst.toFixed(0)} ms`);

    // the stall happened: alpha's API did not answer and the writes waited
    assert.ok(answeredAt - sentAt < 1000, `the stall request took ${answeredAt - sentAt} ms to answer: it should answer before the stall`);
    assert.ok(probeTook >= STALL_MS - 1000, `a status request during the stall took only ${probeTook} ms: the stall did not block alpha`);
    assert.ok(worst >= STALL_MS - 1000, `fio's worst write latency was ${worst.toFixed(0)} ms: the writes did not wait for the stall`);

    // beta: the peer stayed up, the pool stayed alpha's, nothing was started against it
    const stallEnd = answeredAt + probeTook;
    const betaOk = betaPoll.samples.filter((s) => s.status !== undefined);
    const betaDuring = betaOk.filter((s) => s.at >= answeredAt && s.at + s.tookMs <= stallEnd);
    for (const s of betaOk) {
      const cs = s.status?.clusterState;
      assert.equal(cs?.peer.up, true, `beta saw alpha down at +${s.at - fioStart} ms`);
      assert.equal(cs?.pools[0]?.owner, 'alpha', `beta saw pool0 owned by ${cs?.pools[0]?.owner} at +${s.at - fioStart} ms`);
    }
    const betaEvents = newActivity(betaPoll.samples, beforeBeta);
    const bad = betaEvents.filter((a) => ['peer-down', 'takeover', 'claim-start', 'fence-start'].includes(a.event));
    assert.deepEqual(bad, [], 'beta acted against alpha');
    assert.ok(betaDuring.length >= 10, `only ${betaDuring.length} answers from beta during the stall`);
    const first = betaDuring[0]?.status?.clusterState?.heartbeat.accepted ?? 0;
    const last = betaDuring.at(-1)?.status?.clusterState?.heartbeat.accepted ?? 0;
    const span = (betaDuring.at(-1)?.at ?? 0) - (betaDuring[0]?.at ?? 0);
    t.diagnostic(`beta: ${betaOk.length} answers (${betaPoll.samples.length - betaOk.length} failed), ${betaDuring.length} during the stall; ` +
      `${last - first} heartbeats accepted from alpha over ${span} ms of it; its new activity: ${betaEvents.map((a) => a.event).join(', ') || 'none'}`);
    assert.ok(last - first >= span / HEARTBEAT_INTERVAL_MS / 2, `beta accepted ${last - first} heartbeats in ${span} ms of the stall`);

    // alpha: the pool stayed ACTIVE, and the worker never went silent
    const alphaOk = alphaPoll.samples.filter((s) => s.status !== undefined);
    for (const s of alphaOk) {
      const p = s.status?.clusterState?.pools[0];
      assert.equal(p?.owner, 'alpha', `alpha saw pool0 owned by ${p?.owner}`);
      assert.equal(p?.phase, 'ACTIVE', `alpha's pool0 was ${p?.phase} (${p?.reason}) at +${s.at - fioStart} ms`);
    }
    const alphaEvents = newActivity(alphaPoll.samples, beforeAlpha);
    assert.deepEqual(alphaEvents.filter((a) => ['peer-down', 'suspended', 'deactivate'].includes(a.event)), [], 'alpha lost the pool or its peer');
    const longest = Math.max(...alphaPoll.samples.map((s) => s.tookMs));
    const after = await c.alpha.status();
    assert.equal(after.clusterState?.heartbeat.stalledTicks, 0, 'alpha\'s heartbeat worker went silent');
    assert.equal(after.clusterState?.pools[0]?.phase, 'ACTIVE');
    const relinked = (c.alpha.logSince(alphaMark).match(/peer disconnected/g) ?? []).length + (c.beta.logSince(betaMark).match(/peer disconnected/g) ?? []).length;
    t.diagnostic(`alpha: ${alphaOk.length} answers, the longest took ${longest} ms; new activity: ${alphaEvents.map((a) => a.event).join(', ') || 'none'}; ` +
      `sync link drops logged: ${relinked}`);

    // both copies identical once the writes are flushed and the copies in sync
    await qemuIoExpect(poolUri, ['flush']);
    const syncFrom = Date.now();
    const v = await waitInSync(c, 60_000);
    assert.ok((v.alpha?.counters.writeBytes ?? 0) > 0, 'alpha counted no writes');
    const ha = sha256File(c.alpha.backingPath);
    const hb = sha256File(c.beta.backingPath);
    assert.equal(hb, ha, 'the copies differ');
    t.diagnostic(`in sync ${Date.now() - syncFrom} ms after the flush; both copies sha256 ${ha.slice(0, 16)}…`);
  } catch (e) {
    annotate(e, c, witness);
    throw e;
  } finally {
    fio?.kill();
    await fio?.done;
    for (const p of pollers) await p.stop();
    await tearDown(c, witness);
  }
});

test('control: with mainStallMs under the stall, the same 4 s hang does make beta take over', { timeout: 120_000 }, async (t: TestContext) => {
  // mainStallMs may not be below timeoutMs (600); 1500 leaves the worker silent for the last 2.5 s of the stall
  const { c, witness, poolPort } = await setUp('tandem-no-false-failover-control-', 1500);
  let client: NbdClient | undefined;
  let writing = true;
  let writer: Promise<void> = Promise.resolve();
  try {
    const beforeBeta = await activityKeys(c.beta);
    // one client writing through the pool's address: the stall needs I/O to fall on
    client = await NbdClient.connect(POOL_HOST, poolPort, { exportName: 'vol0' });
    const nbd = client;
    const block = Buffer.alloc(4096, 0x5a);
    let writes = 0;
    writer = (async () => {
      for (let i = 0; writing; i = (i + 1) % 1024) {
        try {
          await nbd.write(i * 4096, block);
          writes++;
        } catch {
          return; // alpha lost the pool: its writes fail, as they should
        }
      }
    })();
    await c.waitFor((v) => (v.alpha?.counters.writes ?? 0) > 100, 10_000, 'the client\'s writes on alpha');

    const { answeredAt } = await stallAlpha(c, STALL_MS);
    const betaPoll = startPoller(c.beta, 100);
    let samples: Sample[] = [];
    const deadline = Date.now() + 20_000;
    let taken: Activity | undefined;
    try {
      while (Date.now() < deadline) {
        await sleep(100);
        taken = newActivity(betaPoll.samples, beforeBeta).find((a) => a.event === 'takeover');
        const owner = betaPoll.samples.at(-1)?.status?.clusterState?.pools[0]?.owner;
        if (taken !== undefined && owner === 'beta') break;
      }
    } finally {
      await betaPoll.stop();
      samples = betaPoll.samples;
    }
    const events = newActivity(samples, beforeBeta);
    const down = events.find((a) => a.event === 'peer-down');
    const since = (a: Activity | undefined): string => (a === undefined ? 'never' : `${Date.parse(a.at) - answeredAt} ms`);
    t.diagnostic(`after the stall request (${writes} writes before it): beta saw peer-down at ${since(down)}, took over at ${since(taken)}; ` +
      `beta's new activity: ${events.map((a) => a.event).join(', ')}`);
    assert.ok(down !== undefined, 'beta never saw alpha down');
    assert.ok(taken !== undefined, 'beta never took the pool over');
    assert.equal(samples.at(-1)?.status?.clusterState?.pools[0]?.owner, 'beta');
    // the silence came from alpha's worker, after mainStallMs of a blocked main thread
    assert.ok(Date.parse(down.at) - answeredAt >= 1500, `peer-down ${Date.parse(down.at) - answeredAt} ms after the stall began: before mainStallMs`);
    const alpha = await c.alpha.status();
    assert.ok((alpha.clusterState?.heartbeat.stalledTicks ?? 0) > 0, 'alpha\'s worker never stopped sending');
  } catch (e) {
    annotate(e, c, witness);
    throw e;
  } finally {
    writing = false;
    client?.destroy();
    await writer;
    await tearDown(c, witness);
  }
});
