// `tandem wait-sync` and `tandem verify --wait` against real resyncs: progress as plain lines
// in a pipe and as a bar on a terminal, exit 0 only once the copies are in sync, 1 on a
// --timeout, on a volume disconnected by hand and on a split brain, which the operator then
// resolves with the commands docs/troubleshooting.md gives.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { withCluster, type Cluster } from '../helpers/cluster';
import { qemuIoExpect } from '../helpers/fio';
import { validate, type Schema } from '../helpers/json-schema';
import { repoRoot } from '../helpers/serve-process';
import { apiOf, describeRun, tandem, tandemOnTerminal, type CliResult } from '../helpers/tandem-cli';

const schema = JSON.parse(fs.readFileSync(path.join(repoRoot, 'docs', 'status.schema.json'), 'utf8')) as Schema;

function exited(args: readonly string[], r: CliResult, code: number): void {
  assert.equal(r.code, code, describeRun(args, r));
}

async function inSyncNow(c: Cluster): Promise<void> {
  const v = await c.volumes();
  assert.equal(v.alpha?.state, 'PRIM', `alpha: ${JSON.stringify(v.alpha)}`);
  assert.equal(v.beta?.state, 'SECOND', `beta: ${JSON.stringify(v.beta)}`);
  assert.equal(v.beta?.outOfSyncBytes, 0);
  assert.equal(v.beta?.resync, null);
}

test('wait-sync during the initial sync: lines in a pipe, a bar on a terminal, exit 0 once in sync; --timeout exits 1; verify waits with --wait and is refused without', { timeout: 180_000 }, async (t) => {
  // 64 MiB at 4 MiB/s: the initial sync runs for about 16 s
  await withCluster({ size: '64M', resyncRate: '4M', prefix: 'tandem-cli-wait-' }, async (c) => {
    const alpha = apiOf(c.alpha);
    const beta = apiOf(c.beta);
    await c.waitFor((v) => v.beta?.resync?.direction === 'from-peer' && v.beta.resync.totalBytes > 0, 30_000, 'beta resyncing from alpha');

    const plainArgs = ['wait-sync', 'vol0', '--api', beta];
    const ttyArgs = ['wait-sync', 'vol0', '--api', beta];
    const verifyArgs = ['verify', 'vol0', '--wait', '--api', alpha];
    const plain = tandem(plainArgs);
    const onTerminal = tandemOnTerminal(ttyArgs, 100);
    const verifyWait = tandem(verifyArgs);

    const early = await tandem(['verify', 'vol0', '--api', alpha]);
    exited(['verify'], early, 1);
    assert.match(early.stderr, /not connected and in sync with its peer \(ERR_NOT_CONNECTED\)/);

    const short = await tandem(['wait-sync', 'vol0', '--timeout', '1s', '--api', beta]);
    exited(['wait-sync --timeout 1s'], short, 1);
    assert.match(short.stderr, /timed out after \d+ s: vol0 is still not in sync \(SYNCING from alpha: \d+% /);
    assert.ok(short.ms < 8000, `wait-sync --timeout 1s took ${short.ms} ms`);

    const p = await plain;
    exited(plainArgs, p, 0);
    await inSyncNow(c);
    const lines = p.stdout.trimEnd().split('\n');
    const progress = lines.filter((l) => /^\d\d:\d\d:\d\d vol0: SYNCING from alpha: \d+% \(.+ of .+\), .+\/s, ETA \d+:\d\d$/.test(l));
    t.diagnostic(`${progress.length} progress lines in a pipe, the last: ${progress[progress.length - 1] ?? '-'}`);
    assert.ok(progress.length >= 2, `fewer than two progress lines in a pipe:\n${p.stdout}`);
    const percents = progress.map((l) => Number(/: (\d+)% /.exec(l)?.[1]));
    assert.deepEqual([...percents].sort((x, y) => x - y), percents, 'the percentages went down');
    assert.match(lines[lines.length - 1] as string, /vol0 is in sync: SECOND on beta, alpha UpToDate \(waited \d+ s\)$/);
    assert.doesNotMatch(p.stdout, /\r|\x1b\[/, 'terminal control codes in a pipe');

    const tty = await onTerminal;
    exited(ttyArgs, tty, 0);
    assert.match(tty.stdout, /\rvol0 SYNCING from alpha {2}\[#*-*\] +\d+% {2}.+ of .+ {2}.+\/s {2}ETA \d+:\d\d\x1b\[K/, `no progress bar on a terminal: ${JSON.stringify(tty.stdout)}`);
    assert.match(tty.stdout, /vol0 is in sync/);

    const v = await verifyWait;
    exited(verifyArgs, v, 0);
    assert.match(v.stdout, /vol0 is in sync: PRIM on alpha[\s\S]*vol0: checked 64 MiB: the copies are identical/);
  });
});

test('wait-sync exits 1 on a volume disconnected by hand, and 0 once it is connected again', { timeout: 120_000 }, async () => {
  await withCluster({ size: '16M', prefix: 'tandem-cli-wait-dc-' }, async (c) => {
    const beta = apiOf(c.beta);
    exited(['wait-sync'], await tandem(['wait-sync', 'vol0', '--api', beta, '--timeout', '60s']), 0);
    exited(['disconnect'], await tandem(['disconnect', 'vol0', '--api', beta]), 0);
    const stuck = await tandem(['wait-sync', 'vol0', '--api', beta]);
    exited(['wait-sync'], stuck, 1);
    assert.match(stuck.stderr, /vol0 does not replicate and will not reconnect by itself: disconnected by the operator \(fix the cause, then tandem connect vol0\)/);
    exited(['connect'], await tandem(['connect', 'vol0', '--api', beta]), 0);
    exited(['wait-sync'], await tandem(['wait-sync', 'vol0', '--api', beta, '--timeout', '60s']), 0);
    await inSyncNow(c);
  });
});

test('split brain: wait-sync exits 1 on both nodes, status shows it, and demote + resolve + wait-sync bring the copies back', { timeout: 180_000 }, async (t) => {
  await withCluster({ size: '32M', afterSplitBrain: 'disconnect', prefix: 'tandem-cli-wait-sb-' }, async (c) => {
    const alpha = apiOf(c.alpha);
    const beta = apiOf(c.beta);
    exited(['wait-sync'], await tandem(['wait-sync', 'vol0', '--api', beta, '--timeout', '60s']), 0);
    c.cutLink();
    await c.waitFor((v) => v.alpha?.state === 'ALONE' && v.beta?.state === 'WAIT', 15_000, 'alpha ALONE and beta WAIT after the cut');
    exited(['promote'], await tandem(['promote', 'vol0', '--api', beta]), 0);
    await qemuIoExpect(c.alpha.nbdUri, ['write -P 0xaa 0 1M', 'flush']);
    await qemuIoExpect(c.beta.nbdUri, ['write -P 0xbb 0 1M', 'flush']);
    c.restoreLink();
    await c.waitFor((v) => v.alpha?.state === 'SPLIT-BRAIN' && v.beta?.state === 'SPLIT-BRAIN', 20_000, 'SPLIT-BRAIN on both nodes');

    for (const api of [alpha, beta]) {
      const r = await tandem(['wait-sync', 'vol0', '--api', api]);
      exited(['wait-sync', api], r, 1);
      assert.match(r.stderr, /vol0 is in split brain: .+; nothing resyncs until an operator decides \(tandem resolve, docs\/troubleshooting\.md\)/);
      assert.ok(r.ms < 10_000, `wait-sync took ${r.ms} ms to see a split brain`);
    }
    const shown = await tandem(['status', '--api', alpha]);
    exited(['status'], shown, 0);
    assert.match(shown.stdout, /vol0 +PRIMARY +SPLIT-BRAIN .+ standalone/);
    assert.match(shown.stdout, /split brain since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: /);
    const check = validate(schema, await c.alpha.status());
    assert.deepEqual(check.errors, [], 'the status of a split brain does not match docs/status.schema.json');
    assert.ok(check.visited.has('#/$defs/volume/properties/splitBrain/properties/reason'), 'the split brain\'s reason was not checked against the schema');

    // the procedure of docs/troubleshooting.md: keep alpha's copy, discard beta's
    exited(['demote'], await tandem(['demote', 'vol0', '--api', beta]), 0);
    exited(['resolve'], await tandem(['resolve', 'vol0', '--discard', 'beta', '--api', beta]), 0);
    const back = await tandem(['wait-sync', 'vol0', '--api', beta, '--timeout', '60s']);
    exited(['wait-sync'], back, 0);
    t.diagnostic(`after resolve: ${back.stdout.trimEnd().split('\n').pop() ?? ''}`);
    await inSyncNow(c);
    await qemuIoExpect(c.alpha.nbdUri, ['read -P 0xaa 0 1M']);
    exited(['verify'], await tandem(['verify', 'vol0', '--api', alpha]), 0);
  });
});
