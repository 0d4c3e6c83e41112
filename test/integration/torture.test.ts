// The durability torture (docs/torture.md), run the way `npm run torture` runs
// it: a short run of the real build must lose nothing, and a deliberately
// broken build (faults.ackBeforePeer: writes acknowledged before the peer has
// them) must be caught losing acknowledged writes when its primary crashes.
// Each run makes its own network namespaces in 198.18.40.0/24 and removes them;
// the test checks that nothing of the run's is left.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { netnsNames } from '../helpers/netns';
import { run } from '../helpers/run';
import { repoRoot } from '../helpers/serve-process';

const MAIN = path.join(repoRoot, 'dist', 'torture', 'main.js');
const SUBNET = 40;

interface TortureRun { readonly code: number | null; readonly output: string; readonly pid: number }

/** Runs the torture as a child process; on timeout it gets SIGTERM (it tears its run down), then SIGKILL. */
function torture(args: string[], timeoutMs: number): Promise<TortureRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args, '--subnet', String(SUBNET), '--discard'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    let kill: NodeJS.Timeout | undefined;
    const term = setTimeout(() => {
      output += `\n[test: no result within ${timeoutMs} ms: SIGTERM]\n`;
      child.kill('SIGTERM');
      kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
    }, timeoutMs);
    child.once('error', (e) => { clearTimeout(term); reject(e); });
    child.once('exit', (code) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ code, output, pid: child.pid as number });
    });
  });
}

/** the namespaces and bridge a run with this pid made are gone */
async function assertCleanedUp(pid: number): Promise<void> {
  const names = netnsNames(SUBNET, ['a', 'b', 'w', 'c'], pid);
  const ns = (await run('ip', ['netns', 'list'])).stdout;
  for (const n of names.ns) assert.ok(!ns.includes(n), `namespace ${n} is left over:\n${ns}`);
  const links = await run('ip', ['link', 'show', 'dev', names.bridge], { allowFail: true });
  assert.notEqual(links.code, 0, `bridge ${names.bridge} is left over`);
}

function summaryOf(output: string): string {
  const at = output.indexOf('torture summary:');
  return at < 0 ? '' : output.slice(at);
}

function field(summary: string, re: RegExp): number {
  const m = re.exec(summary);
  assert.ok(m !== null, `the summary shows ${re}:\n${summary}`);
  return Number(m[1]);
}

test('a short torture of the real build: nothing acknowledged is lost, one writer at a time, identical copies', {
  timeout: 360_000,
}, async () => {
  const started = Date.now();
  const r = await torture(['--duration', '120s', '--seed', '1', '--recover', '30s'], 300_000);
  const summary = summaryOf(r.output);
  process.stdout.write(`${summary}\n(the run took ${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
  await assertCleanedUp(r.pid);
  assert.ok(summary !== '', `the torture printed a summary:\n${r.output.slice(-6000)}`);
  assert.equal(r.code, 0, `the torture passes:\n${r.output.slice(-8000)}`);
  assert.match(summary, /RESULT: PASS: lost 0 acknowledged writes/);
  assert.equal(field(summary, /acknowledged writes lost: (\d+)/), 0);
  assert.equal(field(summary, /overlapping writers: (\d+)/), 0);
  assert.match(summary, /copies identical: yes/);
  assert.ok(field(summary, /faults injected: (\d+)/) >= 8, 'the nemesis did its work');
  assert.ok(field(summary, /(\d+) acknowledged,/) > 1000, 'the clients wrote');
});

test('a broken build (acknowledged before the peer has it) is caught losing acknowledged writes when its primary crashes', { timeout: 240_000 }, async () => {
  const started = Date.now();
  const r = await torture(['--broken', 'ack-before-peer', '--schedule', 'crash-primary', '--duration', '20s', '--seed', '1', '--recover', '30s'], 180_000);
  const summary = summaryOf(r.output);
  process.stdout.write(`${summary.split('\nevidence:')[0] ?? ''}\n(the run took ${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
  await assertCleanedUp(r.pid);
  assert.ok(summary !== '', `the torture printed a summary:\n${r.output.slice(-6000)}`);
  assert.match(r.output, /BROKEN ON PURPOSE \(ack-before-peer\)/);
  assert.equal(r.code, 1, `the checker fails the run:\n${r.output.slice(-8000)}`);
  assert.ok(field(summary, /acknowledged writes lost: (\d+)/) > 0, `lost writes are counted:\n${summary}`);
  assert.match(summary, /RESULT: FAIL/);
  assert.match(summary, /evidence:\n .* is missing; found /);
  assert.ok(field(summary, /faults injected: (\d+) \(crash/) >= 1);
});
