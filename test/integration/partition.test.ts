// A partition of both node↔node links (the heartbeat link and the sync link)
// with the witness reachable from one side only (docs/cluster.md, "Leases and
// the witness"): only that side accepts writes, and the other refuses them.
// Two real node processes and a real witness on loopback; every heartbeat and
// witness datagram goes through a UDP proxy of the test's, so each path can be
// cut on its own:
//
//   alpha 127.0.0.2 ──heartbeats──▶ 127.0.0.5 ──▶ beta 127.0.0.3
//   beta  127.0.0.3 ──heartbeats──▶ 127.0.0.6 ──▶ alpha 127.0.0.2
//   alpha ──witness──▶ 127.0.0.5 ──▶ witness 127.0.0.4 (replies relayed back)
//   beta  ──witness──▶ 127.0.0.6 ──▶ witness 127.0.0.4
//
// and the sync link through the cluster's TCP proxies. The pool is exported on
// its own address, 127.0.0.10, by whichever node serves it.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { NbdClient, NbdRequestError } from '../helpers/nbd-client';
import { freePort, MiB, NODE_HOSTS, sleep, startCluster, type Cluster, type NodeName, type NodeStatus } from '../helpers/cluster';
import { startUdpProxy, type UdpProxy } from '../helpers/udp-proxy';
import { startWitness, type WitnessProcess } from '../helpers/witness-process';

const POOL_HOST = '127.0.0.10';
const WITNESS_HOST = '127.0.0.4';
/** where each node's heartbeats and witness requests leave through */
const PROXY_HOSTS: Readonly<Record<NodeName, string>> = { alpha: '127.0.0.5', beta: '127.0.0.6' };
const INTERVAL_MS = 100;
/** heartbeat timeout, and so the lease */
const TIMEOUT_MS = 600;
const SIZE = 64 * MiB;
const BLOCK = 4096;
const EIO = 5;

const other = (n: NodeName): NodeName => (n === 'alpha' ? 'beta' : 'alpha');

/** A UDP port that was free on host a moment ago. */
function freeUdpPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind({ address: host, port: 0, exclusive: true }, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** The block's content: its index and the write's sequence number, repeated. */
function pattern(index: number, seq: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  for (let at = 0; at < BLOCK; at += 8) { b.writeUInt32LE(index, at); b.writeUInt32LE(seq, at + 4); }
  return b;
}

/** NBD_CMD_DISC, and the socket destroyed if the server has not closed it within a second. */
async function closeClient(client: NbdClient): Promise<void> {
  await Promise.race([client.disconnect().catch(() => undefined), sleep(1000)]);
  client.destroy();
}

function describe(e: unknown): string {
  if (e instanceof NbdRequestError) return `NBD errno ${e.errno}`;
  return e instanceof Error ? e.message : String(e);
}

interface Attempt {
  readonly at: number;
  readonly ok: boolean;
  readonly errno: number | null;
  readonly error: string | null;
  /** which connection (1, 2, …) carried it */
  readonly connection: number;
}

/**
 * One client writing blocks 0, 1, 2, … through the pool's address, each
 * acknowledged before the next. With `reconnect`, a failed write drops the
 * connection and dials the address again (whoever serves it now).
 */
class Writer {
  readonly acked = new Map<number, number>();
  readonly attempts: Attempt[] = [];
  private seq = 0;
  private stopped = false;
  private connections = 1;
  private readonly done: Promise<void>;
  private onAttempt: ((a: Attempt) => void) | undefined;

  constructor(private client: NbdClient | undefined, private readonly port: number, private readonly reconnect: boolean) {
    this.done = this.run();
  }

  /** Resolves with the first attempt from index `from` on (default: the next one) that satisfies pred. */
  until(pred: (a: Attempt) => boolean, timeoutMs: number, what: string, from = this.attempts.length): Promise<Attempt> {
    const seen = this.attempts.slice(from).find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.onAttempt = undefined; reject(new Error(`no ${what} within ${timeoutMs} ms`)); }, timeoutMs);
      this.onAttempt = (a) => {
        if (!pred(a)) return;
        clearTimeout(timer);
        this.onAttempt = undefined;
        resolve(a);
      };
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    // a write the server never answers must not hold up the test and its cleanup
    const grace = setTimeout(() => this.client?.destroy(), 2000);
    await this.done;
    clearTimeout(grace);
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) await closeClient(client);
  }

  private record(a: Attempt): void {
    this.attempts.push(a);
    this.onAttempt?.(a);
  }

  private async run(): Promise<void> {
    const blocks = SIZE / BLOCK;
    while (!this.stopped) {
      const client = this.client;
      if (client === undefined) {
        this.client = await NbdClient.connectUntil(POOL_HOST, this.port, Date.now() + 60_000, { exportName: 'vol0', timeoutMs: 2000, stopped: () => this.stopped }).catch(() => undefined);
        if (this.client !== undefined) this.connections++;
        continue;
      }
      const index = this.seq % blocks;
      const s = ++this.seq;
      try {
        await client.write(index * BLOCK, pattern(index, s));
        this.acked.set(index, s);
        this.record({ at: Date.now(), ok: true, errno: null, error: null, connection: this.connections });
      } catch (e) {
        this.record({ at: Date.now(), ok: false, errno: e instanceof NbdRequestError ? e.errno : null, error: describe(e), connection: this.connections });
        if (this.reconnect) {
          this.client = undefined;
          await closeClient(client);
        }
        await sleep(20);
      }
    }
  }
}

interface Rig {
  readonly c: Cluster;
  readonly witness: WitnessProcess;
  readonly poolPort: number;
  /** each node's outgoing heartbeats go through hb[node] to the other node */
  readonly hb: Readonly<Record<NodeName, UdpProxy>>;
  /** each node's witness requests go through w[node] */
  readonly w: Readonly<Record<NodeName, UdpProxy>>;
}

/**
 * Both node↔node links go down, and the witness stays reachable from
 * `witnessSide` only. Synchronous: every path is cut at the same moment.
 */
function partition(r: Rig, witnessSide: NodeName): void {
  r.hb.alpha.cut();
  r.hb.beta.cut();
  r.c.cutLink();
  r.w[other(witnessSide)].cut();
}

interface WitnessNode { alone: boolean; fenced: boolean }
interface WitnessState { term: number; nodes: Partial<Record<NodeName, WitnessNode>> }

function witnessState(r: Rig): WitnessState {
  const all = JSON.parse(fs.readFileSync(path.join(r.c.dir, 'witness-state.json'), 'utf8')) as { clusters: Record<string, WitnessState> };
  const s = all.clusters[r.c.clusterId];
  assert.ok(s !== undefined, 'the witness keeps state for the cluster');
  return s;
}

function pool(s: NodeStatus): { owner: string; term: number; phase: string; reason: string | null } {
  const p = s.clusterState?.pools.find((x) => x.name === 'pool0');
  assert.ok(p !== undefined, `${s.node} lists pool0: ${JSON.stringify(s.clusterState)}`);
  return p;
}

function events(s: NodeStatus, event: string): Array<{ at: string; message: string }> {
  return (s.clusterState?.activity ?? []).filter((a) => a.event === event);
}

async function waitForPool(c: Cluster, node: NodeName, pred: (p: ReturnType<typeof pool>) => boolean, timeoutMs: number, what: string): Promise<NodeStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await c.node(node).status();
    if (pred(pool(s))) return s;
    if (Date.now() > deadline) throw new Error(`${node}: timed out after ${timeoutMs} ms waiting for ${what}: ${JSON.stringify(pool(s))}`);
    await sleep(50);
  }
}

/** Starts the proxies, the cluster and the witness, waits for alpha to serve the pool, runs fn, and always ends everything. */
async function withRig(t: TestContext, prefix: string, fn: (r: Rig) => Promise<void>): Promise<void> {
  const proxies: UdpProxy[] = [];
  let c: Cluster | undefined;
  let witness: WitnessProcess | undefined;
  try {
    const poolPort = await freePort(POOL_HOST);
    const witnessPort = await freeUdpPort(WITNESS_HOST);
    const listen = { alpha: await freeUdpPort(NODE_HOSTS.alpha), beta: await freeUdpPort(NODE_HOSTS.beta) };
    const proxy = async (host: string, target: { host: string; port: number }): Promise<UdpProxy> => {
      const p = await startUdpProxy({ host, target });
      proxies.push(p);
      return p;
    };
    const hb = {
      alpha: await proxy(PROXY_HOSTS.alpha, { host: NODE_HOSTS.beta, port: listen.beta }),
      beta: await proxy(PROXY_HOSTS.beta, { host: NODE_HOSTS.alpha, port: listen.alpha }),
    };
    const w = {
      alpha: await proxy(PROXY_HOSTS.alpha, { host: WITNESS_HOST, port: witnessPort }),
      beta: await proxy(PROXY_HOSTS.beta, { host: WITNESS_HOST, port: witnessPort }),
    };
    c = await startCluster({
      size: '64M', start: false, prefix,
      heartbeatIntervalMs: INTERVAL_MS, heartbeatTimeoutMs: TIMEOUT_MS,
      pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', nbdListen: `${POOL_HOST}:${poolPort}` }],
      extraConfig: (n) => ({
        heartbeat: {
          intervalMs: INTERVAL_MS, timeoutMs: TIMEOUT_MS,
          links: [{ listen: `${NODE_HOSTS[n]}:${listen[n]}`, peer: hb[n].address }],
        },
        // a CLAIM refused because it came a little early is tried again soon
        fencing: { policy: 'witness', witness: w[n].address, retryMs: 200 },
      }),
    });
    witness = await startWitness(c.dir, WITNESS_HOST, witnessPort, c);
    const cluster = c;
    await Promise.all(cluster.nodes.map((n) => n.start()));
    await cluster.waitForStates('PRIM', 'SECOND', 60_000);
    await waitForPool(cluster, 'alpha', (p) => p.owner === 'alpha' && p.phase === 'ACTIVE', 30_000, 'pool0 ACTIVE on alpha');
    // every path the test will cut carries traffic now, both ways where there are replies
    for (const n of ['alpha', 'beta'] as const) {
      assert.ok(hb[n].forwarded.toTarget > 0, `${n}'s heartbeats go through ${hb[n].address}`);
      assert.ok(w[n].forwarded.toTarget > 0 && w[n].forwarded.fromTarget > 0, `${n}'s witness requests and the replies go through ${w[n].address}`);
    }
    await fn({ c: cluster, witness, poolPort, hb, w });
  } catch (e) {
    if (e instanceof Error) {
      const counts = proxies.map((p) => `${p.address}: forwarded ${JSON.stringify(p.forwarded)} dropped ${JSON.stringify(p.dropped)}`).join('\n');
      e.message += `\n--- udp proxies ---\n${counts}\n${c?.logs(80) ?? ''}\n--- witness ---\n${witness?.output() ?? ''}`;
    }
    throw e;
  } finally {
    await witness?.stop();
    await c?.cleanup().catch((e: unknown) => t.diagnostic(`cleanup: ${(e as Error).message}`));
    await Promise.allSettled(proxies.map((p) => p.close()));
  }
}

test('both links cut, the witness reachable from the primary only: alpha goes on alone, beta never takes over', { timeout: 60_000 }, async (t) => {
  await withRig(t, 'tandem-partition-primary-', async (r) => {
    const { c } = r;
    const before = witnessState(r);
    const client = await NbdClient.connectUntil(POOL_HOST, r.poolPort, Date.now() + 10_000, { exportName: 'vol0', timeoutMs: 2000 });
    const writer = new Writer(client, r.poolPort, false);
    try {
      await sleep(1000);
      assert.ok(writer.acked.size > 50, `only ${writer.acked.size} writes acknowledged before the cut`);
      assert.ok(writer.attempts.every((a) => a.ok), 'no write failed before the cut');

      const cutAt = Date.now();
      partition(r, 'alpha');
      // long enough for beta to see alpha down, claim, and be refused several times,
      // and for alpha's lease to have run out many times over had only heartbeats renewed it
      const holdMs = 6 * TIMEOUT_MS + 2000;
      const betaSeen = new Set<string>();
      while (Date.now() < cutAt + holdMs) {
        const p = pool(await c.beta.status());
        betaSeen.add(`${p.owner}/${p.phase}`);
        await sleep(100);
      }
      await writer.stop();

      const after = writer.attempts.filter((a) => a.at >= cutAt);
      const failed = after.filter((a) => !a.ok);
      assert.deepEqual(failed, [], 'alpha accepted every write after the cut');
      assert.ok(after.length > 50, `only ${after.length} writes after the cut`);
      const last = after[after.length - 1] as Attempt;
      assert.ok(last.at > cutAt + holdMs - 1000, `writes went on until the end (the last one ${last.at - cutAt} ms after the cut)`);
      let slowest = 0;
      for (let i = 1; i < writer.attempts.length; i++) {
        const a = writer.attempts[i] as Attempt;
        if (a.at >= cutAt) slowest = Math.max(slowest, a.at - Math.max(cutAt, (writer.attempts[i - 1] as Attempt).at));
      }
      t.diagnostic(`after the cut: ${after.length} writes acknowledged by alpha in ${holdMs} ms, none refused; the longest wait for one: ${slowest} ms`);

      // alpha: PRIMARY alone, the pool ACTIVE, after the witness recorded it
      const sa = await c.alpha.status();
      assert.deepEqual({ owner: pool(sa).owner, phase: pool(sa).phase }, { owner: 'alpha', phase: 'ACTIVE' });
      const va = sa.volumes.find((v) => v.name === 'vol0');
      assert.equal(va?.role, 'PRIMARY');
      assert.equal(va?.state, 'ALONE');
      assert.equal(va?.suspended, null);
      assert.ok(events(sa, 'alone-granted').length > 0, 'the witness granted alpha ALONE');
      assert.equal(events(sa, 'suspended').length, 0, 'alpha never suspended the pool');

      // beta: saw alpha go down, its CLAIMs got no answer, and it never took the pool
      const sb = await c.beta.status();
      assert.equal(sb.clusterState?.peer.up, false, 'beta sees alpha down');
      const refused = events(sb, 'claim-refused');
      assert.ok(refused.length > 0, 'beta claimed and was refused');
      assert.equal(events(sb, 'takeover').length, 0, 'beta never took over');
      assert.equal(pool(sb).owner, 'alpha');
      assert.notEqual(pool(sb).phase, 'ACTIVE');
      assert.ok(![...betaSeen].some((s) => s.startsWith('beta/') || s.endsWith('/ACTIVE')), `beta never owned nor served the pool: ${[...betaSeen].join(', ')}`);
      assert.equal(sb.volumes.find((v) => v.name === 'vol0')?.role, 'SECONDARY');
      assert.ok(r.w.beta.dropped.toTarget > 0, 'beta kept trying the witness');
      t.diagnostic(`beta: ${refused.length} CLAIMs refused (${refused[0]?.message ?? ''}); pool states seen on beta: ${[...betaSeen].join(', ')}`);

      // the witness: alpha alone, nobody fenced, no new term
      const ws = witnessState(r);
      assert.equal(ws.nodes.alpha?.alone, true, 'the witness recorded alpha alone');
      assert.equal(ws.nodes.alpha?.fenced, false);
      assert.notEqual(ws.nodes.beta?.fenced, true);
      assert.equal(ws.term, before.term, 'no takeover at the witness');

      // a client writing to beta fails: beta exports nothing
      await assert.rejects(NbdClient.connect(c.beta.addr.nbd.host, c.beta.addr.nbd.port, { exportName: 'vol0', timeoutMs: 2000 }),
        'nothing answers on beta\'s own NBD address');
      // while the pool's address is still served by alpha, writes and all
      const writesBefore = (await c.alpha.volume()).counters.writes;
      const fresh = await NbdClient.connectUntil(POOL_HOST, r.poolPort, Date.now() + 5000, { exportName: 'vol0', timeoutMs: 2000 });
      assert.ok(fresh !== undefined);
      try {
        await fresh.write(0, pattern(0, 0xffff_ffff));
        assert.ok((await fresh.read(0, BLOCK)).equals(pattern(0, 0xffff_ffff)));
      } finally {
        await closeClient(fresh);
      }
      assert.equal((await c.alpha.volume()).counters.writes, writesBefore + 1, 'alpha took the new connection\'s write');
    } finally {
      await writer.stop();
    }
  });
});

test('both links cut, the witness reachable from the secondary only: alpha refuses writes, then beta takes the pool over', { timeout: 60_000 }, async (t) => {
  await withRig(t, 'tandem-partition-secondary-', async (r) => {
    const { c } = r;
    const before = witnessState(r);
    const client = await NbdClient.connectUntil(POOL_HOST, r.poolPort, Date.now() + 10_000, { exportName: 'vol0', timeoutMs: 2000 });
    const writer = new Writer(client, r.poolPort, true);
    try {
      await sleep(1000);
      assert.ok(writer.acked.size > 50, `only ${writer.acked.size} writes acknowledged before the cut`);
      assert.ok(writer.attempts.every((a) => a.ok), 'no write failed before the cut');

      const refusal = writer.until((a) => !a.ok, 10_000, 'refused write on alpha');
      const cutAt = Date.now();
      partition(r, 'beta');
      const firstRefused = await refusal;
      const refusedMs = firstRefused.at - cutAt;
      // the first refusal comes through the connection alpha served before the cut, as EIO
      assert.equal(firstRefused.connection, 1, 'the first refused write was alpha\'s');
      assert.equal(firstRefused.errno, EIO, `alpha answered EIO (got ${firstRefused.error ?? ''})`);
      // within the lease (= the heartbeat timeout), plus room for a loaded machine
      assert.ok(refusedMs <= TIMEOUT_MS + 2000, `alpha refused writes only ${refusedMs} ms after the cut`);

      const accepted = await writer.until((a) => a.ok && a.connection > 1, 30_000, 'accepted write through a new connection (beta)',
        writer.attempts.indexOf(firstRefused) + 1);
      const acceptedMs = accepted.at - cutAt;
      await writer.stop();
      t.diagnostic(`cut to the first refused write on alpha: ${refusedMs} ms (${firstRefused.error ?? ''}); cut to beta's first accepted write: ${acceptedMs} ms`);

      // beta owns and serves the pool at a new term; alpha suspended it before beta took over
      const sb = await c.beta.status();
      assert.deepEqual({ owner: pool(sb).owner, phase: pool(sb).phase }, { owner: 'beta', phase: 'ACTIVE' });
      assert.ok(pool(sb).term > 1, `a takeover bumps the term (${pool(sb).term})`);
      assert.equal(sb.volumes.find((v) => v.name === 'vol0')?.role, 'PRIMARY');
      assert.ok(events(sb, 'claim-granted').length > 0, 'the witness granted beta\'s CLAIM');
      const sa = await c.alpha.status();
      assert.equal(pool(sa).phase, 'SUSPENDED', `alpha's pool is suspended: ${JSON.stringify(pool(sa))}`);
      assert.notEqual(sa.volumes.find((v) => v.name === 'vol0')?.suspended ?? null, null);
      const suspendedAt = events(sa, 'suspended')[0]?.at;
      const takeoverAt = events(sb, 'takeover')[0]?.at;
      assert.ok(suspendedAt !== undefined && takeoverAt !== undefined, 'both decisions are logged');
      assert.ok(Date.parse(suspendedAt) <= Date.parse(takeoverAt), `alpha suspended (${suspendedAt}) before beta took over (${takeoverAt})`);
      t.diagnostic(`alpha suspended ${Date.parse(suspendedAt) - cutAt} ms after the cut, beta took over ${Date.parse(takeoverAt) - cutAt} ms after it`);
      // until beta took over, only alpha could have answered: it accepted nothing after its first refusal
      const between = writer.attempts.filter((a) => a.ok && a.at > firstRefused.at && a.at <= Date.parse(takeoverAt));
      assert.deepEqual(between, [], 'no write was accepted between alpha\'s first refusal and beta\'s takeover');
      assert.ok(accepted.at > Date.parse(takeoverAt), 'the first write accepted again came after the takeover');

      // the witness fenced alpha at a new term
      const ws = witnessState(r);
      assert.equal(ws.nodes.alpha?.fenced, true, 'the witness fenced alpha');
      assert.notEqual(ws.nodes.alpha?.alone, true, 'alpha never got ALONE');
      assert.ok(ws.term > before.term, 'the witness moved to a new term');

      // every write any client saw acknowledged is on beta, read back through the pool's address
      const reader = await NbdClient.connectUntil(POOL_HOST, r.poolPort, Date.now() + 5000, { exportName: 'vol0', timeoutMs: 2000 });
      assert.ok(reader !== undefined);
      try {
        for (const [index, s] of writer.acked) {
          const got = await reader.read(index * BLOCK, BLOCK);
          assert.ok(got.equals(pattern(index, s)), `block ${index}: acknowledged write ${s} is missing (holds seq ${got.readUInt32LE(4)})`);
        }
      } finally {
        await closeClient(reader);
      }
      t.diagnostic(`${writer.acked.size} acknowledged blocks verified on beta`);
    } finally {
      await writer.stop();
    }
  });
});
