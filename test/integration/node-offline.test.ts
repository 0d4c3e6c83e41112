// A node leaves the cluster and comes back, with real node processes on loopback
// (docs/cluster.md, "Taking a node offline"): `tandem node offline` moves its pool
// to the peer with no acknowledged write lost; the peer, under policy fence with a
// fence command that always fails, goes on alone after kill -9 of the offline node
// (it needs no fence: the node said it takes nothing), the node restarts still
// offline, and `node online` brings it back. `node remove` and `node add` on the peer.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { NbdClient } from '../helpers/nbd-client';
import { freePort, sleep, withCluster, type Cluster, type TandemNode } from '../helpers/cluster';
import { apiOf, describeRun, tandem } from '../helpers/tandem-cli';

const POOL_HOST = '127.0.0.50';
const MiB = 1024 * 1024;

const scriptDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-offline-fence-'));
test.after(() => { fs.rmSync(scriptDir, { recursive: true, force: true }); });

async function cli(args: string[], expect: number, match?: RegExp): Promise<string> {
  const r = await tandem(args, { timeoutMs: 120_000 });
  assert.equal(r.code, expect, describeRun(args, r));
  const text = r.stdout + r.stderr;
  if (match !== undefined) assert.match(text, match, describeRun(args, r));
  return text;
}

async function membership(n: TandemNode): Promise<{ self: string; peer: string } | undefined> {
  return (await n.status()).clusterState?.membership;
}

async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

async function poolPhase(n: TandemNode): Promise<string> {
  const p = (await n.status()).clusterState?.pools[0];
  return `${p?.owner ?? '?'} ${p?.phase ?? '?'}`;
}

function pattern(seed: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) b.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return b;
}

async function writeAll(port: number, at: number, data: Buffer): Promise<void> {
  const client = await NbdClient.connect(POOL_HOST, port, { exportName: 'vol0' });
  try {
    await client.write(at, data);
    await client.flush();
  } finally {
    await client.disconnect().catch(() => undefined);
  }
}

async function readBack(port: number, at: number, length: number): Promise<Buffer> {
  const client = await NbdClient.connect(POOL_HOST, port, { exportName: 'vol0' });
  try {
    return await client.read(at, length);
  } finally {
    await client.disconnect().catch(() => undefined);
  }
}

test('node offline moves the pool to the peer; the peer needs no fence to go on without it; it restarts offline and node online brings it back; node remove and add', { timeout: 300_000 }, async (t) => {
  const port = await freePort(POOL_HOST);
  const calls = path.join(scriptDir, 'calls');
  const fence = path.join(scriptDir, 'fence.sh');
  // any fence fails: a node that goes on without its peer here does so without one
  fs.writeFileSync(fence, `#!/bin/sh\necho "$TANDEM_NODE fences $TANDEM_PEER" >> '${calls}'\nexit 1\n`, { mode: 0o755 });
  const fenceCalls = (): number => (fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8').trim().split('\n').length : 0);
  await withCluster({
    size: '32M', prefix: 'tandem-offline-',
    extraConfig: () => ({ fencing: { policy: 'fence', command: [fence], commandTimeoutMs: 5000, retryMs: 500 } }),
    pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', nbdListen: `${POOL_HOST}:${port}` }],
  }, async (c: Cluster) => {
    const [alpha, beta] = [apiOf(c.alpha), apiOf(c.beta)];
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    const first = pattern(1, MiB);
    await writeAll(port, 0, first);

    // refusals change nothing
    await cli(['node', 'remove', 'alpha', '--api', beta], 1, /alpha is up: take it offline first/);
    await cli(['node', 'online', '--api', alpha], 0, /alpha is a member/);
    await cli(['node', 'offline', 'extra', '--api', alpha], 2, /node takes offline/);
    assert.equal(await poolPhase(c.alpha), 'alpha ACTIVE');

    // offline: the pool goes to beta (as with swap), then alpha is out, and beta knows it
    const started = Date.now();
    await cli(['node', 'offline', '--api', alpha], 0, /alpha is offline; beta took note/);
    t.diagnostic(`node offline took ${Date.now() - started} ms`);
    assert.deepEqual(await membership(c.alpha), { self: 'offline', peer: 'member' });
    assert.deepEqual(await membership(c.beta), { self: 'member', peer: 'offline' });
    assert.equal(await poolPhase(c.beta), 'beta ACTIVE');
    assert.match(await cli(['status', '--api', beta], 0), /alpha\s+peer, OFFLINE/);
    assert.ok((await readBack(port, 0, MiB)).equals(first), 'the pool on beta holds what alpha acknowledged');
    // nothing moves to an offline node
    await cli(['swap', 'pool0', '--api', beta], 1, /alpha is offline: it takes no pool/);

    // kill -9 of the offline node: beta acknowledges writes alone with no fence (every fence fails here)
    await c.alpha.kill9();
    const second = pattern(2, MiB);
    await writeAll(port, MiB, second);
    await until('beta to see alpha down', 10_000, async () => (await c.beta.status()).clusterState?.peer.up === false);
    const third = pattern(3, MiB);
    await writeAll(port, 2 * MiB, third);
    assert.equal(fenceCalls(), 0, 'nobody ran a fence command');
    assert.equal(await poolPhase(c.beta), 'beta ACTIVE');

    // alpha restarts offline: it takes nothing, and resyncs as the secondary
    await c.alpha.start();
    assert.equal((await membership(c.alpha))?.self, 'offline');
    await c.waitForStates('SECOND', 'PRIM', 60_000);
    assert.equal(await poolPhase(c.alpha), 'beta STANDBY');

    // online: a member again once beta took note; then a swap takes the pool back
    await cli(['node', 'online', '--api', alpha], 0, /alpha is a member again/);
    assert.deepEqual(await membership(c.beta), { self: 'member', peer: 'member' });
    await cli(['swap', 'pool0', '--api', beta], 0);
    await until('alpha to serve pool0', 30_000, async () => (await poolPhase(c.alpha)) === 'alpha ACTIVE');
    const back = await readBack(port, 0, 3 * MiB);
    assert.ok(back.equals(Buffer.concat([first, second, third])), 'every acknowledged write is there after the round trip');

    // remove: alpha leaves, beta removes it; alpha cannot come back until beta adds it
    await cli(['node', 'offline', '--api', alpha], 0);
    await cli(['node', 'remove', 'alpha', '--api', beta], 0, /alpha removed from the cluster/);
    assert.equal((await membership(c.beta))?.peer, 'removed');
    await cli(['node', 'online', '--api', alpha], 1, /beta removed alpha from the cluster/);
    assert.equal((await membership(c.alpha))?.self, 'offline');
    await cli(['node', 'add', 'alpha', '--api', beta], 0, /alpha may come back/);
    await cli(['node', 'online', '--api', alpha], 0, /alpha is a member again/);
    assert.deepEqual(await membership(c.beta), { self: 'member', peer: 'member' });
    assert.equal(fenceCalls(), 0);
  });
});
