// One run of one application checker: is the process alive, is the port open,
// does the URL answer with the expected status, does the custom command say
// "running" (OCF exit codes). Every check has a deadline.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { CheckerConfig } from './config';
import { ocfMeaning } from './policy';
import { runShell, type ScriptOptions } from './script';

export interface CheckResult {
  readonly ok: boolean;
  readonly message: string;
}

export interface CheckContext {
  /** where a tcp checker without a host connects: the pool's first floating IP */
  readonly defaultHost: string;
  readonly env: Record<string, string>;
  readonly cwd: string;
}

export function describeChecker(c: CheckerConfig, ctx: CheckContext): string {
  switch (c.kind) {
    case 'process': return `process in ${c.pidFile}`;
    case 'tcp': return `tcp ${c.host ?? ctx.defaultHost}:${c.port}`;
    case 'http': return `http ${c.url}`;
    case 'command': return `command ${c.command.length > 60 ? `${c.command.slice(0, 60)}…` : c.command}`;
  }
}

/** the pid file may be on the pool's filesystem, which this process serves: never read it synchronously */
async function processAlive(pidFile: string): Promise<CheckResult> {
  let text: string;
  try {
    text = await fs.promises.readFile(pidFile, 'utf8');
  } catch (e) {
    return { ok: false, message: `no pid file ${pidFile} (${(e as NodeJS.ErrnoException).code ?? 'unreadable'})` };
  }
  const pid = Number(text.trim().split(/\s+/)[0]);
  if (!Number.isInteger(pid) || pid <= 1) return { ok: false, message: `${pidFile} holds no process id` };
  try {
    process.kill(pid, 0);
    return { ok: true, message: `process ${pid} is alive` };
  } catch (e) {
    // EPERM: it exists, owned by someone else
    if ((e as NodeJS.ErrnoException).code === 'EPERM') return { ok: true, message: `process ${pid} is alive` };
    return { ok: false, message: `process ${pid} from ${pidFile} is gone` };
  }
}

function tcpOpen(host: string, port: number, timeoutMs: number): Promise<CheckResult> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (r: CheckResult): void => { clearTimeout(timer); s.destroy(); resolve(r); };
    const timer = setTimeout(() => done({ ok: false, message: `no answer from ${host}:${port} within ${timeoutMs} ms` }), timeoutMs);
    s.once('connect', () => done({ ok: true, message: `${host}:${port} accepts connections` }));
    s.once('error', (e) => done({ ok: false, message: `${host}:${port}: ${e.message}` }));
  });
}

function httpStatus(url: string, expect: readonly [number, number], timeoutMs: number): Promise<CheckResult> {
  return new Promise((resolve) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      const s = res.statusCode ?? 0;
      resolve(s >= expect[0] && s <= expect[1] ? { ok: true, message: `${url} answered ${s}` } : { ok: false, message: `${url} answered ${s} (expected ${expect[0]}..${expect[1]})` });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => resolve({ ok: false, message: `${url}: ${e.message}` }));
  });
}

export async function runChecker(c: CheckerConfig, ctx: CheckContext): Promise<CheckResult> {
  switch (c.kind) {
    case 'process': return processAlive(c.pidFile);
    case 'tcp': return tcpOpen(c.host ?? ctx.defaultHost, c.port, c.timing.timeoutMs);
    case 'http': return httpStatus(c.url, c.expectStatus, c.timing.timeoutMs);
    case 'command': {
      const o: ScriptOptions = { timeoutMs: c.timing.timeoutMs, env: ctx.env, cwd: ctx.cwd, outputBytesMax: 2048 };
      const r = await runShell(c.command, o);
      if (r.timedOut) return { ok: false, message: `timed out after ${c.timing.timeoutMs} ms` };
      const m = ocfMeaning(r.code);
      const out = r.output.trim();
      return { ok: m.ok, message: out === '' || m.ok ? m.message : `${m.message}: ${out.slice(-300)}` };
    }
  }
}
