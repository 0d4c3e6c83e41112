// The witness's rules (docs/cluster.md, "Leases and the witness"), each with
// explicit clock values: the witness starts at T0 and every lease is LEASE.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  handle, persistedView, startWitnessState, type WitnessDecision, type WitnessState,
} from '../../src/cluster/witness-rules';
import type { WitnessClearKind, WitnessReason, WitnessRequestMessage, WitnessRequestType } from '../../src/protocol/witness/codec';

const CLUSTER = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const CID = CLUSTER.toString('hex');
const T0 = 10_000;
const LEASE = 1000;

interface Ask {
  readonly subject?: string;
  readonly clear?: WitnessClearKind;
  readonly id?: bigint;
  readonly leaseMs?: number;
  readonly clusterId?: Buffer;
}

/** One witness, its state threaded through the calls; every request gets the next id of its sender unless told. */
class Witness {
  state: WitnessState;
  last: WitnessDecision | undefined;
  private readonly ids = new Map<string, bigint>();

  constructor(state: WitnessState = startWitnessState(T0, [CID])) {
    this.state = state;
  }

  ask(now: number, type: WitnessRequestType, sender: string, a: Ask = {}): WitnessDecision {
    const id = a.id ?? (this.ids.get(sender) ?? 1000n) + 1n;
    this.ids.set(sender, id > (this.ids.get(sender) ?? 0n) ? id : (this.ids.get(sender) as bigint));
    const leased = type === 'renew' || type === 'claim' || type === 'alone';
    const req: WitnessRequestMessage = {
      type, clusterId: a.clusterId ?? CLUSTER, requestId: id, leaseMs: a.leaseMs ?? (leased ? LEASE : 0),
      sender, subject: a.subject ?? '', clear: a.clear ?? null,
    };
    const d = handle(this.state, now, req);
    this.state = d.state;
    this.last = d;
    return d;
  }

  /** asserts the answer and returns the term */
  expect(now: number, type: WitnessRequestType, sender: string, want: WitnessReason, a: Ask = {}): number {
    const d = this.ask(now, type, sender, a);
    assert.equal(d.reply.reason, want, `${type} from ${sender}${a.subject === undefined ? '' : ` about ${a.subject}`} at ${now}`);
    assert.equal(d.reply.granted, want === 'ok');
    return d.reply.term;
  }

  node(name: string): { alone: boolean; fenced: boolean } {
    const n = this.state.clusters.get(CID)?.nodes.get(name);
    assert.ok(n !== undefined, `node ${name} unknown`);
    return { alone: n.alone, fenced: n.fenced };
  }

  term(): number {
    return this.state.clusters.get(CID)?.term ?? -1;
  }
}

/** A witness that has been up for a while, with alpha and beta renewing at `at`. */
function running(at = T0 + 5 * LEASE): Witness {
  const w = new Witness();
  w.expect(at, 'renew', 'alpha', 'ok');
  w.expect(at, 'renew', 'beta', 'ok');
  return w;
}

test('RENEW keeps a CLAIM against the renewing node refused (peer-alive) until leaseMs after its last RENEW', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  w.expect(t + 500, 'renew', 'alpha', 'ok');
  w.expect(t + 600, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
  w.expect(t + 500 + LEASE - 1, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
  assert.equal(w.node('alpha').fenced, false);
  assert.equal(w.term(), 0);
  // a renew just before the lease ends pushes it out again
  w.expect(t + 500 + LEASE - 1, 'renew', 'alpha', 'ok');
  w.expect(t + 500 + LEASE + 10, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
});

test('CLAIM is granted once leaseMs passed since the last RENEW; the claimed node is fenced, the term bumped and persisted', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  const d = w.ask(t + LEASE, 'claim', 'beta', { subject: 'alpha' });
  assert.deepEqual(d.reply, { granted: true, reason: 'ok', term: 1 });
  assert.equal(d.persist, true);
  assert.deepEqual(w.node('alpha'), { alone: false, fenced: true });
  assert.deepEqual(w.node('beta'), { alone: false, fenced: false });
  assert.equal(persistedView(w.state).get(CID)?.nodes.get('alpha')?.fenced, true);
  assert.equal(persistedView(w.state).get(CID)?.term, 1);
  // the fenced node may not renew, go alone or claim; QUERY still answers
  w.expect(t + LEASE + 1, 'renew', 'alpha', 'fenced');
  assert.equal(w.last?.persist, false, 'a refused RENEW is not persisted');
  w.expect(t + LEASE + 2, 'alone', 'alpha', 'fenced');
  assert.equal(w.node('alpha').alone, false);
  w.expect(t + 10 * LEASE, 'claim', 'alpha', 'fenced', { subject: 'beta' });
  assert.equal(w.node('beta').fenced, false);
  assert.equal(w.expect(t + 10 * LEASE, 'query', 'alpha', 'ok'), 1);
  // a repeated claim (its grant got lost) is granted again, without another term
  assert.equal(w.expect(t + 10 * LEASE, 'claim', 'beta', 'ok', { subject: 'alpha' }), 1);
  // refused RENEWs were no renewals: once alpha is cleared, it can be claimed at once
  w.expect(t + 10 * LEASE, 'clear', 'beta', 'ok', { subject: 'alpha', clear: 'fenced' });
  assert.equal(w.expect(t + 10 * LEASE + 1, 'claim', 'beta', 'ok', { subject: 'alpha' }), 2);
});

test('the claimer\'s renewal clock is refreshed by its CLAIM', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  w.expect(t + LEASE, 'claim', 'beta', 'ok', { subject: 'alpha' });
  // beta last renewed at t, but its claim at t + LEASE counts: still alive at t + LEASE + LEASE - 1
  w.expect(t + LEASE, 'clear', 'beta', 'ok', { subject: 'alpha', clear: 'fenced' });
  w.expect(t + 2 * LEASE - 1, 'claim', 'alpha', 'peer-alive', { subject: 'beta' });
  w.expect(t + 2 * LEASE, 'claim', 'alpha', 'ok', { subject: 'beta' });
});

test('ALONE: the peer\'s CLAIM is refused peer-alone, even long after the lease; CLEAR alone restores it', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  const d = w.ask(t + 100, 'alone', 'alpha');
  assert.equal(d.reply.granted, true);
  assert.equal(d.persist, true);
  assert.deepEqual(w.node('alpha'), { alone: true, fenced: false });
  w.expect(t + 100 + 50 * LEASE, 'claim', 'beta', 'peer-alone', { subject: 'alpha' });
  assert.equal(w.node('alpha').fenced, false);
  // ALONE also renews: right after CLEAR, alpha still counts as alive from its ALONE
  const u = t + 100 + 60 * LEASE;
  w.expect(u, 'alone', 'alpha', 'ok');
  w.expect(u + 1, 'clear', 'alpha', 'ok', { subject: 'alpha', clear: 'alone' });
  assert.deepEqual(w.node('alpha'), { alone: false, fenced: false });
  w.expect(u + LEASE - 1, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
  w.expect(u + LEASE, 'claim', 'beta', 'ok', { subject: 'alpha' });
});

test('CLEAR fenced restores the fenced node: its RENEW is granted again; either node may send it', () => {
  for (const clearer of ['alpha', 'beta']) {
    const t = T0 + 5 * LEASE;
    const w = running(t);
    w.expect(t + LEASE, 'claim', 'beta', 'ok', { subject: 'alpha' });
    w.expect(t + LEASE + 1, 'renew', 'alpha', 'fenced');
    const d = w.ask(t + LEASE + 2, 'clear', clearer, { subject: 'alpha', clear: 'fenced' });
    assert.equal(d.reply.granted, true, clearer);
    assert.equal(d.persist, true);
    assert.deepEqual(w.node('alpha'), { alone: false, fenced: false }, clearer);
    w.expect(t + LEASE + 3, 'renew', 'alpha', 'ok');
    assert.equal(w.term(), 1, 'CLEAR does not change the term');
  }
});

test('CLEAR of one flag leaves the other; CLEAR about a node never heard of is granted and learns nothing', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  w.expect(t, 'alone', 'beta', 'ok');
  w.expect(t + 1, 'clear', 'alpha', 'ok', { subject: 'beta', clear: 'fenced' });
  assert.deepEqual(w.node('beta'), { alone: true, fenced: false });
  const fresh = new Witness();
  fresh.expect(T0, 'clear', 'alpha', 'ok', { subject: 'beta', clear: 'alone' });
  assert.deepEqual([...(fresh.state.clusters.get(CID)?.nodes.keys() ?? [])], ['alpha']);
});

test('stale-request: a request id not above the last one from that sender is refused and changes nothing', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  w.expect(t + 1, 'renew', 'alpha', 'ok', { id: 5000n });
  const before = w.state;
  for (const id of [5000n, 4999n, 0n]) {
    const d = w.ask(t + 2, 'renew', 'alpha', { id });
    assert.deepEqual(d.reply, { granted: false, reason: 'stale-request', term: 0 }, `id ${id}`);
    assert.equal(d.state, before);
    assert.equal(d.persist, false);
  }
  // a replayed CLAIM cannot fence anybody: its id is used up even though it was refused
  w.expect(t + 3, 'claim', 'beta', 'peer-alive', { subject: 'alpha', id: 7000n });
  w.expect(t + 10 * LEASE, 'claim', 'beta', 'stale-request', { subject: 'alpha', id: 7000n });
  assert.equal(w.node('alpha').fenced, false);
  // ids are per sender: beta's ids do not make alpha's stale
  w.expect(t + 10 * LEASE, 'renew', 'alpha', 'ok', { id: 5001n });
  w.expect(t + 10 * LEASE, 'renew', 'alpha', 'stale-request', { id: 5001n });
});

test('restart grace: no CLAIM is granted within leaseMs of the witness\'s start, for known and unknown nodes alike', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  w.expect(t + 3 * LEASE, 'alone', 'beta', 'ok');
  w.expect(t + 3 * LEASE, 'clear', 'beta', 'ok', { subject: 'beta', clear: 'alone' });
  // the witness restarts at T1 with what it persisted; alpha has not renewed for ages
  const T1 = t + 100 * LEASE;
  const restarted = new Witness(startWitnessState(T1, [CID], persistedView(w.state)));
  restarted.expect(T1, 'claim', 'beta', 'stale-request', { subject: 'alpha', id: 1002n });
  restarted.expect(T1 + 1, 'claim', 'beta', 'peer-alive', { subject: 'alpha', id: 2000n });
  restarted.expect(T1 + LEASE - 1, 'claim', 'beta', 'peer-alive', { subject: 'alpha', id: 2001n });
  restarted.expect(T1 + LEASE, 'claim', 'beta', 'ok', { subject: 'alpha', id: 2002n });

  // a brand-new witness knows no node, and still waits a lease (the claimer's) before fencing the unknown one
  const fresh = new Witness();
  fresh.expect(T0 + 10, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
  fresh.expect(T0 + LEASE - 1, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
  const d = fresh.ask(T0 + LEASE, 'claim', 'beta', { subject: 'alpha' });
  assert.deepEqual(d.reply, { granted: true, reason: 'ok', term: 1 });
  assert.deepEqual(d.learned, ['alpha']);
  assert.equal(fresh.node('alpha').fenced, true);
});

test('the longer lease counts: a node that declared a long lease is not claimed at the end of the claimer\'s short one', () => {
  const t = T0 + 5 * LEASE;
  const w = new Witness();
  w.expect(t, 'renew', 'alpha', 'ok', { leaseMs: 3 * LEASE });
  w.expect(t + LEASE, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
  w.expect(t + 3 * LEASE - 1, 'claim', 'beta', 'peer-alive', { subject: 'alpha' });
  w.expect(t + 3 * LEASE, 'claim', 'beta', 'ok', { subject: 'alpha' });
});

test('fenced, alone and term survive a restart, and so do the request ids of CLAIM, ALONE and CLEAR', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  w.expect(t + LEASE, 'claim', 'beta', 'ok', { subject: 'alpha', id: 3000n });
  w.expect(t + LEASE, 'alone', 'beta', 'ok', { id: 3001n });
  const T1 = t + 10 * LEASE;
  const r = new Witness(startWitnessState(T1, [CID], persistedView(w.state)));
  assert.deepEqual(r.node('alpha'), { alone: false, fenced: true });
  assert.deepEqual(r.node('beta'), { alone: true, fenced: false });
  assert.equal(r.term(), 1);
  r.expect(T1 + 1, 'renew', 'alpha', 'fenced', { id: 9000n });
  r.expect(T1 + 2, 'alone', 'beta', 'stale-request', { id: 3001n });
  r.expect(T1 + 3, 'claim', 'beta', 'stale-request', { subject: 'alpha', id: 3000n });
  // persisted leases restore the node's own lease, not just the claimer's
  assert.equal(persistedView(r.state).get(CID)?.nodes.get('beta')?.leaseMs, LEASE);
});

test('what is persisted: CLAIM, ALONE, CLEAR always; RENEW and QUERY only when they learn a node or change its lease', () => {
  const t = T0 + 5 * LEASE;
  const w = new Witness();
  assert.equal(w.ask(t, 'renew', 'alpha').persist, true, 'first contact');
  assert.equal(w.ask(t + 1, 'renew', 'alpha').persist, false);
  assert.equal(w.ask(t + 2, 'query', 'alpha').persist, false);
  assert.equal(w.ask(t + 3, 'renew', 'alpha', { leaseMs: 2 * LEASE }).persist, true, 'lease changed');
  assert.equal(w.ask(t + 4, 'query', 'beta').persist, true, 'first contact by QUERY');
  assert.equal(w.ask(t + 5, 'claim', 'beta', { subject: 'alpha' }).persist, true, 'refused claim');
  assert.equal(w.ask(t + 6, 'alone', 'alpha').persist, true);
  assert.equal(w.ask(t + 7, 'alone', 'alpha').persist, true, 'repeated ALONE: its id is made durable');
  assert.equal(w.ask(t + 8, 'clear', 'beta', { subject: 'alpha', clear: 'fenced' }).persist, true);
});

test('a third node name is refused bad-request, as sender or as subject, and changes nothing', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  const before = w.state;
  for (const type of ['renew', 'query', 'alone'] as const) {
    const d = w.ask(t + 1, type, 'gamma');
    assert.deepEqual(d.reply, { granted: false, reason: 'bad-request', term: 0 }, type);
    assert.equal(d.state, before);
    assert.equal(d.persist, false);
  }
  w.expect(t + 10 * LEASE, 'claim', 'beta', 'bad-request', { subject: 'gamma' });
  w.expect(t + 10 * LEASE, 'clear', 'beta', 'bad-request', { subject: 'gamma', clear: 'alone' });
  assert.deepEqual([...(w.state.clusters.get(CID)?.nodes.keys() ?? [])].sort(), ['alpha', 'beta']);
  // with one node known, a newcomer that names a third as its subject is refused too
  const one = new Witness();
  one.expect(T0, 'renew', 'alpha', 'ok');
  one.expect(T0 + 10 * LEASE, 'claim', 'beta', 'bad-request', { subject: 'gamma' });
});

test('a CLAIM against the sender itself is refused bad-request, and changes nothing', () => {
  const t = T0 + 5 * LEASE;
  const w = running(t);
  const before = w.state;
  const d = w.ask(t + 10 * LEASE, 'claim', 'alpha', { subject: 'alpha' });
  assert.deepEqual(d.reply, { granted: false, reason: 'bad-request', term: 0 });
  assert.equal(d.state, before);
  assert.equal(w.node('alpha').fenced, false);
});

test('a cluster the witness does not serve is refused bad-request; clusters are independent', () => {
  const other = Buffer.from('ffeeddccbbaa99887766554433221100', 'hex');
  const w = new Witness(startWitnessState(T0, [CID, other.toString('hex')]));
  w.expect(T0 + 10 * LEASE, 'renew', 'alpha', 'ok');
  w.expect(T0 + 10 * LEASE, 'renew', 'beta', 'ok');
  // the same names in another cluster are other nodes: a claim there fences nobody here
  w.expect(T0 + 20 * LEASE, 'claim', 'beta', 'ok', { subject: 'alpha', clusterId: other });
  assert.equal(w.node('alpha').fenced, false);
  assert.equal(w.term(), 0);
  assert.equal(w.state.clusters.get(other.toString('hex'))?.term, 1);
  w.expect(T0, 'renew', 'alpha', 'bad-request', { clusterId: Buffer.alloc(16, 7) });
});

test('racing claims: A claims B and B claims A at the same now, in either order: at most one is granted', () => {
  for (const first of ['alpha', 'beta']) {
    const second = first === 'alpha' ? 'beta' : 'alpha';
    for (const gap of [LEASE - 1, LEASE, 5 * LEASE]) {
      const t = T0 + 5 * LEASE;
      const w = running(t);
      const now = t + gap;
      const a = w.ask(now, 'claim', first, { subject: second });
      const b = w.ask(now, 'claim', second, { subject: first });
      const grants = [a, b].filter((d) => d.reply.granted).length;
      assert.ok(grants <= 1, `${first} first, gap ${gap}: ${a.reply.reason} / ${b.reply.reason}`);
      if (gap >= LEASE) {
        assert.equal(a.reply.granted, true, `${first} first, gap ${gap}`);
        assert.equal(b.reply.reason, 'fenced');
        assert.equal(w.node(first).fenced, false);
        assert.equal(w.node(second).fenced, true);
      } else {
        assert.equal(grants, 0);
      }
    }
  }
});
