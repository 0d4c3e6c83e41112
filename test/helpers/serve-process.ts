// Starts `tandem serve` as a real child process and tells where it listens.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');
export const tandemBin = path.join(repoRoot, 'bin', 'tandem.js');

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly host: string;
  readonly port: number;
  /** nbd://host:port/NAME */
  uri(exportName?: string): string;
  /** everything the server wrote to stderr so far */
  log(): string;
  /** SIGTERM and wait for the exit code */
  stop(): Promise<number | null>;
  /** SIGKILL and wait */
  kill9(): Promise<void>;
}

/** Starts `tandem serve ARGS --listen 127.0.0.1:0` and waits for its "listening on" line. */
export async function startServe(args: string[], timeoutMs = 15_000): Promise<ServeProcess> {
  const child = spawn(process.execPath, [tandemBin, 'serve', '--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const addr = await new Promise<{ host: string; port: number }>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`tandem serve did not start:\n${stderr}`)); }, timeoutMs);
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /listening on (\S+):(\d+)/.exec(stdout);
      if (m !== null) { clearTimeout(timer); resolve({ host: m[1] as string, port: Number(m[2]) }); }
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`tandem serve exited ${code}:\n${stderr}`)); });
  });
  let done = false;
  void exited.then(() => { done = true; });
  return {
    child,
    ...addr,
    uri: (name = '') => `nbd://${addr.host}:${addr.port}/${name}`,
    log: () => stderr,
    stop: async () => { if (!done) child.kill('SIGTERM'); return exited; },
    kill9: async () => { if (!done) child.kill('SIGKILL'); await exited; },
  };
}

/** A fresh directory under the OS temp dir, removed by the returned cleanup. */
export function tempDir(prefix = 'tandem-test-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
