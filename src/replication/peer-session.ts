// The requests one node has outstanding at its peer over one sync link, and
// the deadline each must meet. Every volume shares the link's request ids.
// When the link closes, every outstanding request settles as 'lost' at once,
// so no writer waits longer than the link's timeout.
import type { SyncMessage } from '../protocol/sync/messages';
import type { SyncLink } from './sync-link';

export type PeerResult = number | 'lost';

interface Pending {
  readonly sentAt: number;
  readonly what: string;
  readonly settle: (r: PeerResult) => void;
}

export class PeerSession {
  private nextId = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private lostReason: string | undefined;

  constructor(readonly link: SyncLink, private readonly timeoutMs: number) {
    link.onClose((reason) => this.lose(reason));
  }

  get open(): boolean { return this.lostReason === undefined && !this.link.closed; }

  newId(): bigint {
    return this.nextId++;
  }

  /** Sends m (which carries `id`) and resolves with the peer's status, or 'lost'. */
  request(id: bigint, m: SyncMessage, what: string): Promise<PeerResult> {
    if (!this.open) return Promise.resolve('lost');
    return new Promise<PeerResult>((settle) => {
      this.pending.set(id, { sentAt: Date.now(), what, settle });
      if (!this.link.send(m)) {
        this.pending.delete(id);
        settle('lost');
      }
    });
  }

  /** A WRITE_ACK, FLUSH_ACK or a volume's own reply; false if no such request is outstanding. */
  settle(id: bigint, status: PeerResult): boolean {
    const p = this.pending.get(id);
    if (p === undefined) return false;
    this.pending.delete(id);
    p.settle(status);
    return true;
  }

  /** Closes the link when the oldest request is overdue. */
  tick(now: number): void {
    for (const p of this.pending.values()) {
      // Map order is send order: the first is the oldest
      if (now - p.sentAt > this.timeoutMs) {
        this.link.close(`peer did not answer ${p.what} within ${this.timeoutMs} ms`);
      }
      return;
    }
  }

  private lose(reason: string): void {
    if (this.lostReason !== undefined) return;
    this.lostReason = reason;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.settle('lost');
  }
}
