// The generic module: any service with a start and a stop command (init
// scripts, systemctl, an OCF agent's start/stop) and the configured checkers.
import { describeChecker, runChecker, type CheckContext } from './checker';
import type { GenericAppConfig } from './config';
import { appEnvironment, type AppContext, type AppDriver, type Probe } from './driver';
import { describeResult, keepTail, runShell } from './script';

export class GenericApp implements AppDriver {
  readonly probes: readonly Probe[];
  private output = '';
  private readonly env: Record<string, string>;
  private readonly cwd: string;

  constructor(private readonly cfg: GenericAppConfig, ctx: AppContext) {
    this.env = appEnvironment(ctx, cfg.name);
    this.cwd = ctx.mountpoint ?? '/';
    const check: CheckContext = { defaultHost: ctx.floatingIps[0] ?? '127.0.0.1', env: this.env, cwd: this.cwd };
    this.probes = cfg.checkers.map((c) => ({ name: describeChecker(c, check), timing: c.timing, run: () => runChecker(c, check) }));
  }

  async start(): Promise<void> {
    const r = await runShell(this.cfg.start, { timeoutMs: this.cfg.startTimeoutMs, env: this.env, cwd: this.cwd });
    this.output = r.output;
    if (r.code !== 0) throw new Error(describeResult(`start of ${this.cfg.name}`, r));
  }

  async stop(): Promise<void> {
    const r = await runShell(this.cfg.stop, { timeoutMs: this.cfg.stopTimeoutMs, env: this.env, cwd: this.cwd });
    // after a failed start the operator needs the start's words more than the stop's: keep both
    this.output = keepTail(`${this.output}${r.output}`);
    // the stop script's process group is killed on timeout; what it failed to stop is the filesystem release's to end
    if (r.code !== 0) throw new Error(describeResult(`stop of ${this.cfg.name}`, r));
  }

  lastOutput(): string {
    return this.output;
  }
}
