// Applications on a pool (docs/applications.md), with real PostgreSQL from
// Debian on an ext4 filesystem on the mirrored volume (nbdfuse + loop mount),
// two real node processes and a witness on loopback:
// - numbered inserts committed over the pool's floating IP while the owner's
//   daemon and its PostgreSQL are killed with -9: the peer mounts the volume,
//   PostgreSQL recovers on the same address, every committed insert is there;
// - PostgreSQL stopped behind the daemon's back is restarted in place; failing
//   again beyond the restart budget fails the pool over;
// - a start script that fails leaves the pool INACTIVE with its output in
//   status and the filesystem unmounted.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isMounted as mounted } from '../../src/app/filesystem';
import { freePort, sleep, startCluster, type Cluster, type NodeName, type NodeStatus } from '../helpers/cluster';
import { startWitness, type WitnessProcess } from '../helpers/witness-process';

const VIP = '127.0.0.20';
const WITNESS_HOST = '127.0.0.4';
const PASSWORD = 'tandem-test-password';
const PG_BIN = (() => {
  const root = '/usr/lib/postgresql';
  const v = fs.readdirSync(root).filter((x) => fs.existsSync(path.join(root, x, 'bin', 'psql'))).sort((a, b) => Number(b) - Number(a))[0];
  return path.join(root, v as string, 'bin');
})();


/** psql over the floating IP with the superuser's password; resolves with exit code and output */
function psql(port: number, sql: string, timeoutMs = 10_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(path.join(PG_BIN, 'psql'), ['-X', '-q', '-At', '-h', VIP, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGPASSWORD: PASSWORD, PGCONNECT_TIMEOUT: '2' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

interface PoolView { owner: string; phase: string; reason: string | null; filesystem?: { mounted: boolean }; applications?: Array<{ name: string; state: string; restarts: number; output: string; error: string | null }> }

async function pool(c: Cluster, n: NodeName, name: string): Promise<PoolView | undefined> {
  const s: NodeStatus = await c.node(n).status();
  return s.clusterState?.pools.find((p) => p.name === name) as PoolView | undefined;
}

async function waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last === undefined ? '' : ` (${String(last)})`}`);
    await sleep(100);
  }
}

interface AppCluster { c: Cluster; witness: WitnessProcess; work: string; mountOf: (n: NodeName) => string }

/** Two nodes and a witness; pool `db` with vol0 as an ext4 filesystem and the given applications. */
async function startAppCluster(prefix: string, applications: (n: NodeName, work: string) => unknown[], poolPort: number): Promise<AppCluster> {
  // PostgreSQL runs as its own user: its directories must not sit under a root-only temp dir
  const work = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(work, 0o755);
  fs.writeFileSync(path.join(work, 'pg.pw'), `${PASSWORD}\n`, { mode: 0o600 });
  const mountOf = (n: NodeName): string => path.join(work, `mnt-${n}`);
  const witnessPort = await freePort(WITNESS_HOST);
  const c = await startCluster({
    size: '128M', start: false, prefix: `${prefix}nodes-`, resyncRate: '0',
    fencing: { policy: 'witness', witness: `${WITNESS_HOST}:${witnessPort}` },
    extraConfig: (n) => ({
      floatingIp: { driver: 'loopback' },
      pools: [{
        name: 'db', volumes: ['vol0'], preferredNode: 'alpha', floatingIps: [{ address: `${VIP}/8` }], nbdPort: poolPort,
        // one machine plays both nodes: each mounts at its own place (on two servers it would be the same path)
        filesystem: { volume: 'vol0', mountpoint: mountOf(n), mkfs: true },
        applications: applications(n, work),
      }],
    }),
  });
  let witness: WitnessProcess | undefined;
  try {
    witness = await startWitness(c.dir, WITNESS_HOST, witnessPort, c);
    await Promise.all(c.nodes.map((n) => n.start()));
    return { c, witness, work, mountOf };
  } catch (e) {
    await witness?.stop();
    await c.cleanup();
    throw e;
  }
}

/**
 * Stops both nodes with SIGTERM (a node that stops releases its pools: applications stopped,
 * filesystem unmounted), then removes what a node killed with -9 could leave, then everything.
 * Returns what the graceful stop left mounted, for the tests to assert on.
 */
async function stopAppCluster(a: AppCluster): Promise<string[]> {
  for (const n of a.c.nodes) await n.stop().catch(() => undefined);
  const left = (['alpha', 'beta'] as const).map((n) => a.mountOf(n)).filter(mounted);
  for (const mp of left) spawnSync('umount', ['-l', mp]);
  for (const n of ['alpha', 'beta'] as const) {
    const run = path.join(a.c.dir, n, 'run');
    if (!fs.existsSync(run)) continue;
    for (const f of fs.readdirSync(run)) {
      const full = path.join(run, f);
      if (f.endsWith('.fuse') && mounted(full)) spawnSync('fusermount3', ['-u', '-z', full]);
      if (!f.endsWith('.nbdfuse.pid')) continue;
      const pid = Number(fs.readFileSync(full, 'utf8'));
      // only the nbdfuse this cluster started: its command line names this cluster's directory
      try { if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(a.c.dir)) process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  await a.witness.stop();
  await a.c.cleanup();
  fs.rmSync(a.work, { recursive: true, force: true });
  return left;
}

function postgresApp(port: number, restartMax: number) {
  return (n: NodeName, work: string): unknown[] => [{
    name: 'postgres', module: 'postgresql', port, passwordFile: path.join(work, 'pg.pw'),
    socketDir: path.join(work, `sock-${n}`), allowFrom: ['127.0.0.0/8'],
    check: { intervalMs: 500, timeoutMs: 3000, failureThreshold: 2 },
    restart: { max: restartMax, windowMs: 600_000 },
  }];
}

function postmasterPid(mountpoint: string): number {
  return Number(fs.readFileSync(path.join(mountpoint, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
}

/** the postmaster and every process it started: what dies with a node */
function postgresTree(pid: number): number[] {
  const children = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((p) => {
    try { return Number(fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]) === pid; } catch { return false; }
  });
  return [pid, ...children];
}

/** PostgreSQL stopped behind the daemon's back, as an operator's mistake or a crash would */
async function stopPostgresBehindTheDaemon(mountpoint: string): Promise<void> {
  const r = await new Promise<number | null>((resolve) => {
    const child = spawn('runuser', ['-u', 'postgres', '--', path.join(PG_BIN, 'pg_ctl'), '-D', path.join(mountpoint, 'pgdata'), '-m', 'immediate', '-w', 'stop'], { stdio: 'ignore' });
    child.on('close', resolve);
  });
  assert.equal(r, 0, 'pg_ctl stop -m immediate');
}

test('PostgreSQL on a pool: kill -9 of the owner (daemon and PostgreSQL) loses no committed insert; checker restarts in place, then fails over', { timeout: 420_000 }, async (t) => {
  const poolPort = await freePort(VIP);
  const pgPort = await freePort(VIP);
  const a = await startAppCluster('tandem-apps-pg-', postgresApp(pgPort, 1), poolPort);
  const { c } = a;
  try {
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    const started = Date.now();
    await waitUntil('PostgreSQL running on alpha', 180_000, async () => {
      const p = await pool(c, 'alpha', 'db');
      return p?.applications?.[0]?.state === 'running' ? p : undefined;
    });
    t.diagnostic(`mkfs + initdb + start on the mirrored volume: ${Date.now() - started} ms`);
    assert.equal(mounted(a.mountOf('alpha')), true, 'the filesystem is mounted on the owner');
    assert.equal(mounted(a.mountOf('beta')), false, 'and not on the peer');
    const created = await psql(pgPort, 'create table t (n integer primary key)');
    assert.equal(created.code, 0, created.out);

    // numbered inserts, each its own transaction; a commit the client saw must survive
    const committed: number[] = [];
    let next = 1;
    let killedAt = 0;
    let firstAfterKill = 0;
    let failures = 0;
    let committedBeforeKill = Number.MAX_SAFE_INTEGER;
    const client = (async () => {
      for (;;) {
        const n = next;
        const r = await psql(pgPort, `insert into t values (${n})`);
        if (r.code === 0) {
          committed.push(n);
          next++;
          if (killedAt > 0 && firstAfterKill === 0) firstAfterKill = Date.now();
          if (firstAfterKill > 0 && committed.length >= 40 + committedBeforeKill) return;
        } else {
          failures++;
          // an insert whose answer was lost may or may not be there; it is not counted as committed
          if (/duplicate key/.test(r.out)) { next++; continue; }
          if (killedAt === 0) throw new Error(`insert ${n} failed before any fault: ${r.out}`);
          if (Date.now() - killedAt > 120_000) throw new Error(`no commit within 120 s of the kill: ${r.out}`);
          await sleep(50);
        }
      }
    })();
    await waitUntil('some inserts committed', 60_000, async () => (committed.length >= 30 ? true : undefined));
    const pgTree = postgresTree(postmasterPid(a.mountOf('alpha')));
    committedBeforeKill = committed.length;
    killedAt = Date.now();
    await c.alpha.kill9();
    for (const pid of pgTree) {
      // a backend serving one psql connection may have ended since the tree was listed
      try { process.kill(pid, 'SIGKILL'); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e; }
    }
    await client;
    t.diagnostic(`kill -9 of alpha's daemon and PostgreSQL to the first commit through beta: ${firstAfterKill - killedAt} ms (${failures} failed attempts, ${committedBeforeKill} commits before the kill)`);

    const p = await pool(c, 'beta', 'db');
    assert.equal(p?.owner, 'beta');
    assert.equal(p?.filesystem?.mounted, true);
    assert.equal(mounted(a.mountOf('beta')), true, 'beta mounted the volume');
    const rows = await psql(pgPort, 'select n from t order by n');
    assert.equal(rows.code, 0, rows.out);
    const present = new Set(rows.out.trim().split('\n').map(Number));
    const lost = committed.filter((n) => !present.has(n));
    assert.deepEqual(lost, [], `committed inserts missing after the failover: ${lost.join(', ')}`);
    t.diagnostic(`${committed.length} committed inserts all present on beta`);

    // alpha returns: what its crash left mounted is cleaned up, and it resyncs as SECONDARY
    await c.alpha.start();
    await c.waitForStates('SECOND', 'PRIM', 120_000);
    assert.equal(mounted(a.mountOf('alpha')), false, 'alpha removed the mount its crash left behind');

    // PostgreSQL stopped behind the daemon's back: restarted in place, on beta
    await stopPostgresBehindTheDaemon(a.mountOf('beta'));
    await waitUntil('PostgreSQL restarted in place on beta', 60_000, async () => {
      const v = await pool(c, 'beta', 'db');
      const app = v?.applications?.[0];
      return app?.state === 'running' && app.restarts === 1 ? v : undefined;
    });
    const activity = (await c.beta.status()).clusterState?.activity ?? [];
    assert.ok(activity.some((e) => e.event === 'app-restart' && /restarted in place/.test(e.message)), 'the restart is in the activity log');
    const again = await psql(pgPort, 'select count(*) from t');
    assert.equal(again.code, 0, again.out);
    assert.equal((await pool(c, 'beta', 'db'))?.owner, 'beta', 'a restart in place does not move the pool');

    // failing again within the window (restart.max = 1): the pool fails over to alpha
    await stopPostgresBehindTheDaemon(a.mountOf('beta'));
    const moved = Date.now();
    await waitUntil('pool db failed over to alpha with PostgreSQL running', 120_000, async () => {
      const v = await pool(c, 'alpha', 'db');
      return v?.owner === 'alpha' && v.applications?.[0]?.state === 'running' ? v : undefined;
    });
    t.diagnostic(`second failure on beta to PostgreSQL running on alpha: ${Date.now() - moved} ms`);
    const after = await psql(pgPort, 'select n from t order by n');
    assert.equal(after.code, 0, after.out);
    const still = new Set(after.out.trim().split('\n').map(Number));
    assert.deepEqual(committed.filter((n) => !still.has(n)), [], 'every committed insert is there after the second move');
    assert.equal(mounted(a.mountOf('beta')), false, 'beta unmounted the filesystem when it let the pool go');
    const log = (await c.beta.status()).clusterState?.activity ?? [];
    assert.ok(log.some((e) => e.event === 'app-failover'), 'the failover is in the activity log');
  } catch (e) {
    if (e instanceof Error) e.message += `\n${c.logs(80)}`;
    await stopAppCluster(a);
    throw e;
  }
  // a node that stops releases its pool: PostgreSQL stopped, the filesystem unmounted cleanly
  assert.deepEqual(await stopAppCluster(a), [], 'a stopped node left its filesystem mounted');
});

test('a start script that fails leaves the pool INACTIVE with its output in status and the filesystem unmounted', { timeout: 180_000 }, async () => {
  const poolPort = await freePort(VIP);
  const apps = (): unknown[] => [{
    name: 'licence-server', start: 'echo "starting licence-server"; echo "licence-server: no licence file at /etc/licence" >&2; exit 3',
    stop: 'true', startTimeoutMs: 10_000,
  }];
  const a = await startAppCluster('tandem-apps-bad-', apps, poolPort);
  const { c } = a;
  try {
    await c.waitForStates('PRIM', 'SECOND', 60_000).catch(() => undefined);
    const v = await waitUntil('pool db INACTIVE with the script output as reason', 120_000, async () => {
      const p = await pool(c, 'alpha', 'db');
      return p?.phase === 'INACTIVE' && p.reason !== null && /no licence file/.test(p.reason) ? p : undefined;
    });
    assert.match(v.reason ?? '', /application licence-server/);
    assert.match(v.reason ?? '', /exited with 3/);
    assert.equal(v.applications?.[0]?.state, 'failed');
    assert.match(v.applications?.[0]?.output ?? '', /no licence file/);
    assert.equal(v.filesystem?.mounted, false);
    for (const n of ['alpha', 'beta'] as const) assert.equal(mounted(a.mountOf(n)), false, `${n} holds no mount`);
    const activity = (await c.alpha.status()).clusterState?.activity ?? [];
    assert.ok(activity.some((e) => e.event === 'pool-undo' && /undo filesystem ext4 on vol0/.test(e.message) && e.ok === true), 'the mount was undone');
  } catch (e) {
    if (e instanceof Error) e.message += `\n${c.logs(60)}`;
    await stopAppCluster(a);
    throw e;
  }
  assert.deepEqual(await stopAppCluster(a), []);
});
