// Notification hooks (docs/operations.md, "Notifications"): every activity-log
// entry that a hook's filter matches is handed to it — a command or a webhook —
// once, in the order the entries happened, one at a time per hook. A hook that
// fails is logged, not retried (a retry could deliver twice). Each hook's queue
// is bounded: a hook slower than the events loses the oldest, and says how many.
import http from 'node:http';
import https from 'node:https';
import { runShell } from '../app/script';
import { fail, keyPath, obj } from '../util/config-fields';
import type { Logger } from '../util/log';
import type { ActivityEntry } from './cluster-driver';

export const notifyLimits = { hooksMax: 8, queueMax: 256, bodyBytesMax: 64 * 1024 } as const;

type Level = ActivityEntry['level'];
const LEVELS: readonly Level[] = ['info', 'warn', 'error'];

export interface HookConfig {
  readonly target: { readonly kind: 'command'; readonly command: string } | { readonly kind: 'webhook'; readonly url: string };
  /** activity events to deliver; empty: all */
  readonly events: readonly string[];
  readonly minLevel: Level;
  readonly timeoutMs: number;
}

export function parseNotify(v: unknown): HookConfig[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > notifyLimits.hooksMax) fail('notify', `must be a list of at most ${notifyLimits.hooksMax} hooks`);
  return v.map((h, i): HookConfig => {
    const where = `notify[${i}]`;
    const o = obj(h, where, ['command', 'webhook', 'events', 'minLevel', 'timeoutMs']);
    if ((o.command === undefined) === (o.webhook === undefined)) fail(where, 'give exactly one of "command" and "webhook"');
    let target: HookConfig['target'];
    if (o.command !== undefined) {
      if (typeof o.command !== 'string' || o.command.length === 0 || o.command.length > 4096) fail(keyPath(where, 'command'), 'must be a command of 1 to 4096 characters');
      target = { kind: 'command', command: o.command };
    } else {
      const url = o.webhook;
      if (typeof url !== 'string' || !/^https?:\/\//.test(url)) fail(keyPath(where, 'webhook'), 'must be an http:// or https:// URL');
      try { new URL(url); } catch { fail(keyPath(where, 'webhook'), `${JSON.stringify(url)} is not a URL`); }
      target = { kind: 'webhook', url };
    }
    const ev = o.events ?? [];
    if (!Array.isArray(ev) || ev.length > 64 || !ev.every((e) => typeof e === 'string' && /^[a-z][a-z0-9-]{0,63}$/.test(e))) {
      fail(keyPath(where, 'events'), 'must be a list of activity event names like "takeover"');
    }
    const minLevel = o.minLevel ?? 'info';
    if (!LEVELS.includes(minLevel as Level)) fail(keyPath(where, 'minLevel'), 'must be "info", "warn" or "error"');
    const t = o.timeoutMs ?? 10_000;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 100 || t > 600_000) fail(keyPath(where, 'timeoutMs'), 'must be an integer from 100 to 600000');
    return { target, events: ev as string[], minLevel: minLevel as Level, timeoutMs: t };
  });
}

/** What a hook receives: the activity entry, the node it happened on, and how many earlier ones this hook lost. */
export interface Notification extends ActivityEntry {
  readonly node: string;
  readonly cluster: string;
  readonly seq: number;
  readonly dropped: number;
}

export type Deliver = (hook: HookConfig, n: Notification) => Promise<{ ok: boolean; detail: string }>;

class HookQueue {
  private readonly queue: Notification[] = [];
  private running = false;
  private dropped = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(readonly name: string, readonly hook: HookConfig, private readonly deliver: Deliver, private readonly log: Logger) {}

  push(n: Notification): void {
    if (this.queue.length >= notifyLimits.queueMax) {
      this.queue.shift();
      this.dropped++;
      this.log.error('notification queue full: the oldest was dropped', { hook: this.name, dropped: this.dropped });
    }
    this.queue.push(n);
    if (!this.running) void this.drain();
  }

  private async drain(): Promise<void> {
    this.running = true;
    for (let n = this.queue.shift(); n !== undefined; n = this.queue.shift()) {
      const started = Date.now();
      const item = { ...n, dropped: this.dropped };
      this.dropped = 0;
      let r: { ok: boolean; detail: string };
      try {
        r = await this.deliver(this.hook, item);
      } catch (e) {
        r = { ok: false, detail: (e as Error).message };
      }
      const fields = { hook: this.name, event: n.event, seq: n.seq, ok: r.ok, ms: Date.now() - started, detail: r.detail };
      if (r.ok) this.log.info('notified', fields);
      else this.log.warn('notification failed', fields);
    }
    this.running = false;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  idle(): Promise<void> {
    return this.running ? new Promise((r) => this.idleWaiters.push(r)) : Promise.resolve();
  }
}

export class Notifier {
  private readonly queues: HookQueue[];
  private seq = 0;

  constructor(hooks: readonly HookConfig[], private readonly node: string, private readonly cluster: string, log: Logger, deliver: Deliver = deliverHook) {
    this.queues = hooks.map((h, i) => new HookQueue(`notify[${i}] ${h.target.kind === 'command' ? 'command' : h.target.url}`, h, deliver, log));
  }

  /** called for every activity entry, in order */
  onActivity(e: ActivityEntry): void {
    const seq = ++this.seq;
    for (const q of this.queues) {
      const h = q.hook;
      if (LEVELS.indexOf(e.level) < LEVELS.indexOf(h.minLevel)) continue;
      if (h.events.length > 0 && !h.events.includes(e.event)) continue;
      q.push({ ...e, node: this.node, cluster: this.cluster, seq, dropped: 0 });
    }
  }

  /** resolves when every queue is empty (node shutdown waits for it, bounded by the caller) */
  async idle(): Promise<void> {
    await Promise.all(this.queues.map((q) => q.idle()));
  }
}

async function deliverHook(hook: HookConfig, n: Notification): Promise<{ ok: boolean; detail: string }> {
  const json = JSON.stringify(n);
  if (hook.target.kind === 'command') {
    const r = await runShell(hook.target.command, {
      timeoutMs: hook.timeoutMs, outputBytesMax: 2048,
      env: {
        TANDEM_NODE: n.node, TANDEM_CLUSTER: n.cluster, TANDEM_EVENT: n.event, TANDEM_LEVEL: n.level, TANDEM_MESSAGE: n.message,
        TANDEM_AT: n.at, TANDEM_POOL: n.pool ?? '', TANDEM_SEQ: String(n.seq), TANDEM_NOTIFICATION: json,
      },
    });
    const detail = r.timedOut ? `timed out after ${hook.timeoutMs} ms` : `exit ${r.code ?? 'signal'}${r.output.trim() === '' ? '' : `: ${r.output.trim().slice(-200)}`}`;
    return { ok: r.code === 0, detail };
  }
  const url = hook.target.url;
  return new Promise((resolve) => {
    const body = Buffer.from(json);
    const request = url.startsWith('https:') ? https.request : http.request;
    const req = request(url, { method: 'POST', timeout: hook.timeoutMs, agent: false, headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      res.resume();
      const s = res.statusCode ?? 0;
      resolve({ ok: s >= 200 && s < 300, detail: `HTTP ${s}` });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${hook.timeoutMs} ms`)));
    req.on('error', (e) => resolve({ ok: false, detail: e.message }));
    req.end(body);
  });
}
