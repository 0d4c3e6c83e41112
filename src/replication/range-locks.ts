// Orders operations on overlapping byte ranges: each waits for every earlier
// operation that overlaps it, and none other. Both nodes apply the writes of
// one range in the order the primary admitted them, so the copies agree.
//
// Entries are kept in admission order; the set is bounded by the callers'
// in-flight budgets, so the linear scan stays short.

interface Held {
  readonly start: number;
  readonly end: number;
  readonly done: Promise<void>;
  release: () => void;
}

export class RangeLocks {
  private readonly held = new Set<Held>();

  get size(): number { return this.held.size; }

  /**
   * Registers [offset, offset+length) now, in order, and resolves once every earlier
   * overlapping holder has released. Call the returned function exactly once.
   */
  async acquire(offset: number, length: number): Promise<() => void> {
    const start = offset;
    const end = offset + Math.max(length, 1);
    const before: Promise<void>[] = [];
    for (const h of this.held) if (h.start < end && start < h.end) before.push(h.done);
    let release!: () => void;
    const done = new Promise<void>((resolve) => { release = resolve; });
    const entry: Held = { start, end, done, release: () => undefined };
    entry.release = () => {
      if (!this.held.delete(entry)) return;
      release();
    };
    this.held.add(entry);
    if (before.length > 0) await Promise.all(before);
    return entry.release;
  }

  /** Resolves once everything registered so far has released (a barrier). */
  async drain(): Promise<void> {
    await Promise.all([...this.held].map((h) => h.done));
  }
}
