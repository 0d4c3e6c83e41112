/**
 * A shared allowance of bytes (e.g. all connections' in-flight data). Takers
 * that do not fit wait in order; release wakes them.
 */
export class ByteBudget {
  private used = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(readonly bytesMax: number) {}

  get inUse(): number { return this.used; }

  tryTake(n: number): boolean {
    if (this.used + n > this.bytesMax && this.used > 0) return false;
    this.used += n;
    return true;
  }

  release(n: number): void {
    this.used -= n;
    if (this.used < 0) throw new Error(`ByteBudget released more than it lent (${this.used})`);
    const ws = this.waiters.splice(0);
    for (const w of ws) w();
  }

  /** calls `wake` once, at the next release */
  waitForRelease(wake: () => void): void {
    this.waiters.push(wake);
  }
}
