// Two real nodes (`tandem node start`) mirroring one volume, driven by real
// clients (fio, qemu-io) and real failures: kill -9 of either node during a
// write load, a cut sync link (through the link proxy), split brain on purpose,
// and a copy corrupted behind the node's back. The contract is docs/mirroring.md.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { overwriteFileRange } from '../helpers/files';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import {
  GiB, KiB, MiB, readFileRange, sha256File, sleep, withCluster, type Cluster, type ResyncStatus, type TandemNode,
  type NodeName, type NodeStatus, type VerifyResult, type VolumeStatus,
} from '../helpers/cluster';
import { describeFio, qemuIo, qemuIoExpect, readFioVerifyState, runFio, startFio, type FioJob } from '../helpers/fio';

const VOLUME_API = '/api/v1/volumes/vol0';
/** test c's activity log: 257 extents of 4 MiB (volumes[].activityLogExtents), half of its 2 GiB volume */
const AL_EXTENTS = 257;
const AL_BOUND_BYTES = AL_EXTENTS * 4 * MiB;

// ---------------------------------------------------------------- helpers

function onlyJob(jobs: FioJob[], what: string): FioJob {
  assert.equal(jobs.length, 1, `${what}: expected one fio job in the report`);
  return jobs[0] as FioJob;
}

/** A FLUSH through alpha's export: every acknowledged write durable on both copies. */
async function flushVia(n: TandemNode): Promise<void> {
  await qemuIoExpect(n.nbdUri, ['flush']);
}

/** Waits for PRIM/SECOND with nothing out of sync on either side. */
function waitInSync(c: Cluster, timeoutMs = 60_000): Promise<{ alpha: VolumeStatus | undefined; beta: VolumeStatus | undefined }> {
  return c.waitFor((v) => v.alpha?.state === 'PRIM' && v.beta?.state === 'SECOND' &&
    v.alpha.outOfSyncBytes === 0 && v.beta.outOfSyncBytes === 0 && v.alpha.resync === null && v.beta.resync === null,
  timeoutMs, 'alpha PRIM and beta SECOND, nothing out of sync, no resync running');
}

/** True when the file holds only zero bytes (a fresh volume, or data that never arrived). */
function allZero(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) return true;
      for (let i = 0; i < n; i++) if (buf[i] !== 0) return false;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Compares two files piece by piece; undefined when equal, else the first differing 4 MiB piece's offset. */
function firstDifference(a: string, b: string): number | undefined {
  const sa = fs.statSync(a).size;
  const sb = fs.statSync(b).size;
  if (sa !== sb) return Math.min(sa, sb);
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    const ba = Buffer.alloc(4 * MiB);
    const bb = Buffer.alloc(4 * MiB);
    for (let at = 0; at < sa; at += ba.length) {
      const na = fs.readSync(fa, ba, 0, ba.length, at);
      const nb = fs.readSync(fb, bb, 0, bb.length, at);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return at;
    }
    return undefined;
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** The resync that ran after `since` (ms), from the target's report or else the source's. */
function resyncAfter(v: { alpha: VolumeStatus | undefined; beta: VolumeStatus | undefined }, since: number): { from: NodeName; r: ResyncStatus } | undefined {
  for (const [from, s] of [['beta', v.beta], ['alpha', v.alpha]] as const) {
    const r = s?.lastResync;
    if (r !== null && r !== undefined && Date.parse(r.startedAt) >= since - 1000) return { from, r };
  }
  return undefined;
}

/**
 * The status JSON carries every field docs/mirroring.md documents, with its
 * type; returns the fields it has beyond those (not an error, but worth knowing).
 */
function checkStatusShape(s: NodeStatus, node: string): string[] {
  const extra: string[] = [];
  const has = (o: unknown, keys: Record<string, string>, where: string): void => {
    assert.ok(typeof o === 'object' && o !== null, `${node}: ${where} is not an object`);
    for (const [k, type] of Object.entries(keys)) {
      const v = (o as Record<string, unknown>)[k];
      const actual = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
      assert.ok(type.split('|').includes(actual), `${node}: ${where}.${k} is ${actual}, documented as ${type}`);
    }
    for (const k of Object.keys(o as object)) if (!(k in keys)) extra.push(`${where}.${k}`);
  };
  has(s, { node: 'string', peer: 'object', volumes: 'array' }, 'status');
  assert.equal(s.node, node);
  has(s.peer, { name: 'string', connected: 'boolean' }, 'peer');
  const v = s.volumes.find((x) => x.name === 'vol0');
  assert.ok(v !== undefined, `${node}: no vol0 in status`);
  has(v, {
    name: 'string', role: 'string', state: 'string', diskState: 'string', peerDiskState: 'string|null', connection: 'string',
    cacheMode: 'string', size: 'number', outOfSyncBytes: 'number', generations: 'object', resync: 'object|null',
    lastResync: 'object|null', splitBrain: 'object|string|null', counters: 'object',
  }, 'volumes[]');
  assert.ok(['PRIMARY', 'SECONDARY'].includes(v.role), `${node}: role ${v.role}`);
  assert.ok(['PRIM', 'SECOND', 'ALONE', 'SYNCING', 'SPLIT-BRAIN', 'WAIT'].includes(v.state), `${node}: state ${v.state}`);
  assert.ok(['connecting', 'connected', 'standalone'].includes(v.connection), `${node}: connection ${v.connection}`);
  has(v.generations, { current: 'string', bitmap: 'string', history: 'array' }, 'generations');
  has(v.counters, {
    writes: 'number', writeBytes: 'number', peerWriteBytes: 'number', peerZeroBytes: 'number',
    resyncBytes: 'number', resyncZeroBytes: 'number', resyncSkippedBytes: 'number',
  }, 'counters');
  for (const [k, r] of [['resync', v.resync], ['lastResync', v.lastResync]] as const) {
    if (r === null) continue;
    has(r, {
      direction: 'string', mode: 'string', totalBytes: 'number', doneBytes: 'number', rateBytesPerSecond: 'number',
      etaSeconds: 'number|null', sentBytes: 'number', zeroBytes: 'number', skippedBytes: 'number',
      startedAt: 'string', finishedAt: 'string|null',
    }, k);
    assert.ok(['to-peer', 'from-peer'].includes(r.direction), `${node}: ${k}.direction ${r.direction}`);
    assert.ok(['bitmap', 'full'].includes(r.mode), `${node}: ${k}.mode ${r.mode}`);
  }
  return extra;
}

// ---------------------------------------------------------------- a. fio with verify, both cache modes

for (const cacheMode of ['write-back', 'write-through'] as const) {
  test(`a. fio randwrite with crc32c verify on alpha (${cacheMode}): both copies identical after a FLUSH`, { timeout: 120_000 }, async (t) => {
    await withCluster({ size: '64M', cacheMode, prefix: 'tandem-mirror-a-' }, async (c) => {
      const v0 = await c.waitForStates('PRIM', 'SECOND', 60_000);
      assert.equal(v0.alpha?.role, 'PRIMARY');
      assert.equal(v0.beta?.role, 'SECONDARY');
      assert.equal(v0.alpha?.cacheMode, cacheMode);
      assert.equal(v0.alpha?.size, 64 * MiB);
      assert.ok(c.alpha.sawReadyLine && c.beta.sawReadyLine, 'each node prints "node NAME ready"');
      // the node whose name sorts first dials: alpha, through proxy A; nobody dials alpha
      assert.ok(c.proxyA.accepted >= 1, 'alpha never dialled beta');
      assert.equal(c.proxyB.accepted, 0, 'beta dialled alpha');

      const r = await runFio([
        '--name=mirror', '--ioengine=nbd', `--uri=${c.alpha.nbdUri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
        '--size=32M', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--end_fsync=1', '--verify_state_save=0',
        '--randseed=20261123',
      ], { timeoutMs: 100_000 });
      assert.equal(r.code, 0, describeFio(r));
      const j = onlyJob(r.jobs, 'fio');
      assert.equal(j.error, 0, describeFio(r));
      assert.equal(j.total_err ?? 0, 0);
      assert.equal(j.write.io_kbytes, 32 * 1024, 'every block written');
      assert.equal(j.read.io_kbytes, 32 * 1024, 'every block read back and verified through alpha');

      await flushVia(c.alpha);
      const v = await waitInSync(c, 30_000);
      t.diagnostic(`alpha counters ${JSON.stringify(v.alpha?.counters)}; beta counters ${JSON.stringify(v.beta?.counters)}`);
      const sa = await c.alpha.status();
      const sb = await c.beta.status();
      const extra = [...checkStatusShape(sa, 'alpha'), ...checkStatusShape(sb, 'beta')];
      if (extra.length > 0) t.diagnostic(`status fields beyond docs/mirroring.md: ${[...new Set(extra)].join(', ')}`);
      assert.deepEqual(sa.peer, { name: 'beta', connected: true });
      assert.deepEqual(sb.peer, { name: 'alpha', connected: true });
      for (const x of [v.alpha, v.beta]) {
        assert.equal(x?.diskState, 'UpToDate');
        assert.equal(x?.peerDiskState, 'UpToDate');
        assert.equal(x?.connection, 'connected');
        assert.equal(x?.splitBrain, null);
      }
      assert.equal(v.alpha?.counters.writeBytes, 32 * MiB, 'alpha counted the bytes fio wrote');
      assert.deepEqual(v.alpha?.generations.current, v.beta?.generations.current, 'copies in sync share their current generation');
      assert.equal(allZero(c.beta.backingPath), false, 'beta\'s copy is still all zeros: nothing was mirrored');
      const ha = sha256File(c.alpha.backingPath);
      const hb = sha256File(c.beta.backingPath);
      if (hb !== ha) assert.fail(`the copies differ (first difference in the 4 MiB piece at ${firstDifference(c.alpha.backingPath, c.beta.backingPath)})`);
    });
  });
}

// ---------------------------------------------------------------- b. kill -9 of the secondary

test('b. kill -9 beta during a write load: alpha goes on ALONE without errors, the resync copies only what changed', { timeout: 150_000 }, async (t) => {
  await withCluster({ size: '256M', prefix: 'tandem-mirror-b-' }, async (c) => {
    await waitInSync(c, 60_000);
    const region = { offset: 64 * MiB, size: 16 * MiB };
    const fio = startFio([
      '--name=load', '--ioengine=nbd', `--uri=${c.alpha.nbdUri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
      `--offset=${region.offset}`, `--size=${region.size}`, '--time_based', '--runtime=6', '--randseed=7',
    ], { timeoutMs: 60_000 });
    try {
      // the load is running once alpha counts writes
      await c.waitFor((v) => (v.alpha?.counters.writes ?? 0) > 0, 10_000, 'fio\'s first writes on alpha');
      await sleep(1500);
      await c.beta.kill9();
      const killedAt = Date.now();
      const alone = await c.waitFor((v) => v.alpha?.state === 'ALONE', 10_000, 'alpha ALONE after beta was killed');
      t.diagnostic(`alpha ALONE ${Date.now() - killedAt} ms after the kill`);
      assert.equal(alone.alpha?.role, 'PRIMARY');
      const writesAtAlone = alone.alpha?.counters.writes ?? 0;
      // alpha keeps serving: writes go on while beta is gone
      await c.waitFor((v) => (v.alpha?.counters.writes ?? 0) > writesAtAlone + 100, 10_000, 'alpha to keep taking writes ALONE');
    } finally {
      const r = await fio.done;
      assert.equal(r.code, 0, `fio saw errors when beta died:\n${describeFio(r)}`);
      const j = onlyJob(r.jobs, 'fio');
      assert.equal(j.error, 0, describeFio(r));
      assert.equal(j.total_err ?? 0, 0, describeFio(r));
      assert.ok(j.write.io_kbytes > 0);
    }

    const after = await c.alpha.volume();
    assert.equal(after.state, 'ALONE');
    const oos = after.outOfSyncBytes;
    t.diagnostic(`alpha out of sync after the load: ${oos} bytes`);
    assert.ok(oos > 0, 'alpha wrote without beta, yet reports nothing out of sync');
    assert.ok(oos <= region.size, `out of sync ${oos} bytes, but writes were confined to ${region.size} bytes`);

    const restartAt = Date.now();
    await c.beta.start();
    const v = await waitInSync(c, 60_000);
    const found = resyncAfter(v, restartAt);
    assert.ok(found !== undefined, `no lastResync after beta came back: alpha ${JSON.stringify(v.alpha?.lastResync)} beta ${JSON.stringify(v.beta?.lastResync)}`);
    const { from, r } = found;
    t.diagnostic(`lastResync on ${from}: ${JSON.stringify(r)}`);
    checkStatusShape(await c.node(from).status(), from);
    assert.equal(r.direction, from === 'beta' ? 'from-peer' : 'to-peer', 'alpha is the source, beta the target');
    assert.equal(r.mode, 'bitmap', 'a secondary that only missed writes gets a bitmap resync');
    assert.ok(r.totalBytes >= oos, `resync total ${r.totalBytes} < alpha's out-of-sync ${oos}`);
    assert.ok(r.totalBytes < 32 * MiB, `resync total ${r.totalBytes} bytes: more than twice the 16 MiB written`);
    assert.equal(r.doneBytes, r.totalBytes, 'a finished resync did all of its bytes');
    assert.ok(r.sentBytes > 0, 'the writes beta missed must cross the link');
    assert.ok(r.sentBytes <= r.totalBytes, `sent ${r.sentBytes} > total ${r.totalBytes}`);
    assert.ok(r.finishedAt !== null, 'lastResync.finishedAt');

    await flushVia(c.alpha);
    await waitInSync(c, 30_000);
    assert.equal(sha256File(c.beta.backingPath), sha256File(c.alpha.backingPath), 'the copies differ after the resync');
  });
});

// ---------------------------------------------------------------- c. kill -9 of the primary

test('c. kill -9 alpha (primary) during a write load: every acknowledged write survives, resync bounded by the activity log', { timeout: 240_000 }, async (t) => {
  await withCluster({ size: '2G', activityLogExtents: AL_EXTENTS, prefix: 'tandem-mirror-c-' }, async (c) => {
    await waitInSync(c, 150_000);
    const fioDir = path.join(c.dir, 'fio');
    fs.mkdirSync(fioDir);
    // random 4 KiB writes over the whole 2 GiB: far more extents than the activity log holds.
    // No time_based (verify_only refuses it); the kill ends the job long before 2 GiB.
    const job = ['--name=crash', '--rw=randwrite', '--bs=4k', '--size=2G', '--verify=crc32c', '--randseed=20261124'];
    const viaAlpha = ['--ioengine=nbd', `--uri=${c.alpha.nbdUri}`];
    // the completion latency log with offsets names every write fio saw acknowledged (fio logs no failed I/O)
    const fio = startFio([...job, ...viaAlpha, '--iodepth=16', '--do_verify=0', '--verify_state_save=1', '--write_lat_log=crash', '--log_offset=1'],
      { cwd: fioDir, timeoutMs: 120_000 });
    let killedAt = 0;
    try {
      await c.waitFor((v) => (v.alpha?.counters.writes ?? 0) >= 3000, 60_000, '3000 writes on alpha (some 500 extents touched)');
      await c.alpha.kill9();
      killedAt = Date.now();
    } finally {
      if (killedAt === 0) fio.kill();
      const r = await fio.done;
      // fio fails: its server died under it. What matters is what it saved: its verify state and its log.
      t.diagnostic(`write job: exit ${r.code}; ${r.stderr.split('\n').filter((l) => l.trim() !== '').slice(0, 2).join(' | ')}`);
      assert.notEqual(killedAt, 0, `fio ended before the kill:\n${describeFio(r)}`);
    }
    const stateFile = path.join(fioDir, 'local-crash-0-verify.state');
    assert.ok(fs.existsSync(stateFile), `fio saved no verify state (${fs.readdirSync(fioDir).join(', ')})`);
    const state = readFioVerifyState(stateFile);
    t.diagnostic(`fio verify state: ${state.issuedWrites} writes issued, depth ${state.depth}, ${state.completions.length} last completions`);
    assert.equal(state.depth, 16);
    const acked = new Set<number>();
    for (const line of fs.readFileSync(path.join(fioDir, 'crash_clat.1.log'), 'utf8').split('\n')) {
      const f = line.split(',').map((x) => x.trim());
      if (f.length >= 5 && f[2] === '1') acked.add(Number(f[4]));
    }
    t.diagnostic(`fio logged ${acked.size} acknowledged writes`);
    assert.ok(acked.size >= state.issuedWrites - state.depth && acked.size <= state.issuedWrites,
      `fio logged ${acked.size} completions of ${state.issuedWrites} writes issued (depth ${state.depth})`);
    // alpha counted 3000 writes; fio's own count of issued writes drops the ones it requeued
    // when the connection died, so it can be a little lower. 2000 random writes still touch
    // nearly all 512 extents, twice what the activity log holds.
    assert.ok(state.issuedWrites >= 2000, `only ${state.issuedWrites} writes issued`);

    /**
     * fio --verify_only with the saved state: it replays the job's offsets and
     * reads back, in issue order, every write issued before the last `depth`,
     * then those of the last `depth` it saw complete, up to the first it did
     * not. One read at a time, so its count of verified reads is exact.
     *
     * The state assumes writes complete about in issue order. They need not: a
     * write that waits for a new activity-log extent is overtaken by later
     * writes to hot extents, so one issued long before the last `depth` may
     * still be in flight when alpha dies. Only such a write, one fio never saw
     * acknowledged (it is not in the completion log), may read back other than
     * written. Any block fio's verify flags that the log lists is an
     * acknowledged write lost.
     */
    const verifyAcked = async (target: string[], where: string): Promise<void> => {
      // verify_state_save=0: a verify_only run would otherwise overwrite the state it loaded
      const saved = fs.readFileSync(stateFile);
      const vr = await runFio([...job, ...target, '--iodepth=1', '--verify_only=1', '--verify_state_load=1', '--verify_state_save=0',
        // a bad block ends the job otherwise: every one is wanted, to check each against the log
        '--continue_on_error=verify'],
        { cwd: fioDir, timeoutMs: 120_000 });
      assert.ok(fs.readFileSync(stateFile).equals(saved), 'fio rewrote the verify state');
      const bad = [...vr.stderr.matchAll(/requested block: offset=(\d+), length=\d+/g)].map((m) => Number(m[1]));
      const lost = bad.filter((o) => acked.has(o));
      assert.ok(bad.length <= state.depth, `${where}: ${bad.length} blocks differ, more than were in flight:\n${describeFio(vr)}`);
      assert.deepEqual(lost, [], `${where}: fio --verify_only found acknowledged writes lost or damaged:\n${describeFio(vr)}`);
      assert.ok(vr.code === 0 || bad.length > 0, `${where}: fio failed without naming a block:\n${describeFio(vr)}`);
      const j = onlyJob(vr.jobs, 'verify');
      t.diagnostic(`${where}: verified ${j.read.total_ios} of ${state.issuedWrites} issued writes; ${bad.length} unacknowledged writes read back as before`);
      assert.ok(j.read.total_ios >= state.issuedWrites - state.depth,
        `${where}: fio verified only ${j.read.total_ios} writes of ${state.issuedWrites} issued (depth ${state.depth})`);
      assert.ok(j.read.total_ios <= state.issuedWrites);
    };

    // beta lost its primary
    await c.waitFor((v) => v.beta?.state === 'WAIT', 15_000, 'beta WAIT after alpha died');
    // the survivor already holds every acknowledged write (read straight from its backing file, read-only)
    // (fio refuses --readonly for a write job; verify_only only reads, and the file's mtime says so)
    const mtime = fs.statSync(c.beta.backingPath).mtimeMs;
    await verifyAcked(['--ioengine=psync', `--filename=${c.beta.backingPath}`, '--fallocate=none'], 'beta\'s copy after the kill');
    assert.equal(fs.statSync(c.beta.backingPath).mtimeMs, mtime, 'fio --verify_only wrote to beta\'s backing file');

    // restart both: beta cleanly, alpha after its crash
    await c.beta.restart();
    const restartAt = Date.now();
    await c.alpha.start();
    const v = await waitInSync(c, 120_000);
    const found = resyncAfter(v, restartAt);
    assert.ok(found !== undefined, `no resync after alpha's crash: alpha ${JSON.stringify(v.alpha?.lastResync)} beta ${JSON.stringify(v.beta?.lastResync)}`);
    const { from, r } = found;
    t.diagnostic(`lastResync on ${from}: ${JSON.stringify(r)}`);
    assert.equal(r.direction, from === 'beta' ? 'from-peer' : 'to-peer', 'the crashed primary is the resync source');
    assert.ok(r.totalBytes > 0, 'a crashed primary must resync its activity-log extents');
    assert.ok(r.totalBytes <= AL_BOUND_BYTES, `resync of ${r.totalBytes} bytes exceeds the activity log's ${AL_BOUND_BYTES}`);
    assert.ok(r.totalBytes < 2 * GiB, 'the resync covered the whole volume');

    // every write fio saw acknowledged before the kill reads back intact through alpha's export
    await verifyAcked(viaAlpha, 'alpha\'s export after the restart');

    await flushVia(c.alpha);
    await waitInSync(c, 30_000);
    const diff = firstDifference(c.alpha.backingPath, c.beta.backingPath);
    assert.equal(diff, undefined, `the copies differ from offset ${diff}`);
  });
});

// ---------------------------------------------------------------- silent link

test('a silent sync link (blackhole): alpha goes ALONE within the timeout, the write waiting on beta completes, then only its region is resynced', { timeout: 120_000 }, async (t) => {
  const timeoutMs = 1500;
  await withCluster({ size: '64M', timeoutMs, prefix: 'tandem-mirror-silent-' }, async (c) => {
    await waitInSync(c, 60_000);
    c.blackholeLink();
    const started = Date.now();
    // this write's WRITE_ACK never comes: the peer is lost after timeoutMs and the write completes ALONE
    await qemuIoExpect(c.alpha.nbdUri, ['write -P 0x77 4M 1M', 'flush']);
    const took = Date.now() - started;
    t.diagnostic(`the write over a silent link took ${took} ms (sync.timeoutMs ${timeoutMs})`);
    assert.ok(took < 4 * timeoutMs, `a write waited ${took} ms on a silent peer; the timeout is ${timeoutMs} ms`);
    const alone = await c.waitFor((v) => v.alpha?.state === 'ALONE', 10_000, 'alpha ALONE on a silent link');
    assert.ok((alone.alpha?.outOfSyncBytes ?? 0) >= MiB, `out of sync ${alone.alpha?.outOfSyncBytes}, after 1 MiB written alone`);
    assert.ok((alone.alpha?.outOfSyncBytes ?? 0) <= 2 * MiB, `out of sync ${alone.alpha?.outOfSyncBytes}, after 1 MiB written alone`);
    assert.ok(c.proxyA.dropped.toTarget > 0, 'the proxy dropped nothing: the link was not silent');

    const restoredAt = Date.now();
    c.restoreLink();
    const v = await waitInSync(c, 30_000);
    const found = resyncAfter(v, restoredAt);
    assert.ok(found !== undefined, 'no resync after the link came back');
    t.diagnostic(`lastResync on ${found.from}: ${JSON.stringify(found.r)}`);
    assert.ok(found.r.totalBytes >= MiB && found.r.totalBytes <= 2 * MiB, `resync of ${found.r.totalBytes} bytes for 1 MiB written alone`);
    assert.ok(readFileRange(c.beta.backingPath, 4 * MiB, MiB).equals(Buffer.alloc(MiB, 0x77)), 'beta lacks the write made while the link was silent');
    assert.equal(sha256File(c.beta.backingPath), sha256File(c.alpha.backingPath), 'the copies differ');
  });
});

// ---------------------------------------------------------------- d. split brain

/** Cuts the link, promotes beta, writes 0xaa on alpha and 0xbb on beta. */
async function makeSplitBrain(c: Cluster, t: TestContext): Promise<void> {
  await waitInSync(c, 60_000);
  c.cutLink();
  await c.waitFor((v) => v.alpha?.state === 'ALONE' && v.beta?.state === 'WAIT', 15_000, 'alpha ALONE and beta WAIT after the cut');
  const p = await c.beta.post(`${VOLUME_API}/promote`, { force: false });
  assert.equal(p.status, 200, `promote beta while disconnected: HTTP ${p.status} ${JSON.stringify(p.body)}`);
  const vb = await c.beta.volume();
  assert.equal(vb.role, 'PRIMARY');
  assert.equal(vb.state, 'ALONE');
  await qemuIoExpect(c.alpha.nbdUri, ['write -P 0xaa 0 1M', 'flush']);
  await qemuIoExpect(c.beta.nbdUri, ['write -P 0xbb 0 1M', 'flush']);
  t.diagnostic('wrote 0xaa on alpha and 0xbb on beta while apart');
}

test('d1. split brain: both stop with SPLIT-BRAIN and keep their data; resolve discarding beta makes beta a copy of alpha', { timeout: 120_000 }, async (t) => {
  await withCluster({ size: '32M', afterSplitBrain: 'disconnect', prefix: 'tandem-mirror-d1-' }, async (c) => {
    await makeSplitBrain(c, t);
    c.restoreLink();
    const sb = await c.waitFor((v) => v.alpha?.state === 'SPLIT-BRAIN' && v.beta?.state === 'SPLIT-BRAIN', 20_000, 'SPLIT-BRAIN on both nodes');
    for (const [n, s] of [['alpha', sb.alpha], ['beta', sb.beta]] as const) {
      assert.equal(s?.connection, 'standalone', `${n}: connection`);
      assert.ok(s?.splitBrain !== null && s?.splitBrain !== undefined, `${n}: splitBrain says why`);
      assert.equal(s?.role, 'PRIMARY', `${n} is still primary`);
    }
    t.diagnostic(`splitBrain on alpha: ${JSON.stringify(sb.alpha?.splitBrain)}`);
    // it stays that way: standalone means no reconnect by itself
    await sleep(1500);
    const still = await c.volumes();
    assert.equal(still.alpha?.state, 'SPLIT-BRAIN');
    assert.equal(still.beta?.state, 'SPLIT-BRAIN');
    // each copy still holds its own data
    await qemuIoExpect(c.alpha.nbdUri, ['read -P 0xaa 0 1M']);
    await qemuIoExpect(c.beta.nbdUri, ['read -P 0xbb 0 1M']);
    assert.ok(readFileRange(c.alpha.backingPath, 0, MiB).equals(Buffer.alloc(MiB, 0xaa)), 'alpha\'s backing lost its 0xaa');
    assert.ok(readFileRange(c.beta.backingPath, 0, MiB).equals(Buffer.alloc(MiB, 0xbb)), 'beta\'s backing lost its 0xbb');

    const d = await c.beta.post(`${VOLUME_API}/demote`, {});
    assert.equal(d.status, 200, `demote beta: HTTP ${d.status} ${JSON.stringify(d.body)}`);
    const res = await c.beta.post(`${VOLUME_API}/resolve`, { discard: 'beta' });
    assert.equal(res.status, 200, `resolve discard beta on beta: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    const v = await waitInSync(c, 30_000);
    t.diagnostic(`after resolve: lastResync ${JSON.stringify(v.beta?.lastResync ?? v.alpha?.lastResync)}`);
    await flushVia(c.alpha);
    await waitInSync(c, 15_000);
    assert.ok(readFileRange(c.beta.backingPath, 0, MiB).equals(Buffer.alloc(MiB, 0xaa)), 'beta does not hold alpha\'s 0xaa');
    assert.equal(sha256File(c.beta.backingPath), sha256File(c.alpha.backingPath), 'beta is not a copy of alpha');
    // beta no longer exports the volume
    const gone = await qemuIo(c.beta.nbdUri, ['read 0 4k'], { allowFail: true });
    assert.notEqual(gone.code, 0, 'beta still serves vol0 after it was demoted');
  });
});

test('d2. split brain with afterSplitBrain discard-node:beta resolves by itself once beta is demoted', { timeout: 120_000 }, async (t) => {
  await withCluster({ size: '32M', afterSplitBrain: 'discard-node:beta', prefix: 'tandem-mirror-d2-' }, async (c) => {
    await makeSplitBrain(c, t);
    const d = await c.beta.post(`${VOLUME_API}/demote`, {});
    assert.equal(d.status, 200, `demote beta: HTTP ${d.status} ${JSON.stringify(d.body)}`);
    c.restoreLink();
    const v = await waitInSync(c, 30_000);
    t.diagnostic(`after the policy: lastResync ${JSON.stringify(v.beta?.lastResync ?? v.alpha?.lastResync)}`);
    await flushVia(c.alpha);
    await waitInSync(c, 15_000);
    assert.ok(readFileRange(c.beta.backingPath, 0, MiB).equals(Buffer.alloc(MiB, 0xaa)), 'beta still holds its own 0xbb (or neither)');
    assert.equal(sha256File(c.beta.backingPath), sha256File(c.alpha.backingPath), 'beta is not a copy of alpha');
    await qemuIoExpect(c.alpha.nbdUri, ['read -P 0xaa 0 1M']);
  });
});

// ---------------------------------------------------------------- e. online verify

test('e. verify finds nothing on synced copies, finds 64 KiB corrupted behind beta\'s back, and verify --resync repairs it', { timeout: 120_000 }, async (t) => {
  const size = 64 * MiB;
  await withCluster({ size: '64M', prefix: 'tandem-mirror-e-' }, async (c) => {
    await waitInSync(c, 60_000);
    await qemuIoExpect(c.alpha.nbdUri, ['write -P 0x5c 0 8M', 'write -P 0x3e 40M 2M', 'flush']);
    await waitInSync(c, 15_000);

    const clean = await c.alpha.postOk<VerifyResult>(`${VOLUME_API}/verify`, {});
    assert.equal(clean.checkedBytes, size, JSON.stringify(clean));
    assert.equal(clean.differingBytes, 0, JSON.stringify(clean));
    assert.deepEqual(clean.differing, []);
    assert.equal(clean.resentBytes, 0);

    // corrupt 64 KiB of beta's copy directly, while alpha is idle
    const at = 20 * MiB + 8 * KiB;
    const junk = Buffer.alloc(64 * KiB);
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 131 + 7) & 0xff || 1;
    overwriteFileRange(c.beta.backingPath, at, junk);
    assert.notEqual(sha256File(c.beta.backingPath), sha256File(c.alpha.backingPath));

    const bad = await c.alpha.postOk<VerifyResult>(`${VOLUME_API}/verify`, {});
    t.diagnostic(`verify after the corruption: ${JSON.stringify(bad)}`);
    assert.equal(bad.checkedBytes, size);
    assert.equal(bad.differingBytes, 64 * KiB, JSON.stringify(bad));
    assert.deepEqual(bad.differing, [{ offset: at, length: 64 * KiB }]);
    assert.equal(bad.resentBytes, 0, 'a verify without resync sends nothing');
    assert.ok(readFileRange(c.beta.backingPath, at, junk.length).equals(junk), 'a plain verify changed beta\'s copy');

    const fixed = await c.alpha.postOk<VerifyResult>(`${VOLUME_API}/verify`, { resync: true });
    t.diagnostic(`verify --resync: ${JSON.stringify(fixed)}`);
    assert.equal(fixed.differingBytes, 64 * KiB);
    assert.ok(fixed.resentBytes >= 64 * KiB, `resent ${fixed.resentBytes} bytes`);
    await flushVia(c.alpha);
    await waitInSync(c, 15_000);
    assert.equal(sha256File(c.beta.backingPath), sha256File(c.alpha.backingPath), 'verify --resync did not repair beta');
    const again = await c.alpha.postOk<VerifyResult>(`${VOLUME_API}/verify`, {});
    assert.equal(again.differingBytes, 0, JSON.stringify(again));
  });
});
