// One call to a node's API (docs/mirroring.md, "Commands"), with every way it can go wrong
// sorted into the two answers a script needs: the node said no (exit 1), or the node could
// not be asked (exit 3). Over HTTPS when the address says https://, with the caller's token.
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
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

/** The token a call carries, and what to tell the operator when the node refuses it. */
export interface Credential {
  /** null: none was found */
  readonly token: string | null;
  /** where the token came from, or, without one, how to give one */
  readonly said: string;
}

export interface ApiAddress {
  readonly host: string;
  readonly port: number;
  /** as the operator wrote it, for messages */
  readonly text: string;
  /** the node serves its API over TLS (api.tls): the address was given as https://HOST:PORT */
  readonly https: boolean;
  /** certificates to trust beside the system's (--ca), for a node's self-signed certificate */
  readonly ca: Buffer | null;
  readonly credential: Credential | null;
}

/** HOST:PORT, http://HOST:PORT or https://HOST:PORT; without a token or certificates yet. */
export function parseApi(api: string, option = '--api'): ApiAddress {
  const m = /^(https?):\/\/(.*?)\/?$/.exec(api);
  const at = parseHostPort(m === null ? api : (m[2] as string));
  if (typeof at === 'string') throw new UsageError(`${option}: ${at}${m === null && api.includes('://') ? ' (only http:// and https:// are known)' : ''}`);
  return { ...at, text: api, https: m?.[1] === 'https', ca: null, credential: null };
}

/** Another node's address (the peer's API) reached the way `via` is: same scheme, certificates and token. */
export function sameWayAs(via: ApiAddress, hostPort: string, option: string): ApiAddress {
  const at = parseApi(hostPort, option);
  return { ...at, text: via.https ? `https://${hostPort}` : hostPort, https: via.https, ca: via.ca, credential: via.credential };
}

/** TLS failures that mean the node's certificate is not one this client trusts */
const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID',
]);

function describeNetworkError(e: NodeJS.ErrnoException, at: ApiAddress, post: boolean): string {
  const api = at.text;
  const maybe = post ? ': the command may or may not have taken effect' : '';
  const code = e.code ?? '';
  if (UNTRUSTED.has(code)) {
    return `the certificate of ${api} is not trusted (${code}: ${e.message}): give the certificate that signed it with --ca FILE or $TANDEM_CA`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the certificate of ${api} is not for this address (${e.message}): use the address it names, or a certificate that names this one`;
  if (code === 'EPROTO' || code.startsWith('ERR_SSL_')) {
    return `no TLS answer from ${api} (${code}): ${at.https ? 'if the node serves its API over plain HTTP, leave https:// out of the address' : e.message}`;
  }
  switch (code) {
    case 'ECONNREFUSED': return `nothing listens at ${api} (connection refused): is the node running, and is this its node.apiListen?`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH': return `no route to ${api} (${code})`;
    case 'EADDRNOTAVAIL': return `cannot connect to ${api} from this host (${code})`;
    case 'ECONNRESET':
    case 'EPIPE': return `the connection to ${api} broke before an answer (${code})${maybe}${at.https ? '' : '. If the node serves its API over HTTPS (api.tls), give the address as https://HOST:PORT'}`;
    default: return `cannot reach ${api}: ${e.message}${maybe}`;
  }
}

/** The message of a 401: the node's reason, and what the operator can do about it. */
function unauthorized(at: ApiAddress, message: string): string {
  const c = at.credential;
  if (c === null) return message;
  return c.token === null ? `${message}. No token was given: ${c.said}` : `${message} (the token from ${c.said})`;
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
    const token = at.credential?.token ?? null;
    const headers = {
      connection: 'close',
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(data === undefined ? {} : { 'content-type': 'application/json', 'content-length': data.length }),
    };
    const options = { host: at.host, port: at.port, method, path: urlPath, agent: false, headers } as const;
    const onResponse = (res: http.IncomingMessage): void => {
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
      res.on('error', (e) => settle(() => reject(new ApiUnreachableError(describeNetworkError(e, at, post)))));
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
          reject(new ApiCallError(err.code, status === 401 ? unauthorized(at, err.message) : err.message, status));
          return;
        }
        reject(new ApiUnreachableError(`${at.text} answered HTTP ${status} without a Tandem error: not the Tandem API`));
      }));
    };
    // the system's certificates stay trusted beside --ca: a node may have a certificate from a public CA
    const req = at.https
      ? https.request({ ...options, ...(at.ca === null ? {} : { ca: [...tls.rootCertificates, at.ca.toString('utf8')] }) }, onResponse)
      : http.request(options, onResponse);
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
    req.on('error', (e) => settle(() => reject(e instanceof ApiUnreachableError ? e : new ApiUnreachableError(describeNetworkError(e, at, post)))));
    req.end(data);
  });
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
