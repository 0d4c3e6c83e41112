// fio and qemu-io as child processes for the mirroring tests: fio's JSON
// report parsed, a run that can go on in the background while the test kills
// a node, and fio's saved verify state read back.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { run, type RunResult } from './run';

export interface FioDirStats {
  io_kbytes: number;
  io_bytes: number;
  total_ios: number;
}

export interface FioJob {
  jobname: string;
  error: number;
  total_err?: number;
  read: FioDirStats;
  write: FioDirStats;
  sync?: { total_ios?: number };
}

export interface FioResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** the JSON report's jobs; empty when fio printed none */
  readonly jobs: FioJob[];
}

/** fio's JSON report (fio may print notices before it). */
export function parseFioJobs(stdout: string): FioJob[] {
  const start = stdout.indexOf('{\n');
  if (start < 0) return [];
  try {
    return (JSON.parse(stdout.slice(start)) as { jobs: FioJob[] }).jobs;
  } catch {
    return [];
  }
}

export interface RunningFio {
  readonly child: ChildProcess;
  /** resolves when fio exits (never rejects) */
  readonly done: Promise<FioResult>;
  /** SIGKILL, for cleanup */
  kill(): void;
}

/** Starts fio ARGS --output-format=json in cwd; the caller awaits `done`. */
export function startFio(args: string[], o: { cwd?: string; timeoutMs?: number } = {}): RunningFio {
  const child = spawn('fio', [...args, '--output-format=json'], { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  let exited = false;
  const timer = setTimeout(() => {
    if (!exited) { stderr += `\n[test] fio still running after ${o.timeoutMs ?? 120_000} ms: SIGKILL\n`; child.kill('SIGKILL'); }
  }, o.timeoutMs ?? 120_000);
  const done = new Promise<FioResult>((resolve) => {
    child.once('error', (e) => {
      exited = true;
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: `${stderr}\nspawn error: ${e.message}`, jobs: [] });
    });
    child.once('exit', (code, signal) => {
      exited = true;
      clearTimeout(timer);
      // the pipes may still hold the end of the report
      const finish = (): void => resolve({ code, signal, stdout, stderr, jobs: parseFioJobs(stdout) });
      if (child.stdout?.readableEnded !== false) finish(); else child.stdout.once('end', finish);
    });
  });
  return {
    child,
    done,
    kill: () => { if (!exited) child.kill('SIGKILL'); },
  };
}

export function runFio(args: string[], o: { cwd?: string; timeoutMs?: number } = {}): Promise<FioResult> {
  return startFio(args, o).done;
}

/** One line describing a fio run, for assertion messages. */
export function describeFio(r: FioResult): string {
  return `fio exit ${r.code}${r.signal === null ? '' : ` (${r.signal})`}\n--- stderr ---\n${r.stderr.slice(-3000)}\n--- stdout (end) ---\n${r.stdout.slice(-3000)}`;
}

/**
 * What fio (3.x, verify state version 3) saved when the write job ended:
 * writes issued, the job's iodepth, and the offsets of its last completed
 * writes. The file is a 24-byte header (version, size, crc) and one
 * thread_io_list: no_comps u64, depth u32, nofiles u32, numberio u64, index u64,
 * rand state (use64 u64 + 6 × u64), name[64], then no_comps × (fileno u64,
 * offset u64). Little endian.
 */
export interface FioVerifyState {
  readonly version: number;
  readonly issuedWrites: number;
  readonly depth: number;
  readonly completions: number[];
  readonly name: string;
}

export function readFioVerifyState(file: string): FioVerifyState {
  const b = fs.readFileSync(file);
  if (b.length < 24 + 160) throw new Error(`${file}: ${b.length} bytes is too short for a fio verify state`);
  const version = Number(b.readBigUInt64LE(0));
  if (version !== 3) throw new Error(`${file}: verify state version ${version}; this reader knows version 3 (fio 3.x)`);
  const at = 24;
  const noComps = Number(b.readBigUInt64LE(at));
  const depth = b.readUInt32LE(at + 8);
  const issuedWrites = Number(b.readBigUInt64LE(at + 16));
  const nameAt = at + 32 + 56;
  const name = b.subarray(nameAt, nameAt + 64).toString('latin1').replace(/\0.*$/s, '');
  const completions: number[] = [];
  for (let i = 0; i < noComps; i++) completions.push(Number(b.readBigUInt64LE(nameAt + 64 + i * 16 + 8)));
  return { version, issuedWrites, depth, completions, name };
}

/** qemu-io -f raw -c CMD ... URI, each call a new NBD connection. */
export function qemuIo(uri: string, cmds: string[], o: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
  return run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri], { timeoutMs: o.timeoutMs ?? 60_000, ...(o.allowFail === undefined ? {} : { allowFail: o.allowFail }) });
}

/**
 * qemu-io prints "Pattern verification failed" and still exits 0, so a read
 * with -P must be checked by its output too.
 */
export async function qemuIoExpect(uri: string, cmds: string[]): Promise<RunResult> {
  const r = await qemuIo(uri, cmds, { allowFail: true });
  const bad = /Pattern verification failed|error|failed/i.test(r.stdout + r.stderr);
  if (r.code !== 0 || bad) throw new Error(`qemu-io ${cmds.join(' ; ')} on ${uri} failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}
