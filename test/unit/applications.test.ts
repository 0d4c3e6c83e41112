// The pure parts of applications: config checks, failure counting, the
// restart budget, OCF exit codes, bounded script output; and the checkers
// against real sockets, a real HTTP server and real commands.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { runChecker, type CheckContext } from '../../src/app/checker';
import { parseApplications, parseFilesystem, type CheckerConfig } from '../../src/app/config';
import { FailureCount, RestartBudget, ocfMeaning } from '../../src/app/policy';
import { OutputTail, runShell } from '../../src/app/script';

const fsCfg = { volume: 'v', mountpoint: '/srv/db', type: 'ext4' as const, mkfs: false, mountOptions: [] };

test('filesystem config: defaults, and each bad key named', () => {
  assert.deepEqual(parseFilesystem({ volume: 'v', mountpoint: '/srv/db/' }, 'pools[0].filesystem', ['v']), { ...fsCfg });
  const bad: Array<[unknown, RegExp]> = [
    [{ volume: 'w', mountpoint: '/srv' }, /pools\[0\]\.filesystem\.volume: "w" is not one of the pool's volumes/],
    [{ volume: 'v', mountpoint: 'srv' }, /mountpoint: "srv" must be an absolute path/],
    [{ volume: 'v', mountpoint: '/srv/../etc' }, /mountpoint: .* without "\.\."/],
    [{ volume: 'v', mountpoint: '/' }, /mountpoint: must not be \//],
    [{ volume: 'v', mountpoint: '/srv', type: 'xfs' }, /type: must be "ext4"/],
    [{ volume: 'v', mountpoint: '/srv', mkfs: 'yes' }, /mkfs: must be true or false/],
    [{ volume: 'v', mountpoint: '/srv', mountOptions: ['loop'] }, /mountOptions\[0\]: the loop device is set up by the node/],
    [{ volume: 'v', mountpoint: '/srv', mountOptions: ['a b'] }, /mountOptions\[0\]: must be a mount option/],
    [{ volume: 'v', mountpoint: '/srv', size: 1 }, /filesystem\.size: unknown key/],
  ];
  for (const [v, re] of bad) assert.throws(() => parseFilesystem(v, 'pools[0].filesystem', ['v']), re, JSON.stringify(v));
});

test('application config: generic and postgresql defaults, and each bad key named', () => {
  const [g] = parseApplications([{ name: 'web', start: 'systemctl start web', stop: 'systemctl stop web', checkers: [{ kind: 'tcp', port: 80 }] }], 'a', null);
  assert.equal(g?.module, 'generic');
  assert.deepEqual(g?.restart, { max: 3, windowMs: 600_000 });
  assert.deepEqual(g?.checkers[0], { kind: 'tcp', host: null, port: 80, timing: { intervalMs: 2000, timeoutMs: 5000, failureThreshold: 3 } });
  const [pg] = parseApplications([{ name: 'db', module: 'postgresql' }], 'a', fsCfg);
  assert.equal(pg?.module, 'postgresql');
  if (pg?.module === 'postgresql') {
    assert.equal(pg.port, 5432);
    assert.equal(pg.user, 'postgres');
    assert.equal(pg.dataDir, 'pgdata');
    assert.equal(pg.socketDir, '/var/run/postgresql');
  }
  const bad: Array<[unknown, RegExp, boolean]> = [
    [[{ name: 'db', module: 'postgresql' }], /a\[0\]\.module: postgresql keeps its data directory on the pool's filesystem/, false],
    [[{ name: 'x', module: 'mysql', start: 'a', stop: 'b' }], /module: must be "generic" or "postgresql"/, true],
    [[{ name: 'x', start: 'a' }], /a\[0\]\.stop: must be a non-empty string/, true],
    [[{ name: 'x y', start: 'a', stop: 'b' }], /a\[0\]\.name: "x y" is not a name/, true],
    [[{ name: 'x', start: 'a', stop: 'b' }, { name: 'x', start: 'a', stop: 'b' }], /application names must be unique/, true],
    [[{ name: 'x', start: 'a', stop: 'b', checkers: [{ kind: 'ping' }] }], /checkers\[0\]\.kind: must be/, true],
    [[{ name: 'x', start: 'a', stop: 'b', checkers: [{ kind: 'tcp', port: 70000 }] }], /checkers\[0\]\.port: must be an integer from 1 to 65535/, true],
    [[{ name: 'x', start: 'a', stop: 'b', checkers: [{ kind: 'http', url: 'ftp://x' }] }], /url: must be an http/, true],
    [[{ name: 'x', start: 'a', stop: 'b', checkers: [{ kind: 'http', url: 'http://x', expectStatus: [300, 200] }] }], /expectStatus/, true],
    [[{ name: 'x', start: 'a', stop: 'b', checkers: [{ kind: 'process', pidFile: 'run/x.pid' }] }], /pidFile: .* absolute path/, true],
    [[{ name: 'x', start: 'a', stop: 'b', checkers: [{ kind: 'command', command: 'true', intervalMs: 5 }] }], /intervalMs: must be an integer from 100/, true],
    [[{ name: 'x', start: 'a', stop: 'b', restart: { max: -1 } }], /restart\.max: must be an integer from 0/, true],
    [[{ name: 'db', module: 'postgresql', dataDir: '../etc' }], /dataDir: must be a path inside/, true],
    [[{ name: 'db', module: 'postgresql', allowFrom: ['everyone'] }], /allowFrom\[0\]: must be a network/, true],
    [[{ name: 'db', module: 'postgresql', start: 'x' }], /a\[0\]\.start: unknown key/, true],
    [[{ name: 'x', start: 'a'.repeat(5000), stop: 'b' }], /start: at most 4096 bytes/, true],
  ];
  for (const [v, re, withFs] of bad) assert.throws(() => parseApplications(v, 'a', withFs ? fsCfg : null), re, JSON.stringify(v).slice(0, 100));
});

test('a failure counts only after threshold checks in a row; one success clears it', () => {
  const f = new FailureCount(3);
  assert.deepEqual([false, false, true, false, false, false].map((ok) => f.record(ok)), [false, false, false, false, false, true]);
});

test('restart budget: max restarts within the window, then failover; old restarts age out', () => {
  const b = new RestartBudget({ max: 2, windowMs: 1000 });
  assert.deepEqual(b.onFailure(0), { action: 'restart', attempt: 1 });
  assert.deepEqual(b.onFailure(100), { action: 'restart', attempt: 2 });
  assert.deepEqual(b.onFailure(200), { action: 'failover', restarts: 2 });
  // the first restart is a window old now
  assert.deepEqual(b.onFailure(1000), { action: 'restart', attempt: 2 });
  const none = new RestartBudget({ max: 0, windowMs: 1000 });
  assert.equal(none.onFailure(0).action, 'failover');
});

test('OCF exit codes: 0 running, 7 not running, others failed with their name', () => {
  assert.equal(ocfMeaning(0).ok, true);
  assert.deepEqual(ocfMeaning(7), { ok: false, message: 'not running (OCF_NOT_RUNNING)' });
  assert.match(ocfMeaning(5).message, /exit 5, OCF_ERR_INSTALLED/);
  assert.match(ocfMeaning(42).message, /exit 42\)/);
  assert.equal(ocfMeaning(null).ok, false);
});

test('script output keeps only its tail, whatever the script prints', async () => {
  const t = new OutputTail(10);
  for (const c of ['0123456789', 'abc', 'defghijklmnop']) t.push(Buffer.from(c));
  assert.equal(t.text(), '…ghijklmnop');
  const r = await runShell('head -c 1000000 /dev/zero | tr "\\0" x; echo END', { timeoutMs: 10_000, outputBytesMax: 100 });
  assert.equal(r.code, 0);
  assert.ok(r.output.length <= 101 && r.output.endsWith('xEND\n'), r.output);
});

test('a script past its timeout is killed with everything it started', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-script-'));
  try {
    const marker = path.join(dir, 'child.pid');
    const r = await runShell(`sleep 30 & echo $! > ${marker}; wait`, { timeoutMs: 300 });
    assert.equal(r.timedOut, true);
    assert.equal(r.code, null);
    const pid = Number(fs.readFileSync(marker, 'utf8'));
    await new Promise((res) => setTimeout(res, 100));
    // gone, or a zombie waiting for whoever reaps orphans here: either way it no longer runs
    let state = 'gone';
    try { state = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] ?? '?'; } catch { /* gone */ }
    assert.ok(state === 'gone' || state === 'Z', `the background child of the script still runs (state ${state})`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('checkers against real things: process, tcp, http, command', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-check-'));
  const ctx: CheckContext = { defaultHost: '127.0.0.1', env: { TANDEM_POOL: 'p' }, cwd: dir };
  const timing = { intervalMs: 1000, timeoutMs: 2000, failureThreshold: 1 };
  const tcp = net.createServer((s) => s.end());
  const web = http.createServer((req, res) => { res.statusCode = req.url === '/ok' ? 200 : 503; res.end(); });
  try {
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    const tcpPort = (tcp.address() as net.AddressInfo).port;
    const webPort = (web.address() as net.AddressInfo).port;
    const check = (c: CheckerConfig): Promise<boolean> => runChecker(c, ctx).then((r) => r.ok);
    fs.writeFileSync(path.join(dir, 'self.pid'), `${process.pid}\n`);
    fs.writeFileSync(path.join(dir, 'gone.pid'), '999999999\n');
    assert.equal(await check({ kind: 'process', pidFile: path.join(dir, 'self.pid'), timing }), true);
    assert.equal(await check({ kind: 'process', pidFile: path.join(dir, 'gone.pid'), timing }), false);
    assert.equal(await check({ kind: 'process', pidFile: path.join(dir, 'none.pid'), timing }), false);
    assert.equal(await check({ kind: 'tcp', host: null, port: tcpPort, timing }), true);
    tcp.close();
    assert.equal(await check({ kind: 'tcp', host: '127.0.0.1', port: tcpPort, timing }), false);
    assert.equal(await check({ kind: 'http', url: `http://127.0.0.1:${webPort}/ok`, expectStatus: [200, 399], timing }), true);
    assert.equal(await check({ kind: 'http', url: `http://127.0.0.1:${webPort}/down`, expectStatus: [200, 399], timing }), false);
    assert.equal(await check({ kind: 'command', command: 'test "$TANDEM_POOL" = p', timing }), true);
    const seven = await runChecker({ kind: 'command', command: 'exit 7', timing }, ctx);
    assert.deepEqual(seven, { ok: false, message: 'not running (OCF_NOT_RUNNING)' });
    const slow = await runChecker({ kind: 'command', command: 'sleep 5', timing: { ...timing, timeoutMs: 200 } }, ctx);
    assert.equal(slow.ok, false);
    assert.match(slow.message, /timed out after 200 ms/);
  } finally {
    tcp.close();
    web.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
