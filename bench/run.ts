// `npm run bench`: tandem serve side by side with nbdkit's file plugin, and a
// mirrored volume (two `tandem node start` processes) side by side with
// `tandem serve` alone and with a plain local copy (bench/mirrored.ts).
//
// Every job runs against each server on a fresh backing file in the same
// directory (sparse, or filled with data first for the read jobs), through
// fio's nbd engine or nbdcopy, on 127.0.0.1. The servers take turns per job,
// the first of the pair swapping every round; each value is the median of
// --repeat rounds. Each round then runs the mirrored jobs (mirrored and single
// taking turns the same way; a single-node value the round already measured in
// the first section is used again), the resync measurements and pgbench
// (PostgreSQL on a pool's filesystem against a local directory, taking turns;
// bench/pgbench.ts). Prints a table of ratios against targets per section and,
// with --json, writes every sample.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { postgresBinDir as pgBinDir } from '../src/app/postgresql';
import { formatSize, parseSize } from '../src/util/size';
import { fillFile, jobs, precondition, type BenchConfig, type Job } from './jobs';
import { failoverId, measureFailover } from './failover';
import { measureMirrored, measureResync, mirroredFioJobs, mirroredIds, resyncId, type MirroredConfig, type ResyncSample } from './mirrored';
import { describeResult, measurePgbench, pgbenchId, pgbenchPort, pgbenchRows, pgbenchSides, type PgbenchResult, type PgbenchSide } from './pgbench';
import { exec, execOk, installExitHandlers, killAllTracked } from './procs';
import { removeBacking, serverKinds, startServer, type ServerKind } from './servers';
import { fmtValue, renderTable, type RenderedRow, type TableRow } from './table';

const groups: Readonly<Record<string, readonly string[]>> = {
  single: jobs.map((j) => j.id),
  mirrored: mirroredIds,
  failover: [failoverId],
  pgbench: [pgbenchId],
};

const usage = `usage: node dist/bench/run.js [--size SIZE] [--copy-size SIZE] [--resync-size SIZE] [--runtime S]
                                [--ramp S] [--repeat N] [--dir DIR] [--json PATH] [--only JOB,...]
                                [--cpu-prof DIR] [--failover-runs N]
                                [--pgbench-seconds S] [--pgbench-clients N] [--pgbench-scale N]
  --size         backing file size for the fio jobs, single and mirrored (default 2G)
  --copy-size    nbdcopy source file and export size (default 1G)
  --resync-size  volume size of the resync measurements (default 4G, as the specification's figure)
  --failover-runs  kill -9 failovers to time (default 10; measured once, not per round)
  --pgbench-seconds  pgbench -T of each measured run (default 20)
  --pgbench-clients  pgbench -c (default 4; -j is 2, or 1 for one client)
  --pgbench-scale    pgbench -i -s (default 10; the volume grows with it)
  --runtime      seconds each fio job is measured (default 8)
  --ramp         fio ramp seconds before measuring (default 1)
  --repeat       rounds; each value is the median (default 3, cut to as many
                 as fit in 8 minutes by the first round's duration, at least 1)
  --dir          where the backing files and node data go (a temporary directory
                 is made inside it and removed at the end; default the OS temp dir)
  --json         also write the results as JSON to this path
  --only         run only these jobs or groups:
                   single:   ${groups.single?.join(', ')}
                   mirrored: ${groups.mirrored?.join(', ')}
                   failover: ${groups.failover?.join(', ')}
                   pgbench:  ${groups.pgbench?.join(', ')}
  --cpu-prof     start every tandem node with node --cpu-prof, profiles in DIR`;

const defaultRepeat = 3;
const repeatBudgetMs = 8 * 60_000;

interface Options {
  size: number; copySize: number; resyncSize: number; runtimeS: number; rampS: number; failoverRuns: number;
  repeat: number; repeatGiven: boolean; dir: string | undefined; json: string | undefined; only: string[] | undefined;
  cpuProf: string | undefined;
  pgbenchSeconds: number; pgbenchClients: number; pgbenchScale: number;
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
        'resync-size': { type: 'string', default: '4G' },
        'failover-runs': { type: 'string', default: '10' },
        'cpu-prof': { type: 'string' },
        'pgbench-seconds': { type: 'string', default: '20' },
        'pgbench-clients': { type: 'string', default: '4' },
        'pgbench-scale': { type: 'string', default: '10' },
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
  const known = new Set([...jobs.map((j) => j.id), ...mirroredIds, pgbenchId]);
  const only = values.only?.split(',').map((s) => s.trim()).filter((s) => s !== '').flatMap((id) => {
    const g = groups[id];
    if (g !== undefined) return g;
    if (!known.has(id)) throw new UsageError(`--only: no job or group ${JSON.stringify(id)}`);
    return [id];
  });
  const size = sizeArg(values.size, '--size');
  // A 1 MiB job needs at least one whole request in the file.
  if (size < 1024 * 1024) throw new UsageError('--size: at least 1M');
  return {
    size,
    copySize: sizeArg(values['copy-size'], '--copy-size'),
    resyncSize: resyncSizeArg(values['resync-size']),
    failoverRuns: failoverRunsArg(values['failover-runs']),
    runtimeS: intArg(values.runtime, '--runtime', 1),
    rampS: intArg(values.ramp, '--ramp', 0),
    repeat: values.repeat === undefined ? defaultRepeat : intArg(values.repeat, '--repeat', 1),
    repeatGiven: values.repeat !== undefined,
    dir: values.dir,
    json: values.json,
    only,
    cpuProf: values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']),
    pgbenchSeconds: intArg(values['pgbench-seconds'], '--pgbench-seconds', 1),
    pgbenchClients: intArg(values['pgbench-clients'], '--pgbench-clients', 1),
    pgbenchScale: intArg(values['pgbench-scale'], '--pgbench-scale', 1),
  };
}

function failoverRunsArg(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 100) throw new UsageError('--failover-runs must be an integer from 1 to 100');
  return n;
}

function resyncSizeArg(text: string): number {
  const n = sizeArg(text, '--resync-size');
  // 1 % of it is written in 64 KiB blocks: at least one
  if (n < 8 * 1024 * 1024 || n % (64 * 1024) !== 0) throw new UsageError('--resync-size: at least 8M, a multiple of 64K');
  return n;
}

function log(line: string): void { process.stderr.write(`${line}\n`); }

async function toolVersion(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await exec(cmd, args, 10_000);
    return (r.stdout + r.stderr).split('\n')[0]?.trim() ?? '';
  } catch {
    return 'unavailable';
  }
}

/** without PostgreSQL installed, the pgbench job fails on its own and the rest still runs */
async function pgbenchVersion(): Promise<string> {
  try {
    return await toolVersion(path.join(pgBinDir(), 'pgbench'), ['--version']);
  } catch {
    return 'unavailable';
  }
}

type Samples = Record<string, Record<ServerKind, number[]>>;

type MirroredSide = 'mirrored' | 'single';
const mirroredSides: readonly MirroredSide[] = ['mirrored', 'single'];

interface Failure { round: number; job: string; server: string; error: string }

/** One job against one server on a fresh backing file; the server is stopped and the file removed whatever happens. */
interface Measured { values: Record<string, number>; phases: string }

async function measure(job: Job, kind: ServerKind, cfg: BenchConfig, work: string, round: number, preconditioned = false): Promise<Measured> {
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
    if (preconditioned) await precondition(server.uri, backing.size);
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
    return { values, phases: `prep+sync ${prep} s, start${preconditioned ? '+precondition' : ''} ${start} s, run ${run} s, stop ${lap()} s` };
  } finally {
    removeBacking(file);
  }
}

/** The single-node results in the JSON shape they have always had. */
interface ResultRow {
  id: string; label: string; unit: string; target: number;
  tandem: { samples: number[]; median: number | null };
  nbdkit: { samples: number[]; median: number | null };
  ratio: number | null; pass: boolean | null;
}

function singleResult(r: RenderedRow): ResultRow {
  return {
    id: r.id, label: r.label, unit: r.unit, target: r.target?.value ?? 0,
    tandem: r.a, nbdkit: r.b, ratio: r.ratio, pass: r.ratio === null ? null : r.pass,
  };
}

const MiB = 1024 * 1024;

/** The resync table's rows from every round's sample. */
function resyncRows(size: number, all: readonly ResyncSample[]): TableRow[] {
  const mibps = (s: number): number => size / MiB / s;
  return [
    {
      id: 'resync-full', label: `full resync of ${formatSize(size)} vs cp --sparse=never`, unit: 'MiB/s', target: { op: '>=', value: 0.8 },
      a: all.map((x) => mibps(x.fullResyncS)), b: all.map((x) => mibps(x.refS)),
    },
    {
      id: 'resync-full-spawn', label: 'the same, beta\'s spawn to SECOND, vs cp', unit: 'MiB/s', target: null,
      a: all.map((x) => mibps(x.fullS)), b: all.map((x) => mibps(x.refS)),
    },
    {
      id: 'resync-full-checksum', label: 'full resync, checksumResync true, vs cp', unit: 'MiB/s', target: null,
      a: all.map((x) => mibps(x.checksumResyncS)), b: all.map((x) => mibps(x.refS)),
    },
    {
      id: 'resync-incremental', label: 'incremental (1 % in 64 KiB) vs full resync', unit: 's', target: { op: '<', value: 0.05 },
      a: all.map((x) => x.incrResyncS), b: all.map((x) => x.fullResyncS),
    },
    {
      id: 'resync-incremental-spawn', label: 'the same, beta\'s spawn to SECOND', unit: 's', target: null,
      a: all.map((x) => x.incrS), b: all.map((x) => x.fullS),
    },
    {
      id: 'resync-incremental-bytes', label: 'incremental: sentBytes vs bytes written', unit: 'MiB', target: null,
      a: all.map((x) => x.incrSentBytes / MiB), b: all.map((x) => x.incrWrittenBytes / MiB),
    },
  ];
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

  const wanted = (id: string): boolean => opts.only === undefined || opts.only.includes(id);
  const selected = jobs.filter((j) => wanted(j.id));
  const selectedMirrored = mirroredFioJobs.filter((m) => wanted(m.id));
  const runResync = wanted(resyncId);
  const runFailover = wanted(failoverId);
  const runPgbench = wanted(pgbenchId);
  const pgbenchSamples: Record<PgbenchSide, PgbenchResult[]> = { mirrored: [], local: [] };
  let failoverMs: number[] = [];
  const metrics = selected.flatMap((j) => j.metrics);
  const samples: Samples = {};
  for (const m of metrics) samples[m.id] = { tandem: [], nbdkit: [] };
  const mirroredSamples: Record<string, Record<MirroredSide, number[]>> = {};
  for (const m of selectedMirrored) mirroredSamples[m.id] = { mirrored: [], single: [] };
  const resyncSamples: ResyncSample[] = [];
  const resyncNotes: string[][] = [];
  const failures: Failure[] = [];
  const loads: number[] = [];
  let rounds = opts.repeat;
  let roundsDone = 0;
  const versions = {
    node: process.version,
    fio: await toolVersion('fio', ['--version']),
    nbdkit: await toolVersion('nbdkit', ['--version']),
    nbdcopy: await toolVersion('nbdcopy', ['--version']),
    pgbench: runPgbench ? await pgbenchVersion() : undefined,
  };
  if (opts.cpuProf !== undefined) fs.mkdirSync(opts.cpuProf, { recursive: true });
  let profiles = 0;
  const nodeArgs = (node: string, tag: string): string[] => (opts.cpuProf === undefined ? []
    : ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProf}`, `--cpu-prof-name=${tag}-${node}-${++profiles}.cpuprofile`]);

  try {
    const cfg: MirroredConfig = {
      size: opts.size, copySize: opts.copySize, runtimeS: opts.runtimeS, rampS: opts.rampS,
      copySource: path.join(work, 'nbdcopy-source.img'), resyncSize: opts.resyncSize, nodeArgs,
    };
    log(`bench: ${work} on ${os.cpus().length} CPUs; fio jobs on ${formatSize(opts.size)}, nbdcopy ${formatSize(opts.copySize)}, `
      + `resync ${formatSize(opts.resyncSize)}; ${opts.runtimeS}s + ${opts.rampS}s ramp per fio run; ${opts.repeat} round(s); `
      + `${versions.fio}, ${versions.nbdkit}; load average (1 min) ${(os.loadavg()[0] ?? 0).toFixed(2)}`);
    if (selected.some((j) => j.id === 'nbdcopy')) fillFile(cfg.copySource, opts.copySize);

    for (let round = 0; round < rounds; round++) {
      const roundStart = elapsedMs();
      const tag = (): string => `[round ${round + 1}/${rounds}]`;
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
            log(`${tag()} ${kind.padEnd(6)} ${shown}  (${((elapsedMs() - js) / 1000).toFixed(1)} s: ${phases})`);
          } catch (e) {
            const error = (e as Error).message;
            failures.push({ round: round + 1, job: job.id, server: kind, error });
            log(`${tag()} ${kind.padEnd(6)} ${job.id} FAILED: ${error}`);
          }
        }
      }

      const mirroredOrder = round % 2 === 0 ? mirroredSides : [...mirroredSides].reverse();
      for (const m of selectedMirrored) {
        for (const side of mirroredOrder) {
          const js = elapsedMs();
          try {
            // both sides on a preconditioned volume (every block written once): not the single-node section's sparse runs
            const { values, phases } = side === 'mirrored'
              ? await measureMirrored(m.job, cfg, work, round)
              : await measure(m.job, 'tandem', cfg, work, round, true);
            const v = values[m.key];
            if (v === undefined || !Number.isFinite(v)) throw new Error(`${m.job.id} gave no ${m.key}`);
            mirroredSamples[m.id]?.[side].push(v);
            log(`${tag()} ${side.padEnd(8)} ${m.id} ${fmtValue(v, m.unit)} ${m.unit}  (${((elapsedMs() - js) / 1000).toFixed(1)} s: ${phases})`);
          } catch (e) {
            const error = (e as Error).message;
            failures.push({ round: round + 1, job: m.id, server: side, error });
            log(`${tag()} ${side.padEnd(8)} ${m.id} FAILED: ${error}`);
          }
        }
      }

      if (runResync) {
        const js = elapsedMs();
        try {
          const r = await measureResync(cfg, work, round);
          resyncSamples.push(r);
          resyncNotes.push(r.notes);
          for (const n of r.notes) log(`${tag()} resync   ${n}`);
          log(`${tag()} resync   done in ${((elapsedMs() - js) / 1000).toFixed(1)} s`);
        } catch (e) {
          const error = (e as Error).message;
          failures.push({ round: round + 1, job: resyncId, server: 'cluster', error });
          log(`${tag()} resync   FAILED: ${error}`);
        }
      }

      if (runPgbench) {
        const pgCfg = { scale: opts.pgbenchScale, clients: opts.pgbenchClients, seconds: opts.pgbenchSeconds, nodeArgs };
        const port = await pgbenchPort();
        const pgOrder = round % 2 === 0 ? pgbenchSides : [...pgbenchSides].reverse();
        const settings: Partial<Record<PgbenchSide, string>> = {};
        for (const side of pgOrder) {
          const js = elapsedMs();
          try {
            const r = await measurePgbench(side, pgCfg, work, round, port);
            pgbenchSamples[side].push(r);
            settings[side] = r.settings;
            for (const n of r.notes) log(`${tag()} pgbench  ${side.padEnd(8)} ${n}`);
            log(`${tag()} pgbench  ${side.padEnd(8)} ${describeResult(r)}  (${((elapsedMs() - js) / 1000).toFixed(1)} s)`);
            for (const p of r.problems) {
              failures.push({ round: round + 1, job: pgbenchId, server: side, error: p });
              log(`${tag()} pgbench  ${side.padEnd(8)} TEARDOWN: ${p}`);
            }
          } catch (e) {
            const error = (e as Error).message;
            failures.push({ round: round + 1, job: pgbenchId, server: side, error });
            log(`${tag()} pgbench  ${side.padEnd(8)} FAILED: ${error}`);
          }
        }
        if (round === 0 && settings.local !== undefined) log(`${tag()} pgbench  settings: ${settings.local}`);
        if (settings.local !== undefined && settings.mirrored !== undefined && settings.local !== settings.mirrored) {
          const error = `the two servers ran with different settings: local ${settings.local}; mirrored ${settings.mirrored}`;
          failures.push({ round: round + 1, job: pgbenchId, server: 'both', error });
          log(`${tag()} pgbench  ${error}`);
        }
      }

      // failover is measured once, over its own runs, not per round
      if (runFailover && round === 0) {
        try {
          const f = await measureFailover(work, opts.failoverRuns, (s) => log(`${tag()} ${s}`));
          failoverMs = f.ms;
          for (const n of f.notes) log(`${tag()} failover ${n}`);
        } catch (e) {
          const error = (e as Error).message;
          failures.push({ round: round + 1, job: failoverId, server: 'cluster', error });
          log(`${tag()} failover FAILED: ${error}`);
        }
      }

      roundsDone = round + 1;
      // other work on the machine skews every figure: show it
      const load = os.loadavg()[0] ?? 0;
      loads.push(load);
      log(`${tag()} done in ${((elapsedMs() - roundStart) / 1000).toFixed(0)} s; load average (1 min) ${load.toFixed(2)}`);
      if (round === 0 && !opts.repeatGiven && rounds > 1) {
        const took = elapsedMs() - roundStart;
        const fit = Math.max(1, Math.min(rounds, Math.floor(repeatBudgetMs / took)));
        if (fit < rounds) {
          log(`bench: one round took ${(took / 1000).toFixed(0)} s; ${rounds} would exceed `
            + `${repeatBudgetMs / 60_000} min, so stopping at ${fit} round(s) (force with --repeat)`);
          rounds = fit;
        }
      }
    }
  } finally {
    killAllTracked();
    removeWork();
  }

  const totalS = elapsedMs() / 1000;
  const allRendered: RenderedRow[] = [];
  let singleRows: ResultRow[] = [];
  if (metrics.length > 0) {
    const t = renderTable({ a: 'tandem', b: 'nbdkit', ratio: 'tandem/nbdkit', spread: 'spread t/n' }, metrics.map((m) => ({
      id: m.id, label: m.label, unit: m.unit, target: { op: '>=', value: m.target },
      a: samples[m.id]?.tandem ?? [], b: samples[m.id]?.nbdkit ?? [],
    })));
    allRendered.push(...t.rows);
    singleRows = t.rows.map(singleResult);
    process.stdout.write(`\n${t.text}\n`);
  }
  let mirroredRows: RenderedRow[] = [];
  if (selectedMirrored.length > 0) {
    const t = renderTable({ a: 'mirrored', b: 'single', ratio: 'mirrored/single', spread: 'spread m/s' }, selectedMirrored.map((m) => ({
      id: m.id, label: m.label, unit: m.unit, target: m.target,
      a: mirroredSamples[m.id]?.mirrored ?? [], b: mirroredSamples[m.id]?.single ?? [],
    })));
    mirroredRows = t.rows;
    allRendered.push(...t.rows);
    process.stdout.write(`\nmirrored: alpha (127.0.0.2, primary) + beta (127.0.0.3), cacheMode write-back, vs tandem serve alone; fio nbd on ${formatSize(opts.size)}\n${t.text}\n`);
  }
  let resyncRendered: RenderedRow[] = [];
  if (runResync) {
    const t = renderTable({ a: 'tandem', b: 'reference', ratio: 'tandem/ref', spread: 'spread t/r' }, resyncRows(opts.resyncSize, resyncSamples));
    resyncRendered = t.rows;
    allRendered.push(...t.rows);
    process.stdout.write(`\nresync of a ${formatSize(opts.resyncSize)} volume, timed by alpha from the resync's start to beta's RESYNC_DONE `
      + '(the "spawn to SECOND" rows add the node\'s start and the wait for alpha\'s next dial); MiB/s ratios = reference time / resync time; '
      + 'reference: cp --sparse=never + sync --data\n'
      + `${t.text}\n`);
  }
  let pgbenchRendered: RenderedRow[] = [];
  if (runPgbench) {
    const t = renderTable({ a: 'mirrored', b: 'local', ratio: 'mirrored/local', spread: 'spread m/l' },
      pgbenchRows({ scale: opts.pgbenchScale, clients: opts.pgbenchClients }, pgbenchSamples));
    pgbenchRendered = t.rows;
    allRendered.push(...t.rows);
    process.stdout.write(`\npgbench: PostgreSQL's data directory on pool db's ext4 on a mirrored volume (alpha + beta, write-back), `
      + `clients over the floating IP 127.0.0.30, vs a local directory on the same disk (127.0.0.31); `
      + `${opts.pgbenchClients} clients, -j ${Math.min(2, opts.pgbenchClients)}, ${opts.pgbenchSeconds} s, scale ${opts.pgbenchScale}; ${versions.pgbench ?? ''}\n`
      + `${t.text}\n`);
  }
  let failoverBelow = false;
  if (runFailover && failoverMs.length > 0) {
    const sorted = [...failoverMs].sort((a, b) => a - b);
    const median = sorted[Math.floor((sorted.length - 1) / 2)] ?? 0;
    const worst = sorted.at(-1) ?? 0;
    failoverBelow = median >= 2000;
    process.stdout.write(`\nfailover: kill -9 of the pool's owner to the first write acknowledged again through the pool's address `
      + '(witness policy, heartbeat 200 ms / 1 s)\n'
      + `median ${median.toFixed(0)} ms (target < 2000 ms: ${median < 2000 ? 'ok' : 'BELOW'}), worst ${worst.toFixed(0)} ms, `
      + `all: ${failoverMs.map((x) => x.toFixed(0)).join(', ')} ms\n`);
  }
  process.stdout.write(`\nmedian of ${roundsDone} round(s) per job per server; spread = (max-min)/median over the rounds; `
    + `total ${totalS.toFixed(0)} s\n`);
  const below = allRendered.filter((r) => r.pass === false);
  const belowIds = [...below.map((r) => r.id), ...(failoverBelow ? [failoverId] : [])];
  if (belowIds.length > 0) process.stdout.write(`below target: ${belowIds.join(', ')}\n`);
  for (const f of failures) process.stdout.write(`FAILED round ${f.round} ${f.job} on ${f.server}: ${f.error.split('\n')[0]}\n`);

  if (opts.json !== undefined) {
    const report = {
      date: new Date().toISOString(),
      totalSeconds: totalS,
      host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', memBytes: os.totalmem(), kernel: os.release() },
      versions,
      config: {
        size: opts.size, copySize: opts.copySize, resyncSize: opts.resyncSize, runtimeS: opts.runtimeS, rampS: opts.rampS,
        rounds: roundsDone, loadAverages: loads,
        jobs: [...selected.map((j) => j.id), ...selectedMirrored.map((m) => m.id), ...(runResync ? [resyncId] : []), ...(runPgbench ? [pgbenchId] : [])],
        pgbench: { seconds: opts.pgbenchSeconds, clients: opts.pgbenchClients, scale: opts.pgbenchScale },
      },
      results: singleRows,
      mirrored: mirroredRows,
      resync: { rows: resyncRendered, samples: resyncSamples },
      failover: { ms: failoverMs },
      pgbench: { rows: pgbenchRendered, samples: pgbenchSamples },
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
