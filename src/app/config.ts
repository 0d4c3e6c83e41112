// A pool's filesystem and applications as the node config declares them
// (docs/applications.md). Parsed here, checked key by key, each bad value one
// error naming its key; the node config calls in for each pool.
import { fail, keyPath, obj, type Obj } from '../util/config-fields';

export const appLimits = {
  applicationsPerPoolMax: 16,
  checkersPerApplicationMax: 8,
  commandBytesMax: 4096,
  /** what is kept of a script's output (stdout and stderr together): the tail */
  outputBytesMax: 16 * 1024,
  /** what of a failing start's output goes into the pool's reason */
  reasonOutputBytesMax: 2048,
} as const;

export type CheckerConfig =
  | { readonly kind: 'process'; readonly pidFile: string; readonly timing: CheckTiming }
  | { readonly kind: 'tcp'; readonly host: string | null; readonly port: number; readonly timing: CheckTiming }
  | { readonly kind: 'http'; readonly url: string; readonly expectStatus: readonly [number, number]; readonly timing: CheckTiming }
  /** OCF exit codes: 0 running, 7 cleanly stopped, anything else failed */
  | { readonly kind: 'command'; readonly command: string; readonly timing: CheckTiming };

export interface CheckTiming {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** consecutive failures before the application counts as failed */
  readonly failureThreshold: number;
}

export interface RestartPolicy {
  /** restarts in place within windowMs before the pool fails over instead */
  readonly max: number;
  readonly windowMs: number;
}

interface AppCommon {
  readonly name: string;
  readonly startTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly restart: RestartPolicy;
  readonly checkers: readonly CheckerConfig[];
}

export interface GenericAppConfig extends AppCommon {
  readonly module: 'generic';
  /** returns once the service runs (exit 0), as an init script's start does */
  readonly start: string;
  readonly stop: string;
}

export interface PostgresqlAppConfig extends AppCommon {
  readonly module: 'postgresql';
  /** the data directory, relative to the pool's filesystem */
  readonly dataDir: string;
  readonly port: number;
  readonly user: string;
  /** the superuser's password, set by initdb on first use; clients over the floating IP use it */
  readonly passwordFile: string | null;
  /** networks allowed to connect over TCP (scram-sha-256), written into pg_hba.conf on first use */
  readonly allowFrom: readonly string[];
  /** where the server's unix socket lives on this node */
  readonly socketDir: string;
  /** the built-in checks (pg_isready on the floating IP, a query over the socket) */
  readonly check: CheckTiming;
}

export type ApplicationConfig = GenericAppConfig | PostgresqlAppConfig;

export interface FilesystemConfig {
  /** which of the pool's volumes carries it; that volume is not exported to NBD clients */
  readonly volume: string;
  readonly mountpoint: string;
  readonly type: 'ext4';
  /** create the filesystem when the volume has none (first use); never over another one */
  readonly mkfs: boolean;
  readonly mountOptions: readonly string[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const MOUNT_OPTION = /^[A-Za-z0-9_=.-]{1,64}$/;
const CIDR = /^[0-9A-Fa-f.:]{2,45}\/\d{1,3}$/;

function str(o: Obj, k: string, where: string, def?: string): string {
  const v = o[k] ?? def;
  if (typeof v !== 'string' || v.length === 0) fail(keyPath(where, k), 'must be a non-empty string');
  if (Buffer.byteLength(v) > appLimits.commandBytesMax) fail(keyPath(where, k), `at most ${appLimits.commandBytesMax} bytes`);
  return v;
}

function int(o: Obj, k: string, where: string, def: number, min: number, max: number): number {
  const v = o[k] ?? def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(keyPath(where, k), `must be an integer from ${min} to ${max}`);
  return v;
}

function absolutePath(o: Obj, k: string, where: string, def?: string): string {
  const v = str(o, k, where, def);
  if (!v.startsWith('/') || v.includes('\0') || v.split('/').includes('..')) fail(keyPath(where, k), `${JSON.stringify(v)} must be an absolute path without ".."`);
  return v.length > 1 ? v.replace(/\/+$/, '') : v;
}

export function parseFilesystem(v: unknown, where: string, poolVolumes: readonly string[]): FilesystemConfig | null {
  if (v === undefined) return null;
  const o = obj(v, where, ['volume', 'mountpoint', 'type', 'mkfs', 'mountOptions']);
  const volume = str(o, 'volume', where);
  if (!poolVolumes.includes(volume)) fail(`${where}.volume`, `${JSON.stringify(volume)} is not one of the pool's volumes (${poolVolumes.join(', ')})`);
  const mountpoint = absolutePath(o, 'mountpoint', where);
  if (mountpoint === '/') fail(`${where}.mountpoint`, 'must not be /');
  const type = o.type ?? 'ext4';
  if (type !== 'ext4') fail(`${where}.type`, 'must be "ext4" (the one type with fsck and journal replay wired in)');
  const mkfs = o.mkfs ?? false;
  if (typeof mkfs !== 'boolean') fail(`${where}.mkfs`, 'must be true or false');
  const opts = o.mountOptions ?? [];
  if (!Array.isArray(opts) || opts.length > 16) fail(`${where}.mountOptions`, 'must be a list of at most 16 options');
  const mountOptions = opts.map((x, i) => {
    if (typeof x !== 'string' || !MOUNT_OPTION.test(x)) fail(`${where}.mountOptions[${i}]`, 'must be a mount option like "noatime"');
    if (x === 'loop' || x.startsWith('loop=')) fail(`${where}.mountOptions[${i}]`, 'the loop device is set up by the node');
    return x;
  });
  return { volume, mountpoint, type, mkfs, mountOptions };
}

function parseTiming(o: Obj, where: string): CheckTiming {
  const intervalMs = int(o, 'intervalMs', where, 2000, 100, 3_600_000);
  const timeoutMs = int(o, 'timeoutMs', where, 5000, 100, 600_000);
  const failureThreshold = int(o, 'failureThreshold', where, 3, 1, 100);
  return { intervalMs, timeoutMs, failureThreshold };
}

const TIMING_KEYS = ['intervalMs', 'timeoutMs', 'failureThreshold'] as const;

function parseChecker(v: unknown, where: string): CheckerConfig {
  const kind = (v as { kind?: unknown } | null)?.kind;
  switch (kind) {
    case 'process': {
      const o = obj(v, where, ['kind', 'pidFile', ...TIMING_KEYS]);
      return { kind, pidFile: absolutePath(o, 'pidFile', where), timing: parseTiming(o, where) };
    }
    case 'tcp': {
      const o = obj(v, where, ['kind', 'host', 'port', ...TIMING_KEYS]);
      return { kind, host: o.host === undefined ? null : str(o, 'host', where), port: int(o, 'port', where, 0, 1, 65535), timing: parseTiming(o, where) };
    }
    case 'http': {
      const o = obj(v, where, ['kind', 'url', 'expectStatus', ...TIMING_KEYS]);
      const url = str(o, 'url', where);
      if (!/^https?:\/\//.test(url)) fail(`${where}.url`, 'must be an http:// or https:// URL');
      try { new URL(url); } catch { fail(`${where}.url`, `${JSON.stringify(url)} is not a URL`); }
      const e = o.expectStatus ?? [200, 399];
      const range: [number, number] = typeof e === 'number' ? [e, e] : Array.isArray(e) && e.length === 2 ? [e[0] as number, e[1] as number] : [0, 0];
      if (!range.every((n) => Number.isInteger(n) && n >= 100 && n <= 599) || range[0] > range[1]) {
        fail(`${where}.expectStatus`, 'must be a status (200) or a range ([200, 399])');
      }
      return { kind, url, expectStatus: range, timing: parseTiming(o, where) };
    }
    case 'command': {
      const o = obj(v, where, ['kind', 'command', ...TIMING_KEYS]);
      return { kind, command: str(o, 'command', where), timing: parseTiming(o, where) };
    }
    default:
      fail(`${where}.kind`, 'must be "process", "tcp", "http" or "command"');
  }
}

function parseApplication(v: unknown, where: string, fs: FilesystemConfig | null): ApplicationConfig {
  const module = (v as { module?: unknown } | null)?.module ?? 'generic';
  const common = ['name', 'module', 'startTimeoutMs', 'stopTimeoutMs', 'restart', 'checkers'];
  const keys = module === 'postgresql' ? [...common, 'dataDir', 'port', 'user', 'passwordFile', 'allowFrom', 'socketDir', 'check'] : [...common, 'start', 'stop'];
  const o = obj(v, where, keys);
  const appName = str(o, 'name', where);
  if (!NAME.test(appName)) fail(`${where}.name`, `${JSON.stringify(appName)} is not a name (letters, digits, '.', '_', '-'; at most 63)`);
  const r = obj(o.restart ?? {}, `${where}.restart`, ['max', 'windowMs']);
  const restart = { max: int(r, 'max', `${where}.restart`, 3, 0, 100), windowMs: int(r, 'windowMs', `${where}.restart`, 600_000, 1000, 86_400_000) };
  const list = o.checkers ?? [];
  if (!Array.isArray(list) || list.length > appLimits.checkersPerApplicationMax) fail(`${where}.checkers`, `must be a list of at most ${appLimits.checkersPerApplicationMax}`);
  const checkers = list.map((c, i) => parseChecker(c, `${where}.checkers[${i}]`));
  const base = {
    name: appName, restart, checkers,
    startTimeoutMs: int(o, 'startTimeoutMs', where, 60_000, 1000, 3_600_000),
    stopTimeoutMs: int(o, 'stopTimeoutMs', where, 30_000, 1000, 3_600_000),
  };
  if (module === 'generic') return { ...base, module, start: str(o, 'start', where), stop: str(o, 'stop', where) };
  if (module !== 'postgresql') fail(`${where}.module`, 'must be "generic" or "postgresql"');
  if (fs === null) fail(`${where}.module`, 'postgresql keeps its data directory on the pool\'s filesystem: give the pool a "filesystem"');
  const dataDir = str(o, 'dataDir', where, 'pgdata');
  if (dataDir.startsWith('/') || dataDir.split('/').includes('..')) fail(`${where}.dataDir`, 'must be a path inside the pool\'s filesystem (relative, no "..")');
  const user = str(o, 'user', where, 'postgres');
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user)) fail(`${where}.user`, `${JSON.stringify(user)} is not a user name`);
  const af = o.allowFrom ?? ['0.0.0.0/0', '::/0'];
  if (!Array.isArray(af) || af.length > 32) fail(`${where}.allowFrom`, 'must be a list of at most 32 networks');
  const allowFrom = af.map((x, i) => {
    if (typeof x !== 'string' || !CIDR.test(x)) fail(`${where}.allowFrom[${i}]`, 'must be a network like "198.18.0.0/15"');
    return x;
  });
  return {
    ...base, module, dataDir, user, allowFrom,
    port: int(o, 'port', where, 5432, 1, 65535),
    passwordFile: o.passwordFile === undefined ? null : absolutePath(o, 'passwordFile', where),
    socketDir: absolutePath(o, 'socketDir', where, '/var/run/postgresql'),
    check: parseTiming(obj(o.check ?? {}, `${where}.check`, TIMING_KEYS), `${where}.check`),
  };
}

export function parseApplications(v: unknown, where: string, fs: FilesystemConfig | null): ApplicationConfig[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > appLimits.applicationsPerPoolMax) fail(where, `must be a list of at most ${appLimits.applicationsPerPoolMax} applications`);
  const apps = v.map((a, i) => parseApplication(a, `${where}[${i}]`, fs));
  if (new Set(apps.map((a) => a.name)).size !== apps.length) fail(where, 'application names must be unique in a pool');
  return apps;
}
