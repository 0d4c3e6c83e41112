// Taking a pool over is a list of steps (promote → floating IPs → exports →
// applications), each with its undo. A failing step undoes every step before
// it, newest first, so a pool is never left half up; every step's outcome and
// duration is reported for the activity log.
import { monotonicMs } from '../util/clock';

export interface Step {
  /** e.g. "promote volumes", "add floating IP 198.18.0.100/24 on eth0" */
  readonly name: string;
  run(): Promise<void>;
  undo(): Promise<void>;
}

export interface StepReport {
  readonly step: string;
  /** run: the step itself; undo: rolling it back after a later step failed; release: the planned reverse */
  readonly phase: 'run' | 'undo' | 'release';
  readonly ok: boolean;
  readonly ms: number;
  readonly error?: string;
}

export type StepReporter = (r: StepReport) => void;

export class StepFailed extends Error {
  override readonly name = 'StepFailed';
  constructor(readonly step: string, override readonly cause: Error, readonly undoErrors: readonly string[]) {
    super(`${step} failed: ${cause.message}${undoErrors.length === 0 ? '' : `; undoing: ${undoErrors.join('; ')}`}`);
  }
}

async function timed(fn: () => Promise<void>): Promise<{ ms: number; error?: Error }> {
  const start = monotonicMs();
  try {
    await fn();
    return { ms: Math.round(monotonicMs() - start) };
  } catch (e) {
    return { ms: Math.round(monotonicMs() - start), error: e instanceof Error ? e : new Error(String(e)) };
  }
}

/** Runs the steps in order; on the first failure undoes the ones done, newest first, and throws StepFailed. */
export async function runSteps(steps: readonly Step[], report: StepReporter): Promise<void> {
  const done: Step[] = [];
  for (const s of steps) {
    const r = await timed(() => s.run());
    report({ step: s.name, phase: 'run', ok: r.error === undefined, ms: r.ms, ...(r.error === undefined ? {} : { error: r.error.message }) });
    if (r.error !== undefined) {
      const undoErrors = await undoAll(done, 'undo', report);
      throw new StepFailed(s.name, r.error, undoErrors);
    }
    done.push(s);
  }
}

/**
 * Releases: the undo of every step, newest first. Goes on past a failure (an address that will not go
 * must not keep the volumes primary); resolves with the failures' messages.
 */
export function releaseSteps(steps: readonly Step[], report: StepReporter): Promise<string[]> {
  return undoAll(steps, 'release', report);
}

async function undoAll(steps: readonly Step[], phase: 'undo' | 'release', report: StepReporter): Promise<string[]> {
  const errors: string[] = [];
  for (const s of [...steps].reverse()) {
    const r = await timed(() => s.undo());
    report({ step: s.name, phase, ok: r.error === undefined, ms: r.ms, ...(r.error === undefined ? {} : { error: r.error.message }) });
    if (r.error !== undefined) errors.push(`${s.name}: ${r.error.message}`);
  }
  return errors;
}
