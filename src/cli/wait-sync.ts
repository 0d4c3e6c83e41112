// `tandem wait-sync VOLUME`: polls the node's status until the volume's two copies are in
// sync again, showing the resync as it goes. Used after a node returns (an upgrade, a
// repair) and before anything that needs both copies, such as `tandem swap`.
import type { NodeStatus, ResyncStatus, VolumeStatus } from '../replication/status';
import { ApiCallError, ApiUnreachableError, callApi, sameWayAs, type ApiAddress } from './api-client';
import {
  describeFigures, formatElapsed, formatEta, formatRate, progressBar, resyncFigures, type Painter, type ResyncFigures,
} from './format';
import { formatSize } from '../util/size';

export const waitLimits = {
  pollMs: 1000,
  /** a line at most this often when the output is not a terminal (a log, a pipe, a CI job) */
  plainLineMs: 5000,
  /** each status read; a node whose main thread is that slow is as good as unreachable */
  statusTimeoutMs: 10_000,
  /** without --timeout, an API silent this long ends the wait (exit 3): a restart takes less */
  unreachableMaxMs: 60_000,
  /** the peer's API is asked for the target's figures at most this often when the source's are unknown */
  peerRetryMs: 10_000,
} as const;

export type SyncVerdict =
  | { readonly kind: 'in-sync'; readonly message: string }
  | { readonly kind: 'failed'; readonly message: string }
  | { readonly kind: 'waiting'; readonly message: string };

/** Whether a volume's copies are in sync, cannot get there by themselves, or are on their way. */
export function judgeSync(v: VolumeStatus, node: string, peer: string): SyncVerdict {
  if (v.splitBrain !== null || v.state === 'SPLIT-BRAIN') {
    return {
      kind: 'failed',
      message: `${v.name} is in split brain: ${v.splitBrain?.reason ?? 'both copies changed apart'}; nothing resyncs until an operator decides (tandem resolve, docs/troubleshooting.md)`,
    };
  }
  if (v.connection === 'standalone') {
    return { kind: 'failed', message: `${v.name} does not replicate and will not reconnect by itself: ${v.error ?? 'standalone'} (fix the cause, then tandem connect ${v.name})` };
  }
  if ((v.state === 'PRIM' || v.state === 'SECOND') && v.connection === 'connected' && v.resync === null && v.outOfSyncBytes === 0) {
    return { kind: 'in-sync', message: `${v.name} is in sync: ${v.state} on ${node}, ${peer} ${v.peerDiskState ?? 'connected'}` };
  }
  if (v.resync !== null) {
    return { kind: 'waiting', message: v.resync.direction === 'from-peer' ? `SYNCING from ${peer}` : `${v.state}, resyncing ${peer}` };
  }
  if (v.connection === 'connecting') {
    return { kind: 'waiting', message: v.role === 'PRIMARY' ? `${v.state}: waiting for ${peer} to connect` : `${v.state}: waiting for ${peer}` };
  }
  return { kind: 'waiting', message: `${v.state}: ${v.connection}, ${formatSize(v.outOfSyncBytes)} out of sync` };
}

export interface WaitOptions {
  readonly api: ApiAddress;
  readonly volume: string;
  /** null: no limit */
  readonly timeoutMs: number | null;
  readonly out: { write(s: string): boolean; readonly isTTY?: boolean; readonly columns?: number };
  readonly painter: Painter;
}

export type WaitOutcome =
  | { readonly kind: 'in-sync'; readonly status: NodeStatus }
  | { readonly kind: 'failed'; readonly message: string }
  | { readonly kind: 'unreachable'; readonly message: string };

/** Shows progress on one rewritten line on a terminal, and as a line every few seconds elsewhere. */
class Reporter {
  private lastLineAt = 0;
  private lastMessage = '';
  private onLine = false;

  constructor(private readonly o: WaitOptions, private readonly started: number) {}

  private get tty(): boolean {
    return this.o.out.isTTY === true;
  }

  update(message: string, figures: ResyncFigures | null, source: string | null): void {
    const now = Date.now();
    if (this.tty) {
      // a pseudo-terminal without a size reports 0 columns
      const cols = this.o.out.columns;
      const width = Math.max(40, (cols !== undefined && cols > 0 ? cols : 80) - 1);
      let line = `${this.o.volume} ${message}`;
      if (figures !== null) {
        const tail = figures.fraction === null
          ? `  ${formatSize(figures.doneBytes)}  ${formatRate(figures.rateBytesPerSecond)}`
          : `  ${String(Math.floor(figures.fraction * 100)).padStart(3)}%  ${formatSize(figures.doneBytes)} of ${formatSize(figures.totalBytes)}  ${formatRate(figures.rateBytesPerSecond)}  ETA ${formatEta(figures.etaSeconds)}`;
        // "  [" + bar + "]" between the message and the figures
        const barWidth = Math.min(40, width - line.length - tail.length - 4);
        line += figures.fraction !== null && barWidth >= 10 ? `  ${progressBar(figures.fraction, barWidth)}${tail}` : tail;
      } else {
        line += `  (${formatElapsed(now - this.started)})`;
      }
      this.o.out.write(`\r${line.slice(0, width)}\x1b[K`);
      this.onLine = true;
      return;
    }
    const changed = message !== this.lastMessage;
    if (!changed && now - this.lastLineAt < waitLimits.plainLineMs) return;
    this.lastLineAt = now;
    this.lastMessage = message;
    const from = source === null ? '' : ` (as ${source} reports it)`;
    this.o.out.write(`${clock()} ${this.o.volume}: ${message}${figures === null ? '' : `: ${describeFigures(figures)}${from}`}\n`);
  }

  /** a line of its own, kept on screen */
  note(text: string): void {
    this.endLine();
    this.o.out.write(`${clock()} ${this.o.volume}: ${text}\n`);
    this.lastLineAt = Date.now();
  }

  endLine(): void {
    if (this.onLine) this.o.out.write('\r\x1b[K');
    this.onLine = false;
  }
}

function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The target of a resync knows its size; the source may not (a resync resumed from a bitmap).
 * Asks the peer's API, when the status says where it is, for its side of the same resync.
 */
class PeerFigures {
  private nextTryAt = 0;

  /** the peer is asked the way this node is: same scheme, certificates and token (a cluster token works on both) */
  constructor(private readonly via: ApiAddress) {}

  async of(s: NodeStatus, volume: string): Promise<ResyncStatus | null> {
    if (s.peerApi === undefined || Date.now() < this.nextTryAt) return null;
    try {
      const r = await callApi(sameWayAs(this.via, s.peerApi, 'peerApi'), 'GET', '/api/v1/status', { timeoutMs: 2000 });
      const peer = r.value as NodeStatus;
      if (peer.node !== s.peer.name) throw new Error('another node answered');
      const v = peer.volumes.find((x) => x.name === volume);
      if (v?.resync?.direction === 'from-peer' && v.resync.totalBytes > 0) return v.resync;
    } catch {
      // the peer's API may be on another network: the local figures will do
    }
    this.nextTryAt = Date.now() + waitLimits.peerRetryMs;
    return null;
  }
}

export function readStatus(api: ApiAddress, timeoutMs: number = waitLimits.statusTimeoutMs): Promise<NodeStatus> {
  return callApi(api, 'GET', '/api/v1/status', { timeoutMs }).then((r) => {
    const s = r.value as Partial<NodeStatus> | null;
    if (s === null || typeof s !== 'object' || typeof s.node !== 'string' || !Array.isArray(s.volumes) || typeof s.peer !== 'object') {
      throw new ApiUnreachableError(`${api.text} answered, but not with a Tandem node's status`);
    }
    return s as NodeStatus;
  });
}

/** Polls until the volume is in sync (or cannot be), within the timeout. */
export async function waitForSync(o: WaitOptions): Promise<WaitOutcome> {
  const started = Date.now();
  const deadline = o.timeoutMs === null ? null : started + o.timeoutMs;
  const reporter = new Reporter(o, started);
  const peerFigures = new PeerFigures(o.api);
  let silentSince: number | null = null;
  let lastMessage = 'no status read yet';
  for (;;) {
    // the last read may run a little past the deadline: a read cut short would look like a node that is down
    const left = deadline === null ? waitLimits.statusTimeoutMs : Math.min(waitLimits.statusTimeoutMs, Math.max(2000, deadline - Date.now()));
    let s: NodeStatus;
    try {
      s = await readStatus(o.api, left);
      if (silentSince !== null) reporter.note(`${o.api.text} answers again`);
      silentSince = null;
    } catch (e) {
      if (!(e instanceof ApiUnreachableError)) throw e;
      const now = Date.now();
      const first = silentSince === null;
      silentSince ??= now;
      const limit = deadline ?? silentSince + waitLimits.unreachableMaxMs;
      if (now >= limit) {
        reporter.endLine();
        return { kind: 'unreachable', message: `${e.message} (for ${formatElapsed(now - silentSince)}; gave up after ${formatElapsed(now - started)})` };
      }
      if (first) reporter.note(`${e.message}; retrying`);
      await sleep(Math.min(waitLimits.pollMs, Math.max(0, limit - now)));
      continue;
    }
    const v = s.volumes.find((x) => x.name === o.volume);
    if (v === undefined) {
      reporter.endLine();
      throw new ApiCallError('ERR_UNKNOWN_VOLUME', `no volume named ${JSON.stringify(o.volume)} on ${s.node} (it has ${s.volumes.map((x) => x.name).join(', ') || 'none'})`);
    }
    const verdict = judgeSync(v, s.node, s.peer.name);
    if (verdict.kind === 'in-sync') {
      reporter.endLine();
      o.out.write(`${clock()} ${o.painter.paint(verdict.message, 'good')} (waited ${formatElapsed(Date.now() - started)})\n`);
      return { kind: 'in-sync', status: s };
    }
    if (verdict.kind === 'failed') {
      reporter.endLine();
      return { kind: 'failed', message: verdict.message };
    }
    lastMessage = verdict.message;
    let figures: ResyncFigures | null = null;
    let source: string | null = null;
    let shown = verdict.message;
    if (v.resync !== null) {
      figures = resyncFigures(v.resync);
      if (figures.fraction === null) {
        const theirs = await peerFigures.of(s, o.volume);
        if (theirs !== null) {
          figures = resyncFigures(theirs);
          source = s.peer.name;
        } else {
          figures = null;
          shown = `${verdict.message} (the figures are on ${s.peer.name}: ask its API for progress)`;
        }
      }
    }
    reporter.update(shown, figures, source);
    if (deadline !== null && Date.now() >= deadline) {
      reporter.endLine();
      const where = figures === null ? lastMessage : `${lastMessage}: ${describeFigures(figures)}`;
      return { kind: 'failed', message: `timed out after ${formatElapsed(Date.now() - started)}: ${o.volume} is still not in sync (${where})` };
    }
    await sleep(deadline === null ? waitLimits.pollMs : Math.max(0, Math.min(waitLimits.pollMs, deadline - Date.now())));
  }
}
