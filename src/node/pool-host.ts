// Carries out the cluster's activate / deactivate / suspend / resume for each
// pool on this node, in the documented order (docs/pools.md): promote the
// volumes → add the floating IPs → start the exports → mount the filesystem →
// start the applications; release in reverse. A failed step undoes the ones
// before it, so a pool is never half up. Operations on one pool run one at a
// time. A failing application is restarted in place, then the pool fails over
// (docs/applications.md).
import path from 'node:path';
import { Application } from '../app/application';
import type { PoolStatus } from '../replication/status';
import type { ApplicationConfig } from '../app/config';
import type { AppContext, AppDriver } from '../app/driver';
import { PoolFilesystem } from '../app/filesystem';
import { GenericApp } from '../app/generic';
import { RestartBudget } from '../app/policy';
import { PostgresqlApp } from '../app/postgresql';
import type { Replica } from '../replication/replica';
import type { Logger } from '../util/log';
import { describeIp, type FloatingIp, type FloatingIpDriver } from '../pool/floating-ip';
import { releaseSteps, runSteps, type Step, type StepReporter } from '../pool/steps';
import { CodedError } from '../util/coded-error';
import type { HostPort, NodeConfig, PoolConfig } from './config';
import type { ExportRequest, Exports } from './exports';

export interface PoolHostDeps {
  readonly cfg: NodeConfig;
  readonly log: Logger;
  readonly driver: FloatingIpDriver;
  readonly exports: Exports;
  readonly replica: (volume: string) => Replica;
  /** an application event for the activity log */
  readonly note: (level: 'info' | 'warn' | 'error', event: string, message: string, extra: { pool: string; ok?: boolean; ms?: number }) => void;
  /** an application kept failing after its restarts: hand the pool to the other node */
  readonly failover: (pool: PoolConfig, reason: string) => void;
}

export type PoolServiceStatus = Pick<PoolStatus, 'filesystem' | 'applications'>;

interface PoolRuntime {
  /** the definition its filesystem and applications were made from */
  readonly def: PoolConfig;
  /** the steps taken by the last successful activation, released by deactivate */
  active: readonly Step[] | null;
  /** exports stopped and addresses released while the pool's writes are suspended */
  suspended: boolean;
  chain: Promise<void>;
  readonly filesystem: PoolFilesystem | null;
  readonly apps: ReadonlyArray<{ readonly app: Application; readonly budget: RestartBudget }>;
}

const silent: StepReporter = () => undefined;

/** the parts of a definition a pool's filesystem and applications are made from */
function sameServices(a: PoolConfig, b: PoolConfig): boolean {
  const services = (p: PoolConfig): string => JSON.stringify([p.volumes, p.floatingIps, p.filesystem, p.applications]);
  return services(a) === services(b);
}

export class PoolHost {
  private readonly pools = new Map<string, PoolRuntime>();
  /** pools whose exports should be up */
  private readonly exporting = new Set<string>();

  constructor(private readonly d: PoolHostDeps) {
    this.reconcile();
  }

  /**
   * The cluster configuration changed: a new pool gets its runtime, a removed one that is not
   * active loses it, and a changed definition takes effect when the pool is not active here
   * (an active pool keeps what it started with until it is released).
   */
  reconcile(): void {
    const wanted = new Map(this.d.cfg.pools.map((p) => [p.name, p]));
    for (const [name, rt] of this.pools) {
      if (!wanted.has(name) && rt.active === null) this.pools.delete(name);
    }
    for (const p of wanted.values()) {
      const rt = this.pools.get(p.name);
      if (rt !== undefined && (rt.active !== null || sameServices(rt.def, p))) continue;
      const filesystem = p.filesystem === null ? null : this.filesystemOf(p, p.filesystem.volume);
      const apps = p.applications.map((a) => ({ app: this.application(p, a, filesystem), budget: new RestartBudget(a.restart) }));
      this.pools.set(p.name, { def: p, active: null, suspended: false, chain: rt?.chain ?? Promise.resolve(), filesystem, apps });
    }
  }

  private get runDir(): string {
    return path.join(this.d.cfg.node.dataDir, 'run');
  }

  private filesystemOf(p: PoolConfig, volume: string): PoolFilesystem {
    const size = this.d.cfg.volumes.find((v) => v.name === volume)?.size ?? 0;
    return new PoolFilesystem({
      pool: p.name, cfg: p.filesystem as NonNullable<PoolConfig['filesystem']>, runDir: this.runDir, log: this.d.log,
      backend: () => this.d.replica(volume).backendForExport(), size: () => size,
    });
  }

  private application(p: PoolConfig, a: ApplicationConfig, filesystem: PoolFilesystem | null): Application {
    const ctx: AppContext = {
      node: this.d.cfg.node.name, pool: p.name, floatingIps: p.floatingIps.map((ip) => ip.address),
      mountpoint: filesystem?.mountpoint ?? null, runDir: this.runDir,
    };
    const driver: AppDriver = a.module === 'postgresql' ? new PostgresqlApp(a, ctx) : new GenericApp(a, ctx);
    return new Application(a, driver, this.d.log.child(a.name), (app, reason) => this.onApplicationFailure(p, app, reason));
  }

  /**
   * A checker gave up on an application: restart it in place while the restart budget allows,
   * then fail the pool over. Runs in the pool's queue, so it never races a release.
   */
  private onApplicationFailure(p: PoolConfig, app: Application, reason: string): void {
    this.d.note('warn', 'app-failed', `pool ${p.name}: application ${app.name} failed: ${reason}`, { pool: p.name, ok: false });
    let failover: string | null = null;
    this.serial(p, async (rt) => {
      if (rt.active === null || rt.suspended) return;
      const entry = rt.apps.find((x) => x.app === app);
      if (entry === undefined) return;
      for (let why = reason; ;) {
        const verdict = entry.budget.onFailure(Date.now());
        app.restarts = entry.budget.recent;
        if (verdict.action === 'failover') {
          failover = `application ${app.name} failed ${verdict.restarts + 1} times within ${app.cfg.restart.windowMs} ms: ${why}`;
          return;
        }
        const started = Date.now();
        try {
          await app.stop().catch(() => undefined);
          await app.start();
          this.d.note('info', 'app-restart', `pool ${p.name}: application ${app.name} restarted in place (${verdict.attempt} of ${app.cfg.restart.max})`, { pool: p.name, ok: true, ms: Date.now() - started });
          return;
        } catch (e) {
          why = (e as Error).message;
          this.d.note('error', 'app-restart', `pool ${p.name}: restarting application ${app.name} failed: ${why}`, { pool: p.name, ok: false, ms: Date.now() - started });
        }
      }
    }).then(() => {
      if (failover === null) return;
      this.d.note('error', 'app-failover', `pool ${p.name}: ${failover}: failing the pool over`, { pool: p.name, ok: false });
      // outside the queue: the handover's own release runs in it
      this.d.failover(p, failover);
    }, (e: unknown) => this.d.log.error('handling an application failure failed', { pool: p.name, error: String(e) }));
  }

  /** what status shows of a pool's filesystem and applications on this node */
  serviceStatus(p: PoolConfig): PoolServiceStatus {
    const rt = this.pools.get(p.name);
    if (rt === undefined || (rt.filesystem === null && rt.apps.length === 0)) return {};
    return {
      ...(p.filesystem === null || rt.filesystem === null ? {} : { filesystem: { volume: p.filesystem.volume, mountpoint: p.filesystem.mountpoint, mounted: rt.filesystem.mounted() } }),
      applications: rt.apps.map((x) => x.app.status()),
    };
  }

  /** the volumes NBD clients reach: all but the one carrying the pool's filesystem */
  private exportedVolumes(p: PoolConfig): readonly string[] {
    return p.volumes.filter((v) => v !== p.filesystem?.volume);
  }

  /** where a pool's exports listen: each floating IP at nbdPort, or its nbdListen, or the node's */
  exportAddresses(p: PoolConfig): HostPort[] {
    if (this.exportedVolumes(p).length === 0) return [];
    if (p.floatingIps.length > 0) return p.floatingIps.map((ip) => ({ host: ip.address, port: p.nbdPort }));
    return [p.nbdListen ?? this.d.cfg.node.nbdListen];
  }

  /** At start: an address a crashed run left on an interface is removed before anything else. */
  async removeLeftovers(): Promise<void> {
    for (const p of this.d.cfg.pools) {
      const filesystem = this.pools.get(p.name)?.filesystem;
      if (filesystem !== null && filesystem !== undefined && await filesystem.removeLeftovers()) {
        this.d.log.warn('a filesystem mount left from an earlier run was removed', { pool: p.name, mountpoint: filesystem.mountpoint });
      }
      for (const ip of p.floatingIps) {
        if (!(await this.d.driver.present(ip))) continue;
        await this.d.driver.remove(ip);
        this.d.log.warn('a floating IP left from an earlier run was removed', { pool: p.name, floatingIp: describeIp(ip) });
      }
    }
  }

  activate(p: PoolConfig, report: StepReporter, promote: (r: Replica) => Promise<void>): Promise<void> {
    return this.serial(p, async (rt) => {
      const steps = this.stepsFor(p, promote);
      await runSteps(steps, report);
      rt.active = steps;
      rt.suspended = false;
    });
  }

  deactivate(p: PoolConfig, report: StepReporter): Promise<void> {
    return this.serial(p, async (rt) => {
      const steps = rt.active ?? this.stepsFor(p, () => Promise.resolve());
      rt.active = null;
      rt.suspended = false;
      const errors = await releaseSteps(steps, report);
      if (errors.length > 0) throw new Error(errors.join('; '));
    });
  }

  /** Stops the exports and releases the addresses (the peer may take them over); the volumes stay primary. */
  suspend(p: PoolConfig): Promise<void> {
    return this.serial(p, async (rt) => {
      if (rt.active === null || rt.suspended) return;
      rt.suspended = true;
      // the addresses first: the peer may take the pool over as soon as its lease runs out, and its
      // probe must not find this node still answering while the exports drain their writes
      const steps = this.serviceSteps(rt.def);
      const addresses = steps.slice(0, rt.def.floatingIps.length);
      const errors = [...await releaseSteps(addresses, silent), ...await releaseSteps(steps.slice(rt.def.floatingIps.length), silent)];
      if (errors.length > 0) throw new Error(errors.join('; '));
    });
  }

  resume(p: PoolConfig, report: StepReporter): Promise<void> {
    return this.serial(p, async (rt) => {
      if (rt.active === null || !rt.suspended) return;
      await runSteps(this.serviceSteps(rt.def), report);
      rt.suspended = false;
    });
  }

  /** Node shutdown: every pool's exports stop and its addresses go; the volumes are closed by the daemon. */
  async releaseAll(): Promise<void> {
    for (const p of [...this.pools.values()].map((rt) => rt.def)) {
      await this.serial(p, async (rt) => {
        if (rt.active === null) return;
        rt.active = null;
        await releaseSteps(this.serviceSteps(rt.def), silent);
      }).catch((e: unknown) => this.d.log.error('releasing a pool at shutdown failed', { pool: p.name, error: String(e) }));
    }
  }

  /** what the exports should serve now */
  private wantedExports(): ExportRequest[] {
    const out: ExportRequest[] = [];
    for (const p of this.d.cfg.pools) {
      if (!this.exporting.has(p.name)) continue;
      const replicas = this.exportedVolumes(p).map((v) => this.d.replica(v)).filter((r) => r.role === 'PRIMARY');
      for (const at of this.exportAddresses(p)) out.push({ at, replicas });
    }
    return out;
  }

  private stepsFor(p: PoolConfig, promote: (r: Replica) => Promise<void>): Step[] {
    const replicas = p.volumes.map((v) => this.d.replica(v));
    return [
      {
        name: `promote ${p.volumes.join(', ')}`,
        run: async () => {
          const done: Replica[] = [];
          try {
            for (const r of replicas) { await promote(r); done.push(r); }
          } catch (e) {
            for (const r of done.reverse()) await r.demote().catch(() => undefined);
            throw e;
          }
        },
        undo: async () => { for (const r of [...replicas].reverse()) await r.demote(); },
      },
      ...this.serviceSteps(p),
    ];
  }

  /** the floating IPs, the exports, the filesystem, the applications: what a suspended pool gives up and a resumed one takes back */
  private serviceSteps(p: PoolConfig): Step[] {
    const rt = this.pools.get(p.name);
    const steps = p.floatingIps.map((ip) => this.addressStep(ip));
    if (this.exportedVolumes(p).length > 0) steps.push(this.exportStep(p));
    const filesystem = rt?.filesystem ?? null;
    if (filesystem !== null) {
      steps.push({ name: filesystem.describe(), run: () => filesystem.mount(), undo: () => filesystem.unmount() });
    }
    for (const { app } of rt?.apps ?? []) {
      steps.push({ name: `application ${app.name}`, run: () => app.start(), undo: () => { app.quiesce(); return app.stop(); } });
    }
    return steps;
  }

  private addressStep(ip: FloatingIp): Step {
    const driver = this.d.driver;
    return {
      name: `floating IP ${describeIp(ip)}`,
      run: async () => {
        // an address that answers already belongs to someone: taking it would split the clients in two
        const owner = await driver.probe(ip);
        if (owner !== null) throw new CodedError('ERR_ADDRESS_IN_USE', `floating IP ${ip.address} is in use on the network already (answered by ${owner})`);
        await driver.add(ip);
        driver.announce(ip);
      },
      undo: () => driver.remove(ip),
    };
  }

  private exportStep(p: PoolConfig): Step {
    const addresses = this.exportAddresses(p);
    return {
      name: `export ${this.exportedVolumes(p).join(', ')} on ${addresses.map((a) => `${a.host}:${a.port}`).join(', ')}`,
      run: async () => {
        this.exporting.add(p.name);
        // a refresh also fails for another pool's address: what counts is whether this pool's are served
        const failure = await this.d.exports.refresh(() => this.wantedExports()).then(() => null, (e: unknown) => e as Error);
        const missing = addresses.filter((a) => !this.d.exports.serving(a));
        if (missing.length === 0) return;
        this.exporting.delete(p.name);
        await this.d.exports.refresh(() => this.wantedExports()).catch(() => undefined);
        throw failure ?? new Error(`nothing to export on ${missing.map((a) => `${a.host}:${a.port}`).join(', ')}: no volume of the pool is primary here`);
      },
      undo: async () => {
        this.exporting.delete(p.name);
        await this.d.exports.refresh(() => this.wantedExports());
      },
    };
  }

  private serial(p: PoolConfig, fn: (rt: PoolRuntime) => Promise<void>): Promise<void> {
    const rt = this.pools.get(p.name);
    if (rt === undefined) return Promise.reject(new Error(`unknown pool ${JSON.stringify(p.name)}`));
    const next = rt.chain.catch(() => undefined).then(() => fn(rt));
    rt.chain = next.catch(() => undefined);
    return next;
  }
}
