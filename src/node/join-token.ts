// The join token of `tandem cluster create` / `tandem cluster join` (docs/cluster-setup.md):
// `tandem1.` + base64url(JSON) holding the cluster's name, id and secret, where the first
// node is (name, sync, API and heartbeat addresses), and the settings both nodes must share.
// It holds the secret: whoever has it can join the cluster.
import net from 'node:net';
import { parseHostPort } from '../util/address';
import { CodedError } from '../util/coded-error';
import { ConfigError, fail, hex, keyPath, obj, type Obj } from '../util/config-fields';

export const JOIN_TOKEN_PREFIX = 'tandem1.';

export const joinTokenLimits = {
  /** a token with 8 heartbeat links, long host names and every setting is far below this */
  textCharsMax: 8192,
  heartbeatLinksMax: 8,
  hostPortCharsMax: 300,
  /** the node config takes 16 to 1024 bytes of secret */
  secretBytesMin: 16,
  secretBytesMax: 1024,
} as const;

/** A token, a join request or a setting that is not what it must be. */
export class JoinTokenError extends CodedError<'ERR_JOIN_TOKEN'> {
  override readonly name = 'JoinTokenError';
  constructor(message: string) { super('ERR_JOIN_TOKEN', message); }
}

/**
 * The settings both nodes of a cluster must agree on, as the first node's file holds them
 * (only the keys it sets: the rest are defaults on both). Not shared: `fencing.command`
 * (each node's powers off the other) and `heartbeat.links` (each node's own addresses).
 */
export interface SharedSettings {
  sync?: Record<string, number>;
  heartbeat?: Record<string, number>;
  fencing?: Record<string, string | number>;
  floatingIp?: Record<string, string | number>;
}

type Kind = 'int' | 'fencingPolicy' | 'floatingIpDriver' | 'ipHostPort';

/** Every shared key and what its value must be; the node config checks the ranges. */
export const SHARED_KEYS: Readonly<Record<keyof SharedSettings, Readonly<Record<string, Kind>>>> = {
  sync: { pingIntervalMs: 'int', timeoutMs: 'int', reconnectMs: 'int' },
  heartbeat: { intervalMs: 'int', timeoutMs: 'int', mainStallMs: 'int' },
  fencing: {
    policy: 'fencingPolicy', witness: 'ipHostPort', commandTimeoutMs: 'int', retryMs: 'int',
    witnessTimeoutMs: 'int', takeoverMarginMs: 'int', startWaitMs: 'int',
  },
  floatingIp: { driver: 'floatingIpDriver', probeMs: 'int', announceCount: 'int' },
};

export const FENCING_POLICIES = ['none', 'ignore', 'manual', 'fence', 'witness'] as const;
export const FLOATING_IP_DRIVERS = ['linux', 'loopback'] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface HostPortText { readonly host: string; readonly port: number; readonly text: string }

export interface JoinToken {
  readonly cluster: { readonly name: string; readonly id: Buffer; readonly secret: Buffer };
  /** the first node: it waits for the join on its API address */
  readonly node: {
    readonly name: string;
    readonly sync: HostPortText;
    readonly api: HostPortText;
    /** its heartbeat listen addresses in link order; empty: the default link beside the sync port */
    readonly heartbeat: readonly HostPortText[];
  };
  readonly settings: SharedSettings;
}

export function isNodeName(s: string): boolean {
  return NAME.test(s);
}

/** "HOST:PORT" as a node config writes it ([v6]:PORT for IPv6). */
export function formatHostPort(a: { host: string; port: number }): string {
  return `${net.isIPv6(a.host) ? `[${a.host}]` : a.host}:${a.port}`;
}

export function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/**
 * HOST:PORT checked as an address the other node reaches: not a wildcard, not port 0. With
 * `ipOnly`, the host must be an IP literal (heartbeats and the witness never look names up).
 */
export function checkHostPort(v: unknown, where: string, ipOnly = false): HostPortText {
  if (typeof v !== 'string' || v.length === 0 || v.length > joinTokenLimits.hostPortCharsMax) fail(where, 'must be HOST:PORT');
  const a = parseHostPort(v);
  if (typeof a === 'string') fail(where, a);
  if (a.port === 0) fail(where, 'port 0 is not an address the other node can reach');
  if (isWildcard(a.host)) fail(where, `${a.host} is a wildcard: give the address the other node reaches this one at`);
  if (ipOnly && net.isIP(a.host) === 0) fail(where, `${a.host} is not an IP address (heartbeat and witness addresses are never looked up)`);
  return { ...a, text: formatHostPort(a) };
}

function checkName(v: unknown, where: string): string {
  if (typeof v !== 'string' || !NAME.test(v)) fail(where, `${JSON.stringify(v)} is not a name (letters, digits, '.', '_', '-'; at most 63)`);
  return v;
}

/** Checks a shared-settings object key by key: unknown keys and wrong types are refused. */
export function checkSharedSettings(v: unknown, where = 'settings'): SharedSettings {
  const s = obj(v, where, Object.keys(SHARED_KEYS));
  const out: SharedSettings = {};
  for (const [section, keys] of Object.entries(SHARED_KEYS) as Array<[keyof SharedSettings, Record<string, Kind>]>) {
    if (s[section] === undefined) continue;
    const at = keyPath(where, section);
    const o = obj(s[section], at, Object.keys(keys));
    const checked: Record<string, string | number> = {};
    for (const [k, kind] of Object.entries(keys)) {
      const x = o[k];
      if (x === undefined) continue;
      checked[k] = checkValue(x, kind, `${at}.${k}`);
    }
    if (Object.keys(checked).length > 0) (out as Record<string, unknown>)[section] = checked;
  }
  return out;
}

function checkValue(x: unknown, kind: Kind, where: string): string | number {
  switch (kind) {
    case 'int':
      if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) fail(where, 'must be a non-negative integer');
      return x;
    case 'fencingPolicy':
      if (typeof x !== 'string' || !(FENCING_POLICIES as readonly string[]).includes(x)) fail(where, `must be one of ${FENCING_POLICIES.join(', ')}`);
      return x;
    case 'floatingIpDriver':
      if (typeof x !== 'string' || !(FLOATING_IP_DRIVERS as readonly string[]).includes(x)) fail(where, `must be one of ${FLOATING_IP_DRIVERS.join(', ')}`);
      return x;
    case 'ipHostPort':
      return checkHostPort(x, where, true).text;
  }
}

/** The shared settings of a node config file's JSON: only the shared keys it sets. */
export function sharedSettingsOf(raw: Obj): SharedSettings {
  const pick: Obj = {};
  for (const [section, keys] of Object.entries(SHARED_KEYS)) {
    const v = raw[section];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) continue;
    const o: Obj = {};
    for (const k of Object.keys(keys)) if ((v as Obj)[k] !== undefined) o[k] = (v as Obj)[k];
    pick[section] = o;
  }
  return checkSharedSettings(pick, 'config');
}

export function encodeJoinToken(t: JoinToken): string {
  const doc = {
    cluster: { name: t.cluster.name, id: t.cluster.id.toString('hex'), secret: t.cluster.secret.toString('hex') },
    node: { name: t.node.name, sync: t.node.sync.text, api: t.node.api.text, heartbeat: t.node.heartbeat.map((h) => h.text) },
    settings: t.settings,
  };
  const text = JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify(doc), 'utf8').toString('base64url');
  // the same checks a joiner makes: a token this node cannot take back is a bug here
  decodeJoinToken(text);
  return text;
}

/** Parses a join token; throws JoinTokenError saying what is wrong with it. */
export function decodeJoinToken(text: string): JoinToken {
  const t = text.trim();
  if (t.length > joinTokenLimits.textCharsMax) throw new JoinTokenError(`not a join token: longer than ${joinTokenLimits.textCharsMax} characters`);
  if (!t.startsWith(JOIN_TOKEN_PREFIX)) {
    throw new JoinTokenError(`not a join token: it must start with "${JOIN_TOKEN_PREFIX}" (the line tandem cluster create printed)`);
  }
  const body = t.slice(JOIN_TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body)) throw new JoinTokenError('not a join token: after the prefix it must be base64url (A-Z a-z 0-9 - _), all on one line');
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    throw new JoinTokenError('not a join token: it does not decode (was it cut short when copied?)');
  }
  try {
    const top = obj(doc, 'token', ['cluster', 'node', 'settings']);
    const c = obj(top.cluster, 'token.cluster', ['name', 'id', 'secret']);
    const n = obj(top.node, 'token.node', ['name', 'sync', 'api', 'heartbeat']);
    const hb = n.heartbeat ?? [];
    if (!Array.isArray(hb) || hb.length > joinTokenLimits.heartbeatLinksMax) {
      fail('token.node.heartbeat', `must be a list of at most ${joinTokenLimits.heartbeatLinksMax} addresses`);
    }
    return {
      cluster: {
        name: checkName(c.name, 'token.cluster.name'),
        id: hex(c, 'id', 'token.cluster', 16, 16),
        secret: hex(c, 'secret', 'token.cluster', joinTokenLimits.secretBytesMin, joinTokenLimits.secretBytesMax),
      },
      node: {
        name: checkName(n.name, 'token.node.name'),
        sync: checkHostPort(n.sync, 'token.node.sync'),
        api: checkHostPort(n.api, 'token.node.api'),
        heartbeat: hb.map((h, i) => checkHostPort(h, `token.node.heartbeat[${i}]`, true)),
      },
      settings: checkSharedSettings(top.settings ?? {}, 'token.settings'),
    };
  } catch (e) {
    if (e instanceof ConfigError) throw new JoinTokenError(`not a valid join token: ${e.message}`);
    throw e;
  }
}
