// The `fence` policy with real node processes (docs/cluster.md, fencing table):
// a fence command that fails means no takeover and writes that fail; one that
// succeeds means the survivor takes the pool over.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { NbdClient } from '../helpers/nbd-client';
import { freePort, sleep, withCluster, type Cluster } from '../helpers/cluster';

const POOL_HOST = '127.0.0.10';

/** A fence script that logs each call to `calls` and exits with `code` (after killing the pid in `pidFile`, if given). */
function fenceScript(dir: string, name: string, code: number, pidFile?: string): { path: string; calls: string } {
  const file = path.join(dir, `${name}.sh`);
  const calls = path.join(dir, `${name}.calls`);
  const kill = pidFile === undefined ? '' : `kill -9 "$(cat '${pidFile}')" 2>/dev/null\n`;
  fs.writeFileSync(file, `#!/bin/sh\necho "$TANDEM_NODE fences $TANDEM_PEER" >> '${calls}'\n${kill}exit ${code}\n`, { mode: 0o755 });
  return { path: file, calls };
}

// the scripts live outside the clusters' directories: they are written before a cluster exists
const fenceDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-fence-scripts-'));
test.after(() => { fs.rmSync(fenceDir, { recursive: true, force: true }); });

const fenceCalls = (calls: string): string[] => (fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8').trim().split('\n') : []);

async function poolOn(c: Cluster, node: 'alpha' | 'beta'): Promise<{ owner: string; phase: string; reason: string | null } | undefined> {
  const s = await c.node(node).status();
  return s.clusterState?.pools[0];
}

test('fence policy, the fence command fails: the secondary does not take over, and the primary\'s writes without its peer fail', { timeout: 120_000 }, async (t) => {
  const poolPort = await freePort(POOL_HOST);
  const alphaScript = fenceScript(fenceDir, 'fail-alpha', 1);
  const betaScript = fenceScript(fenceDir, 'fail-beta', 1);
  const scripts = { alpha: alphaScript, beta: betaScript };
  await withCluster({
    size: '32M', prefix: 'tandem-fence-fail-',
    extraConfig: (n) => ({ fencing: { policy: 'fence', command: [scripts[n].path], commandTimeoutMs: 5000, retryMs: 500 } }),
    pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', nbdListen: `${POOL_HOST}:${poolPort}` }],
  }, async (c) => {
    await c.waitForStates('PRIM', 'SECOND', 60_000);

    // the secondary's view: alpha dies, beta's fence fails (and is retried): no takeover
    await c.alpha.kill9();
    await c.waitFor(() => fenceCalls(betaScript.calls).length >= 2, 15_000, 'beta to run its failing fence command twice');
    const p = await poolOn(c, 'beta');
    assert.equal(p?.owner, 'alpha', 'beta took the pool over without a successful fence');
    assert.notEqual(p?.phase, 'ACTIVE');
    t.diagnostic(`beta after ${fenceCalls(betaScript.calls).length} failed fences: pool ${p?.phase} (${p?.reason ?? ''})`);
    assert.equal((await c.beta.volume()).role, 'SECONDARY');
    await assert.rejects(NbdClient.connect(POOL_HOST, poolPort, { exportName: 'vol0' }), 'nobody may serve the pool');

    // the primary's view: alpha returns and serves again; then beta dies, and alpha's fence fails
    await c.alpha.start();
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    const client = await NbdClient.connect(POOL_HOST, poolPort, { exportName: 'vol0' });
    await client.write(0, Buffer.alloc(4096, 1));
    await c.beta.kill9();
    let failedAt = 0;
    for (let i = 0; i < 200 && failedAt === 0; i++) {
      try {
        await client.write(4096 * (i + 1), Buffer.alloc(4096, 2));
        await sleep(20);
      } catch {
        failedAt = Date.now();
      }
    }
    assert.notEqual(failedAt, 0, 'alpha acknowledged writes its peer lacks although the fence failed');
    assert.ok(fenceCalls(alphaScript.calls).length >= 1, 'alpha never ran its fence command');
    const pa = await poolOn(c, 'alpha');
    t.diagnostic(`alpha after its fence failed: pool ${pa?.phase} (${pa?.reason ?? ''}); volume suspended: ${(await c.alpha.volume()).suspended ?? 'no'}`);
    await client.disconnect().catch(() => undefined);
  });
});

test('fence policy, the fence command succeeds: the secondary fences the primary and takes the pool over', { timeout: 120_000 }, async (t) => {
  const poolPort = await freePort(POOL_HOST);
  const pidFile = path.join(fenceDir, 'alpha.pid');
  const scripts = { alpha: fenceScript(fenceDir, 'ok-alpha', 0), beta: fenceScript(fenceDir, 'ok-beta', 0, pidFile) };
  const betaScript = scripts.beta;
  await withCluster({
    size: '32M', prefix: 'tandem-fence-ok-',
    extraConfig: (n) => ({ fencing: { policy: 'fence', command: [scripts[n].path], commandTimeoutMs: 5000, retryMs: 500 } }),
    pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', nbdListen: `${POOL_HOST}:${poolPort}` }],
  }, async (c) => {
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    fs.writeFileSync(pidFile, String(c.alpha.pid));
    const client = await NbdClient.connect(POOL_HOST, poolPort, { exportName: 'vol0' });
    await client.write(0, Buffer.alloc(4096, 0x5a));
    await client.disconnect();
    const killedAt = Date.now();
    await c.alpha.kill9();
    const v = await c.waitFor((b) => b.beta?.role === 'PRIMARY', 15_000, 'beta PRIMARY after a successful fence');
    t.diagnostic(`kill -9 alpha to beta PRIMARY: ${Date.now() - killedAt} ms; fence calls: ${fenceCalls(betaScript.calls).join('; ')}`);
    assert.equal(fenceCalls(betaScript.calls).length, 1, 'one successful fence is enough');
    assert.equal(v.beta?.state, 'ALONE');
    const again = await NbdClient.connect(POOL_HOST, poolPort, { exportName: 'vol0' });
    assert.ok((await again.read(0, 4096)).equals(Buffer.alloc(4096, 0x5a)), 'the write acknowledged by alpha is on beta');
    await again.write(4096, Buffer.alloc(4096, 0x6b));
    await again.disconnect();
  });
});

