// Two Tandem nodes for the mirrored benchmarks: "alpha" on 127.0.0.2 and
// "beta" on 127.0.0.3, each a real `node bin/tandem.js node start --config FILE`
// process (as `tandem demo` starts them), one volume "vol0" with alpha as
// primary. Every process is tracked by PID (procs.track), so a failure or
// Ctrl-C still leaves none behind; stop() ends only the node it names.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { freePort, track } from './procs';

export type NodeName = 'alpha' | 'beta';
export const nodeNames: readonly NodeName[] = ['alpha', 'beta'];
export const nodeHosts: Readonly<Record<NodeName, string>> = { alpha: '127.0.0.2', beta: '127.0.0.3' };
export const volumeName = 'vol0';

const repoRoot = path.resolve(__dirname, '..', '..');
export const tandemBin = path.join(repoRoot, 'bin', 'tandem.js');

import type { VolumeStatus } from '../src/replication/status';

export type { ResyncStatus, VolumeStatus } from '../src/replication/status';

export interface VolumeOptions {
  readonly size: number;
  readonly cacheMode: 'write-back' | 'write-through';
  readonly checksumResync: boolean;
}

interface Ports { sync: number; api: number; nbd: number; heartbeat: number }

const readyTimeoutMs = 60_000;
/** A node stopping flushes its copy: give it time before SIGKILL. */
const stopGraceMs = 60_000;
const logKeepChars = 64 * 1024;

/** The node's own API token (DATA_DIR/api-token, written when its API starts). */
export function nodeToken(dataDir: string): string {
  return fs.readFileSync(path.join(dataDir, 'api-token'), 'utf8').trim();
}

/** GET http://host:port/path as JSON with the token; rejects on a non-200 answer or after timeoutMs. */
export function getJson<T>(host: string, port: number, urlPath: string, timeoutMs: number, token: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: urlPath, agent: false, timeout: timeoutMs, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) { reject(new Error(`GET ${urlPath}: HTTP ${res.statusCode}: ${text.slice(0, 500)}`)); return; }
        try { resolve(JSON.parse(text) as T); } catch (e) { reject(new Error(`GET ${urlPath}: not JSON: ${(e as Error).message}`)); }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One node: its config file, data directory and, while it runs, its process. */
export class BenchNode {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output = '';
  private runs = 0;

  constructor(
    readonly name: NodeName,
    readonly host: string,
    readonly ports: Ports,
    readonly configPath: string,
    readonly dataDir: string,
  ) {}

  get running(): boolean { return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null; }
  get pid(): number | undefined { return this.running ? this.child?.pid : undefined; }
  get backingPath(): string { return path.join(this.dataDir, 'volumes', `${volumeName}.img`); }
  get nbdUri(): string { return `nbd://${this.host}:${this.ports.nbd}/${volumeName}`; }

  /** The last lines this node printed (every run), for error messages. */
  logTail(lines = 20): string {
    return this.output.trimEnd().split('\n').slice(-lines).join('\n');
  }

  private append(s: string): void {
    this.output += s;
    if (this.output.length > 2 * logKeepChars) this.output = this.output.slice(-logKeepChars);
  }

  /**
   * Spawns `node [nodeArgs] bin/tandem.js node start --config FILE` and waits for
   * its "node NAME ready" line. Resolves with the hrtime (ns) at which it was spawned.
   */
  async start(nodeArgs: readonly string[] = []): Promise<bigint> {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.runs++;
    this.append(`----- ${this.name} run ${this.runs} -----\n`);
    const spawnedAt = process.hrtime.bigint();
    const child = track(spawn(process.execPath, [...nodeArgs, tandemBin, 'node', 'start', '--config', this.configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }), `tandem node ${this.name}`);
    this.child = child;
    const readyLine = `node ${this.name} ready`;
    let stdout = '';
    let settle: ((how: 'ready' | 'exited' | 'timeout') => void) | undefined;
    const outcome = new Promise<'ready' | 'exited' | 'timeout'>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), readyTimeoutMs);
      settle = (how) => { clearTimeout(timer); settle = undefined; resolve(how); };
    });
    child.stdout?.on('data', (d: Buffer) => {
      const s = d.toString();
      this.append(s);
      if (settle !== undefined) {
        stdout += s;
        if (stdout.includes(readyLine)) settle('ready');
      }
    });
    child.stderr?.on('data', (d: Buffer) => this.append(d.toString()));
    this.exited = new Promise<void>((resolve) => {
      child.once('error', (e) => { this.append(`spawn error: ${e.message}\n`); settle?.('exited'); resolve(); });
      child.once('exit', (code, signal) => {
        this.append(`----- ${this.name} exited: code ${code} signal ${signal} -----\n`);
        settle?.('exited');
        resolve();
      });
    });
    const how = await outcome;
    if (how !== 'ready') {
      await this.kill();
      throw new Error(`${this.name} did not print "${readyLine}"${how === 'exited' ? ' (it exited)' : ` within ${readyTimeoutMs} ms`}:\n${this.logTail()}`);
    }
    return spawnedAt;
  }

  /** SIGTERM by PID, SIGKILL after a grace period; resolves once the process has exited. */
  async stop(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return this.exited;
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    let killed = false;
    const timer = setTimeout(() => { killed = true; try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }, stopGraceMs);
    await this.exited.finally(() => clearTimeout(timer));
    if (killed) throw new Error(`${this.name} did not stop within ${stopGraceMs} ms of SIGTERM (SIGKILLed):\n${this.logTail()}`);
  }

  /** SIGKILL by PID (cleanup only). */
  async kill(): Promise<void> {
    const pid = this.pid;
    if (pid !== undefined) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await this.exited;
  }

  /** vol0's entry in GET /api/v1/status. */
  async volume(timeoutMs = 5000): Promise<VolumeStatus> {
    const s = await getJson<{ volumes: VolumeStatus[] }>(this.host, this.ports.api, '/api/v1/status', timeoutMs, nodeToken(this.dataDir));
    const v = s.volumes.find((x) => x.name === volumeName);
    if (v === undefined) throw new Error(`${this.name}: status lists no volume ${volumeName}`);
    return v;
  }

  /** Removes the node's data directory (the node must be stopped). */
  wipe(): void {
    if (this.running) throw new Error(`${this.name} is running: not wiping its data`);
    fs.rmSync(this.dataDir, { recursive: true, force: true });
    fs.mkdirSync(this.dataDir, { recursive: true });
  }
}

export interface HaOptions {
  /** HOST:PORT of a running `tandem witness` */
  readonly witness: string;
  /** HOST:PORT where the pool's owner exports vol0 */
  readonly poolNbd: string;
}

export interface Both { alpha: VolumeStatus | undefined; beta: VolumeStatus | undefined }

/** Both nodes in sync: alpha PRIM, beta SECOND, no resync running, each copy UpToDate. */
export function inSync(v: Both): boolean {
  const a = v.alpha;
  const b = v.beta;
  return a !== undefined && b !== undefined && a.state === 'PRIM' && b.state === 'SECOND'
    && a.resync === null && b.resync === null && a.diskState === 'UpToDate' && b.diskState === 'UpToDate'
    && a.peerDiskState === 'UpToDate';
}

export class BenchCluster {
  readonly alpha: BenchNode;
  readonly beta: BenchNode;
  private readonly clusterId = crypto.randomBytes(16).toString('hex');
  private readonly secret = crypto.randomBytes(32).toString('hex');

  /** with a witness and a pool on its own address (the failover bench); without, vol0 is a pool of its own */
  ha: HaOptions | undefined;

  private constructor(readonly dir: string, alpha: BenchNode, beta: BenchNode) {
    this.alpha = alpha;
    this.beta = beta;
  }

  /** Picks free ports on both addresses and writes both config files under `dir` (which must exist). */
  static async create(dir: string, vol: VolumeOptions, ha?: HaOptions): Promise<BenchCluster> {
    const nodes = {} as Record<NodeName, BenchNode>;
    for (const n of nodeNames) {
      const host = nodeHosts[n];
      const ports: number[] = [];
      while (ports.length < 4) {
        const p = await freePort(host);
        if (!ports.includes(p)) ports.push(p);
      }
      const [sync, api, nbd, heartbeat] = ports as [number, number, number, number];
      const dataDir = path.join(dir, n);
      fs.mkdirSync(dataDir, { recursive: true });
      nodes[n] = new BenchNode(n, host, { sync, api, nbd, heartbeat }, path.join(dir, `${n}.json`), dataDir);
    }
    const c = new BenchCluster(dir, nodes.alpha, nodes.beta);
    c.ha = ha;
    for (const n of nodeNames) c.writeConfig(n, vol);
    return c;
  }

  node(n: NodeName): BenchNode { return n === 'alpha' ? this.alpha : this.beta; }

  /** the cluster id and secret, as a witness's config lists them */
  secrets(): { id: string; secret: string } { return { id: this.clusterId, secret: this.secret }; }

  get uri(): string { return this.alpha.nbdUri; }

  /** (Re)writes one node's config; it takes effect at that node's next start. */
  writeConfig(n: NodeName, vol: VolumeOptions): void {
    const me = this.node(n);
    const peer = this.node(n === 'alpha' ? 'beta' : 'alpha');
    const config = {
      cluster: { name: 'bench', id: this.clusterId, secret: this.secret },
      node: {
        name: me.name, dataDir: me.dataDir,
        syncListen: `${me.host}:${me.ports.sync}`, apiListen: `${me.host}:${me.ports.api}`, nbdListen: `${me.host}:${me.ports.nbd}`,
      },
      peer: { name: peer.name, syncAddress: `${peer.host}:${peer.ports.sync}` },
      // as `tandem demo` sets them
      sync: { pingIntervalMs: 200, timeoutMs: 1000, reconnectMs: 300 },
      heartbeat: { links: [{ listen: `${me.host}:${me.ports.heartbeat}`, peer: `${peer.host}:${peer.ports.heartbeat}` }] },
      volumes: [{
        name: volumeName, size: vol.size, primary: 'alpha', cacheMode: vol.cacheMode,
        afterSplitBrain: 'disconnect', resyncRate: '0', checksumResync: vol.checksumResync,
      }],
      // default heartbeat timers (200 ms, 1 s): what the failover target is stated for
      ...(this.ha === undefined ? {} : {
        fencing: { policy: 'witness', witness: this.ha.witness },
        pools: [{ name: 'pool0', volumes: [volumeName], preferredNode: 'alpha', nbdListen: this.ha.poolNbd }],
      }),
    };
    fs.writeFileSync(me.configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  }

  /** vol0's status on both nodes; a node that is down or does not answer is undefined. */
  async volumes(): Promise<Both> {
    const one = async (n: BenchNode): Promise<VolumeStatus | undefined> => {
      if (!n.running) return undefined;
      try { return await n.volume(); } catch { return undefined; }
    };
    const [alpha, beta] = await Promise.all([one(this.alpha), one(this.beta)]);
    return { alpha, beta };
  }

  /**
   * Polls both nodes every intervalMs until pred holds; resolves with the
   * statuses that satisfied it and the hrtime (ns) of the poll that saw them.
   * Fails early if a node that should run has exited.
   */
  async waitFor(pred: (v: Both) => boolean, what: string, timeoutMs: number, intervalMs = 50): Promise<{ v: Both; at: bigint }> {
    const want = nodeNames.filter((n) => this.node(n).running);
    const deadline = Date.now() + timeoutMs;
    let last: Both = { alpha: undefined, beta: undefined };
    for (;;) {
      const polled = process.hrtime.bigint();
      last = await this.volumes();
      if (pred(last)) return { v: last, at: polled };
      const died = want.filter((n) => !this.node(n).running);
      if (died.length > 0 || Date.now() > deadline) {
        throw new Error(`${died.length > 0 ? `${died.join(', ')} exited` : `timed out after ${timeoutMs} ms`} waiting for ${what}\n`
          + `alpha: ${JSON.stringify(last.alpha)}\nbeta: ${JSON.stringify(last.beta)}\n${this.logs()}`);
      }
      const spent = Number(process.hrtime.bigint() - polled) / 1e6;
      await sleep(Math.max(0, intervalMs - spent));
    }
  }

  logs(lines = 15): string {
    return `--- alpha log ---\n${this.alpha.logTail(lines)}\n--- beta log ---\n${this.beta.logTail(lines)}`;
  }

  /** Stops both nodes (SIGTERM, in parallel). */
  async stopAll(): Promise<void> {
    const r = await Promise.allSettled([this.alpha.stop(), this.beta.stop()]);
    const bad = r.filter((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (bad.length > 0) throw bad[0]?.reason;
  }

  /** Kills whatever still runs and removes the cluster's directory. */
  async destroy(): Promise<void> {
    await Promise.allSettled([this.alpha.kill(), this.beta.kill()]);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
