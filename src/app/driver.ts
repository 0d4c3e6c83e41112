// What an application module provides: how to start and stop it and how to
// tell it is healthy. The runner (application.ts) does the rest the same way
// for every module: readiness, monitoring, restarts, status.
import type { CheckTiming } from './config';
import type { CheckResult } from './checker';

export interface Probe {
  readonly name: string;
  readonly timing: CheckTiming;
  run(): Promise<CheckResult>;
}

/** Where the application runs: the pool's place on this node. */
export interface AppContext {
  readonly node: string;
  readonly pool: string;
  readonly floatingIps: readonly string[];
  /** the pool's filesystem, mounted; null when the pool has none */
  readonly mountpoint: string | null;
  /** the node's own run directory (not mirrored) */
  readonly runDir: string;
}

export interface AppDriver {
  /** resolves once started; throws with the script's output when it could not start */
  start(): Promise<void>;
  /** stops it, killing what does not stop in time; throws only if it could not be stopped at all */
  stop(): Promise<void>;
  readonly probes: readonly Probe[];
  /** the last script output worth showing an operator (bounded) */
  lastOutput(): string;
}

export function appEnvironment(ctx: AppContext, application: string): Record<string, string> {
  return {
    TANDEM_NODE: ctx.node, TANDEM_POOL: ctx.pool, TANDEM_APPLICATION: application,
    TANDEM_FLOATING_IPS: ctx.floatingIps.join(' '), TANDEM_FLOATING_IP: ctx.floatingIps[0] ?? '',
    TANDEM_MOUNTPOINT: ctx.mountpoint ?? '',
  };
}
