// The client under load for failover tests, as a program (run it inside the
// client's namespace: `ip netns exec NS node dist/test/helpers/acked-writer.js`)
// and as a library of its block patterns and log format.
//
//   write  --host H --port P --export NAME --blocks N [--block-size 4096] [--depth D] --log FILE
//          [--max-seconds S] [--io-timeout-ms 15000] [--connect-timeout-ms 3000] [--fua]
//     D writers share one NBD connection. Write k (k = 0, 1, …) has seq k+1 and goes to
//     block k mod N with pattern(index, seq). Every acknowledged write is recorded; when
//     the connection fails (a write error, a close, or a write unanswered for io-timeout-ms)
//     the writer counts a failure and reconnects to the same address every 20 ms.
//     SIGTERM, SIGINT or max-seconds: stop issuing, let in-flight writes settle (≤ 5 s),
//     write the log (fsync'd), print a "done" line, exit 0. Bad arguments exit 2.
//     stdout: one JSON line per event: connected, failure, reconnected, progress (1 s), done.
//
//   verify --host H --port P --export NAME --log FILE
//     Reads every block the log names and checks it holds the acknowledged write or a later
//     write to that block that was issued but not acknowledged (it may have reached the disk).
//     A block with no acknowledged write may also still be zeros. Exit 0 if all are good, 1 if not.
//
// Blocks are only ever written by one request at a time: a writer whose next block still
// has a write in flight waits for it, so the acknowledged seq is the block's newest.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NbdClient } from './nbd-client';

// ---------------------------------------------------------------- the library

/** The log the write command leaves: what was acknowledged and what may also be on the disk. */
export interface WriterLog {
  readonly blockSize: number;
  readonly blocks: number;
  /** block index → the highest acknowledged seq */
  readonly acked: Readonly<Record<string, number>>;
  /** block index → seqs issued after the acknowledged one and never acknowledged (ascending) */
  readonly laterIssued: Readonly<Record<string, readonly number[]>>;
  /** writes issued */
  readonly writes: number;
  /** writes acknowledged */
  readonly ackedWrites: number;
  readonly failures: number;
  readonly reconnects: number;
}

/** The content of block `index` written with `seq`: 4-byte LE index, 4-byte LE seq, repeated. */
export function pattern(index: number, seq: number, blockSize: number): Buffer {
  const unit = Buffer.alloc(8);
  unit.writeUInt32LE(index, 0);
  unit.writeUInt32LE(seq, 4);
  return Buffer.alloc(blockSize, unit);
}

export type Decoded =
  | { readonly kind: 'pattern'; readonly index: number; readonly seq: number }
  | { readonly kind: 'zeros' }
  | { readonly kind: 'other'; readonly head: string };

/** What a block holds: a whole pattern, zeros, or something else (its first 16 bytes in hex). */
export function decodeBlock(data: Buffer): Decoded {
  if (data.length >= 8 && data.length % 8 === 0) {
    const index = data.readUInt32LE(0);
    const seq = data.readUInt32LE(4);
    if (index === 0 && seq === 0) {
      if (data.every((b) => b === 0)) return { kind: 'zeros' };
    } else if (data.equals(pattern(index, seq, data.length))) {
      return { kind: 'pattern', index, seq };
    }
  }
  return { kind: 'other', head: data.subarray(0, 16).toString('hex') };
}

export interface BlockCheck {
  readonly index: number;
  readonly ok: boolean;
  /** the acknowledged seq, or null when no write to the block was acknowledged */
  readonly expected: number | null;
  /** later writes that are also acceptable */
  readonly later: readonly number[];
  /** the seq found when the block holds a pattern of this index, otherwise a description */
  readonly found: number | string;
}

/** Checks one block read back against the log. */
export function checkBlock(log: WriterLog, index: number, data: Buffer): BlockCheck {
  const acked = log.acked[String(index)];
  const later = log.laterIssued[String(index)] ?? [];
  const d = decodeBlock(data);
  let found: number | string;
  let ok: boolean;
  if (d.kind === 'pattern' && d.index === index) {
    found = d.seq;
    ok = d.seq === acked || later.includes(d.seq);
  } else if (d.kind === 'zeros') {
    found = 'zeros';
    ok = acked === undefined;
  } else {
    found = d.kind === 'pattern' ? `pattern of block ${d.index} seq ${d.seq}` : `other ${d.head}`;
    ok = false;
  }
  return { index, ok, expected: acked ?? null, later, found };
}

/** The block indexes a log names (acknowledged or issued), ascending. */
export function loggedBlocks(log: WriterLog): number[] {
  const s = new Set<number>([...Object.keys(log.acked), ...Object.keys(log.laterIssued)].map(Number));
  return [...s].sort((a, b) => a - b);
}

/** Parses and checks a log's JSON text. */
export function parseWriterLog(text: string): WriterLog {
  const v = JSON.parse(text) as Partial<WriterLog>;
  const int = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  if (!int(v.blockSize) || v.blockSize === 0 || !int(v.blocks) || v.blocks === 0) throw new Error('writer log: bad blockSize/blocks');
  if (typeof v.acked !== 'object' || v.acked === null || typeof v.laterIssued !== 'object' || v.laterIssued === null) {
    throw new Error('writer log: acked and laterIssued must be objects');
  }
  const inRange = (k: string): boolean => /^\d+$/.test(k) && Number(k) < (v.blocks as number);
  for (const [k, s] of Object.entries(v.acked)) {
    if (!inRange(k) || !int(s) || s === 0) throw new Error(`writer log: bad acked entry ${k}: ${JSON.stringify(s)}`);
  }
  for (const [k, l] of Object.entries(v.laterIssued)) {
    if (!inRange(k) || !Array.isArray(l) || !l.every((s) => int(s) && s > 0)) throw new Error(`writer log: bad laterIssued entry ${k}`);
  }
  return {
    blockSize: v.blockSize, blocks: v.blocks, acked: v.acked, laterIssued: v.laterIssued,
    writes: int(v.writes) ? v.writes : 0, ackedWrites: int(v.ackedWrites) ? v.ackedWrites : 0,
    failures: int(v.failures) ? v.failures : 0, reconnects: int(v.reconnects) ? v.reconnects : 0,
  };
}

export function readWriterLog(file: string): WriterLog {
  return parseWriterLog(fs.readFileSync(file, 'utf8'));
}

/** Records issued and acknowledged writes per block. */
export class AckTracker {
  private readonly acked = new Map<number, number>();
  /** per block: issued, not acknowledged, newer than the acknowledged seq */
  private readonly open = new Map<number, Set<number>>();
  writes = 0;
  ackedWrites = 0;

  issue(index: number, seq: number): void {
    this.writes++;
    let s = this.open.get(index);
    if (s === undefined) this.open.set(index, (s = new Set()));
    s.add(seq);
  }

  ack(index: number, seq: number): void {
    this.ackedWrites++;
    const top = Math.max(this.acked.get(index) ?? 0, seq);
    this.acked.set(index, top);
    const s = this.open.get(index);
    if (s === undefined) return;
    for (const x of s) if (x <= top) s.delete(x);
    if (s.size === 0) this.open.delete(index);
  }

  toLog(blockSize: number, blocks: number, failures: number, reconnects: number): WriterLog {
    const acked: Record<string, number> = {};
    const laterIssued: Record<string, number[]> = {};
    for (const [i, s] of [...this.acked].sort((a, b) => a[0] - b[0])) acked[String(i)] = s;
    for (const [i, set] of [...this.open].sort((a, b) => a[0] - b[0])) {
      const top = this.acked.get(i) ?? 0;
      const l = [...set].filter((x) => x > top).sort((a, b) => a - b);
      if (l.length > 0) laterIssued[String(i)] = l;
    }
    return { blockSize, blocks, acked, laterIssued, writes: this.writes, ackedWrites: this.ackedWrites, failures, reconnects };
  }
}

// ---------------------------------------------------------------- the program

class UsageError extends Error {}

const USAGE = `usage: acked-writer write --host H --port P --export NAME --blocks N [--block-size 4096] [--depth D] --log FILE
                          [--max-seconds S] [--io-timeout-ms 15000] [--connect-timeout-ms 3000] [--fua]
       acked-writer verify --host H --port P --export NAME --log FILE`;

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

interface Common { host: string; port: number; exportName: string; log: string }

function intOpt(values: Record<string, unknown>, name: string, dflt: number | undefined, min: number, max: number): number {
  const v = values[name];
  if (v === undefined) {
    if (dflt === undefined) throw new UsageError(`--${name} is required`);
    return dflt;
  }
  if (typeof v !== 'string' || !/^\d+$/.test(v)) throw new UsageError(`--${name}: ${JSON.stringify(v)} is not a whole number`);
  const n = Number(v);
  if (n < min || n > max) throw new UsageError(`--${name}: ${n} is not in ${min}..${max}`);
  return n;
}

function strOpt(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || (v === '' && name !== 'export')) throw new UsageError(`--${name} is required`);
  return v;
}

function parseCommon(values: Record<string, unknown>): Common {
  return {
    host: strOpt(values, 'host'), port: intOpt(values, 'port', undefined, 1, 65535),
    exportName: strOpt(values, 'export'), log: strOpt(values, 'log'),
  };
}

/** Writes the log via a temporary file, fsyncing the file and its directory. */
function writeLogFile(file: string, log: WriterLog): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(log) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(path.dirname(path.resolve(file)), 'r');
  try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
}

async function writeCommand(values: Record<string, unknown>): Promise<number> {
  const c = parseCommon(values);
  const blockSize = intOpt(values, 'block-size', 4096, 8, 32 * 1024 * 1024);
  if (blockSize % 8 !== 0) throw new UsageError('--block-size must be a multiple of 8');
  const blocks = intOpt(values, 'blocks', undefined, 1, 2 ** 32 - 1);
  const depth = intOpt(values, 'depth', 1, 1, 4096);
  if (blocks < 4 * depth) throw new UsageError(`--blocks (${blocks}) must be at least 4 × --depth (${4 * depth})`);
  const maxSeconds = intOpt(values, 'max-seconds', 0, 0, 1e7);
  const ioTimeoutMs = intOpt(values, 'io-timeout-ms', 15_000, 0, 1e9);
  const connectTimeoutMs = intOpt(values, 'connect-timeout-ms', 3_000, 1, 1e9);
  const fua = values.fua === true;

  const tracker = new AckTracker();
  let failures = 0;
  let reconnects = 0;
  let client: NbdClient | undefined;
  let stopping = false;
  let downSince: number | undefined;
  let connecting: Promise<void> | undefined;
  let fatal: string | undefined;
  const waiters: Array<() => void> = [];
  const wake = (): void => { for (const w of waiters.splice(0)) w(); };
  let stopRequested: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => { stopRequested = resolve; });
  const stop = (): void => { stopping = true; wake(); stopRequested(); };

  const lost = (cl: NbdClient, e: unknown): void => {
    if (client !== cl || stopping) return;
    client = undefined;
    failures++;
    downSince = Date.now();
    emit({ event: 'failure', at: downSince, error: errText(e) });
    cl.destroy();
    startConnecting();
  };

  const startConnecting = (): void => {
    connecting ??= (async () => {
      while (!stopping) {
        try {
          const cl = await NbdClient.connect(c.host, c.port, { exportName: c.exportName, timeoutMs: connectTimeoutMs });
          if (cl.size < blocks * blockSize) {
            cl.destroy();
            if (downSince === undefined) {
              fatal = `export ${JSON.stringify(c.exportName)} has ${cl.size} bytes, fewer than ${blocks} × ${blockSize}`;
              stop();
              break;
            }
            throw new Error(`export shrank to ${cl.size} bytes`);
          }
          if (stopping) { cl.destroy(); break; }
          client = cl;
          void cl.whenClosed().then(() => lost(cl, new Error('connection closed')));
          const at = Date.now();
          if (downSince === undefined) emit({ event: 'connected', at });
          else { reconnects++; emit({ event: 'reconnected', at, downMs: at - downSince }); }
          break;
        } catch {
          await sleep(20);
        }
      }
      connecting = undefined;
      wake();
    })();
  };

  /** resolves once there is a connection, or once stopping */
  const connection = async (): Promise<void> => {
    while (!stopping && client === undefined) await new Promise<void>((resolve) => waiters.push(resolve));
  };

  let nextK = 0;
  const busy = new Map<number, Promise<void>>();
  const worker = async (): Promise<void> => {
    while (!stopping) {
      const seq = ++nextK;
      const index = (seq - 1) % blocks;
      let cl: NbdClient | undefined;
      for (;;) {
        const prev = busy.get(index);
        if (prev !== undefined) { await prev; continue; }
        if (stopping) return;
        cl = client;
        if (cl !== undefined) break;
        await connection();
      }
      // from the checks above to busy.set nothing awaits, so no other writer can pick this block meanwhile
      tracker.issue(index, seq);
      const cur = cl;
      const timer = ioTimeoutMs > 0 ? setTimeout(() => lost(cur, new Error(`write to block ${index} unanswered after ${ioTimeoutMs} ms`)), ioTimeoutMs) : undefined;
      const done = cur.write(index * blockSize, pattern(index, seq, blockSize), { fua }).then(
        () => { tracker.ack(index, seq); },
        (e: unknown) => { lost(cur, e); },
      ).finally(() => { clearTimeout(timer); busy.delete(index); });
      busy.set(index, done);
      await done;
    }
  };

  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  const maxTimer = maxSeconds > 0 ? setTimeout(stop, maxSeconds * 1000) : undefined;
  const progress = setInterval(() => emit({ event: 'progress', at: Date.now(), acked: tracker.ackedWrites, writes: tracker.writes, failures }), 1000);

  startConnecting();
  const workers = Array.from({ length: depth }, () => worker());
  await stopped;
  clearTimeout(maxTimer);
  clearInterval(progress);
  await Promise.race([Promise.all(workers), sleep(5_000)]);
  if (fatal !== undefined) {
    process.stderr.write(`acked-writer: ${fatal}\n`);
    client?.destroy();
    return 2;
  }
  const log = tracker.toLog(blockSize, blocks, failures, reconnects);
  writeLogFile(c.log, log);
  const unsettled = busy.size;
  emit({
    event: 'done', at: Date.now(), writes: log.writes, acked: log.ackedWrites, ackedBlocks: Object.keys(log.acked).length,
    laterIssuedBlocks: Object.keys(log.laterIssued).length, unsettled, failures, reconnects, log: c.log,
  });
  client?.destroy();
  return 0;
}

async function verifyCommand(values: Record<string, unknown>): Promise<number> {
  const c = parseCommon(values);
  let log: WriterLog;
  try {
    log = readWriterLog(c.log);
  } catch (e) {
    throw new UsageError(`--log ${c.log}: ${errText(e)}`);
  }
  const connect = async (): Promise<NbdClient> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        return await NbdClient.connect(c.host, c.port, { exportName: c.exportName, timeoutMs: 3_000 });
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`cannot connect to ${c.host}:${c.port} for 30 s: ${errText(e)}`);
        await sleep(50);
      }
    }
  };
  const indexes = loggedBlocks(log);
  const bad: BlockCheck[] = [];
  let ok = 0;
  let cl: NbdClient | undefined;
  try {
    cl = await connect();
    if (cl.size < log.blocks * log.blockSize) throw new Error(`export has ${cl.size} bytes, the log needs ${log.blocks * log.blockSize}`);
    const batch = 16;
    for (let i = 0; i < indexes.length;) {
      const part = indexes.slice(i, i + batch);
      let datas: Buffer[];
      try {
        const cur: NbdClient = cl;
        datas = await Promise.all(part.map((x) => cur.read(x * log.blockSize, log.blockSize)));
      } catch {
        cl.destroy();
        cl = await connect();
        continue; // the same batch again
      }
      part.forEach((x, j) => {
        const r = checkBlock(log, x, datas[j] as Buffer);
        if (r.ok) ok++;
        else bad.push(r);
      });
      i += part.length;
    }
  } catch (e) {
    cl?.destroy();
    emit({ event: 'error', at: Date.now(), error: errText(e) });
    return 1;
  }
  await Promise.race([cl.disconnect(), sleep(2_000)]).catch(() => undefined);
  cl.destroy();
  emit({
    event: 'verified', blocks: indexes.length, ok, badCount: bad.length,
    bad: bad.slice(0, 20).map((b) => ({ index: b.index, expected: b.expected, later: b.later, found: b.found })),
  });
  return bad.length === 0 ? 0 : 1;
}

export async function main(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        host: { type: 'string' }, port: { type: 'string' }, export: { type: 'string' }, log: { type: 'string' },
        blocks: { type: 'string' }, 'block-size': { type: 'string' }, depth: { type: 'string' },
        'max-seconds': { type: 'string' }, 'io-timeout-ms': { type: 'string' }, 'connect-timeout-ms': { type: 'string' },
        fua: { type: 'boolean' },
      },
    });
    if (positionals.length !== 1) throw new UsageError('give one command: write or verify');
    const v = values as Record<string, unknown>;
    if (positionals[0] === 'write') return await writeCommand(v);
    if (positionals[0] === 'verify') {
      for (const k of ['blocks', 'block-size', 'depth', 'max-seconds', 'io-timeout-ms', 'connect-timeout-ms', 'fua']) {
        if (v[k] !== undefined) throw new UsageError(`--${k} is for write`);
      }
      return await verifyCommand(v);
    }
    throw new UsageError(`unknown command ${JSON.stringify(positionals[0])}`);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION'
      || (e as { code?: unknown }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || (e as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      process.stderr.write(`acked-writer: ${errText(e)}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
}

// `node --test dist/test/` also runs every file under test/ as a test file, without arguments:
// only a run with a command is the program (children of a test inherit the runner's environment, so that cannot tell)
if (require.main === module && process.argv.length > 2) {
  process.stdout.on('error', () => { /* the reader went away; keep going, the log file is what counts */ });
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => { process.stderr.write(`acked-writer: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`); process.exit(1); },
  );
}
