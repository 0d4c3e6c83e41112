// Failover time: two `tandem node start` processes and a `tandem witness`,
// default heartbeat timers, one pool exported on its own loopback address. A
// client writes 4 KiB blocks through that address; the pool's owner is killed
// with SIGKILL; the time to the first write acknowledged again through the same
// address is one sample. The killed node restarts and resyncs before the next
// run, which kills the new owner: the pool moves back and forth.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { NbdClient } from '../test/helpers/nbd-client';
import { startWitness } from '../test/helpers/witness-process';
import { BenchCluster, getJson, nodeToken, sleep, type BenchNode } from './cluster';
import { freePort, track } from './procs';

export const failoverId = 'failover';

const POOL_HOST = '127.0.0.10';
const WITNESS_HOST = '127.0.0.4';
const BLOCK = 4096;
const VOLUME_BYTES = 64 * 1024 * 1024;

export interface FailoverSample {
  /** kill → first acknowledged write, per run */
  readonly ms: number[];
  readonly notes: string[];
}

interface PoolView { owner: string; phase: string }

async function pool(n: BenchNode): Promise<PoolView | undefined> {
  try {
    const s = await getJson<{ clusterState?: { pools: PoolView[] } }>(n.host, n.ports.api, '/api/v1/status', 2000, nodeToken(n.dataDir));
    return s.clusterState?.pools[0];
  } catch {
    return undefined;
  }
}

/** Waits until `owner` serves the pool and the other node is its in-sync SECONDARY. */
async function settled(c: BenchCluster, owner: BenchNode, other: BenchNode, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [p, vo, vs] = await Promise.all([pool(owner), owner.volume().catch(() => undefined), other.volume().catch(() => undefined)]);
    if (p?.owner === owner.name && p.phase === 'ACTIVE' && vo?.state === 'PRIM' && vs?.state === 'SECOND' && vo.resync === null && vs.resync === null) return;
    if (Date.now() > deadline) throw new Error(`${owner.name} did not settle as owner with ${other.name} in sync:\n${c.logs()}`);
    await sleep(100);
  }
}

export async function measureFailover(work: string, runs: number, log: (s: string) => void): Promise<FailoverSample> {
  const dir = fs.mkdtempSync(path.join(work, 'failover-'));
  const [witnessPort, poolPort] = [await freePort(WITNESS_HOST), await freePort(POOL_HOST)];
  const c = await BenchCluster.create(dir, { size: VOLUME_BYTES, cacheMode: 'write-back', checksumResync: true },
    { witness: `${WITNESS_HOST}:${witnessPort}`, poolNbd: `${POOL_HOST}:${poolPort}` });
  const { id, secret } = c.secrets();
  const witness = await startWitness(dir, WITNESS_HOST, witnessPort, { clusterId: id, secret });
  track(witness.child, 'tandem witness');
  const ms: number[] = [];
  const notes: string[] = [];
  try {
    await Promise.all([c.alpha.start(), c.beta.start()]);
    let owner = c.alpha;
    let other = c.beta;
    await settled(c, owner, other, 60_000);
    for (let run = 0; run < runs; run++) {
      let client = await NbdClient.connectUntil(POOL_HOST, poolPort, Date.now() + 10_000, { exportName: 'vol0', stepMs: 10 });
      const payload = crypto.randomBytes(BLOCK);
      // a steady load before the kill
      for (let i = 0; i < 200; i++) await client.write((i % (VOLUME_BYTES / BLOCK)) * BLOCK, payload);
      const killed = process.hrtime.bigint();
      await owner.kill();
      let failed = 0;
      for (;;) {
        try {
          await client.write(0, payload);
          break;
        } catch {
          failed++;
          await client.disconnect().catch(() => undefined);
          client = await NbdClient.connectUntil(POOL_HOST, poolPort, Date.now() + 30_000, { exportName: 'vol0', stepMs: 10 });
        }
      }
      const sample = Number(process.hrtime.bigint() - killed) / 1e6;
      ms.push(sample);
      log(`failover ${run + 1}/${runs}: kill -9 ${owner.name} → write acknowledged through ${other.name}: ${sample.toFixed(0)} ms (${failed} failed attempts)`);
      await client.disconnect().catch(() => undefined);
      await owner.start();
      [owner, other] = [other, owner];
      await settled(c, owner, other, 60_000);
    }
    const sorted = [...ms].sort((a, b) => a - b);
    notes.push(`${runs} runs: median ${(sorted[Math.floor((sorted.length - 1) / 2)] ?? 0).toFixed(0)} ms, worst ${(sorted.at(-1) ?? 0).toFixed(0)} ms, best ${(sorted[0] ?? 0).toFixed(0)} ms`);
    return { ms, notes };
  } finally {
    await witness.stop();
    await c.destroy();
  }
}
