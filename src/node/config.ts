// The node configuration file (docs/mirroring.md): parsed and checked as a
// whole, so a bad file is one clear error and the node does not start.
import net from 'node:net';
import type { FencingPolicy } from '../cluster/machine-types';
import { parseApplications, parseFilesystem, type ApplicationConfig, type FilesystemConfig } from '../app/config';
import { parseNotify, type HookConfig } from './notify';
import { activityLogDefaults, activityLogLimits } from '../core/activity-log';
import { parseSplitBrainPolicy, type SplitBrainPolicy } from '../core/generations';
import type { CacheMode } from '../replication/replica';
import { isLoopbackAddress, parseCidr, type FloatingIp, type FloatingIpDriverName } from '../pool/floating-ip';
import { parseHostPort } from '../util/address';
import { ConfigError, fail, hex, obj, type Obj } from '../util/config-fields';
import { parseSize } from '../util/size';

export { ConfigError };

export interface HostPort { readonly host: string; readonly port: number }

export interface VolumeConfig {
  readonly name: string;
  readonly size: number;
  readonly primary: string;
  readonly cacheMode: CacheMode;
  readonly afterSplitBrain: SplitBrainPolicy;
  readonly resyncRate: number;
  readonly checksumResync: boolean;
  /** active activity-log extents (4 MiB each): what a crash of the primary may leave to resync (DRBD's al-extents) */
  readonly activityLogExtents: number;
}

export interface HeartbeatLinkConfig { readonly listen: HostPort; readonly peer: HostPort }

export interface HeartbeatConfig {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** a main thread silent this long stops the heartbeats, so a hung node is failed over */
  readonly mainStallMs: number;
  readonly links: readonly HeartbeatLinkConfig[];
}

export interface FencingConfig {
  readonly policy: FencingPolicy;
  /** `fence`: argv of the command that powers the peer off; exit 0 = fenced */
  readonly command: readonly string[] | null;
  readonly commandTimeoutMs: number;
  readonly retryMs: number;
  /** `witness`: where the witness listens */
  readonly witness: HostPort | null;
  readonly witnessTimeoutMs: number;
  readonly takeoverMarginMs: number;
  /** at start, how long to wait for the peer before acting alone */
  readonly startWaitMs: number;
  /**
   * the split-brain checker: addresses (a gateway) pinged every checkIntervalMs; while none
   * answers, this node may be the isolated side and takes nothing over (docs/cluster.md)
   */
  readonly checkAddresses: readonly string[];
  readonly checkIntervalMs: number;
  readonly checkTimeoutMs: number;
}

export interface PoolConfig {
  readonly name: string;
  readonly volumes: readonly string[];
  readonly preferredNode: string;
  readonly autoFailback: boolean;
  /** where the pool's owner exports its volumes without floating IPs; node.nbdListen when absent */
  readonly nbdListen: HostPort | null;
  /** the addresses that follow the pool; its exports listen on each, at nbdPort */
  readonly floatingIps: readonly FloatingIp[];
  readonly nbdPort: number;
  /** a filesystem on one of the volumes, mounted by the owner before its applications start */
  readonly filesystem: FilesystemConfig | null;
  /** started in order after the exports and the filesystem, stopped in reverse */
  readonly applications: readonly ApplicationConfig[];
  /** managed: the cluster runs it; unmanaged: left as it is, services and all; exported: released on both nodes, data kept */
  readonly control: PoolControl;
}

export type PoolControl = 'managed' | 'unmanaged' | 'exported';

const POOL_CONTROLS: readonly PoolControl[] = ['managed', 'unmanaged', 'exported'];

export interface FloatingIpConfig {
  readonly driver: FloatingIpDriverName;
  /** how long the duplicate-address probe before adding an address waits for an answer */
  readonly probeMs: number;
  /** gratuitous ARPs (or unsolicited NAs) of each kind after adding, one a second */
  readonly announceCount: number;
}

/** test and diagnostic hooks (docs/cluster.md, "Fault injection"); off unless the file turns them on */
export interface FaultsConfig {
  /** POST /api/v1/faults/disk-stall makes this node's volume I/O hang */
  readonly enabled: boolean;
  /**
   * A deliberately broken build, for proving the torture checker catches it: a primary
   * acknowledges a client's write before the peer has it. Needs `enabled`.
   */
  readonly ackBeforePeer: boolean;
}

/** The API's own settings (docs/operations.md, "API security"). */
export interface ApiConfig {
  /** serve the API and the console over HTTPS with this certificate and key (PEM files); null: plain HTTP */
  readonly tls: { readonly certFile: string; readonly keyFile: string } | null;
}

export interface NodeConfig {
  readonly cluster: { readonly name: string; readonly id: Buffer; readonly secret: Buffer };
  readonly node: {
    readonly name: string; readonly dataDir: string;
    readonly syncListen: HostPort; readonly apiListen: HostPort; readonly nbdListen: HostPort;
  };
  /** apiAddress: where the peer's API answers (written by tandem cluster join; absent: guessed, docs/console.md) */
  readonly peer: { readonly name: string; readonly syncAddress: HostPort; readonly apiAddress?: HostPort };
  readonly sync: { readonly pingIntervalMs: number; readonly timeoutMs: number; readonly reconnectMs: number };
  readonly heartbeat: HeartbeatConfig;
  readonly fencing: FencingConfig;
  readonly volumes: readonly VolumeConfig[];
  /** without a `pools` key, each volume is a pool of its own, named after it */
  readonly pools: readonly PoolConfig[];
  /** the file's volumes and pools as written: the first cluster configuration document (src/node/cluster-document.ts) */
  readonly seed: RawSection;
  readonly floatingIp: FloatingIpConfig;
  readonly faults: FaultsConfig;
  /** hooks told of activity-log entries (src/node/notify.ts) */
  readonly notify: readonly HookConfig[];
  readonly api: ApiConfig;
}

export const configLimits = {
  volumesMax: 64, poolsMax: 64, checkAddressesMax: 8, heartbeatLinksMax: 8, fenceArgsMax: 64, fileBytesMax: 1024 * 1024, floatingIpsPerPoolMax: 16,
} as const;

const FLOATING_IP_DRIVERS: readonly FloatingIpDriverName[] = ['linux', 'loopback'];

const FENCING_POLICIES: readonly FencingPolicy[] = ['none', 'ignore', 'manual', 'fence', 'witness'];

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;




function str(o: Obj, k: string, where: string, def?: string): string {
  const v = o[k] ?? def;
  if (typeof v !== 'string' || v.length === 0) fail(`${where}.${k}`, 'must be a non-empty string');
  return v;
}

function name(o: Obj, k: string, where: string): string {
  const v = str(o, k, where);
  if (!NAME.test(v)) fail(`${where}.${k}`, `${JSON.stringify(v)} is not a name (letters, digits, '.', '_', '-'; at most 63)`);
  return v;
}

function hostPort(o: Obj, k: string, where: string): HostPort {
  const a = parseHostPort(str(o, k, where));
  if (typeof a === 'string') fail(`${where}.${k}`, a);
  return a;
}


function int(o: Obj, k: string, where: string, def: number, min: number, max: number): number {
  const v = o[k] ?? def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(`${where}.${k}`, `must be an integer from ${min} to ${max}`);
  return v;
}

function size(o: Obj, k: string, where: string, def?: string): number {
  const v = o[k] ?? def;
  const n = typeof v === 'number' ? v : typeof v === 'string' ? parseSize(v) : 'must be a size like "1G"';
  if (typeof n === 'string') fail(`${where}.${k}`, n);
  if (!Number.isSafeInteger(n) || n < 0) fail(`${where}.${k}`, 'must be a non-negative size');
  return n;
}

/** Parses and checks a node configuration; throws ConfigError naming the first bad key. */
export function parseNodeConfig(text: string): NodeConfig {
  if (text.length > configLimits.fileBytesMax) fail('config', `larger than ${configLimits.fileBytesMax} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail('config', `not JSON: ${(e as Error).message}`);
  }
  const top = obj(raw, 'config', ['cluster', 'node', 'peer', 'sync', 'heartbeat', 'fencing', 'volumes', 'pools', 'floatingIp', 'faults', 'notify', 'api']);
  const c = obj(top.cluster, 'cluster', ['name', 'id', 'secret']);
  const n = obj(top.node, 'node', ['name', 'dataDir', 'syncListen', 'apiListen', 'nbdListen']);
  const p = obj(top.peer, 'peer', ['name', 'syncAddress', 'apiAddress']);
  const s = obj(top.sync ?? {}, 'sync', ['pingIntervalMs', 'timeoutMs', 'reconnectMs']);
  const pingIntervalMs = int(s, 'pingIntervalMs', 'sync', 500, 10, 60_000);
  const timeoutMs = int(s, 'timeoutMs', 'sync', 3000, 30, 600_000);
  if (timeoutMs < 3 * pingIntervalMs) fail('sync.timeoutMs', `must be at least 3 × pingIntervalMs (${3 * pingIntervalMs})`);
  const nodeName = name(n, 'name', 'node');
  const peerName = name(p, 'name', 'peer');
  if (nodeName === peerName) fail('peer.name', `the peer must have another name than this node (${nodeName})`);
  const syncListen = hostPort(n, 'syncListen', 'node');
  const syncAddress = hostPort(p, 'syncAddress', 'peer');
  const heartbeat = parseHeartbeat(top.heartbeat, syncListen, syncAddress);
  const fencing = parseFencing(top.fencing, heartbeat);
  const nbdListen = hostPort(n, 'nbdListen', 'node');
  const floatingIp = parseFloatingIpConfig(top.floatingIp);
  const section = parseClusterSection(sectionOf(top), { nodes: [nodeName, peerName], driver: floatingIp.driver, defaultNbdPort: nbdListen.port });
  return {
    cluster: { name: name(c, 'name', 'cluster'), id: hex(c, 'id', 'cluster', 16, 16), secret: hex(c, 'secret', 'cluster', 16, 1024) },
    node: {
      name: nodeName, dataDir: str(n, 'dataDir', 'node'),
      syncListen, apiListen: hostPort(n, 'apiListen', 'node'), nbdListen,
    },
    peer: { name: peerName, syncAddress, ...(p.apiAddress === undefined ? {} : { apiAddress: hostPort(p, 'apiAddress', 'peer') }) },
    sync: { pingIntervalMs, timeoutMs, reconnectMs: int(s, 'reconnectMs', 'sync', 500, 10, 600_000) },
    heartbeat,
    fencing,
    volumes: section.volumes,
    pools: section.pools,
    seed: section.seed,
    floatingIp,
    faults: parseFaults(top.faults),
    notify: parseNotify(top.notify),
    api: parseApiConfig(top.api),
  };
}

/** `api`: only `tls` so far. Whether the files can be read is checked when the API starts (and by node check). */
function parseApiConfig(v: unknown): ApiConfig {
  const a = obj(v ?? {}, 'api', ['tls']);
  if (a.tls === undefined) return { tls: null };
  const t = obj(a.tls, 'api.tls', ['certFile', 'keyFile']);
  const file = (k: string): string => {
    const f = str(t, k, 'api.tls');
    if (!f.startsWith('/')) fail(`api.tls.${k}`, `${JSON.stringify(f)} must be an absolute path`);
    return f;
  };
  return { tls: { certFile: file('certFile'), keyFile: file('keyFile') } };
}

/** What parsing the volumes and pools needs of the rest of the node configuration. */
export interface SectionContext {
  /** this node, then its peer */
  readonly nodes: readonly [string, string];
  readonly driver: FloatingIpDriverName;
  readonly defaultNbdPort: number;
}

/** The volumes and pools, as written (the cluster configuration document holds them in this form). */
export interface RawSection { readonly volumes: readonly unknown[]; readonly pools: readonly unknown[] }

function sectionOf(top: Obj): { volumes: unknown; pools: unknown } {
  return { volumes: top.volumes, pools: top.pools };
}

export function sectionContext(cfg: NodeConfig): SectionContext {
  return { nodes: [cfg.node.name, cfg.peer.name], driver: cfg.floatingIp.driver, defaultNbdPort: cfg.node.nbdListen.port };
}

/**
 * Parses and checks the volumes and pools of a configuration file or of a cluster configuration
 * document. Without `pools`, each volume is a pool of its own; `seed` is the section with that
 * spelled out, as the first cluster configuration document holds it.
 */
export function parseClusterSection(raw: { volumes: unknown; pools: unknown }, ctx: SectionContext): { volumes: VolumeConfig[]; pools: PoolConfig[]; seed: RawSection } {
  const [nodeName, peerName] = ctx.nodes;
  const top = raw;
  // a cluster made with `tandem cluster create` starts with none: pools are created at run time (docs/pools.md)
  const rawVolumes = top.volumes ?? [];
  if (!Array.isArray(rawVolumes)) fail('volumes', 'must be a list');
  if (rawVolumes.length > configLimits.volumesMax) fail('volumes', `at most ${configLimits.volumesMax}`);
  const volumes = rawVolumes.map((v, i): VolumeConfig => {
    const where = `volumes[${i}]`;
    const o = obj(v, where, ['name', 'size', 'primary', 'cacheMode', 'afterSplitBrain', 'resyncRate', 'checksumResync', 'activityLogExtents']);
    const size0 = size(o, 'size', where);
    if (size0 <= 0) fail(`${where}.size`, 'must be positive');
    // with pools, the pool's preferred node is where a new volume starts (filled in below)
    const primary = o.primary === undefined && top.pools !== undefined ? '' : name(o, 'primary', where);
    if (primary !== '' && primary !== nodeName && primary !== peerName) fail(`${where}.primary`, `must be ${nodeName} or ${peerName}`);
    const cacheMode = str(o, 'cacheMode', where, 'write-back');
    if (cacheMode !== 'write-back' && cacheMode !== 'write-through') fail(`${where}.cacheMode`, 'must be write-back or write-through');
    const policy = parseSplitBrainPolicy(str(o, 'afterSplitBrain', where, 'disconnect'));
    if (typeof policy === 'string') fail(`${where}.afterSplitBrain`, policy);
    const checksumResync = o.checksumResync ?? true;
    if (typeof checksumResync !== 'boolean') fail(`${where}.checksumResync`, 'must be true or false');
    return {
      name: name(o, 'name', where), size: size0, primary, cacheMode, afterSplitBrain: policy,
      resyncRate: size(o, 'resyncRate', where, '0'), checksumResync,
      activityLogExtents: int(o, 'activityLogExtents', where, activityLogDefaults.extentsMax, 2, activityLogLimits.recordExtentsMax),
    };
  });
  const names = new Set(volumes.map((v) => v.name));
  if (names.size !== volumes.length) fail('volumes', 'volume names must be unique');
  const pools = top.pools === undefined
    ? volumes.map((v): PoolConfig => ({
      name: v.name, volumes: [v.name], preferredNode: v.primary, autoFailback: false, nbdListen: null, floatingIps: [], nbdPort: ctx.defaultNbdPort,
      filesystem: null, applications: [], control: 'managed',
    }))
    : parsePools(top.pools, volumes, ctx.nodes, ctx.driver, ctx.defaultNbdPort);
  const poolOf = new Map(pools.flatMap((pc) => pc.volumes.map((v) => [v, pc] as const)));
  for (const [i, v] of volumes.entries()) {
    const pc = poolOf.get(v.name) as PoolConfig;
    if (v.primary === '') volumes[i] = { ...v, primary: pc.preferredNode };
    else if (v.primary !== pc.preferredNode) fail(`volumes[${i}].primary`, `differs from the preferredNode of pool ${pc.name}: leave it out`);
  }
  const seed: RawSection = {
    volumes: rawVolumes,
    pools: Array.isArray(top.pools) ? top.pools : volumes.map((v) => ({ name: v.name, volumes: [v.name], preferredNode: v.primary })),
  };
  return { volumes, pools, seed };
}

function parseFaults(v: unknown): FaultsConfig {
  const f = obj(v ?? {}, 'faults', ['enabled', 'ackBeforePeer']);
  const enabled = f.enabled ?? false;
  if (typeof enabled !== 'boolean') fail('faults.enabled', 'must be true or false');
  const ackBeforePeer = f.ackBeforePeer ?? false;
  if (typeof ackBeforePeer !== 'boolean') fail('faults.ackBeforePeer', 'must be true or false');
  if (ackBeforePeer && !enabled) fail('faults.ackBeforePeer', 'needs faults.enabled');
  return { enabled, ackBeforePeer };
}

/** Without `links`, one link beside the sync addresses: each side's sync port + 1, over UDP. */
function parseHeartbeat(v: unknown, syncListen: HostPort, syncAddress: HostPort): HeartbeatConfig {
  const h = obj(v ?? {}, 'heartbeat', ['intervalMs', 'timeoutMs', 'mainStallMs', 'links']);
  const intervalMs = int(h, 'intervalMs', 'heartbeat', 200, 10, 60_000);
  const timeoutMs = int(h, 'timeoutMs', 'heartbeat', 1000, 30, 600_000);
  if (timeoutMs < 3 * intervalMs) fail('heartbeat.timeoutMs', `must be at least 3 × intervalMs (${3 * intervalMs})`);
  const mainStallMs = int(h, 'mainStallMs', 'heartbeat', 10_000, timeoutMs, 3_600_000);
  let links: HeartbeatLinkConfig[];
  if (h.links === undefined) {
    if (syncListen.port >= 65535 || syncAddress.port >= 65535) fail('heartbeat.links', 'the sync ports leave no room for the default link (port + 1): list the links');
    links = [{ listen: { host: syncListen.host, port: syncListen.port + 1 }, peer: { host: syncAddress.host, port: syncAddress.port + 1 } }];
  } else {
    if (!Array.isArray(h.links) || h.links.length === 0) fail('heartbeat.links', 'must be a non-empty list');
    if (h.links.length > configLimits.heartbeatLinksMax) fail('heartbeat.links', `at most ${configLimits.heartbeatLinksMax}`);
    links = h.links.map((l, i) => {
      const o = obj(l, `heartbeat.links[${i}]`, ['listen', 'peer']);
      return { listen: hostPort(o, 'listen', `heartbeat.links[${i}]`), peer: hostPort(o, 'peer', `heartbeat.links[${i}]`) };
    });
  }
  return { intervalMs, timeoutMs, mainStallMs, links };
}

function parseFencing(v: unknown, hb: HeartbeatConfig): FencingConfig {
  const where = 'fencing';
  const f = obj(v ?? {}, where, ['policy', 'command', 'commandTimeoutMs', 'retryMs', 'witness', 'witnessTimeoutMs', 'takeoverMarginMs', 'startWaitMs', 'checkAddresses', 'checkIntervalMs', 'checkTimeoutMs']);
  const policy = str(f, 'policy', where, 'manual') as FencingPolicy;
  if (!FENCING_POLICIES.includes(policy)) fail(`${where}.policy`, `must be one of ${FENCING_POLICIES.join(', ')}`);
  let command: string[] | null = null;
  if (f.command !== undefined) {
    if (!Array.isArray(f.command) || f.command.length === 0 || f.command.length > configLimits.fenceArgsMax ||
      !f.command.every((a): a is string => typeof a === 'string' && a.length > 0 && !a.includes('\0'))) {
      fail(`${where}.command`, `must be a list of 1 to ${configLimits.fenceArgsMax} non-empty strings (program, then arguments)`);
    }
    command = f.command;
  }
  if (policy === 'fence' && command === null) fail(`${where}.command`, 'the fence policy needs a command');
  const witness = f.witness === undefined ? null : hostPort(f, 'witness', where);
  const checkAddresses = f.checkAddresses ?? [];
  if (!Array.isArray(checkAddresses) || checkAddresses.length > configLimits.checkAddressesMax ||
    !checkAddresses.every((a): a is string => typeof a === 'string' && net.isIP(a) !== 0)) {
    fail(`${where}.checkAddresses`, `must be a list of at most ${configLimits.checkAddressesMax} IP addresses`);
  }
  if (policy === 'witness' && witness === null) fail(`${where}.witness`, 'the witness policy needs the witness address');
  return {
    policy, command, witness,
    commandTimeoutMs: int(f, 'commandTimeoutMs', where, 30_000, 100, 600_000),
    retryMs: int(f, 'retryMs', where, 5_000, 100, 600_000),
    witnessTimeoutMs: int(f, 'witnessTimeoutMs', where, Math.max(hb.intervalMs, 250), 10, 60_000),
    takeoverMarginMs: int(f, 'takeoverMarginMs', where, hb.intervalMs, 0, 60_000),
    startWaitMs: int(f, 'startWaitMs', where, 5 * hb.timeoutMs, 0, 3_600_000),
    checkAddresses,
    checkIntervalMs: int(f, 'checkIntervalMs', where, Math.max(100, Math.floor(hb.timeoutMs / 2)), 50, 60_000),
    checkTimeoutMs: int(f, 'checkTimeoutMs', where, Math.max(100, Math.floor(hb.timeoutMs / 2)), 50, 60_000),
  };
}

function parseFloatingIpConfig(v: unknown): FloatingIpConfig {
  const where = 'floatingIp';
  const f = obj(v ?? {}, where, ['driver', 'probeMs', 'announceCount']);
  const driver = str(f, 'driver', where, 'linux') as FloatingIpDriverName;
  if (!FLOATING_IP_DRIVERS.includes(driver)) fail(`${where}.driver`, `must be one of ${FLOATING_IP_DRIVERS.join(', ')}`);
  return { driver, probeMs: int(f, 'probeMs', where, 300, 10, 10_000), announceCount: int(f, 'announceCount', where, 3, 0, 10) };
}

function parseFloatingIps(v: unknown, where: string, driver: FloatingIpDriverName): FloatingIp[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > configLimits.floatingIpsPerPoolMax) fail(where, `must be a list of at most ${configLimits.floatingIpsPerPoolMax} addresses`);
  return v.map((x, i): FloatingIp => {
    const at = `${where}[${i}]`;
    const o = obj(x, at, ['address', 'interface']);
    let cidr: ReturnType<typeof parseCidr>;
    try {
      cidr = parseCidr(str(o, 'address', at));
    } catch (e) {
      fail(`${at}.address`, (e as Error).message);
    }
    const loopback = isLoopbackAddress(cidr.address);
    if (driver === 'loopback' && !loopback) fail(`${at}.address`, `the loopback driver moves only 127.0.0.0/8 and ::1 addresses; ${cidr.address} needs floatingIp.driver "linux"`);
    if (driver === 'linux' && loopback) fail(`${at}.address`, `${cidr.address} is a loopback address: use floatingIp.driver "loopback" for a cluster on one machine`);
    const iface = o.interface === undefined && driver === 'loopback' ? 'lo' : str(o, 'interface', at);
    if (!/^[A-Za-z0-9._@-]{1,15}$/.test(iface)) fail(`${at}.interface`, `${JSON.stringify(iface)} is not an interface name (at most 15 characters)`);
    return { ...cidr, interface: iface };
  });
}

function parsePools(
  v: unknown, volumes: readonly VolumeConfig[], nodes: readonly string[], driver: FloatingIpDriverName, defaultNbdPort: number,
): PoolConfig[] {
  if (!Array.isArray(v)) fail('pools', 'must be a list');
  if (v.length > configLimits.poolsMax) fail('pools', `at most ${configLimits.poolsMax}`);
  const owner = new Map<string, string>();
  const pools = v.map((p, i): PoolConfig => {
    const where = `pools[${i}]`;
    const o = obj(p, where, ['name', 'volumes', 'preferredNode', 'autoFailback', 'nbdListen', 'floatingIps', 'nbdPort', 'filesystem', 'applications', 'control']);
    const poolName = name(o, 'name', where);
    if (!Array.isArray(o.volumes) || o.volumes.length === 0) fail(`${where}.volumes`, 'must be a non-empty list of volume names');
    const vols = o.volumes.map((x, j) => {
      if (typeof x !== 'string' || !volumes.some((vc) => vc.name === x)) fail(`${where}.volumes[${j}]`, `${JSON.stringify(x)} is not a configured volume`);
      const taken = owner.get(x);
      if (taken !== undefined) fail(`${where}.volumes[${j}]`, `volume ${x} is already in pool ${taken}`);
      owner.set(x, poolName);
      return x;
    });
    const preferredNode = name(o, 'preferredNode', where);
    if (!nodes.includes(preferredNode)) fail(`${where}.preferredNode`, `must be ${nodes.join(' or ')}`);
    const autoFailback = o.autoFailback ?? false;
    if (typeof autoFailback !== 'boolean') fail(`${where}.autoFailback`, 'must be true or false');
    const floatingIps = parseFloatingIps(o.floatingIps, `${where}.floatingIps`, driver);
    const filesystem = parseFilesystem(o.filesystem, `${where}.filesystem`, vols);
    const applications = parseApplications(o.applications, `${where}.applications`, filesystem);
    if (floatingIps.length > 0 && o.nbdListen !== undefined) fail(`${where}.nbdListen`, 'a pool with floating IPs exports on them (at nbdPort): leave nbdListen out');
    if (floatingIps.length === 0 && o.nbdPort !== undefined) fail(`${where}.nbdPort`, 'is the port on the floating IPs: give the pool floatingIps, or use nbdListen');
    const control = str(o, 'control', where, 'managed') as PoolControl;
    if (!POOL_CONTROLS.includes(control)) fail(`${where}.control`, `must be one of ${POOL_CONTROLS.join(', ')}`);
    return {
      name: poolName, volumes: vols, preferredNode, autoFailback, nbdListen: o.nbdListen === undefined ? null : hostPort(o, 'nbdListen', where),
      floatingIps, nbdPort: int(o, 'nbdPort', where, defaultNbdPort, 1, 65535), filesystem, applications, control,
    };
  });
  if (new Set(pools.map((p) => p.name)).size !== pools.length) fail('pools', 'pool names must be unique');
  const ipOwner = new Map<string, string>();
  for (const p of pools) {
    for (const ip of p.floatingIps) {
      const taken = ipOwner.get(ip.address);
      if (taken !== undefined) fail('pools', `floating IP ${ip.address} is in pools ${taken} and ${p.name}: an address follows one pool`);
      ipOwner.set(ip.address, p.name);
    }
  }
  for (const vc of volumes) if (!owner.has(vc.name)) fail('pools', `volume ${vc.name} is in no pool`);
  return pools;
}
