// The split-brain checker (fencing.checkAddresses, docs/cluster.md): a node that
// cannot reach its gateway may be the side that is cut off, so it takes nothing
// over while that lasts, whatever the policy says. The gateway is an address
// from 198.18.0.0/15 made unreachable by a blackhole route on this host, then
// reachable by putting it on lo: no packet leaves the machine either way.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { sleep, withCluster, type NodeStatus, type TandemNode } from '../helpers/cluster';

const run = promisify(execFile);
const GATEWAY = '198.18.77.1';

type PoolView = NonNullable<NodeStatus['clusterState']>['pools'][number];

async function vol0Pool(n: TandemNode): Promise<PoolView | undefined> {
  return (await n.status()).clusterState?.pools.find((p) => p.name === 'vol0');
}

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}

test('a node that cannot reach its gateway does not take over when its peer dies; it does once the gateway answers', { timeout: 120_000 }, async (t) => {
  await ip('route', 'add', 'blackhole', `${GATEWAY}/32`);
  let onLo = false;
  try {
    await withCluster({
      size: '16M', prefix: 'tandem-isolation-', fencing: { policy: 'ignore' },
      // only beta checks: alpha is the one that dies
      extraConfig: (n) => (n === 'beta' ? { fencing: { policy: 'ignore', checkAddresses: [GATEWAY], checkIntervalMs: 100, checkTimeoutMs: 200 } } : {}),
    }, async (c) => {
      await c.waitForStates('PRIM', 'SECOND', 60_000);
      await c.alpha.kill9();
      const killedAt = Date.now();
      // the lease is 600 ms: a takeover would come well within this
      await sleep(3000);
      const p = await vol0Pool(c.beta);
      assert.equal(p?.owner, 'alpha', `beta took nothing over (${JSON.stringify(p)})`);
      assert.notEqual(p?.phase, 'ACTIVE');
      assert.match(p?.reason ?? '', /gateway|isolated/, 'the reason names the check');
      assert.notEqual((await c.beta.volume()).role, 'PRIMARY');
      const activity = (await c.beta.status()).clusterState?.activity ?? [];
      assert.ok(activity.some((e) => e.message.includes(GATEWAY)), 'the activity log says the gateway does not answer');

      // the gateway answers: the check clears and the policy (ignore) takes over
      await ip('addr', 'add', `${GATEWAY}/32`, 'dev', 'lo');
      onLo = true;
      const deadline = Date.now() + 20_000;
      while ((await vol0Pool(c.beta))?.phase !== 'ACTIVE') {
        assert.ok(Date.now() < deadline, `beta took over once the gateway answered: ${JSON.stringify(await vol0Pool(c.beta))}`);
        await sleep(100);
      }
      t.diagnostic(`beta took over ${Date.now() - killedAt} ms after the kill (the gateway answered after 3000 ms)`);
      assert.equal((await c.beta.volume()).role, 'PRIMARY');
    });
  } finally {
    if (onLo) await ip('addr', 'del', `${GATEWAY}/32`, 'dev', 'lo').catch(() => undefined);
    await ip('route', 'del', 'blackhole', `${GATEWAY}/32`).catch(() => undefined);
  }
});
