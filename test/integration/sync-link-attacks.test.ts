// Hostile bytes on a node's sync port. Raw sockets connect straight to beta's
// syncListen (beta accepts, alpha dials) and send garbage, a cut-short frame,
// a HELLO from another cluster, an AUTH made with a wrong secret, bytes
// recorded from a real session (through the link proxy) and, acting as alpha
// with the real secret while the real alpha is stopped, a replayed sequence
// number and a corrupted MAC. Each time the node must close the connection,
// log one line naming the reason, keep running with its API answering and its
// data untouched, and let the real peer (re)connect and mirror.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test, type TestContext } from 'node:test';
import { SyncAuth } from '../../src/protocol/sync/auth';
import { syncLimits } from '../../src/protocol/sync/limits';
import { SyncMessageType, SyncRejectCode } from '../../src/protocol/sync/messages';
import { MiB, readFileRange, sha256File, sleep, startCluster, type Cluster } from '../helpers/cluster';
import { qemuIoExpect } from '../helpers/fio';
import { initiatorHandshake, rejectCode, RawSession, RawSync, splitHandshakeFrames } from '../helpers/raw-sync';

const CLOSE_WITHIN_MS = 5000;

let c: Cluster;
let pattern = 0x10;

before(async () => {
  c = await startCluster({ size: '16M', recordLinkBytes: 64 * 1024, prefix: 'tandem-attacks-' });
  await waitInSync();
});

after(async () => {
  await c?.cleanup();
});

function waitInSync(timeoutMs = 60_000): Promise<unknown> {
  return c.waitFor((v) => v.alpha?.state === 'PRIM' && v.beta?.state === 'SECOND' && v.alpha.outOfSyncBytes === 0 && v.alpha.resync === null,
    timeoutMs, 'alpha PRIM and beta SECOND, in sync');
}

function betaSync(): Promise<RawSync> {
  return RawSync.connect(c.beta.addr.sync.host, c.beta.addr.sync.port);
}

/** Waits until beta's log, from mark on, has a line matching code; returns those lines. */
async function logLines(mark: number, code: RegExp, timeoutMs = 5000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = c.beta.logSince(mark).split('\n').filter((l) => code.test(l));
    if (lines.length > 0 || Date.now() > deadline) return lines;
    await sleep(50);
  }
}

interface Before {
  readonly mark: number;
  readonly hash: string;
  readonly proxyAccepted: number;
}

function snapshot(): Before {
  return { mark: c.beta.log().length, hash: sha256File(c.beta.backingPath), proxyAccepted: c.proxyA.accepted };
}

/** A write through alpha reaches beta's copy. */
async function mirroredWriteLands(t: TestContext): Promise<void> {
  const p = pattern++;
  const offset = (p % 12) * MiB;
  await qemuIoExpect(c.alpha.nbdUri, [`write -P ${p} ${offset} 64k`, 'flush']);
  const got = readFileRange(c.beta.backingPath, offset, 64 * 1024);
  assert.ok(got.equals(Buffer.alloc(64 * 1024, p)), `a write through alpha (pattern ${p} at ${offset}) did not reach beta's copy`);
  t.diagnostic(`mirrored write of pattern 0x${p.toString(16)} at ${offset} landed on beta`);
}

/**
 * After an attack: the node ended the connection, logged the reason once,
 * still runs and answers, its copy is unchanged, and (with `linkUndisturbed`)
 * the real link was not touched.
 */
async function afterAttack(t: TestContext, b: Before, raw: RawSync, code: RegExp, o: { linkUndisturbed: boolean; closedByNode?: boolean }): Promise<void> {
  if (o.closedByNode !== false) {
    assert.ok(await raw.closedByPeerWithin(CLOSE_WITHIN_MS), `beta did not close the connection within ${CLOSE_WITHIN_MS} ms`);
  }
  raw.destroy();
  const lines = await logLines(b.mark, code);
  assert.ok(lines.length >= 1, `beta logged no line matching ${code}; its log since the attack:\n${c.beta.logSince(b.mark)}`);
  t.diagnostic(`beta: ${lines[0]?.trim()}`);
  assert.ok(c.beta.running, 'beta died');
  const s = await c.beta.status();
  assert.equal(s.node, 'beta', 'beta\'s API answers');
  assert.equal(sha256File(c.beta.backingPath), b.hash, 'beta\'s copy changed');
  const again = c.beta.logSince(b.mark).split('\n').filter((l) => code.test(l));
  assert.equal(again.length, 1, `beta logged the reason ${again.length} times, not once:\n${again.join('\n')}`);
  if (o.linkUndisturbed) {
    assert.equal(c.proxyA.accepted, b.proxyAccepted, 'the real sync link was dropped and redialled');
    const v = await c.volumes();
    assert.equal(v.alpha?.state, 'PRIM', 'alpha left PRIM');
    assert.equal(v.beta?.state, 'SECOND', 'beta left SECOND');
  }
}

function clusterId(): Buffer { return Buffer.from(c.clusterId, 'hex'); }
function secret(): Buffer { return Buffer.from(c.secret, 'hex'); }

// ---------------------------------------------------------------- before authentication (the real alpha stays connected)

test('random garbage: closed with ERR_SYNC_MAGIC', { timeout: 60_000 }, async (t) => {
  const b = snapshot();
  const raw = await betaSync();
  const junk = crypto.randomBytes(512);
  junk[0] = 0x00; // never "T" of "TNDS"
  await raw.send(junk);
  await afterAttack(t, b, raw, /ERR_SYNC_MAGIC/, { linkUndisturbed: true });
  const frames = splitHandshakeFrames(raw.all());
  assert.equal(frames[0]?.type, SyncMessageType.HELLO, 'beta opens with its HELLO');
  assert.equal(rejectCode(frames), SyncRejectCode.PROTOCOL, 'beta answers garbage with REJECT PROTOCOL');
  await mirroredWriteLands(t);
});

test('a frame cut short, then our side closes: the node ends the connection and names it', { timeout: 60_000 }, async (t) => {
  const b = snapshot();
  const raw = await betaSync();
  // a real HELLO, cut in its payload
  const hello = new SyncAuth({
    role: 'initiator', clusterId: clusterId(), clusterSecret: secret(), nodeName: 'alpha', nonce: crypto.randomBytes(syncLimits.nonceBytes),
  }).start().send[0] as Buffer;
  await raw.send(hello.subarray(0, 30));
  raw.end();
  await afterAttack(t, b, raw, /ERR_SYNC_(CLOSED|TRUNCATED)/, { linkUndisturbed: true });
  await mirroredWriteLands(t);
});

test('a HELLO with another cluster id: closed with ERR_SYNC_CLUSTER', { timeout: 60_000 }, async (t) => {
  const b = snapshot();
  const raw = await betaSync();
  const other = crypto.randomBytes(16);
  const out = await initiatorHandshake(raw, { clusterId: other, secret: secret(), nodeName: 'alpha' });
  assert.notEqual(out.kind, 'done', 'a peer of another cluster completed the handshake');
  await afterAttack(t, b, raw, /ERR_SYNC_CLUSTER/, { linkUndisturbed: true });
  assert.equal(rejectCode(splitHandshakeFrames(raw.all())), SyncRejectCode.CLUSTER, 'beta answers with REJECT CLUSTER');
  await mirroredWriteLands(t);
});

test('a correct HELLO, then AUTH made with a wrong secret: closed with ERR_SYNC_AUTH', { timeout: 60_000 }, async (t) => {
  const b = snapshot();
  const raw = await betaSync();
  const out = await initiatorHandshake(raw, { clusterId: clusterId(), secret: crypto.randomBytes(32), nodeName: 'alpha' });
  assert.notEqual(out.kind, 'done', 'a peer with the wrong secret completed the handshake');
  await afterAttack(t, b, raw, /ERR_SYNC_AUTH/, { linkUndisturbed: true });
  const frames = splitHandshakeFrames(raw.all());
  assert.deepEqual(frames.slice(0, 2).map((f) => f.type), [SyncMessageType.HELLO, SyncMessageType.AUTH]);
  assert.equal(rejectCode(frames), SyncRejectCode.AUTH, 'beta answers with REJECT AUTH');
  assert.ok(!frames.some((f) => f.type === SyncMessageType.AUTH_OK), 'beta confirmed a session with the wrong secret');
  await mirroredWriteLands(t);
});

test('bytes recorded from a real session, replayed into a new connection: closed with ERR_SYNC_AUTH', { timeout: 60_000 }, async (t) => {
  // the first connection through proxy A that carried a HELLO is the real session alpha opened
  const rec = c.proxyA.recordings().find((r) => {
    const b = Buffer.concat(r.toTarget);
    return b.length > 200 && splitHandshakeFrames(b)[0]?.type === SyncMessageType.HELLO;
  });
  assert.ok(rec !== undefined, 'no real session was recorded through the link proxy');
  const recorded = Buffer.concat(rec.toTarget);
  const types = splitHandshakeFrames(recorded).map((f) => f.type);
  assert.deepEqual(types.slice(0, 3), [SyncMessageType.HELLO, SyncMessageType.AUTH, SyncMessageType.AUTH_OK], 'the recording starts with a full handshake');
  t.diagnostic(`replaying ${recorded.length} recorded bytes (${types.length} frames)`);

  const b = snapshot();
  const raw = await betaSync();
  await raw.send(recorded).catch(() => undefined); // beta may close before it has read them all
  await afterAttack(t, b, raw, /ERR_SYNC_AUTH/, { linkUndisturbed: true });
  const frames = splitHandshakeFrames(raw.all());
  assert.ok(!frames.some((f) => f.type === SyncMessageType.AUTH_OK), 'beta accepted a replayed handshake');
  await mirroredWriteLands(t);
});

// ---------------------------------------------------------------- after authentication (we are alpha; the real one is stopped)

/** Stops alpha, authenticates to beta as alpha with the real secret, and checks the session works (PING → PONG). */
async function impostor(t: TestContext): Promise<{ b: Before; session: RawSession }> {
  const code = await c.alpha.stop();
  assert.equal(code, 0, 'alpha did not stop cleanly');
  await c.waitFor((v) => v.beta?.state === 'WAIT', 15_000, 'beta WAIT without alpha');
  const b = snapshot();
  const raw = await betaSync();
  const out = await initiatorHandshake(raw, { clusterId: clusterId(), secret: secret(), nodeName: 'alpha' });
  if (out.kind !== 'done') {
    assert.fail(`the handshake with the real secret failed: ${out.kind === 'failed' ? `${out.code} ${out.reason}` : 'beta closed'}\n${c.beta.logSince(b.mark)}`);
  }
  const session = new RawSession(raw, out.done);
  const ping = session.frame({ type: SyncMessageType.PING, token: 0x1111n });
  await raw.send(ping);
  assert.ok(await session.waitPong(0x1111n, 3000), `beta did not answer an authenticated PING (decode error: ${session.decodeError?.message})`);
  t.diagnostic('authenticated as alpha; beta answers PING with PONG');
  return { b, session };
}

/** Brings the real alpha back and checks it mirrors again. */
async function realAlphaBack(t: TestContext): Promise<void> {
  await c.alpha.start();
  await waitInSync();
  await mirroredWriteLands(t);
}

test('an authenticated session that repeats a sequence number: closed with ERR_SYNC_REPLAY', { timeout: 90_000 }, async (t) => {
  const { b, session } = await impostor(t);
  try {
    // the same frame again: same seq, valid MAC
    const seq = session.encoder.nextSeq;
    const ping = session.frame({ type: SyncMessageType.PING, token: 0x2222n });
    await session.raw.send(ping);
    assert.ok(await session.waitPong(0x2222n, 3000), 'beta did not answer the second PING');
    t.diagnostic(`replaying the frame with seq ${seq}`);
    await session.raw.send(ping).catch(() => undefined);
    await afterAttack(t, b, session.raw, /ERR_SYNC_REPLAY/, { linkUndisturbed: false });
    assert.equal(session.pongs().filter((x) => x === 0x2222n).length, 1, 'beta answered the replayed PING');
  } finally {
    session.raw.destroy();
    await realAlphaBack(t);
  }
});

test('an authenticated session that sends a frame with a corrupted MAC: closed with ERR_SYNC_MAC', { timeout: 90_000 }, async (t) => {
  const { b, session } = await impostor(t);
  try {
    const bad = session.frame({ type: SyncMessageType.PING, token: 0x3333n });
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 0x01;
    await session.raw.send(bad).catch(() => undefined);
    await afterAttack(t, b, session.raw, /ERR_SYNC_MAC/, { linkUndisturbed: false });
    assert.ok(!session.pongs().includes(0x3333n), 'beta answered a PING whose MAC is wrong');
  } finally {
    session.raw.destroy();
    await realAlphaBack(t);
  }
});

test('an authenticated WRITE with a corrupted MAC changes nothing', { timeout: 90_000 }, async (t) => {
  const { b, session } = await impostor(t);
  try {
    // a WRITE of 0xee over the start of vol0, for the volume id the node uses on the wire: its MAC is wrong
    const volumeId = crypto.createHash('sha256').update(clusterId()).update('\0volume\0').update('vol0').digest().subarray(0, 16);
    const bad = session.frame({ type: SyncMessageType.WRITE, volumeId, requestId: 1n, offset: 0, flags: 1, data: Buffer.alloc(64 * 1024, 0xee) });
    bad[bad.length - 5] = (bad[bad.length - 5] as number) ^ 0x80;
    await session.raw.send(bad).catch(() => undefined);
    await afterAttack(t, b, session.raw, /ERR_SYNC_MAC/, { linkUndisturbed: false });
    assert.ok(!readFileRange(c.beta.backingPath, 0, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0xee)), 'the forged WRITE reached beta\'s copy');
  } finally {
    session.raw.destroy();
    await realAlphaBack(t);
  }
});
