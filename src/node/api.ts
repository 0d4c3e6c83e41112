// The node's HTTP API (JSON): status and the commands of docs/mirroring.md and docs/cluster.md.
// Every request body is bounded and checked; errors are { error: { code, message } }.
import http from 'node:http';
import type { Command } from '../cluster/machine-types';
import { diskStallLimits } from '../storage/stall-backend';
import type { Logger } from '../util/log';
import { createWebConsole } from '../web/console-server';
import { nodeStatus } from '../web/status-view';
import type { HostPort } from './config';
import type { NodeDaemon } from './daemon';
import { createPool, exportPool, importPool, manage, removePool } from './pool-lifecycle';

export interface ApiServer {
  readonly address: HostPort;
  close(): Promise<void>;
}

export const apiLimits = { bodyBytesMax: 64 * 1024 } as const;

class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > apiLimits.bodyBytesMax) {
        reject(new ApiError(413, 'ERR_TOO_LARGE', `request body over ${apiLimits.bodyBytesMax} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') { resolve({}); return; }
      try {
        const v: unknown = JSON.parse(text);
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch (e) {
        reject(new ApiError(400, 'ERR_BAD_REQUEST', `request body is not a JSON object: ${(e as Error).message}`));
      }
    });
    req.on('error', reject);
  });
}

function needPool(d: NodeDaemon, pool: string): void {
  if (!d.cfg.pools.some((p) => p.name === pool)) throw new ApiError(404, 'ERR_UNKNOWN_POOL', `no pool named ${JSON.stringify(pool)}`);
}

function bool(body: Record<string, unknown>, key: string): boolean {
  const v = body[key] ?? false;
  if (typeof v !== 'boolean') throw new ApiError(400, 'ERR_BAD_REQUEST', `${key} must be true or false`);
  return v;
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

async function route(d: NodeDaemon, method: string, url: string, body: () => Promise<Record<string, unknown>>): Promise<unknown> {
  if (method === 'GET' && url === '/api/v1/status') return nodeStatus(d);
  if (url === '/api/v1/faults/disk-stall') {
    // a test and diagnostic facility (docs/cluster.md, "Fault injection"): absent unless the config enables it
    if (d.diskStall === undefined) throw new ApiError(404, 'ERR_FAULTS_DISABLED', 'fault injection is not enabled on this node (config: "faults": { "enabled": true })');
    if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
    const ms = (await body()).ms;
    if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > diskStallLimits.msMax) {
      throw new ApiError(400, 'ERR_BAD_REQUEST', `ms must be an integer from 1 to ${diskStallLimits.msMax}`);
    }
    d.stallDisk(ms);
    return { ok: true, stallMs: ms };
  }
  if (url === '/api/v1/config') {
    if (method !== 'GET') throw new ApiError(405, 'ERR_METHOD', `${url} takes GET`);
    return { ...d.clusterConfig.status(), document: d.clusterConfig.document };
  }
  if (url === '/api/v1/config/push') {
    if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
    d.pushConfig();
    return { ok: true, message: `this node's cluster configuration (epoch ${d.clusterConfig.document.epoch}) goes to the peer`, config: d.clusterConfig.status() };
  }
  if (url === '/api/v1/pools') {
    if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
    return { ok: true, message: await createPool(d, await body()), cluster: d.cluster.status() };
  }
  const lc = /^\/api\/v1\/pools\/([^/]+)\/(remove|export|import|manage|unmanage|reattach)$/.exec(url);
  if (lc !== null) {
    if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
    const pool = decodeURIComponent(lc[1] as string);
    const b = await body();
    let message: string;
    switch (lc[2]) {
      case 'remove': message = await removePool(d, pool); break;
      case 'export': message = await exportPool(d, pool); break;
      case 'import': message = await importPool(d, pool); break;
      case 'manage': message = await manage(d, pool, true); break;
      case 'unmanage': message = await manage(d, pool, false); break;
      default: {
        needPool(d, pool);
        if (typeof b.node !== 'string') throw new ApiError(400, 'ERR_BAD_REQUEST', 'node must name the node to activate the pool on');
        const r = await d.cluster.command({ kind: 'reattach', pool, node: b.node });
        if (!r.ok) throw new ApiError(409, 'ERR_REFUSED', r.message);
        message = r.message;
      }
    }
    return { ok: true, message, cluster: d.cluster.status() };
  }
  const mv = /^\/api\/v1\/pools\/([^/]+)\/move$/.exec(url);
  if (mv !== null) {
    if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
    const pool = decodeURIComponent(mv[1] as string);
    needPool(d, pool);
    const node = (await body()).node;
    if (typeof node !== 'string') throw new ApiError(400, 'ERR_BAD_REQUEST', 'node must name the node to move the pool to');
    return { ok: true, message: await movePool(d, pool, node), cluster: d.cluster.status() };
  }
  const mb = /^\/api\/v1\/(?:node\/(offline|online)|nodes\/([^/]+)\/(remove|add))$/.exec(url);
  if (mb !== null) {
    if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
    const b = await body();
    const node = mb[2] === undefined ? null : decodeURIComponent(mb[2]);
    const command: Command = mb[1] === 'offline' ? { kind: 'offline', force: bool(b, 'force') }
      : mb[1] === 'online' ? { kind: 'online', force: bool(b, 'force') }
        : mb[3] === 'remove' ? { kind: 'remove-node', node: node ?? '', force: bool(b, 'force') } : { kind: 'add-node', node: node ?? '' };
    const r = await d.cluster.command(command);
    if (!r.ok) throw new ApiError(409, 'ERR_REFUSED', r.message);
    return { ok: true, message: r.message, cluster: d.cluster.status() };
  }
  const pm = /^\/api\/v1\/pools\/([^/]+)\/(promote|demote|swap)$/.exec(url);
  if (pm !== null || url === '/api/v1/maintenance') {
    if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
    const b = await body();
    let command: Command;
    if (pm === null) {
      if (typeof b.on !== 'boolean') throw new ApiError(400, 'ERR_BAD_REQUEST', 'on must be true or false');
      command = { kind: 'maintenance', on: b.on };
    } else {
      const pool = decodeURIComponent(pm[1] as string);
      needPool(d, pool);
      command = pm[2] === 'promote' ? { kind: 'promote', pool, force: bool(b, 'force') }
        : pm[2] === 'demote' ? { kind: 'demote', pool } : { kind: 'swap', pool };
    }
    const r = await d.cluster.command(command);
    if (!r.ok) throw new ApiError(409, 'ERR_REFUSED', r.message);
    return { ok: true, message: r.message, cluster: d.cluster.status() };
  }
  const m = /^\/api\/v1\/volumes\/([^/]+)\/(verify|resolve|promote|demote|connect|disconnect)$/.exec(url);
  if (m === null) throw new ApiError(404, 'ERR_NOT_FOUND', `no such endpoint: ${method} ${url}`);
  if (method !== 'POST') throw new ApiError(405, 'ERR_METHOD', `${url} takes POST`);
  const name = decodeURIComponent(m[1] as string);
  const r = d.replica(name);
  if (r === undefined) throw new ApiError(404, 'ERR_UNKNOWN_VOLUME', `no volume named ${JSON.stringify(name)} on ${d.nodeName}`);
  const b = await body();
  switch (m[2]) {
    case 'verify':
      return r.verify({ resync: bool(b, 'resync') });
    case 'promote':
      await d.promote(name, bool(b, 'force'));
      return r.status();
    case 'demote':
      await d.demote(name);
      return r.status();
    case 'disconnect':
      await r.disconnect();
      return r.status();
    case 'connect':
      r.connect();
      return r.status();
    case 'resolve': {
      const node = b.discard;
      if (typeof node !== 'string') throw new ApiError(400, 'ERR_BAD_REQUEST', 'discard must name the node whose changes are thrown away');
      if (node === d.nodeName) r.resolveDiscardLocal();
      else if (node === d.cfg.peer.name) throw new ApiError(400, 'ERR_RESOLVE_ON_LOSER', `run resolve on ${node}, the node whose changes are discarded`);
      else throw new ApiError(400, 'ERR_UNKNOWN_NODE', `${JSON.stringify(node)} is neither ${d.nodeName} nor ${d.cfg.peer.name}`);
      return r.status();
    }
  }
  throw new ApiError(404, 'ERR_NOT_FOUND', url);
}

export function startApi(d: NodeDaemon, at: HostPort, log: Logger): Promise<ApiServer> {
  // the web console (docs/console.md): its page and files, GET /api/v1/events, GET /metrics, and the origin rules
  const web = createWebConsole(d, log);
  const server = http.createServer((req, res) => {
    if (web.handle(req, res)) return;
    const reply = (status: number, v: unknown): void => {
      const text = JSON.stringify(v, null, 2) + '\n';
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    route(d, req.method ?? 'GET', (req.url ?? '/').split('?')[0] as string, () => readBody(req)).then(
      (v) => reply(200, v),
      (e: unknown) => {
        if (e instanceof ApiError) { reply(e.status, { error: { code: e.code, message: e.message } }); return; }
        const code = (e as { code?: unknown }).code;
        if (code === 'ERR_CONFIG' || code === 'ERR_BAD_REQUEST') { reply(400, { error: { code, message: (e as Error).message } }); return; }
        if (code === 'ERR_UNKNOWN_POOL') { reply(404, { error: { code, message: (e as Error).message } }); return; }
        if (typeof code === 'string' && code.startsWith('ERR_')) { reply(409, { error: { code, message: (e as Error).message } }); return; }
        log.error('request failed', { url: req.url, error: (e as Error).stack ?? String(e) });
        reply(500, { error: { code: 'ERR_INTERNAL', message: (e as Error).message } });
      },
    );
  });
  server.requestTimeout = 10 * 60 * 1000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: at.host, port: at.port, exclusive: true }, () => {
      server.off('error', reject);
      const a = server.address() as { address: string; port: number };
      resolve({
        address: { host: a.address, port: a.port },
        close: () => new Promise<void>((r) => { web.close(); server.closeAllConnections(); server.close(() => r()); }),
      });
    });
  });
}
