// `npm run torture -- [options]`: the durability torture (docs/torture.md).
// Exit 0: every check passed. 1: a check failed (the summary says which). 2: bad
// arguments. 3: the run could not be carried out (no root, a tool missing, the
// cluster never came up).
import { parseArgs } from 'node:util';
import { abortAll, runTorture, tortureDefaults, type Broken } from './run';
import { FAULT_KINDS, parseDuration, SCHEDULE_PROFILES, type FaultKind, type ScheduleProfile } from './schedule';

const USAGE = `usage: npm run torture -- [--duration 10m] [--seed N] [--schedule random|crash-primary] [--faults KIND,…]
                          [--broken ack-before-peer] [--clients 2] [--depth 4] [--size-mib 128] [--subnet 40]
                          [--recover 120s] [--keep | --discard]

  --duration   how long the nemesis injects faults (default 2m; 10m for a release check)
  --seed       the schedule's seed (default: random, printed): the same seed gives the same schedule
  --schedule   random (every kind of fault) or crash-primary (the pool's owner loses power under load, again and again)
  --faults     the kinds the random schedule draws from: ${FAULT_KINDS.join(', ')}
  --broken     run a deliberately broken build the checker must catch: ack-before-peer
  --keep       keep the run directory (configs, logs, client records, both copies); by default it is kept
               only when a check fails; --discard removes it always`;

class UsageError extends Error {}

function int(v: string | undefined, name: string, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${name} must be a whole number in ${min}..${max}`);
  return Number(v);
}

export async function main(argv: string[]): Promise<number> {
  let opts: Parameters<typeof runTorture>[0];
  try {
    const { values, positionals } = parseArgs({
      args: argv, strict: true, allowPositionals: true,
      options: {
        duration: { type: 'string' }, seed: { type: 'string' }, schedule: { type: 'string' }, faults: { type: 'string' }, broken: { type: 'string' },
        clients: { type: 'string' }, depth: { type: 'string' }, 'size-mib': { type: 'string' }, subnet: { type: 'string' }, recover: { type: 'string' },
        keep: { type: 'boolean' }, discard: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help === true) { process.stdout.write(`${USAGE}\n`); return 0; }
    if (positionals.length > 0) throw new UsageError(`unexpected ${JSON.stringify(positionals[0])}`);
    const durationMs = parseDuration(values.duration ?? '2m');
    if (typeof durationMs === 'string') throw new UsageError(`--duration: ${durationMs}`);
    const recoverMs = parseDuration(values.recover ?? `${tortureDefaults.recoverMs / 1000}s`);
    if (typeof recoverMs === 'string') throw new UsageError(`--recover: ${recoverMs}`);
    const profile = (values.schedule ?? 'random') as ScheduleProfile;
    if (!SCHEDULE_PROFILES.includes(profile)) throw new UsageError(`--schedule must be one of ${SCHEDULE_PROFILES.join(', ')}`);
    const broken = (values.broken ?? 'none') as Broken;
    if (broken !== 'none' && broken !== 'ack-before-peer') throw new UsageError('--broken must be ack-before-peer');
    let kinds: FaultKind[] | undefined;
    if (values.faults !== undefined) {
      kinds = values.faults.split(',').map((k) => k.trim()).filter((k) => k !== '') as FaultKind[];
      const bad = kinds.find((k) => !FAULT_KINDS.includes(k));
      if (bad !== undefined || kinds.length === 0) throw new UsageError(`--faults: ${bad === undefined ? 'empty' : JSON.stringify(bad)}; kinds: ${FAULT_KINDS.join(', ')}`);
    }
    opts = {
      seed: int(values.seed, 'seed', Math.floor(Math.random() * 0x1_0000_0000), 0, 0xffff_ffff),
      durationMs, profile, broken, recoverMs, ...(kinds === undefined ? {} : { kinds }),
      subnet: int(values.subnet, 'subnet', tortureDefaults.subnet, 1, 253),
      sizeBytes: int(values['size-mib'], 'size-mib', tortureDefaults.sizeBytes / 1024 / 1024, 4, 65536) * 1024 * 1024,
      clients: int(values.clients, 'clients', tortureDefaults.clients, 1, 16),
      depth: int(values.depth, 'depth', tortureDefaults.depth, 1, 64),
      keep: values.keep === true ? 'always' : values.discard === true ? 'never' : 'failed',
    };
    if (values.keep === true && values.discard === true) throw new UsageError('--keep or --discard, not both');
    if (opts.durationMs < 1_000 || opts.durationMs > 24 * 3600_000) throw new UsageError('--duration must be 1 s to 24 h');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (e instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`torture: ${(e as Error).message}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
  const say = (line: string): void => { process.stdout.write(`${line}\n`); };
  try {
    const r = await runTorture(opts, say);
    say(r.summary);
    return r.passed ? 0 : 1;
  } catch (e) {
    process.stderr.write(`torture: the run could not be carried out: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    return 3;
  }
}

if (require.main === module) {
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`torture: ${sig}: tearing down\n`);
    void abortAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.stdout.on('error', () => { /* the reader went away; the exit code still tells */ });
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => { process.stderr.write(`torture: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`); process.exit(3); },
  );
}
