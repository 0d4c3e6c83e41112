// A two-node Tandem cluster of real processes for integration tests:
// `tandem node start --config FILE` for "alpha" (127.0.0.2) and "beta"
// (127.0.0.3), each node's peer.syncAddress going through its own link proxy
// (alpha → beta through proxy A, beta → alpha through proxy B), so a test can
// cut, silence and restore the sync link for real. Everything the cluster
// starts is ended by cleanup(), by its own handle, even when a test fails.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { registerNodeToken, tokenFor } from './api-tokens';
import { startLinkProxy, type LinkProxy } from './link-proxy';
import { tandemBin } from './serve-process';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export type NodeName = 'alpha' | 'beta';
export const NODE_HOSTS: Readonly<Record<NodeName, string>> = { alpha: '127.0.0.2', beta: '127.0.0.3' };
export const VOLUME = 'vol0';

// ---------------------------------------------------------------- the documented status JSON

import type { NodeStatus, VolumeStatus } from '../../src/replication/status';

export type { NodeStatus, ResyncStatus, VolumeStatus } from '../../src/replication/status';

export interface VerifyResult {
  checkedBytes: number;
  differingBytes: number;
  differing: Array<{ offset: number; length: number }>;
  resentBytes: number;
}

export interface ApiReply<T = unknown> {
  readonly status: number;
  readonly body: T;
}

// ---------------------------------------------------------------- small tools

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A port that was free on host a moment ago: bind port 0 there, read it, close. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ host, port: 0, exclusive: true }, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** n distinct free ports on host */
async function freePorts(host: string, n: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < n) {
    const p = await freePort(host);
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

/** One HTTP request with an optional JSON body and bearer token; resolves with the status, headers and body text. */
export function httpRaw(
  method: string, host: string, port: number, urlPath: string, body: unknown, timeoutMs: number, bearer: string | null,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request({
      host, port, method, path: urlPath, agent: false, timeout: timeoutMs,
      headers: {
        connection: 'close',
        ...(bearer === null ? {} : { authorization: `Bearer ${bearer}` }),
        ...(data === undefined ? {} : { 'content-type': 'application/json', 'content-length': data.length }),
      },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * One HTTP request with a JSON body; resolves with the status and the parsed JSON answer.
 * `token`: sent as Authorization: Bearer; undefined: the node's own token when a test made the
 * node at host:port (test/helpers/api-tokens.ts); null: none.
 */
export async function httpJson<T = unknown>(
  method: string, host: string, port: number, urlPath: string, body?: unknown, timeoutMs = 60_000, token?: string | null,
): Promise<ApiReply<T>> {
  const bearer = token === undefined ? tokenFor(host, port) : token;
  const r = await httpRaw(method, host, port, urlPath, body, timeoutMs, bearer ?? null);
  let parsed: unknown;
  try {
    parsed = r.text.trim() === '' ? undefined : JSON.parse(r.text);
  } catch {
    throw new Error(`${method} ${urlPath}: HTTP ${r.status} with a body that is not JSON: ${r.text.slice(0, 500)}`);
  }
  return { status: r.status, body: parsed as T };
}

function tail(text: string, lines = 60): string {
  const all = text.split('\n');
  return all.slice(Math.max(0, all.length - lines)).join('\n');
}

// ---------------------------------------------------------------- one node

export interface NodeAddresses {
  readonly sync: { host: string; port: number };
  /** UDP: heartbeats do not go through the link proxies */
  readonly heartbeat: { host: string; port: number };
  readonly api: { host: string; port: number };
  readonly nbd: { host: string; port: number };
}

export class TandemNode {
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private output = '';
  private starts = 0;
  /** the last start saw the documented "node NAME ready" line (not just an answering API) */
  sawReadyLine = false;

  constructor(
    readonly name: NodeName,
    readonly configPath: string,
    readonly dataDir: string,
    readonly addr: NodeAddresses,
    /** argv before `node …`, e.g. ['ip', 'netns', 'exec', NS] to run the node in a network namespace (it execs: same PID) */
    private readonly spawnPrefix: readonly string[] = [],
  ) {
    registerNodeToken(addr.api, dataDir);
  }

  /** the node's own admin token (DATA_DIR/api-token), once its API has started */
  get token(): string {
    const t = tokenFor(this.addr.api.host, this.addr.api.port);
    if (t === undefined) throw new Error(`${this.name}: no ${path.join(this.dataDir, 'api-token')} yet`);
    return t;
  }

  /** nbd://HOST:PORT/vol0: where this node exports the volume while it is primary */
  get nbdUri(): string { return `nbd://${this.addr.nbd.host}:${this.addr.nbd.port}/${VOLUME}`; }
  /** DATADIR/volumes/vol0.img */
  get backingPath(): string { return path.join(this.dataDir, 'volumes', `${VOLUME}.img`); }
  get running(): boolean { return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null; }
  get pid(): number | undefined { return this.running ? this.child?.pid : undefined; }

  /** stdout and stderr of every run of this node so far, each run headed by a marker line */
  log(): string { return this.output; }

  /** The log since `mark` (a length of log() taken earlier). */
  logSince(mark: number): string { return this.output.slice(mark); }

  /** Starts the node and waits until its API answers (or it prints "node NAME ready"). */
  async start(timeoutMs = 30_000): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.starts++;
    this.output += `\n===== ${this.name}: start #${this.starts} at ${new Date().toISOString()} =====\n`;
    const argv = [...this.spawnPrefix, process.execPath, tandemBin, 'node', 'start', '--config', this.configPath];
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.sawReadyLine = false;
    let ready = false;
    let stdoutText = '';
    child.stdout?.on('data', (d: Buffer) => {
      const s = d.toString();
      this.output += s;
      stdoutText += s;
      if (stdoutText.includes(`node ${this.name} ready`)) { ready = true; this.sawReadyLine = true; }
    });
    child.stderr?.on('data', (d: Buffer) => { this.output += d.toString(); });
    let exitedNow = false;
    this.exited = new Promise((resolve) => {
      child.once('error', (e) => { this.output += `spawn error: ${e.message}\n`; exitedNow = true; resolve(null); });
      child.once('exit', (code, signal) => {
        this.output += `===== ${this.name} exited: code ${code} signal ${signal} =====\n`;
        exitedNow = true;
        resolve(code);
      });
    });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exitedNow) throw new Error(`${this.name} exited before it was ready:\n${tail(this.output)}`);
      if (ready) return;
      // the documented "ready" line may be missing: an answering API will do
      try {
        const r = await httpJson('GET', this.addr.api.host, this.addr.api.port, '/api/v1/health', undefined, 2000, null);
        if (r.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        this.killNow();
        throw new Error(`${this.name} was not ready within ${timeoutMs} ms:\n${tail(this.output)}`);
      }
      await sleep(100);
    }
  }

  /** SIGTERM, and wait for the exit (SIGKILL after timeoutMs); resolves with the exit code. */
  async stop(timeoutMs = 20_000): Promise<number | null> {
    if (!this.running) return this.exited;
    this.child?.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.exited, new Promise<'hung'>((resolve) => { timer = setTimeout(() => resolve('hung'), timeoutMs); })]);
    clearTimeout(timer);
    if (r === 'hung') {
      this.output += `===== ${this.name} did not stop within ${timeoutMs} ms of SIGTERM: SIGKILL =====\n`;
      this.killNow();
      await this.exited;
      throw new Error(`${this.name} did not exit within ${timeoutMs} ms of SIGTERM:\n${tail(this.output)}`);
    }
    return r;
  }

  /** SIGKILL (kill -9), and wait until the process is gone. */
  async kill9(): Promise<void> {
    this.killNow();
    await this.exited;
  }

  /** Stops the node if it runs (SIGTERM), then starts it again. */
  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.start();
  }

  private killNow(): void {
    if (this.running) this.child?.kill('SIGKILL');
  }

  async status(): Promise<NodeStatus> {
    const r = await httpJson<NodeStatus>('GET', this.addr.api.host, this.addr.api.port, '/api/v1/status', undefined, 10_000);
    if (r.status !== 200) throw new Error(`${this.name}: GET /api/v1/status answered HTTP ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** vol0's entry in status() */
  async volume(): Promise<VolumeStatus> {
    const s = await this.status();
    const v = s.volumes.find((x) => x.name === VOLUME);
    if (v === undefined) throw new Error(`${this.name}: status lists no volume ${VOLUME}: ${JSON.stringify(s)}`);
    return v;
  }

  /** POST a JSON body to the API; resolves with any HTTP status. */
  post<T = unknown>(urlPath: string, body: unknown = {}, timeoutMs = 120_000): Promise<ApiReply<T>> {
    return httpJson<T>('POST', this.addr.api.host, this.addr.api.port, urlPath, body, timeoutMs);
  }

  /** POST, and fail unless the answer is 2xx; resolves with the body. */
  async postOk<T = unknown>(urlPath: string, body: unknown = {}, timeoutMs = 120_000): Promise<T> {
    const r = await this.post<T>(urlPath, body, timeoutMs);
    if (r.status < 200 || r.status > 299) {
      throw new Error(`${this.name}: POST ${urlPath} ${JSON.stringify(body)} answered HTTP ${r.status}: ${JSON.stringify(r.body)}\n${tail(this.output, 30)}`);
    }
    return r.body;
  }

  /** Kills the process if it still runs; for cleanup. */
  async ensureDead(): Promise<void> {
    if (this.running) {
      this.killNow();
      await this.exited;
    }
  }
}

// ---------------------------------------------------------------- the cluster

export interface ClusterOptions {
  /** vol0's size, as the config takes it ("64M", or bytes) */
  readonly size: string | number;
  readonly cacheMode?: 'write-back' | 'write-through';
  readonly afterSplitBrain?: string;
  readonly resyncRate?: string | number;
  readonly checksumResync?: boolean;
  readonly activityLogExtents?: number;
  readonly primary?: NodeName;
  readonly timeoutMs?: number;
  readonly pingIntervalMs?: number;
  readonly reconnectMs?: number;
  readonly heartbeatIntervalMs?: number;
  readonly heartbeatTimeoutMs?: number;
  /** the config's `fencing` section as is (default: none, i.e. policy manual) */
  readonly fencing?: Record<string, unknown>;
  /** more top-level config keys for a node (they replace what the helper wrote) */
  readonly extraConfig?: (node: NodeName) => Record<string, unknown>;
  /** the config's `pools` list as is (default: none, i.e. vol0 is a pool of its own) */
  readonly pools?: ReadonlyArray<Record<string, unknown>>;
  /** record up to this many bytes per direction of each connection through the proxies */
  readonly recordLinkBytes?: number;
  /** start both nodes (default true) */
  readonly start?: boolean;
  /** prefix of the temp dir */
  readonly prefix?: string;
  /** each node's loopback address (default NODE_HOSTS): a test that must not share them with others picks its own */
  readonly hosts?: Readonly<Record<NodeName, string>>;
}

export interface BothVolumes {
  alpha: VolumeStatus | undefined;
  beta: VolumeStatus | undefined;
}

export class Cluster {
  readonly nodes: readonly TandemNode[];
  private cleaned = false;

  constructor(
    readonly dir: string,
    readonly alpha: TandemNode,
    readonly beta: TandemNode,
    /** alpha → beta */
    readonly proxyA: LinkProxy,
    /** beta → alpha */
    readonly proxyB: LinkProxy,
    readonly clusterId: string,
    readonly secret: string,
  ) {
    this.nodes = [alpha, beta];
  }

  node(name: NodeName): TandemNode {
    return name === 'alpha' ? this.alpha : this.beta;
  }

  /** vol0's status on both nodes; a node that does not answer is undefined. */
  async volumes(): Promise<BothVolumes> {
    const one = async (n: TandemNode): Promise<VolumeStatus | undefined> => {
      if (!n.running) return undefined;
      try {
        return await n.volume();
      } catch {
        return undefined;
      }
    };
    const [alpha, beta] = await Promise.all([one(this.alpha), one(this.beta)]);
    return { alpha, beta };
  }

  /**
   * Polls vol0's status on both nodes until pred holds; resolves with the
   * statuses that satisfied it. On timeout the error shows the last statuses
   * and the end of both logs.
   */
  async waitFor(pred: (v: BothVolumes) => boolean, timeoutMs: number, what: string): Promise<BothVolumes> {
    const deadline = Date.now() + timeoutMs;
    let last: BothVolumes = { alpha: undefined, beta: undefined };
    for (;;) {
      last = await this.volumes();
      let ok = false;
      try {
        ok = pred(last);
      } catch {
        ok = false;
      }
      if (ok) return last;
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n` +
          `alpha: ${JSON.stringify(last.alpha)}\nbeta: ${JSON.stringify(last.beta)}\n${this.logs(40)}`);
      }
      await sleep(100);
    }
  }

  /** Waits until alpha's vol0 is in state a and beta's in state b. */
  waitForStates(a: VolumeStatus['state'], b: VolumeStatus['state'], timeoutMs = 30_000): Promise<BothVolumes> {
    return this.waitFor((v) => v.alpha?.state === a && v.beta?.state === b, timeoutMs, `alpha ${a} and beta ${b}`);
  }

  /** The end of both nodes' logs, for failure messages. */
  logs(lines = 60): string {
    return `--- alpha log ---\n${tail(this.alpha.log(), lines)}\n--- beta log ---\n${tail(this.beta.log(), lines)}`;
  }

  /** Resets every sync connection and refuses new ones, both ways. */
  cutLink(): void {
    this.proxyA.cut();
    this.proxyB.cut();
  }

  /** Keeps the sync connections open but silent, both ways. */
  blackholeLink(): void {
    this.proxyA.blackhole();
    this.proxyB.blackhole();
  }

  restoreLink(): void {
    this.proxyA.restore();
    this.proxyB.restore();
  }

  /** Kills only the processes this cluster started, closes the proxies, removes the temp dir. Safe to call twice. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    const problems: string[] = [];
    for (const n of this.nodes) {
      try {
        await n.ensureDead();
      } catch (e) {
        problems.push(`${n.name}: ${(e as Error).message}`);
      }
    }
    await Promise.allSettled([this.proxyA.close(), this.proxyB.close()]);
    if (process.env.TANDEM_KEEP_TEST_DIRS === undefined) fs.rmSync(this.dir, { recursive: true, force: true });
    if (problems.length > 0) throw new Error(`cluster cleanup: ${problems.join('; ')}`);
  }
}

/** Writes both config files, starts the link proxies and (unless told not to) both nodes. */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), o.prefix ?? 'tandem-cluster-'));
  const clusterId = crypto.randomBytes(16).toString('hex');
  const secret = crypto.randomBytes(32).toString('hex');
  const names: NodeName[] = ['alpha', 'beta'];
  const proxies: LinkProxy[] = [];
  let cluster: Cluster | undefined;
  try {
    const addrs = {} as Record<NodeName, NodeAddresses>;
    const proxyPort = {} as Record<NodeName, number>;
    for (const n of names) {
      const host = (o.hosts ?? NODE_HOSTS)[n];
      // four distinct ports per address, so the proxy cannot take one a node is about to bind
      const [sync, api, nbd, proxy, heartbeat] = await freePorts(host, 5) as [number, number, number, number, number];
      addrs[n] = { sync: { host, port: sync }, api: { host, port: api }, nbd: { host, port: nbd }, heartbeat: { host, port: heartbeat } };
      proxyPort[n] = proxy;
    }
    // proxy A stands in for beta (alpha dials it), proxy B for alpha
    const record = o.recordLinkBytes ?? 0;
    const proxyA = await startLinkProxy({ host: addrs.beta.sync.host, port: proxyPort.beta, target: addrs.beta.sync, recordBytes: record });
    proxies.push(proxyA);
    const proxyB = await startLinkProxy({ host: addrs.alpha.sync.host, port: proxyPort.alpha, target: addrs.alpha.sync, recordBytes: record });
    proxies.push(proxyB);
    const viaProxy: Record<NodeName, LinkProxy> = { alpha: proxyA, beta: proxyB };

    const pingIntervalMs = o.pingIntervalMs ?? 250;
    const timeoutMs = o.timeoutMs ?? 1500;
    const nodes = names.map((n) => {
      const peer: NodeName = n === 'alpha' ? 'beta' : 'alpha';
      const dataDir = path.join(dir, n);
      fs.mkdirSync(dataDir, { recursive: true });
      const a = addrs[n];
      const config = {
        cluster: { name: 'test', id: clusterId, secret },
        node: {
          name: n,
          dataDir,
          syncListen: `${a.sync.host}:${a.sync.port}`,
          apiListen: `${a.api.host}:${a.api.port}`,
          nbdListen: `${a.nbd.host}:${a.nbd.port}`,
        },
        peer: { name: peer, syncAddress: viaProxy[n].address },
        sync: { pingIntervalMs, timeoutMs, reconnectMs: o.reconnectMs ?? 250 },
        heartbeat: {
          intervalMs: o.heartbeatIntervalMs ?? 100, timeoutMs: o.heartbeatTimeoutMs ?? 600,
          links: [{ listen: `${a.heartbeat.host}:${a.heartbeat.port}`, peer: `${addrs[peer].heartbeat.host}:${addrs[peer].heartbeat.port}` }],
        },
        ...(o.fencing === undefined ? {} : { fencing: o.fencing }),
        ...(o.pools === undefined ? {} : { pools: o.pools }),
        ...(o.extraConfig?.(n) ?? {}),
        volumes: [{
          name: VOLUME,
          size: o.size,
          primary: o.primary ?? 'alpha',
          cacheMode: o.cacheMode ?? 'write-back',
          afterSplitBrain: o.afterSplitBrain ?? 'disconnect',
          resyncRate: String(o.resyncRate ?? '0'),
          checksumResync: o.checksumResync ?? true,
          ...(o.activityLogExtents === undefined ? {} : { activityLogExtents: o.activityLogExtents }),
        }],
      };
      const configPath = path.join(dir, `${n}.json`);
      fs.writeFileSync(configPath, JSON.stringify(config, null, 2) + '\n');
      return new TandemNode(n, configPath, dataDir, a);
    });
    cluster = new Cluster(dir, nodes[0] as TandemNode, nodes[1] as TandemNode, proxyA, proxyB, clusterId, secret);
    if (o.start !== false) await Promise.all(cluster.nodes.map((n) => n.start()));
    return cluster;
  } catch (e) {
    if (cluster !== undefined) {
      await cluster.cleanup().catch(() => undefined);
    } else {
      await Promise.allSettled(proxies.map((p) => p.close()));
      fs.rmSync(dir, { recursive: true, force: true });
    }
    throw e;
  }
}

/**
 * Starts a cluster, runs fn, and always cleans up. When fn fails, the error
 * message gets both nodes' logs appended.
 */
export async function withCluster<T>(o: ClusterOptions, fn: (c: Cluster) => Promise<T>): Promise<T> {
  const c = await startCluster(o);
  try {
    return await fn(c);
  } catch (e) {
    if (e instanceof Error && !e.message.includes('--- alpha log ---')) e.message += `\n${c.logs(80)}`;
    throw e;
  } finally {
    await c.cleanup();
  }
}

export { readFileRange, sha256File } from './files';
