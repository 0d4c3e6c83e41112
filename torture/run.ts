// One torture run: the cluster comes up, clients write through the pool's
// floating IP, the nemesis follows its schedule, then everything is healed,
// the cluster must recover and resync, everything stops cleanly, and the
// checker judges the clients' records, the nodes' logs and both copies.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { NodeName, NodeStatus, VolumeStatus } from '../test/helpers/cluster';
import { httpJson } from '../test/helpers/cluster';
import { run } from '../test/helpers/run';
import {
  ackerAt, checkCopy, countEvents, countMoves, diffCopies, expectations, longestGap, overlappingRuns, parseActivations, parseAckRuns,
  type AckRun, type CopyCheck, type Gap,
} from './checker';
import { BLOCK_SIZE, parseRecords, type WriteRecord } from './client';
import { NBD_PORT, POOL, TortureCluster, VOLUME } from './cluster';
import { eachLine } from '../test/helpers/files';
import { Nemesis, type AppliedFault } from './nemesis';
import { countKinds, formatSchedule, generateSchedule, seconds, type FaultKind, type ScheduleProfile } from './schedule';

export type Broken = 'none' | 'ack-before-peer';

export interface TortureOptions {
  readonly seed: number;
  /** how long the nemesis runs */
  readonly durationMs: number;
  readonly profile: ScheduleProfile;
  readonly kinds?: readonly FaultKind[];
  readonly broken: Broken;
  /** S in 198.18.S.0/24 */
  readonly subnet: number;
  readonly sizeBytes: number;
  readonly clients: number;
  /** writes in flight per client */
  readonly depth: number;
  /** after the heal: how long the cluster gets to serve the pool again, in sync */
  readonly recoverMs: number;
  /** the run directory (configs, logs, client records, both copies): kept always, only when a check failed, or never */
  readonly keep: 'always' | 'failed' | 'never';
}

export const tortureDefaults = {
  subnet: 40, sizeBytes: 128 * 1024 * 1024, clients: 2, depth: 4, recoverMs: 120_000,
} as const;

export interface TortureResult {
  readonly passed: boolean;
  readonly failures: readonly string[];
  readonly summary: string;
  readonly lostWrites: number;
  readonly overlaps: number;
  readonly identical: boolean;
  readonly faults: number;
  readonly failovers: number;
  readonly maxUnavailableMs: number;
}

/** runs under way, torn down by abortAll() when the process is told to stop */
const teardowns = new Set<() => Promise<void>>();

/** Ends every run under way: its processes (by PID), its network, its directory. For SIGINT and SIGTERM. */
export async function abortAll(): Promise<void> {
  await Promise.allSettled([...teardowns].map((t) => t()));
}

/** A client process in the clients' namespace. */
class ClientProc {
  readonly events: Array<Record<string, unknown>> = [];
  private stderr = '';
  private readonly exited: Promise<number | null>;

  constructor(private readonly child: ChildProcess, readonly logFile: string, readonly index: number) {
    eachLine(child.stdout, (line) => {
      try { this.events.push(JSON.parse(line) as Record<string, unknown>); } catch { /* not an event */ }
    });
    child.stderr?.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exited = new Promise((resolve) => {
      child.once('error', (e) => { this.stderr += `spawn error: ${e.message}\n`; resolve(null); });
      child.once('exit', (code) => resolve(code));
    });
  }

  get running(): boolean { return this.child.exitCode === null && this.child.signalCode === null; }
  get errors(): string { return this.stderr; }

  /** acknowledged writes so far (from the last progress line) */
  acked(): number {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i] as Record<string, unknown>;
      if ((e.event === 'progress' || e.event === 'done') && typeof e.ack === 'number') return e.ack;
    }
    return 0;
  }

  async stop(timeoutMs: number): Promise<number | null> {
    if (this.running) this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.exited, new Promise<'hung'>((resolve) => { timer = setTimeout(() => resolve('hung'), timeoutMs); })]);
    clearTimeout(timer);
    if (r !== 'hung') return r;
    this.kill();
    await this.exited;
    throw new Error(`client ${this.index} did not stop within ${timeoutMs} ms of SIGTERM`);
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function poolOf(s: NodeStatus | undefined): { owner: string; phase: string; reason: string | null; term: number } | undefined {
  return s?.clusterState?.pools.find((p) => p.name === POOL);
}

function volumeOf(s: NodeStatus | undefined): VolumeStatus | undefined {
  return s?.volumes.find((v) => v.name === VOLUME);
}

/** what both nodes say, one line each, for failure messages */
function describeStatus(n: NodeName, s: NodeStatus | undefined): string {
  if (s === undefined) return `${n}: no answer`;
  const p = poolOf(s);
  const v = volumeOf(s);
  return `${n}: pool ${p?.phase ?? '?'} owner ${p?.owner ?? '?'} term ${p?.term ?? '?'}${p?.reason ? ` (${p.reason})` : ''}; ` +
    `${VOLUME} ${v?.role ?? '?'} ${v?.state ?? '?'} ${v?.diskState ?? '?'} ${v?.connection ?? '?'} outOfSync ${v?.outOfSyncBytes ?? '?'}` +
    `${v?.resync ? ` resync ${v.resync.doneBytes}/${v.resync.totalBytes}` : ''}${v?.splitBrain ? ` split brain: ${v.splitBrain.reason}` : ''}` +
    `${v?.suspended ? ` suspended: ${v.suspended}` : ''}${v?.error ? ` error: ${v.error}` : ''}`;
}

/** The pool ACTIVE on exactly one node that both name as owner, its volume PRIM there and SECOND on the other, nothing left to resync. */
function settled(a: NodeStatus | undefined, b: NodeStatus | undefined): NodeName | undefined {
  const pa = poolOf(a);
  const pb = poolOf(b);
  if (pa === undefined || pb === undefined || pa.owner !== pb.owner) return undefined;
  const owner = pa.owner as NodeName;
  const [po, ps] = owner === 'alpha' ? [pa, pb] : [pb, pa];
  if (po.phase !== 'ACTIVE' || ps.phase !== 'STANDBY') return undefined;
  const [vo, vs] = owner === 'alpha' ? [volumeOf(a), volumeOf(b)] : [volumeOf(b), volumeOf(a)];
  if (vo?.state !== 'PRIM' || vs?.state !== 'SECOND') return undefined;
  if (vo.outOfSyncBytes !== 0 || vs.outOfSyncBytes !== 0 || vo.resync !== null || vs.resync !== null) return undefined;
  return owner;
}

export async function runTorture(o: TortureOptions, say: (line: string) => void): Promise<TortureResult> {
  const t0 = Date.now();
  const rel = (t: number): string => `t+${((t - t0) / 1000).toFixed(1)} s`;
  const schedule = generateSchedule({ seed: o.seed, durationMs: o.durationMs, profile: o.profile, ...(o.kinds === undefined ? {} : { kinds: o.kinds }) });
  say(`torture: seed ${o.seed}, faults for ${seconds(o.durationMs)}, schedule ${o.profile}${o.kinds === undefined ? '' : ` (${o.kinds.join(', ')})`}, ` +
    `build ${o.broken === 'none' ? 'as is' : `BROKEN ON PURPOSE (${o.broken})`}, ${o.clients} clients × ${o.depth} writes in flight, ` +
    `${o.sizeBytes / 1024 / 1024} MiB volume, 198.18.${o.subnet}.0/24`);
  say(`schedule (${schedule.length} faults; t = from the start of the faults):\n${formatSchedule(schedule)}`);
  await preflight();

  const failures: string[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-torture-'));
  let keep = o.keep === 'always' || process.env.TANDEM_KEEP_TEST_DIRS !== undefined;
  let cluster: TortureCluster | undefined;
  const clients: ClientProc[] = [];
  let nemesis: Nemesis | undefined;
  const teardown = async (): Promise<void> => {
    nemesis?.cancel();
    for (const cl of clients) cl.kill();
    await cluster?.cleanup(keep).catch(() => undefined);
    if (cluster === undefined && !keep) fs.rmSync(dir, { recursive: true, force: true });
  };
  teardowns.add(teardown);
  try {
    cluster = await TortureCluster.create({ subnet: o.subnet, dir, sizeBytes: o.sizeBytes, ackBeforePeer: o.broken === 'ack-before-peer' });
    const c = cluster;
    await c.witness.start();
    await Promise.all(c.nodes.map((n) => n.start(60_000)));
    const up = await waitFor(async () => settled(await c.status('alpha'), await c.status('beta')), 90_000);
    if (up === undefined) throw new Error(`the cluster did not come up in sync:\n${describeStatus('alpha', await c.status('alpha'))}\n${describeStatus('beta', await c.status('beta'))}`);
    say(`${rel(Date.now())}  cluster up: ${POOL} ACTIVE on ${up}, ${VOLUME} in sync; floating IP ${c.vip}`);

    // ---- clients
    const totalBlocks = Math.floor(o.sizeBytes / BLOCK_SIZE);
    const per = Math.floor(totalBlocks / o.clients);
    const clientJs = path.join(__dirname, 'client.js');
    for (let i = 0; i < o.clients; i++) {
      const logFile = path.join(dir, `client-${i}.log`);
      const argv = [...c.net.prefix(c.netnsHost('clients')), process.execPath, clientJs, '--host', c.vip, '--port', String(NBD_PORT), '--export', VOLUME,
        '--first-block', String(i * per), '--blocks', String(per), '--depth', String(o.depth), '--seed', String((o.seed + i * 7919) >>> 0), '--log', logFile];
      clients.push(new ClientProc(spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }), logFile, i));
    }
    const writing = await waitFor(async () => (clients.every((cl) => cl.acked() > 0) ? true : undefined), 30_000);
    if (writing === undefined) throw new Error(`the clients did not get writes acknowledged within 30 s: ${clients.map((cl) => cl.errors.trim()).join('\n')}`);
    say(`${rel(Date.now())}  clients writing`);

    // ---- the nemesis
    nemesis = new Nemesis(c, say, t0);
    const faultsStart = Date.now();
    const faultsEnd = faultsStart + o.durationMs;
    say(`${rel(faultsStart)}  faults start (schedule t = ${rel(faultsStart)} + t)`);
    await nemesis.run(schedule, faultsStart, () => Date.now() >= faultsEnd);
    while (Date.now() < faultsEnd) await sleep(Math.min(200, faultsEnd - Date.now()));
    say(`${rel(Date.now())}  faults end: healing everything`);
    await nemesis.healAll();
    const healedAt = Date.now();

    // ---- recovery: one owner, in sync, and every client acknowledged again
    const ackedAtHeal = clients.map((cl) => cl.acked());
    let last: [NodeStatus | undefined, NodeStatus | undefined] = [undefined, undefined];
    const owner = await waitFor(async () => {
      last = [await c.status('alpha'), await c.status('beta')];
      const s = settled(...last);
      return s !== undefined && clients.every((cl, i) => cl.acked() > (ackedAtHeal[i] as number)) ? s : undefined;
    }, o.recoverMs);
    const recoveredMs = Date.now() - healedAt;
    if (owner === undefined) {
      failures.push(`not recovered ${seconds(o.recoverMs)} after the heal: ${describeStatus('alpha', last[0])} | ${describeStatus('beta', last[1])}; ` +
        `clients acknowledged ${clients.map((cl, i) => cl.acked() - (ackedAtHeal[i] as number)).join(', ')} writes since`);
      say(`${rel(Date.now())}  NOT RECOVERED: ${failures.at(-1) ?? ''}`);
    } else {
      say(`${rel(Date.now())}  recovered ${seconds(recoveredMs)} after the heal: ${POOL} ACTIVE on ${owner}, in sync, clients writing`);
    }

    // ---- stop the clients, then let the copies settle and compare them online
    const clientsStopAt = Date.now();
    for (const cl of clients) {
      try {
        const code = await cl.stop(20_000);
        if (code !== 0) failures.push(`client ${cl.index} exited ${String(code)}: ${cl.errors.trim().slice(-500)}`);
      } catch (e) {
        failures.push(errText(e));
      }
    }
    let verifyNote = 'not run (the cluster did not settle)';
    let lastSeen: [NodeStatus | undefined, NodeStatus | undefined] = [undefined, undefined];
    const finalOwner = await waitFor(async () => {
      lastSeen = [await c.status('alpha'), await c.status('beta')];
      return settled(...lastSeen);
    }, owner === undefined ? 5_000 : 60_000);
    // the copy clients read: the one of the node serving the pool at the end
    const activeOn = (['alpha', 'beta'] as const).filter((n, i) => {
      const p = poolOf(lastSeen[i]);
      return p?.phase === 'ACTIVE' && p.owner === n;
    });
    const serving: NodeName | undefined = finalOwner ?? (activeOn.length === 1 ? activeOn[0] : undefined);
    if (finalOwner !== undefined) {
      const n = c.node(finalOwner);
      try {
        const r = await httpJson<{ checkedBytes: number; differingBytes: number }>('POST', n.addr.api.host, n.addr.api.port, `/api/v1/volumes/${VOLUME}/verify`, { resync: false }, 120_000);
        if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`);
        verifyNote = `${r.body.differingBytes} of ${r.body.checkedBytes} bytes differ (tandem verify on ${finalOwner})`;
        if (r.body.differingBytes !== 0) failures.push(`tandem verify: ${verifyNote}`);
      } catch (e) {
        verifyNote = `failed: ${errText(e)}`;
        failures.push(`tandem verify ${verifyNote}`);
      }
    } else if (owner !== undefined) {
      failures.push('the copies did not settle in sync within 60 s of the clients stopping');
    }

    // ---- stop everything cleanly
    for (const n of c.nodes) {
      try {
        const code = await n.stop(30_000);
        if (code !== 0) failures.push(`${n.name} exited ${String(code)} at its clean stop`);
      } catch (e) {
        failures.push(errText(e));
      }
    }
    await c.witness.kill9();
    const logs: Record<NodeName, string> = { alpha: c.alpha.log(), beta: c.beta.log() };
    fs.writeFileSync(path.join(dir, 'alpha.log'), logs.alpha);
    fs.writeFileSync(path.join(dir, 'beta.log'), logs.beta);
    fs.writeFileSync(path.join(dir, 'witness.log'), c.witness.log());
    fs.writeFileSync(path.join(dir, 'nemesis.json'), JSON.stringify(nemesis.applied, null, 1));

    // ---- the checks
    const records: WriteRecord[] = [];
    let torn = 0;
    for (const cl of clients) {
      const p = parseRecords(fs.readFileSync(cl.logFile, 'utf8'));
      for (const r of p.records) records.push(r);
      torn += p.torn;
    }
    if (torn > 0) failures.push(`${torn} client log lines were torn`);
    const exp = expectations(records);
    const copies: Record<NodeName, CopyCheck> = {
      alpha: checkCopy(c.alpha.backingPath, exp),
      beta: checkCopy(c.beta.backingPath, exp),
    };
    const runs: Record<NodeName, AckRun[]> = { alpha: parseAckRuns(logs.alpha, 'alpha', VOLUME), beta: parseAckRuns(logs.beta, 'beta', VOLUME) };
    const allRuns = [...runs.alpha, ...runs.beta].sort((x, y) => x.from - y.from);
    const overlaps = overlappingRuns(runs.alpha, runs.beta);
    const identical = copies.alpha.sha256 === copies.beta.sha256;

    const count = (k: WriteRecord['outcome']): number => records.filter((r) => r.outcome === k).length;
    const acks = records.filter((r) => r.outcome === 'ack');
    const ackTimes = acks.map((r) => r.doneAt);
    const gap: Gap = longestGap(ackTimes, faultsStart, clientsStopAt);
    const applied = nemesis.applied.filter((a) => a.skipped === undefined);
    const skipped = nemesis.applied.filter((a) => a.skipped !== undefined);
    const acts = [...parseActivations(logs.alpha, POOL), ...parseActivations(logs.beta, POOL)];
    const moves = countMoves(acts);
    const takeovers = countEvents(logs.alpha, 'takeover') + countEvents(logs.beta, 'takeover');
    const loggedAcks = allRuns.reduce((s, r) => s + r.writes, 0);
    const reconnects = clients.reduce((s, cl) => s + cl.events.filter((e) => e.event === 'reconnected').length, 0);

    // what clients can read is the serving copy; a stale other copy shows as the copies differing
    const lostMax = serving !== undefined ? copies[serving].lost.length : Math.max(copies.alpha.lost.length, copies.beta.lost.length);
    const lostWhere = serving !== undefined ? `on ${serving}'s copy, which serves the pool` : 'on the worse copy (no node serves the pool)';
    const unexpectedMax = Math.max(copies.alpha.unexpected.length, copies.beta.unexpected.length);
    if (lostMax > 0) failures.push(`acknowledged writes lost: ${lostMax} ${lostWhere} (alpha's copy ${copies.alpha.lost.length}, beta's ${copies.beta.lost.length})`);
    if (unexpectedMax > 0) failures.push(`blocks holding what nobody wrote there: ${copies.alpha.unexpected.length} on alpha's copy, ${copies.beta.unexpected.length} on beta's`);
    if (overlaps.length > 0) failures.push(`both nodes accepted writes at the same time: ${overlaps.length} overlapping spans`);
    if (acks.length > 0 && allRuns.length === 0) failures.push("the nodes' logs record no 'accepted client writes' span: the one-writer check had nothing to check");
    if (!identical) failures.push('the two copies differ');
    if (acks.length === 0) failures.push('no write was acknowledged');

    // ---- the summary
    const lines: string[] = [];
    const fmtTime = (t: number): string => `${rel(t)} (${new Date(t).toISOString()})`;
    lines.push(`torture summary: seed ${o.seed}, ${seconds(o.durationMs)} of faults, schedule ${o.profile}, build ${o.broken === 'none' ? 'as is' : `broken (${o.broken})`}`);
    lines.push(`  operations: ${records.length} writes issued, ${acks.length} acknowledged, ${count('err')} failed, ${count('lost')} unanswered when a connection dropped, ` +
      `${count('open')} unanswered at the stop; ${reconnects} reconnects; ${loggedAcks} acknowledgements in the nodes' logs`);
    lines.push(`  faults injected: ${applied.length} (${countKinds(applied.map((a) => a.kind))})${skipped.length > 0 ? `; ${skipped.length} skipped (${countKinds(skipped.map((a) => a.kind))})` : ''}`);
    lines.push(`  failovers: ${moves} moves of ${POOL} between the nodes (${takeovers} takeovers)`);
    lines.push(`  maximum unavailability: ${seconds(gap.ms)} without an acknowledged write (${rel(gap.from)} to ${rel(gap.until)})`);
    lines.push(`  recovery after the heal: ${owner === undefined ? `none within ${seconds(o.recoverMs)}` : seconds(recoveredMs)}; online verify: ${verifyNote}`);
    for (const n of ['alpha', 'beta'] as const) {
      const k = copies[n];
      lines.push(`  ${n}'s copy: ${k.ok} of ${k.blocks} blocks as expected (${k.unackedLanded} hold a write that was never acknowledged), ` +
        `${k.lost.length} lost acknowledged writes, ${k.unexpected.length} unexpected; sha256 ${k.sha256.slice(0, 16)}`);
    }
    lines.push(`  copies identical: ${identical ? 'yes' : `NO (${diffCopies(c.alpha.backingPath, c.beta.backingPath).count} blocks differ)`}`);
    lines.push(`  overlapping writers: ${overlaps.length} (${runs.alpha.length} spans of acknowledged writes on alpha, ${runs.beta.length} on beta)`);
    lines.push(`  acknowledged writes lost: ${lostMax} (${lostWhere})`);

    /** who acknowledged at t: a logged span, else a node killed soon after (its last span was not logged yet) */
    const acker = (t: number): string => {
      const logged = ackerAt(allRuns, t);
      if (logged !== undefined) return logged;
      const died = nemesis?.applied.find((a) => (a.kind === 'kill' || a.kind === 'crash') && a.skipped === undefined && a.at >= t && a.at - t <= 2_000);
      return died === undefined ? 'a node whose log has no span then' : `${died.hosts[0] ?? '?'} (not logged yet: it was killed ${died.at - t} ms later)`;
    };
    const evidence: string[] = [];
    const order: NodeName[] = serving === 'beta' ? ['beta', 'alpha'] : ['alpha', 'beta'];
    for (const n of order) {
      for (const b of copies[n].lost.slice(0, serving === undefined || n === serving ? 8 : 2)) {
        const e = b.expected;
        evidence.push(`  ${n}'s copy, block ${b.block}: acknowledged seq ${e?.seq ?? '?'} (issued ${e === undefined ? '?' : fmtTime(e.issuedAt)}, acknowledged ${e === undefined ? '?' : fmtTime(e.doneAt)}` +
          `${e === undefined ? '' : `, by ${acker(e.doneAt)}`}) is missing; found ${b.found}` +
          `${b.foundRecord === undefined ? '' : ` (acknowledged ${fmtTime(b.foundRecord.doneAt)})`}`);
      }
      for (const b of copies[n].unexpected.slice(0, 4)) evidence.push(`  ${n}'s copy, block ${b.block}: holds ${b.found}, which no write put there`);
    }
    for (const [x, y] of overlaps.slice(0, 8)) {
      evidence.push(`  alpha acknowledged ${x.writes} writes ${fmtTime(x.from)} … ${rel(x.until)} while beta acknowledged ${y.writes} writes ${fmtTime(y.from)} … ${rel(y.until)}`);
    }
    if (evidence.length > 0) {
      lines.push('evidence:');
      lines.push(...evidence);
      const firstLost = (serving !== undefined && copies[serving].lost.length > 0 ? copies[serving].lost : [...copies.alpha.lost, ...copies.beta.lost]).map((b) => b.expected?.doneAt).filter((t): t is number => t !== undefined).sort((x, y) => x - y)[0];
      const around = firstLost ?? overlaps[0]?.[0].from;
      if (around !== undefined) {
        lines.push(`faults around ${rel(around)}:`);
        for (const a of nemesis.applied.filter((x) => x.at >= around - 15_000 && x.at <= around + 5_000)) lines.push(`  ${describeApplied(a, rel)}`);
        lines.push(`node log lines within 3 s of ${rel(around)} (warnings, errors, role changes):`);
        lines.push(...logLinesAround(logs, around, 3_000).map((l) => `  ${l}`));
      }
    }
    if (owner === undefined) {
      // why the pool did not come back: the nodes' last errors
      const errs: Array<[number, string]> = [];
      for (const n of ['alpha', 'beta'] as const) {
        for (const line of logs[n].split('\n')) {
          if (!/ error /.test(line)) continue;
          const at = Date.parse(line.slice(0, 24));
          if (Number.isFinite(at) && at <= healedAt + o.recoverMs) errs.push([at, line.length > 300 ? `${line.slice(0, 300)}…` : line]);
        }
      }
      lines.push('the last errors the nodes logged before the recovery deadline:');
      lines.push(...errs.sort((x, y) => x[0] - y[0]).slice(-12).map(([at, l]) => `  ${rel(at)}  ${l}`));
    }
    failures.push(...nemesis.applied.filter((a) => a.error !== undefined).map((a) => `fault #${a.n} (${a.kind}): ${a.error ?? ''}`));
    const passed = failures.length === 0;
    lines.push(passed
      ? `RESULT: PASS: lost 0 acknowledged writes, no overlapping writers, copies identical (seed ${o.seed})`
      : `RESULT: FAIL (seed ${o.seed}; replay: npm run torture -- --seed ${o.seed} --duration ${Math.round(o.durationMs / 1000)}s` +
        `${o.profile === 'random' ? '' : ` --schedule ${o.profile}`}${o.kinds === undefined ? '' : ` --faults ${o.kinds.join(',')}`}` +
        `${o.broken === 'none' ? '' : ` --broken ${o.broken}`}):\n${failures.map((f) => `  - ${f}`).join('\n')}`);
    if (!passed && o.keep === 'failed') keep = true;
    if (keep) lines.push(`run directory kept: ${dir}`);
    const summary = lines.join('\n');
    return {
      passed, failures, summary, lostWrites: lostMax, overlaps: overlaps.length, identical, faults: applied.length, failovers: moves, maxUnavailableMs: gap.ms,
    };
  } finally {
    nemesis?.cancel();
    for (const cl of clients) cl.kill();
    await cluster?.cleanup(keep).catch((e: unknown) => say(`cleanup: ${errText(e)}`));
    if (cluster === undefined && !keep) fs.rmSync(dir, { recursive: true, force: true });
    teardowns.delete(teardown);
  }
}

function describeApplied(a: AppliedFault, rel: (t: number) => string): string {
  return `${rel(a.at)} #${a.n} ${a.kind} [${a.hosts.join(', ')}]${a.skipped === undefined ? '' : ` skipped: ${a.skipped}`}` +
    `${a.healedAt === undefined ? '' : `, healed ${rel(a.healedAt)}`}${a.error === undefined ? '' : `, error: ${a.error}`}`;
}

const INTERESTING = / (warn|error) |promoted|demoted|accepted client writes|event=(activated|takeover|suspended|resumed|claim-granted|alone-granted)|exited:|start #/;

/** the node log lines within ms of t that tell what the nodes did */
function logLinesAround(logs: Record<NodeName, string>, t: number, ms: number): string[] {
  const out: Array<[number, string]> = [];
  for (const n of ['alpha', 'beta'] as const) {
    for (const line of logs[n].split('\n')) {
      const at = Date.parse(line.slice(0, 24));
      if (!Number.isFinite(at) || Math.abs(at - t) > ms || !INTERESTING.test(line)) continue;
      out.push([at, line.length > 300 ? `${line.slice(0, 300)}…` : line]);
    }
  }
  return out.sort((x, y) => x[0] - y[0]).slice(0, 60).map((x) => x[1]);
}

/** Polls f every 200 ms until it returns something, or undefined once timeoutMs have passed. */
async function waitFor<T>(f: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) return undefined;
    await sleep(200);
  }
}

/** Namespaces and floating IPs need root, iproute2 and arping. */
async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the torture needs root (network namespaces, addresses, routes)');
  for (const tool of ['ip', 'arping']) {
    const r = await run('sh', ['-c', `command -v ${tool} || PATH="$PATH:/usr/sbin:/sbin" command -v ${tool}`], { allowFail: true });
    if (r.code !== 0) throw new Error(`the torture needs ${tool} (Debian: ${tool === 'ip' ? 'iproute2' : 'iputils-arping'})`);
  }
}
