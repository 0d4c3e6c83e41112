import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Liveness, LivenessError, type HeartbeatBody, type LivenessOptions } from '../../src/cluster/liveness';
import type { Heartbeat } from '../../src/protocol/heartbeat/codec';

const CLUSTER = Buffer.alloc(16, 7);
const ALPHA_INC = 1_700_000_000_000;
const BETA_INC = 1_700_000_000_500;

function node(o: Partial<LivenessOptions> = {}): Liveness {
  return new Liveness({ selfName: 'alpha', peerName: 'beta', incarnation: ALPHA_INC, links: 2, intervalMs: 100, timeoutMs: 400, ...o });
}

function peer(o: Partial<LivenessOptions> = {}): Liveness {
  return new Liveness({ selfName: 'beta', peerName: 'alpha', incarnation: BETA_INC, links: 2, intervalMs: 100, timeoutMs: 400, ...o });
}

/** what the codec would hand over for this body */
function wire(b: HeartbeatBody, flags = 0): Heartbeat {
  return { ...b, flags, clusterId: CLUSTER };
}

/** a heartbeat from beta, built by hand */
function fromBeta(seq: number, linkIndex = 0, o: Partial<Heartbeat> = {}): Heartbeat {
  return { flags: 0, clusterId: CLUSTER, incarnation: BETA_INC, seq, echoIncarnation: 0, echoSeq: 0, linkIndex, name: 'beta', ...o };
}

test('the peer is down until the first accepted heartbeat, up for timeoutMs after the last one, then down', () => {
  const a = node();
  assert.equal(a.view(0).peer, 'down');
  assert.equal(a.view(0).lastHeardAt, null);
  assert.equal(a.view(0).peerIncarnation, null);
  assert.equal(a.accept(1000, 0, fromBeta(1)), 'accepted');
  let v = a.view(1000);
  assert.equal(v.peer, 'up');
  assert.equal(v.lastHeardAt, 1000);
  assert.equal(v.peerIncarnation, BETA_INC);
  assert.equal(a.view(1399).peer, 'up');
  assert.equal(a.view(1400).peer, 'down', 'down exactly timeoutMs after the last accepted heartbeat');
  assert.equal(a.accept(1500, 1, fromBeta(2, 1)), 'accepted');
  v = a.view(1500);
  assert.equal(v.peer, 'up');
  assert.equal(v.lastHeardAt, 1500);
});

test('per link: a link is up while it accepted within timeoutMs; the peer is up while any link is', () => {
  const a = node({ links: 3 });
  a.accept(1000, 0, fromBeta(1, 0));
  a.accept(1100, 1, fromBeta(2, 1));
  let v = a.view(1200);
  assert.deepEqual(v.links, [
    { index: 0, up: true, lastHeardAt: 1000 }, { index: 1, up: true, lastHeardAt: 1100 }, { index: 2, up: false, lastHeardAt: null },
  ]);
  v = a.view(1450);
  assert.deepEqual(v.links.map((l) => l.up), [false, true, false], 'link 0 timed out, link 1 not yet');
  assert.equal(v.peer, 'up');
  v = a.view(1500);
  assert.deepEqual(v.links.map((l) => l.up), [false, false, false]);
  assert.equal(v.peer, 'down');
  assert.equal(v.lastHeardAt, 1100);
});

test('replays are refused per link: (incarnation, seq) must grow on each link, not across links', () => {
  const a = node();
  assert.equal(a.accept(10, 0, fromBeta(5, 0)), 'accepted');
  assert.equal(a.accept(11, 0, fromBeta(5, 0)), 'replayed', 'the same datagram again');
  assert.equal(a.accept(12, 0, fromBeta(4, 0)), 'replayed', 'an older seq');
  // seqs are shared by all links: link 1 may deliver an older seq than link 0 did
  assert.equal(a.accept(13, 1, fromBeta(3, 1)), 'accepted');
  assert.equal(a.accept(14, 1, fromBeta(3, 1)), 'replayed');
  assert.equal(a.accept(15, 0, fromBeta(6, 0)), 'accepted');
  assert.equal(a.counters.replayed, 3);
  assert.equal(a.counters.accepted, 3);
  // a refused heartbeat changes nothing
  assert.equal(a.view(15).links[1]?.lastHeardAt, 13);
});

test('wrong link: a heartbeat naming another link than the one it arrived on is refused and changes nothing', () => {
  const a = node();
  assert.equal(a.accept(10, 0, fromBeta(1, 1)), 'wrongLink');
  assert.equal(a.accept(10, 1, fromBeta(1, 0)), 'wrongLink');
  assert.equal(a.view(10).peer, 'down');
  assert.equal(a.counters.wrongLink, 2);
  assert.throws(() => a.accept(10, 2, fromBeta(1, 2)), LivenessError, 'a link this node does not have is a caller bug');
});

test('unknown node: another name, or this node\'s own heartbeat reflected back, is refused', () => {
  const a = node();
  assert.equal(a.accept(10, 0, fromBeta(1, 0, { name: 'gamma' })), 'unknownNode');
  assert.equal(a.accept(10, 0, wire(a.nextHeartbeat(5, 0))), 'unknownNode', 'own heartbeat');
  assert.equal(a.view(10).peer, 'down');
  assert.equal(a.counters.unknownNode, 2);
  // checked in order: the name before the link, the link before replay
  assert.equal(a.accept(11, 0, fromBeta(1, 1, { name: 'gamma' })), 'unknownNode');
  a.accept(12, 0, fromBeta(9, 0));
  assert.equal(a.accept(13, 0, fromBeta(9, 1)), 'wrongLink');
});

test('transport refusals are counted by reason', () => {
  const a = node();
  a.count('malformed');
  a.count('malformed');
  a.count('otherCluster');
  a.count('badMac');
  assert.deepEqual(a.counters, { accepted: 0, sent: 0, malformed: 2, otherCluster: 1, badMac: 1, unknownNode: 0, wrongLink: 0, replayed: 0 });
});

test('seqs grow by one per heartbeat on any link; echoes carry the newest peer seq of its newest incarnation', () => {
  const a = node();
  const first = a.nextHeartbeat(0, 0);
  assert.deepEqual(first, { incarnation: ALPHA_INC, seq: 1, echoIncarnation: 0, echoSeq: 0, linkIndex: 0, name: 'alpha' });
  assert.equal(a.nextHeartbeat(0, 1).seq, 2);
  a.accept(5, 1, fromBeta(7, 1));
  a.accept(6, 0, fromBeta(6, 0)); // older seq on another link: accepted, does not lower the echo
  const h = a.nextHeartbeat(10, 0);
  assert.equal(h.seq, 3);
  assert.equal(h.echoIncarnation, BETA_INC);
  assert.equal(h.echoSeq, 7);
  assert.equal(a.counters.sent, 3);
});

test('two nodes: an echo of a seq in the ring moves peerAckSentAt to that seq\'s send time, never backwards', () => {
  const a = node();
  const b = peer();
  const a1 = a.nextHeartbeat(100, 0);
  const a2 = a.nextHeartbeat(200, 0);
  assert.equal(b.accept(205, 0, wire(a2)), 'accepted');
  assert.equal(b.accept(206, 0, wire(a1)), 'replayed');
  const b1 = b.nextHeartbeat(210, 0);
  assert.equal(b1.echoIncarnation, ALPHA_INC);
  assert.equal(b1.echoSeq, 2);
  assert.equal(a.view(215).peerAckSentAt, null);
  assert.equal(a.accept(215, 0, wire(b1)), 'accepted');
  assert.equal(a.view(215).peerAckSentAt, 200, 'the send time of seq 2');
  // an echo of an older seq, on another link, does not move it back
  assert.equal(a.accept(220, 1, fromBeta(2, 1, { echoIncarnation: ALPHA_INC, echoSeq: 1 })), 'accepted');
  assert.equal(a.view(220).peerAckSentAt, 200);
  // an echo of a seq never sent, or of another incarnation of this node, gives nothing
  assert.equal(a.accept(230, 0, fromBeta(3, 0, { echoIncarnation: ALPHA_INC, echoSeq: 99 })), 'accepted');
  assert.equal(a.accept(231, 0, fromBeta(4, 0, { echoIncarnation: ALPHA_INC - 1, echoSeq: 2 })), 'accepted');
  assert.equal(a.view(231).peerAckSentAt, 200);
  // a refused heartbeat's echo is not used
  const a3 = a.nextHeartbeat(300, 0);
  assert.equal(a.accept(305, 0, fromBeta(4, 0, { echoIncarnation: ALPHA_INC, echoSeq: a3.seq })), 'replayed');
  assert.equal(a.view(305).peerAckSentAt, 200);
  assert.equal(a.accept(306, 0, fromBeta(5, 0, { echoIncarnation: ALPHA_INC, echoSeq: a3.seq })), 'accepted');
  assert.equal(a.view(306).peerAckSentAt, 300);
});

test('the ring is bounded: an echo of a seq older than the last sentSeqsMax gives nothing', () => {
  const max = 8;
  const a = node({ sentSeqsMax: max });
  for (let seq = 1; seq <= 20; seq++) assert.equal(a.nextHeartbeat(seq * 10, seq % 2).seq, seq);
  // seqs 13..20 are the last 8: 12 fell out of the ring
  let s = 1;
  assert.equal(a.accept(500, 0, fromBeta(s++, 0, { echoIncarnation: ALPHA_INC, echoSeq: 12 })), 'accepted');
  assert.equal(a.view(500).peerAckSentAt, null, 'seq 12 is older than the ring');
  assert.equal(a.accept(501, 0, fromBeta(s++, 0, { echoIncarnation: ALPHA_INC, echoSeq: 5 })), 'accepted');
  assert.equal(a.view(501).peerAckSentAt, null, 'seq 5 shares its slot with seq 13: still nothing');
  assert.equal(a.accept(502, 0, fromBeta(s++, 0, { echoIncarnation: ALPHA_INC, echoSeq: 13 })), 'accepted');
  assert.equal(a.view(502).peerAckSentAt, 130, 'seq 13 is the oldest still held');
  assert.equal(a.accept(503, 0, fromBeta(s++, 0, { echoIncarnation: ALPHA_INC, echoSeq: 20 })), 'accepted');
  assert.equal(a.view(503).peerAckSentAt, 200);
  assert.equal(a.sentSeqsMax, max);
  assert.equal(node().sentSeqsMax, 256, 'the default');
});

test('a peer restart (higher incarnation) is seen at once; its seqs start again; older incarnations are replays', () => {
  const a = node();
  a.accept(10, 0, fromBeta(500, 0));
  a.accept(11, 1, fromBeta(501, 1));
  assert.equal(a.view(11).peerIncarnation, BETA_INC);
  const restarted = BETA_INC + 60_000;
  assert.equal(a.accept(20, 0, fromBeta(1, 0, { incarnation: restarted })), 'accepted', 'seq 1 of a new incarnation');
  let v = a.view(20);
  assert.equal(v.peer, 'up');
  assert.equal(v.peerIncarnation, restarted);
  const h = a.nextHeartbeat(21, 0);
  assert.equal(h.echoIncarnation, restarted);
  assert.equal(h.echoSeq, 1, 'the echo follows the new incarnation, not the old seq 501');
  // link 1 has not heard the new process yet: a late datagram of the old one must not count
  assert.equal(a.accept(22, 1, fromBeta(502, 1)), 'replayed');
  assert.equal(a.view(22).peerIncarnation, restarted);
  assert.equal(a.accept(23, 1, fromBeta(2, 1, { incarnation: restarted })), 'accepted');
  v = a.view(23);
  assert.equal(v.links[1]?.lastHeardAt, 23);
});

test('the flags of the newest accepted heartbeat are in the view', () => {
  const a = node();
  assert.equal(a.view(0).peerFlags, 0);
  a.accept(1, 0, fromBeta(1, 0, { flags: 2 }));
  assert.equal(a.view(1).peerFlags, 2);
  a.accept(2, 0, fromBeta(1, 0, { flags: 1 })); // replayed: not used
  assert.equal(a.view(2).peerFlags, 2);
});

test('bad options are refused with LivenessError', () => {
  const bad: Array<Partial<LivenessOptions>> = [
    { selfName: '' }, { peerName: 'a b' }, { peerName: 'alpha' }, { incarnation: 0 }, { incarnation: 1.5 }, { links: 0 },
    { intervalMs: 0 }, { timeoutMs: 50 }, { sentSeqsMax: 0 }, { sentSeqsMax: 2 ** 21 },
  ];
  for (const o of bad) {
    assert.throws(() => node(o), (e: unknown) => e instanceof LivenessError && e.code === 'ERR_LIVENESS_ARGUMENT', JSON.stringify(o));
  }
  assert.throws(() => node().nextHeartbeat(0, 2), LivenessError);
});
