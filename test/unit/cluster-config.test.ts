// The cluster configuration document (src/node/cluster-document.ts) and its store
// (src/node/cluster-config.ts): epochs and lineage decide which document wins,
// documents changed apart are never merged, bad documents change nothing.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { changeDocument, compareDocuments, documentHash, parseDocument, seedDocument, serializeDocument } from '../../src/node/cluster-document';
import { ClusterConfigStore, DOCUMENT_FILE, mergeEdit } from '../../src/node/cluster-config';
import type { SectionContext } from '../../src/node/config';
import { createLogger } from '../../src/util/log';
import { makeToken, tokenLimits, type TokenRecord } from '../../src/node/api-token';
import { canonicalJson } from '../../src/util/canonical-json';
import { addToken, revokeToken } from '../../src/node/api-token-records';

const at = new Date('2026-11-23T00:00:00Z');
const v0 = { name: 'vol0', size: '8M' };
const p0 = { name: 'p0', volumes: ['vol0'], preferredNode: 'alpha' };
const seed = { volumes: [v0], pools: [p0] };
const ctx: SectionContext = { nodes: ['alpha', 'beta'], driver: 'loopback', defaultNbdPort: 10809 };
const log = createLogger('test', () => undefined);

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-ccfg-'));
}

test('two nodes seeding the same file agree; different files have diverged', () => {
  const a = seedDocument(seed, 'alpha', at);
  const b = seedDocument(seed, 'beta', new Date());
  assert.equal(compareDocuments(a, b), 'same', 'who seeded it and when is not content');
  const c = seedDocument({ volumes: [{ ...v0, size: '16M' }], pools: [p0] }, 'beta', at);
  assert.equal(compareDocuments(a, c), 'diverged');
});

test('a change descends from its parent: newer wins either way round; changes made apart have diverged', () => {
  const one = seedDocument(seed, 'alpha', at);
  const two = changeDocument(one, { volumes: [v0], pools: [{ ...p0, control: 'exported' }] }, 'alpha', 'pool export p0', at);
  assert.equal(two.epoch, 2);
  assert.deepEqual(two.lineage, [documentHash(one)]);
  assert.equal(compareDocuments(one, two), 'theirs-newer');
  assert.equal(compareDocuments(two, one), 'mine-newer');
  const three = changeDocument(two, seed, 'alpha', 'pool import p0', at);
  assert.equal(compareDocuments(one, three), 'theirs-newer', 'a node two epochs behind still catches up');
  const otherTwo = changeDocument(one, { volumes: [v0], pools: [{ ...p0, control: 'unmanaged' }] }, 'beta', 'pool unmanage p0', at);
  assert.equal(compareDocuments(two, otherTwo), 'diverged');
  assert.equal(compareDocuments(three, otherTwo), 'diverged', 'a higher epoch does not win over a document it does not descend from');
  // a push descends from both
  const pushed = changeDocument(three, seed, 'alpha', 'push', at, [otherTwo]);
  assert.equal(pushed.epoch, 4);
  assert.equal(compareDocuments(otherTwo, pushed), 'theirs-newer');
  assert.equal(compareDocuments(three, pushed), 'theirs-newer');
});

test('documents are parsed strictly and bounded', () => {
  const d = seedDocument(seed, 'alpha', at);
  assert.deepEqual(parseDocument(serializeDocument(d), 'x'), d);
  for (const [text, why] of [
    ['{', /not JSON/],
    [JSON.stringify({ ...d, version: 2 }), /version: must be 1/],
    [JSON.stringify({ version: 1, ...d, epoch: 0 }), /epoch/],
    [JSON.stringify({ version: 1, ...d, lineage: ['zz'] }), /lineage/],
    [JSON.stringify({ version: 1, ...d, extra: 1 }), /unknown key/],
    [JSON.stringify({ version: 1, ...d, pools: 'x' }), /pools: must be a list/],
    [' '.repeat(300 * 1024), /larger than/],
  ] as const) assert.throws(() => parseDocument(text, 'x'), why);
});

test('a node file edit changes what it changed and leaves pools made at run time alone', () => {
  const runtime = { name: 'p1', volumes: ['v1'], preferredNode: 'beta' };
  const doc = { volumes: [v0, { name: 'v1', size: '4M' }], pools: [{ ...p0, control: 'exported' }, runtime] };
  // the file's p0 did not change: the document's exported p0 stays; a new pool is added
  const added = mergeEdit(doc, seed, { volumes: [v0, { name: 'v2', size: '4M' }], pools: [p0, { name: 'p2', volumes: ['v2'], preferredNode: 'alpha' }] });
  assert.deepEqual(added.pools.map((p) => (p as { name: string }).name), ['p0', 'p1', 'p2']);
  assert.equal((added.pools[0] as { control?: string }).control, 'exported');
  // a pool deleted from the file leaves the document; one changed in the file replaces the document's
  const removed = mergeEdit(doc, seed, { volumes: [], pools: [] });
  assert.deepEqual(removed.pools, [runtime]);
  const changed = mergeEdit(doc, seed, { volumes: [v0], pools: [{ ...p0, autoFailback: true }] });
  assert.deepEqual(changed.pools[0], { ...p0, autoFailback: true });
});

test('the store: seeded once, persisted, changed with checks, and a peer document is adopted, sent back or refused', () => {
  const dir = tmp();
  try {
    const s = new ClusterConfigStore({ dataDir: dir, node: 'alpha', ctx, seed, log, now: () => at });
    assert.equal(s.document.epoch, 1);
    assert.ok(fs.existsSync(path.join(dir, DOCUMENT_FILE)));
    // a bad change is refused and changes nothing
    assert.throws(() => s.change('bad', (raw) => ({ volumes: raw.volumes, pools: [...raw.pools, { name: 'p1', volumes: ['nope'], preferredNode: 'alpha' }] })), /not a configured volume/);
    assert.throws(() => s.change('grow', () => ({ volumes: [{ ...v0, size: '16M' }], pools: [p0] })), /size cannot change/);
    assert.equal(s.document.epoch, 1);
    s.change('pool create p1', (raw) => ({ volumes: [...raw.volumes, { name: 'v1', size: '4M' }], pools: [...raw.pools, { name: 'p1', volumes: ['v1'], preferredNode: 'beta' }] }));
    assert.equal(s.document.epoch, 2);
    assert.deepEqual(s.current.pools.map((p) => p.name), ['p0', 'p1']);
    // a restart reads it back, and the same file is no edit
    const again = new ClusterConfigStore({ dataDir: dir, node: 'alpha', ctx, seed, log, now: () => at });
    assert.equal(again.document.epoch, 2);

    // the peer: older → send ours; newer → adopted; garbage → refused; apart → diverged until a push
    const older = seedDocument(seed, 'beta', at);
    assert.equal(again.receive({ version: 1, ...older }).kind, 'send-ours');
    const newer = changeDocument(again.document, { volumes: [v0], pools: [p0] }, 'beta', 'pool remove p1', at);
    const r = again.receive({ version: 1, ...newer });
    assert.equal(r.kind, 'adopted');
    assert.equal(again.document.epoch, 3);
    assert.equal(again.receive({ version: 1 }).kind, 'refused');
    const bad = changeDocument(again.document, { volumes: [{ ...v0, size: '1G' }], pools: [p0] }, 'beta', 'grow', at);
    const refused = again.receive({ version: 1, ...bad });
    assert.equal(refused.kind, 'refused');
    assert.equal(again.document.epoch, 3, 'a refused document changes nothing');
    const apart = changeDocument(newer, { volumes: [v0], pools: [{ ...p0, autoFailback: true }] }, 'beta', 'x', at);
    again.change('mine', (raw) => ({ volumes: raw.volumes, pools: [{ ...p0, control: 'unmanaged' }] }));
    assert.equal(again.receive({ version: 1, ...apart }).kind, 'diverged');
    assert.match(again.status().diverged ?? '', /tandem config push/);
    const pushed = again.push();
    assert.equal(compareDocuments(apart, pushed), 'theirs-newer');
    assert.equal(again.status().diverged, null);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function tokenRecord(n: number, name: string, role: 'admin' | 'read' = 'admin'): TokenRecord {
  const m = makeToken(Buffer.alloc(tokenLimits.idBytes, n), Buffer.alloc(tokenLimits.secretBytes, n));
  return { id: m.id, name, role, sha256: m.sha256, createdAt: at.toISOString() };
}

test('API tokens in the document: left out of the hash while there are none, part of it once there are, carried by every change', () => {
  const one = seedDocument(seed, 'alpha', at);
  assert.equal('tokens' in one, false);
  // the hash of a document without tokens is the hash of its epoch, volumes and pools, as it always was
  assert.equal(documentHash(one), crypto.createHash('sha256').update(canonicalJson({ epoch: 1, volumes: one.volumes, pools: one.pools })).digest('hex').slice(0, 32));
  const ci = tokenRecord(1, 'ci', 'read');
  const two = changeDocument(one, { volumes: one.volumes, pools: one.pools, tokens: { tokens: [ci], revoked: [] } }, 'alpha', 'token create ci', at);
  assert.deepEqual(two.tokens, [ci]);
  assert.equal('revokedTokens' in two, false, 'an empty list is left out');
  assert.equal(compareDocuments(one, two), 'theirs-newer');
  // the same epoch with other tokens is another document: two nodes that each made one have diverged
  const otherTwo = changeDocument(one, { volumes: one.volumes, pools: one.pools, tokens: { tokens: [tokenRecord(2, 'ops')], revoked: [] } }, 'beta', 'token create ops', at);
  assert.equal(compareDocuments(two, otherTwo), 'diverged');
  // a pool change keeps the tokens
  const three = changeDocument(two, { volumes: [v0], pools: [{ ...p0, control: 'exported' }] }, 'alpha', 'pool export p0', at);
  assert.deepEqual(three.tokens, [ci]);
  assert.deepEqual(parseDocument(serializeDocument(three), 'x'), three);
  const revoked = changeDocument(three, { volumes: three.volumes, pools: three.pools, tokens: { tokens: [], revoked: [ci.id] } }, 'alpha', 'token revoke ci', at);
  assert.equal('tokens' in revoked, false);
  assert.deepEqual(revoked.revokedTokens, [ci.id]);
  assert.notEqual(documentHash(revoked), documentHash({ ...revoked, revokedTokens: [] }), 'the revocations are content');
  for (const [over, why] of [
    [{ tokens: [{ ...ci, role: 'root' }] }, /tokens\[0\]\.role: must be admin or read/],
    [{ tokens: 'x' }, /tokens: must be a list/],
    [{ revokedTokens: ['zz'] }, /revokedTokens: must be a list of at most 256 token ids/],
    [{ tokens: [ci], revokedTokens: [ci.id] }, /token ci .* is listed as revoked too/],
  ] as const) assert.throws(() => parseDocument(JSON.stringify({ version: 1, ...three, ...over }), 'x'), why);
});

test('the store: tokens change as the next epoch, a bad token change changes nothing, a peer\'s bad tokens are refused, a push keeps revocations', () => {
  const dir = tmp();
  try {
    const s = new ClusterConfigStore({ dataDir: dir, node: 'alpha', ctx, seed, log, now: () => at });
    const ci = tokenRecord(1, 'ci');
    s.change('token create ci', (raw) => ({ volumes: raw.volumes, pools: raw.pools, tokens: addToken(raw.tokens, ci) }));
    assert.equal(s.document.epoch, 2);
    assert.deepEqual(s.tokens, { tokens: [ci], revoked: [] });
    assert.throws(() => s.change('token create ci', (raw) => ({ volumes: raw.volumes, pools: raw.pools, tokens: addToken(raw.tokens, tokenRecord(2, 'ci')) })), /exists already/);
    assert.equal(s.document.epoch, 2);
    // a pool change leaves the tokens as they are
    s.change('pool export p0', (raw) => ({ volumes: raw.volumes, pools: [{ ...p0, control: 'exported' }] }));
    assert.deepEqual(s.tokens.tokens, [ci]);
    const again = new ClusterConfigStore({ dataDir: dir, node: 'alpha', ctx, seed, log, now: () => at });
    assert.deepEqual(again.tokens.tokens, [ci], 'on disk');

    const garbage = { version: 1, ...changeDocument(s.document, { volumes: s.document.volumes, pools: s.document.pools }, 'beta', 'x', at), tokens: [{ ...ci, sha256: 'x' }] };
    const refused = s.receive(garbage);
    assert.equal(refused.kind, 'refused');
    assert.match(refused.kind === 'refused' ? refused.message : '', /sha256/);

    // apart: beta revoked ci, alpha made ops; alpha's push keeps ci revoked and ops
    const theirs = changeDocument(s.document, { volumes: s.document.volumes, pools: s.document.pools, tokens: revokeToken(s.tokens, 'ci').set }, 'beta', 'token revoke ci', at);
    const ops = tokenRecord(3, 'ops');
    s.change('token create ops', (raw) => ({ volumes: raw.volumes, pools: raw.pools, tokens: addToken(raw.tokens, ops) }));
    assert.equal(s.receive({ version: 1, ...theirs }).kind, 'diverged');
    const pushed = s.push();
    assert.deepEqual(pushed.tokens, [ops]);
    assert.deepEqual(pushed.revokedTokens, [ci.id]);
    assert.equal(compareDocuments(theirs, pushed), 'theirs-newer');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
