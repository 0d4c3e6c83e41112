// The node's HTTP API (JSON): status and the commands of docs/mirroring.md and docs/cluster.md,
// the web console, the event stream and the metrics; over HTTPS when the node file has
// `api.tls`. Every request but the console's files, the health check, the OpenAPI
// description and the join exchange needs a token (docs/operations.md, "API security"): no
// valid token, 401; a read token asking for a command, 403. A refused request changes nothing.
// Errors are { error: { code, message } }.
import http from 'node:http';
import https from 'node:https';
import type { Logger } from '../util/log';
import { createWebConsole, type WebConsole } from '../web/console-server';
import { authenticate, stillValid, type Caller, type KnownTokens } from './api-auth';
import { ApiError, crossOrigin, preflightHeaders, readBody, readCorsHeaders, replyError, replyJson } from './api-http';
import { ensureLocalToken, type LocalToken } from './api-local-token';
import { matchRoute, readablePath, type Route } from './api-routes';
import { roleAllows } from './api-token';
import { loadTls } from './api-tls';
import type { HostPort } from './config';
import type { NodeDaemon } from './daemon';
import { RunningJoin } from './join-running';

export interface ApiServer {
  readonly address: HostPort;
  close(): Promise<void>;
}

export const apiServerLimits = {
  /** a verify of a large volume answers when it is done */
  requestTimeoutMs: 10 * 60 * 1000,
} as const;

const UNAUTHORIZED_HEADERS = { 'www-authenticate': 'Bearer realm="tandem"' } as const;

/** Maps what the commands throw to an HTTP answer. */
function errorAnswer(e: unknown): { status: number; code: string; message: string; headers: Record<string, string> } | null {
  if (e instanceof ApiError) return { status: e.status, code: e.code, message: e.message, headers: e.headers };
  const code = (e as { code?: unknown }).code;
  const message = (e as Error).message;
  if (code === 'ERR_CONFIG' || code === 'ERR_BAD_REQUEST') return { status: 400, code, message, headers: {} };
  if (code === 'ERR_UNKNOWN_POOL' || code === 'ERR_UNKNOWN_TOKEN') return { status: 404, code, message, headers: {} };
  if (typeof code === 'string' && code.startsWith('ERR_')) return { status: 409, code, message, headers: {} };
  return null;
}

class Handler {
  private readonly joins: RunningJoin;

  constructor(private readonly d: NodeDaemon, private readonly web: WebConsole, private readonly local: LocalToken, private readonly log: Logger) {
    this.joins = new RunningJoin(() => d.cfg);
  }

  private known(): KnownTokens {
    return { tokens: this.d.clusterConfig.tokens.tokens, local: this.local, node: this.d.cfg.node.name };
  }

  handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const method = req.method ?? 'GET';
    const url = (req.url ?? '/').split('?')[0] as string;
    const read = method === 'GET' || method === 'HEAD';
    if (read || method === 'OPTIONS') {
      if (url.startsWith('/api/') || url === '/metrics') for (const [k, v] of Object.entries(readCorsHeaders)) res.setHeader(k, v);
    }
    if (method === 'OPTIONS') {
      // a browser asks before a cross-origin read that carries a token; commands stay same-origin
      res.writeHead(204, readablePath(url) ? preflightHeaders : {});
      res.end();
      return;
    }
    const m = matchRoute(method, url);
    if (m.kind === 'none') { replyError(res, 404, 'ERR_NOT_FOUND', `no such endpoint: ${method} ${url}`); return; }
    if (m.kind === 'method') {
      replyError(res, 405, 'ERR_METHOD', `${url} takes ${m.allowed.join(' or ')}`, { allow: m.allowed.join(', ') });
      return;
    }
    const route = m.route;
    let caller: Caller | null = null;
    if (route.access !== 'public') {
      const a = authenticate(req.headers.authorization, this.known());
      if (!a.ok) { replyError(res, 401, 'ERR_UNAUTHORIZED', a.message, UNAUTHORIZED_HEADERS); return; }
      caller = a.caller;
      if (!roleAllows(caller.role, route.access)) {
        replyError(res, 403, 'ERR_FORBIDDEN', `token ${caller.name} has the ${caller.role} role: ${method} ${url} needs an admin token`);
        return;
      }
    }
    if (!read) {
      const other = crossOrigin(req);
      if (other !== undefined) {
        replyError(res, 403, 'ERR_CROSS_ORIGIN', `commands are taken from this node's own console only, not from a page at ${other}`);
        return;
      }
    }
    if (route.kind === 'web') { this.serveWeb(route.serve, req, res, url, caller); return; }
    this.runJson(route, req, res, m.params, caller);
  }

  private serveWeb(serve: 'page' | 'events' | 'metrics', req: http.IncomingMessage, res: http.ServerResponse, url: string, caller: Caller | null): void {
    if (serve === 'page') { this.web.page(req, res, url); return; }
    if (serve === 'metrics') { this.web.metrics(req, res); return; }
    if (req.method === 'HEAD') { replyError(res, 405, 'ERR_METHOD', `${url} takes GET`, { allow: 'GET' }); return; }
    // a stream outlives the request that opened it: it ends when its token is revoked
    this.web.events(req, res, () => caller === null || stillValid(caller, this.known()));
  }

  private runJson(route: Route & { kind: 'json' }, req: http.IncomingMessage, res: http.ServerResponse, params: Readonly<Record<string, string>>, caller: Caller | null): void {
    const ctx = { d: this.d, params, body: () => readBody(req), caller, local: this.local, joins: this.joins };
    const head = req.method === 'HEAD';
    Promise.resolve().then(() => route.run(ctx)).then(
      (v) => replyJson(res, 200, v, {}, head),
      (e: unknown) => {
        const a = errorAnswer(e);
        if (a !== null) { replyError(res, a.status, a.code, a.message, a.headers); return; }
        this.log.error('request failed', { url: req.url, error: (e as Error).stack ?? String(e) });
        replyError(res, 500, 'ERR_INTERNAL', (e as Error).message);
      },
    );
  }
}

export function startApi(d: NodeDaemon, at: HostPort, log: Logger): Promise<ApiServer> {
  const tls = d.cfg.api.tls === null ? null : loadTls(d.cfg.api.tls);
  const local = ensureLocalToken(d.cfg.node.dataDir);
  if (local.created) log.info('this node\'s own admin token was made: valid on this node only', { file: local.file, id: local.id });
  const web = createWebConsole(d, log);
  const handler = new Handler(d, web, local, log);
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => handler.handle(req, res);
  const server = tls === null ? http.createServer(onRequest) : https.createServer({ cert: tls.cert, key: tls.key }, onRequest);
  server.requestTimeout = apiServerLimits.requestTimeoutMs;
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
