// One application of a pool on the node that owns it: started (and only
// counted started once its probes pass), monitored by its probes at their
// intervals, stopped. What a failure leads to (restart in place or failover)
// is the pool host's decision, with the RestartBudget; this only reports it.
import type { Logger } from '../util/log';
import type { ApplicationConfig } from './config';
import type { CheckResult } from './checker';
import type { AppDriver, Probe } from './driver';
import { FailureCount } from './policy';

export type ApplicationState = 'stopped' | 'starting' | 'running' | 'failed' | 'stopping';

export interface ApplicationStatus {
  readonly name: string;
  readonly module: string;
  readonly state: ApplicationState;
  readonly since: string;
  /** restarts in place within the restart window */
  readonly restarts: number;
  readonly lastCheck: { readonly probe: string; readonly ok: boolean; readonly message: string; readonly at: string } | null;
  readonly error: string | null;
  /** the tail of the last start/stop output */
  readonly output: string;
}

export const applicationLimits = { readinessPollMs: 250 } as const;

export class Application {
  private state: ApplicationState = 'stopped';
  private since = new Date().toISOString();
  private lastCheck: ApplicationStatus['lastCheck'] = null;
  private error: string | null = null;
  private timers: NodeJS.Timeout[] = [];
  /** bumped by every start and stop, so a probe answering late for an earlier run is ignored */
  private generation = 0;
  restarts = 0;

  constructor(
    readonly cfg: ApplicationConfig,
    private readonly driver: AppDriver,
    private readonly log: Logger,
    private readonly onFailure: (app: Application, reason: string) => void,
  ) {}

  get name(): string { return this.cfg.name; }

  private set(state: ApplicationState, error: string | null = this.error): void {
    if (state !== this.state) this.since = new Date().toISOString();
    this.state = state;
    this.error = error;
  }

  /** starts it and waits until every probe passes once (within startTimeoutMs), then monitors it */
  async start(): Promise<void> {
    const gen = ++this.generation;
    this.set('starting', null);
    const deadline = Date.now() + this.cfg.startTimeoutMs;
    try {
      await this.driver.start();
      for (;;) {
        const results = await Promise.all(this.driver.probes.map((p) => this.probe(p)));
        const bad = results.find((r) => !r.ok);
        if (bad === undefined) break;
        if (Date.now() >= deadline) {
          throw new Error(`started, but not healthy within ${this.cfg.startTimeoutMs} ms: ${bad.message}`);
        }
        await new Promise((r) => setTimeout(r, applicationLimits.readinessPollMs));
      }
    } catch (e) {
      this.set('failed', (e as Error).message);
      // a half-started service must not outlive the failed step (it would hold the filesystem)
      await this.driver.stop().catch((s: unknown) => this.log.warn('stopping a failed start failed', { application: this.name, error: String(s) }));
      throw e;
    }
    if (gen !== this.generation) return;
    this.set('running', null);
    this.monitor(gen);
  }

  async stop(): Promise<void> {
    this.generation++;
    this.clearTimers();
    this.set('stopping');
    try {
      await this.driver.stop();
      this.set('stopped', null);
    } catch (e) {
      this.set('failed', (e as Error).message);
      throw e;
    }
  }

  /** stops watching without stopping it (the pool is releasing; stop() follows) */
  quiesce(): void {
    this.generation++;
    this.clearTimers();
  }

  private clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }

  private async probe(p: Probe): Promise<CheckResult> {
    let r: CheckResult;
    try {
      r = await p.run();
    } catch (e) {
      r = { ok: false, message: (e as Error).message };
    }
    this.lastCheck = { probe: p.name, ok: r.ok, message: r.message, at: new Date().toISOString() };
    return r;
  }

  private monitor(gen: number): void {
    // one pending timer per probe: the slot is reused, so a long-running pool holds a fixed number
    this.driver.probes.forEach((p, slot) => {
      const count = new FailureCount(p.timing.failureThreshold);
      const tick = (): void => {
        this.probe(p).then((r) => {
          if (gen !== this.generation) return;
          if (!r.ok) this.log.warn('application check failed', { application: this.name, probe: p.name, consecutive: count.consecutive + 1, message: r.message });
          if (count.record(r.ok)) {
            this.clearTimers();
            this.generation++;
            const reason = `${p.name}: ${r.message} (${count.consecutive} checks in a row)`;
            this.set('failed', reason);
            this.onFailure(this, reason);
            return;
          }
          this.timers[slot] = setTimeout(tick, p.timing.intervalMs);
        }, () => undefined);
      };
      this.timers[slot] = setTimeout(tick, p.timing.intervalMs);
    });
  }

  status(): ApplicationStatus {
    return {
      name: this.name, module: this.cfg.module, state: this.state, since: this.since, restarts: this.restarts,
      lastCheck: this.lastCheck, error: this.error, output: this.driver.lastOutput().slice(-4096),
    };
  }
}
