// The HTTP plumbing every API route shares: JSON answers and errors
// ({ error: { code, message } }), bounded request bodies, and the cross-origin rules.
import type http from 'node:http';

export const apiLimits = { bodyBytesMax: 64 * 1024 } as const;

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly headers: Record<string, string> = {}) { super(message); }
}

export function replyJson(res: http.ServerResponse, status: number, v: unknown, headers: Record<string, string> = {}, head = false): void {
  const text = JSON.stringify(v, null, 2) + '\n';
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(head ? undefined : text);
}

export function replyError(res: http.ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  replyJson(res, status, { error: { code, message } }, headers);
}

export function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
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

/**
 * A browser sends Origin with every POST. The console's commands are same-origin, so a POST
 * from any other origin is a page elsewhere driving this API through a visitor's browser.
 * Returns that other origin, or undefined.
 */
export function crossOrigin(req: http.IncomingMessage): string | undefined {
  const origin = req.headers.origin;
  if (origin === undefined) return undefined;
  const host = req.headers.host;
  return host !== undefined && (origin === `http://${host}` || origin === `https://${host}`) ? undefined : origin;
}

/**
 * Reads are open to pages of any origin that hold a token: a console reads its peer's status
 * and events with the same token, from the browser. The token goes in the Authorization
 * header, so the browser asks first (a preflight) whether it may send it.
 */
export const readCorsHeaders = { 'access-control-allow-origin': '*' } as const;

export const preflightHeaders = {
  ...readCorsHeaders,
  'access-control-allow-methods': 'GET, HEAD',
  'access-control-allow-headers': 'authorization',
  'access-control-max-age': '600',
} as const;
