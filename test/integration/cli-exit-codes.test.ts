// The `tandem` command's exit codes, as scripts rely on them (docs/operations.md, "Exit codes"),
// each from a real process: 0 done, 1 refused or failed, 2 usage error, 3 the node's API
// cannot be reached. The refusals come from a real two-node cluster; "unreachable" from a
// closed port, a listener that never answers, and servers that are not the Tandem API.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { overwriteFileRange } from '../helpers/files';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { KiB, MiB, freePort, withCluster } from '../helpers/cluster';
import { validate, type Schema } from '../helpers/json-schema';
import { repoRoot } from '../helpers/serve-process';
import { apiOf, describeRun, tandem, type CliResult } from '../helpers/tandem-cli';

const schema = JSON.parse(fs.readFileSync(path.join(repoRoot, 'docs', 'status.schema.json'), 'utf8')) as Schema;

function expectExit(args: readonly string[], r: CliResult, code: number, stderrPattern?: RegExp): void {
  assert.equal(r.code, code, describeRun(args, r));
  if (stderrPattern !== undefined) assert.match(r.stderr, stderrPattern, describeRun(args, r));
}

async function run(args: string[], code: number, stderrPattern?: RegExp): Promise<CliResult> {
  const r = await tandem(args, { timeoutMs: 60_000 });
  expectExit(args, r, code, stderrPattern);
  return r;
}

/** Servers on 127.0.0.1 that take connections but are not a node's API; closed at the end. */
async function impostors(): Promise<{ silent: string; text: string; json404: string; close(): Promise<void> }> {
  const held: net.Socket[] = [];
  const silent = net.createServer((s) => { held.push(s); });
  const text = http.createServer((_req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end('<html>hello</html>'); });
  const json404 = http.createServer((_req, res) => { res.writeHead(404, { 'content-type': 'application/json' }); res.end('{"detail":"not here"}'); });
  const listen = (s: net.Server): Promise<string> => new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(s.address() as net.AddressInfo).port}`)));
  const [a, b, c] = [await listen(silent), await listen(text), await listen(json404)];
  return {
    silent: a, text: b, json404: c,
    close: async () => {
      for (const s of held) s.destroy();
      await Promise.all([silent, text, json404].map((s) => new Promise<void>((r) => { (s as http.Server).closeAllConnections?.(); s.close(() => r()); })));
    },
  };
}

test('exit 2: usage errors, each with the usage text on stderr; --help and help exit 0', async () => {
  await run(['frobnicate'], 2, /unknown command "frobnicate"[\s\S]*usage: tandem COMMAND/);
  await run(['status', 'vol0'], 2, /status takes no arguments[\s\S]*usage: tandem status/);
  await run(['status', '--bogus'], 2, /--bogus/);
  await run(['status', '--resync'], 2, /status does not take --resync/);
  await run(['status', '--api', 'nonsense'], 2, /--api: "nonsense" is not HOST:PORT/);
  await run(['verify'], 2, /verify needs exactly one VOLUME/);
  await run(['verify', 'vol0', '--timeout', '5s'], 2, /--timeout bounds --wait/);
  await run(['wait-sync', 'vol0', '--timeout', 'soon'], 2, /--timeout: "soon" is not a duration/);
  await run(['wait-sync'], 2, /wait-sync needs exactly one VOLUME/);
  await run(['resolve', 'vol0'], 2, /resolve needs --discard NODE/);
  await run(['pool'], 2, /pool needs a subcommand: move/);
  await run(['pool', 'move', 'pool0'], 2, /pool move needs POOL and --node NODE/);
  await run(['maintenance', 'maybe'], 2, /maintenance takes on or off/);
  await run(['activity', '--level', 'loud'], 2, /--level: "loud" is not one of info, warn, error/);
  await run(['activity', '-n', 'many'], 2, /-n: "many" is not a number of lines/);
  await run(['node'], 2, /node needs a subcommand/);
  await run(['node', 'start'], 2, /--config is required/);
  await run(['witness', '--config', 'w.json'], 2, /--listen is required/);
  const help = await run(['status', '--help'], 0);
  assert.match(help.stdout, /exit status:[\s\S]*3 {2}the node's API cannot be reached/, 'the commands\' help documents the exit codes');
  const top = await run(['help'], 0);
  assert.match(top.stdout, /wait-sync VOLUME[\s\S]*exit status:/);
});

test('exit 3: nothing listens, a listener that never answers, and servers that are not the Tandem API', async () => {
  const closed = `127.0.0.1:${await freePort('127.0.0.1')}`;
  const other = await impostors();
  try {
    await run(['status', '--api', closed], 3, /unreachable: nothing listens at 127\.0\.0\.1:\d+ \(connection refused\)/);
    // TANDEM_API is where the commands look when --api is not given
    const viaEnv = await tandem(['status'], { env: { TANDEM_API: closed } });
    expectExit(['status'], viaEnv, 3, new RegExp(`nothing listens at ${closed.replace(/\./g, '\\.')}`));
    await run(['swap', 'pool0', '--api', closed], 3, /nothing listens/);

    const slow = await run(['status', '--api', other.silent, '--timeout', '1s'], 3, /did not answer within 1 s/);
    assert.ok(slow.ms < 10_000, `status --timeout 1s took ${slow.ms} ms`);
    await run(['swap', 'pool0', '--api', other.silent, '--timeout', '1s'], 3, /did not answer within 1 s: the command may still take effect/);
    await run(['status', '--api', other.text], 3, /answered HTTP 200 with something that is not JSON: not the Tandem API/);
    await run(['promote', 'vol0', '--api', other.json404], 3, /answered HTTP 404 without a Tandem error/);

    const waited = await run(['wait-sync', 'vol0', '--api', closed, '--timeout', '2s'], 3, /unreachable: nothing listens[\s\S]*gave up after/);
    assert.ok(waited.ms >= 1500 && waited.ms < 15_000, `wait-sync --timeout 2s against a closed port took ${waited.ms} ms`);
    assert.match(waited.stdout, /retrying/, 'wait-sync says it keeps trying an API that does not answer');
    await run(['verify', 'vol0', '--wait', '--timeout', '1s', '--api', closed], 3, /unreachable/);
  } finally {
    await other.close();
  }
});

test('exit 1: a node or witness that cannot start', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-cli-exit-'));
  try {
    await run(['node', 'start', '--config', path.join(dir, 'missing.json')], 1, /error: ENOENT/);
    fs.writeFileSync(path.join(dir, 'bad.json'), '{ "cluster": ');
    await run(['node', 'start', '--config', path.join(dir, 'bad.json')], 1, /error: config: not JSON/);
    fs.writeFileSync(path.join(dir, 'witness.json'), JSON.stringify({ stateFile: 'state.json', clusters: [{ id: 'nothex', secret: '00' }] }));
    await run(['witness', '--listen', '127.0.0.1:0', '--config', path.join(dir, 'witness.json')], 1, /clusters\[0\]\.id: must be 32 hex digits/);
    // the examples' addresses are not this host's: check says so before a start would fail on them
    const check = await run(['node', 'check', '--config', path.join(repoRoot, 'deploy', 'examples', 'active-standby', 'beta.json')], 1,
      /error: node\.syncListen: 198\.18\.1\.12 is not an address of this host \(is this the other node's file\?\)/);
    assert.match(check.stdout, /^node beta of cluster store, peer alpha at 198\.18\.1\.11:7788$/m);
    await run(['node', 'check', '--config', path.join(dir, 'bad.json')], 1, /error: config: not JSON/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('exit 0 for what a running cluster does, exit 1 for what it refuses', { timeout: 180_000 }, async (t) => {
  await withCluster({ size: '32M', prefix: 'tandem-cli-exit-' }, async (c) => {
    const alpha = apiOf(c.alpha);
    const beta = apiOf(c.beta);
    await run(['wait-sync', 'vol0', '--api', beta, '--timeout', '60s'], 0);
    await c.waitForStates('PRIM', 'SECOND', 30_000);

    assert.match((await run(['node', 'check', '--config', c.alpha.configPath], 0)).stdout, /: ok\n$/);

    const table = await run(['status', '--api', alpha], 0);
    for (const want of [/^cluster test as seen by alpha/, /^NODES$/m, /^ {2}beta +peer +connected +up +1\/1 up/m, /^POOLS$/m, /^ {2}vol0 +alpha +\d+ +ACTIVE/m,
      /^VOLUMES$/m, /^ {2}vol0 +PRIMARY +PRIM +UpToDate +UpToDate +connected +0 +-$/m]) {
      assert.match(table.stdout, want, `status table:\n${table.stdout}`);
    }
    assert.doesNotMatch(table.stdout, /\x1b\[/, 'colour codes in output that is not a terminal');
    const json = await run(['status', '--json', '--api', beta], 0);
    const parsed = JSON.parse(json.stdout) as unknown;
    assert.deepEqual(validate(schema, parsed).errors, [], 'status --json prints the status JSON');
    assert.equal((parsed as { node: string }).node, 'beta');

    await run(['maintenance', 'on', '--api', alpha], 0);
    assert.match((await run(['status', '--api', alpha], 0)).stdout, /MAINTENANCE ON at alpha: nothing moves automatically/);
    await run(['maintenance', 'off', '--api', alpha], 0);

    await run(['swap', 'vol0', '--api', beta], 1, /error: .*\(ERR_REFUSED\)/);
    await run(['pool', 'move', 'vol0', '--node', 'beta', '--api', beta], 1, /owned by alpha: ask alpha's API to move it \(ERR_NOT_OWNER\)/);
    await run(['promote', 'vol0', '--api', beta], 1, /error: /);
    await run(['verify', 'nosuch', '--api', alpha], 1, /no volume named "nosuch" on alpha \(ERR_UNKNOWN_VOLUME\)/);
    await run(['wait-sync', 'nosuch', '--api', alpha], 1, /no volume named "nosuch" on alpha/);
    await run(['resolve', 'vol0', '--discard', 'beta', '--api', alpha], 1, /run resolve on beta.*\(ERR_RESOLVE_ON_LOSER\)/);

    const log = await run(['activity', '--pool', 'vol0', '--api', alpha], 0);
    assert.match(log.stdout, /^activity log of alpha, pool vol0: \d+ of \d+ entries, oldest first$/m);
    assert.match(log.stdout, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ {2}info {3}pool-run {10}pool vol0: promote vol0: done in \d+ ms$/m, log.stdout);
    assert.match(log.stdout, /activated +pool vol0: ACTIVE at term 1/);
    const entries = JSON.parse((await run(['activity', '-n', '2', '--json', '--api', alpha], 0)).stdout) as unknown[];
    assert.equal(entries.length, 2, 'activity -n 2 --json');
    await run(['activity', '--pool', 'nosuch', '--api', alpha], 1, /no pool named "nosuch" on alpha \(it has vol0\) \(ERR_UNKNOWN_POOL\)/);

    const clean = await run(['verify', 'vol0', '--api', alpha], 0);
    assert.match(clean.stdout, /vol0: checked 32 MiB: the copies are identical/);

    // 64 KiB of beta's copy changed behind its back: verify finds it and fails until --resync repairs it
    const at = 8 * MiB;
    const junk = Buffer.alloc(64 * KiB, 0x5a);
    overwriteFileRange(c.beta.backingPath, at, junk);
    const found = await run(['verify', 'vol0', '--api', alpha], 1);
    assert.match(found.stdout, new RegExp(`64 KiB differ\\n {2}offset ${at} length ${64 * KiB}\\nto make the peer a copy`), found.stdout);
    const asJson = await run(['verify', 'vol0', '--json', '--api', alpha], 1);
    assert.equal((JSON.parse(asJson.stdout) as { differingBytes: number }).differingBytes, 64 * KiB, 'verify --json prints the result, and still exits 1');
    const repaired = await run(['verify', 'vol0', '--resync', '--api', alpha], 0);
    assert.match(repaired.stdout, /resent 64 KiB from alpha/);
    await run(['verify', 'vol0', '--api', alpha], 0);
    t.diagnostic('status, --json, maintenance, verify (clean, differing, --resync) and six refusals checked');
  });
});

test('an INACTIVE pool, as docs/troubleshooting.md reads it: status gives the reason, activity the failed step and its undo; promote retries once the cause is gone', { timeout: 120_000 }, async () => {
  const vip = `127.0.${100 + Math.floor(Math.random() * 100)}.${10 + Math.floor(Math.random() * 200)}`;
  const nbdPort = await freePort(vip);
  // another program holds the pool's export port on its floating IP before the cluster starts
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen({ host: vip, port: nbdPort, exclusive: true }, resolve));
  try {
    await withCluster({
      size: '16M', prefix: 'tandem-cli-inactive-',
      extraConfig: () => ({ floatingIp: { driver: 'loopback' } }),
      pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', floatingIps: [{ address: `${vip}/8` }], nbdPort }],
    }, async (c) => {
      const alpha = apiOf(c.alpha);
      const deadline = Date.now() + 30_000;
      let shown = '';
      while (Date.now() < deadline) {
        shown = (await run(['status', '--api', alpha], 0)).stdout;
        if (/pool0 +alpha +\d+ +INACTIVE/.test(shown)) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.match(shown, new RegExp(`pool0 +alpha +\\d+ +INACTIVE +.*port ${nbdPort} on ${vip.replace(/\./g, '\\.')} is taken by another program`), shown);
      assert.match(shown, /why: tandem activity --pool pool0 \(docs\/troubleshooting\.md\)/);
      const log = (await run(['activity', '--pool', 'pool0', '--level', 'warn', '--api', alpha], 0)).stdout;
      assert.match(log, new RegExp(`pool-run +pool pool0: export vol0 on ${vip.replace(/\./g, '\\.')}:${nbdPort}: failed after \\d+ ms: .*port ${nbdPort} on .* is taken by another program`), log);
      assert.match(`${log}${(await run(['activity', '--pool', 'pool0', '--api', alpha], 0)).stdout}`, /pool-undo +pool pool0: undo promote vol0: done in \d+ ms/);

      await new Promise<void>((resolve) => squatter.close(() => resolve()));
      await run(['promote', 'vol0', '--api', alpha], 0);
      const after = (await run(['status', '--api', alpha], 0)).stdout;
      assert.match(after, /pool0 +alpha +\d+ +ACTIVE/, after);
      assert.match(after, new RegExp(`export +nbd://${vip.replace(/\./g, '\\.')}:${nbdPort}\\n`));
    });
  } finally {
    if (squatter.listening) await new Promise<void>((resolve) => squatter.close(() => resolve()));
  }
});
