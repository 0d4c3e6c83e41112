// The torture's cluster: four network namespaces on one bridge in
// 198.18.S.0/24 — alpha (.1), beta (.2), the witness (.3), the clients (.4) —
// two real `tandem node start` processes under the `witness` fencing policy,
// a real `tandem witness`, and one pool whose volume is exported on the
// floating IP .100 by whichever node owns it (the `linux` driver: real
// addresses, duplicate-address probes, gratuitous ARP).
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { httpJson, TandemNode, type NodeName, type NodeStatus } from '../test/helpers/cluster';
import { createNetns, type Netns } from '../test/helpers/netns';
import { tandemBin } from '../test/helpers/serve-process';

export const POOL = 'pool0';
export const VOLUME = 'vol0';
export const SYNC_PORT = 7788;
export const HEARTBEAT_PORT = 7789;
export const API_PORT = 7780;
export const NBD_PORT = 10809;
export const WITNESS_PORT = 7790;
export const VIP_OCTET = 100;

/** the hosts of the network: a node, the witness, or the clients */
export type Host = NodeName | 'witness' | 'clients';
const NETNS_HOST: Readonly<Record<Host, string>> = { alpha: 'a', beta: 'b', witness: 'w', clients: 'c' };

/** The cluster's timing: a lease of 600 ms, a sync timeout of 1.5 s, a hung main thread failed over after 3 s. */
export const timing = {
  heartbeatIntervalMs: 100, heartbeatTimeoutMs: 600, mainStallMs: 3_000,
  syncPingMs: 250, syncTimeoutMs: 1_500, reconnectMs: 250, fencingRetryMs: 500,
} as const;

export interface TortureClusterOptions {
  readonly subnet: number;
  readonly dir: string;
  /** the volume's size in bytes */
  readonly sizeBytes: number;
  /** faults.ackBeforePeer on both nodes: the broken build */
  readonly ackBeforePeer: boolean;
}

/** `tandem witness` in its own namespace; start() again after a kill. */
export class WitnessProc {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output = '';
  private starts = 0;

  constructor(private readonly prefix: readonly string[], readonly address: string, private readonly configPath: string) {}

  get running(): boolean { return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null; }
  get pid(): number | undefined { return this.running ? this.child?.pid : undefined; }
  log(): string { return this.output; }

  async start(timeoutMs = 15_000): Promise<void> {
    if (this.running) throw new Error('the witness is already running');
    this.starts++;
    this.output += `\n===== witness: start #${this.starts} at ${new Date().toISOString()} =====\n`;
    const argv = [...this.prefix, process.execPath, tandemBin, 'witness', '--listen', this.address, '--config', this.configPath];
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let gone = false;
    this.exited = new Promise((resolve) => {
      child.once('error', (e) => { this.output += `spawn error: ${e.message}\n`; gone = true; resolve(); });
      child.once('exit', (code, signal) => { this.output += `===== witness exited: code ${code} signal ${signal} =====\n`; gone = true; resolve(); });
    });
    let ready = false;
    child.stdout?.on('data', (d: Buffer) => {
      this.output += d.toString();
      if (this.output.includes(`listening on ${this.address}`)) ready = true;
    });
    child.stderr?.on('data', (d: Buffer) => { this.output += d.toString(); });
    const deadline = Date.now() + timeoutMs;
    while (!ready) {
      if (gone) throw new Error(`the witness exited at start:\n${this.output.slice(-2000)}`);
      if (Date.now() > deadline) {
        await this.kill9();
        throw new Error(`the witness did not listen on ${this.address} within ${timeoutMs} ms:\n${this.output.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async kill9(): Promise<void> {
    if (this.running) this.child?.kill('SIGKILL');
    await this.exited;
  }
}

export class TortureCluster {
  readonly nodes: readonly TandemNode[];
  private cleaned = false;

  private constructor(
    readonly net: Netns, readonly dir: string, readonly alpha: TandemNode, readonly beta: TandemNode, readonly witness: WitnessProc,
    readonly subnet: number,
  ) {
    this.nodes = [alpha, beta];
  }

  node(n: NodeName): TandemNode { return n === 'alpha' ? this.alpha : this.beta; }
  ip(h: Host): string { return (this.net.hosts[NETNS_HOST[h]] as { ip: string }).ip; }
  netnsHost(h: Host): string { return NETNS_HOST[h]; }
  get vip(): string { return `198.18.${this.subnet}.${VIP_OCTET}`; }

  /** the node's status, or undefined when it does not answer within timeoutMs */
  async status(n: NodeName, timeoutMs = 1_000): Promise<NodeStatus | undefined> {
    const node = this.node(n);
    if (!node.running) return undefined;
    try {
      const r = await httpJson<NodeStatus>('GET', node.addr.api.host, node.addr.api.port, '/api/v1/status', undefined, timeoutMs);
      return r.status === 200 ? r.body : undefined;
    } catch {
      return undefined;
    }
  }

  /** Kills whatever still runs (by PID), removes the network, and the directory unless told to keep it. */
  async cleanup(keepDir: boolean): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const n of this.nodes) {
      // a stopped process must run again to die of anything but SIGKILL; SIGKILL it is
      await n.ensureDead().catch(() => undefined);
    }
    await this.witness.kill9().catch(() => undefined);
    await this.net.cleanup();
    if (!keepDir) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  static async create(o: TortureClusterOptions): Promise<TortureCluster> {
    const net = await createNetns({ subnet: o.subnet, hosts: ['a', 'b', 'w', 'c'] });
    try {
      const clusterId = crypto.randomBytes(16).toString('hex');
      const secret = crypto.randomBytes(32).toString('hex');
      const ip = (h: Host): string => (net.hosts[NETNS_HOST[h]] as { ip: string }).ip;
      const witnessAddress = `${ip('witness')}:${WITNESS_PORT}`;
      const witnessConfig = path.join(o.dir, 'witness.json');
      fs.writeFileSync(witnessConfig, JSON.stringify({ name: 'witness', stateFile: path.join(o.dir, 'witness-state.json'), clusters: [{ id: clusterId, secret }] }, null, 2) + '\n');
      const witness = new WitnessProc(net.prefix(NETNS_HOST.witness), witnessAddress, witnessConfig);
      const nodes = (['alpha', 'beta'] as const).map((n) => {
        const peer: NodeName = n === 'alpha' ? 'beta' : 'alpha';
        const dataDir = path.join(o.dir, n);
        fs.mkdirSync(dataDir, { recursive: true });
        const me = ip(n);
        const config = {
          cluster: { name: 'torture', id: clusterId, secret },
          node: { name: n, dataDir, syncListen: `${me}:${SYNC_PORT}`, apiListen: `${me}:${API_PORT}`, nbdListen: `${me}:${NBD_PORT}` },
          peer: { name: peer, syncAddress: `${ip(peer)}:${SYNC_PORT}` },
          sync: { pingIntervalMs: timing.syncPingMs, timeoutMs: timing.syncTimeoutMs, reconnectMs: timing.reconnectMs },
          heartbeat: {
            intervalMs: timing.heartbeatIntervalMs, timeoutMs: timing.heartbeatTimeoutMs, mainStallMs: timing.mainStallMs,
            links: [{ listen: `${me}:${HEARTBEAT_PORT}`, peer: `${ip(peer)}:${HEARTBEAT_PORT}` }],
          },
          fencing: { policy: 'witness', witness: witnessAddress, retryMs: timing.fencingRetryMs },
          floatingIp: { driver: 'linux', probeMs: 300, announceCount: 3 },
          volumes: [{ name: VOLUME, size: o.sizeBytes, cacheMode: 'write-back', resyncRate: '0', checksumResync: true }],
          pools: [{
            name: POOL, volumes: [VOLUME], preferredNode: 'alpha', autoFailback: false,
            floatingIps: [{ address: `198.18.${o.subnet}.${VIP_OCTET}/24`, interface: 'eth0' }], nbdPort: NBD_PORT,
          }],
          faults: { enabled: true, ...(o.ackBeforePeer ? { ackBeforePeer: true } : {}) },
        };
        const configPath = path.join(o.dir, `${n}.json`);
        fs.writeFileSync(configPath, JSON.stringify(config, null, 2) + '\n');
        const addr = {
          sync: { host: me, port: SYNC_PORT }, heartbeat: { host: me, port: HEARTBEAT_PORT }, api: { host: me, port: API_PORT }, nbd: { host: me, port: NBD_PORT },
        };
        return new TandemNode(n, configPath, dataDir, addr, net.prefix(NETNS_HOST[n]));
      });
      return new TortureCluster(net, o.dir, nodes[0] as TandemNode, nodes[1] as TandemNode, witness, o.subnet);
    } catch (e) {
      await net.cleanup();
      throw e;
    }
  }
}
