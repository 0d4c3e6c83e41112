// API tokens: their form, the hash kept of them, names and roles, how a request's header is
// checked (src/node/api-token.ts, src/node/api-auth.ts), and the token records of the cluster
// configuration: checked on arrival, added, revoked, merged when a divergence is settled
// (src/node/api-token-records.ts), and where the CLI finds its token (src/cli/credentials.ts).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { authenticate, bearerOf, stillValid, type KnownTokens } from '../../src/node/api-auth';
import { ensureLocalToken } from '../../src/node/api-local-token';
import {
  hashMatches, isRole, makeToken, roleAllows, tokenHash, tokenIdOf, tokenLimits, tokenNameProblem, type TokenRecord,
} from '../../src/node/api-token';
import { addToken, mergeForPush, parseRevoked, parseTokenRecords, revokeToken, TokenError, type TokenSet } from '../../src/node/api-token-records';
import { DEFAULT_TOKEN_FILE, resolveCredential, tokenSource } from '../../src/cli/credentials';
import { LOCAL_TOKEN_FILE } from '../../src/node/api-local-token';
import { repoRoot } from '../helpers/serve-process';
import { UsageError } from '../../src/cli/errors';

const at = '2026-11-23T00:00:00.000Z';

function made(n: number, name = `t${n}`, role: 'admin' | 'read' = 'admin'): { token: string; record: TokenRecord } {
  const m = makeToken(Buffer.alloc(tokenLimits.idBytes, n), Buffer.alloc(tokenLimits.secretBytes, n + 100));
  return { token: m.token, record: { id: m.id, name, role, sha256: m.sha256, createdAt: at } };
}

test('a token is tdm_ID_SECRET: 64 bits of id, 256 of secret; only its SHA-256 is kept and compared', () => {
  const m = makeToken(crypto.randomBytes(8), crypto.randomBytes(32));
  assert.match(m.token, /^tdm_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
  assert.equal(tokenIdOf(m.token), m.id);
  assert.equal(m.sha256, tokenHash(m.token));
  assert.equal(m.sha256, crypto.createHash('sha256').update(m.token).digest('hex'));
  assert.equal(hashMatches(m.token, m.sha256), true);
  // another last character (a random token may end in any one of them)
  const other = m.token.endsWith('A') ? 'B' : 'A';
  assert.equal(hashMatches(`${m.token.slice(0, -1)}${other}`, m.sha256), false);
  assert.equal(hashMatches(m.token, 'not hex'), false);
  for (const bad of ['', 'tdm_', `${m.token}x`, m.token.replace('tdm_', 'tdn_'), m.token.toUpperCase(), ` ${m.token}`]) assert.equal(tokenIdOf(bad), null, bad);
  assert.throws(() => makeToken(Buffer.alloc(4), Buffer.alloc(32)), RangeError);
});

test('token names: a name, not an id; roles: read may read, admin may do everything', () => {
  for (const ok of ['ci', 'prometheus', 'ops.alice', 'a-b_c', 'x'.repeat(63)]) assert.equal(tokenNameProblem(ok), null, ok);
  for (const [bad, why] of [
    ['', /non-empty/], [7, /non-empty/], ['x'.repeat(64), /at most 63/], ['-x', /not a token name/], ['a b', /not a token name/],
    ['ü', /not a token name/], ['0123456789abcdef', /looks like a token id/],
  ] as const) assert.match(tokenNameProblem(bad) ?? '', why, String(bad));
  assert.equal(isRole('admin') && isRole('read'), true);
  assert.equal(isRole('root'), false);
  assert.equal(roleAllows('read', 'read'), true);
  assert.equal(roleAllows('read', 'admin'), false);
  assert.equal(roleAllows('admin', 'admin'), true);
  assert.equal(roleAllows('read', 'public'), true);
});

test('the Authorization header: Bearer TOKEN of a cluster token or the node\'s own; anything else is refused with the reason', () => {
  const ci = made(1, 'ci', 'read');
  const own = made(2);
  const known: KnownTokens = { tokens: [ci.record], local: { id: own.record.id, sha256: own.record.sha256 }, node: 'alpha' };
  assert.equal(bearerOf(undefined), null);
  assert.equal(bearerOf('Basic abc'), 'malformed');
  assert.equal(bearerOf(`bearer  ${ci.token} `), ci.token);
  assert.equal(bearerOf(`Bearer ${'x'.repeat(600)}`), 'malformed');
  const r = authenticate(`Bearer ${ci.token}`, known);
  assert.deepEqual(r, { ok: true, caller: { id: ci.record.id, name: 'ci', role: 'read', local: false } });
  assert.deepEqual(authenticate(`Bearer ${own.token}`, known), { ok: true, caller: { id: own.record.id, name: 'node-local', role: 'admin', local: true } });
  const refused = (h: string | undefined, why: RegExp): void => {
    const a = authenticate(h, known);
    assert.equal(a.ok, false, String(h));
    if (!a.ok) assert.match(a.message, why);
  };
  refused(undefined, /alpha's API needs a token: send Authorization: Bearer TOKEN/);
  refused('Token abc', /must be "Bearer TOKEN"/);
  refused('Bearer abc', /not a Tandem API token/);
  refused(`Bearer ${made(3).token}`, /not valid on alpha/);
  // the right id with another secret
  refused(`Bearer ${ci.token.slice(0, 21)}${'A'.repeat(43)}`, /not valid on alpha/);
  // another node's own token is not this node's
  assert.equal(authenticate(`Bearer ${own.token}`, { ...known, local: null }).ok, false);
  // a caller verified earlier stops being valid when its token is revoked
  if (r.ok) {
    assert.equal(stillValid(r.caller, known), true);
    assert.equal(stillValid(r.caller, { ...known, tokens: [] }), false);
  }
});

test('token records are checked on arrival: shape, ids, names, roles, hashes, uniqueness, bounds', () => {
  const a = made(1, 'a').record;
  const b = made(2, 'b', 'read').record;
  assert.deepEqual(parseTokenRecords([a, b], 'doc.tokens'), [a, b]);
  for (const [v, why] of [
    ['x', /must be a list of at most 64 tokens/],
    [Array(65).fill(a), /at most 64/],
    [[{ ...a, extra: 1 }], /doc\.tokens\[0\]\.extra: unknown key/],
    [[{ ...a, id: 'zz' }], /\.id: must be 16 hex digits/],
    [[{ ...a, name: 'no spaces' }], /\.name: .*not a token name/],
    [[{ ...a, role: 'root' }], /\.role: must be admin or read/],
    [[{ ...a, sha256: 'ab' }], /\.sha256: must be 64 hex digits/],
    [[{ ...a, createdAt: 'x'.repeat(41) }], /\.createdAt: must be a string of at most 40/],
    [[a, { ...b, id: a.id }], /token ids must be unique/],
    [[a, { ...b, name: 'a' }], /token names must be unique/],
  ] as const) assert.throws(() => parseTokenRecords(v, 'doc.tokens'), why, JSON.stringify(v).slice(0, 80));
  assert.deepEqual(parseRevoked([a.id], 'r'), [a.id]);
  assert.throws(() => parseRevoked(['nope'], 'r'), /at most 256 token ids/);
  assert.throws(() => parseRevoked(Array(257).fill(a.id), 'r'), /at most 256/);
});

test('adding and revoking: names unique, a bounded number, revocation by id or name remembered; a refusal changes nothing', () => {
  const empty: TokenSet = { tokens: [], revoked: [] };
  const a = made(1, 'a').record;
  const one = addToken(empty, a);
  assert.deepEqual(one, { tokens: [a], revoked: [] });
  assert.deepEqual(empty, { tokens: [], revoked: [] }, 'the set added to is left as it was');
  assert.throws(() => addToken(one, { ...made(2).record, name: 'a' }), (e: unknown) => e instanceof TokenError && e.code === 'ERR_TOKEN_EXISTS');
  let full: TokenSet = empty;
  for (let i = 0; i < tokenLimits.tokensMax; i++) full = addToken(full, made(i + 10, `n${i}`).record);
  assert.throws(() => addToken(full, made(200, 'more').record), (e: unknown) => e instanceof TokenError && e.code === 'ERR_TOO_MANY_TOKENS');
  const byName = revokeToken(one, 'a');
  assert.deepEqual(byName.set, { tokens: [], revoked: [a.id] });
  assert.equal(byName.record.id, a.id);
  assert.deepEqual(revokeToken(one, a.id).set, byName.set, 'by id too');
  assert.throws(() => revokeToken(one, 'b'), (e: unknown) => e instanceof TokenError && e.code === 'ERR_UNKNOWN_TOKEN' && /tokens: a/.test(e.message));
  assert.throws(() => addToken(byName.set, a), /in use/, 'a revoked id is never taken again');
});

test('settling a divergence: a revocation on either side stands, a token made on either side stays, a clash of names keeps this side\'s', () => {
  const shared = made(1, 'shared').record;
  const revokedThere = made(2, 'old').record;
  const mineOnly = made(3, 'mine').record;
  const theirsOnly = made(4, 'theirs').record;
  const clash = made(5, 'mine').record;
  const mine: TokenSet = { tokens: [shared, revokedThere, mineOnly], revoked: [] };
  const theirs: TokenSet = { tokens: [shared, theirsOnly, clash], revoked: [revokedThere.id] };
  const r = mergeForPush(mine, theirs);
  assert.deepEqual(r.set.tokens.map((t) => t.name), ['shared', 'mine', 'theirs']);
  assert.deepEqual(r.set.revoked, [revokedThere.id]);
  assert.deepEqual(r.dropped.map((t) => t.id), [clash.id]);
  // and the other way round: what this side revoked, the other side cannot bring back
  const back = mergeForPush({ tokens: [], revoked: [shared.id] }, { tokens: [shared], revoked: [] });
  assert.deepEqual(back.set, { tokens: [], revoked: [shared.id] });
});

test('each node\'s own token: made once (mode 0600), kept across starts, its file tightened if loosened', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-local-token-'));
  try {
    const first = ensureLocalToken(dir);
    const text = fs.readFileSync(first.file, 'utf8').trim();
    assert.equal(tokenIdOf(text), first.id);
    assert.equal(tokenHash(text), first.sha256);
    assert.equal(fs.statSync(first.file).mode & 0o777, 0o600);
    assert.equal(first.created, true);
    assert.deepEqual(ensureLocalToken(dir), { ...first, created: false }, 'a restart keeps it');
    fs.chmodSync(first.file, 0o644);
    ensureLocalToken(dir);
    assert.equal(fs.statSync(first.file).mode & 0o777, 0o600);
    fs.writeFileSync(first.file, 'garbage\n');
    assert.notEqual(ensureLocalToken(dir).id, first.id, 'a file without a token gets a new one');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the CLI\'s token: --token, $TANDEM_TOKEN, --token-file, $TANDEM_TOKEN_FILE, then the node\'s own file; a bad one given is a usage error', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-cli-token-'));
  try {
    const t = made(1).token;
    const u = made(2).token;
    const file = path.join(dir, 'token');
    fs.writeFileSync(file, `${u}\n`);
    const def = path.join(dir, 'default');
    assert.equal(tokenSource({ token: t }, { TANDEM_TOKEN: u }, def).said, '--token');
    assert.equal(tokenSource({ 'token-file': file }, { TANDEM_TOKEN: u }, def).said, '$TANDEM_TOKEN');
    assert.equal(tokenSource({ 'token-file': file }, { TANDEM_TOKEN_FILE: def }, def).said, `--token-file ${file}`);
    assert.equal(tokenSource({}, { TANDEM_TOKEN: '', TANDEM_TOKEN_FILE: file }, def).said, `$TANDEM_TOKEN_FILE (${file})`, 'an empty variable is unset');
    assert.deepEqual(tokenSource({}, {}, def), { kind: 'file', file: def, said: def, explicit: false });
    assert.deepEqual(resolveCredential({ token: t }, {}, def), { token: t, said: '--token' });
    assert.deepEqual(resolveCredential({}, { TANDEM_TOKEN_FILE: file }, def), { token: u, said: `$TANDEM_TOKEN_FILE (${file})` });
    // none anywhere: the call goes without one, and says how to give one
    const none = resolveCredential({}, {}, def);
    assert.equal(none.token, null);
    assert.match(none.said, /--token TOKEN, \$TANDEM_TOKEN, --token-file FILE or \$TANDEM_TOKEN_FILE/);
    fs.writeFileSync(def, `${t}\n`);
    assert.deepEqual(resolveCredential({}, {}, def), { token: t, said: def });
    const usage = (o: Parameters<typeof resolveCredential>[0], env: Record<string, string>, why: RegExp): void => {
      assert.throws(() => resolveCredential(o, env, def), (e: unknown) => e instanceof UsageError && why.test(e.message));
    };
    usage({ token: 'nope' }, {}, /--token: not a Tandem API token/);
    usage({}, { TANDEM_TOKEN: 'nope' }, /\$TANDEM_TOKEN: not a Tandem API token/);
    usage({ 'token-file': path.join(dir, 'missing') }, {}, /--token-file .*missing: cannot read it: no such file/);
    fs.writeFileSync(file, 'nope\n');
    usage({}, { TANDEM_TOKEN_FILE: file }, /does not hold a Tandem API token/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the CLI looks for the node\'s own token where the documented node file puts it', () => {
  for (const example of ['active-standby', 'active-active']) {
    const file = JSON.parse(fs.readFileSync(path.join(repoRoot, 'deploy', 'examples', example, 'alpha.json'), 'utf8')) as { node: { dataDir: string } };
    assert.equal(path.join(file.node.dataDir, LOCAL_TOKEN_FILE), DEFAULT_TOKEN_FILE, example);
  }
});
