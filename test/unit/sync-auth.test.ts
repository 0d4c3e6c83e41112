import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import {
  SyncAuth, authMac, deriveSessionKeys, type AuthDone, type AuthFailure, type AuthStep, type SyncAuthOptions, type SyncRole,
} from '../../src/protocol/sync/auth';
import { SyncProtocolError } from '../../src/protocol/sync/errors';
import { FrameDecoder, FrameEncoder, encodeFrame, type Frame } from '../../src/protocol/sync/frame';
import { SyncMessageType as M, SyncRejectCode, type SyncMessage } from '../../src/protocol/sync/messages';

const CLUSTER = Buffer.alloc(16, 0xc1);
const SECRET = Buffer.from('correct horse battery staple!!!');

function machine(role: SyncRole, over: Partial<SyncAuthOptions> = {}): SyncAuth {
  return new SyncAuth({
    role, clusterId: CLUSTER, clusterSecret: SECRET,
    nodeName: role === 'initiator' ? 'alpha' : 'beta',
    nonce: Buffer.alloc(32, role === 'initiator' ? 1 : 2),
    ...over,
  });
}

interface Outcome {
  done: AuthDone | undefined;
  fail: AuthFailure | undefined;
  /** every frame this side sent, in order */
  sent: Buffer[];
  /** bytes delivered to this side after it finished */
  after: Buffer;
  results: number;
}

interface WireOptions {
  /** deliver at most this many bytes per step() */
  readonly chunk?: number;
  /** rewrites the bytes on their way from one side to the other */
  readonly tamper?: (from: 'a' | 'b', bytes: Buffer) => Buffer;
  /** frames a side sends right after it is done (the session's first frames) */
  readonly onDone?: (done: AuthDone) => Buffer[];
}

/** Runs two machines against each other until neither has anything left to say. */
function wire(a: SyncAuth, b: SyncAuth, options: WireOptions = {}): { a: Outcome; b: Outcome } {
  const out = { a: blank(), b: blank() };
  const queue = { a: [] as Buffer[], b: [] as Buffer[] }; // bytes waiting to be delivered *from* a / b
  const machines = { a, b };
  const absorb = (side: 'a' | 'b', r: AuthStep): void => {
    const o = out[side];
    o.sent.push(...r.send);
    queue[side].push(...r.send);
    if (r.done !== undefined) { o.done = r.done; o.results++; queue[side].push(...(options.onDone?.(r.done) ?? [])); }
    if (r.fail !== undefined) { o.fail = r.fail; o.results++; }
  };
  absorb('a', a.start());
  absorb('b', b.start());
  for (let rounds = 0; queue.a.length + queue.b.length > 0; rounds++) {
    assert.ok(rounds < 10_000, 'the machines keep talking');
    for (const from of ['a', 'b'] as const) {
      const to = from === 'a' ? 'b' : 'a';
      let bytes: Buffer = Buffer.concat(queue[from]);
      queue[from] = [];
      if (options.tamper !== undefined) bytes = options.tamper(from, bytes);
      const size = options.chunk ?? Math.max(bytes.length, 1);
      for (let at = 0; at < bytes.length; at += size) {
        const piece = bytes.subarray(at, at + size);
        if (out[to].done !== undefined || out[to].fail !== undefined) out[to].after = Buffer.concat([out[to].after, piece]);
        else absorb(to, machines[to].step(piece));
      }
    }
  }
  return out;
}

function blank(): Outcome {
  return { done: undefined, fail: undefined, sent: [], after: Buffer.alloc(0), results: 0 };
}

/** The frames a side sent, decoded without MACs as far as they go unauthenticated. */
function plainFrames(sent: Buffer[]): Array<Frame<SyncMessage>> {
  const frames: Array<Frame<SyncMessage>> = [];
  try { new FrameDecoder((f) => frames.push(f)).push(Buffer.concat(sent)); } catch { /* MAC'd frames follow */ }
  return frames;
}

function assertFailed(o: Outcome, code: string): void {
  assert.equal(o.done, undefined, 'never done');
  assert.equal(o.fail?.code, code, o.fail?.reason);
  assert.equal(o.results, 1, 'exactly one outcome');
}

test('two machines wired together complete with matching keys (golden HELLO, AUTH and keys)', () => {
  const { a, b } = wire(machine('initiator'), machine('acceptor'));
  assert.ok(a.done && b.done, `${a.fail?.reason ?? ''} ${b.fail?.reason ?? ''}`);
  assert.equal(a.results, 1);
  assert.equal(b.results, 1);
  assert.equal(a.done.peerName, 'beta');
  assert.equal(b.done.peerName, 'alpha');
  assert.equal(a.done.version, 1);
  assert.deepEqual(a.done.sessionKeys.send, b.done.sessionKeys.receive);
  assert.deepEqual(a.done.sessionKeys.receive, b.done.sessionKeys.send);
  assert.notDeepEqual(a.done.sessionKeys.send, a.done.sessionKeys.receive);
  // HKDF-SHA256 vectors computed independently (Python hmac/hashlib)
  assert.equal(a.done.sessionKeys.send.toString('hex'), '83b3088fa90000811b91f106f2572edef463e9839a09afc0aeb686e9a1dd4ac4');
  assert.equal(a.done.sessionKeys.receive.toString('hex'), 'c676c763621ede2439b2bc5e6722ffe7813b890b0b2b0809d9687cc01e4f4061');
  assert.deepEqual([a.done.sendSeq, a.done.receiveSeq, b.done.sendSeq, b.done.receiveSeq], [4n, 4n, 4n, 4n]);
  assert.equal(a.done.rest.length + b.done.rest.length, 0);
  // HELLO, AUTH, AUTH_OK from each side; HELLO and AUTH as computed independently
  assert.equal(a.sent.length, 3);
  assert.equal(a.sent[0]?.toString('hex'),
    '544e4453000100010000000000000001' + '0000003b' + 'c1'.repeat(16) + '01'.repeat(32) + '0005616c706861' + '00010001');
  assert.equal(b.sent[0]?.toString('hex'),
    '544e4453000100010000000000000001' + '0000003a' + 'c1'.repeat(16) + '02'.repeat(32) + '000462657461' + '00010001');
  assert.equal(a.sent[1]?.subarray(20).toString('hex'), '050f3c036b60d40a6115bb8ae53efdd1fce88d1e35ed725492b4f0d2e21ed10b');
  assert.equal(b.sent[1]?.subarray(20).toString('hex'), '2befb70e1dcc33b6b5a93dcd49c5199d8e1b1edab47450138bfaf173dfee500d');
  assert.deepEqual(a.sent[1]?.subarray(20), authMac(SECRET, 'initiator', a.sent[0] as Buffer, b.sent[0] as Buffer));
  assert.deepEqual(deriveSessionKeys(SECRET, Buffer.alloc(32, 1), Buffer.alloc(32, 2), 'acceptor'), b.done.sessionKeys);
  // AUTH_OK carries a MAC: 20 bytes of header, 16 of MAC
  assert.equal(a.sent[2]?.length, 36);
});

test('the session continues under the keys and sequence numbers the handshake hands over', () => {
  const ping = (d: AuthDone): Buffer[] => [new FrameEncoder({ key: d.sessionKeys.send, nextSeq: d.sendSeq }).encode({ type: M.PING, token: 77n })];
  for (const chunk of [1, 7, 36, 1000]) {
    const { a, b } = wire(machine('initiator'), machine('acceptor'), { chunk, onDone: ping });
    for (const side of [a, b]) {
      assert.ok(side.done);
      const got: Array<Frame<SyncMessage>> = [];
      const d = new FrameDecoder((f) => got.push(f), { key: side.done.sessionKeys.receive, nextSeq: side.done.receiveSeq });
      d.push(side.done.rest);
      d.push(side.after);
      assert.deepEqual(got.map((f) => f.message), [{ type: M.PING, token: 77n }], `chunk ${chunk}`);
    }
  }
  // the frames ride along with AUTH_OK when delivered whole: they arrive in done.rest
  const { a } = wire(machine('initiator'), machine('acceptor'), { onDone: ping });
  assert.ok((a.done?.rest.length ?? 0) > 0 || a.after.length > 0);
});

test('the handshake completes however the bytes are split', () => {
  const whole = wire(machine('initiator'), machine('acceptor'));
  for (let chunk = 1; chunk <= 120; chunk++) {
    const { a, b } = wire(machine('initiator'), machine('acceptor'), { chunk });
    assert.deepEqual(a.done?.sessionKeys, whole.a.done?.sessionKeys, `chunk ${chunk}`);
    assert.deepEqual(b.done?.sessionKeys, whole.b.done?.sessionKeys, `chunk ${chunk}`);
  }
});

test('a wrong secret fails on both sides with ERR_SYNC_AUTH', () => {
  const { a, b } = wire(machine('initiator'), machine('acceptor', { clusterSecret: Buffer.from('another secret of some length') }));
  assertFailed(a, 'ERR_SYNC_AUTH');
  assertFailed(b, 'ERR_SYNC_AUTH');
  // HELLO, AUTH, REJECT: no AUTH_OK was sent
  assert.equal(a.sent.length, 3);
});

test('another cluster id is rejected first: REJECT, ERR_SYNC_CLUSTER, no AUTH sent', () => {
  const { a, b } = wire(machine('initiator'), machine('acceptor', { clusterId: Buffer.alloc(16, 0xc2), nodeName: 'alpha' }));
  for (const side of [a, b]) {
    assertFailed(side, 'ERR_SYNC_CLUSTER');
    const frames = plainFrames(side.sent);
    assert.deepEqual(frames.map((f) => f.type), [M.HELLO, M.REJECT]);
    const reject = frames[1]?.message;
    assert.equal(reject?.type === M.REJECT && reject.code, SyncRejectCode.CLUSTER);
  }
  // nothing after the cluster id is read: a HELLO that is garbage after it still fails as CLUSTER
  const m = machine('acceptor');
  m.start();
  const garbage = Buffer.concat([Buffer.alloc(16, 0xc2), Buffer.from('\xff\xff\xff\xff not a hello', 'latin1')]);
  const h = Buffer.alloc(20);
  h.writeUInt32BE(0x544e4453, 0); h.writeUInt16BE(1, 4); h.writeUInt16BE(M.HELLO, 6); h.writeBigUInt64BE(1n, 8); h.writeUInt32BE(garbage.length, 16);
  const r = m.step(Buffer.concat([h, garbage]));
  assert.equal(r.fail?.code, 'ERR_SYNC_CLUSTER');
});

test('a replayed HELLO and AUTH from an earlier session fail with ERR_SYNC_AUTH', () => {
  const first = wire(machine('initiator'), machine('acceptor'));
  assert.ok(first.a.done && first.b.done);
  // an attacker replays the initiator's side to an acceptor with a fresh nonce
  const acceptor = machine('acceptor', { nonce: Buffer.alloc(32, 3) });
  acceptor.start();
  const r = acceptor.step(Buffer.concat(first.a.sent));
  assert.equal(r.done, undefined);
  assert.equal(r.fail?.code, 'ERR_SYNC_AUTH');
  // and the acceptor's side to an initiator with a fresh nonce
  const initiator = machine('initiator', { nonce: Buffer.alloc(32, 4) });
  initiator.start();
  const s = initiator.step(Buffer.concat(first.b.sent));
  assert.equal(s.done, undefined);
  assert.equal(s.fail?.code, 'ERR_SYNC_AUTH');
  // frames of the earlier session cannot be spliced into a new one: their MACs are under other keys
  const second = wire(machine('initiator', { nonce: Buffer.alloc(32, 5) }), machine('acceptor', { nonce: Buffer.alloc(32, 6) }));
  assert.ok(second.b.done);
  const d = new FrameDecoder(() => undefined, { key: second.b.done.sessionKeys.receive, nextSeq: 3n });
  assert.throws(() => d.push(first.a.sent[2] as Buffer), (e: unknown) => e instanceof SyncProtocolError && e.code === 'ERR_SYNC_MAC');
});

test('the same node name on both sides fails with ERR_SYNC_NAME; so does a reflected HELLO', () => {
  const { a, b } = wire(machine('initiator'), machine('acceptor', { nodeName: 'alpha' }));
  assertFailed(a, 'ERR_SYNC_NAME');
  assertFailed(b, 'ERR_SYNC_NAME');
  const m = machine('initiator');
  const hello = m.start().send;
  assert.equal(m.step(Buffer.concat(hello)).fail?.code, 'ERR_SYNC_NAME');
});

test('a reflected AUTH does not verify: each side MACs its own role', () => {
  // a man in the middle answers the initiator with a HELLO of its own and the initiator's own AUTH
  // (the initiator's AUTH is its second frame, seq 2: just what it expects from the peer next)
  const a = machine('initiator');
  a.start();
  const fake = encodeFrame({ type: M.HELLO, clusterId: CLUSTER, nonce: Buffer.alloc(32, 9), nodeName: 'mallory', versions: [1] }, 1n);
  const auth = a.step(fake).send[0] as Buffer;
  assert.equal(auth.readBigUInt64BE(8), 2n);
  assert.equal(a.step(auth).fail?.code, 'ERR_SYNC_AUTH');
});

test('two initiators (or two acceptors) do not agree on the transcript', () => {
  const ii = wire(machine('initiator'), machine('initiator', { nodeName: 'beta', nonce: Buffer.alloc(32, 2) }));
  assertFailed(ii.a, 'ERR_SYNC_AUTH');
  assertFailed(ii.b, 'ERR_SYNC_AUTH');
  const aa = wire(machine('acceptor', { nodeName: 'alpha', nonce: Buffer.alloc(32, 1) }), machine('acceptor'));
  assertFailed(aa.a, 'ERR_SYNC_AUTH');
});

test('no common protocol version fails with ERR_SYNC_VERSION; otherwise the highest common one wins', () => {
  const none = wire(machine('initiator', { versions: [2] }), machine('acceptor', { versions: [1] }));
  assertFailed(none.a, 'ERR_SYNC_VERSION');
  assertFailed(none.b, 'ERR_SYNC_VERSION');
  const some = wire(machine('initiator', { versions: [1, 2, 5] }), machine('acceptor', { versions: [1, 2, 3] }));
  assert.equal(some.a.done?.version, 2);
  assert.equal(some.b.done?.version, 2);
});

test('a REJECT from the peer fails with ERR_SYNC_REJECTED and is not answered', () => {
  const m = machine('initiator');
  m.start();
  const r = m.step(encodeFrame({ type: M.REJECT, code: SyncRejectCode.PROTOCOL, reason: 'go away' }, 1n));
  assert.equal(r.fail?.code, 'ERR_SYNC_REJECTED');
  assert.match(r.fail?.reason ?? '', /PROTOCOL.*go away/);
  assert.deepEqual(r.send, []);
});

test('a session message before authentication fails with ERR_SYNC_STATE and is answered with REJECT', () => {
  const m = machine('acceptor');
  const hello = m.start().send;
  const r = m.step(encodeFrame({ type: M.WRITE, volumeId: Buffer.alloc(16), requestId: 1n, offset: 0, flags: 0, data: Buffer.from('x') }, 1n));
  assert.equal(r.fail?.code, 'ERR_SYNC_STATE');
  const frames = plainFrames([...hello, ...r.send]);
  assert.equal(frames[1]?.message.type === M.REJECT && frames[1].message.code, SyncRejectCode.PROTOCOL);
  // a second HELLO after the first is just as wrong
  const n = machine('acceptor');
  n.start();
  const helloFrom = (seq: bigint): Buffer => encodeFrame({ type: M.HELLO, clusterId: CLUSTER, nonce: Buffer.alloc(32, 7), nodeName: 'gamma', versions: [1] }, seq);
  assert.equal(n.step(Buffer.concat([helloFrom(1n), helloFrom(2n)])).fail?.code, 'ERR_SYNC_STATE');
});

test('garbage only ever fails with a SyncProtocolError code, and never completes', () => {
  const codes = new Set<string>();
  // plain random bytes, and random bytes behind a plausible frame header (so that more than the magic is tested)
  const header = (type: number, seq: bigint, length: number): Buffer => {
    const h = Buffer.alloc(20);
    h.writeUInt32BE(0x544e4453, 0); h.writeUInt16BE(1, 4); h.writeUInt16BE(type, 6); h.writeBigUInt64BE(seq, 8); h.writeUInt32BE(length, 16);
    return h;
  };
  const chunk = fc.oneof(
    fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.constantFrom(...Object.values(M)), fc.constantFrom(1n, 2n), fc.uint8Array({ maxLength: 100 }), fc.integer({ min: -2, max: 2 }))
      .map(([type, seq, payload, skew]) => Buffer.concat([header(type, seq, Math.max(0, payload.length + skew)), payload])),
  );
  fc.assert(fc.property(fc.array(chunk, { maxLength: 5 }), fc.boolean(), (chunks, afterHello) => {
    const m = machine('acceptor');
    m.start();
    if (afterHello) {
      const peer = encodeFrame({ type: M.HELLO, clusterId: CLUSTER, nonce: Buffer.alloc(32, 7), nodeName: 'gamma', versions: [1] }, 1n);
      assert.equal(m.step(peer).send.length, 1, 'AUTH sent');
    }
    let failures = 0;
    for (const c of chunks) {
      const r = m.step(c);
      assert.equal(r.done, undefined);
      if (r.fail !== undefined) { failures++; codes.add(r.fail.code); }
    }
    assert.ok(failures <= 1);
  }), { numRuns: 2000 });
  assert.ok(codes.size >= 4, [...codes].join());
});

test('random frames of every type never complete the handshake', () => {
  const types = Object.values(M);
  fc.assert(fc.property(fc.array(fc.tuple(fc.constantFrom(...types), fc.uint8Array({ maxLength: 80 })), { maxLength: 5 }), (frames) => {
    const m = machine('initiator');
    m.start();
    const stream = Buffer.concat(frames.map(([type, payload], i) => {
      const h = Buffer.alloc(20);
      h.writeUInt32BE(0x544e4453, 0); h.writeUInt16BE(1, 4); h.writeUInt16BE(type, 6); h.writeBigUInt64BE(BigInt(i + 1), 8); h.writeUInt32BE(payload.length, 16);
      return Buffer.concat([h, payload]);
    }));
    const r = m.step(stream);
    assert.equal(r.done, undefined);
  }), { numRuns: 2000 });
});

test('a changed byte anywhere in one side\'s handshake keeps the other side from completing', () => {
  const clean = wire(machine('initiator'), machine('acceptor'));
  for (const from of ['a', 'b'] as const) {
    const length = Buffer.concat(clean[from].sent).length;
    for (let at = 0; at < length; at++) {
      let offset = 0;
      const { a, b } = wire(machine('initiator'), machine('acceptor'), {
        tamper: (side, bytes) => {
          if (side !== from) return bytes;
          const out = Buffer.from(bytes);
          if (at >= offset && at < offset + bytes.length) out[at - offset] = (out[at - offset] as number) ^ 0x20;
          offset += bytes.length;
          return out;
        },
      });
      const receiver = from === 'a' ? b : a;
      assert.equal(receiver.done, undefined, `byte ${at} from ${from}`);
    }
  }
});

test('options are checked: ERR_SYNC_ARGUMENT', () => {
  const bad: Array<Partial<SyncAuthOptions>> = [
    { clusterSecret: Buffer.alloc(15) },
    { clusterId: Buffer.alloc(15) },
    { nonce: Buffer.alloc(16) },
    { nodeName: '' },
    { nodeName: 'x'.repeat(65) },
    { nodeName: 'tab\there' },
    { versions: [] },
    { versions: [2, 1] },
    { role: 'server' as SyncRole },
  ];
  for (const over of bad) {
    assert.throws(() => machine('initiator', over), (e: unknown) => e instanceof SyncProtocolError && e.code === 'ERR_SYNC_ARGUMENT', JSON.stringify(over));
  }
});

test('step() before start() sends HELLO first; after the end, step() does nothing', () => {
  const a = machine('initiator');
  const b = machine('acceptor');
  const fromB = b.start().send;
  const r = a.step(Buffer.concat(fromB));
  assert.equal(r.send.length, 2, 'HELLO then AUTH');
  assert.equal(plainFrames(r.send)[0]?.type, M.HELLO);
  assert.equal(a.state, 'auth');
  assert.deepEqual(a.start().send, []);
  const failed = machine('initiator');
  failed.start();
  assert.ok(failed.step(Buffer.from('garbage!garbage!garbage!')).fail);
  assert.equal(failed.state, 'failed');
  assert.deepEqual(failed.step(Buffer.from('more')), { send: [] });
});
