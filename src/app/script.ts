// Runs a command or a shell script for the application layer: in its own
// process group (so a timeout ends everything it started), with a deadline,
// and keeping only the tail of its output (bounded memory whatever it prints).
import { spawn } from 'node:child_process';
import { appLimits } from './config';

export interface ScriptOptions {
  readonly timeoutMs: number;
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  readonly uid?: number;
  readonly gid?: number;
  /** kept from the end of stdout+stderr */
  readonly outputBytesMax?: number;
}

export interface ScriptResult {
  /** exit code; null when killed by a signal or timed out */
  readonly code: number | null;
  readonly timedOut: boolean;
  readonly output: string;
  readonly ms: number;
}

/** Collects the last `max` bytes of a stream of chunks. */
export class OutputTail {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private dropped = false;

  constructor(private readonly max: number) {}

  push(c: Buffer): void {
    this.chunks.push(c);
    this.bytes += c.length;
    while (this.bytes > this.max && this.chunks.length > 0) {
      const first = this.chunks[0] as Buffer;
      const over = this.bytes - this.max;
      if (first.length <= over) { this.chunks.shift(); this.bytes -= first.length; } else { this.chunks[0] = first.subarray(over); this.bytes -= over; }
      this.dropped = true;
    }
  }

  text(): string {
    const t = Buffer.concat(this.chunks).toString('utf8');
    return this.dropped ? `…${t}` : t;
  }
}

export function runProgram(file: string, args: readonly string[], o: ScriptOptions): Promise<ScriptResult> {
  const started = Date.now();
  const tail = new OutputTail(o.outputBytesMax ?? appLimits.outputBytesMax);
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'], detached: true, cwd: o.cwd ?? '/',
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', ...o.env },
      ...(o.uid === undefined ? {} : { uid: o.uid }), ...(o.gid === undefined ? {} : { gid: o.gid }),
    });
    let timedOut = false;
    const killGroup = (): void => {
      try { if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL'); } catch { /* gone already */ }
    };
    const timer = setTimeout(() => { timedOut = true; killGroup(); }, o.timeoutMs);
    child.stdout.on('data', (c: Buffer) => tail.push(c));
    child.stderr.on('data', (c: Buffer) => tail.push(c));
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: 127, timedOut: false, output: `cannot run ${file}: ${e.message}`, ms: Date.now() - started });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: timedOut ? null : code, timedOut, output: tail.text(), ms: Date.now() - started });
    });
  });
}

/** the end of an output that grows run after run (start, then stop after a failed start) */
export function keepTail(text: string, max: number = appLimits.outputBytesMax): string {
  return text.length > max ? text.slice(text.length - max) : text;
}

/** `/bin/sh -c SCRIPT`: how configured start, stop and check commands run. */
export function runShell(script: string, o: ScriptOptions): Promise<ScriptResult> {
  return runProgram('/bin/sh', ['-c', script], o);
}

/** The result as one line for logs and errors: exit status and the output's last lines. */
export function describeResult(what: string, r: ScriptResult, outputMax: number = appLimits.reasonOutputBytesMax): string {
  const how = r.timedOut ? `timed out after ${r.ms} ms` : r.code === null ? 'was killed' : `exited with ${r.code}`;
  const out = r.output.trim();
  const shown = out.length > outputMax ? `…${out.slice(out.length - outputMax)}` : out;
  return shown === '' ? `${what} ${how}` : `${what} ${how}: ${shown}`;
}
