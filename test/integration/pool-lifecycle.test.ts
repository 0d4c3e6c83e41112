// The pool lifecycle and the cluster configuration document (docs/pools.md,
// "Lifecycle" and "The cluster configuration"), with two real node processes on
// loopback: a pool created on one node reaches the other over the sync link,
// both create their copies and the preferred node serves it; export releases
// it on both and keeps the data, import brings it back; unmanage leaves it to
// itself; remove moves its files aside; a configuration changed on both nodes
// apart is reported and settled by a push.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { NbdClient } from '../helpers/nbd-client';
import { freePort, sleep, withCluster, type Cluster, type NodeStatus, type TandemNode } from '../helpers/cluster';
import { apiOf, describeRun, tandem } from '../helpers/tandem-cli';

const P1_IP = '127.0.0.40';
const P2_IP = '127.0.0.48';
const MiB = 1024 * 1024;

type PoolView = NonNullable<NodeStatus['clusterState']>['pools'][number];

async function pool(n: TandemNode, name: string): Promise<PoolView | undefined> {
  return (await n.status()).clusterState?.pools.find((p) => p.name === name);
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`);
    await sleep(100);
  }
}

async function cli(args: string[], expect = 0): Promise<string> {
  const r = await tandem(args, { timeoutMs: 180_000 });
  assert.equal(r.code, expect, describeRun(args, r));
  return r.stdout + r.stderr;
}

async function configOf(n: TandemNode): Promise<NonNullable<NodeStatus['config']>> {
  const c = (await n.status()).config;
  assert.ok(c !== undefined, `${n.name} reports its configuration`);
  return c;
}

/** Both nodes hold the same document (same hash), at epoch `epoch`. */
async function agree(c: Cluster, epoch: number): Promise<void> {
  await until(`both nodes at configuration epoch ${epoch}`, 20_000, async () => {
    const [a, b] = [await configOf(c.alpha), await configOf(c.beta)];
    return a.epoch === epoch && b.epoch === epoch && a.hash === b.hash;
  });
}

function pattern(seed: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) b.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return b;
}

test('pool create on one node reaches the other; export, import, unmanage, manage and remove, each taking effect on both', { timeout: 300_000 }, async () => {
  const port = await freePort(P1_IP);
  await withCluster({
    size: '16M', prefix: 'tandem-lifecycle-', fencing: { policy: 'ignore' },
    extraConfig: () => ({ floatingIp: { driver: 'loopback' } }),
  }, async (c) => {
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    await agree(c, 1);
    const api = apiOf(c.alpha);

    // created on alpha, preferring beta: beta serves it once both copies exist
    const out = await cli(['pool', 'create', 'p1', '--volume', 'v1:8M', '--ip', `${P1_IP}/8`, '--port', String(port), '--node', 'beta', '--api', api]);
    assert.match(out, /pool p1 created \(configuration epoch 2\)/);
    await agree(c, 2);
    await until('p1 ACTIVE on beta, STANDBY on alpha', 60_000, async () => (await pool(c.beta, 'p1'))?.phase === 'ACTIVE' && (await pool(c.alpha, 'p1'))?.phase === 'STANDBY');
    await until('v1 in sync', 60_000, async () => {
      const [a, b] = [(await c.alpha.status()).volumes.find((v) => v.name === 'v1'), (await c.beta.status()).volumes.find((v) => v.name === 'v1')];
      return a?.state === 'SECOND' && b?.state === 'PRIM' && b.outOfSyncBytes === 0;
    });
    assert.ok(fs.existsSync(path.join(c.alpha.dataDir, 'volumes', 'v1.img')), 'alpha created its copy');
    assert.equal((await pool(c.alpha, 'p1'))?.control, 'managed');

    // data through the pool's address
    const data = pattern(7, 2 * MiB);
    let client = await NbdClient.connectUntil(P1_IP, port, Date.now() + 10_000, { exportName: 'v1' });
    await client.write(MiB, data);
    await client.flush();
    await client.disconnect();

    // export, asked of the node that does not serve it: beta releases, both say EXPORTED
    assert.match(await cli(['pool', 'export', 'p1', '--api', api]), /pool p1 exported/);
    await agree(c, 3);
    await until('p1 EXPORTED on beta with v1 SECONDARY', 60_000, async () => {
      const s = await c.beta.status();
      return s.clusterState?.pools.find((p) => p.name === 'p1')?.phase === 'EXPORTED' && s.volumes.find((v) => v.name === 'v1')?.role === 'SECONDARY';
    });
    await assert.rejects(NbdClient.connect(P1_IP, port, { exportName: 'v1' }), 'nobody serves an exported pool');
    assert.equal((await pool(c.alpha, 'p1'))?.phase, 'EXPORTED');

    // import: its owner serves it again, with the data
    assert.match(await cli(['pool', 'import', 'p1', '--api', apiOf(c.beta)]), /pool p1 imported/);
    await until('p1 ACTIVE on beta again', 60_000, async () => (await pool(c.beta, 'p1'))?.phase === 'ACTIVE');
    client = await NbdClient.connectUntil(P1_IP, port, Date.now() + 10_000, { exportName: 'v1' });
    assert.ok((await client.read(MiB, data.length)).equals(data), 'the data survived export and import');
    await client.disconnect();

    // unmanaged: still served, but nothing takes it over when its owner dies
    assert.match(await cli(['pool', 'unmanage', 'p1', '--api', api]), /unmanaged/);
    await agree(c, 5);
    assert.equal((await pool(c.alpha, 'p1'))?.control, 'unmanaged');
    await c.beta.kill9();
    await sleep(3000);
    const p1 = await pool(c.alpha, 'p1');
    assert.notEqual(p1?.phase, 'ACTIVE', `alpha did not take over the unmanaged p1 (${JSON.stringify(p1)})`);
    assert.notEqual((await c.alpha.status()).volumes.find((v) => v.name === 'v1')?.role, 'PRIMARY');
    await c.beta.start();
    // managed again: the cluster serves it from its owner
    assert.match(await cli(['pool', 'manage', 'p1', '--api', api]), /managed again/);
    await until('p1 ACTIVE on beta once managed', 60_000, async () => (await pool(c.beta, 'p1'))?.phase === 'ACTIVE');

    // remove needs it exported first
    const refused = await tandem(['pool', 'remove', 'p1', '--api', api]);
    assert.equal(refused.code, 1, describeRun(['pool', 'remove'], refused));
    assert.match(refused.stderr, /export it first/);
    await cli(['pool', 'export', 'p1', '--api', apiOf(c.beta)]);
    assert.match(await cli(['pool', 'remove', 'p1', '--api', api]), /pool p1 removed/);
    await agree(c, 8);
    for (const n of c.nodes) {
      // the copy leaves status when it starts closing; its files move once it has closed
      await until(`${n.name} forgot p1 and v1, and moved v1's file out of volumes/`, 20_000, async () => {
        const s = await n.status();
        return !s.volumes.some((v) => v.name === 'v1') && !(s.clusterState?.pools ?? []).some((p) => p.name === 'p1')
          && !fs.existsSync(path.join(n.dataDir, 'volumes', 'v1.img'));
      });
      const aside = fs.readdirSync(path.join(n.dataDir, 'removed'));
      assert.equal(aside.length, 1, `${n.name}: one removed volume kept: ${aside.join(', ')}`);
      assert.ok(fs.existsSync(path.join(n.dataDir, 'removed', aside[0] as string, 'v1.img')));
    }

    // the document survives a restart, and vol0 was never disturbed
    await c.alpha.restart();
    await agree(c, 8);
    await c.waitForStates('PRIM', 'SECOND', 60_000);

    // bad input changes nothing
    const bad = await tandem(['pool', 'create', 'p9', '--volume', 'vol0:8M', '--api', api]);
    assert.equal(bad.code, 1, describeRun(['pool', 'create'], bad));
    assert.match(bad.stderr, /unique/);
    const dup = await tandem(['pool', 'create', 'vol0', '--volume', 'x:8M', '--api', api]);
    assert.match(dup.stderr, /exists already/);
    assert.equal((await configOf(c.alpha)).epoch, 8);
  });
});

test('a configuration changed on both nodes apart is reported on both and settled by a push; a node file edit is a change', { timeout: 300_000 }, async () => {
  await withCluster({
    size: '16M', prefix: 'tandem-config-diverged-', fencing: { policy: 'ignore' },
  }, async (c) => {
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    await agree(c, 1);

    // apart: each node makes its own epoch 2
    await c.beta.stop();
    await cli(['pool', 'create', 'pa', '--volume', 'va:4M', '--api', apiOf(c.alpha)]);
    await c.alpha.stop();
    await c.beta.start();
    await cli(['pool', 'create', 'pb', '--volume', 'vb:4M', '--api', apiOf(c.beta)]);
    await until('pb ACTIVE on beta', 60_000, async () => (await pool(c.beta, 'pb'))?.phase === 'ACTIVE');
    await c.alpha.start();
    for (const n of c.nodes) {
      await until(`${n.name} reports the divergence`, 30_000, async () => (await configOf(n)).diverged !== null);
    }
    assert.match((await configOf(c.alpha)).diverged ?? '', /tandem config push/);
    // neither applied the other's
    assert.ok(!(await c.alpha.status()).volumes.some((v) => v.name === 'vb'));
    assert.ok(!(await c.beta.status()).volumes.some((v) => v.name === 'va'));

    // alpha's wins: beta releases and forgets pb, creates va
    assert.match(await cli(['config', 'push', '--api', apiOf(c.alpha)]), /goes to the peer/);
    await agree(c, 3);
    await until('beta holds va and not vb', 60_000, async () => {
      const s = await c.beta.status();
      return s.volumes.some((v) => v.name === 'va') && !s.volumes.some((v) => v.name === 'vb') && !(s.clusterState?.pools ?? []).some((p) => p.name === 'pb');
    });
    assert.equal((await configOf(c.beta)).diverged, null);
    await until('pa ACTIVE on alpha', 60_000, async () => (await pool(c.alpha, 'pa'))?.phase === 'ACTIVE');

    // an operator edits beta's node file: at its restart that is the next epoch, and alpha takes it
    const file = JSON.parse(fs.readFileSync(c.beta.configPath, 'utf8')) as Record<string, unknown>;
    file.volumes = [...(file.volumes as unknown[]), { name: 've', size: '4M' }];
    file.pools = [{ name: 'vol0', volumes: ['vol0'], preferredNode: 'alpha' }, { name: 'pe', volumes: ['ve'], preferredNode: 'beta' }];
    fs.writeFileSync(c.beta.configPath, JSON.stringify(file, null, 2));
    await c.beta.restart();
    await agree(c, 4);
    const doc = (await c.alpha.status()).clusterState?.pools.map((p) => p.name).sort();
    assert.deepEqual(doc, ['pa', 'pe', 'vol0'], 'the edit added pe; pa, made at run time, stays');
  });
});

test('a pool INACTIVE because its port is taken is reattached on the other node, and an INACTIVE pool can be removed', { timeout: 300_000 }, async () => {
  const port = await freePort(P2_IP);
  // another program holds the pool's port on beta's side of the address
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen({ host: P2_IP, port }, resolve));
  try {
    await withCluster({
      size: '16M', prefix: 'tandem-reattach-', fencing: { policy: 'ignore' },
      extraConfig: () => ({ floatingIp: { driver: 'loopback' } }),
    }, async (c) => {
      await c.waitForStates('PRIM', 'SECOND', 60_000);
      await cli(['pool', 'create', 'p2', '--volume', 'v2:4M', '--ip', `${P2_IP}/8`, '--port', String(port), '--node', 'beta', '--api', apiOf(c.beta)]);
      const inactive = await until('p2 INACTIVE on beta', 60_000, async () => {
        const p = await pool(c.beta, 'p2');
        return p?.phase === 'INACTIVE' ? p : undefined;
      });
      assert.match(inactive.reason ?? '', /taken|in use|EADDRINUSE/, 'the reason names the port');
      // reattach is asked of the owner; elsewhere it says whom to ask
      const wrong = await tandem(['pool', 'reattach', 'p2', '--node', 'alpha', '--api', apiOf(c.alpha)]);
      assert.equal(wrong.code, 1, describeRun(['pool', 'reattach'], wrong));
      assert.match(wrong.stderr, /beta/);
      // the other program lets go; the operator moves the pool to alpha
      squatter.close();
      await cli(['pool', 'reattach', 'p2', '--node', 'alpha', '--api', apiOf(c.beta)]);
      await until('p2 ACTIVE on alpha', 60_000, async () => (await pool(c.alpha, 'p2'))?.phase === 'ACTIVE' && (await pool(c.alpha, 'p2'))?.owner === 'alpha');
      const client = await NbdClient.connectUntil(P2_IP, port, Date.now() + 10_000, { exportName: 'v2' });
      await client.write(0, pattern(3, 4096));
      await client.disconnect();

      // make it INACTIVE again on alpha, then remove it as it is
      const squatter2 = net.createServer();
      await cli(['pool', 'export', 'p2', '--api', apiOf(c.alpha)]);
      await new Promise<void>((resolve) => squatter2.listen({ host: P2_IP, port }, resolve));
      try {
        await cli(['pool', 'import', 'p2', '--api', apiOf(c.alpha)]);
        await until('p2 INACTIVE on alpha', 60_000, async () => (await pool(c.alpha, 'p2'))?.phase === 'INACTIVE');
        assert.match(await cli(['pool', 'remove', 'p2', '--api', apiOf(c.alpha)]), /pool p2 removed/);
      } finally {
        squatter2.close();
      }
      for (const n of c.nodes) await until(`${n.name} forgot v2`, 20_000, async () => !(await n.status()).volumes.some((v) => v.name === 'v2'));
    });
  } finally {
    squatter.close();
  }
});
