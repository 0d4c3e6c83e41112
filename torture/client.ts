// The torture's client, as a program run inside the clients' network namespace
// (`ip netns exec NS node dist/torture/client.js …`) and as the library of its
// record format.
//
//   client --host H --port P --export NAME --first-block F --blocks N --depth D --seed S --log FILE
//          [--io-timeout-ms 4000] [--connect-timeout-ms 1000] [--flush-ms 1000]
//
// D writers share one NBD connection and write 4 KiB blocks chosen at random
// (seeded) in [F, F+N). Block b written with seq s holds pattern(b, s). Every
// write ends as one line of FILE, in completion order:
//
//   seq block issuedAt doneAt outcome sha256/16
//
// outcome: `ack` (acknowledged), `err` (the server answered with an error: it may
// still have written), `lost` (the connection failed before an answer), `open`
// (still unanswered when the client stopped). A block whose write ended in
// anything but `ack` is never written again: what it holds is then either that
// write or the block's last acknowledged one, and the checker needs no guess
// about which of two unanswered writes landed last.
//
// On any failure (an error reply, a closed connection, a write unanswered for
// io-timeout-ms) the connection is dropped and the same address dialled again
// every 20 ms. A FLUSH every flush-ms. SIGTERM: stop issuing, give in-flight
// writes 5 s, close the log, print `{"event":"done",…}`, exit 0. stdout: one JSON
// line per event (connected, failure, reconnected, progress every second, done).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { NbdClient, NbdRequestError } from '../test/helpers/nbd-client';
import { pattern } from '../test/helpers/acked-writer';
import { prng } from './schedule';

export const BLOCK_SIZE = 4096;

export type Outcome = 'ack' | 'err' | 'lost' | 'open';

export interface WriteRecord {
  readonly seq: number;
  readonly block: number;
  readonly issuedAt: number;
  readonly doneAt: number;
  readonly outcome: Outcome;
  /** the first 16 hex digits of the block content's SHA-256 */
  readonly hash: string;
}

/** the content a write puts in its block */
export function blockContent(block: number, seq: number): Buffer {
  return pattern(block, seq, BLOCK_SIZE);
}

export function contentHash(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex').slice(0, 16);
}

export function formatRecord(r: WriteRecord): string {
  return `${r.seq} ${r.block} ${r.issuedAt} ${r.doneAt} ${r.outcome} ${r.hash}\n`;
}

const OUTCOMES: readonly string[] = ['ack', 'err', 'lost', 'open'];

/** Parses a client's log; a torn last line (the client was killed mid-write) is dropped and counted. */
export function parseRecords(text: string): { records: WriteRecord[]; torn: number } {
  const records: WriteRecord[] = [];
  let torn = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line === '') continue;
    const f = line.split(' ');
    const [seq, block, issuedAt, doneAt] = f.slice(0, 4).map(Number) as [number, number, number, number];
    const outcome = f[4] ?? '';
    const hash = f[5] ?? '';
    if (f.length !== 6 || ![seq, block, issuedAt, doneAt].every(Number.isSafeInteger) || !OUTCOMES.includes(outcome) || !/^[0-9a-f]{16}$/.test(hash)) {
      if (i === lines.length - 1) { torn++; continue; }
      throw new Error(`client log line ${i + 1} is malformed: ${JSON.stringify(line.slice(0, 200))}`);
    }
    records.push({ seq, block, issuedAt, doneAt, outcome: outcome as Outcome, hash });
  }
  return { records, torn };
}

// ---------------------------------------------------------------- the program

class UsageError extends Error {}

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errText(e: unknown): string {
  if (e instanceof NbdRequestError) return `NBD errno ${e.errno}`;
  return e instanceof Error ? e.message : String(e);
}

interface Options {
  host: string; port: number; exportName: string; firstBlock: number; blocks: number; depth: number; seed: number; log: string;
  ioTimeoutMs: number; connectTimeoutMs: number; flushMs: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv, strict: true,
    options: {
      host: { type: 'string' }, port: { type: 'string' }, export: { type: 'string' }, 'first-block': { type: 'string' }, blocks: { type: 'string' },
      depth: { type: 'string' }, seed: { type: 'string' }, log: { type: 'string' }, 'io-timeout-ms': { type: 'string' },
      'connect-timeout-ms': { type: 'string' }, 'flush-ms': { type: 'string' },
    },
  });
  const int = (name: string, dflt: number | undefined, min: number, max: number): number => {
    const v = (values as Record<string, string | undefined>)[name];
    if (v === undefined) {
      if (dflt === undefined) throw new UsageError(`--${name} is required`);
      return dflt;
    }
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${name} must be a whole number in ${min}..${max}`);
    return Number(v);
  };
  const str = (name: string): string => {
    const v = (values as Record<string, string | undefined>)[name];
    if (v === undefined || v === '') throw new UsageError(`--${name} is required`);
    return v;
  };
  const o: Options = {
    host: str('host'), port: int('port', undefined, 1, 65535), exportName: str('export'), firstBlock: int('first-block', 0, 0, 2 ** 32 - 1),
    blocks: int('blocks', undefined, 1, 2 ** 32 - 1), depth: int('depth', 2, 1, 64), seed: int('seed', 0, 0, 0xffff_ffff), log: str('log'),
    ioTimeoutMs: int('io-timeout-ms', 4_000, 100, 600_000), connectTimeoutMs: int('connect-timeout-ms', 1_000, 50, 60_000), flushMs: int('flush-ms', 1_000, 0, 600_000),
  };
  if (o.blocks < 8 * o.depth) throw new UsageError(`--blocks must be at least 8 × --depth`);
  return o;
}

async function runClient(o: Options): Promise<number> {
  const out = fs.createWriteStream(o.log, { flags: 'w' });
  const rnd = prng(o.seed);
  const busy = new Set<number>();
  /** blocks whose last write ended without an acknowledgement: never written again */
  const retired = new Set<number>();
  let client: NbdClient | undefined;
  let connecting: Promise<void> | undefined;
  let stopping = false;
  let downSince: number | undefined;
  let seq = 0;
  const counts = { writes: 0, ack: 0, err: 0, lost: 0, open: 0, failures: 0, reconnects: 0, flushes: 0 };
  const waiters: Array<() => void> = [];
  const wake = (): void => { for (const w of waiters.splice(0)) w(); };
  const inFlight = new Map<number, { block: number; issuedAt: number; hash: string }>();

  const record = (s: number, outcome: Outcome): void => {
    const w = inFlight.get(s);
    if (w === undefined) return;
    inFlight.delete(s);
    busy.delete(w.block);
    if (outcome !== 'ack') retired.add(w.block);
    counts[outcome]++;
    out.write(formatRecord({ seq: s, block: w.block, issuedAt: w.issuedAt, doneAt: Date.now(), outcome, hash: w.hash }));
  };

  const lost = (cl: NbdClient, e: unknown): void => {
    if (client !== cl) return;
    client = undefined;
    counts.failures++;
    downSince = Date.now();
    emit({ event: 'failure', at: downSince, error: errText(e) });
    cl.destroy();
    if (!stopping) startConnecting();
  };

  const startConnecting = (): void => {
    connecting ??= (async () => {
      while (!stopping) {
        try {
          const cl = await NbdClient.connect(o.host, o.port, { exportName: o.exportName, timeoutMs: o.connectTimeoutMs });
          if (cl.size < (o.firstBlock + o.blocks) * BLOCK_SIZE) {
            cl.destroy();
            throw new Error(`export has ${cl.size} bytes, fewer than the ${(o.firstBlock + o.blocks) * BLOCK_SIZE} written`);
          }
          if (stopping) { cl.destroy(); break; }
          client = cl;
          void cl.whenClosed().then(() => lost(cl, new Error('connection closed')));
          const at = Date.now();
          if (downSince === undefined) emit({ event: 'connected', at });
          else { counts.reconnects++; emit({ event: 'reconnected', at, downMs: at - downSince }); }
          break;
        } catch {
          await sleep(20);
        }
      }
      connecting = undefined;
      wake();
    })();
  };

  const nextBlock = (): number | undefined => {
    for (let tries = 0; tries < 64; tries++) {
      const b = o.firstBlock + Math.floor(rnd() * o.blocks);
      if (!busy.has(b) && !retired.has(b)) return b;
    }
    return undefined;
  };

  const worker = async (): Promise<void> => {
    while (!stopping) {
      const cl = client;
      if (cl === undefined) {
        await new Promise<void>((resolve) => waiters.push(resolve));
        continue;
      }
      const block = nextBlock();
      if (block === undefined) { await sleep(1); continue; }
      const s = ++seq;
      const data = blockContent(block, s);
      busy.add(block);
      inFlight.set(s, { block, issuedAt: Date.now(), hash: contentHash(data) });
      counts.writes++;
      const timer = setTimeout(() => lost(cl, new Error(`write to block ${block} unanswered after ${o.ioTimeoutMs} ms`)), o.ioTimeoutMs);
      try {
        await cl.write(block * BLOCK_SIZE, data);
        record(s, 'ack');
      } catch (e) {
        // an error reply is an answer: the write failed, though it may have reached the disk
        record(s, e instanceof NbdRequestError ? 'err' : 'lost');
        lost(cl, e);
      } finally {
        clearTimeout(timer);
      }
    }
  };

  const flusher = async (): Promise<void> => {
    while (!stopping && o.flushMs > 0) {
      await sleep(o.flushMs);
      const cl = client;
      if (cl === undefined || stopping) continue;
      const timer = setTimeout(() => lost(cl, new Error(`flush unanswered after ${o.ioTimeoutMs} ms`)), o.ioTimeoutMs);
      try {
        await cl.flush();
        counts.flushes++;
      } catch (e) {
        lost(cl, e);
      } finally {
        clearTimeout(timer);
      }
    }
  };

  let stopRequested: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => { stopRequested = resolve; });
  const stop = (): void => { stopping = true; wake(); stopRequested(); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  const progress = setInterval(() => emit({ event: 'progress', at: Date.now(), ...counts }), 1000);

  emit({ event: 'started', at: Date.now(), pid: process.pid });
  startConnecting();
  const workers = [...Array.from({ length: o.depth }, () => worker()), flusher()];
  await stopped;
  clearInterval(progress);
  await Promise.race([Promise.all(workers), sleep(5_000)]);
  for (const s of [...inFlight.keys()]) record(s, 'open');
  client?.destroy();
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  emit({ event: 'done', at: Date.now(), ...counts });
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  let o: Options;
  try {
    o = parseOptions(argv);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (e instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`torture client: ${errText(e)}\n`);
      return 2;
    }
    throw e;
  }
  return runClient(o);
}

if (require.main === module) {
  process.stdout.on('error', () => { /* the reader went away; the log file is what counts */ });
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => { process.stderr.write(`torture client: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`); process.exit(1); },
  );
}
