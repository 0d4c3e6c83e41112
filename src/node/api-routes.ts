// Every route the node's API serves, with who may ask: the one table the server dispatches on
// and docs/openapi.json describes (test/unit/openapi-routes.test.ts holds the two together).
// Paths are OpenAPI templates: {name} is one path segment, percent-decoded.
import fs from 'node:fs';
import type { Command } from '../cluster/machine-types';
import { diskStallLimits } from '../storage/stall-backend';
import { openApiFile, packageVersion } from '../util/package-files';
import { assetPaths } from '../web/assets';
import { nodeStatus } from '../web/status-view';
import type { Caller } from './api-auth';
import { ApiError } from './api-http';
import type { LocalToken } from './api-local-token';
import type { Access } from './api-token';
import { publicRecord } from './api-token-records';
import { createToken, listTokens, revokeTokenRoute } from './api-token-routes';
import type { NodeDaemon } from './daemon';
import type { RunningJoin } from './join-running';
import { createPool, exportPool, importPool, manage, removePool } from './pool-lifecycle';

export interface RouteContext {
  readonly d: NodeDaemon;
  readonly params: Readonly<Record<string, string>>;
  body(): Promise<Record<string, unknown>>;
  /** the verified token; null on public routes */
  readonly caller: Caller | null;
  readonly local: LocalToken;
  readonly joins: RunningJoin;
}

interface RouteBase {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly access: Access;
}

/** answered with JSON by `run` */
export interface JsonRoute extends RouteBase { readonly kind: 'json'; run(c: RouteContext): Promise<unknown> | unknown }
/** answered by the web console's server (src/web/console-server.ts) */
export interface WebRoute extends RouteBase { readonly kind: 'web'; readonly serve: 'page' | 'events' | 'metrics' }
export type Route = JsonRoute | WebRoute;

function needPool(d: NodeDaemon, pool: string): void {
  if (!d.cfg.pools.some((p) => p.name === pool)) throw new ApiError(404, 'ERR_UNKNOWN_POOL', `no pool named ${JSON.stringify(pool)}`);
}

function bool(body: Record<string, unknown>, key: string): boolean {
  const v = body[key] ?? false;
  if (typeof v !== 'boolean') throw new ApiError(400, 'ERR_BAD_REQUEST', `${key} must be true or false`);
  return v;
}

async function machineCommand(d: NodeDaemon, command: Command): Promise<unknown> {
  const r = await d.cluster.command(command);
  if (!r.ok) throw new ApiError(409, 'ERR_REFUSED', r.message);
  return { ok: true, message: r.message, cluster: d.cluster.status() };
}

/**
 * A manual migration: the owner hands the pool over (a swap) and no constraint is left behind,
 * so the pool fails over and back as before. Asked of the owner; moving to where it is is a no-op.
 */
async function movePool(d: NodeDaemon, pool: string, node: string): Promise<string> {
  const self = d.cfg.node.name;
  const peer = d.cfg.peer.name;
  if (node !== self && node !== peer) throw new ApiError(404, 'ERR_UNKNOWN_NODE', `no node named ${JSON.stringify(node)} in this cluster (${self}, ${peer})`);
  const view = d.cluster.status().pools.find((p) => p.name === pool);
  if (view === undefined) throw new ApiError(404, 'ERR_UNKNOWN_POOL', `no pool named ${JSON.stringify(pool)}`);
  if (view.owner === node) return `pool ${pool} is on ${node} already (${view.phase} here)`;
  if (view.owner !== self) throw new ApiError(409, 'ERR_NOT_OWNER', `pool ${pool} is owned by ${view.owner}: ask ${view.owner}'s API to move it`);
  const r = await d.cluster.command({ kind: 'swap', pool });
  if (!r.ok) throw new ApiError(409, 'ERR_REFUSED', r.message);
  return `pool ${pool} moved to ${node}: ${r.message}`;
}

function lifecycle(action: 'remove' | 'export' | 'import' | 'manage' | 'unmanage', run: (d: NodeDaemon, pool: string) => Promise<string>): JsonRoute {
  return {
    kind: 'json', method: 'POST', path: `/api/v1/pools/{pool}/${action}`, access: 'admin',
    run: async (c) => ({ ok: true, message: await run(c.d, c.params.pool as string), cluster: c.d.cluster.status() }),
  };
}

function volumeCommand(action: string, run: (c: RouteContext, name: string, b: Record<string, unknown>) => Promise<unknown>): JsonRoute {
  return {
    kind: 'json', method: 'POST', path: `/api/v1/volumes/{volume}/${action}`, access: 'admin',
    run: async (c) => {
      const name = c.params.volume as string;
      if (c.d.replica(name) === undefined) throw new ApiError(404, 'ERR_UNKNOWN_VOLUME', `no volume named ${JSON.stringify(name)} on ${c.d.nodeName}`);
      return run(c, name, await c.body());
    },
  };
}

/** the replica of a volume checked to exist by volumeCommand */
function replicaOf(c: RouteContext, name: string): NonNullable<ReturnType<NodeDaemon['replica']>> {
  return c.d.replica(name) as NonNullable<ReturnType<NodeDaemon['replica']>>;
}

const webPages: readonly WebRoute[] = assetPaths.map((path) => ({ kind: 'web', method: 'GET', path, access: 'public', serve: 'page' }));

export const apiRoutes: readonly Route[] = [
  ...webPages,
  { kind: 'web', method: 'GET', path: '/metrics', access: 'read', serve: 'metrics' },
  { kind: 'web', method: 'GET', path: '/api/v1/events', access: 'read', serve: 'events' },
  {
    kind: 'json', method: 'GET', path: '/api/v1/health', access: 'public',
    run: (c) => ({ ok: true, node: c.d.cfg.node.name, version: packageVersion() }),
  },
  {
    kind: 'json', method: 'GET', path: '/api/v1/openapi.json', access: 'public',
    run: () => {
      try {
        return JSON.parse(fs.readFileSync(openApiFile(), 'utf8')) as unknown;
      } catch (e) {
        throw new ApiError(500, 'ERR_INTERNAL', `the OpenAPI description cannot be read: ${(e as Error).message}`);
      }
    },
  },
  { kind: 'json', method: 'GET', path: '/api/v1/status', access: 'read', run: (c) => nodeStatus(c.d) },
  {
    kind: 'json', method: 'GET', path: '/api/v1/config', access: 'read',
    // the token records' hashes stay on the nodes
    run: (c) => {
      const doc = c.d.clusterConfig.document;
      return { ...c.d.clusterConfig.status(), document: { ...doc, ...(doc.tokens === undefined ? {} : { tokens: doc.tokens.map(publicRecord) }) } };
    },
  },
  {
    kind: 'json', method: 'POST', path: '/api/v1/config/push', access: 'admin',
    run: (c) => {
      c.d.pushConfig();
      return { ok: true, message: `this node's cluster configuration (epoch ${c.d.clusterConfig.document.epoch}) goes to the peer`, config: c.d.clusterConfig.status() };
    },
  },
  { kind: 'json', method: 'GET', path: '/api/v1/tokens', access: 'admin', run: (c) => listTokens(c.d, c.local) },
  { kind: 'json', method: 'POST', path: '/api/v1/tokens', access: 'admin', run: async (c) => createToken(c.d, await c.body()) },
  { kind: 'json', method: 'POST', path: '/api/v1/tokens/{token}/revoke', access: 'admin', run: (c) => revokeTokenRoute(c.d, c.params.token as string) },
  {
    kind: 'json', method: 'POST', path: '/api/v1/faults/disk-stall', access: 'admin',
    // a test and diagnostic facility (docs/cluster.md, "Fault injection"): absent unless the config enables it
    run: async (c) => {
      if (c.d.diskStall === undefined) throw new ApiError(404, 'ERR_FAULTS_DISABLED', 'fault injection is not enabled on this node (config: "faults": { "enabled": true })');
      const ms = (await c.body()).ms;
      if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > diskStallLimits.msMax) {
        throw new ApiError(400, 'ERR_BAD_REQUEST', `ms must be an integer from 1 to ${diskStallLimits.msMax}`);
      }
      c.d.stallDisk(ms);
      return { ok: true, stallMs: ms };
    },
  },
  {
    kind: 'json', method: 'POST', path: '/api/v1/maintenance', access: 'admin',
    run: async (c) => {
      const b = await c.body();
      if (typeof b.on !== 'boolean') throw new ApiError(400, 'ERR_BAD_REQUEST', 'on must be true or false');
      return machineCommand(c.d, { kind: 'maintenance', on: b.on });
    },
  },
  // docs/cluster.md, "Taking a node offline": this node leaves or comes back; the peer is removed or added here
  {
    kind: 'json', method: 'POST', path: '/api/v1/node/offline', access: 'admin',
    run: async (c) => machineCommand(c.d, { kind: 'offline', force: bool(await c.body(), 'force') }),
  },
  {
    kind: 'json', method: 'POST', path: '/api/v1/node/online', access: 'admin',
    run: async (c) => machineCommand(c.d, { kind: 'online', force: bool(await c.body(), 'force') }),
  },
  {
    kind: 'json', method: 'POST', path: '/api/v1/nodes/{node}/remove', access: 'admin',
    run: async (c) => machineCommand(c.d, { kind: 'remove-node', node: c.params.node as string, force: bool(await c.body(), 'force') }),
  },
  {
    kind: 'json', method: 'POST', path: '/api/v1/nodes/{node}/add', access: 'admin',
    run: async (c) => machineCommand(c.d, { kind: 'add-node', node: c.params.node as string }),
  },
  {
    kind: 'json', method: 'POST', path: '/api/v1/pools', access: 'admin',
    run: async (c) => ({ ok: true, message: await createPool(c.d, await c.body()), cluster: c.d.cluster.status() }),
  },
  lifecycle('remove', removePool),
  lifecycle('export', exportPool),
  lifecycle('import', importPool),
  lifecycle('manage', (d, pool) => manage(d, pool, true)),
  lifecycle('unmanage', (d, pool) => manage(d, pool, false)),
  {
    kind: 'json', method: 'POST', path: '/api/v1/pools/{pool}/reattach', access: 'admin',
    run: async (c) => {
      const pool = c.params.pool as string;
      needPool(c.d, pool);
      const b = await c.body();
      if (typeof b.node !== 'string') throw new ApiError(400, 'ERR_BAD_REQUEST', 'node must name the node to activate the pool on');
      return machineCommand(c.d, { kind: 'reattach', pool, node: b.node });
    },
  },
  {
    kind: 'json', method: 'POST', path: '/api/v1/pools/{pool}/move', access: 'admin',
    run: async (c) => {
      const pool = c.params.pool as string;
      needPool(c.d, pool);
      const node = (await c.body()).node;
      if (typeof node !== 'string') throw new ApiError(400, 'ERR_BAD_REQUEST', 'node must name the node to move the pool to');
      return { ok: true, message: await movePool(c.d, pool, node), cluster: c.d.cluster.status() };
    },
  },
  ...(['promote', 'demote', 'swap'] as const).map((action): JsonRoute => ({
    kind: 'json', method: 'POST', path: `/api/v1/pools/{pool}/${action}`, access: 'admin',
    run: async (c) => {
      const pool = c.params.pool as string;
      needPool(c.d, pool);
      const b = await c.body();
      return machineCommand(c.d, action === 'promote' ? { kind: 'promote', pool, force: bool(b, 'force') } : { kind: action, pool });
    },
  })),
  volumeCommand('verify', async (c, name, b) => replicaOf(c, name).verify({ resync: bool(b, 'resync') })),
  volumeCommand('promote', async (c, name, b) => {
    await c.d.promote(name, bool(b, 'force'));
    return replicaOf(c, name).status();
  }),
  volumeCommand('demote', async (c, name) => {
    await c.d.demote(name);
    return replicaOf(c, name).status();
  }),
  volumeCommand('disconnect', async (c, name) => {
    await replicaOf(c, name).disconnect();
    return replicaOf(c, name).status();
  }),
  volumeCommand('connect', async (c, name) => {
    replicaOf(c, name).connect();
    return replicaOf(c, name).status();
  }),
  volumeCommand('resolve', async (c, name, b) => {
    const node = b.discard;
    if (typeof node !== 'string') throw new ApiError(400, 'ERR_BAD_REQUEST', 'discard must name the node whose changes are thrown away');
    if (node === c.d.nodeName) replicaOf(c, name).resolveDiscardLocal();
    else if (node === c.d.cfg.peer.name) throw new ApiError(400, 'ERR_RESOLVE_ON_LOSER', `run resolve on ${node}, the node whose changes are discarded`);
    else throw new ApiError(400, 'ERR_UNKNOWN_NODE', `${JSON.stringify(node)} is neither ${c.d.nodeName} nor ${c.d.cfg.peer.name}`);
    return replicaOf(c, name).status();
  }),
  // the join exchange, as a node that has its peer answers it (src/node/join-running.ts)
  { kind: 'json', method: 'GET', path: '/api/v1/join/nonce', access: 'public', run: (c) => c.joins.nonce() },
  { kind: 'json', method: 'POST', path: '/api/v1/join', access: 'public', run: async (c) => c.joins.answer(await c.body()) },
];

// ------------------------------------------------------------------ matching

interface Compiled { readonly route: Route; readonly re: RegExp; readonly names: readonly string[] }

function compile(route: Route): Compiled {
  const names: string[] = [];
  const source = route.path.split('/').map((seg) => {
    const m = /^\{([a-z]+)\}$/.exec(seg);
    if (m === null) return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    names.push(m[1] as string);
    return '([^/]+)';
  }).join('/');
  return { route, re: new RegExp(`^${source}$`), names };
}

const compiled = apiRoutes.map(compile);

export type Match =
  | { readonly kind: 'route'; readonly route: Route; readonly params: Readonly<Record<string, string>> }
  /** the path exists, with other methods */
  | { readonly kind: 'method'; readonly allowed: readonly string[] }
  | { readonly kind: 'none' };

/** The route for a request; HEAD is served as GET. A path segment that is not valid percent-encoding matches nothing. */
export function matchRoute(method: string, urlPath: string): Match {
  const want = method === 'HEAD' ? 'GET' : method;
  const allowed: string[] = [];
  for (const c of compiled) {
    const m = c.re.exec(urlPath);
    if (m === null) continue;
    if (c.route.method !== want) { allowed.push(c.route.method); continue; }
    const params: Record<string, string> = {};
    try {
      c.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1] as string); });
    } catch {
      return { kind: 'none' };
    }
    return { kind: 'route', route: c.route, params };
  }
  return allowed.length > 0 ? { kind: 'method', allowed: [...new Set(allowed)] } : { kind: 'none' };
}

/** Whether a GET of this path exists: the browser's preflight for a cross-origin read asks. */
export function readablePath(urlPath: string): boolean {
  return compiled.some((c) => c.route.method === 'GET' && c.re.test(urlPath));
}
