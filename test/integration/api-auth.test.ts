// The API's tokens on two real nodes (docs/operations.md, "API security"): a request without a
// token, with a wrong one or with a revoked one is refused with 401 and changes nothing; a read
// token reads and is refused commands with 403; a token made on one node works on the other,
// and its revocation reaches both and ends the event streams opened with it. The console's
// files, the health check and the OpenAPI description need no token.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { test } from 'node:test';
import { makeToken } from '../../src/node/api-token';
import { httpRaw, withCluster, sleep, type Cluster, type NodeStatus, type TandemNode } from '../helpers/cluster';

// addresses no other test uses
const HOSTS = { alpha: '127.0.0.60', beta: '127.0.0.61' } as const;

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: unknown; text: string }

/** One request; the token goes as Authorization: Bearer when given. */
async function request(n: TandemNode, method: string, urlPath: string, token: string | null, body?: unknown): Promise<Answer> {
  const r = await httpRaw(method, n.addr.api.host, n.addr.api.port, urlPath, body, 20_000, token);
  let parsed: unknown;
  try { parsed = JSON.parse(r.text); } catch { parsed = undefined; }
  return { ...r, body: parsed };
}

function errorCode(a: Answer): string | undefined {
  return (a.body as { error?: { code?: string } } | undefined)?.error?.code;
}

async function statusOf(n: TandemNode): Promise<NodeStatus> {
  const r = await request(n, 'GET', '/api/v1/status', n.token);
  assert.equal(r.status, 200, r.text);
  return r.body as NodeStatus;
}

/** What a refused request must not have changed: maintenance, the owner and phase of each pool, the configuration's epoch. */
async function snapshot(c: Cluster): Promise<string> {
  const one = async (n: TandemNode): Promise<unknown> => {
    const s = await statusOf(n);
    return { maintenance: s.clusterState?.maintenance, pools: s.clusterState?.pools.map((p) => [p.name, p.owner, p.phase, p.term]), epoch: s.config?.epoch };
  };
  return JSON.stringify([await one(c.alpha), await one(c.beta)]);
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

async function createToken(n: TandemNode, token: string, name: string, role: 'admin' | 'read'): Promise<string> {
  const r = await request(n, 'POST', '/api/v1/tokens', token, { name, role });
  assert.equal(r.status, 200, r.text);
  const v = r.body as { token: string; name: string; role: string; id: string };
  assert.equal(v.name, name);
  assert.equal(v.role, role);
  return v.token;
}

test('API tokens on two nodes: no token, a wrong or revoked token, and a read token\'s command change nothing; a token made on one node works on both', { timeout: 120_000 }, async (t) => {
  await withCluster({ size: '16M', hosts: HOSTS, prefix: 'tandem-api-auth-' }, async (c) => {
    await c.waitForStates('PRIM', 'SECOND', 30_000);
    const alpha = c.alpha;
    const beta = c.beta;
    const before = await snapshot(c);

    // no token, a token that is no token, a well-formed token nobody made, beta's own token on alpha
    const stranger = makeToken(crypto.randomBytes(8), crypto.randomBytes(32)).token;
    for (const [token, why] of [[null, /needs a token/], ['nope', /not a Tandem API token/], [stranger, /not valid on alpha/], [beta.token, /not valid on alpha/]] as const) {
      for (const [method, urlPath, body] of [
        ['POST', '/api/v1/maintenance', { on: true }], ['POST', '/api/v1/pools/vol0/swap', {}], ['POST', '/api/v1/volumes/vol0/disconnect', {}],
        ['POST', '/api/v1/tokens', { name: 'mine', role: 'admin' }], ['POST', '/api/v1/config/push', {}],
        ['GET', '/api/v1/status', undefined], ['GET', '/api/v1/config', undefined], ['GET', '/api/v1/tokens', undefined], ['GET', '/metrics', undefined], ['GET', '/api/v1/events', undefined],
      ] as const) {
        const r = await request(alpha, method, urlPath, token, body);
        assert.equal(r.status, 401, `${method} ${urlPath} with ${token === null ? 'no token' : token.slice(0, 12)}: ${r.text}`);
        assert.equal(errorCode(r), 'ERR_UNAUTHORIZED');
        assert.equal(r.headers['www-authenticate'], 'Bearer realm="tandem"');
        assert.match((r.body as { error: { message: string } }).error.message, why);
      }
    }
    assert.equal(await snapshot(c), before, 'nothing changed');

    // what needs no token
    const health = await request(alpha, 'GET', '/api/v1/health', null);
    assert.equal(health.status, 200);
    assert.deepEqual(Object.keys(health.body as object).sort(), ['node', 'ok', 'version']);
    assert.equal((health.body as { node: string }).node, 'alpha');
    const page = await request(alpha, 'GET', '/', null);
    assert.equal(page.status, 200);
    assert.match(page.text, /<form id="sign-in-form"/);
    assert.equal((await request(alpha, 'GET', '/console.js', null)).status, 200);
    assert.equal(((await request(alpha, 'GET', '/api/v1/openapi.json', null)).body as { openapi: string }).openapi, '3.1.0');
    assert.equal((await request(alpha, 'GET', '/api/v1/nope', null)).status, 404);

    // a read token reads, and is refused every command
    const reader = await createToken(alpha, alpha.token, 'reader', 'read');
    assert.equal((await request(alpha, 'GET', '/api/v1/status', reader)).status, 200);
    assert.equal((await request(alpha, 'GET', '/metrics', reader)).status, 200);
    const config = await request(alpha, 'GET', '/api/v1/config', reader);
    assert.equal(config.status, 200);
    assert.doesNotMatch(config.text, /sha256/, 'the tokens\' hashes stay on the nodes');
    assert.match(config.text, /"name": "reader"/);
    const afterReader = await snapshot(c);
    for (const [method, urlPath, body] of [
      ['POST', '/api/v1/maintenance', { on: true }], ['POST', '/api/v1/pools/vol0/swap', {}], ['POST', '/api/v1/tokens', { name: 'x' }],
      ['POST', '/api/v1/tokens/reader/revoke', {}], ['GET', '/api/v1/tokens', undefined],
    ] as const) {
      const r = await request(alpha, method, urlPath, reader, body);
      assert.equal(r.status, 403, `${method} ${urlPath} with a read token: ${r.text}`);
      assert.equal(errorCode(r), 'ERR_FORBIDDEN');
      assert.match(r.text, /token reader has the read role: .* needs an admin token/);
    }
    assert.equal(await snapshot(c), afterReader, 'nothing changed');

    // a token made on alpha works on beta once the two have met (the configuration carries it)
    const ops = await createToken(alpha, alpha.token, 'ops', 'admin');
    await until('beta takes the token made on alpha', async () => (await request(beta, 'GET', '/api/v1/status', ops)).status === 200);
    const on = await request(beta, 'POST', '/api/v1/maintenance', ops, { on: true });
    assert.equal(on.status, 200, on.text);
    assert.equal((await statusOf(beta)).clusterState?.maintenance, true);
    assert.equal((await request(beta, 'POST', '/api/v1/maintenance', ops, { on: false })).status, 200);
    const list = await request(beta, 'GET', '/api/v1/tokens', ops);
    assert.deepEqual((list.body as { tokens: Array<{ name: string }> }).tokens.map((x) => x.name), ['reader', 'ops']);
    assert.doesNotMatch(list.text, /sha256|tdm_/, 'a list shows neither tokens nor hashes');

    // revoked on alpha: refused on both, and beta ends the stream opened with it
    const stream = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: beta.addr.api.host, port: beta.addr.api.port, path: '/api/v1/events', agent: false, headers: { authorization: `Bearer ${ops}` } }, resolve).on('error', reject);
    });
    assert.equal(stream.statusCode, 200);
    stream.resume();
    const ended = new Promise<void>((resolve) => { stream.once('end', resolve); stream.once('close', resolve); });
    const revoked = await request(alpha, 'POST', '/api/v1/tokens/ops/revoke', alpha.token, {});
    assert.equal(revoked.status, 200, revoked.text);
    assert.match(revoked.text, /token ops \(id [0-9a-f]{16}\) revoked/);
    assert.equal((await request(alpha, 'GET', '/api/v1/status', ops)).status, 401);
    await until('beta refuses the token revoked on alpha', async () => (await request(beta, 'GET', '/api/v1/status', ops)).status === 401);
    await Promise.race([ended, sleep(5000).then(() => { throw new Error('the event stream opened with the revoked token did not end'); })]);
    const beforeRevoked = await snapshot(c);
    for (const n of [alpha, beta]) {
      const r = await request(n, 'POST', '/api/v1/maintenance', ops, { on: true });
      assert.equal(r.status, 401);
      assert.match(r.text, /not valid on (alpha|beta): revoked/);
    }
    assert.equal(await snapshot(c), beforeRevoked, 'a revoked token changes nothing');
    // revoking what is not there: 404, nothing changes
    const unknown = await request(alpha, 'POST', '/api/v1/tokens/ops/revoke', alpha.token, {});
    assert.equal(unknown.status, 404);
    assert.equal(errorCode(unknown), 'ERR_UNKNOWN_TOKEN');
    // bad requests to make one: 400, nothing changes
    for (const body of [{ name: 'bad name' }, { name: 'x', role: 'root' }, { name: 'x', extra: 1 }, {}]) {
      const r = await request(alpha, 'POST', '/api/v1/tokens', alpha.token, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(errorCode(r), 'ERR_BAD_REQUEST');
    }
    const dup = await request(alpha, 'POST', '/api/v1/tokens', alpha.token, { name: 'reader' });
    assert.equal(dup.status, 409);
    assert.equal(errorCode(dup), 'ERR_TOKEN_EXISTS');
    assert.equal(await snapshot(c), beforeRevoked);
    t.diagnostic('401 without, with a wrong, another node\'s own and a revoked token; 403 for a read token\'s commands; a token made on alpha works on beta; its revocation reaches beta and ends its streams');
  });
});
