// The two servers under comparison, started the same way on the same kind of
// backing file: `tandem serve` and nbdkit's file plugin, both on 127.0.0.1.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { startServe } from '../test/helpers/serve-process';
import { freePort, track, waitForPort } from './procs';

export type ServerKind = 'tandem' | 'nbdkit';
export const serverKinds: readonly ServerKind[] = ['tandem', 'nbdkit'];

export interface RunningServer {
  readonly kind: ServerKind;
  readonly pid: number;
  readonly uri: string;
  /** SIGTERM by PID, SIGKILL after a grace period; resolves once it has exited. */
  stop(): Promise<void>;
  /** stderr so far (for error messages) */
  log(): string;
}

const startTimeoutMs = 20_000;
const stopGraceMs = 15_000;

/** A fresh sparse file of exactly `size` bytes (for nbdkit; tandem creates its own with --size). */
export function createSparse(file: string, size: number): void {
  const fd = fs.openSync(file, 'wx', 0o600);
  try { fs.ftruncateSync(fd, size); } finally { fs.closeSync(fd); }
}

/** Removes a backing file and tandem's metadata beside it. */
export function removeBacking(file: string): void {
  fs.rmSync(file, { force: true });
  fs.rmSync(`${file}.tandem.json`, { force: true });
}

function stopChild(pid: number, exited: Promise<void>, isDone: () => boolean): Promise<void> {
  if (isDone()) return exited;
  try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
  const timer = setTimeout(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }, stopGraceMs);
  return exited.finally(() => clearTimeout(timer));
}

/**
 * Starts a server on `file`. With `size`, the file must not exist yet and is
 * created sparse at that size; without it, the existing file is served as is.
 */
export async function startServer(kind: ServerKind, file: string, size: number | undefined): Promise<RunningServer> {
  return kind === 'tandem' ? startTandem(file, size) : startNbdkit(file, size);
}

async function startTandem(file: string, size: number | undefined): Promise<RunningServer> {
  const args = size === undefined ? ['--file', file] : ['--file', file, '--size', String(size)];
  const s = await startServe(args, startTimeoutMs);
  const pid = s.child.pid;
  if (pid === undefined) throw new Error('tandem serve has no pid');
  track(s.child, 'tandem serve');
  let done = s.child.exitCode !== null || s.child.signalCode !== null;
  const exited = new Promise<void>((resolve) => {
    if (done) { resolve(); return; }
    s.child.once('exit', () => { done = true; resolve(); });
  });
  return {
    kind: 'tandem',
    pid,
    uri: `nbd://127.0.0.1:${s.port}/`,
    stop: () => stopChild(pid, exited, () => done),
    log: () => s.log(),
  };
}

async function startNbdkit(file: string, size: number | undefined): Promise<RunningServer> {
  if (size !== undefined) createSparse(file, size);
  let lastErr: unknown;
  // The port comes from a probe; if another process takes it first nbdkit exits, and we try again.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child = track(spawn('nbdkit', [
      '--foreground', '--exit-with-parent', '--ipaddr', '127.0.0.1', '--port', String(port),
      'file', `file=${file}`,
    ], { stdio: ['ignore', 'ignore', 'pipe'] }), 'nbdkit');
    const pid = child.pid;
    if (pid === undefined) throw new Error('nbdkit did not start (no pid)');
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    let done = false;
    const exited = new Promise<void>((resolve) => child.once('exit', () => { done = true; resolve(); }));
    try {
      await waitForPort(port, () => !done, startTimeoutMs);
    } catch (e) {
      lastErr = new Error(`nbdkit on port ${port}: ${(e as Error).message}\n${stderr}`);
      await stopChild(pid, exited, () => done);
      continue;
    }
    return {
      kind: 'nbdkit',
      pid,
      uri: `nbd://127.0.0.1:${port}/`,
      stop: () => stopChild(pid, exited, () => done),
      log: () => stderr,
    };
  }
  throw lastErr instanceof Error ? lastErr : new Error('nbdkit did not start');
}
