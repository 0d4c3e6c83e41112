// `tandem witness` as a real process, with two WitnessClients as the nodes
// alpha and beta: leases, a claim, fencing, a kill -9 and restart (the
// persisted flags and term survive, and no claim is granted during the
// restart grace), datagrams that must be dropped or refused, and bad configs.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { WitnessClient, type WitnessReply } from '../../src/cluster/witness-client';
import {
  decodeWitnessReply, encodeWitnessReply, encodeWitnessRequest, singleClusterKey, witnessKey, type WitnessReplyMessage,
} from '../../src/protocol/witness/codec';
import { tandemBin, tempDir } from '../helpers/serve-process';

// long enough that three round trips after a restart fit in the grace even on a loaded host
const LEASE = 1000;
const WITNESS_HOST = '127.0.0.4';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Exit { readonly code: number | null; readonly signal: NodeJS.Signals | null }

interface WitnessProcess {
  readonly child: ChildProcess;
  readonly port: number;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<Exit>;
  /** SIGTERM and wait for the exit */
  stop(): Promise<Exit>;
  /** SIGKILL and wait */
  kill9(): Promise<void>;
}

/** Every witness process a test started, so cleanup can kill exactly those. */
const started: WitnessProcess[] = [];

function spawnWitness(args: string[]): { child: ChildProcess; out: { stdout: string; stderr: string }; exited: Promise<Exit> } {
  const child = spawn(process.execPath, [tandemBin, 'witness', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout?.on('data', (d: Buffer) => { out.stdout += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { out.stderr += d.toString(); });
  const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, out, exited };
}

async function startWitness(listen: string, config: string, timeoutMs = 15_000): Promise<WitnessProcess> {
  const { child, out, exited } = spawnWitness(['--listen', listen, '--config', config]);
  let done = false;
  void exited.then(() => { done = true; });
  const p: WitnessProcess = {
    child,
    port: 0,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    exited,
    stop: async () => { if (!done) child.kill('SIGTERM'); return exited; },
    kill9: async () => { if (!done) child.kill('SIGKILL'); await exited; },
  };
  started.push(p);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tandem witness did not start:\n${out.stderr}`)), timeoutMs);
    child.stdout?.on('data', () => {
      const m = /listening on (\S+):(\d+)/.exec(out.stdout);
      if (m !== null) { clearTimeout(timer); resolve(Number(m[2])); }
    });
    void exited.then((e) => { clearTimeout(timer); reject(new Error(`tandem witness exited ${e.code ?? e.signal}:\n${out.stderr}`)); });
  });
  return { ...p, port };
}

/** Runs `tandem witness ARGS` for a case that should exit by itself. */
async function witnessOnce(args: string[], timeoutMs = 15_000): Promise<Exit & { stdout: string; stderr: string }> {
  const { child, out, exited } = spawnWitness(args);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const e = await exited;
    return { ...e, ...out };
  } finally {
    clearTimeout(timer);
  }
}

async function bound(host: string): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, host, () => { s.off('error', reject); resolve(); });
  });
  return s;
}

function writeConfig(dir: string, clusters: Array<{ id: Buffer; secret: Buffer }>, extra: Record<string, unknown> = {}): string {
  const file = path.join(dir, 'witness.json');
  fs.writeFileSync(file, JSON.stringify({
    stateFile: 'witness-state.json',
    clusters: clusters.map((c) => ({ id: c.id.toString('hex'), secret: c.secret.toString('hex') })),
    ...extra,
  }));
  return file;
}

function assertReply(r: WitnessReply, granted: boolean, reason: string, term?: number, context = ''): void {
  assert.equal(r.reason, reason, context);
  assert.equal(r.granted, granted, context);
  if (term !== undefined) assert.equal(r.term, term, context);
}

/** The value of key=N in the witness's last "stopped" log line. */
function counter(log: string, key: string): number | undefined {
  const line = log.split('\n').filter((l) => / stopped /.test(l)).pop() ?? '';
  const m = new RegExp(`\\s${key.replace('-', '\\-')}=(\\d+)`).exec(line);
  return m === null ? undefined : Number(m[1]);
}

function show(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
}

/** The next datagram on a socket within ms, or undefined. */
function nextDatagram(s: dgram.Socket, ms: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const onMessage = (m: Buffer): void => { clearTimeout(timer); resolve(m); };
    const timer = setTimeout(() => { s.off('message', onMessage); resolve(undefined); }, ms);
    s.once('message', onMessage);
  });
}

test('witness process: lease, claim, fencing, kill -9 and restart, dropped and refused datagrams', async (t) => {
  const tmp = tempDir('tandem-witness-');
  const sockets: dgram.Socket[] = [];
  const clients: WitnessClient[] = [];
  t.after(async () => {
    for (const c of clients) c.close();
    for (const s of sockets) s.close();
    for (const p of started.splice(0)) await p.kill9();
    tmp.cleanup();
  });

  const cluster = { id: crypto.randomBytes(16), secret: crypto.randomBytes(32) };
  const config = writeConfig(tmp.dir, [cluster]);
  const stateFile = path.join(tmp.dir, 'witness-state.json');
  let w = await startWitness(`${WITNESS_HOST}:0`, config);
  const port = w.port;
  assert.ok(fs.existsSync(stateFile), 'the state file is written at start');

  const client = async (name: string, host: string, incarnation: number): Promise<WitnessClient> => {
    const socket = await bound(host);
    sockets.push(socket);
    const c = new WitnessClient({
      clusterId: cluster.id, secret: cluster.secret, nodeName: name, incarnation, leaseMs: LEASE,
      address: { host: WITNESS_HOST, port }, timeoutMs: 2000, socket,
    });
    socket.on('message', (m, r) => { c.handle(m, r); });
    clients.push(c);
    return c;
  };
  const incarnation = Date.now();
  const alpha = await client('alpha', '127.0.0.2', incarnation);
  const beta = await client('beta', '127.0.0.3', incarnation + 1);

  // both renew; while alpha keeps renewing, beta's claim is refused
  assertReply(await alpha.request('renew'), true, 'ok', 0, 'alpha renew');
  assertReply(await beta.request('renew'), true, 'ok', 0, 'beta renew');
  assertReply(await alpha.request('renew'), true, 'ok', 0, 'alpha renew again');
  assertReply(await beta.request('claim', 'alpha'), false, 'peer-alive', 0, 'claim while alpha renews');
  assertReply(await alpha.request('claim', 'alpha'), false, 'bad-request', 0, 'claim against oneself');

  // alpha falls silent: after its lease, beta's claim is granted and alpha is fenced
  await sleep(LEASE + 100);
  const claimed = await beta.request('claim', 'alpha');
  assertReply(claimed, true, 'ok', 1, 'claim after the lease');
  assertReply(await alpha.request('renew'), false, 'fenced', 1, 'fenced alpha renews');
  assertReply(await alpha.request('alone'), false, 'fenced', 1, 'fenced alpha goes alone');
  assertReply(await alpha.request('claim', 'beta'), false, 'fenced', 1, 'fenced alpha claims');
  assert.match(w.stderr(), /granted cluster=[0-9a-f]{32} type=claim sender=beta term=1 subject=alpha/, w.stderr());
  type OnDisk = { clusters: Record<string, { term: number; nodes: Record<string, { fenced: boolean; lastRequestId: string }> }> };
  const onDisk = (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as OnDisk).clusters[cluster.id.toString('hex')];
  assert.equal(onDisk?.term, 1);
  assert.equal(onDisk?.nodes.alpha?.fenced, true);
  assert.equal(onDisk?.nodes.beta?.fenced, false);
  // request ids start at incarnation × 1000 and grow by one per request (alpha's refused claim
  // against itself used none up; its last, the fenced CLAIM, was its sixth request)
  assert.equal(onDisk?.nodes.alpha?.lastRequestId, String(BigInt(incarnation) * 1000n + 5n));
  assert.equal(onDisk?.nodes.beta?.lastRequestId, String(BigInt(incarnation + 1) * 1000n + 2n));

  // kill -9 and restart on the same address: fenced flag and term survive
  await w.kill9();
  const timeout = await alpha.request('query');
  assertReply(timeout, false, 'timeout', 0, 'no witness');
  w = await startWitness(`${WITNESS_HOST}:${port}`, config);
  const restartedAt = Date.now();
  assertReply(await beta.request('query'), true, 'ok', 1, 'term after restart');
  assertReply(await alpha.request('renew'), false, 'fenced', 1, 'alpha still fenced after restart');
  // restart grace: alpha has been silent for long, but the restarted witness cannot know that
  const graceClaim = await beta.request('claim', 'alpha');
  assert.ok(Date.now() - restartedAt < LEASE, 'the claim did not reach the witness within its grace; the host is too slow for this test');
  assertReply(graceClaim, false, 'peer-alive', 1, 'claim within the restart grace');
  await sleep(LEASE + 100);
  assertReply(await beta.request('claim', 'alpha'), true, 'ok', 1, 'claim after the grace: already fenced, no new term');
  // alpha is back and in sync: it clears its own flag and renews again
  assertReply(await alpha.request('clear-fenced'), true, 'ok', 1, 'clear fenced');
  assertReply(await alpha.request('renew'), true, 'ok', 1, 'alpha renews after the clear');

  // a reply from anywhere but the witness's address is not taken
  const impostor = await bound('127.0.0.5');
  sockets.push(impostor);
  const pending = alpha.request('query');
  const fake: WitnessReplyMessage = {
    granted: true, reason: 'ok', clusterId: cluster.id, requestId: BigInt(incarnation) * 1000n, term: 99, sender: 'witness',
  };
  const fakeBytes = encodeWitnessReply(fake, witnessKey(cluster.secret, cluster.id));
  assert.equal(alpha.handle(fakeBytes, { address: '127.0.0.5', port }), false);
  assert.equal(alpha.handle(fakeBytes, { address: WITNESS_HOST, port }), false, 'a valid reply for no pending request');
  assert.equal(alpha.dropped.notFromWitness, 1);
  assert.equal(alpha.dropped.unexpected, 1);
  assertReply(await pending, true, 'ok', 1, 'the real reply still arrives');

  // datagrams that must be dropped without a reply, and a replay that must be refused
  const raw = await bound('127.0.0.2');
  sockets.push(raw);
  const key = witnessKey(cluster.secret, cluster.id);
  const send = (b: Buffer): Promise<Buffer | undefined> => {
    const reply = nextDatagram(raw, 400);
    raw.send(b, port, WITNESS_HOST);
    return reply;
  };
  assert.equal(await send(Buffer.from('GET / HTTP/1.0\r\n\r\n')), undefined, 'garbage is dropped');
  const other = { id: crypto.randomBytes(16), secret: crypto.randomBytes(32) };
  const query = (clusterId: Buffer, requestId: bigint, k: Buffer): Buffer =>
    encodeWitnessRequest({ type: 'query', clusterId, requestId, leaseMs: 0, sender: 'alpha', subject: '', clear: null }, k);
  assert.equal(await send(query(other.id, 1n, witnessKey(other.secret, other.id))), undefined, 'another cluster is dropped');
  const badMac = query(cluster.id, BigInt(incarnation) * 1000n + 900n, key);
  badMac[badMac.length - 1] = (badMac[badMac.length - 1] as number) ^ 0x80;
  assert.equal(await send(badMac), undefined, 'a bad MAC is dropped');
  const fresh = query(cluster.id, BigInt(incarnation) * 1000n + 901n, key);
  const first = await send(fresh);
  assert.ok(first !== undefined, 'a fresh request is answered');
  const firstReply = decodeWitnessReply(first, singleClusterKey(cluster.id, key));
  assert.ok(firstReply.ok && firstReply.message.granted && firstReply.message.term === 1, show(firstReply));
  const again = await send(fresh);
  assert.ok(again !== undefined, 'a replayed request is answered with a refusal');
  const replayReply = decodeWitnessReply(again, singleClusterKey(cluster.id, key));
  assert.ok(replayReply.ok && !replayReply.message.granted && replayReply.message.reason === 'stale-request', show(replayReply));

  // each reason is logged when first seen, and counted in the final status
  for (const reason of ['malformed', 'unknownCluster', 'badMac', 'stale-request']) {
    assert.match(w.stderr(), new RegExp(`warn +witness witness: refused reason=${reason} `), `no log line for ${reason}\n${w.stderr()}`);
  }
  const exit = await w.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, w.stderr());
  const log = w.stderr();
  assert.equal(counter(log, 'malformed'), 1, log);
  assert.equal(counter(log, 'unknownCluster'), 1, log);
  assert.equal(counter(log, 'badMac'), 1, log);
  assert.equal(counter(log, 'stale-request'), 1, log);
  assert.equal(counter(log, 'fenced'), 1, log);
  assert.equal(counter(log, 'peer-alive'), 1, log);
  assert.equal(counter(log, 'persistFailures'), 0, log);
  assert.ok((counter(log, 'granted') ?? 0) >= 6, log);

  // without a witness: requests time out; beyond the pending limit the oldest gives way; close() settles the rest
  const many = Array.from({ length: 20 }, () => beta.request('renew'));
  assert.equal(beta.pendingCount, 16);
  beta.close();
  assert.equal(beta.pendingCount, 0);
  const results = await Promise.all(many);
  assert.ok(results.every((r) => !r.granted && r.reason === 'timeout' && r.term === 0), show(results));
  assertReply(await beta.request('renew'), false, 'closed', 0, 'after close');
});

test('a flood of one refusal reason is counted, not logged line by line', async (t) => {
  const tmp = tempDir('tandem-witness-');
  const sockets: dgram.Socket[] = [];
  t.after(async () => {
    for (const s of sockets) s.close();
    for (const p of started.splice(0)) await p.kill9();
    tmp.cleanup();
  });
  const config = writeConfig(tmp.dir, [{ id: crypto.randomBytes(16), secret: crypto.randomBytes(32) }]);
  const w = await startWitness(`${WITNESS_HOST}:0`, config);
  const raw = await bound('127.0.0.2');
  sockets.push(raw);
  // in batches, so the loopback receive buffer does not overflow
  for (let batch = 0; batch < 10; batch++) {
    for (let i = 0; i < 50; i++) raw.send(Buffer.alloc(70, batch * 50 + i), w.port, WITNESS_HOST);
    await sleep(20);
  }
  await sleep(300);
  const exit = await w.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, w.stderr());
  const log = w.stderr();
  const lines = log.split('\n').filter((l) => /reason=malformed/.test(l));
  assert.ok(lines.length <= 3, `${lines.length} log lines for 500 malformed datagrams:\n${lines.join('\n')}`);
  const received = counter(log, 'received') ?? 0;
  assert.ok(received >= 100, log);
  assert.equal(counter(log, 'malformed'), received, log);
  const summary = /refused \(repeats not logged one by one\) reason=malformed count=(\d+) total=(\d+)/.exec(log);
  assert.ok(summary !== null, log);
  assert.equal(Number(summary[1]) + 1, received, 'the first is logged, the rest summed up');
  assert.equal(Number(summary[2]), received);
});

test('bad configurations and state files: a clear error naming the key, a non-zero exit, nothing written', async (t) => {
  const tmp = tempDir('tandem-witness-');
  t.after(() => tmp.cleanup());
  const good = { id: crypto.randomBytes(16), secret: crypto.randomBytes(32) };
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown key', { stateFile: 's.json', clusters: [{ id: good.id.toString('hex'), secret: good.secret.toString('hex') }], listen: 'x' }, /\blisten: unknown key/],
    ['short cluster id', { stateFile: 's.json', clusters: [{ id: 'abcd', secret: good.secret.toString('hex') }] }, /clusters\[0\]\.id: must be 32 hex digits/],
    ['short secret', { stateFile: 's.json', clusters: [{ id: good.id.toString('hex'), secret: 'abcd' }] }, /clusters\[0\]\.secret: must be 32 to 2048 hex digits/],
    ['missing secret', { stateFile: 's.json', clusters: [{ id: good.id.toString('hex') }] }, /clusters\[0\]\.secret: is required/],
    ['unknown cluster key', { stateFile: 's.json', clusters: [{ id: good.id.toString('hex'), secret: good.secret.toString('hex'), name: 'x' }] }, /clusters\[0\]\.name: unknown key/],
    ['no clusters', { stateFile: 's.json', clusters: [] }, /clusters: must be a non-empty list/],
    ['no stateFile', { clusters: [{ id: good.id.toString('hex'), secret: good.secret.toString('hex') }] }, /stateFile: must be a non-empty path/],
    ['bad name', { name: 'a witness', stateFile: 's.json', clusters: [{ id: good.id.toString('hex'), secret: good.secret.toString('hex') }] }, /name: "a witness" is not a name/],
    ['the same cluster twice', {
      stateFile: 's.json',
      clusters: [{ id: good.id.toString('hex'), secret: good.secret.toString('hex') }, { id: good.id.toString('hex'), secret: good.secret.toString('hex') }],
    }, /clusters\[1\]\.id: cluster [0-9a-f]{32} is listed twice/],
  ];
  for (const [what, cfg, message] of cases) {
    const file = path.join(tmp.dir, 'bad.json');
    fs.writeFileSync(file, JSON.stringify(cfg));
    const r = await witnessOnce(['--listen', `${WITNESS_HOST}:0`, '--config', file]);
    assert.equal(r.code, 1, `${what}\n${r.stderr}`);
    assert.match(r.stderr, /^tandem: error: /m, what);
    assert.match(r.stderr, message, `${what}\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /\n\s+at /, `stack trace for ${what}\n${r.stderr}`);
    assert.doesNotMatch(r.stdout, /listening on/, what);
    assert.equal(fs.existsSync(path.join(tmp.dir, 's.json')), false, `${what}: a state file was written`);
  }
  // not JSON
  const notJson = path.join(tmp.dir, 'not.json');
  fs.writeFileSync(notJson, '{ stateFile: ');
  const nj = await witnessOnce(['--listen', `${WITNESS_HOST}:0`, '--config', notJson]);
  assert.equal(nj.code, 1, nj.stderr);
  assert.match(nj.stderr, /config: not JSON/);

  // a state file that exists but does not parse stops the witness and is left as it was
  const config = writeConfig(tmp.dir, [good]);
  const stateFile = path.join(tmp.dir, 'witness-state.json');
  fs.writeFileSync(stateFile, '{"version":1,"clusters":{"zz":{}}}');
  const st = await witnessOnce(['--listen', `${WITNESS_HOST}:0`, '--config', config]);
  assert.equal(st.code, 1, st.stderr);
  assert.match(st.stderr, /tandem: error: stateFile: .*witness-state\.json: state\.clusters: "zz" is not a cluster id/, st.stderr);
  assert.equal(fs.readFileSync(stateFile, 'utf8'), '{"version":1,"clusters":{"zz":{}}}');

  // usage mistakes exit 2 with the witness's usage
  for (const args of [['--config', config], ['--listen', `${WITNESS_HOST}:0`], ['--listen', 'nope', '--config', config], ['--bogus']]) {
    const r = await witnessOnce(args);
    assert.equal(r.code, 2, `${args.join(' ')}\n${r.stderr}`);
    assert.match(r.stderr, /usage: tandem witness --listen HOST:PORT --config FILE/, r.stderr);
  }
});
