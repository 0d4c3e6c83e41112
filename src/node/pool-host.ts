// Carries out the cluster's activate / deactivate / suspend / resume for each
// pool on this node, in the documented order (docs/pools.md): promote the
// volumes → add the floating IPs → start the exports (→ applications, later);
// release in reverse. A failed step undoes the ones before it, so a pool is
// never half up. Operations on one pool run one at a time.
import type { Replica } from '../replication/replica';
import type { Logger } from '../util/log';
import { describeIp, type FloatingIp, type FloatingIpDriver } from '../pool/floating-ip';
import { releaseSteps, runSteps, type Step, type StepReporter } from '../pool/steps';
import type { HostPort, NodeConfig, PoolConfig } from './config';
import type { ExportRequest, Exports } from './exports';

export interface PoolHostDeps {
  readonly cfg: NodeConfig;
  readonly log: Logger;
  readonly driver: FloatingIpDriver;
  readonly exports: Exports;
  readonly replica: (volume: string) => Replica;
}

interface PoolRuntime {
  /** the steps taken by the last successful activation, released by deactivate */
  active: readonly Step[] | null;
  /** exports stopped and addresses released while the pool's writes are suspended */
  suspended: boolean;
  chain: Promise<void>;
}

const silent: StepReporter = () => undefined;

export class PoolHost {
  private readonly pools = new Map<string, PoolRuntime>();
  /** pools whose exports should be up */
  private readonly exporting = new Set<string>();

  constructor(private readonly d: PoolHostDeps) {
    for (const p of d.cfg.pools) this.pools.set(p.name, { active: null, suspended: false, chain: Promise.resolve() });
  }

  /** where a pool's exports listen: each floating IP at nbdPort, or its nbdListen, or the node's */
  exportAddresses(p: PoolConfig): HostPort[] {
    if (p.floatingIps.length > 0) return p.floatingIps.map((ip) => ({ host: ip.address, port: p.nbdPort }));
    return [p.nbdListen ?? this.d.cfg.node.nbdListen];
  }

  /** At start: an address a crashed run left on an interface is removed before anything else. */
  async removeLeftovers(): Promise<void> {
    for (const p of this.d.cfg.pools) {
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
      const errors = await releaseSteps(this.serviceSteps(p), silent);
      if (errors.length > 0) throw new Error(errors.join('; '));
    });
  }

  resume(p: PoolConfig, report: StepReporter): Promise<void> {
    return this.serial(p, async (rt) => {
      if (rt.active === null || !rt.suspended) return;
      await runSteps(this.serviceSteps(p), report);
      rt.suspended = false;
    });
  }

  /** Node shutdown: every pool's exports stop and its addresses go; the volumes are closed by the daemon. */
  async releaseAll(): Promise<void> {
    for (const p of this.d.cfg.pools) {
      await this.serial(p, async (rt) => {
        if (rt.active === null) return;
        rt.active = null;
        await releaseSteps(this.serviceSteps(p), silent);
      }).catch((e: unknown) => this.d.log.error('releasing a pool at shutdown failed', { pool: p.name, error: String(e) }));
    }
  }

  /** what the exports should serve now */
  private wantedExports(): ExportRequest[] {
    const out: ExportRequest[] = [];
    for (const p of this.d.cfg.pools) {
      if (!this.exporting.has(p.name)) continue;
      const replicas = p.volumes.map((v) => this.d.replica(v)).filter((r) => r.role === 'PRIMARY');
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

  /** the floating IPs, then the exports: what a suspended pool gives up and a resumed one takes back */
  private serviceSteps(p: PoolConfig): Step[] {
    return [...p.floatingIps.map((ip) => this.addressStep(ip)), this.exportStep(p)];
  }

  private addressStep(ip: FloatingIp): Step {
    const driver = this.d.driver;
    return {
      name: `floating IP ${describeIp(ip)}`,
      run: async () => {
        // an address that answers already belongs to someone: taking it would split the clients in two
        const owner = await driver.probe(ip);
        if (owner !== null) throw new Error(`floating IP ${ip.address} is in use on the network already (answered by ${owner})`);
        await driver.add(ip);
        driver.announce(ip);
      },
      undo: () => driver.remove(ip),
    };
  }

  private exportStep(p: PoolConfig): Step {
    const addresses = this.exportAddresses(p);
    return {
      name: `export ${p.volumes.join(', ')} on ${addresses.map((a) => `${a.host}:${a.port}`).join(', ')}`,
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
