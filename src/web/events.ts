// GET /api/v1/events: the node's status as server-sent events (docs/console.md).
// One poller serves every stream: it reads the status every pollMs while
// anybody listens, and pushes it only when its JSON changed, followed by an
// `activity` event per activity-log entry that appeared since the last poll.
import type http from 'node:http';
import type { NodeStatus } from '../replication/status';

export const eventLimits = {
  /** concurrent streams per node; the next one is answered 503 */
  streamsMax: 32,
  pollMs: 250,
  /** a comment this often, so proxies and idle timers keep the stream open */
  keepAliveMs: 15_000,
  /** the browser's reconnect delay after the stream breaks */
  retryMs: 1000,
  /** a client this far behind is dropped (it reconnects and starts from the current status) */
  backlogBytesMax: 4 * 1024 * 1024,
} as const;

/**
 * How many entries at the start of `next` were in `prev` already: the rest are new. The log is
 * a window that only appends at the end and drops from the front, and entries carry no id:
 * find where the old window's tail lines up with the start of the new one.
 */
export function newActivity(prev: readonly string[], next: readonly string[]): number {
  for (let drop = 0; drop < prev.length; drop++) {
    const overlap = prev.length - drop;
    if (overlap > next.length) continue;
    let same = true;
    for (let i = 0; i < overlap && same; i++) same = prev[drop + i] === next[i];
    if (same) return overlap;
  }
  return 0;
}

interface Stream {
  readonly res: http.ServerResponse;
  /** false once the token the stream was opened with is revoked: the stream is ended */
  readonly valid: () => boolean;
}

export class EventFeed {
  private readonly streams = new Set<Stream>();
  private pollTimer: NodeJS.Timeout | undefined;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private lastJson = '';
  private lastActivity: string[] = [];
  private closed = false;

  constructor(private readonly status: () => NodeStatus, private readonly onError: (e: unknown) => void) {}

  get size(): number {
    return this.streams.size;
  }

  /** Takes over the response as an event stream, or answers 503 when streamsMax are open. */
  open(req: http.IncomingMessage, res: http.ServerResponse, valid: () => boolean = () => true): void {
    if (this.closed || this.streams.size >= eventLimits.streamsMax) {
      const text = JSON.stringify({ error: {
        code: 'ERR_TOO_MANY_STREAMS',
        message: this.closed ? 'the node is stopping' : `${eventLimits.streamsMax} event streams are open on this node already: close one (another console tab?) and retry`,
      } }, null, 2) + '\n';
      res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'retry-after': '5' });
      res.end(text);
      return;
    }
    try {
      // streams already open get what changed since the last tick first, so none misses an entry
      this.poll(this.streams.size > 0);
    } catch (e) {
      this.onError(e);
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'ERR_INTERNAL', message: (e as Error).message } }) + '\n');
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    req.socket.setNoDelay(true);
    const stream: Stream = { res, valid };
    this.streams.add(stream);
    // the response closes when the client goes (or the server ends it): the one signal to rely on
    res.once('close', () => this.drop(stream));
    this.send(stream, `retry: ${eventLimits.retryMs}\n\n`);
    this.send(stream, event('status', this.lastJson));
    this.pollTimer ??= setInterval(() => this.tick(), eventLimits.pollMs);
    this.keepAliveTimer ??= setInterval(() => this.broadcast(': keep-alive\n\n'), eventLimits.keepAliveMs);
  }

  /** Ends every stream and stops the timers. */
  close(): void {
    this.closed = true;
    for (const s of [...this.streams]) {
      this.drop(s);
      s.res.end();
    }
  }

  private tick(): void {
    for (const s of [...this.streams]) {
      if (s.valid()) continue;
      this.drop(s);
      s.res.end();
    }
    if (this.streams.size === 0) return;
    try {
      this.poll(true);
    } catch (e) {
      this.onError(e);
    }
  }

  /** Reads the status into lastJson; with `push`, sends it (and new activity) to every stream if it changed. */
  private poll(push: boolean): void {
    const st = this.status();
    const json = JSON.stringify(st);
    if (json === this.lastJson) return;
    const activity = (st.clusterState?.activity ?? []).map((a) => JSON.stringify(a));
    // a stream that opens sees the whole log in its first status: only later entries become events
    const fresh = push ? activity.slice(newActivity(this.lastActivity, activity)) : [];
    this.lastJson = json;
    this.lastActivity = activity;
    if (push) {
      this.broadcast(event('status', json));
      for (const a of fresh) this.broadcast(event('activity', a));
    }
  }

  private broadcast(text: string): void {
    for (const s of [...this.streams]) this.send(s, text);
  }

  private send(s: Stream, text: string): void {
    if (s.res.writableLength > eventLimits.backlogBytesMax) {
      this.drop(s);
      s.res.destroy();
      return;
    }
    s.res.write(text);
  }

  private drop(s: Stream): void {
    if (!this.streams.delete(s)) return;
    if (this.streams.size > 0) return;
    clearInterval(this.pollTimer);
    clearInterval(this.keepAliveTimer);
    this.pollTimer = undefined;
    this.keepAliveTimer = undefined;
  }
}

function event(name: string, data: string): string {
  // JSON.stringify escapes line breaks, so the data is always one `data:` line
  return `event: ${name}\ndata: ${data}\n\n`;
}
