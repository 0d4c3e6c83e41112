// Forming a cluster with two commands (docs/cluster-setup.md), with real processes on
// loopback: `tandem cluster create` writes the first node's file and prints a token, that
// node starts and waits, `tandem cluster join TOKEN` on the second proves it holds the
// secret, both files end up naming each other, and both nodes run as one cluster. Every
// join that must be refused is, with its reason, and leaves the waiting node as it was.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseNodeConfig } from '../../src/node/config';
import { joinKey, requestMac, type JoinRequestFields } from '../../src/node/join-auth';
import { decodeJoinToken, encodeJoinToken, type JoinToken } from '../../src/node/join-token';
import type { NodeStatus } from '../../src/replication/status';
import { registerNodeToken } from '../helpers/api-tokens';
import { freePort, httpJson, sleep } from '../helpers/cluster';
import { tandemBin } from '../helpers/serve-process';
import { describeRun, tandem, type CliResult } from '../helpers/tandem-cli';

// addresses no other test uses
const HOSTS = {
  joinA: '127.0.0.41', joinB: '127.0.0.42',
  linksA: '127.0.0.43', linksB: '127.0.0.44',
  refuseA: '127.0.0.45', refuseOther: '127.0.0.46', refuseB: '127.0.0.47',
} as const;

/** A `tandem node start` of this test; every one is killed at the end by its own handle. */
class NodeProcess {
  private static readonly all = new Set<NodeProcess>();
  out = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private done = false;

  constructor(readonly name: string, readonly configPath: string) {
    this.child = spawn(process.execPath, [tandemBin, 'node', 'start', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    NodeProcess.all.add(this);
    this.child.stdout?.on('data', (d: Buffer) => { this.out += d.toString(); });
    this.child.stderr?.on('data', (d: Buffer) => { this.out += d.toString(); });
    this.exited = new Promise((resolve) => {
      this.child.once('error', (e) => { this.out += `spawn error: ${e.message}\n`; this.done = true; resolve(null); });
      this.child.once('exit', (code, signal) => { this.out += `[exited: code ${code} signal ${signal}]\n`; this.done = true; resolve(code); });
    });
  }

  get running(): boolean { return !this.done; }

  /** Waits until the output matches re; fails early if the process exits. */
  async waitFor(re: RegExp, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.out)) {
      if (this.done) throw new Error(`${this.name} exited before printing ${re}:\n${this.out}`);
      if (Date.now() > deadline) throw new Error(`${this.name} did not print ${re} within ${timeoutMs} ms:\n${this.out}`);
      await sleep(50);
    }
  }

  /** SIGTERM; SIGKILL if it has not exited within timeoutMs (and fail). Resolves with the exit code. */
  async stop(timeoutMs = 20_000): Promise<number | null> {
    if (this.done) return this.exited;
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.exited, new Promise<'hung'>((resolve) => { timer = setTimeout(() => resolve('hung'), timeoutMs); })]);
    clearTimeout(timer);
    if (r === 'hung') {
      this.child.kill('SIGKILL');
      await this.exited;
      throw new Error(`${this.name} did not exit within ${timeoutMs} ms of SIGTERM:\n${this.out}`);
    }
    return r;
  }

  static async killAll(): Promise<void> {
    for (const p of NodeProcess.all) {
      if (p.running) p.child.kill('SIGKILL');
      await p.exited;
    }
    NodeProcess.all.clear();
  }
}

interface Work { readonly dir: string; cleanup(): Promise<void> }

function workDir(prefix: string): Work {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return {
    dir,
    cleanup: async () => {
      await NodeProcess.killAll();
      if (process.env.TANDEM_KEEP_TEST_DIRS === undefined) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function run(args: string[], code: number, pattern?: RegExp, input?: string): Promise<CliResult> {
  const r = input === undefined ? await tandem(args, { timeoutMs: 60_000 }) : await tandemWithInput(args, input);
  assert.equal(r.code, code, describeRun(args, r));
  if (pattern !== undefined) assert.match(r.stdout + r.stderr, pattern, describeRun(args, r));
  return r;
}

/** `tandem ARGS` with `input` on stdin. */
function tandemWithInput(args: string[], input: string): Promise<CliResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tandemBin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr, ms: Date.now() - started }); });
    child.stdin.end(input);
  });
}

/** The join token: the last line `cluster create` prints. */
function tokenOf(r: CliResult): string {
  const lines = r.stdout.trim().split('\n');
  const t = lines[lines.length - 1] as string;
  assert.match(t, /^tandem1\.[A-Za-z0-9_-]+$/, r.stdout);
  return t;
}

interface Addrs { sync: string; api: string; nbd: string }

async function addrs(host: string): Promise<Addrs> {
  const ports: number[] = [];
  while (ports.length < 3) {
    const p = await freePort(host);
    // the default heartbeat link is the sync port + 1
    if (!ports.includes(p) && !ports.includes(p + 1) && !ports.includes(p - 1)) ports.push(p);
  }
  return { sync: `${host}:${ports[0]}`, api: `${host}:${ports[1]}`, nbd: `${host}:${ports[2]}` };
}

function hostPortOf(a: string): { host: string; port: number } {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
}

function getJson<T = unknown>(api: string, urlPath: string): Promise<{ status: number; body: T }> {
  const a = hostPortOf(api);
  return httpJson<T>('GET', a.host, a.port, urlPath, undefined, 10_000);
}

function postJson<T = unknown>(api: string, urlPath: string, body: unknown): Promise<{ status: number; body: T }> {
  const a = hostPortOf(api);
  return httpJson<T>('POST', a.host, a.port, urlPath, body, 10_000);
}

/**
 * POST `data` with a content-length of `declared` (default: its length) and read the JSON answer.
 * With a larger `declared`, the rest of the body is never sent: the server must answer from the header.
 */
function postRaw(api: string, urlPath: string, data: Buffer, declared = data.length): Promise<{ status: number; body: { error?: { code: string } } }> {
  const a = hostPortOf(api);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: a.host, port: a.port, method: 'POST', path: urlPath, agent: false, headers: { 'content-type': 'application/json', 'content-length': declared } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code: string } } });
        req.destroy();
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (declared === data.length) req.end(data);
    else req.write(data);
  });
}

function modeOf(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

function assertWaiting(r: { status: number; body: unknown }, node: string): void {
  assert.equal(r.status, 503, JSON.stringify(r.body));
  const e = (r.body as { error: { code: string; message: string } }).error;
  assert.equal(e.code, 'ERR_WAITING_FOR_JOIN');
  assert.match(e.message, new RegExp(`node ${node} is waiting for a peer to join`));
}

/** Polls both nodes' status until each sees the other over the sync link and the heartbeats. */
async function waitUntilPaired(a: { api: string; name: string }, b: { api: string; name: string }, timeoutMs = 30_000): Promise<[NodeStatus, NodeStatus]> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown[] = [];
  for (;;) {
    const [sa, sb] = await Promise.all([getJson<NodeStatus>(a.api, '/api/v1/status'), getJson<NodeStatus>(b.api, '/api/v1/status')]);
    last = [sa, sb];
    const paired = (s: { status: number; body: NodeStatus }): boolean => s.status === 200 && s.body.peer.connected &&
      s.body.clusterState?.peer.up === true && s.body.clusterState.peer.links.up === s.body.clusterState.peer.links.total &&
      (s.body.clusterState.heartbeatLinks ?? []).every((l) => l.up === true);
    if (paired(sa) && paired(sb)) return [sa.body, sb.body];
    if (Date.now() > deadline) throw new Error(`the nodes did not pair within ${timeoutMs} ms: ${JSON.stringify(last, null, 1)}`);
    await sleep(200);
  }
}

function readConfig(file: string): ReturnType<typeof parseNodeConfig> {
  return parseNodeConfig(fs.readFileSync(file, 'utf8'));
}

test('cluster create, node start (waits), cluster join, node start: two nodes that see each other', { timeout: 120_000 }, async () => {
  const w = workDir('tandem-cluster-join-');
  try {
    const a = await addrs(HOSTS.joinA);
    const b = await addrs(HOSTS.joinB);
    const fileA = path.join(w.dir, 'alpha', 'node.json');
    const fileB = path.join(w.dir, 'beta', 'node.json');
    // once running, each node's API takes its own token: the status polls below carry it
    registerNodeToken(hostPortOf(a.api), path.join(w.dir, 'alpha', 'data'));
    registerNodeToken(hostPortOf(b.api), path.join(w.dir, 'beta', 'data'));
    const created = await run(['cluster', 'create', '--cluster', 'store', '--node', 'alpha', '--sync', a.sync, '--api', a.api, '--nbd', a.nbd,
      '--data-dir', path.join(w.dir, 'alpha', 'data'), '--config', fileA,
      '--heartbeat-interval', '100', '--heartbeat-timeout', '600', '--floating-ip-driver', 'loopback'], 0, /cluster store created/);
    const token = tokenOf(created);
    assert.equal(modeOf(fileA), 0o600);
    const waitingFile = JSON.parse(fs.readFileSync(fileA, 'utf8')) as Record<string, unknown>;
    assert.equal('peer' in waitingFile, false, 'the first file names no peer');
    assert.equal('volumes' in waitingFile || 'pools' in waitingFile, false, 'nor volumes nor pools');

    const alpha = new NodeProcess('alpha', fileA);
    await alpha.waitFor(/node alpha waiting for a peer to join \(cluster store\)/);
    assertWaiting(await getJson(a.api, '/api/v1/status'), 'alpha');

    const joined = await run(['cluster', 'join', token, '--node', 'beta', '--sync', b.sync, '--api', b.api, '--nbd', b.nbd,
      '--data-dir', path.join(w.dir, 'beta', 'data'), '--config', fileB], 0, /node beta joined cluster store/);
    assert.match(joined.stdout, new RegExp(`tandem node start --config ${fileB.replace(/[.]/g, '\\.')}`));
    assert.equal(modeOf(fileB), 0o600);
    await alpha.waitFor(/node alpha ready/);
    assert.equal(modeOf(fileA), 0o600, 'the rewritten file keeps mode 0600');

    const beta = new NodeProcess('beta', fileB);
    await beta.waitFor(/node beta ready/);
    const [sa, sb] = await waitUntilPaired({ api: a.api, name: 'alpha' }, { api: b.api, name: 'beta' });
    assert.equal(sa.node, 'alpha');
    assert.equal(sa.cluster, 'store');
    assert.equal(sa.peer.name, 'beta');
    assert.equal(sb.node, 'beta');
    assert.equal(sb.cluster, 'store');
    assert.equal(sb.peer.name, 'alpha');
    const ha = hostPortOf(a.sync);
    const hb = hostPortOf(b.sync);
    // the default link: each side's sync port + 1
    assert.deepEqual(sa.clusterState?.heartbeatLinks, [{ listen: `${ha.host}:${ha.port + 1}`, peer: `${hb.host}:${hb.port + 1}`, up: true }]);
    assert.equal(sa.clusterState?.heartbeat.badMac, 0);
    assert.equal(sb.clusterState?.heartbeat.badMac, 0);

    const ca = readConfig(fileA);
    const cb = readConfig(fileB);
    assert.deepEqual(ca.cluster.id, cb.cluster.id);
    assert.deepEqual(ca.cluster.secret, cb.cluster.secret);
    assert.equal(ca.cluster.secret.length, 32);
    assert.equal(ca.cluster.name, 'store');
    assert.equal(cb.cluster.name, 'store');
    // each file records where the other's API answers: the console and wait-sync read the peer there
    assert.deepEqual(ca.peer, { name: 'beta', syncAddress: hb, apiAddress: hostPortOf(b.api) });
    assert.deepEqual(cb.peer, { name: 'alpha', syncAddress: ha, apiAddress: hostPortOf(a.api) });
    assert.deepEqual([sa.peerApi, sa.peerApiConfigured, sb.peerApi, sb.peerApiConfigured], [b.api, true, a.api, true]);
    for (const c of [ca, cb]) {
      assert.equal(c.heartbeat.intervalMs, 100);
      assert.equal(c.heartbeat.timeoutMs, 600);
      assert.equal(c.floatingIp.driver, 'loopback');
      assert.deepEqual(c.volumes, []);
      assert.deepEqual(c.pools, []);
    }
    assert.equal(path.isAbsolute(ca.node.dataDir) && path.isAbsolute(cb.node.dataDir), true);

    // the token is spent: the first node runs as usual now and takes no other join
    const gamma = await addrs(HOSTS.joinB);
    await run(['cluster', 'join', token, '--node', 'gamma', '--sync', gamma.sync, '--data-dir', path.join(w.dir, 'gamma'),
      '--config', path.join(w.dir, 'gamma.json')], 1, /does not wait for a join.*ERR_NOT_WAITING/);
    assert.equal(fs.existsSync(path.join(w.dir, 'gamma.json')), false);

    assert.equal(await beta.stop(), 0, beta.out);
    assert.equal(await alpha.stop(), 0, alpha.out);
  } finally {
    await w.cleanup();
  }
});

test('two heartbeat links and the fence policy: link i pairs with link i, each node has its own fence command', { timeout: 120_000 }, async () => {
  const w = workDir('tandem-cluster-join-links-');
  try {
    const a = await addrs(HOSTS.linksA);
    const b = await addrs(HOSTS.linksB);
    const hbA = [`${HOSTS.linksA}:${await freePort(HOSTS.linksA)}`, `${HOSTS.linksA}:${await freePort(HOSTS.linksA)}`];
    const hbB = [`${HOSTS.linksB}:${await freePort(HOSTS.linksB)}`, `${HOSTS.linksB}:${await freePort(HOSTS.linksB)}`];
    const fileA = path.join(w.dir, 'a.json');
    const fileB = path.join(w.dir, 'b.json');
    registerNodeToken(hostPortOf(a.api), path.join(w.dir, 'a'));
    registerNodeToken(hostPortOf(b.api), path.join(w.dir, 'b'));
    const created = await run(['cluster', 'create', '--cluster', 'pair', '--node', 'left', '--sync', a.sync, '--api', a.api, '--nbd', a.nbd,
      '--data-dir', path.join(w.dir, 'a'), '--config', fileA, '--heartbeat', hbA[0] as string, '--heartbeat', hbA[1] as string,
      '--fencing', 'fence', '--fence-command', '/bin/true --fence right', '--floating-ip-driver', 'loopback'], 0);
    const token = tokenOf(created);
    const left = new NodeProcess('left', fileA);
    await left.waitFor(/node left waiting for a peer to join \(cluster pair\)/);

    const joinArgs = ['cluster', 'join', '-', '--node', 'right', '--sync', b.sync, '--api', b.api, '--nbd', b.nbd,
      '--data-dir', path.join(w.dir, 'b'), '--config', fileB];
    // the cluster fences: the joining node brings the command that powers the first one off
    await run([...joinArgs, '--heartbeat', hbB[0] as string, '--heartbeat', hbB[1] as string], 2, /give --fence-command/, token);
    // as many links as the first node has
    await run([...joinArgs, '--heartbeat', hbB[0] as string, '--fence-command', '/bin/true'], 2, /has 2 heartbeat link\(s\)/, token);
    assert.equal(fs.existsSync(fileB), false);
    // the token on stdin
    await run([...joinArgs, '--heartbeat', hbB[0] as string, '--heartbeat', hbB[1] as string, '--fence-command', '/bin/true --fence left'], 0,
      /node right joined cluster pair/, token);
    await left.waitFor(/node left ready/);
    const right = new NodeProcess('right', fileB);
    await right.waitFor(/node right ready/);
    const [sa, sb] = await waitUntilPaired({ api: a.api, name: 'left' }, { api: b.api, name: 'right' });
    assert.deepEqual(sa.clusterState?.heartbeatLinks?.map((l) => [l.listen, l.peer, l.up]), [[hbA[0], hbB[0], true], [hbA[1], hbB[1], true]]);
    assert.deepEqual(sb.clusterState?.heartbeatLinks?.map((l) => [l.listen, l.peer, l.up]), [[hbB[0], hbA[0], true], [hbB[1], hbA[1], true]]);
    assert.equal(sa.clusterState?.policy, 'fence');
    assert.equal(sb.clusterState?.policy, 'fence');

    const ca = readConfig(fileA);
    const cb = readConfig(fileB);
    assert.deepEqual(ca.fencing.command, ['/bin/true', '--fence', 'right']);
    assert.deepEqual(cb.fencing.command, ['/bin/true', '--fence', 'left']);
    assert.deepEqual(ca.heartbeat.links.map((l) => [l.listen, l.peer]), cb.heartbeat.links.map((l) => [l.peer, l.listen]));
    assert.equal(await right.stop(), 0, right.out);
    assert.equal(await left.stop(), 0, left.out);
  } finally {
    await w.cleanup();
  }
});

/** A signed join request as `tandem cluster join` makes it, for the cases the command never sends. */
function signedRequest(t: JoinToken, over: Partial<JoinRequestFields>): Record<string, unknown> {
  const fields: JoinRequestFields = {
    clusterId: t.cluster.id.toString('hex'), node: 'beta', syncAddress: `${HOSTS.refuseB}:7788`, apiAddress: `${HOSTS.refuseB}:7780`, heartbeat: [], settings: t.settings,
    nonce: '00'.repeat(32), ...over,
  };
  return { ...fields, mac: requestMac(joinKey(t.cluster.id, t.cluster.secret), fields).toString('hex') };
}

test('refused joins: wrong secret, another cluster, the same name, a replayed nonce, garbage; each changes nothing', { timeout: 120_000 }, async () => {
  const w = workDir('tandem-cluster-join-refused-');
  try {
    const a = await addrs(HOSTS.refuseA);
    const b = await addrs(HOSTS.refuseB);
    const fileA = path.join(w.dir, 'alpha.json');
    const fileB = path.join(w.dir, 'beta.json');
    const token = tokenOf(await run(['cluster', 'create', '--cluster', 'store', '--node', 'alpha', '--sync', a.sync, '--api', a.api,
      '--data-dir', path.join(w.dir, 'alpha'), '--config', fileA, '--floating-ip-driver', 'loopback'], 0));
    // another cluster's first node, also named alpha; only its file is made
    const other = await addrs(HOSTS.refuseOther);
    const otherToken = tokenOf(await run(['cluster', 'create', '--cluster', 'elsewhere', '--node', 'alpha', '--sync', other.sync,
      '--data-dir', path.join(w.dir, 'other'), '--config', path.join(w.dir, 'other.json'), '--floating-ip-driver', 'loopback'], 0));
    const before = fs.readFileSync(fileA);

    // create refuses to overwrite, and the checks of its options are usage errors
    await run(['cluster', 'create', '--cluster', 'store', '--node', 'alpha', '--sync', a.sync, '--data-dir', w.dir, '--config', fileA], 1, /exists already.*--force/);
    await run(['cluster', 'create', '--cluster', 'c', '--node', 'n', '--sync', a.sync, '--data-dir', w.dir, '--config', path.join(w.dir, 'x.json'),
      '--fencing', 'witness'], 2, /--fencing witness needs --witness/);
    await run(['cluster', 'create', '--cluster', 'c', '--node', 'n', '--sync', a.sync, '--data-dir', w.dir, '--config', path.join(w.dir, 'x.json'),
      '--fencing', 'fence'], 2, /--fencing fence needs --fence-command/);
    await run(['cluster', 'create', '--cluster', 'c', '--node', 'n', '--sync', '0.0.0.0:7788', '--data-dir', w.dir, '--config', path.join(w.dir, 'x.json')],
      2, /--sync: 0\.0\.0\.0 is a wildcard/);
    await run(['cluster', 'create', '--node', 'n', '--sync', a.sync, '--data-dir', w.dir, '--config', path.join(w.dir, 'x.json')], 2, /--cluster NAME is required/);
    assert.equal(fs.existsSync(path.join(w.dir, 'x.json')), false);
    assert.deepEqual(fs.readFileSync(fileA), before);

    let alpha = new NodeProcess('alpha', fileA);
    await alpha.waitFor(/node alpha waiting for a peer to join/);
    // SIGTERM while waiting: a clean exit, the file as it was; started again, it waits again
    assert.equal(await alpha.stop(), 0, alpha.out);
    assert.match(alpha.out, /stopped/);
    assert.deepEqual(fs.readFileSync(fileA), before);
    alpha = new NodeProcess('alpha', fileA);
    await alpha.waitFor(/node alpha waiting for a peer to join/);

    const joinArgs = (t: string, name = 'beta'): string[] => ['cluster', 'join', t, '--node', name, '--sync', b.sync, '--api', b.api,
      '--data-dir', path.join(w.dir, 'beta'), '--config', fileB];
    const t = decodeJoinToken(token);

    // garbage is a usage error
    await run(joinArgs('not-a-token'), 2, /TOKEN: not a join token: it must start with "tandem1\."/);
    await run(joinArgs('tandem1.$$$'), 2, /TOKEN: not a join token: after the prefix it must be base64url/);
    await run(joinArgs(token.slice(0, token.length / 2)), 2, /TOKEN: not a join token/);
    await run(joinArgs(`tandem1.${Buffer.from('{"cluster":{}}').toString('base64url')}`), 2, /TOKEN: not a valid join token: token\.node: must be an object/);
    // a token whose secret is wrong: its MAC does not check
    const wrongSecret = encodeJoinToken({ ...t, cluster: { ...t.cluster, secret: crypto.randomBytes(32) } });
    await run(joinArgs(wrongSecret), 1, /not signed with the secret of cluster store.*ERR_BAD_MAC/);
    // a node from another cluster (its token, pointed at this node)
    const o = decodeJoinToken(otherToken);
    await run(joinArgs(encodeJoinToken({ ...o, node: { ...o.node, api: t.node.api } })), 1, /a node from another cluster cannot join.*ERR_OTHER_CLUSTER/);
    // the same name: said before asking, and refused by the first node if asked
    await run(joinArgs(token, 'alpha'), 1, /node names must differ/);
    const n1 = await getJson<{ nonce: string; node: string; cluster: string }>(a.api, '/api/v1/join/nonce');
    assert.equal(n1.status, 200);
    assert.equal(n1.body.node, 'alpha');
    const sameName = await postJson<{ error: { code: string; message: string } }>(a.api, '/api/v1/join', signedRequest(t, { node: 'alpha', nonce: n1.body.nonce }));
    assert.equal(sameName.status, 409);
    assert.equal(sameName.body.error.code, 'ERR_SAME_NAME');
    assert.match(sameName.body.error.message, /node names must differ/);
    // that nonce is spent: a good request on it is refused as a replay
    const replay = await postJson<{ error: { code: string } }>(a.api, '/api/v1/join', signedRequest(t, { nonce: n1.body.nonce }));
    assert.equal(replay.status, 401);
    assert.equal(replay.body.error.code, 'ERR_NONCE');
    // a nonce never handed out
    const made = await postJson<{ error: { code: string } }>(a.api, '/api/v1/join', signedRequest(t, { nonce: crypto.randomBytes(32).toString('hex') }));
    assert.equal(made.body.error.code, 'ERR_NONCE');
    // malformed and oversize bodies, an unknown field, a wrong method
    assert.equal((await postRaw(a.api, '/api/v1/join', Buffer.from('{"clusterId": '))).body.error?.code, 'ERR_BAD_REQUEST');
    const huge = await postRaw(a.api, '/api/v1/join', Buffer.from('{"pad": "xxxx'), 100_000);
    assert.equal(huge.status, 413);
    assert.equal(huge.body.error?.code, 'ERR_TOO_LARGE');
    const n2 = await getJson<{ nonce: string }>(a.api, '/api/v1/join/nonce');
    const extra = await postJson<{ error: { code: string; message: string } }>(a.api, '/api/v1/join', { ...signedRequest(t, { nonce: n2.body.nonce }), role: 'admin' });
    assert.equal(extra.status, 400);
    assert.match(extra.body.error.message, /unknown field "role"/);
    assert.equal((await getJson(a.api, '/api/v1/join')).status, 405);

    // nothing changed: the file is as it was, the node still waits
    assert.deepEqual(fs.readFileSync(fileA), before);
    assert.equal(fs.existsSync(fileB), false);
    assertWaiting(await getJson(a.api, '/api/v1/status'), 'alpha');
    assert.equal(alpha.running, true);
    assert.doesNotMatch(alpha.out, /node alpha ready/);
    assert.match(alpha.out, /join refused .*code=ERR_BAD_MAC/);

    // and the right token still joins
    await run(joinArgs(token), 0, /node beta joined cluster store/);
    await alpha.waitFor(/node alpha ready/);
    assert.equal(readConfig(fileA).peer.name, 'beta');
    // the same join again (as after an answer that was lost): the first node names beta already, so the file is written
    const firstB = fs.readFileSync(fileB);
    fs.rmSync(fileB);
    await run(joinArgs(token), 0, /names beta as its peer already/);
    assert.deepEqual(fs.readFileSync(fileB), firstB);
    assert.equal(await alpha.stop(), 0, alpha.out);
  } finally {
    await w.cleanup();
  }
});
