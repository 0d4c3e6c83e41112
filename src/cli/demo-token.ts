// The demo's API token: one cluster token (valid on both nodes, so the console shows both),
// made with alpha's own token and kept in DIR/api-token for the CLI. A later run keeps it
// while alpha still takes it; otherwise the old one is revoked and a new one made.
import fs from 'node:fs';
import path from 'node:path';
import { LOCAL_TOKEN_FILE } from '../node/api-local-token';
import { tokenIdOf } from '../node/api-token';
import { writeFileAtomic } from '../storage/atomic-file';
import { ApiCallError, ApiUnreachableError, callApi, type ApiAddress } from './api-client';

export const DEMO_TOKEN_NAME = 'demo';

export const demoTokenLimits = {
  /** the nodes meet within a second or two: the token reaches beta then */
  reachPeerMs: 30_000,
  pollMs: 200,
} as const;

interface NodeApi { readonly host: string; readonly port: number }

function address(at: NodeApi, token: string): ApiAddress {
  return { host: at.host, port: at.port, text: `${at.host}:${at.port}`, https: false, ca: null, credential: { token, said: 'the demo' } };
}

function readToken(file: string): string | null {
  try {
    const t = fs.readFileSync(file, 'utf8').trim();
    return tokenIdOf(t) === null ? null : t;
  } catch {
    return null;
  }
}

async function accepted(at: NodeApi, token: string): Promise<boolean> {
  try {
    await callApi(address(at, token), 'GET', '/api/v1/status', { timeoutMs: 5000 });
    return true;
  } catch (e) {
    if (e instanceof ApiCallError || e instanceof ApiUnreachableError) return false;
    throw e;
  }
}

/** The token, its file, and whether beta took it in time. */
export async function demoToken(dir: string, alpha: NodeApi & { dataDir: string }, beta: NodeApi): Promise<{ token: string; file: string; onBoth: boolean }> {
  const file = path.join(dir, 'api-token');
  let token = readToken(file);
  if (token === null || !(await accepted(alpha, token))) {
    const own = readToken(path.join(alpha.dataDir, LOCAL_TOKEN_FILE));
    if (own === null) throw new Error(`alpha's own token is not in ${path.join(alpha.dataDir, LOCAL_TOKEN_FILE)}`);
    const admin = address(alpha, own);
    const list = (await callApi(admin, 'GET', '/api/v1/tokens', { timeoutMs: 10_000 })).value as { tokens: Array<{ name: string }> };
    if (list.tokens.some((t) => t.name === DEMO_TOKEN_NAME)) {
      await callApi(admin, 'POST', `/api/v1/tokens/${DEMO_TOKEN_NAME}/revoke`, { body: {}, timeoutMs: 10_000 });
    }
    const made = (await callApi(admin, 'POST', '/api/v1/tokens', { body: { name: DEMO_TOKEN_NAME, role: 'admin' }, timeoutMs: 10_000 })).value as { token: string };
    token = made.token;
    writeFileAtomic(file, `${token}\n`);
  }
  const deadline = Date.now() + demoTokenLimits.reachPeerMs;
  while (!(await accepted(beta, token))) {
    if (Date.now() >= deadline) return { token, file, onBoth: false };
    await new Promise((r) => setTimeout(r, demoTokenLimits.pollMs));
  }
  return { token, file, onBoth: true };
}
