// `tandem demo` as a child process of a test: two nodes and a witness on the
// demo's fixed loopback addresses. The test learns every process's pid from
// the demo's output, kills nodes by pid, and starts them again through the
// demo's standard input. stop() ends the demo, and then, by pid, anything it
// left behind: only processes whose command line names this demo's directory.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { tandemBin } from './serve-process';

export const DEMO_HOSTS = { alpha: '127.0.0.2', beta: '127.0.0.3', witness: '127.0.0.4', pool: '127.0.0.10' } as const;
export const DEMO_API_PORT = 7780;
export const DEMO_NBD_URL = 'nbd://127.0.0.10:10809/vol0';
export type DemoNodeName = 'alpha' | 'beta';

export interface DemoProcess {
  readonly dir: string;
  /** the current pid of alpha, beta and the witness */
  pid(name: DemoNodeName | 'witness'): number;
  /** everything the demo printed */
  output(): string;
  /** SIGKILL a node, by pid, and wait until the demo saw it exit */
  kill9(name: DemoNodeName, timeoutMs?: number): Promise<void>;
  /** `start NAME` on the demo's stdin; resolves with the new pid once the node is ready */
  startAgain(name: DemoNodeName, timeoutMs?: number): Promise<number>;
  /** the nodes' and witness's logs, last lines of each */
  logs(lines?: number): string;
  /** SIGTERM the demo (it stops its nodes), then SIGKILL whatever of ours outlived it. Safe twice. */
  stop(timeoutMs?: number): Promise<void>;
}

/** Fails at once, with the reason, if another demo (or anything) holds the demo's addresses. */
async function checkFree(): Promise<void> {
  const taken: string[] = [];
  const probes: Array<[string, number]> = [
    [DEMO_HOSTS.alpha, DEMO_API_PORT], [DEMO_HOSTS.beta, DEMO_API_PORT],
    [DEMO_HOSTS.alpha, 7788], [DEMO_HOSTS.beta, 7788], [DEMO_HOSTS.pool, 10809],
  ];
  for (const [host, port] of probes) {
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(true)));
    });
    if (!free) taken.push(`${host}:${port}`);
  }
  if (taken.length > 0) throw new Error(`tandem demo's addresses are in use (${taken.join(', ')}): is another demo running?`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // a zombie is gone for our purposes: its parent has yet to reap it
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** true only for a live process started for this demo: its command line names the demo's directory */
function ours(pid: number, dir: string): boolean {
  try {
    return alive(pid) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
  } catch {
    return false;
  }
}

export async function startDemo(opts: { dir: string; size: string; resyncRate?: string; timeoutMs?: number }): Promise<DemoProcess> {
  await checkFree();
  const args = [tandemBin, 'demo', '--dir', opts.dir, '--size', opts.size, '--resync-rate', opts.resyncRate ?? '0'];
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const pids = new Map<string, number>();
  /** every pid the demo ever reported: cleanup looks at all of them */
  const everyPid = new Set<number>();
  const waiters = new Set<() => void>();
  const note = (name: string, pid: number): void => { pids.set(name, pid); everyPid.add(pid); };
  const onText = (d: Buffer): void => {
    out += d.toString();
    for (const m of out.matchAll(/^ {2}(alpha|beta|witness)\s+\S+\s+pid (\d+)/gm)) note(m[1] as string, Number(m[2]));
    for (const m of out.matchAll(/^(alpha|beta) started again: pid (\d+)$/gm)) note(m[1] as string, Number(m[2]));
    for (const w of [...waiters]) w();
  };
  child.stdout?.on('data', onText);
  child.stderr?.on('data', onText);
  const exited = new Promise<void>((resolve) => {
    child.once('error', (e) => { out += `spawn error: ${e.message}\n`; resolve(); });
    child.once('exit', () => { for (const w of [...waiters]) w(); resolve(); });
  });
  // if the test process ends without stop() (a timeout ends it hard), nothing of ours stays behind
  const killAllSync = (): void => {
    for (const pid of everyPid) if (ours(pid, opts.dir)) process.kill(pid, 'SIGKILL');
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killAllSync);

  /** resolves when the output matches, rejects at the deadline or when the demo exits */
  const waitFor = (what: string, test: () => boolean, timeoutMs: number): Promise<void> => new Promise((resolve, reject) => {
    const check = (): void => {
      if (test()) { finish(); resolve(); return; }
      if (child.exitCode !== null || child.signalCode !== null) { finish(); reject(new Error(`the demo exited while waiting for ${what}:\n${out}`)); }
    };
    const finish = (): void => { waiters.delete(check); clearTimeout(timer); };
    const timer = setTimeout(() => { finish(); reject(new Error(`no ${what} within ${timeoutMs} ms:\n${out}`)); }, timeoutMs);
    waiters.add(check);
    check();
  });

  let stopped = false;
  const stop = async (timeoutMs = 30_000): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, timeoutMs); })]);
      clearTimeout(timer);
    }
    for (const pid of everyPid) if (ours(pid, opts.dir)) process.kill(pid, 'SIGKILL');
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    // a node killed just now may still be dying: wait until none of ours is left
    const deadline = Date.now() + 5000;
    while ([...everyPid].some((p) => ours(p, opts.dir)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    process.off('exit', killAllSync);
  };

  const demo: DemoProcess = {
    dir: opts.dir,
    pid(name) {
      const p = pids.get(name);
      if (p === undefined) throw new Error(`the demo did not report ${name}'s pid:\n${out}`);
      return p;
    },
    output: () => out,
    async kill9(name, timeoutMs = 10_000) {
      const pid = demo.pid(name);
      if (!ours(pid, opts.dir)) throw new Error(`${name} (pid ${pid}) is not running`);
      const seen = out.length;
      process.kill(pid, 'SIGKILL');
      await waitFor(`exit of ${name} (pid ${pid})`, () => out.slice(seen).includes(`${name} (pid ${pid}) exited`), timeoutMs);
    },
    async startAgain(name, timeoutMs = 60_000) {
      const seen = out.length;
      child.stdin?.write(`start ${name}\n`);
      let pid = 0;
      await waitFor(`"${name} started again"`, () => {
        const m = new RegExp(`^${name} started again: pid (\\d+)$`, 'm').exec(out.slice(seen));
        if (m !== null) pid = Number(m[1]);
        return m !== null || out.slice(seen).includes(`${name} did not start`);
      }, timeoutMs);
      if (pid === 0) throw new Error(`${name} did not start again:\n${out.slice(seen)}`);
      return pid;
    },
    logs(lines = 40) {
      return ['alpha', 'beta', 'witness'].map((n) => {
        let text = '';
        try {
          text = fs.readFileSync(`${opts.dir}/${n}.log`, 'utf8');
        } catch {
          text = '(no log)';
        }
        return `--- ${n}.log ---\n${text.split('\n').slice(-lines).join('\n')}`;
      }).join('\n');
    },
    stop,
  };
  try {
    await waitFor('"Stop with Ctrl-C" from the demo', () => out.includes('Stop with Ctrl-C.'), opts.timeoutMs ?? 60_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return demo;
}
