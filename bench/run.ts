// `npm run bench`: tandem serve side by side with nbdkit's file plugin.
//
// Every job runs against each server on a fresh backing file in the same
// directory (sparse, or filled with data first for the read jobs), through
// fio's nbd engine or nbdcopy, on 127.0.0.1. The servers take turns per job,
// the first of the pair swapping every round; each value is the median of
// --repeat rounds. Prints a table of tandem/nbdkit ratios against targets and,
// with --json, writes every sample.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { formatSize, parseSize } from '../src/util/size';
import { fillFile, jobs, type BenchConfig, type Job, type Metric } from './jobs';
import { exec, execOk, installExitHandlers, killAllTracked } from './procs';
import { removeBacking, serverKinds, startServer, type ServerKind } from './servers';

const usage = `usage: node dist/bench/run.js [--size SIZE] [--copy-size SIZE] [--runtime S] [--ramp S]
                                [--repeat N] [--dir DIR] [--json PATH] [--only JOB,...]
  --size       backing file size for the fio jobs (default 2G)
  --copy-size  nbdcopy source file and export size (default 1G)
  --runtime    seconds each fio job is measured (default 8)
  --ramp       fio ramp seconds before measuring (default 1)
  --repeat     rounds; each value is the median (default 3, cut to 1 when
               the first round shows 3 would take over 8 minutes)
  --dir        where the backing files go (a temporary directory is made inside
               it and removed at the end; default the OS temp dir)
  --json       also write the results as JSON to this path
  --only       run only these jobs: ${jobs.map((j) => j.id).join(', ')}`;

const defaultRepeat = 3;
const repeatBudgetMs = 8 * 60_000;

interface Options {
  size: number; copySize: number; runtimeS: number; rampS: number;
  repeat: number; repeatGiven: boolean; dir: string | undefined; json: string | undefined; only: string[] | undefined;
}

class UsageError extends Error {}

function sizeArg(text: string, what: string): number {
  const n = parseSize(text);
  if (typeof n === 'string') throw new UsageError(`${what}: ${n}`);
  if (n <= 0 || n % 4096 !== 0) throw new UsageError(`${what}: must be a positive multiple of 4096`);
  return n;
}

function intArg(text: string, what: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${what}: ${JSON.stringify(text)} is not an integer >= ${min}`);
  return n;
}

function parseOptions(argv: string[]): Options | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: {
        size: { type: 'string', default: '2G' },
        'copy-size': { type: 'string', default: '1G' },
        runtime: { type: 'string', default: '8' },
        ramp: { type: 'string', default: '1' },
        repeat: { type: 'string' },
        dir: { type: 'string' },
        json: { type: 'string' },
        only: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return 'help';
  const only = values.only?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const id of only ?? []) {
    if (!jobs.some((j) => j.id === id)) throw new UsageError(`--only: no job ${JSON.stringify(id)}`);
  }
  const size = sizeArg(values.size, '--size');
  // A 1 MiB job needs at least one whole request in the file.
  if (size < 1024 * 1024) throw new UsageError('--size: at least 1M');
  return {
    size,
    copySize: sizeArg(values['copy-size'], '--copy-size'),
    runtimeS: intArg(values.runtime, '--runtime', 1),
    rampS: intArg(values.ramp, '--ramp', 0),
    repeat: values.repeat === undefined ? defaultRepeat : intArg(values.repeat, '--repeat', 1),
    repeatGiven: values.repeat !== undefined,
    dir: values.dir,
    json: values.json,
    only,
  };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function log(line: string): void { process.stderr.write(`${line}\n`); }

function fmtValue(v: number | undefined, unit: string): string {
  if (v === undefined || !Number.isFinite(v)) return 'n/a';
  return unit === 'IOPS' ? Math.round(v).toString() : v.toFixed(1);
}

/** (max - min) / median, as a percentage: how much the rounds disagreed. */
function spread(xs: readonly number[]): string {
  if (xs.length < 2) return '-';
  const m = median(xs);
  return m > 0 ? `${(((Math.max(...xs) - Math.min(...xs)) / m) * 100).toFixed(0)}%` : '-';
}

async function toolVersion(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await exec(cmd, args, 10_000);
    return (r.stdout + r.stderr).split('\n')[0]?.trim() ?? '';
  } catch {
    return 'unavailable';
  }
}

type Samples = Record<string, Record<ServerKind, number[]>>;

interface Failure { round: number; job: string; server: ServerKind; error: string }

/** One job against one server on a fresh backing file; the server is stopped and the file removed whatever happens. */
interface Measured { values: Record<string, number>; phases: string }

async function measure(job: Job, kind: ServerKind, cfg: BenchConfig, work: string, round: number): Promise<Measured> {
  const file = path.join(work, `${kind}-${job.id}-r${round}.img`);
  const backing = job.backing(cfg);
  let mark = process.hrtime.bigint();
  const lap = (): string => {
    const now = process.hrtime.bigint();
    const s = (Number(now - mark) / 1e9).toFixed(1);
    mark = now;
    return s;
  };
  try {
    if (backing.kind === 'filled') fillFile(file, backing.size);
    // Write back whatever earlier jobs left dirty, so it does not land in this measurement.
    await execOk('sync', [], 300_000);
    const prep = lap();
    const server = await startServer(kind, file, backing.kind === 'sparse' ? backing.size : undefined);
    const start = lap();
    let values: Record<string, number>;
    let run = '';
    try {
      values = await job.run(server.uri, cfg);
      run = lap();
    } catch (e) {
      const tail = server.log().trim().split('\n').slice(-10).join('\n');
      throw new Error(`${(e as Error).message}${tail === '' ? '' : `\n${kind} log tail:\n${tail}`}`);
    } finally {
      await server.stop();
    }
    return { values, phases: `prep+sync ${prep} s, start ${start} s, run ${run} s, stop ${lap()} s` };
  } finally {
    removeBacking(file);
  }
}

function renderTable(metrics: readonly Metric[], samples: Samples): { text: string; rows: ResultRow[] } {
  const rows: ResultRow[] = metrics.map((m) => {
    const t = samples[m.id]?.tandem ?? [];
    const n = samples[m.id]?.nbdkit ?? [];
    const tm = t.length > 0 ? median(t) : undefined;
    const nm = n.length > 0 ? median(n) : undefined;
    const ratio = tm !== undefined && nm !== undefined && nm > 0 ? tm / nm : undefined;
    return {
      id: m.id, label: m.label, unit: m.unit, target: m.target,
      tandem: { samples: t, median: tm ?? null },
      nbdkit: { samples: n, median: nm ?? null },
      ratio: ratio ?? null,
      pass: ratio === undefined ? null : ratio >= m.target,
    };
  });
  const header = ['job', 'tandem', 'nbdkit', 'unit', 'tandem/nbdkit', 'target', '', 'spread t/n'];
  const body = rows.map((r) => [
    r.label,
    fmtValue(r.tandem.median ?? undefined, r.unit),
    fmtValue(r.nbdkit.median ?? undefined, r.unit),
    r.unit,
    r.ratio === null ? 'n/a' : r.ratio.toFixed(2),
    `>=${r.target.toFixed(1)}`,
    r.pass === null ? 'ERROR' : r.pass ? 'ok' : 'BELOW',
    `${spread(r.tandem.samples)}/${spread(r.nbdkit.samples)}`,
  ]);
  const numeric = new Set([1, 2, 4]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]): string => cells
    .map((c, i) => (numeric.has(i) ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number)))
    .join('  ').trimEnd();
  const text = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
  return { text, rows };
}

interface ResultRow {
  id: string; label: string; unit: string; target: number;
  tandem: { samples: number[]; median: number | null };
  nbdkit: { samples: number[]; median: number | null };
  ratio: number | null; pass: boolean | null;
}

async function main(argv: string[]): Promise<number> {
  let o: Options | 'help';
  try {
    o = parseOptions(argv);
  } catch (e) {
    if (e instanceof UsageError) { log(`bench: ${e.message}\n${usage}`); return 2; }
    throw e;
  }
  if (o === 'help') { process.stdout.write(`${usage}\n`); return 0; }
  const opts = o;
  const t0 = process.hrtime.bigint();
  const elapsedMs = (): number => Number(process.hrtime.bigint() - t0) / 1e6;

  const parent = opts.dir ?? os.tmpdir();
  fs.mkdirSync(parent, { recursive: true });
  const work = fs.mkdtempSync(path.join(parent, 'tandem-bench-'));
  const removeWork = (): void => fs.rmSync(work, { recursive: true, force: true });
  installExitHandlers(removeWork);

  const selected = jobs.filter((j) => opts.only === undefined || opts.only.includes(j.id));
  const metrics = selected.flatMap((j) => j.metrics);
  const samples: Samples = {};
  for (const m of metrics) samples[m.id] = { tandem: [], nbdkit: [] };
  const failures: Failure[] = [];
  let rounds = opts.repeat;
  let roundsDone = 0;
  const versions = {
    node: process.version,
    fio: await toolVersion('fio', ['--version']),
    nbdkit: await toolVersion('nbdkit', ['--version']),
    nbdcopy: await toolVersion('nbdcopy', ['--version']),
  };

  try {
    const cfg: BenchConfig = {
      size: opts.size, copySize: opts.copySize, runtimeS: opts.runtimeS, rampS: opts.rampS,
      copySource: path.join(work, 'nbdcopy-source.img'),
    };
    log(`bench: ${work} on ${os.cpus().length} CPUs; fio jobs on ${formatSize(opts.size)}, nbdcopy ${formatSize(opts.copySize)}; `
      + `${opts.runtimeS}s + ${opts.rampS}s ramp per fio run; ${opts.repeat} round(s); ${versions.fio}, ${versions.nbdkit}`);
    if (selected.some((j) => j.id === 'nbdcopy')) fillFile(cfg.copySource, opts.copySize);

    for (let round = 0; round < rounds; round++) {
      const roundStart = elapsedMs();
      // Take turns per job; swap who goes first each round so neither always runs on a warmer machine.
      const order = round % 2 === 0 ? serverKinds : [...serverKinds].reverse();
      for (const job of selected) {
        for (const kind of order) {
          const js = elapsedMs();
          try {
            const { values, phases } = await measure(job, kind, cfg, work, round);
            const shown = job.metrics.map((m) => `${m.id} ${fmtValue(values[m.id], m.unit)} ${m.unit}`).join(', ');
            for (const m of job.metrics) {
              const v = values[m.id];
              if (v !== undefined && Number.isFinite(v)) samples[m.id]?.[kind].push(v);
            }
            log(`[round ${round + 1}/${rounds}] ${kind.padEnd(6)} ${shown}  (${((elapsedMs() - js) / 1000).toFixed(1)} s: ${phases})`);
          } catch (e) {
            const error = (e as Error).message;
            failures.push({ round: round + 1, job: job.id, server: kind, error });
            log(`[round ${round + 1}/${rounds}] ${kind.padEnd(6)} ${job.id} FAILED: ${error}`);
          }
        }
      }
      roundsDone = round + 1;
      if (round === 0 && !opts.repeatGiven && rounds > 1 && elapsedMs() - roundStart > repeatBudgetMs / rounds) {
        log(`bench: one round took ${((elapsedMs() - roundStart) / 1000).toFixed(0)} s; ${rounds} would exceed `
          + `${repeatBudgetMs / 60_000} min, so stopping at 1 round (force with --repeat)`);
        rounds = 1;
      }
    }
  } finally {
    killAllTracked();
    removeWork();
  }

  const totalS = elapsedMs() / 1000;
  const { text, rows } = renderTable(metrics, samples);
  process.stdout.write(`\n${text}\n\n`);
  process.stdout.write(`median of ${roundsDone} round(s) per job per server; spread = (max-min)/median over the rounds; `
    + `total ${totalS.toFixed(0)} s\n`);
  const below = rows.filter((r) => r.pass === false);
  if (below.length > 0) process.stdout.write(`below target: ${below.map((r) => r.id).join(', ')}\n`);
  for (const f of failures) process.stdout.write(`FAILED round ${f.round} ${f.job} on ${f.server}: ${f.error.split('\n')[0]}\n`);

  if (opts.json !== undefined) {
    const report = {
      date: new Date().toISOString(),
      totalSeconds: totalS,
      host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', memBytes: os.totalmem(), kernel: os.release() },
      versions,
      config: {
        size: opts.size, copySize: opts.copySize, runtimeS: opts.runtimeS, rampS: opts.rampS,
        rounds: roundsDone, jobs: selected.map((j) => j.id),
      },
      results: rows,
      failures,
    };
    fs.mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
    fs.writeFileSync(opts.json, `${JSON.stringify(report, null, 2)}\n`);
    log(`bench: results written to ${opts.json}`);
  }
  return failures.length > 0 ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    killAllTracked();
    log(`bench: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    process.exitCode = 1;
  },
);
