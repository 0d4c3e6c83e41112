// Failover between two real node processes and a real witness on loopback
// (docs/cluster.md): kill -9 of the primary during writes, the secondary takes
// the pool over on the pool's own address, and every write the client saw
// acknowledged is there. Timings are printed, not asserted (tests check
// behaviour; `npm run bench` measures).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NbdClient } from '../helpers/nbd-client';
import { freePort, sleep, startCluster, MiB } from '../helpers/cluster';
import { startWitness, type WitnessProcess } from '../helpers/witness-process';

const POOL_HOST = '127.0.0.10';
const WITNESS_HOST = '127.0.0.4';
const BLOCK = 4096;

/** The block's content: its index and the write's sequence number, repeated. */
function pattern(index: number, seq: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  for (let at = 0; at < BLOCK; at += 8) { b.writeUInt32LE(index, at); b.writeUInt32LE(seq, at + 4); }
  return b;
}

test('kill -9 of the primary during writes: the secondary takes the pool over on its address and has every acknowledged write', { timeout: 180_000 }, async (t) => {
  const poolPort = await freePort(POOL_HOST);
  const witnessPort = await freePort(WITNESS_HOST);
  const c = await startCluster({
    size: '64M', start: false, prefix: 'tandem-failover-',
    fencing: { policy: 'witness', witness: `${WITNESS_HOST}:${witnessPort}` },
    pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', nbdListen: `${POOL_HOST}:${poolPort}` }],
  });
  let witness: WitnessProcess | undefined;
  try {
    witness = await startWitness(c.dir, WITNESS_HOST, witnessPort, c);
    await Promise.all(c.nodes.map((n) => n.start()));
    await c.waitForStates('PRIM', 'SECOND', 60_000);

    // a writer through the pool's address: blocks 0, 1, 2, … each acknowledged before the next
    const acked = new Map<number, number>();
    let client = await NbdClient.connectUntil(POOL_HOST, poolPort, Date.now() + 10_000, { exportName: 'vol0' });
    const blocks = (64 * MiB) / BLOCK;
    let seq = 0;
    let killedAt = 0;
    let firstWriteAfterKill = 0;
    let alphaDead = false;
    let failures = 0;
    const writer = (async () => {
      for (;;) {
        const index = seq % blocks;
        const s = ++seq;
        // only a write issued once alpha is gone can have been served by beta
        const afterDeath = alphaDead;
        try {
          await client.write(index * BLOCK, pattern(index, s));
          acked.set(index, s);
          if (afterDeath) { firstWriteAfterKill = Date.now(); return; }
        } catch {
          failures++;
          // the connection died with alpha: reconnect to the same address, to whoever serves it now
          await client.disconnect().catch(() => undefined);
          client = await NbdClient.connectUntil(POOL_HOST, poolPort, Date.now() + 30_000, { exportName: 'vol0' });
        }
      }
    })();
    await sleep(1500);
    assert.ok(acked.size > 100, `only ${acked.size} writes acknowledged before the kill`);
    const before = acked.size;
    killedAt = Date.now();
    await c.alpha.kill9();
    alphaDead = true;
    await writer;
    t.diagnostic(`kill -9 alpha to the first acknowledged write through beta: ${firstWriteAfterKill - killedAt} ms (${failures} failed attempts, ${before} writes before the kill)`);

    const v = await c.volumes();
    assert.equal(v.beta?.role, 'PRIMARY', 'beta took the volume over');
    const status = await c.beta.status();
    assert.equal(status.clusterState?.pools[0]?.owner, 'beta');
    assert.equal(status.clusterState?.pools[0]?.phase, 'ACTIVE');

    // every acknowledged write, read back through the pool's address
    let checked = 0;
    for (const [index, s] of acked) {
      const got = await client.read(index * BLOCK, BLOCK);
      assert.ok(got.equals(pattern(index, s)), `block ${index}: acknowledged write ${s} is missing (holds seq ${got.readUInt32LE(4)})`);
      checked++;
    }
    t.diagnostic(`${checked} acknowledged blocks verified on beta`);
    await client.disconnect();

    // alpha comes back: it stays SECONDARY (no failback by default) and is resynced
    await c.alpha.start();
    await c.waitForStates('SECOND', 'PRIM', 60_000);
  } catch (e) {
    if (e instanceof Error) e.message += `\n${c.logs(60)}\n--- witness ---\n${witness?.output() ?? ''}`;
    throw e;
  } finally {
    await witness?.stop();
    await c.cleanup();
  }
});
