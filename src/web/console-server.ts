// What the node's API serves besides its JSON commands: the web console's
// page and files, the event stream, the Prometheus metrics, and the
// cross-origin rules (docs/console.md).
import type http from 'node:http';
import { metricsContentType, renderMetrics } from '../node/metrics';
import type { Logger } from '../util/log';
import { Assets } from './assets';
import { EventFeed } from './events';
import { nodeStatus, type StatusSource } from './status-view';

export interface WebConsole {
  /** true if the request was answered here; false: the JSON API routes it */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
  /** ends the event streams and their timers */
  close(): void;
  readonly streams: number;
}

// the page loads only its own files; it reads the peer's API, so connect-src allows other origins
const pageHeaders = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' http: https:; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const;

function replyError(res: http.ServerResponse, status: number, code: string, message: string): void {
  const text = JSON.stringify({ error: { code, message } }, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * A browser sends Origin with every POST. The console's commands are same-origin, so a POST
 * from any other origin is a page elsewhere driving this API through a visitor's browser.
 */
function crossOrigin(req: http.IncomingMessage): string | undefined {
  const origin = req.headers.origin;
  if (origin === undefined) return undefined;
  const host = req.headers.host;
  return host !== undefined && (origin === `http://${host}` || origin === `https://${host}`) ? undefined : origin;
}

export function createWebConsole(source: StatusSource, log: Logger): WebConsole {
  const assets = new Assets();
  const feed = new EventFeed(() => nodeStatus(source), (e) => log.error('event stream: reading the status failed', { error: (e as Error).stack ?? String(e) }));
  return {
    get streams() { return feed.size; },
    close: () => feed.close(),
    handle(req, res) {
      const method = req.method ?? 'GET';
      const url = (req.url ?? '/').split('?')[0] as string;
      if (method !== 'GET' && method !== 'HEAD') {
        const other = crossOrigin(req);
        if (other === undefined) return false;
        replyError(res, 403, 'ERR_CROSS_ORIGIN', `commands are taken from this node's own console only, not from a page at ${other}`);
        return true;
      }
      // reads are open to any origin: a console shows its peer's status and events too
      if (url.startsWith('/api/') || url === '/metrics') res.setHeader('access-control-allow-origin', '*');
      if (url === '/metrics') {
        let text: string;
        try {
          text = renderMetrics(nodeStatus(source));
        } catch (e) {
          log.error('rendering the metrics failed', { error: (e as Error).stack ?? String(e) });
          replyError(res, 500, 'ERR_INTERNAL', (e as Error).message);
          return true;
        }
        res.writeHead(200, { 'content-type': metricsContentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
        res.end(method === 'HEAD' ? undefined : text);
        return true;
      }
      if (url === '/api/v1/events') {
        if (method === 'HEAD') return false;
        feed.open(req, res);
        return true;
      }
      let a;
      try {
        a = assets.get(url);
      } catch (e) {
        log.error('the console\'s files cannot be read', { url, error: String(e) });
        replyError(res, 500, 'ERR_CONSOLE_FILES', `the console's files cannot be read: ${(e as Error).message}`);
        return true;
      }
      if (a === undefined) return false;
      if (req.headers['if-none-match'] === a.etag) {
        res.writeHead(304, { etag: a.etag, 'cache-control': 'no-cache' });
        res.end();
        return true;
      }
      res.writeHead(200, { ...pageHeaders, 'content-type': a.contentType, 'content-length': a.body.length, etag: a.etag, 'cache-control': 'no-cache' });
      res.end(method === 'HEAD' ? undefined : a.body);
      return true;
    },
  };
}
