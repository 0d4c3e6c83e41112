// One call to a node's API (docs/mirroring.md, "Commands"), with every way it can go wrong
// sorted into the two answers a script needs: the node said no (exit 1), or the node could
// not be asked (exit 3).
import http from 'node:http';
import { parseHostPort } from '../util/address';
import { UsageError } from './errors';

/** The API answered, with an error: the operation was refused or failed. */
export class ApiCallError extends Error {
  override readonly name = 'ApiCallError';
  constructor(readonly code: string, message: string, readonly httpStatus = 0) { super(message); }
}

/** No answer from the node's API: nothing listens, no route, no answer in time, or something else answered. */
export class ApiUnreachableError extends Error {
  override readonly name = 'ApiUnreachableError';
}

export const apiClientLimits = {
  /** a host that drops SYNs would otherwise hold the command for minutes of TCP retries */
  connectTimeoutMs: 5000,
  /** a status of 64 volumes with full activity logs is far below this */
  answerBytesMax: 64 * 1024 * 1024,
} as const;

export interface ApiAnswer {
  readonly value: unknown;
  /** the body as the node sent it: `status --json` prints it unchanged */
  readonly text: string;
}

export interface CallOptions {
  readonly body?: unknown;
  /** give up when no answer came within this long (ms) from the start of the call */
  readonly timeoutMs?: number;
}

export interface ApiAddress { readonly host: string; readonly port: number; readonly text: string }

export function parseApi(api: string, option = '--api'): ApiAddress {
  const at = parseHostPort(api);
  if (typeof at === 'string') throw new UsageError(`${option}: ${at}`);
  return { ...at, text: api };
}

function describeNetworkError(e: NodeJS.ErrnoException, api: string, post: boolean): string {
  const maybe = post ? ': the command may or may not have taken effect' : '';
  switch (e.code) {
    case 'ECONNREFUSED': return `nothing listens at ${api} (connection refused): is the node running, and is this its node.apiListen?`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH': return `no route to ${api} (${e.code})`;
    case 'EADDRNOTAVAIL': return `cannot connect to ${api} from this host (${e.code})`;
    case 'ECONNRESET':
    case 'EPIPE': return `the connection to ${api} broke before an answer (${e.code})${maybe}`;
    default: return `cannot reach ${api}: ${e.message}${maybe}`;
  }
}

/** GET or POST one API path; resolves with the parsed JSON answer of a 2xx reply. */
export function callApi(at: ApiAddress, method: 'GET' | 'POST', urlPath: string, o: CallOptions = {}): Promise<ApiAnswer> {
  const data = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
  const post = method === 'POST';
  return new Promise((resolve, reject) => {
    let settled = false;
    const timers: NodeJS.Timeout[] = [];
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      f();
    };
    const req = http.request({
      host: at.host, port: at.port, method, path: urlPath, agent: false,
      headers: { connection: 'close', ...(data === undefined ? {} : { 'content-type': 'application/json', 'content-length': data.length }) },
    }, (res) => {
      const chunks: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n > apiClientLimits.answerBytesMax) {
          req.destroy(new ApiUnreachableError(`${at.text} sent more than ${apiClientLimits.answerBytesMax} bytes: not the Tandem API`));
          return;
        }
        chunks.push(c);
      });
      res.on('error', (e) => settle(() => reject(new ApiUnreachableError(describeNetworkError(e, at.text, post)))));
      res.on('end', () => settle(() => {
        const text = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch {
          reject(new ApiUnreachableError(`${at.text} answered HTTP ${status} with something that is not JSON: not the Tandem API`));
          return;
        }
        const err = (value as { error?: { code?: unknown; message?: unknown } } | null)?.error;
        if (status >= 200 && status < 300) { resolve({ value, text }); return; }
        if (typeof err === 'object' && err !== null && typeof err.code === 'string' && typeof err.message === 'string') {
          reject(new ApiCallError(err.code, err.message, status));
          return;
        }
        reject(new ApiUnreachableError(`${at.text} answered HTTP ${status} without a Tandem error: not the Tandem API`));
      }));
    });
    req.on('socket', (socket) => {
      if (!socket.connecting) return;
      const t = setTimeout(() => req.destroy(new ApiUnreachableError(`no connection to ${at.text} within ${apiClientLimits.connectTimeoutMs / 1000} s`)),
        apiClientLimits.connectTimeoutMs);
      timers.push(t);
      socket.once('connect', () => clearTimeout(t));
    });
    if (o.timeoutMs !== undefined) {
      timers.push(setTimeout(() => req.destroy(new ApiUnreachableError(
        `${at.text} did not answer within ${formatMs(o.timeoutMs as number)}${post ? ': the command may still take effect' : ''}`)), o.timeoutMs));
    }
    req.on('error', (e) => settle(() => reject(e instanceof ApiUnreachableError ? e : new ApiUnreachableError(describeNetworkError(e, at.text, post)))));
    req.end(data);
  });
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
