// What the node's API serves besides its JSON commands: the web console's page and files,
// the event stream and the Prometheus metrics (docs/console.md). Which request reaches which,
// and who may ask, is the API's route table (src/node/api-routes.ts).
import type http from 'node:http';
import { replyError } from '../node/api-http';
import { metricsContentType, renderMetrics } from '../node/metrics';
import type { Logger } from '../util/log';
import { Assets } from './assets';
import { EventFeed } from './events';
import { nodeStatus, type StatusSource } from './status-view';

export interface WebConsole {
  /** one of the console's files (assetPaths) */
  page(req: http.IncomingMessage, res: http.ServerResponse, url: string): void;
  metrics(req: http.IncomingMessage, res: http.ServerResponse): void;
  /** takes the response over as an event stream, ended when `valid` turns false (the token was revoked) */
  events(req: http.IncomingMessage, res: http.ServerResponse, valid: () => boolean): void;
  /** ends the event streams and their timers */
  close(): void;
  readonly streams: number;
}

// The page loads only its own files; it reads the peer's API, so connect-src allows other origins.
const pageHeaders = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' http: https:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const;

export function createWebConsole(source: StatusSource, log: Logger): WebConsole {
  const assets = new Assets();
  const feed = new EventFeed(() => nodeStatus(source), (e) => log.error('event stream: reading the status failed', { error: (e as Error).stack ?? String(e) }));
  return {
    get streams() { return feed.size; },
    close: () => feed.close(),
    events: (req, res, valid) => feed.open(req, res, valid),
    metrics(req, res) {
      let text: string;
      try {
        text = renderMetrics(nodeStatus(source));
      } catch (e) {
        log.error('rendering the metrics failed', { error: (e as Error).stack ?? String(e) });
        replyError(res, 500, 'ERR_INTERNAL', (e as Error).message);
        return;
      }
      res.writeHead(200, { 'content-type': metricsContentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    page(req, res, url) {
      let a;
      try {
        a = assets.get(url);
      } catch (e) {
        log.error('the console\'s files cannot be read', { url, error: String(e) });
        replyError(res, 500, 'ERR_CONSOLE_FILES', `the console's files cannot be read: ${(e as Error).message}`);
        return;
      }
      if (a === undefined) {
        replyError(res, 404, 'ERR_NOT_FOUND', `no such file: ${url}`);
        return;
      }
      if (req.headers['if-none-match'] === a.etag) {
        res.writeHead(304, { etag: a.etag, 'cache-control': 'no-cache' });
        res.end();
        return;
      }
      res.writeHead(200, { ...pageHeaders, 'content-type': a.contentType, 'content-length': a.body.length, etag: a.etag, 'cache-control': 'no-cache' });
      res.end(req.method === 'HEAD' ? undefined : a.body);
    },
  };
}
