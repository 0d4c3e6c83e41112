// Runs the `tandem` command as a real child process, as an operator or a script would, and
// collects its exit code and output. Never spawnSync: the test process hosts the cluster's
// link proxies, and a blocked event loop would stall the very sync link being watched.
import { spawn } from 'node:child_process';
import type { TandemNode } from './cluster';
import { tandemBin } from './serve-process';

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export function describeRun(args: readonly string[], r: CliResult): string {
  return `tandem ${args.join(' ')}: exit ${r.code ?? r.signal} after ${r.ms} ms\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

/** Runs argv to the end (SIGKILL after timeoutMs), with TANDEM_API unset unless env sets it. */
export function runCommand(argv: readonly string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  const started = Date.now();
  const env = { ...process.env, ...o.env };
  if (o.env?.TANDEM_API === undefined) delete env.TANDEM_API;
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, o.timeoutMs ?? 120_000);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** `tandem ARGS` */
export function tandem(args: readonly string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return runCommand([process.execPath, tandemBin, ...args], o);
}

/**
 * `tandem ARGS` on a pseudo-terminal of the given width (util-linux `script`), as a person at
 * a terminal would see it: stdout is a TTY there. The output is what the terminal received.
 */
export function tandemOnTerminal(args: readonly string[], columns = 120, o: { timeoutMs?: number } = {}): Promise<CliResult> {
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const cmd = `stty cols ${columns} rows 40; exec ${[process.execPath, tandemBin, ...args].map(quote).join(' ')}`;
  return runCommand(['script', '-qfec', cmd, '/dev/null'], o);
}

/** "HOST:PORT" of a node's API, for --api */
export function apiOf(n: TandemNode): string {
  return `${n.addr.api.host}:${n.addr.api.port}`;
}
