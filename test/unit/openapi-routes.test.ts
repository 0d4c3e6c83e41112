// docs/openapi.json describes the API the node serves: every route of the route table
// (src/node/api-routes.ts) is described, with the access it has; every described operation is
// a route; every reference resolves; the router finds each route and nothing else.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { apiRoutes, matchRoute } from '../../src/node/api-routes';
import { repoRoot } from '../helpers/serve-process';

interface Operation { 'x-tandem-access'?: string; security?: unknown[]; responses?: Record<string, unknown>; parameters?: Array<{ name: string; in: string }> }
type Doc = { openapi: string; paths: Record<string, Record<string, Operation>>; components: Record<string, Record<string, unknown>> };

const doc = JSON.parse(fs.readFileSync(path.join(repoRoot, 'docs', 'openapi.json'), 'utf8')) as Doc;
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function described(): Map<string, Operation> {
  const out = new Map<string, Operation>();
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const [m, o] of Object.entries(item)) if (METHODS.includes(m)) out.set(`${m.toUpperCase()} ${p}`, o);
  }
  return out;
}

test('every route the API serves is described, and every described operation is served', () => {
  assert.equal(doc.openapi, '3.1.0');
  const routes = apiRoutes.map((r) => `${r.method} ${r.path}`);
  assert.equal(new Set(routes).size, routes.length, 'the route table lists each route once');
  const ops = described();
  const missing = routes.filter((r) => !ops.has(r));
  const extra = [...ops.keys()].filter((k) => !routes.includes(k));
  assert.deepEqual(missing, [], 'routes served but not described in docs/openapi.json');
  assert.deepEqual(extra, [], 'operations described in docs/openapi.json but not served');
});

test('each operation says the access its route has: public ones need no token, the rest the bearer scheme', () => {
  const ops = described();
  assert.deepEqual(Object.keys(doc.components.securitySchemes ?? {}), ['bearer']);
  for (const r of apiRoutes) {
    const o = ops.get(`${r.method} ${r.path}`) as Operation;
    assert.equal(o['x-tandem-access'], r.access, `${r.method} ${r.path}: x-tandem-access`);
    assert.deepEqual(o.security, r.access === 'public' ? [] : [{ bearer: [] }], `${r.method} ${r.path}: security`);
    const codes = Object.keys(o.responses ?? {});
    assert.ok(codes.includes('200'), `${r.method} ${r.path} describes its answer`);
    if (r.access !== 'public') assert.ok(codes.includes('401'), `${r.method} ${r.path} describes the 401`);
    if (r.access === 'admin') assert.ok(codes.includes('403'), `${r.method} ${r.path} describes the 403`);
    const templated = [...r.path.matchAll(/\{([a-z]+)\}/g)].map((m) => m[1]);
    assert.deepEqual((o.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name), templated, `${r.method} ${r.path}: path parameters`);
  }
});

test('every $ref in the description resolves', () => {
  const refs: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) { v.forEach(walk); return; }
    if (typeof v !== 'object' || v === null) return;
    for (const [k, x] of Object.entries(v)) {
      if (k === '$ref' && typeof x === 'string') refs.push(x);
      else walk(x);
    }
  };
  walk(doc);
  assert.ok(refs.length > 0);
  for (const r of refs) {
    assert.match(r, /^#\/components\//, r);
    const [, , section, name] = r.split('/');
    assert.ok(doc.components[section as string]?.[name as string] !== undefined, `${r} resolves`);
  }
});

test('the router finds each route with its parameters, answers 405 for another method and nothing for other paths', () => {
  for (const r of apiRoutes) {
    const url = r.path.replace(/\{([a-z]+)\}/g, 'x%2Fy');
    const m = matchRoute(r.method, url);
    assert.equal(m.kind, 'route', `${r.method} ${url}`);
    if (m.kind === 'route') {
      assert.equal(m.route.path, r.path);
      for (const v of Object.values(m.params)) assert.equal(v, 'x/y', 'parameters are percent-decoded');
    }
  }
  assert.equal(matchRoute('HEAD', '/metrics').kind, 'route', 'HEAD is served as GET');
  assert.deepEqual(matchRoute('GET', '/api/v1/pools/p0/swap'), { kind: 'method', allowed: ['POST'] });
  assert.deepEqual(matchRoute('DELETE', '/api/v1/tokens'), { kind: 'method', allowed: ['GET', 'POST'] });
  for (const url of ['/api/v1/nope', '/api/v1/pools/p0/swap/extra', '/api/v1/pools//swap', '/api/v1/pools/%E0%A4%A/swap', '/console.js/x']) {
    assert.equal(matchRoute('POST', url).kind === 'route', false, url);
  }
});
