// The namespace harness and the acked writer, with real processes: `tandem serve`
// in host srv on its own address, the writer in host cli writing through the
// bridge, a SIGTERM, and a verify that passes; then a block changed behind the
// writer's back, which verify must catch. Also the harness's ports, fence command,
// neighbour table, ARP capture, and that cleanup leaves nothing behind.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { checkBlock, decodeBlock, pattern, readWriterLog, type WriterLog } from '../helpers/acked-writer';
import { NbdClient } from '../helpers/nbd-client';
import { createNetns, netnsNames, type Netns } from '../helpers/netns';
import { run } from '../helpers/run';
import { repoRoot, tandemBin, tempDir } from '../helpers/serve-process';

const SUBNET = 250;
const BLOCK = 4096;
const BLOCKS = 256;
const EXPORT = 'vol';
const writerScript = path.join(repoRoot, 'dist', 'test', 'helpers', 'acked-writer.js');

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Proc {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stdout(): string;
  stderr(): string;
}

function spawnIn(net: Netns, host: string, argv: string[]): Proc {
  const full = [...net.prefix(host), ...argv];
  const child = spawn(full[0] as string, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(null));
  });
  return { child, exited, stdout: () => out, stderr: () => err };
}

async function waitFor(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function endProc(p: Proc | undefined): Promise<void> {
  if (p === undefined || p.child.exitCode !== null || p.child.signalCode !== null || p.child.pid === undefined) return;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 5_000);
  await p.exited;
  clearTimeout(t);
}

function events(text: string): Array<Record<string, unknown>> {
  return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function nsNames(): Promise<string[]> {
  return (await run('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n !== '');
}

async function linkUp(name: string): Promise<boolean> {
  const r = await run('ip', ['-j', 'link', 'show', 'dev', name]);
  return ((JSON.parse(r.stdout) as Array<{ flags?: string[] }>)[0]?.flags ?? []).includes('UP');
}

/** whether the test process (root namespace) can open an NBD connection to srv within timeoutMs */
async function reachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  try {
    const c = await NbdClient.connect(host, port, { exportName: EXPORT, timeoutMs });
    await c.disconnect();
    return true;
  } catch {
    return false;
  }
}

test('the block patterns and the log check', () => {
  const p = pattern(7, 0x01020304, 64);
  assert.equal(p.length, 64);
  assert.deepEqual([...p.subarray(0, 8)], [7, 0, 0, 0, 4, 3, 2, 1]);
  assert.deepEqual(p.subarray(56), p.subarray(0, 8));
  assert.deepEqual(decodeBlock(p), { kind: 'pattern', index: 7, seq: 0x01020304 });
  assert.deepEqual(decodeBlock(Buffer.alloc(64)), { kind: 'zeros' });
  const torn = Buffer.concat([pattern(7, 5, 32), pattern(7, 6, 32)]);
  assert.equal(decodeBlock(torn).kind, 'other');
  const log: WriterLog = { blockSize: 64, blocks: 16, acked: { 7: 5 }, laterIssued: { 7: [9], 8: [10] }, writes: 3, ackedWrites: 1, failures: 1, reconnects: 1 };
  assert.equal(checkBlock(log, 7, pattern(7, 5, 64)).ok, true);
  assert.equal(checkBlock(log, 7, pattern(7, 9, 64)).ok, true, 'a later issued write may have landed');
  assert.equal(checkBlock(log, 7, pattern(7, 4, 64)).ok, false, 'an older write is a lost acknowledged write');
  assert.equal(checkBlock(log, 7, Buffer.alloc(64)).ok, false);
  assert.equal(checkBlock(log, 7, torn).ok, false);
  assert.equal(checkBlock(log, 7, pattern(6, 5, 64)).ok, false, 'the right seq in the wrong block');
  assert.equal(checkBlock(log, 8, Buffer.alloc(64)).ok, true, 'never acknowledged: zeros are fine');
  assert.equal(checkBlock(log, 8, pattern(8, 10, 64)).ok, true);
});

test('netns harness: tandem serve in srv, the acked writer in cli, verify, a changed block caught, nothing left behind', { timeout: 60_000 }, async (t) => {
  const net = await createNetns({ subnet: SUBNET, hosts: ['srv', 'cli'] });
  const tmp = tempDir('tandem-netns-harness-');
  const procs: { serve?: Proc; writer?: Proc } = {};
  t.after(async () => {
    await endProc(procs.writer);
    await endProc(procs.serve);
    await net.cleanup();
    tmp.cleanup();
  });
  const srv = net.hosts.srv;
  const cli = net.hosts.cli;
  assert.ok(srv !== undefined && cli !== undefined);
  const names = netnsNames(SUBNET, ['srv', 'cli']);
  assert.ok([net.bridge, srv.hostVeth, cli.hostVeth].every((n) => n.length <= 15));
  assert.deepEqual(names.ns, [srv.ns, cli.ns]);
  assert.equal(srv.ip, '198.18.250.1');
  assert.equal(cli.ip, '198.18.250.2');
  assert.equal(net.bridgeIp, '198.18.250.254');
  assert.deepEqual(await net.addresses('srv'), ['198.18.250.1/24']);
  assert.deepEqual(await net.addresses('cli'), ['198.18.250.2/24']);
  const srvMac = await srv.mac();
  assert.match(srvMac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  assert.notEqual(srvMac, await cli.mac());
  assert.equal((await net.exec('srv', 'ip', ['-br', 'link', 'show', 'dev', 'lo'])).stdout.includes('UP'), true, 'lo is up');

  // tandem serve on srv's own address
  const serve = spawnIn(net, 'srv', [process.execPath, tandemBin, 'serve', '--file', path.join(tmp.dir, 'vol.img'), '--size', '64M',
    '--name', EXPORT, '--listen', `${srv.ip}:0`]);
  procs.serve = serve;
  const s = serve;
  await waitFor('tandem serve listening', () => {
    if (s.child.exitCode !== null) throw new Error(`tandem serve exited ${s.child.exitCode}:\n${s.stderr()}`);
    return /listening on \S+:\d+/.test(s.stdout());
  });
  const port = Number((/listening on \S+:(\d+)/.exec(s.stdout()) as RegExpExecArray)[1]);

  // the writer in cli, for about 2 s
  const logFile = path.join(tmp.dir, 'writer.json');
  const writer = spawnIn(net, 'cli', [process.execPath, writerScript, 'write', '--host', srv.ip, '--port', String(port), '--export', EXPORT,
    '--blocks', String(BLOCKS), '--block-size', String(BLOCK), '--depth', '4', '--log', logFile, '--max-seconds', '60']);
  procs.writer = writer;
  const w = writer;
  await waitFor('writer progress with acknowledged writes', () => {
    if (w.child.exitCode !== null) throw new Error(`writer exited ${w.child.exitCode}:\n${w.stderr()}`);
    return events(w.stdout()).some((e) => e.event === 'progress' && typeof e.acked === 'number' && e.acked > 0);
  });
  await sleep(1_000);
  w.child.kill('SIGTERM');
  assert.equal(await w.exited, 0, w.stderr());
  const evs = events(w.stdout());
  assert.equal(evs[0]?.event, 'connected');
  const done = evs.find((e) => e.event === 'done');
  assert.ok(done !== undefined, w.stdout());
  assert.equal(done.failures, 0);
  const log = readWriterLog(logFile);
  assert.equal(log.blockSize, BLOCK);
  assert.equal(log.blocks, BLOCKS);
  assert.ok(log.ackedWrites > BLOCKS, `${log.ackedWrites} writes acknowledged in 2 s`);
  assert.equal(Object.keys(log.acked).length, BLOCKS, 'every block was written');
  assert.equal(done.acked, log.ackedWrites);

  // verify from cli: every acknowledged write is there
  const verify = (): Promise<{ code: number; summary: Record<string, unknown> }> =>
    net.exec('cli', process.execPath, [writerScript, 'verify', '--host', srv.ip, '--port', String(port), '--export', EXPORT, '--log', logFile],
      { timeoutMs: 60_000, allowFail: true })
      .then((r) => ({ code: r.code, summary: (events(r.stdout).find((e) => e.event === 'verified') ?? { stdout: r.stdout, stderr: r.stderr }) }));
  const good = await verify();
  assert.equal(good.code, 0, JSON.stringify(good.summary));
  assert.equal(good.summary.blocks, BLOCKS);
  assert.equal(good.summary.ok, BLOCKS);

  // cli learned srv's MAC from that TCP connection
  assert.equal(await net.neighbour('cli', srv.ip), srvMac);
  assert.equal(await net.neighbour('cli', '198.18.250.77'), undefined);

  // a block changed behind the writer's back, from the root namespace through the bridge
  const victim = 17;
  const c = await NbdClient.connect(srv.ip, port, { exportName: EXPORT });
  await c.write(victim * BLOCK, Buffer.alloc(BLOCK));
  await c.flush();
  await c.disconnect();
  const bad = await verify();
  assert.equal(bad.code, 1, JSON.stringify(bad.summary));
  assert.equal(bad.summary.ok, BLOCKS - 1);
  assert.deepEqual(bad.summary.bad, [{ index: victim, expected: log.acked[String(victim)], later: log.laterIssued[String(victim)] ?? [], found: 'zeros' }]);

  // gratuitous ARP from srv, seen in cli
  const cap = await net.captureArp('cli');
  const arping = await net.exec('srv', 'arping', ['-U', '-c', '2', '-I', 'eth0', srv.ip], { timeoutMs: 10_000, allowFail: true });
  assert.ok(arping.code === 0 || arping.code === 1, arping.stderr);
  await sleep(100);
  const lines = await cap.stop();
  assert.ok(lines.some((l) => l.includes(srv.ip) && l.toLowerCase().includes(srvMac)), `capture:\n${lines.join('\n')}\narping:\n${arping.stdout}${arping.stderr}`);

  // the port, cut from the root namespace and by the fence command from inside a namespace
  assert.equal(await reachable(srv.ip, port, 2_000), true);
  await net.portDown('srv');
  assert.equal(await linkUp(srv.hostVeth), false);
  assert.equal(await reachable(srv.ip, port, 500), false, 'srv is cut off');
  await net.portUp('srv');
  assert.equal(await linkUp(srv.hostVeth), true);
  await waitFor('srv reachable again', () => reachable(srv.ip, port, 500));
  await net.exec('cli', 'sh', ['-c', net.fenceCommand('srv')]);
  assert.equal(await linkUp(srv.hostVeth), false, 'the fence command, run in cli, took srv\'s port down');
  await net.portUp('srv');
  await waitFor('srv reachable after the fence is lifted', () => reachable(srv.ip, port, 500));

  // cleanup leaves nothing, and a second call is harmless
  await endProc(serve);
  await net.cleanup();
  await net.cleanup();
  const left = await nsNames();
  assert.ok(!left.includes(srv.ns) && !left.includes(cli.ns), `namespaces left: ${left.join(', ')}`);
  for (const l of [net.bridge, srv.hostVeth, cli.hostVeth]) {
    assert.notEqual((await run('ip', ['link', 'show', 'dev', l], { allowFail: true })).code, 0, `${l} is gone`);
  }
});
