// The node configuration file (docs/mirroring.md): parsed and checked as a
// whole, so a bad file is one clear error and the node does not start.
import { parseSplitBrainPolicy, type SplitBrainPolicy } from '../core/generations';
import type { CacheMode } from '../replication/replica';
import { parseHostPort } from '../util/address';
import { CodedError } from '../util/coded-error';
import { parseSize } from '../util/size';

export class ConfigError extends CodedError<'ERR_CONFIG'> {
  override readonly name = 'ConfigError';
}

export interface HostPort { readonly host: string; readonly port: number }

export interface VolumeConfig {
  readonly name: string;
  readonly size: number;
  readonly primary: string;
  readonly cacheMode: CacheMode;
  readonly afterSplitBrain: SplitBrainPolicy;
  readonly resyncRate: number;
  readonly checksumResync: boolean;
}

export interface NodeConfig {
  readonly cluster: { readonly name: string; readonly id: Buffer; readonly secret: Buffer };
  readonly node: {
    readonly name: string; readonly dataDir: string;
    readonly syncListen: HostPort; readonly apiListen: HostPort; readonly nbdListen: HostPort;
  };
  readonly peer: { readonly name: string; readonly syncAddress: HostPort };
  readonly sync: { readonly pingIntervalMs: number; readonly timeoutMs: number; readonly reconnectMs: number };
  readonly volumes: readonly VolumeConfig[];
}

export const configLimits = { volumesMax: 64, fileBytesMax: 1024 * 1024 } as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const HEX = /^(?:[0-9a-f]{2})+$/;

type Obj = Record<string, unknown>;

function fail(where: string, why: string): never {
  throw new ConfigError('ERR_CONFIG', `${where}: ${why}`);
}

function obj(v: unknown, where: string, keys: readonly string[]): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'must be an object');
  for (const k of Object.keys(v)) if (!keys.includes(k)) fail(`${where}.${k}`, `unknown key (known: ${keys.join(', ')})`);
  return v as Obj;
}

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

function hex(o: Obj, k: string, where: string, minBytes: number, maxBytes: number): Buffer {
  const v = str(o, k, where).toLowerCase();
  if (!HEX.test(v) || v.length / 2 < minBytes || v.length / 2 > maxBytes) {
    fail(`${where}.${k}`, `must be ${minBytes === maxBytes ? minBytes * 2 : `${minBytes * 2} to ${maxBytes * 2}`} hex digits`);
  }
  return Buffer.from(v, 'hex');
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
  const top = obj(raw, 'config', ['cluster', 'node', 'peer', 'sync', 'volumes']);
  const c = obj(top.cluster, 'cluster', ['name', 'id', 'secret']);
  const n = obj(top.node, 'node', ['name', 'dataDir', 'syncListen', 'apiListen', 'nbdListen']);
  const p = obj(top.peer, 'peer', ['name', 'syncAddress']);
  const s = obj(top.sync ?? {}, 'sync', ['pingIntervalMs', 'timeoutMs', 'reconnectMs']);
  const pingIntervalMs = int(s, 'pingIntervalMs', 'sync', 500, 10, 60_000);
  const timeoutMs = int(s, 'timeoutMs', 'sync', 3000, 30, 600_000);
  if (timeoutMs < 3 * pingIntervalMs) fail('sync.timeoutMs', `must be at least 3 × pingIntervalMs (${3 * pingIntervalMs})`);
  const nodeName = name(n, 'name', 'node');
  const peerName = name(p, 'name', 'peer');
  if (nodeName === peerName) fail('peer.name', `the peer must have another name than this node (${nodeName})`);
  if (!Array.isArray(top.volumes) || top.volumes.length === 0) fail('volumes', 'must be a non-empty list');
  if (top.volumes.length > configLimits.volumesMax) fail('volumes', `at most ${configLimits.volumesMax}`);
  const volumes = top.volumes.map((v, i): VolumeConfig => {
    const where = `volumes[${i}]`;
    const o = obj(v, where, ['name', 'size', 'primary', 'cacheMode', 'afterSplitBrain', 'resyncRate', 'checksumResync']);
    const size0 = size(o, 'size', where);
    if (size0 <= 0) fail(`${where}.size`, 'must be positive');
    const primary = name(o, 'primary', where);
    if (primary !== nodeName && primary !== peerName) fail(`${where}.primary`, `must be ${nodeName} or ${peerName}`);
    const cacheMode = str(o, 'cacheMode', where, 'write-back');
    if (cacheMode !== 'write-back' && cacheMode !== 'write-through') fail(`${where}.cacheMode`, 'must be write-back or write-through');
    const policy = parseSplitBrainPolicy(str(o, 'afterSplitBrain', where, 'disconnect'));
    if (typeof policy === 'string') fail(`${where}.afterSplitBrain`, policy);
    const checksumResync = o.checksumResync ?? true;
    if (typeof checksumResync !== 'boolean') fail(`${where}.checksumResync`, 'must be true or false');
    return {
      name: name(o, 'name', where), size: size0, primary, cacheMode, afterSplitBrain: policy,
      resyncRate: size(o, 'resyncRate', where, '0'), checksumResync,
    };
  });
  const names = new Set(volumes.map((v) => v.name));
  if (names.size !== volumes.length) fail('volumes', 'volume names must be unique');
  return {
    cluster: { name: name(c, 'name', 'cluster'), id: hex(c, 'id', 'cluster', 16, 16), secret: hex(c, 'secret', 'cluster', 16, 1024) },
    node: {
      name: nodeName, dataDir: str(n, 'dataDir', 'node'),
      syncListen: hostPort(n, 'syncListen', 'node'), apiListen: hostPort(n, 'apiListen', 'node'), nbdListen: hostPort(n, 'nbdListen', 'node'),
    },
    peer: { name: peerName, syncAddress: hostPort(p, 'syncAddress', 'peer') },
    sync: { pingIntervalMs, timeoutMs, reconnectMs: int(s, 'reconnectMs', 'sync', 500, 10, 600_000) },
    volumes,
  };
}
