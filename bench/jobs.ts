// The benchmark jobs: fio through its nbd engine, and nbdcopy in and out.
// Each job measures one server on a backing file of its own, made fresh for it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { execOk } from './procs';

export type Unit = 'IOPS' | 'MiB/s' | 'µs' | 's' | 'MiB';

/** One row of the result table. */
export interface Metric {
  readonly id: string;
  readonly label: string;
  readonly unit: Unit;
  /** tandem/nbdkit must reach at least this */
  readonly target: number;
}

export interface BenchConfig {
  /** backing file size for the fio jobs */
  readonly size: number;
  /** size of the nbdcopy source file, and of the export it is copied into */
  readonly copySize: number;
  readonly runtimeS: number;
  readonly rampS: number;
  /** the random-ish source file for nbdcopy (made once) */
  readonly copySource: string;
}

/** How a job's backing file starts out: sparse at a size, or already full of data. */
export type Backing = { kind: 'sparse'; size: number } | { kind: 'filled'; size: number };

export interface Job {
  readonly id: string;
  readonly metrics: readonly Metric[];
  backing(c: BenchConfig): Backing;
  /** Runs the job against `uri`; returns a value per metric id. */
  run(uri: string, c: BenchConfig): Promise<Record<string, number>>;
}

const MiB = 1024 * 1024;

interface FioSide { iops: number; bw_bytes: number; total_ios: number; lat_ns?: { mean: number } }
interface FioJobResult { error: number; read: FioSide; write: FioSide }

/** fio prints notices such as "fio: connected to NBD server" before its JSON. */
export function parseFioJson(stdout: string): FioJobResult {
  const start = stdout.search(/^\{/m);
  if (start < 0) throw new Error(`no JSON in fio output:\n${stdout.slice(0, 2000)}`);
  const parsed = JSON.parse(stdout.slice(start)) as { jobs?: FioJobResult[] };
  const job = parsed.jobs?.[0];
  if (job === undefined) throw new Error('fio JSON has no jobs');
  if (job.error !== 0) throw new Error(`fio job error ${job.error}`);
  return job;
}

/** The key under which a fio job also reports its mean completion latency (µs) next to its metric. */
export function latencyKey(jobId: string): string { return `${jobId}:lat-us`; }

async function fio(uri: string, c: BenchConfig, args: string[]): Promise<FioJobResult> {
  const all = [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, '--output-format=json',
    '--numjobs=1', '--time_based', `--runtime=${c.runtimeS}`, `--ramp_time=${c.rampS}`,
    ...args,
  ];
  const r = await execOk('fio', all, (c.runtimeS + c.rampS + 60) * 1000);
  return parseFioJson(r.stdout);
}

/** fio through its nbd engine until the job's own end (size or number_ios), not time based; returns the job's result. */
export async function fioOnce(uri: string, args: string[], timeoutMs: number): Promise<FioJobResult> {
  const r = await execOk('fio', ['--name=bench', '--ioengine=nbd', `--uri=${uri}`, '--output-format=json', '--numjobs=1', ...args], timeoutMs);
  return parseFioJson(r.stdout);
}

/**
 * Writes the whole export once, sequentially, and flushes: the state of a volume in use, every
 * block allocated in the backing file(s). A time-based write job on a fresh sparse file otherwise
 * measures first writes (block allocation, new page cache) for as long as it stays in its first
 * pass, and a faster server leaves that pass sooner: the two sides of a ratio would not measure
 * the same thing.
 */
export async function precondition(uri: string, size: number): Promise<void> {
  const r = await fioOnce(uri, ['--rw=write', '--bs=1M', '--iodepth=8', `--size=${size}`, '--end_fsync=1'], 900_000);
  if (r.write.total_ios * MiB < size) throw new Error(`preconditioning wrote ${r.write.total_ios} MiB of ${size / MiB}`);
}

function fioJob(id: string, label: string, unit: Unit, target: number, filled: boolean, args: string[]): Job {
  const metric: Metric = { id, label, unit, target };
  const side = args.some((a) => /^--rw=(rand)?read$/.test(a)) ? 'read' : 'write';
  return {
    id,
    metrics: [metric],
    backing: (c) => (filled ? { kind: 'filled', size: c.size } : { kind: 'sparse', size: c.size }),
    run: async (uri, c) => {
      const r = (await fio(uri, c, args))[side];
      if (r.total_ios === 0) throw new Error(`fio did no ${side} I/O`);
      const values: Record<string, number> = { [id]: unit === 'IOPS' ? r.iops : r.bw_bytes / MiB };
      // not a metric of the single-node table; the mirrored section compares latencies
      if (r.lat_ns !== undefined && Number.isFinite(r.lat_ns.mean)) values[latencyKey(id)] = r.lat_ns.mean / 1000;
      return values;
    },
  };
}

async function nbdcopy(src: string, dst: string, bytes: number): Promise<number> {
  const r = await execOk('nbdcopy', [src, dst], 600_000);
  return bytes / MiB / (r.ms / 1000);
}

export const jobs: readonly Job[] = [
  fioJob('randwrite-4k-qd1', '4 KiB random write, QD1', 'IOPS', 0.8, false,
    ['--rw=randwrite', '--bs=4k', '--iodepth=1']),
  fioJob('randread-4k-qd32', '4 KiB random read, QD32', 'IOPS', 0.7, true,
    ['--rw=randread', '--bs=4k', '--iodepth=32']),
  fioJob('seqwrite-1m', '1 MiB sequential write, QD8', 'MiB/s', 0.8, false,
    ['--rw=write', '--bs=1M', '--iodepth=8']),
  fioJob('seqread-1m', '1 MiB sequential read, QD8', 'MiB/s', 0.8, true,
    ['--rw=read', '--bs=1M', '--iodepth=8']),
  {
    // The export is exactly the copy's size, so both directions move the same bytes
    // (copying out of a larger, half-sparse export would mostly time holes).
    id: 'nbdcopy',
    metrics: [
      { id: 'nbdcopy-in', label: 'nbdcopy file -> export', unit: 'MiB/s', target: 0.8 },
      { id: 'nbdcopy-out', label: 'nbdcopy export -> null:', unit: 'MiB/s', target: 0.8 },
    ],
    backing: (c) => ({ kind: 'sparse', size: c.copySize }),
    run: async (uri, c) => ({
      'nbdcopy-in': await nbdcopy(c.copySource, uri, c.copySize),
      'nbdcopy-out': await nbdcopy(uri, 'null:', c.copySize),
    }),
  },
];

/** The single-node job with this id. */
export function jobById(id: string): Job {
  const j = jobs.find((x) => x.id === id);
  if (j === undefined) throw new Error(`no job ${id}`);
  return j;
}

/**
 * Jobs only the mirrored section runs (against a mirrored volume and against
 * `tandem serve` alone), defined like the single-node ones.
 */
export const extraJobs: readonly Job[] = [
  fioJob('randwrite-4k-qd32', '4 KiB random write, QD32', 'IOPS', 0.7, false,
    ['--rw=randwrite', '--bs=4k', '--iodepth=32']),
];

/**
 * Writes `size` bytes of random-looking data with no zero blocks (every 4 KiB
 * block is stamped with its offset), so no tool can skip any of it.
 */
export function fillFile(file: string, size: number): void {
  const chunk = 4 * MiB;
  const base = crypto.randomBytes(chunk);
  const buf = Buffer.allocUnsafe(chunk);
  const fd = fs.openSync(file, 'wx', 0o600);
  try {
    for (let off = 0; off < size; off += chunk) {
      base.copy(buf);
      for (let b = 0; b < chunk; b += 4096) buf.writeBigUInt64LE(BigInt(off + b) | 1n, b);
      const n = Math.min(chunk, size - off);
      let done = 0;
      while (done < n) done += fs.writeSync(fd, buf, done, n - done, off + done);
    }
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}
