// A two-node cluster across network namespaces (docs/pools.md): alpha in host
// a, beta in host b, clients in host c, all on one bridge in 198.18.S.0/24.
// Floating IPs use the real `linux` driver; fencing cuts the peer's switch port
// (the bridge port of its veth), as fabric fencing does.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TandemNode, sleep, type NodeName, type NodeStatus } from './cluster';
import { createNetns, type Netns } from './netns';
import { eachLine } from './files';
import { repoRoot } from './serve-process';
import type { PoolStatus } from '../../src/replication/status';

export const SYNC_PORT = 7788;
export const API_PORT = 7780;
export const NBD_PORT = 10809;

export interface NetnsPool {
  readonly name: string;
  readonly volume: string;
  readonly preferredNode: NodeName;
  /** the last octet of the pool's floating IP in 198.18.S.0/24 */
  readonly vipOctet: number;
  readonly autoFailback?: boolean;
  readonly nbdPort?: number;
}

export interface NetnsClusterOptions {
  readonly subnet: number;
  readonly pools: readonly NetnsPool[];
  /** each volume's size */
  readonly size: string;
  readonly start?: boolean;
}

export class NetnsCluster {
  readonly nodes: readonly TandemNode[];
  private cleaned = false;

  constructor(readonly net: Netns, readonly dir: string, readonly alpha: TandemNode, readonly beta: TandemNode, readonly o: NetnsClusterOptions) {
    this.nodes = [alpha, beta];
  }

  node(n: NodeName): TandemNode { return n === 'alpha' ? this.alpha : this.beta; }
  host(n: NodeName): 'a' | 'b' { return n === 'alpha' ? 'a' : 'b'; }
  vip(pool: string): string {
    const p = this.o.pools.find((x) => x.name === pool);
    if (p === undefined) throw new Error(`no pool ${pool}`);
    return `198.18.${this.o.subnet}.${p.vipOctet}`;
  }

  async pool(n: NodeName, pool: string): Promise<PoolStatus | undefined> {
    const s: NodeStatus = await this.node(n).status();
    return s.clusterState?.pools.find((p) => p.name === pool);
  }

  /** Polls until the pool is in `phase` on node n; the error shows both nodes' views and logs. */
  async waitPool(n: NodeName, pool: string, phase: string, timeoutMs = 30_000, extra?: (p: PoolStatus) => boolean): Promise<PoolStatus> {
    const deadline = Date.now() + timeoutMs;
    let last: PoolStatus | undefined;
    for (;;) {
      try {
        last = await this.pool(n, pool);
        if (last?.phase === phase && (extra === undefined || extra(last))) return last;
      } catch {
        // not answering right now
      }
      if (Date.now() > deadline) throw new Error(`pool ${pool} on ${n} is not ${phase} after ${timeoutMs} ms: ${JSON.stringify(last)}\n${this.logs(40)}`);
      await sleep(50);
    }
  }

  /** the CIDRs on eth0 in node n's namespace */
  addresses(n: NodeName): Promise<string[]> { return this.net.addresses(this.host(n)); }

  async waitAddress(n: NodeName, cidr: string, present: boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if ((await this.addresses(n)).includes(cidr) === present) return;
      if (Date.now() > deadline) throw new Error(`${cidr} is ${present ? 'not ' : ''}on ${n} after ${timeoutMs} ms\n${this.logs(40)}`);
      await sleep(20);
    }
  }

  logs(lines = 60): string {
    const tail = (t: string): string => t.split('\n').slice(-lines).join('\n');
    return `--- alpha log ---\n${tail(this.alpha.log())}\n--- beta log ---\n${tail(this.beta.log())}`;
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    await Promise.allSettled(this.nodes.map((n) => n.ensureDead()));
    await this.net.cleanup();
    if (process.env.TANDEM_KEEP_TEST_DIRS === undefined) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function startNetnsCluster(o: NetnsClusterOptions): Promise<NetnsCluster> {
  const net = await createNetns({ subnet: o.subnet, hosts: ['a', 'b', 'c'] });
  let dir: string | undefined;
  try {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-netns-'));
    const clusterId = crypto.randomBytes(16).toString('hex');
    const secret = crypto.randomBytes(32).toString('hex');
    const ipOf = (n: NodeName): string => `198.18.${o.subnet}.${n === 'alpha' ? 1 : 2}`;
    const nodes = (['alpha', 'beta'] as const).map((n) => {
      const peer: NodeName = n === 'alpha' ? 'beta' : 'alpha';
      const ip = ipOf(n);
      const dataDir = path.join(dir as string, n);
      fs.mkdirSync(dataDir, { recursive: true });
      const config = {
        cluster: { name: 'netns', id: clusterId, secret },
        node: { name: n, dataDir, syncListen: `${ip}:${SYNC_PORT}`, apiListen: `${ip}:${API_PORT}`, nbdListen: `${ip}:${NBD_PORT}` },
        peer: { name: peer, syncAddress: `${ipOf(peer)}:${SYNC_PORT}` },
        sync: { pingIntervalMs: 250, timeoutMs: 1500, reconnectMs: 250 },
        heartbeat: { intervalMs: 100, timeoutMs: 600 },
        // fabric fencing: the survivor shuts the peer's switch port before it takes anything over
        fencing: { policy: 'fence', command: ['sh', '-c', net.fenceCommand(peer === 'alpha' ? 'a' : 'b')], commandTimeoutMs: 10_000 },
        floatingIp: { driver: 'linux', probeMs: 300, announceCount: 3 },
        volumes: o.pools.map((p) => ({ name: p.volume, size: o.size, cacheMode: 'write-back', resyncRate: '0' })),
        pools: o.pools.map((p) => ({
          name: p.name, volumes: [p.volume], preferredNode: p.preferredNode, autoFailback: p.autoFailback ?? false,
          floatingIps: [{ address: `198.18.${o.subnet}.${p.vipOctet}/24`, interface: 'eth0' }],
          ...(p.nbdPort === undefined ? {} : { nbdPort: p.nbdPort }),
        })),
      };
      const configPath = path.join(dir as string, `${n}.json`);
      fs.writeFileSync(configPath, JSON.stringify(config, null, 2) + '\n');
      const addr = {
        sync: { host: ip, port: SYNC_PORT }, heartbeat: { host: ip, port: SYNC_PORT + 1 }, api: { host: ip, port: API_PORT }, nbd: { host: ip, port: NBD_PORT },
      };
      return new TandemNode(n, configPath, dataDir, addr, net.prefix(n === 'alpha' ? 'a' : 'b'));
    });
    const c = new NetnsCluster(net, dir, nodes[0] as TandemNode, nodes[1] as TandemNode, o);
    if (o.start !== false) {
      try {
        await Promise.all(c.nodes.map((n) => n.start()));
      } catch (e) {
        await c.cleanup();
        throw e;
      }
    }
    return c;
  } catch (e) {
    await net.cleanup();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

// ---------------------------------------------------------------- the client under load

export interface WriterEvent { readonly event: string; readonly at?: number; readonly [k: string]: unknown }

/** acked-writer running in host c against a pool's floating IP */
export class Writer {
  readonly events: WriterEvent[] = [];
  private readonly exited: Promise<number | null>;
  private stderr = '';

  private constructor(private readonly child: ChildProcess, readonly logFile: string) {
    eachLine(child.stdout, (line) => {
      try { this.events.push(JSON.parse(line) as WriterEvent); } catch { /* not an event line */ }
    });
    child.stderr?.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  static start(c: NetnsCluster, pool: string, volume: string, o: { port?: number; blocks?: number } = {}): Writer {
    const logFile = path.join(c.dir, `writer-${pool}.json`);
    const argv = [...c.net.prefix('c'), process.execPath, writerScript, 'write', '--host', c.vip(pool), '--port', String(o.port ?? NBD_PORT),
      '--export', volume, '--blocks', String(o.blocks ?? 2048), '--block-size', '4096', '--depth', '4', '--log', logFile, '--max-seconds', '300'];
    return new Writer(spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }), logFile);
  }

  acked(): number {
    const p = this.events.filter((e) => e.event === 'progress').at(-1);
    return typeof p?.acked === 'number' ? p.acked : 0;
  }

  async waitFor(pred: (events: readonly WriterEvent[]) => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (Date.now() > deadline) throw new Error(`writer: ${what} did not happen within ${timeoutMs} ms; events: ${JSON.stringify(this.events.slice(-10))}\n${this.stderr}`);
      await sleep(50);
    }
  }

  /** SIGTERM, wait for the summary; resolves with the "done" event */
  async stop(): Promise<WriterEvent> {
    this.child.kill('SIGTERM');
    const code = await this.exited;
    const done = this.events.find((e) => e.event === 'done');
    if (code !== 0 || done === undefined) throw new Error(`writer exited ${String(code)} without a summary:\n${this.stderr}`);
    return done;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

const writerScript = path.join(repoRoot, 'dist', 'test', 'helpers', 'acked-writer.js');

/** Reads every block the writer's log names through the pool's floating IP, from host c; resolves with the verifier's summary. */
export async function verifyAcked(c: NetnsCluster, pool: string, volume: string, logFile: string, port = NBD_PORT): Promise<{ code: number; summary: string }> {
  const r = await c.net.exec('c', process.execPath, [writerScript, 'verify', '--host', c.vip(pool), '--port', String(port), '--export', volume, '--log', logFile],
    { timeoutMs: 120_000, allowFail: true });
  return { code: r.code, summary: r.stdout.trim() + r.stderr.trim() };
}

/** A process of the test's own in a host's namespace (a squatter on a port, say); killed by PID. */
export interface HostProcess { ready(text: string, timeoutMs?: number): Promise<void>; kill(): void }

export function spawnInHost(net: Netns, host: string, cmd: string, args: string[]): HostProcess {
  const argv = [...net.prefix(host), cmd, ...args];
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { out += d.toString(); });
  return {
    async ready(text, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!out.includes(text)) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${cmd} in ${host} did not print ${JSON.stringify(text)}: ${out}`);
        await sleep(20);
      }
    },
    kill() { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); },
  };
}
