// Runs the `tandem` command as a real child process, as an operator or a script would, and
// collects its exit code and output. Never spawnSync: the test process hosts the cluster's
// link proxies, and a blocked event loop would stall the very sync link being watched.
import { spawn } from 'node:child_process';
import { tokenFileFor } from './api-tokens';
import type { TandemNode } from './cluster';
import { tandemBin } from './serve-process';

/** the environment variables a command takes its address, token and certificates from: never the tester's own */
const CONNECTION_ENV = ['TANDEM_API', 'TANDEM_TOKEN', 'TANDEM_TOKEN_FILE', 'TANDEM_CA'];

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
  /**
   * 'node' (the default): the command gets the own token of the node its --api (or TANDEM_API)
   * names, when a test made that node and neither the arguments nor env give a token;
   * 'none': no token unless the arguments or env give one.
   */
  readonly token?: 'node' | 'none';
}

function optionValue(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === `--${name}`) return args[i + 1];
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return undefined;
}

/** The environment of a `tandem` run: the caller's env, and the node's token as an operator there would have it. */
function commandEnv(args: readonly string[], o: RunOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...o.env };
  const given = optionValue(args, 'token') !== undefined || optionValue(args, 'token-file') !== undefined ||
    env.TANDEM_TOKEN !== undefined || env.TANDEM_TOKEN_FILE !== undefined;
  if (o.token !== 'none' && !given) {
    const api = optionValue(args, 'api') ?? env.TANDEM_API;
    const file = api === undefined ? undefined : tokenFileFor(api);
    if (file !== undefined) env.TANDEM_TOKEN_FILE = file;
  }
  return env;
}

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

/** Runs argv to the end (SIGKILL after timeoutMs), with TANDEM_API and the token variables unset unless env sets them. */
export function runCommand(argv: readonly string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  const started = Date.now();
  const env = { ...process.env, ...o.env };
  for (const k of CONNECTION_ENV) if (o.env?.[k] === undefined) delete env[k];
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
export function tandem(args: readonly string[], o: RunOptions = {}): Promise<CliResult> {
  return runCommand([process.execPath, tandemBin, ...args], { ...o, env: commandEnv(args, o) });
}

/**
 * `tandem ARGS` on a pseudo-terminal of the given width (util-linux `script`), as a person at
 * a terminal would see it: stdout is a TTY there. The output is what the terminal received.
 */
export function tandemOnTerminal(args: readonly string[], columns = 120, o: { timeoutMs?: number } = {}): Promise<CliResult> {
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const cmd = `stty cols ${columns} rows 40; exec ${[process.execPath, tandemBin, ...args].map(quote).join(' ')}`;
  return runCommand(['script', '-qfec', cmd, '/dev/null'], { ...o, env: commandEnv(args, {}) });
}

/** "HOST:PORT" of a node's API, for --api */
export function apiOf(n: TandemNode): string {
  return `${n.addr.api.host}:${n.addr.api.port}`;
}
