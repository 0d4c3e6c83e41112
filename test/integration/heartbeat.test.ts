// Two Heartbeat instances in this process, alpha on 127.0.0.2 and beta on
// 127.0.0.3, each with two links; link 1 may run through UDP relays the test
// can cut. They find each other, notice a closed peer after timeoutMs (not
// before), shrug off hostile datagrams, keep each other up while this
// process's main thread is blocked, and give up on a side whose main thread
// stalls beyond mainStallMs.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { test, type TestContext } from 'node:test';
import { Heartbeat, HeartbeatRunError, type HeartbeatOptions, type HostPort } from '../../src/cluster/heartbeat';
import { deriveHeartbeatKey, encodeHeartbeat, HeartbeatFlags, type Heartbeat as HeartbeatFields } from '../../src/protocol/heartbeat/codec';
import { handle, startWitnessState, type WitnessState } from '../../src/cluster/witness-rules';
import { decodeWitnessRequest, encodeWitnessReply, singleClusterKey, witnessKey } from '../../src/protocol/witness/codec';
import { monotonicMs } from '../../src/util/clock';

const ALPHA = '127.0.0.2';
const BETA = '127.0.0.3';
const CLUSTER = Buffer.from('c0ffee00c0ffee00c0ffee00c0ffee00', 'hex');
const SECRET = Buffer.alloc(32, 0x42);
const KEY = deriveHeartbeatKey(SECRET, CLUSTER);
const INTERVAL_MS = 100;
const TIMEOUT_MS = 400;
/** scheduling slack on a loaded test machine */
const SLACK_MS = 250;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function udpSocket(host: string, port = 0): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind({ address: host, port }, () => { s.off('error', reject); resolve(); });
  });
  return s;
}

/** A port that was free a moment ago (a start that loses the race is retried). */
async function freePort(host: string): Promise<number> {
  const s = await udpSocket(host);
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Forwards every datagram it receives to `to`, until cut. */
class Relay {
  /**
   * monotonicMs() of the last datagram forwarded. The relay runs on the test's main thread: when that
   * thread stalls (a loaded machine), heartbeats stop flowing before the cut, not at it.
   */
  lastForwardedAt = monotonicMs();

  private constructor(private readonly socket: dgram.Socket, readonly address: HostPort) {}

  static async open(host: string, to: HostPort): Promise<Relay> {
    const s = await udpSocket(host);
    const r = new Relay(s, { host, port: s.address().port });
    s.on('message', (m) => {
      r.lastForwardedAt = monotonicMs();
      s.send(m, to.port, to.host);
    });
    s.on('error', () => undefined);
    return r;
  }

  cut(): void {
    try { this.socket.close(); } catch { /* already cut */ }
  }
}

/** A witness on 127.0.0.4 that decides by the real rules and records what it was asked. */
class FakeWitness {
  readonly requests: Array<{ readonly at: number; readonly type: string; readonly id: bigint; readonly granted: boolean; readonly reason: string }> = [];
  private state: WitnessState;

  private constructor(private readonly socket: dgram.Socket, readonly address: HostPort) {
    this.state = startWitnessState(monotonicMs() - 60_000, [CLUSTER.toString('hex')]);
    const key = witnessKey(SECRET, CLUSTER);
    const keyFor = singleClusterKey(CLUSTER, key);
    socket.on('message', (m, from) => {
      const d = decodeWitnessRequest(m, keyFor);
      if (!d.ok) return;
      const now = monotonicMs();
      const decision = handle(this.state, now, d.message);
      this.state = decision.state;
      const r = decision.reply;
      this.requests.push({ at: now, type: d.message.type, id: d.message.requestId, granted: r.granted, reason: r.reason });
      const reply = { granted: r.granted, reason: r.reason, clusterId: CLUSTER, requestId: d.message.requestId, term: r.term, sender: 'witness' };
      socket.send(encodeWitnessReply(reply, key), from.port, from.address);
    });
  }

  static async open(): Promise<FakeWitness> {
    const s = await udpSocket('127.0.0.4');
    return new FakeWitness(s, { host: '127.0.0.4', port: s.address().port });
  }

  renewsSince(at: number): number {
    return this.requests.filter((r) => r.type === 'renew' && r.at >= at).length;
  }

  close(): void {
    this.socket.close();
  }
}

interface Recorded { readonly type: 'peer-up' | 'peer-down' | 'links'; readonly at: number; readonly args: readonly unknown[] }

interface Side {
  readonly hb: Heartbeat;
  readonly options: HeartbeatOptions;
  readonly events: Recorded[];
  readonly incarnation: number;
  readonly listen: readonly HostPort[];
  /** stops calling stampMain(), as a hung main thread would */
  stopStamping(): void;
  startStamping(): void;
}

interface Pair {
  readonly alpha: Side;
  readonly beta: Side;
  /** link 1 in both directions, when relayed */
  readonly relays: readonly Relay[];
}

interface PairOptions {
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  readonly alphaStallMs?: number;
  readonly betaStallMs?: number;
  readonly relayLink1?: boolean;
  /** alpha renews its lease here */
  readonly alphaWitness?: HostPort;
}

function side(hb: Heartbeat, options: HeartbeatOptions, listen: HostPort[], t: TestContext): Side {
  const events: Recorded[] = [];
  hb.on('peer-up', (...args) => events.push({ type: 'peer-up', at: monotonicMs(), args }));
  hb.on('peer-down', (...args) => events.push({ type: 'peer-down', at: monotonicMs(), args }));
  hb.on('links', (...args) => events.push({ type: 'links', at: monotonicMs(), args }));
  let ticker: NodeJS.Timeout | undefined;
  const s: Side = {
    hb, options, events, incarnation: options.incarnation, listen,
    stopStamping: () => { clearInterval(ticker); ticker = undefined; },
    startStamping: () => {
      if (ticker === undefined) ticker = setInterval(() => hb.stampMain(), INTERVAL_MS / 2);
    },
  };
  s.startStamping();
  t.after(() => s.stopStamping());
  return s;
}

async function tryPair(t: TestContext, o: PairOptions): Promise<Pair> {
  const intervalMs = o.intervalMs ?? INTERVAL_MS;
  const timeoutMs = o.timeoutMs ?? TIMEOUT_MS;
  const aListen = [{ host: ALPHA, port: await freePort(ALPHA) }, { host: ALPHA, port: await freePort(ALPHA) }];
  const bListen = [{ host: BETA, port: await freePort(BETA) }, { host: BETA, port: await freePort(BETA) }];
  const relays: Relay[] = [];
  const opened: Array<{ close(): Promise<void> }> = [];
  try {
    let aPeer1 = bListen[1] as HostPort;
    let bPeer1 = aListen[1] as HostPort;
    if (o.relayLink1 === true) {
      const toBeta = await Relay.open(BETA, bListen[1] as HostPort);
      const toAlpha = await Relay.open(ALPHA, aListen[1] as HostPort);
      relays.push(toBeta, toAlpha);
      aPeer1 = toBeta.address;
      bPeer1 = toAlpha.address;
    }
    const base = { clusterId: CLUSTER, secret: SECRET, intervalMs, timeoutMs };
    const incarnation = Date.now();
    const aOpts: HeartbeatOptions = {
      ...base, selfName: 'alpha', peerName: 'beta', incarnation, mainStallMs: o.alphaStallMs ?? 10_000,
      links: [{ listen: aListen[0] as HostPort, peer: bListen[0] as HostPort }, { listen: aListen[1] as HostPort, peer: aPeer1 }],
      witness: o.alphaWitness ?? null, witnessTimeoutMs: timeoutMs,
    };
    const bOpts: HeartbeatOptions = {
      ...base, selfName: 'beta', peerName: 'alpha', incarnation: incarnation + 1, mainStallMs: o.betaStallMs ?? 10_000,
      links: [{ listen: bListen[0] as HostPort, peer: aListen[0] as HostPort }, { listen: bListen[1] as HostPort, peer: bPeer1 }],
    };
    const a = new Heartbeat(aOpts);
    opened.push(a);
    const b = new Heartbeat(bOpts);
    opened.push(b);
    const alpha = side(a, aOpts, aListen, t);
    const beta = side(b, bOpts, bListen, t);
    await Promise.all([a.start(), b.start()]);
    t.after(async () => {
      for (const r of relays) r.cut();
      await Promise.all([a.close(), b.close()]);
    });
    return { alpha, beta, relays };
  } catch (e) {
    for (const r of relays) r.cut();
    await Promise.all(opened.map((h) => h.close()));
    throw e;
  }
}

/** Starts a pair on free ports; a port taken between the probe and the bind means another try. */
async function startPair(t: TestContext, o: PairOptions = {}): Promise<Pair> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await tryPair(t, o);
    } catch (e) {
      if (attempt >= 5 || !/EADDRINUSE/.test((e as Error).message)) throw e;
    }
  }
}

async function waitFor(what: string, ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = monotonicMs() + timeoutMs;
  while (!ok()) {
    if (monotonicMs() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

function eventsOf(s: Side, type: Recorded['type'], since = -Infinity): Recorded[] {
  return s.events.filter((e) => e.type === type && e.at >= since);
}

async function bothUp(p: Pair): Promise<void> {
  await waitFor('both sides peer-up', () => eventsOf(p.alpha, 'peer-up').length > 0 && eventsOf(p.beta, 'peer-up').length > 0);
  await waitFor('both links up on both sides', () => p.alpha.hb.snapshot().links.up === 2 && p.beta.hb.snapshot().links.up === 2);
  // The snapshot is shared memory and runs ahead of the posted events: wait until the events have caught up
  // too, or a start-up "links 1 of 2" still in the queue is recorded after the caller's next timestamp.
  const lastLinks = (s: Side): unknown => eventsOf(s, 'links').at(-1)?.args[0];
  await waitFor('the links events caught up', () => [p.alpha, p.beta].every((s) => lastLinks(s) === 2));
}

/** Blocks this thread (both sides' main thread) for ms, calling sample() every 20 ms of it. */
function blockMain(ms: number, sample: () => void): void {
  const dummy = new Int32Array(new SharedArrayBuffer(4));
  const end = monotonicMs() + ms;
  for (let now = monotonicMs(); now < end; now = monotonicMs()) {
    Atomics.wait(dummy, 0, 0, Math.min(20, end - now));
    sample();
  }
}

test('both sides see peer-up with the other\'s incarnation, both links up, and echoes that make a lease', { timeout: 20_000 }, async (t) => {
  const p = await startPair(t);
  await bothUp(p);
  assert.deepEqual(eventsOf(p.alpha, 'peer-up')[0]?.args[0], p.beta.incarnation);
  assert.deepEqual(eventsOf(p.beta, 'peer-up')[0]?.args[0], p.alpha.incarnation);
  await waitFor('echoes', () => p.alpha.hb.snapshot().peerAckSentAt !== null && p.beta.hb.snapshot().peerAckSentAt !== null);
  await sleep(3 * INTERVAL_MS);
  for (const s of [p.alpha, p.beta]) {
    const snap = s.hb.snapshot();
    const now = monotonicMs();
    assert.equal(snap.peer, 'up');
    assert.ok(snap.peerAckSentAt !== null && now - snap.peerAckSentAt < TIMEOUT_MS, `peerAckSentAt ${snap.peerAckSentAt} is recent (now ${now})`);
    assert.ok(snap.lastHeardAt !== null && now - snap.lastHeardAt < TIMEOUT_MS);
    assert.equal(snap.witnessAckSentAt, null, 'no witness configured');
    assert.equal(snap.peerFlags, 0);
    assert.deepEqual(snap.links.links.map((l) => l.up), [true, true]);
    assert.ok(snap.counters.accepted >= 4 && snap.counters.sent >= 4, JSON.stringify(snap.counters));
    const refusals = snap.counters.malformed + snap.counters.otherCluster + snap.counters.badMac
      + snap.counters.unknownNode + snap.counters.wrongLink + snap.counters.replayed;
    assert.equal(refusals, 0, JSON.stringify(snap.counters));
    assert.equal(eventsOf(s, 'peer-down').length, 0);
  }
});

test('a closed peer is down after timeoutMs, not before, and not much later', { timeout: 20_000 }, async (t) => {
  const p = await startPair(t);
  await bothUp(p);
  const closeAt = monotonicMs();
  await p.alpha.hb.close();
  await waitFor('beta peer-down', () => eventsOf(p.beta, 'peer-down').length > 0, TIMEOUT_MS + 2000);
  const down = eventsOf(p.beta, 'peer-down')[0] as Recorded;
  const [lastHeardAt, now] = down.args as [number, number];
  t.diagnostic(`last heard ${lastHeardAt - closeAt} ms after close(), down ${now - lastHeardAt} ms after that, seen ${down.at - closeAt} ms after close()`);
  assert.ok(lastHeardAt >= closeAt - INTERVAL_MS - SLACK_MS, 'beta heard alpha until about the close');
  assert.ok(now - lastHeardAt >= TIMEOUT_MS, `peer-down ${now - lastHeardAt} ms after the last heartbeat: before timeoutMs`);
  assert.ok(down.at - closeAt <= TIMEOUT_MS + 2 * INTERVAL_MS + SLACK_MS, `peer-down ${down.at - closeAt} ms after the close: too late`);
  assert.equal(p.beta.hb.snapshot().peer, 'down');
  assert.equal(p.beta.hb.snapshot().lastHeardAt, lastHeardAt);
  const links = eventsOf(p.beta, 'links').at(-1);
  assert.deepEqual(links?.args.slice(0, 2), [0, 2], 'both links down');
});

test('a restarted peer (a new incarnation) is reported with peer-up, though it never looked down', { timeout: 20_000 }, async (t) => {
  const timeoutMs = 1000;
  const p = await startPair(t, { timeoutMs });
  await bothUp(p);
  const closeAt = monotonicMs();
  await p.alpha.hb.close();
  const incarnation = p.alpha.incarnation + 1000;
  const again = new Heartbeat({ ...p.alpha.options, incarnation });
  t.after(() => again.close());
  const ticker = setInterval(() => again.stampMain(), INTERVAL_MS / 2);
  t.after(() => clearInterval(ticker));
  await again.start();
  await waitFor('beta peer-up with the new incarnation', () => eventsOf(p.beta, 'peer-up', closeAt).length > 0, timeoutMs);
  const restartedIn = monotonicMs() - closeAt;
  t.diagnostic(`restart seen ${restartedIn} ms after the close`);
  assert.ok(restartedIn < timeoutMs, 'the restart took longer than timeoutMs: the test proves nothing');
  assert.deepEqual(eventsOf(p.beta, 'peer-up', closeAt).map((e) => e.args[0]), [incarnation]);
  assert.deepEqual(eventsOf(p.beta, 'peer-down'), []);
  assert.equal(p.beta.hb.snapshot().peerIncarnation, incarnation);
  // beta echoes the new process's seqs, so its lease starts again
  await waitFor('the restarted side hears echoes', () => again.snapshot().peerAckSentAt !== null);
});

test('one link lost: a links warning (1 of 2 up), and the peer stays up', { timeout: 20_000 }, async (t) => {
  const p = await startPair(t, { relayLink1: true });
  await bothUp(p);
  const cutAt = monotonicMs();
  for (const r of p.relays) r.cut();
  // heartbeats on link 1 stopped at the cut, or earlier if the relays' thread stalled just before it
  const stoppedAt = Math.min(cutAt, ...p.relays.map((r) => r.lastForwardedAt));
  for (const s of [p.alpha, p.beta]) {
    await waitFor('links 1 of 2', () => eventsOf(s, 'links', cutAt).some((e) => e.args[0] === 1 && e.args[1] === 2), TIMEOUT_MS + 2000);
    const e = eventsOf(s, 'links', cutAt).find((x) => x.args[0] === 1) as Recorded;
    assert.deepEqual((e.args[2] as Array<{ up: boolean }>).map((l) => l.up), [true, false], 'link 1 is the one down');
    assert.ok(e.at - stoppedAt >= TIMEOUT_MS - INTERVAL_MS,
      `the link was declared down ${e.at - stoppedAt} ms after its heartbeats stopped (${e.at - cutAt} ms after the cut)`);
  }
  await sleep(2 * TIMEOUT_MS);
  for (const s of [p.alpha, p.beta]) {
    assert.equal(eventsOf(s, 'peer-down').length, 0, 'the peer went down with one link left');
    assert.equal(s.hb.snapshot().peer, 'up');
    assert.equal(s.hb.snapshot().links.up, 1);
  }
});

test('hostile datagrams are counted by reason and change nothing', { timeout: 20_000 }, async (t) => {
  const p = await startPair(t);
  await bothUp(p);
  const raw = await udpSocket('127.0.0.9');
  t.after(() => raw.close());
  const to = p.beta.listen[0] as HostPort;
  const send = (b: Buffer): Promise<void> => new Promise((resolve, reject) => raw.send(b, to.port, to.host, (e) => (e ? reject(e) : resolve())));
  const real: HeartbeatFields = {
    flags: 0, clusterId: CLUSTER, incarnation: p.alpha.incarnation, seq: 1, echoIncarnation: 0, echoSeq: 0, linkIndex: 0, name: 'alpha',
  };
  const before = p.beta.hb.snapshot();
  const eventsBefore = p.beta.events.length;
  const forgedRestart = { ...real, incarnation: p.alpha.incarnation + 1000, seq: 1 };
  const otherCluster = Buffer.from(CLUSTER);
  otherCluster[0] = (otherCluster[0] as number) ^ 0xff;
  const flipped = encodeHeartbeat({ ...forgedRestart, seq: 2 }, KEY);
  flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
  const hostile: Array<[string, Buffer]> = [
    ['malformed', Buffer.from('not a heartbeat at all')],
    ['malformed', Buffer.alloc(1400, 0x54)],
    ['otherCluster', encodeHeartbeat({ ...forgedRestart, clusterId: otherCluster }, deriveHeartbeatKey(SECRET, otherCluster))],
    ['badMac', encodeHeartbeat(forgedRestart, deriveHeartbeatKey(Buffer.alloc(32, 0x43), CLUSTER))],
    ['badMac', flipped],
    ['unknownNode', encodeHeartbeat({ ...real, name: 'mallory', seq: 10 ** 9 }, KEY)],
    ['wrongLink', encodeHeartbeat({ ...real, linkIndex: 1, seq: 10 ** 9 }, KEY)],
    ['replayed', encodeHeartbeat(real, KEY)],
    ['replayed', encodeHeartbeat({ ...real, incarnation: p.alpha.incarnation - 1, seq: 10 ** 9 }, KEY)],
  ];
  for (const [, b] of hostile) await send(b);
  const expected = { malformed: 2, otherCluster: 1, badMac: 2, unknownNode: 1, wrongLink: 1, replayed: 2 };
  const counted = (): Record<string, number> => {
    const c = p.beta.hb.snapshot().counters;
    return { malformed: c.malformed, otherCluster: c.otherCluster, badMac: c.badMac, unknownNode: c.unknownNode, wrongLink: c.wrongLink, replayed: c.replayed };
  };
  await waitFor(`counters ${JSON.stringify(expected)}`, () => JSON.stringify(counted()) === JSON.stringify(expected));
  await sleep(3 * INTERVAL_MS);
  assert.deepEqual(counted(), expected, 'nothing else was refused');
  const after = p.beta.hb.snapshot();
  assert.equal(after.peer, 'up');
  assert.equal(after.peerIncarnation, p.alpha.incarnation, 'no forged restart got through');
  assert.equal(after.peerIncarnation, before.peerIncarnation);
  assert.equal(after.links.up, 2);
  assert.equal(p.beta.events.length, eventsBefore, `beta reported ${JSON.stringify(p.beta.events.slice(eventsBefore))}`);
  assert.equal(eventsOf(p.alpha, 'peer-down').length, 0);
  // and the real heartbeats still flow
  const heard = after.lastHeardAt as number;
  await waitFor('a newer heartbeat', () => (p.beta.hb.snapshot().lastHeardAt ?? 0) > heard);
});

test('a blocked main thread does not stop the heartbeats: the peer stays up', { timeout: 30_000 }, async (t) => {
  const p = await startPair(t);
  await bothUp(p);
  const blockMs = 3 * TIMEOUT_MS;
  const start = monotonicMs();
  const heardDuringBlock = { alpha: 0, beta: 0 };
  let stalledFlagSeen = false;
  // both sides live on this thread, so both main threads are blocked; the shared memory is still readable
  blockMain(blockMs, () => {
    const a = p.alpha.hb.snapshot();
    const b = p.beta.hb.snapshot();
    if ((a.lastHeardAt ?? 0) > start + TIMEOUT_MS) heardDuringBlock.alpha++;
    if ((b.lastHeardAt ?? 0) > start + TIMEOUT_MS) heardDuringBlock.beta++;
    if (((b.peerFlags ?? 0) & HeartbeatFlags.MAIN_STALLED) !== 0) stalledFlagSeen = true;
  });
  const blocked = monotonicMs() - start;
  t.diagnostic(`main thread blocked for ${blocked} ms; samples with a heartbeat newer than timeoutMs into the block: ${JSON.stringify(heardDuringBlock)}`);
  assert.ok(blocked >= blockMs);
  assert.ok(heardDuringBlock.alpha > 0 && heardDuringBlock.beta > 0, 'heartbeats kept arriving while the main thread was blocked');
  assert.ok(stalledFlagSeen, 'the peer saw the MAIN_STALLED flag while main was silent for over timeoutMs');
  await sleep(3 * INTERVAL_MS); // the events the workers posted during the block are delivered now
  for (const s of [p.alpha, p.beta]) {
    assert.deepEqual(eventsOf(s, 'peer-down'), [], 'a blocked main thread made the peer look down');
    assert.equal(s.hb.snapshot().peer, 'up');
    assert.equal(s.hb.snapshot().counters.stalledTicks, 0);
  }
  await waitFor('MAIN_STALLED cleared', () => p.beta.hb.snapshot().peerFlags === 0);
});

test('a main thread stalled beyond mainStallMs stops its heartbeats: the peer sees peer-down, and peer-up when it recovers', { timeout: 30_000 }, async (t) => {
  const timeoutMs = 600;
  const alphaStallMs = 1500;
  const p = await startPair(t, { timeoutMs, alphaStallMs, betaStallMs: 60_000 });
  await bothUp(p);
  const start = monotonicMs();
  let betaLastHeard = 0;
  // alpha's worker gives up at alphaStallMs; beta's does not, so only beta should see its peer go
  blockMain(alphaStallMs + timeoutMs + 3 * INTERVAL_MS + SLACK_MS, () => {
    betaLastHeard = p.beta.hb.snapshot().lastHeardAt ?? 0;
  });
  t.diagnostic(`beta last heard alpha ${betaLastHeard - start} ms into the block`);
  assert.ok(betaLastHeard - start >= alphaStallMs - INTERVAL_MS - SLACK_MS, 'alpha stopped sending before mainStallMs');
  assert.ok(betaLastHeard - start <= alphaStallMs + SLACK_MS, 'alpha kept sending after mainStallMs');
  await waitFor('beta peer-down', () => eventsOf(p.beta, 'peer-down').length > 0, 2000);
  const [lastHeardAt, downAt] = (eventsOf(p.beta, 'peer-down')[0] as Recorded).args as [number, number];
  assert.equal(lastHeardAt, betaLastHeard);
  assert.ok(downAt - lastHeardAt >= timeoutMs);
  assert.deepEqual(eventsOf(p.alpha, 'peer-down'), [], 'beta\'s worker kept sending');
  assert.ok(p.alpha.hb.snapshot().counters.stalledTicks > 0);
  // alpha's ticker stamps again: it sends again, and beta sees the same process back
  await waitFor('beta peer-up again', () => eventsOf(p.beta, 'peer-up').length >= 2, 3000);
  assert.equal(eventsOf(p.beta, 'peer-up')[1]?.args[0], p.alpha.incarnation);
});

test('a side that stops stamping (without blocking) is given up by its peer after mainStallMs + timeoutMs', { timeout: 30_000 }, async (t) => {
  const timeoutMs = 400;
  const alphaStallMs = 1000;
  const p = await startPair(t, { timeoutMs, alphaStallMs });
  await bothUp(p);
  const stopAt = monotonicMs();
  p.alpha.stopStamping();
  await waitFor('beta peer-down', () => eventsOf(p.beta, 'peer-down').length > 0, alphaStallMs + timeoutMs + 3000);
  const down = eventsOf(p.beta, 'peer-down')[0] as Recorded;
  t.diagnostic(`beta saw peer-down ${down.at - stopAt} ms after alpha's last stamp`);
  assert.ok(down.at - stopAt >= alphaStallMs + timeoutMs - 2 * INTERVAL_MS, 'too early');
  assert.ok(down.at - stopAt <= alphaStallMs + timeoutMs + 3 * INTERVAL_MS + SLACK_MS, 'too late');
  assert.equal(p.alpha.hb.snapshot().peer, 'up', 'alpha still hears beta');
  p.alpha.startStamping();
  await waitFor('beta peer-up again', () => eventsOf(p.beta, 'peer-up').length >= 2, 3000);
});

test('witness: RENEW every interval while renewing and main is alive; main\'s requests share the client', { timeout: 30_000 }, async (t) => {
  const witness = await FakeWitness.open();
  t.after(() => witness.close());
  const alphaStallMs = 1000;
  const p = await startPair(t, { alphaWitness: witness.address, alphaStallMs });
  await bothUp(p);
  const a = p.alpha.hb;
  assert.equal(a.snapshot().witnessAckSentAt, null);
  await sleep(3 * INTERVAL_MS);
  assert.equal(witness.renewsSince(0), 0, 'no RENEW before setRenewing(true)');

  a.setRenewing(true);
  const renewFrom = monotonicMs();
  await waitFor('a granted RENEW', () => a.snapshot().witnessAckSentAt !== null);
  // the main thread's requests go through the worker's client, between its RENEWs
  const replies = await Promise.all([a.witnessRequest('query'), a.witnessRequest('alone'), a.witnessRequest('query'), a.witnessRequest('clear-alone')]);
  assert.deepEqual(replies.map((r) => [r.granted, r.reason]), [[true, 'ok'], [true, 'ok'], [true, 'ok'], [true, 'ok']]);
  await sleep(1000 - (monotonicMs() - renewFrom));
  const renews = witness.renewsSince(renewFrom);
  t.diagnostic(`${renews} RENEWs in the first second`);
  assert.ok(renews >= 7 && renews <= 12, `${renews} RENEWs in a second at one per ${INTERVAL_MS} ms`);
  const acked = a.snapshot().witnessAckSentAt as number;
  assert.ok(monotonicMs() - acked < 2 * INTERVAL_MS + SLACK_MS, 'witnessAckSentAt follows the RENEWs');
  assert.deepEqual(witness.requests.filter((r) => !r.granted), [], 'every request was granted: none stale');
  const ids = witness.requests.map((r) => r.id);
  assert.deepEqual(ids, [...ids].sort((x, y) => (x < y ? -1 : 1)), 'one client: request ids grow');
  await assert.rejects(p.beta.hb.witnessRequest('query'), (e: unknown) => e instanceof HeartbeatRunError && e.code === 'ERR_HEARTBEAT_STATE');

  // a main thread silent for mainStallMs stops the RENEWs with the heartbeats
  p.alpha.stopStamping();
  const stoppedAt = monotonicMs();
  await sleep(alphaStallMs + INTERVAL_MS);
  const quietFrom = monotonicMs();
  await sleep(4 * INTERVAL_MS);
  assert.equal(witness.renewsSince(quietFrom), 0, 'RENEWs went on while the main thread was stalled');
  assert.ok((a.snapshot().witnessAckSentAt as number) < stoppedAt + alphaStallMs + SLACK_MS);
  p.alpha.startStamping();
  const back = monotonicMs();
  await waitFor('RENEWs again', () => witness.renewsSince(back) > 0, 2000);

  a.setRenewing(false);
  await sleep(2 * INTERVAL_MS);
  const offFrom = monotonicMs();
  await sleep(4 * INTERVAL_MS);
  assert.equal(witness.renewsSince(offFrom), 0, 'RENEWs after setRenewing(false)');
});

test('a listen address in use: start() rejects with ERR_HEARTBEAT_START, and close() finds nothing left running', { timeout: 10_000 }, async (t) => {
  const taken = await udpSocket(ALPHA);
  t.after(() => taken.close());
  const hb = new Heartbeat({
    clusterId: CLUSTER, secret: SECRET, selfName: 'alpha', peerName: 'beta', incarnation: Date.now(), intervalMs: INTERVAL_MS, timeoutMs: TIMEOUT_MS,
    links: [{ listen: { host: ALPHA, port: await freePort(ALPHA) }, peer: { host: BETA, port: 9 } }, { listen: { host: ALPHA, port: taken.address().port }, peer: { host: BETA, port: 9 } }],
  });
  t.after(() => hb.close());
  await assert.rejects(hb.start(), (e: unknown) => e instanceof HeartbeatRunError && e.code === 'ERR_HEARTBEAT_START' && /EADDRINUSE/.test(e.message));
  const closeAt = monotonicMs();
  await hb.close();
  assert.ok(monotonicMs() - closeAt < 1000, 'the worker had already ended');
});

test('bad options are refused before a worker starts', () => {
  const ok: HeartbeatOptions = {
    clusterId: CLUSTER, secret: SECRET, selfName: 'alpha', peerName: 'beta', incarnation: 1, intervalMs: 100, timeoutMs: 400,
    links: [{ listen: { host: ALPHA, port: 0 }, peer: { host: BETA, port: 9 } }],
  };
  const bad: Array<[string, Partial<HeartbeatOptions>]> = [
    ['a host name', { links: [{ listen: { host: 'localhost', port: 0 }, peer: { host: BETA, port: 9 } }] }],
    ['peer port 0', { links: [{ listen: { host: ALPHA, port: 0 }, peer: { host: BETA, port: 0 } }] }],
    ['no links', { links: [] }],
    ['timeout below interval', { timeoutMs: 50 }],
    ['mainStallMs below timeout', { mainStallMs: 100 }],
    ['same names', { peerName: 'alpha' }],
    ['short secret', { secret: Buffer.alloc(8) }],
    ['short cluster id', { clusterId: Buffer.alloc(8) }],
    ['witness by name', { witness: { host: 'witness.example', port: 7000 } }],
  ];
  for (const [what, edit] of bad) {
    assert.throws(() => new Heartbeat({ ...ok, ...edit }), (e: unknown) => e instanceof HeartbeatRunError && e.code === 'ERR_HEARTBEAT_OPTIONS', what);
  }
});
