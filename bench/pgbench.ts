// pgbench against PostgreSQL whose data directory is on a mirrored volume,
// compared with the same PostgreSQL on a local directory of the same disk.
//
// - mirrored: alpha (127.0.0.2) and beta (127.0.0.3) are real `tandem node
//   start` processes with a `tandem witness`; pool `db` carries an ext4
//   filesystem on vol0 (write-back) and the `postgresql` application, on the
//   floating IP 127.0.0.30 (loopback driver). pgbench connects to that address.
//   Measured only once the status API shows the application running on alpha
//   and both copies in sync, and kept only if that still holds afterwards.
// - local: initdb and pg_ctl as the postgres user on a directory next to the
//   nodes' data, with the arguments and settings the application module uses
//   (listen address 127.0.0.31, the same port, default shared_buffers, fsync
//   and synchronous_commit on); the settings both servers report are compared.
//
// Each side: `pgbench -i -s SCALE` (timed), CHECKPOINT, sync, then `pgbench -c
// CLIENTS -j 2 -T SECONDS -P`. Every process started is tracked by PID. The
// nodes stop as a planned shutdown of both would: maintenance on, then SIGTERM
// to the owner (which stops PostgreSQL and unmounts), then to the other; what
// that leaves behind (a mount, nbdfuse, a postmaster) is removed by PID or
// path and reported as a failure. A signal to the bench runs the same teardown
// synchronously before the bench's own handler kills what is left and removes
// the work directory.
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { postgresBinDir, userIds } from '../src/app/postgresql';
import { startWitness, type WitnessProcess } from '../test/helpers/witness-process';
import { BenchCluster, getJson, inSync, nodeToken, sleep, tandemBin, type BenchNode } from './cluster';
import type { Unit } from './jobs';
import type { NodeArgs } from './mirrored';
import { freePort, track, type ExecResult } from './procs';
import type { TableRow } from './table';

export const pgbenchId = 'pgbench';

export type PgbenchSide = 'mirrored' | 'local';
export const pgbenchSides: readonly PgbenchSide[] = ['local', 'mirrored'];

const VIP = '127.0.0.30';
const LOCAL_HOST = '127.0.0.31';
const WITNESS_HOST = '127.0.0.32';
const POOL = 'db';
const APP = 'postgres';
const PG_USER = 'postgres';
const MiB = 1024 * 1024;

const readyTimeoutMs = 300_000;
/** pg_ctl stop of the local server */
const stopTimeoutS = 30;
/** per node, after a signal to the bench: a node's own stop takes a few seconds */
const nodeStopWaitMs = 30_000;

export interface PgbenchConfig {
  readonly scale: number;
  readonly clients: number;
  readonly seconds: number;
  readonly nodeArgs: NodeArgs;
}

export interface PgbenchResult {
  readonly tps: number;
  readonly latencyMs: number;
  /** pgbench -i, client side */
  readonly initS: number;
  readonly transactions: number;
  /** tps of each -P interval */
  readonly progressTps: number[];
  /** `name=setting` of the settings that must match on both sides */
  readonly settings: string;
  readonly notes: string[];
  /** what the teardown found left behind or could not stop cleanly; the figure itself stands */
  readonly problems: string[];
}

/**
 * The volume: the database at scale s takes about 16 MiB × s with its indexes;
 * WAL may grow to max_wal_size (1 GiB) between checkpoints.
 */
export function pgbenchVolumeBytes(scale: number): number {
  return 1536 * MiB + scale * 48 * MiB;
}

/** A port free on both the floating IP and the local server's address: both servers use the same one. */
export async function pgbenchPort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const p = await freePort(VIP);
    try {
      await bindOnce(LOCAL_HOST, p);
      return p;
    } catch { /* taken there: another one */ }
  }
  throw new Error(`no port free on both ${VIP} and ${LOCAL_HOST}`);
}

function bindOnce(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve()));
  });
}

// ---------------------------------------------------------------- processes

function syncSleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** the process state letter from /proc, undefined once it is gone */
function procState(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  const s = procState(pid);
  return s !== undefined && s !== 'Z';
}

function childrenOf(pid: number): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((p) => {
    try { return Number(fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]) === pid; } catch { return false; }
  });
}

/** pid is a postgres whose working directory is dataDir (the postmaster chdirs there): not a recycled PID */
function isPostmasterOf(pid: number, dataDir: string): boolean {
  try {
    const exe = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    return path.basename(exe) === 'postgres' && fs.readlinkSync(`/proc/${pid}/cwd`) === dataDir && alive(pid);
  } catch {
    return false;
  }
}

function killPostgresTree(pid: number): void {
  for (const p of [pid, ...childrenOf(pid)]) {
    try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
  }
}

/**
 * Whether the process still has a handler for SIGTERM. A stopping node has
 * removed its handlers, and a second SIGTERM would kill it in the middle of
 * releasing its pool (applications, filesystem) with the default action.
 */
function catchesSigterm(pid: number): boolean {
  try {
    const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('SigCgt:'));
    return line !== undefined && (BigInt(`0x${line.split(':')[1]?.trim() ?? '0'}`) & (1n << 14n)) !== 0n;
  } catch {
    return false;
  }
}

function mountedAt(dir: string): boolean {
  return fs.readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);
}

/**
 * Mount namespaces other than ours that still hold one of the mountpoints: one made while the
 * pool was mounted (`ip netns exec`, `unshare -m`) keeps the filesystem alive after the node's
 * umount, with its disk (loop, nbdfuse, the node's export) torn down under it.
 */
function heldElsewhere(mountpoints: readonly string[]): string[] {
  const found: string[] = [];
  let mine: string;
  try { mine = fs.readlinkSync('/proc/self/ns/mnt'); } catch { return found; }
  const seen = new Set<string>([mine]);
  for (const d of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const ns = fs.readlinkSync(`/proc/${d}/ns/mnt`);
      if (seen.has(ns)) continue;
      seen.add(ns);
      const held = fs.readFileSync(`/proc/${d}/mountinfo`, 'utf8').split('\n').map((l) => l.split(' ')[4]);
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ').trim().slice(0, 80);
      for (const mp of mountpoints) if (held.includes(mp)) found.push(`${mp} is still mounted in the mount namespace of process ${d} (${cmd}) after the node's umount`);
    } catch { /* gone, or a kernel thread */ }
  }
  return found;
}

interface RunOptions {
  readonly timeoutMs: number;
  readonly env?: Record<string, string>;
  /** run as the postgres user (initdb and pg_ctl refuse root) */
  readonly asPostgres?: boolean;
}

/** Runs a program to completion, tracked by PID, with its output captured; never throws for an exit code. */
function run(cmd: string, args: readonly string[], o: RunOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const ids = o.asPostgres === true ? userIds(PG_USER) : undefined;
    const child = track(spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'], cwd: '/',
      env: { ...process.env, ...(ids === undefined ? {} : { HOME: '/' }), ...o.env },
      ...(ids === undefined ? {} : { uid: ids.uid, gid: ids.gid }),
    }), path.basename(cmd));
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => {
      stderr += `\n[bench: killed after ${o.timeoutMs} ms]`;
      if (child.pid !== undefined) { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }
    }, o.timeoutMs);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code, signal, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
  });
}

async function runOk(cmd: string, args: readonly string[], o: RunOptions): Promise<ExecResult> {
  const r = await run(cmd, args, o);
  if (r.code !== 0) {
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed (code ${r.code}, signal ${r.signal}):\n${(r.stdout + r.stderr).slice(-3000)}`);
  }
  return r;
}

// ---------------------------------------------------------------- teardown

/**
 * What one side started that may outlive it. Its methods are synchronous: they
 * also run inside a signal handler, which must finish before the process exits.
 */
class Leftovers {
  nodes: BenchNode[] = [];
  /** node data directories: their run/ holds the FUSE file and nbdfuse's pid file */
  nodeDirs: string[] = [];
  /** the cluster's directory: every nbdfuse it started names it on its command line */
  clusterDir: string | undefined;
  mountpoints: string[] = [];
  postmasters: Array<{ pid: number; dataDir: string }> = [];
  /** a local server to stop with pg_ctl first */
  localDataDir: string | undefined;

  /**
   * As at the normal end: maintenance on, then SIGTERM to each node in turn, the owner first,
   * each unless it stops already, waiting for it to exit.
   */
  stopNodesSync(): string[] {
    const problems: string[] = [];
    // a terminal's Ctrl-C reaches the nodes too: let them take it as their one stop signal
    syncSleep(300);
    for (const n of this.nodes) {
      const pid = n.pid;
      if (pid === undefined || !alive(pid) || !catchesSigterm(pid)) continue;
      const r = spawnSync(process.execPath, maintenanceArgs(n), { stdio: 'ignore', timeout: 10_000 });
      if (r.status !== 0) problems.push(`maintenance on at ${n.name}: exit ${r.status ?? r.signal ?? r.error?.message}`);
    }
    for (const n of this.nodes) {
      const pid = n.pid;
      if (pid === undefined || !alive(pid)) continue;
      if (catchesSigterm(pid)) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
      const deadline = Date.now() + nodeStopWaitMs;
      while (alive(pid) && Date.now() < deadline) syncSleep(100);
      if (alive(pid)) problems.push(`${n.name} (${pid}) still ran ${nodeStopWaitMs} ms after SIGTERM`);
    }
    return problems;
  }

  /** Stops and removes whatever is still there, by PID and by path; says what it found. */
  sweepSync(): string[] {
    const found: string[] = [];
    if (this.localDataDir !== undefined) {
      const d = this.localDataDir;
      if (this.postmasters.some((p) => p.dataDir === d && isPostmasterOf(p.pid, d))) {
        spawnSync(path.join(postgresBinDir(), 'pg_ctl'), ['-D', d, '-m', 'fast', '-w', '-t', String(stopTimeoutS), 'stop'], {
          stdio: 'ignore', cwd: '/', uid: userIds(PG_USER).uid, gid: userIds(PG_USER).gid, timeout: (stopTimeoutS + 5) * 1000,
        });
      }
    }
    for (const p of this.postmasters) {
      // pg_ctl stop returns once the pid file is gone, a moment before the postmaster exits
      const deadline = Date.now() + 5000;
      while (isPostmasterOf(p.pid, p.dataDir) && Date.now() < deadline) syncSleep(50);
      if (!isPostmasterOf(p.pid, p.dataDir)) continue;
      found.push(`postgres ${p.pid} on ${p.dataDir} still ran: killed`);
      killPostgresTree(p.pid);
    }
    for (const mp of this.mountpoints) {
      if (!mountedAt(mp)) continue;
      found.push(`${mp} was still mounted: umount -l`);
      spawnSync('umount', ['-l', mp], { stdio: 'ignore', timeout: 30_000 });
    }
    for (const dir of this.nodeDirs) {
      const runDir = path.join(dir, 'run');
      let names: string[] = [];
      try { names = fs.readdirSync(runDir); } catch { continue; }
      for (const f of names) {
        const full = path.join(runDir, f);
        if (f.endsWith('.fuse') && mountedAt(full)) {
          found.push(`${full} was still a FUSE mount: fusermount3 -u -z`);
          spawnSync('fusermount3', ['-u', '-z', full], { stdio: 'ignore', timeout: 30_000 });
        }
        if (!f.endsWith('.nbdfuse.pid') || this.clusterDir === undefined) continue;
        const pid = Number(fs.readFileSync(full, 'utf8').trim());
        if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) continue;
        try {
          if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(this.clusterDir)) continue;
          found.push(`nbdfuse ${pid} still ran: killed`);
          process.kill(pid, 'SIGKILL');
        } catch { /* gone */ }
      }
    }
    return found;
  }

  /** nothing of this side is mounted any more: its directory may be removed */
  get unmounted(): boolean {
    const all = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '');
    const roots = [...this.mountpoints, ...this.nodeDirs];
    return !all.some((m) => roots.some((r) => m === r || m.startsWith(`${r}/`)));
  }
}

let current: Leftovers | undefined;

function maintenanceArgs(n: BenchNode): string[] {
  return [tandemBin, 'maintenance', 'on', '--api', `${n.host}:${n.ports.api}`, '--token-file', path.join(n.dataDir, 'api-token')];
}

/** `tandem maintenance on` at each running node; what failed */
async function maintenanceOn(nodes: readonly BenchNode[]): Promise<string[]> {
  const problems: string[] = [];
  for (const n of nodes.filter((x) => x.running)) {
    const r = await run(process.execPath, maintenanceArgs(n), { timeoutMs: 15_000 }).catch((e: unknown) => ({ code: -1, stdout: '', stderr: String(e) }));
    if (r.code !== 0) problems.push(`maintenance on at ${n.name}: ${(r.stdout + r.stderr).trim().slice(-300)}`);
  }
  return problems;
}

function onSignal(): void {
  const l = current;
  if (l === undefined) return;
  current = undefined;
  process.stderr.write('bench: pgbench: stopping the nodes and PostgreSQL before exiting\n');
  for (const p of [...l.stopNodesSync(), ...l.sweepSync()]) process.stderr.write(`bench: pgbench: ${p}\n`);
}

const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** While a side runs: its teardown goes before the bench's own signal handler (which SIGKILLs and removes the work dir). */
async function guarded<T>(l: Leftovers, body: () => Promise<T>): Promise<T> {
  current = l;
  for (const s of signals) process.prependListener(s, onSignal);
  try {
    return await body();
  } finally {
    for (const s of signals) process.off(s, onSignal);
    current = undefined;
  }
}

/** postgres must reach its directories: every parent has to be searchable by it */
async function checkReachable(dir: string): Promise<void> {
  const r = await run('/usr/bin/test', ['-x', dir, '-a', '-r', dir], { timeoutMs: 10_000, asPostgres: true });
  if (r.code !== 0) throw new Error(`the ${PG_USER} user cannot reach ${dir}: choose a --dir whose parents it may search`);
}

/** A directory for one side, reachable by postgres: the bench's work dir is mkdtemp's 0700. */
function sideDir(work: string, prefix: string): string {
  fs.chmodSync(work, 0o711);
  const dir = fs.mkdtempSync(path.join(work, prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

async function postmasterPid(dataDir: string): Promise<number> {
  const pid = Number((await fs.promises.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 1) throw new Error(`no postmaster pid in ${dataDir}/postmaster.pid`);
  return pid;
}

// ---------------------------------------------------------------- pgbench

const settingNames = [
  'server_version', 'port', 'shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
  'wal_level', 'wal_buffers', 'max_wal_size', 'checkpoint_timeout', 'max_connections', 'data_checksums',
];

interface Target { readonly host: string; readonly port: number; readonly password: string }

function clientArgs(t: Target): string[] {
  return ['-h', t.host, '-p', String(t.port), '-U', PG_USER];
}

function clientEnv(t: Target): Record<string, string> {
  return { PGPASSWORD: t.password, PGCONNECT_TIMEOUT: '5' };
}

async function psql(t: Target, sql: string, timeoutMs = 120_000): Promise<string> {
  const r = await runOk(path.join(postgresBinDir(), 'psql'), ['-X', '-q', '-At', ...clientArgs(t), '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', sql],
    { timeoutMs, env: clientEnv(t) });
  return r.stdout.trim();
}

function num(text: string, re: RegExp, what: string): number {
  const m = re.exec(text);
  const v = m === null ? NaN : Number(m[1]);
  if (!Number.isFinite(v)) throw new Error(`no ${what} in pgbench output:\n${text.slice(-2000)}`);
  return v;
}

/** init (timed), checkpoint, sync, then the timed run. */
async function drive(t: Target, cfg: PgbenchConfig): Promise<Omit<PgbenchResult, 'notes' | 'problems'>> {
  const pgbench = path.join(postgresBinDir(), 'pgbench');
  const env = clientEnv(t);
  const init = await runOk(pgbench, ['-i', '-q', '-s', String(cfg.scale), ...clientArgs(t), 'postgres'], { timeoutMs: 120_000 + cfg.scale * 30_000, env });
  const initS = init.ms / 1000;
  // both runs start from a checkpoint, with nothing of the setup still dirty in the page cache
  await psql(t, 'checkpoint');
  await runOk('sync', [], { timeoutMs: 300_000 });
  const settings = await psql(t, `select string_agg(name || '=' || setting || coalesce(unit, ''), ' ' order by name) from pg_settings where name in (${settingNames.map((n) => `'${n}'`).join(', ')})`);
  const progress = Math.max(1, Math.min(5, Math.floor(cfg.seconds / 2)));
  const r = await runOk(pgbench, [
    '-c', String(cfg.clients), '-j', String(Math.min(2, cfg.clients)), '-T', String(cfg.seconds), '-P', String(progress), ...clientArgs(t), 'postgres',
  ], { timeoutMs: (cfg.seconds * 3 + 120) * 1000, env });
  const out = `${r.stdout}\n${r.stderr}`;
  const failed = /number of failed transactions: (\d+)/.exec(out);
  if (failed !== null && Number(failed[1]) > 0) throw new Error(`pgbench: ${failed[1]} failed transactions:\n${out.slice(-2000)}`);
  const progressTps = [...out.matchAll(/^progress: [\d.]+ s, ([\d.]+) tps/gm)].map((m) => Number(m[1]));
  return {
    tps: num(out, /^tps = ([\d.]+)/m, 'tps'),
    latencyMs: num(out, /^latency average = ([\d.]+) ms/m, 'latency average'),
    transactions: num(out, /^number of transactions actually processed: (\d+)/m, 'transaction count'),
    initS, progressTps, settings,
  };
}

function progressNote(p: readonly number[]): string {
  if (p.length === 0) return 'no progress lines';
  return `per ${p.length} intervals tps ${Math.round(Math.min(...p))}..${Math.round(Math.max(...p))}`;
}

// ---------------------------------------------------------------- sides

interface StatusView {
  clusterState?: { pools: Array<{ name: string; owner: string; phase: string; reason: string | null; filesystem?: { mounted: boolean };
    applications?: Array<{ name: string; state: string; restarts: number; error: string | null; output: string }> }> };
}

type PoolState = NonNullable<StatusView['clusterState']>['pools'][number];

async function poolOn(n: BenchNode): Promise<PoolState | undefined> {
  try {
    const s = await getJson<StatusView>(n.host, n.ports.api, '/api/v1/status', 2000, nodeToken(n.dataDir));
    return s.clusterState?.pools.find((p) => p.name === POOL);
  } catch {
    return undefined;
  }
}

function serving(p: PoolState | undefined): boolean {
  return p?.owner === 'alpha' && p.phase === 'ACTIVE' && p.filesystem?.mounted === true
    && p.applications?.find((a) => a.name === APP)?.state === 'running';
}

/** alpha owns the pool with PostgreSQL running, and both copies are in sync */
async function waitServing(c: BenchCluster, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: PoolState | undefined;
  for (;;) {
    last = await poolOn(c.alpha);
    if (serving(last) && inSync(await c.volumes())) return;
    const app = last?.applications?.find((a) => a.name === APP);
    const dead = !c.alpha.running || !c.beta.running;
    if (dead || app?.state === 'failed' || last?.phase === 'INACTIVE' || Date.now() > deadline) {
      throw new Error(`${dead ? 'a node exited' : app?.state === 'failed' || last?.phase === 'INACTIVE' ? 'the pool did not come up' : `not within ${timeoutMs} ms`}`
        + ` waiting for PostgreSQL running on alpha with beta in sync: pool ${JSON.stringify({ ...last, applications: undefined })},`
        + ` application ${app?.state ?? 'none'} ${app?.error ?? ''}\n${app?.output.slice(-1500) ?? ''}\n${c.logs(20)}`);
    }
    await sleep(200);
  }
}

/** The nodes' configs as BenchCluster wrote them, with pool `db`: filesystem, PostgreSQL, floating IP. */
function addPool(c: BenchCluster, dir: string, pgPort: number, poolPort: number, pwFile: string): void {
  for (const n of [c.alpha, c.beta]) {
    const config = JSON.parse(fs.readFileSync(n.configPath, 'utf8')) as Record<string, unknown>;
    config.floatingIp = { driver: 'loopback' };
    config.pools = [{
      name: POOL, volumes: ['vol0'], preferredNode: 'alpha', floatingIps: [{ address: `${VIP}/8` }], nbdPort: poolPort,
      // one machine plays both nodes: each mounts at its own place (on two servers it would be the same path)
      filesystem: { volume: 'vol0', mountpoint: path.join(dir, `mnt-${n.name}`), mkfs: true },
      applications: [{
        name: APP, module: 'postgresql', port: pgPort, passwordFile: pwFile,
        socketDir: path.join(dir, `sock-${n.name}`), allowFrom: ['127.0.0.0/8'],
      }],
    }];
    fs.writeFileSync(n.configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  }
}

async function measureMirroredSide(cfg: PgbenchConfig, work: string, round: number, pgPort: number): Promise<PgbenchResult> {
  const dir = sideDir(work, `pgbench-mirrored-r${round}-`);
  const password = crypto.randomBytes(12).toString('hex');
  const pwFile = path.join(dir, 'pg.pw');
  fs.writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  const [witnessPort, poolPort] = [await freePort(WITNESS_HOST), await freePort(VIP)];
  if (poolPort === pgPort) throw new Error(`port ${pgPort} picked twice on ${VIP}`);
  const c = await BenchCluster.create(dir, { size: pgbenchVolumeBytes(cfg.scale), cacheMode: 'write-back', checksumResync: false },
    { witness: `${WITNESS_HOST}:${witnessPort}`, poolNbd: `${VIP}:${poolPort}` });
  addPool(c, dir, pgPort, poolPort, pwFile);
  const l = new Leftovers();
  l.nodes = [c.alpha, c.beta];
  l.nodeDirs = [c.alpha.dataDir, c.beta.dataDir];
  l.clusterDir = dir;
  l.mountpoints = [path.join(dir, 'mnt-alpha'), path.join(dir, 'mnt-beta')];
  const notes: string[] = [];
  const problems: string[] = [];
  let witness: WitnessProcess | undefined;
  return guarded(l, async () => {
    try {
      await checkReachable(dir);
      const { id, secret } = c.secrets();
      witness = await startWitness(dir, WITNESS_HOST, witnessPort, { clusterId: id, secret });
      track(witness.child, 'tandem witness');
      const t0 = Date.now();
      const tag = `pgbench-r${round + 1}`;
      await Promise.all([c.alpha.start(cfg.nodeArgs('alpha', tag)), c.beta.start(cfg.nodeArgs('beta', tag))]);
      await waitServing(c, readyTimeoutMs);
      notes.push(`node start to PostgreSQL running on alpha, beta in sync (mkfs, initdb, start): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      const mnt = path.join(dir, 'mnt-alpha');
      l.postmasters.push({ pid: await postmasterPid(path.join(mnt, 'pgdata')), dataDir: path.join(mnt, 'pgdata') });
      const r = await drive({ host: VIP, port: pgPort, password }, cfg);
      // a figure is a mirrored one only if beta took every write and PostgreSQL never restarted
      const after = await poolOn(c.alpha);
      const v = await c.volumes();
      const app = after?.applications?.find((a) => a.name === APP);
      if (!serving(after) || !inSync(v) || app?.restarts !== 0) {
        throw new Error(`the pool or the mirror did not hold during pgbench: pool ${after?.phase ?? 'unknown'} on ${after?.owner ?? '?'}, `
          + `application ${app?.state ?? 'none'} (${app?.restarts ?? '?'} restarts), alpha ${v.alpha?.state ?? 'down'}, beta ${v.beta?.state ?? 'down'}\n${c.logs(10)}`);
      }
      return { ...r, notes, problems };
    } finally {
      const s0 = Date.now();
      // A planned stop of both: with maintenance on, beta does not take the pool over while alpha
      // releases it (alpha's heartbeats stop before its release ends), and the owner stops first
      // with its peer still connected (an owner whose peer has just gone can hang in its release).
      problems.push(...await maintenanceOn([c.alpha, c.beta]));
      for (const n of [c.alpha, c.beta]) {
        try {
          await n.stop();
        } catch (e) {
          problems.push(`${n.name} did not stop cleanly: ${(e as Error).message}`);
        }
      }
      const stillMounted = l.mountpoints.filter(mountedAt);
      if (stillMounted.length > 0) problems.push(`after SIGTERM and exit of both nodes, still mounted: ${stillMounted.join(', ')}`);
      problems.push(...heldElsewhere(l.mountpoints));
      problems.push(...l.sweepSync());
      notes.push(`stop (maintenance on, SIGTERM to alpha then beta): ${((Date.now() - s0) / 1000).toFixed(1)} s`);
      await witness?.stop();
      if (l.unmounted) {
        await c.destroy();
      } else {
        await Promise.allSettled([c.alpha.kill(), c.beta.kill()]);
        problems.push(`${dir} still has mounts under it: not removed`);
      }
    }
  });
}

async function measureLocalSide(cfg: PgbenchConfig, work: string, round: number, pgPort: number): Promise<PgbenchResult> {
  const dir = sideDir(work, `pgbench-local-r${round}-`);
  const password = crypto.randomBytes(12).toString('hex');
  const dataDir = path.join(dir, 'pgdata');
  const sockDir = path.join(dir, 'sock');
  const pwFile = path.join(dir, 'pg.pw');
  const ids = userIds(PG_USER);
  const l = new Leftovers();
  l.localDataDir = dataDir;
  const notes: string[] = [];
  const problems: string[] = [];
  const bin = postgresBinDir();
  return guarded(l, async () => {
    try {
      await checkReachable(dir);
      fs.mkdirSync(dataDir, { mode: 0o700 });
      fs.chownSync(dataDir, ids.uid, ids.gid);
      fs.mkdirSync(sockDir, { mode: 0o775 });
      fs.chownSync(sockDir, ids.uid, ids.gid);
      fs.writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
      fs.chownSync(pwFile, ids.uid, ids.gid);
      const t0 = Date.now();
      // what the postgresql module runs on first use
      await runOk(path.join(bin, 'initdb'), ['-D', dataDir, '-U', PG_USER, '--auth-local=peer', '--auth-host=scram-sha-256', '--encoding=UTF8', '--locale=C', `--pwfile=${pwFile}`],
        { timeoutMs: 600_000, asPostgres: true });
      fs.rmSync(pwFile);
      fs.appendFileSync(path.join(dataDir, 'pg_hba.conf'), '\n# clients over TCP on loopback\nhost all all 127.0.0.0/8 scram-sha-256\n');
      fs.appendFileSync(path.join(dataDir, 'postgresql.conf'),
        `\nlisten_addresses = '${LOCAL_HOST}'\nport = ${pgPort}\nunix_socket_directories = '${sockDir}'\n`);
      await runOk(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-l', path.join(dataDir, 'server.log'), '-w', '-t', '60', 'start'], { timeoutMs: 70_000, asPostgres: true });
      l.postmasters.push({ pid: await postmasterPid(dataDir), dataDir });
      notes.push(`initdb + start: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      const r = await drive({ host: LOCAL_HOST, port: pgPort, password }, cfg);
      return { ...r, notes, problems };
    } finally {
      const stop = await run(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-m', 'fast', '-w', '-t', String(stopTimeoutS), 'stop'],
        { timeoutMs: (stopTimeoutS + 5) * 1000, asPostgres: true }).catch((e: unknown) => ({ code: -1, stdout: '', stderr: String(e) }));
      if (stop.code !== 0 && l.postmasters.length > 0) problems.push(`pg_ctl stop of the local server: ${(stop.stdout + stop.stderr).trim().slice(-300)}`);
      l.localDataDir = undefined;
      problems.push(...l.sweepSync());
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** One side: a fresh server on a fresh directory (and, mirrored, a fresh pair of nodes on a fresh volume). */
export function measurePgbench(side: PgbenchSide, cfg: PgbenchConfig, work: string, round: number, pgPort: number): Promise<PgbenchResult> {
  return side === 'mirrored' ? measureMirroredSide(cfg, work, round, pgPort) : measureLocalSide(cfg, work, round, pgPort);
}

export function describeResult(r: PgbenchResult): string {
  return `${r.tps.toFixed(1)} tps, latency ${r.latencyMs.toFixed(2)} ms, ${r.transactions} transactions, `
    + `init ${r.initS.toFixed(1)} s, ${progressNote(r.progressTps)}`;
}

/** The value names pgbench itself prints; the table prints any unit as given. */
const tpsUnit = 'TPS' as Unit;
const msUnit = 'ms' as Unit;

export function pgbenchRows(cfg: Pick<PgbenchConfig, 'scale' | 'clients'>, samples: Readonly<Record<PgbenchSide, readonly PgbenchResult[]>>): TableRow[] {
  const m = samples.mirrored;
  const l = samples.local;
  return [
    {
      id: 'pgbench-tps', label: `pgbench TPS, scale ${cfg.scale}, ${cfg.clients} clients`, unit: tpsUnit, target: { op: '>=', value: 0.5 },
      a: m.map((x) => x.tps), b: l.map((x) => x.tps),
    },
    {
      id: 'pgbench-latency', label: 'pgbench mean latency', unit: msUnit, target: null,
      a: m.map((x) => x.latencyMs), b: l.map((x) => x.latencyMs),
    },
    {
      id: 'pgbench-init', label: `pgbench -i -s ${cfg.scale}`, unit: 's', target: null,
      a: m.map((x) => x.initS), b: l.map((x) => x.initS),
    },
  ];
}
