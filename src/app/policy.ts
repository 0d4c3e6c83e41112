// What an application's checker results mean, as pure functions of the
// results and the times they came at: when the application counts as failed,
// and whether a failure is restarted in place or fails the pool over.
import type { RestartPolicy } from './config';

/** Consecutive failures of one checker; one success clears them (a blip is not a failure). */
export class FailureCount {
  private n = 0;

  constructor(private readonly threshold: number) {}

  /** true when this result makes the application count as failed */
  record(ok: boolean): boolean {
    this.n = ok ? 0 : this.n + 1;
    return this.n >= this.threshold;
  }

  get consecutive(): number { return this.n; }

  reset(): void { this.n = 0; }
}

export type FailureVerdict = { readonly action: 'restart'; readonly attempt: number } | { readonly action: 'failover'; readonly restarts: number };

/**
 * Restarts in place while fewer than `max` happened within the last `windowMs`;
 * beyond that the node is the problem, or the data: the pool goes to the other node.
 */
export class RestartBudget {
  private readonly restarts: number[] = [];

  constructor(private readonly policy: RestartPolicy) {}

  onFailure(nowMs: number): FailureVerdict {
    while (this.restarts.length > 0 && (this.restarts[0] as number) <= nowMs - this.policy.windowMs) this.restarts.shift();
    if (this.restarts.length >= this.policy.max) return { action: 'failover', restarts: this.restarts.length };
    this.restarts.push(nowMs);
    return { action: 'restart', attempt: this.restarts.length };
  }

  /** restarts within the window as of the last failure */
  get recent(): number { return this.restarts.length; }
}

/** An OCF monitor's exit code, as resource agents use it. */
export function ocfMeaning(code: number | null): { ok: boolean; message: string } {
  if (code === 0) return { ok: true, message: 'running' };
  if (code === 7) return { ok: false, message: 'not running (OCF_NOT_RUNNING)' };
  if (code === null) return { ok: false, message: 'killed by a signal' };
  const names: Record<number, string> = { 1: 'OCF_ERR_GENERIC', 2: 'OCF_ERR_ARGS', 3: 'OCF_ERR_UNIMPLEMENTED', 4: 'OCF_ERR_PERM', 5: 'OCF_ERR_INSTALLED', 6: 'OCF_ERR_CONFIGURED', 8: 'OCF_RUNNING_PROMOTED', 9: 'OCF_FAILED_PROMOTED' };
  return { ok: false, message: `failed (exit ${code}${names[code] === undefined ? '' : `, ${names[code]}`})` };
}
