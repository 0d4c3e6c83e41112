// Counts refusals by reason and logs them without flooding: the first of a
// reason is logged with its details, later ones in the same window only as a
// count when the window closes.
import type { Logger } from '../util/log';

interface Window {
  until: number;
  suppressed: number;
}

export class RefusalLog {
  private readonly totals = new Map<string, number>();
  private readonly windows = new Map<string, Window>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly log: Logger, private readonly intervalMs: number, private readonly now: () => number) {
    this.timer = setInterval(() => this.flush(), intervalMs);
    this.timer.unref();
  }

  count(reason: string, fields: Record<string, unknown>): void {
    const total = (this.totals.get(reason) ?? 0) + 1;
    this.totals.set(reason, total);
    const t = this.now();
    const w = this.windows.get(reason);
    if (w !== undefined && t < w.until) {
      w.suppressed += 1;
      return;
    }
    this.report(reason, w);
    this.log.warn('refused', { reason, ...fields, total });
    this.windows.set(reason, { until: t + this.intervalMs, suppressed: 0 });
  }

  /** totals since the start, by reason */
  counts(): Record<string, number> {
    return Object.fromEntries(this.totals);
  }

  /** Logs the counts held back so far. */
  flush(): void {
    for (const [reason, w] of this.windows) this.report(reason, w);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }

  private report(reason: string, w: Window | undefined): void {
    if (w === undefined || w.suppressed === 0) return;
    this.log.warn('refused (repeats not logged one by one)', { reason, count: w.suppressed, total: this.totals.get(reason) ?? 0 });
    w.suppressed = 0;
  }
}
