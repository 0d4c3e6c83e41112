// The mirrored section of `npm run bench`: one volume mirrored between two
// `tandem node start` processes (alpha 127.0.0.2, primary; beta 127.0.0.3),
// against `tandem serve` alone and against a plain local copy.
//
// - fio jobs: the single-node job definitions (and a 4 KiB QD32 random write),
//   through fio's nbd engine at alpha's export, cacheMode write-back, measured
//   only once the status API shows alpha PRIM and beta SECOND with no resync
//   running (the initial sync of the sparse volume is over). Each job gets a
//   fresh cluster, as each single-node job gets a fresh backing file.
// - resync: a volume of --resync-size filled with incompressible data by fio
//   through alpha while beta has never run; then beta starts with an empty data
//   dir and does a full initial sync, timed from its spawn to the first poll
//   (every 50 ms) where its status shows SECOND with the resync finished. The
//   reference is `cp --sparse=never` of alpha's backing file to a new file in
//   the same directory followed by `sync --data` of the copy, timed together:
//   the resync target ends with a flush too (and checkpoints, flush + bitmap,
//   every second on the way), so both finish with the whole copy durable, and
//   neither drops the page cache. cp uses copy_file_range (an in-kernel copy)
//   here; a userspace `dd bs=1M conv=fdatasync` is somewhat slower. The full
//   resync is measured with checksumResync false; a second full resync with
//   checksumResync true (the target hashes its own blocks first) is an extra
//   line. Then beta is stopped (SIGTERM), 1 % of the volume is written at
//   random 64 KiB-aligned places on alpha, beta restarts, and the incremental
//   (bitmap) resync is timed the same way and compared with the full one.
import fs from 'node:fs';
import path from 'node:path';
import { BenchCluster, inSync, type Both, type NodeName, type VolumeStatus } from './cluster';
import { extraJobs, fioOnce, jobById, latencyKey, precondition, type BenchConfig, type Job, type Unit } from './jobs';
import { execOk } from './procs';
import type { Target } from './table';

const MiB = 1024 * 1024;

/** Per node start, extra `node` arguments (e.g. --cpu-prof); tag names the run. */
export type NodeArgs = (node: NodeName, tag: string) => string[];

export interface MirroredConfig extends BenchConfig {
  /** the volume of the resync measurements */
  readonly resyncSize: number;
  readonly nodeArgs: NodeArgs;
}

/** One row of the mirrored fio table: a value the job returns, mirrored against single. */
export interface MirroredFioJob {
  /** the --only id */
  readonly id: string;
  readonly job: Job;
  /** the key in the job's values */
  readonly key: string;
  readonly label: string;
  readonly unit: Unit;
  /** on mirrored/single */
  readonly target: Target;
}

export const mirroredFioJobs: readonly MirroredFioJob[] = [
  {
    id: 'mirrored-seqwrite-1m', job: jobById('seqwrite-1m'), key: 'seqwrite-1m',
    label: '1 MiB sequential write, QD8', unit: 'MiB/s', target: { op: '>=', value: 0.8 },
  },
  {
    id: 'mirrored-randwrite-4k-qd1', job: jobById('randwrite-4k-qd1'), key: latencyKey('randwrite-4k-qd1'),
    label: '4 KiB random write, QD1, mean latency', unit: 'µs', target: { op: '<=', value: 1.5 },
  },
  {
    id: 'mirrored-randwrite-4k-qd32', job: extraJobs[0] as Job, key: 'randwrite-4k-qd32',
    label: '4 KiB random write, QD32', unit: 'IOPS', target: { op: '>=', value: 0.7 },
  },
];

export const resyncId = 'resync';
export const mirroredIds: readonly string[] = [...mirroredFioJobs.map((m) => m.id), resyncId];

const initialSyncTimeoutMs = 300_000;

function timer(): () => string {
  let mark = process.hrtime.bigint();
  return () => {
    const now = process.hrtime.bigint();
    const s = (Number(now - mark) / 1e9).toFixed(1);
    mark = now;
    return s;
  };
}

const seconds = (from: bigint, to: bigint): number => Number(to - from) / 1e9;

/**
 * One fio job against a fresh mirrored volume of the job's backing size:
 * both nodes started, the initial sync awaited, the job run at alpha's export.
 */
export async function measureMirrored(job: Job, cfg: MirroredConfig, work: string, round: number): Promise<{ values: Record<string, number>; phases: string }> {
  const backing = job.backing(cfg);
  if (backing.kind !== 'sparse') throw new Error(`${job.id}: the mirrored section runs write jobs on sparse volumes only`);
  const dir = fs.mkdtempSync(path.join(work, `mirrored-${job.id}-r${round}-`));
  const lap = timer();
  const cluster = await BenchCluster.create(dir, { size: backing.size, cacheMode: 'write-back', checksumResync: false });
  try {
    await execOk('sync', [], 300_000);
    const prep = lap();
    const tag = `${job.id}-r${round + 1}`;
    await Promise.all([cluster.alpha.start(cfg.nodeArgs('alpha', tag)), cluster.beta.start(cfg.nodeArgs('beta', tag))]);
    await cluster.waitFor(inSync, 'the initial sync (alpha PRIM, beta SECOND)', initialSyncTimeoutMs, 100);
    // every block written once, as on the single side (jobs.ts precondition)
    await precondition(cluster.uri, backing.size);
    await cluster.waitFor(inSync, 'alpha PRIM and beta SECOND after preconditioning', initialSyncTimeoutMs, 100);
    const start = lap();
    let values: Record<string, number>;
    try {
      values = await job.run(cluster.uri, cfg);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${cluster.logs(10)}`);
    }
    const run = lap();
    // the figure is a mirrored one only if beta took every write: no peer loss during the run
    const after = await cluster.volumes();
    if (!inSync(after)) {
      throw new Error(`the mirror did not hold during ${job.id}: alpha ${after.alpha?.state ?? 'down'}, beta ${after.beta?.state ?? 'down'}\n${cluster.logs(10)}`);
    }
    await cluster.stopAll();
    return { values, phases: `sync ${prep} s, start+initial sync+precondition ${start} s, run ${run} s, stop ${lap()} s` };
  } finally {
    await cluster.destroy();
  }
}

/** One round of the resync measurements. */
export interface ResyncSample {
  /** cp --sparse=never + sync --data of the backing file */
  refS: number;
  /** full initial resync, checksumResync false: beta spawn to SECOND */
  fullS: number;
  /** the same resync as alpha timed it: its start (after the meeting) to beta's RESYNC_DONE */
  fullResyncS: number;
  fullSentBytes: number;
  /** the same with checksumResync true */
  checksumS: number;
  checksumResyncS: number;
  /** bitmap resync after 1 % was written while beta was down */
  incrS: number;
  incrResyncS: number;
  incrSentBytes: number;
  incrTotalBytes: number;
  incrWrittenBytes: number;
  /** human-readable details for the log */
  notes: string[];
}

interface Timed {
  s: number;
  readyS: number;
  alpha: VolumeStatus;
  beta: VolumeStatus;
  /** beta showed SECOND while its resync had not finished (between the handshake and RESYNC_START) */
  sawEarlySecond: boolean;
  /** alpha showed PRIM while its resync to beta was running */
  sawPrimDuringResync: boolean;
}

/** beta (stopped) is started and timed from its spawn until its status shows SECOND with a finished resync. */
async function timeResync(c: BenchCluster, cfg: MirroredConfig, tag: string, want: 'full' | 'bitmap'): Promise<Timed> {
  let sawEarlySecond = false;
  let sawPrimDuringResync = false;
  const t0 = await c.beta.start(cfg.nodeArgs('beta', tag));
  const readyS = seconds(t0, process.hrtime.bigint());
  // beta restarted, so its lastResync is this run's
  const done = (v: Both): boolean => {
    if (v.alpha?.state === 'PRIM' && v.alpha.resync !== null) sawPrimDuringResync = true;
    const b = v.beta;
    if (b === undefined) return false;
    const finished = b.resync === null && b.lastResync !== null && b.lastResync.finishedAt !== null;
    if (b.state === 'SECOND' && !finished) sawEarlySecond = true;
    return b.state === 'SECOND' && b.diskState === 'UpToDate' && finished;
  };
  const seen = await c.waitFor(done, `beta SECOND after a ${want} resync`, 900_000, 50);
  const s = seconds(t0, seen.at);
  // alpha records lastResync when beta's RESYNC_DONE arrives, just after beta shows SECOND
  const after = await c.waitFor((v) => inSync(v) && typeof v.alpha?.lastResync?.finishedAt === 'string', 'alpha PRIM with lastResync', 60_000, 50);
  const alpha = after.v.alpha as VolumeStatus;
  const beta = after.v.beta as VolumeStatus;
  const last = alpha.lastResync;
  if (last === null || last.direction !== 'to-peer') throw new Error(`alpha's lastResync is not a resync to the peer: ${JSON.stringify(last)}`);
  if (last.mode !== want) throw new Error(`expected a ${want} resync, alpha reports ${last.mode}: ${JSON.stringify(last)}`);
  return { s, readyS, alpha, beta, sawEarlySecond, sawPrimDuringResync };
}

/**
 * The copies must be identical after a resync (checked outside the timing). cmp reads beta's whole
 * copy into the page cache, which beta's own resync writes (O_DIRECT) kept out of it; the check
 * drops those pages again so that it does not change what the next measurement starts from.
 * It matters: in this VM, a 64 KiB write over pages a read brought in costs 77-97 us (ext4 attaches
 * buffer heads to each page first), against 20 us over no cached pages and 36 us over pages a
 * write left.
 */
async function compareCopies(c: BenchCluster, what: string): Promise<void> {
  const r = await execOk('cmp', [c.alpha.backingPath, c.beta.backingPath], 600_000).catch((e: unknown) => e as Error);
  if (r instanceof Error) throw new Error(`after the ${what}, alpha's and beta's copies differ: ${r.message.split('\n').slice(1, 3).join(' ')}`);
  // dd's documented way to advise dropping a whole file's cache (POSIX_FADV_DONTNEED); the copy is clean after its resync
  await execOk('dd', [`if=${c.beta.backingPath}`, 'iflag=nocache', 'count=0', 'status=none'], 60_000);
}

/** How long the resync itself ran, by alpha's lastResync: from its start after the meeting to beta's RESYNC_DONE. */
function resyncSpan(t: Timed): number {
  const l = t.alpha.lastResync as NonNullable<VolumeStatus['lastResync']>;
  return (Date.parse(l.finishedAt ?? '') - Date.parse(l.startedAt)) / 1000;
}

function describe(what: string, t: Timed, size: number): string {
  const l = t.alpha.lastResync as NonNullable<VolumeStatus['lastResync']>;
  const span = resyncSpan(t);
  return `${what}: ${t.s.toFixed(2)} s spawn to SECOND (${(size / MiB / t.s).toFixed(0)} MiB/s of volume; beta ready after ${t.readyS.toFixed(2)} s, `
    + `alpha's resync ${span.toFixed(2)} s); lastResync ${l.mode} total ${(l.totalBytes / MiB).toFixed(1)} MiB, sent ${(l.sentBytes / MiB).toFixed(1)} MiB, `
    + `zero ${(l.zeroBytes / MiB).toFixed(1)} MiB, skipped ${(l.skippedBytes / MiB).toFixed(1)} MiB`
    + `${t.sawEarlySecond ? '; beta showed SECOND before its resync had finished' : ''}`
    + `${t.sawPrimDuringResync ? '; alpha showed PRIM while its resync to beta ran' : ''}`;
}

async function waitAlone(c: BenchCluster): Promise<void> {
  await c.waitFor((v) => v.alpha?.state === 'ALONE', 'alpha ALONE after beta stopped', 30_000, 50);
}

export async function measureResync(cfg: MirroredConfig, work: string, round: number): Promise<ResyncSample> {
  const size = cfg.resyncSize;
  const dir = fs.mkdtempSync(path.join(work, `resync-r${round}-`));
  const vol = { size, cacheMode: 'write-back', checksumResync: false } as const;
  const c = await BenchCluster.create(dir, vol);
  const notes: string[] = [];
  const tag = (what: string): string => `resync-${what}-r${round + 1}`;
  try {
    // 1. alpha alone (beta has never run), filled through its export with fio's incompressible data
    await c.alpha.start(cfg.nodeArgs('alpha', tag('alpha')));
    await c.waitFor((v) => v.alpha?.state === 'ALONE', 'alpha ALONE', 30_000, 50);
    const tf = process.hrtime.bigint();
    const fill = await fioOnce(c.uri, ['--rw=write', '--bs=1M', '--iodepth=8', '--end_fsync=1'], 900_000);
    if (fill.write.total_ios * MiB < size) throw new Error(`fio filled ${fill.write.total_ios} MiB of the ${size / MiB} MiB volume`);
    await execOk('sync', [], 300_000);
    notes.push(`filled ${(size / MiB).toFixed(0)} MiB through alpha in ${seconds(tf, process.hrtime.bigint()).toFixed(1)} s`);

    // 2. the reference: a plain local copy of the same file, made durable
    const copy = path.join(dir, 'reference-copy.img');
    const tr = process.hrtime.bigint();
    await execOk('cp', ['--sparse=never', c.alpha.backingPath, copy], 900_000);
    await execOk('sync', ['--data', copy], 300_000);
    const refS = seconds(tr, process.hrtime.bigint());
    if (fs.statSync(copy).size !== size) throw new Error(`cp made ${fs.statSync(copy).size} bytes of ${size}`);
    fs.rmSync(copy);
    await execOk('sync', [], 300_000);
    notes.push(`reference cp --sparse=never + sync --data: ${refS.toFixed(2)} s (${(size / MiB / refS).toFixed(0)} MiB/s)`);

    // 3. full initial resync to an empty beta, checksumResync false
    const full = await timeResync(c, cfg, tag('full'), 'full');
    notes.push(describe('full resync, checksumResync false', full, size));
    await compareCopies(c, 'full resync');

    // 4. the same with checksumResync true (only the target's setting matters: it sends the hashes)
    await c.beta.stop();
    await waitAlone(c);
    c.beta.wipe();
    c.writeConfig('beta', { ...vol, checksumResync: true });
    await execOk('sync', [], 300_000);
    const sum = await timeResync(c, cfg, tag('checksum'), 'full');
    notes.push(describe('full resync, checksumResync true', sum, size));
    await compareCopies(c, 'full resync with checksums');

    // 5. beta down, 1 % written on alpha at random 64 KiB-aligned places, beta back: a bitmap resync
    await c.beta.stop();
    await waitAlone(c);
    const ios = Math.max(1, Math.floor((size * 0.01) / (64 * 1024)));
    const w = await fioOnce(c.uri, ['--rw=randwrite', '--bs=64k', '--iodepth=8', `--number_ios=${ios}`, '--randrepeat=0', '--end_fsync=1'], 600_000);
    if (w.write.total_ios !== ios) throw new Error(`fio wrote ${w.write.total_ios} of ${ios} 64 KiB blocks`);
    const written = ios * 64 * 1024;
    c.writeConfig('beta', vol);
    await execOk('sync', [], 300_000);
    const dirty = (await c.alpha.volume()).outOfSyncBytes;
    notes.push(`wrote ${ios} random 64 KiB blocks (${(written / MiB).toFixed(1)} MiB) while beta was down; alpha's outOfSyncBytes ${(dirty / MiB).toFixed(1)} MiB`);
    const incr = await timeResync(c, cfg, tag('incremental'), 'bitmap');
    notes.push(describe('incremental resync', incr, size));
    await compareCopies(c, 'incremental resync');
    await c.stopAll();

    const fullLast = full.alpha.lastResync as NonNullable<VolumeStatus['lastResync']>;
    const incrLast = incr.alpha.lastResync as NonNullable<VolumeStatus['lastResync']>;
    return {
      refS, fullS: full.s, fullResyncS: resyncSpan(full), fullSentBytes: fullLast.sentBytes, checksumS: sum.s, checksumResyncS: resyncSpan(sum),
      incrS: incr.s, incrResyncS: resyncSpan(incr), incrSentBytes: incrLast.sentBytes, incrTotalBytes: incrLast.totalBytes, incrWrittenBytes: written, notes,
    };
  } catch (e) {
    throw new Error(`${(e as Error).message}${(e as Error).message.includes('--- alpha log ---') ? '' : `\n${c.logs(10)}`}`);
  } finally {
    await c.destroy();
  }
}
