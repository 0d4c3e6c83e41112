// Child processes for the benchmark: every one is tracked by PID so that a
// failure, an exception or Ctrl-C still leaves no server, fio or nbdcopy behind.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

const live = new Map<number, string>();

/** Remembers a child until it exits; returns it. */
export function track(child: ChildProcess, what: string): ChildProcess {
  const pid = child.pid;
  if (pid !== undefined) {
    live.set(pid, what);
    child.once('exit', () => live.delete(pid));
  }
  return child;
}

/** SIGKILLs every tracked child that is still running, by its PID. */
export function killAllTracked(): void {
  for (const pid of live.keys()) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  live.clear();
}

export function trackedCount(): number { return live.size; }

let installed = false;
/** On exit and on SIGINT/SIGTERM/SIGHUP: kill the tracked children, run `cleanup`, and (for signals) exit. */
export function installExitHandlers(cleanup: () => void): void {
  if (installed) return;
  installed = true;
  let cleaned = false;
  const once = (): void => {
    if (cleaned) return;
    cleaned = true;
    killAllTracked();
    try { cleanup(); } catch { /* best effort */ }
  };
  process.on('exit', once);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => { process.stderr.write(`\nbench: ${sig}, cleaning up\n`); once(); process.exit(130); });
  }
}

export interface ExecResult { stdout: string; stderr: string; code: number | null; signal: NodeJS.Signals | null; ms: number }

/** Runs a command to completion (tracked), capturing its output and timing it with hrtime. */
export function exec(cmd: string, args: string[], timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }), cmd);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => {
      stderr += `\n[bench: killed after ${timeoutMs} ms]`;
      if (child.pid !== undefined) { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }
    }, timeoutMs);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code, signal, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
  });
}

/** Like exec, but throws unless the command exits 0. */
export async function execOk(cmd: string, args: string[], timeoutMs: number): Promise<ExecResult> {
  const r = await exec(cmd, args, timeoutMs);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (code ${r.code}, signal ${r.signal}):\n${r.stderr.slice(-4000)}`);
  }
  return r;
}

/** A port on `host` (default 127.0.0.1) that was free a moment ago. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => { s.destroy(); resolve(false); });
  });
}

/** Polls until 127.0.0.1:port accepts a TCP connection, `alive()` turns false, or the timeout passes. */
export async function waitForPort(port: number, alive: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error('server exited before accepting connections');
    if (await tryConnect(port)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing accepted connections on 127.0.0.1:${port} within ${timeoutMs} ms`);
}
