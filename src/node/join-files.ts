// The node config files of `tandem cluster create` and `tandem cluster join`
// (docs/cluster-setup.md): the first node's file before the join (a node config without
// `peer`, its heartbeat links listing only their `listen` side), the same file once joined,
// and the joining node's file. Each is checked by parseNodeConfig before it is written, and
// written with mode 0600 (it holds the cluster secret), atomically.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../storage/atomic-file';
import { configLimits, parseNodeConfig, type NodeConfig } from './config';
import { ConfigError, fail, obj, type Obj } from '../util/config-fields';
import { checkHostPort, formatHostPort, sharedSettingsOf, type HostPortText, type JoinToken, type SharedSettings } from './join-token';

/** A first node's file that waits for the join, checked. */
export interface WaitingConfig {
  /** the file's JSON as it is */
  readonly raw: Obj;
  /**
   * The file as parseNodeConfig reads it once a peer is in: here with a stand-in peer (named
   * `standInPeer`, at this node's own sync address), so only the node's own parts mean anything.
   */
  readonly cfg: NodeConfig;
  readonly standInPeer: string;
  /** this node's heartbeat listen addresses in link order; empty: the default link beside the sync port */
  readonly heartbeatListens: readonly HostPortText[];
  readonly settings: SharedSettings;
}

function parseJson(text: string): unknown {
  if (text.length > configLimits.fileBytesMax) fail('config', `larger than ${configLimits.fileBytesMax} bytes`);
  try {
    return JSON.parse(text);
  } catch (e) {
    fail('config', `not JSON: ${(e as Error).message}`);
  }
}

/** A file made by `tandem cluster create` that no node has joined yet: a JSON object without `peer`. */
export function isWaitingConfigText(text: string): boolean {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return false;
  }
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !('peer' in v);
}

/** Checks a waiting file as parseNodeConfig would once joined; throws ConfigError naming the bad key. */
export function parseWaitingConfig(text: string): WaitingConfig {
  const raw = obj(parseJson(text), 'config', ['cluster', 'node', 'sync', 'heartbeat', 'fencing', 'volumes', 'pools', 'floatingIp', 'faults', 'notify', 'api']);
  for (const k of ['volumes', 'pools'] as const) {
    const v = raw[k];
    if (v !== undefined && !(Array.isArray(v) && v.length === 0)) fail(k, 'a node that waits for a peer to join has none yet: add them once the cluster is formed');
  }
  const nodeName = (raw.node as Obj | undefined)?.name;
  const standInPeer = nodeName === 'peer' ? 'peer-0' : 'peer';
  const asIfJoined: Obj = { ...raw };
  const n = obj(raw.node, 'node', ['name', 'dataDir', 'syncListen', 'apiListen', 'nbdListen']);
  // a stand-in for the peer, so the rest is checked as the node will read it
  asIfJoined.peer = { name: standInPeer, syncAddress: n.syncListen };
  let heartbeatListens: HostPortText[] = [];
  if (raw.heartbeat !== undefined) {
    const h = obj(raw.heartbeat, 'heartbeat', ['intervalMs', 'timeoutMs', 'mainStallMs', 'links']);
    if (h.links !== undefined) {
      if (!Array.isArray(h.links) || h.links.length === 0) fail('heartbeat.links', 'must be a non-empty list');
      if (h.links.length > configLimits.heartbeatLinksMax) fail('heartbeat.links', `at most ${configLimits.heartbeatLinksMax}`);
      heartbeatListens = h.links.map((l, i) => {
        const o = obj(l, `heartbeat.links[${i}]`, ['listen']);
        return checkHostPort(o.listen, `heartbeat.links[${i}].listen`, true);
      });
      asIfJoined.heartbeat = { ...h, links: heartbeatListens.map((l) => ({ listen: l.text, peer: l.text })) };
    }
  }
  const cfg = parseNodeConfig(JSON.stringify(asIfJoined));
  // the other node reaches these: no wildcards
  checkHostPort(n.syncListen, 'node.syncListen');
  checkHostPort(n.apiListen, 'node.apiListen');
  return { raw, cfg, standInPeer, heartbeatListens, settings: sharedSettingsOf(raw) };
}

/** What either node's file says of the node itself. */
export interface NodeFileOptions {
  readonly nodeName: string;
  readonly dataDir: string;
  readonly sync: string;
  readonly api: string;
  readonly nbd: string;
  readonly heartbeat: readonly string[];
}

/** What `tandem cluster create` writes: the first node's file, waiting for the join. */
export interface CreateOptions extends NodeFileOptions {
  readonly clusterName: string;
  readonly clusterId: Buffer;
  readonly secret: Buffer;
  readonly heartbeatIntervalMs?: number | undefined;
  readonly heartbeatTimeoutMs?: number | undefined;
  readonly fencingPolicy?: string | undefined;
  readonly witness?: string | undefined;
  readonly fenceCommand?: readonly string[] | undefined;
  readonly floatingIpDriver?: string | undefined;
}

export function waitingConfigObject(o: CreateOptions): Obj {
  const out: Obj = {
    cluster: { name: o.clusterName, id: o.clusterId.toString('hex'), secret: o.secret.toString('hex') },
    node: { name: o.nodeName, dataDir: o.dataDir, syncListen: o.sync, apiListen: o.api, nbdListen: o.nbd },
  };
  const hb: Obj = {};
  if (o.heartbeatIntervalMs !== undefined) hb.intervalMs = o.heartbeatIntervalMs;
  if (o.heartbeatTimeoutMs !== undefined) hb.timeoutMs = o.heartbeatTimeoutMs;
  if (o.heartbeat.length > 0) hb.links = o.heartbeat.map((listen) => ({ listen }));
  if (Object.keys(hb).length > 0) out.heartbeat = hb;
  const f: Obj = {};
  if (o.fencingPolicy !== undefined) f.policy = o.fencingPolicy;
  if (o.witness !== undefined) f.witness = o.witness;
  if (o.fenceCommand !== undefined) f.command = o.fenceCommand;
  if (Object.keys(f).length > 0) out.fencing = f;
  if (o.floatingIpDriver !== undefined) out.floatingIp = { driver: o.floatingIpDriver };
  return out;
}

/**
 * The first node's file once joined: `peer` after `node`, and link i's `peer` the joining
 * node's heartbeat address i. Everything else stays as it was.
 */
export function joinedConfigObject(raw: Obj, peer: { name: string; syncAddress: string; apiAddress: string }, peerHeartbeat: readonly string[]): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(raw)) {
    out[k] = v;
    if (k === 'node') out.peer = { name: peer.name, syncAddress: peer.syncAddress, apiAddress: peer.apiAddress };
  }
  const h = raw.heartbeat as Obj | undefined;
  if (h !== undefined && Array.isArray(h.links)) {
    out.heartbeat = { ...h, links: (h.links as Obj[]).map((l, i) => ({ listen: l.listen, peer: peerHeartbeat[i] })) };
  }
  return out;
}

export interface JoinerOptions extends NodeFileOptions {
  readonly fenceCommand?: readonly string[] | undefined;
}

/** The joining node's file: the token's cluster and shared settings, the first node as its peer. */
export function joinerConfigObject(t: JoinToken, o: JoinerOptions): Obj {
  const out: Obj = {
    cluster: { name: t.cluster.name, id: t.cluster.id.toString('hex'), secret: t.cluster.secret.toString('hex') },
    node: { name: o.nodeName, dataDir: o.dataDir, syncListen: o.sync, apiListen: o.api, nbdListen: o.nbd },
    peer: { name: t.node.name, syncAddress: t.node.sync.text, apiAddress: t.node.api.text },
  };
  const s = t.settings;
  if (s.sync !== undefined) out.sync = { ...s.sync };
  const links = o.heartbeat.map((listen, i) => ({ listen, peer: t.node.heartbeat[i]?.text }));
  if (s.heartbeat !== undefined || links.length > 0) out.heartbeat = { ...s.heartbeat, ...(links.length > 0 ? { links } : {}) };
  if (s.fencing !== undefined || o.fenceCommand !== undefined) out.fencing = { ...s.fencing, ...(o.fenceCommand !== undefined ? { command: o.fenceCommand } : {}) };
  if (s.floatingIp !== undefined) out.floatingIp = { ...s.floatingIp };
  return out;
}

/** The text of a config file: what parseNodeConfig (or parseWaitingConfig) accepts, or a ConfigError. */
export function configText(o: Obj, waiting = false): string {
  const text = JSON.stringify(o, null, 2) + '\n';
  if (waiting) parseWaitingConfig(text);
  else parseNodeConfig(text);
  return text;
}

export function readConfigText(file: string): string {
  const st = fs.statSync(file);
  if (st.size > configLimits.fileBytesMax) throw new ConfigError('ERR_CONFIG', `${file}: larger than ${configLimits.fileBytesMax} bytes`);
  return fs.readFileSync(file, 'utf8');
}

/** Writes a node file atomically with mode 0600 (writeFileAtomic); without `overwrite`, an existing file is refused and kept. */
export function writeConfigFile(file: string, text: string, overwrite: boolean): void {
  const at = path.resolve(file);
  fs.mkdirSync(path.dirname(at), { recursive: true, mode: 0o700 });
  try {
    writeFileAtomic(at, text, { replace: overwrite });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    throw Object.assign(new Error(`${file} exists already: move it away, or give --force to replace it`), { code: 'EEXIST' });
  }
}

/** The join token of a waiting first node's file: `tandem cluster create` prints it, `tandem cluster token` again. */
export function tokenOf(w: WaitingConfig): JoinToken {
  const c = w.cfg;
  return {
    cluster: { name: c.cluster.name, id: c.cluster.id, secret: c.cluster.secret },
    node: {
      name: c.node.name,
      sync: checkHostPort(formatHostPort(c.node.syncListen), 'node.syncListen'),
      api: checkHostPort(formatHostPort(c.node.apiListen), 'node.apiListen'),
      heartbeat: w.heartbeatListens,
    },
    settings: w.settings,
  };
}
