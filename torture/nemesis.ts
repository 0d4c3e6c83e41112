// Carries out the schedule against the running cluster: kill -9 and restart,
// a host's switch port down and up, blackhole routes inside a namespace for one
// direction of one link, SIGSTOP and SIGCONT, and the node's disk-stall fault.
// Faults may overlap: ports and routes are counted, so the first of two heals
// does not undo the second fault; a process already down or paused is left as it is.
import type { NodeName, NodeStatus } from '../test/helpers/cluster';
import { httpJson } from '../test/helpers/cluster';
import { run } from '../test/helpers/run';
import { POOL, type Host, type TortureCluster } from './cluster';
import { describeFault, type FaultKind, type ScheduledFault, type Target } from './schedule';

export interface AppliedFault {
  readonly n: number;
  readonly kind: FaultKind;
  /** what the fault's roles were resolved to: the hosts it hit */
  readonly hosts: readonly Host[];
  /** ms since the epoch */
  readonly at: number;
  healedAt?: number;
  /** not applied, and why (the process was down already, say) */
  skipped?: string;
  /** applying or healing it failed */
  error?: string;
}

interface Heal {
  readonly n: number;
  readonly timer: NodeJS.Timeout;
  readonly fn: () => Promise<void>;
}

export class Nemesis {
  readonly applied: AppliedFault[] = [];
  private readonly paused = new Map<Host, number>();
  private readonly portsDown = new Map<Host, number>();
  private readonly routes = new Map<string, number>();
  private readonly heals = new Set<Heal>();
  private readonly running = new Set<Promise<void>>();
  /** the pool's owner as last seen: the primary when nobody answers */
  private lastOwner: NodeName = 'alpha';

  constructor(private readonly c: TortureCluster, private readonly say: (line: string) => void, private readonly t0: number) {}

  private at(): string {
    return `t+${((Date.now() - this.t0) / 1000).toFixed(1).padStart(6)} s`;
  }

  /** Runs the schedule from `start` (ms since the epoch) until its end or until stopped() is true. */
  async run(schedule: readonly ScheduledFault[], start: number, stopped: () => boolean): Promise<void> {
    for (const f of schedule) {
      while (!stopped() && Date.now() < start + f.atMs) await sleep(Math.min(100, start + f.atMs - Date.now()));
      if (stopped()) break;
      const p = this.apply(f).catch((e: unknown) => { this.say(`${this.at()}  #${f.n} failed: ${errText(e)}`); });
      this.running.add(p);
      void p.finally(() => this.running.delete(p));
    }
  }

  /** Heals everything now: pending heals run at once; every process runs again, every port and route is back. */
  async healAll(): Promise<void> {
    await Promise.allSettled([...this.running]);
    const pending = [...this.heals].sort((a, b) => a.n - b.n);
    for (const h of pending) {
      clearTimeout(h.timer);
      this.heals.delete(h);
    }
    for (const h of pending) await h.fn().catch((e: unknown) => this.say(`${this.at()}  #${h.n} heal failed: ${errText(e)}`));
    // whatever a failed heal left behind
    for (const [host, pid] of this.paused) { signal(pid, 'SIGCONT'); this.paused.delete(host); }
    for (const host of [...this.portsDown.keys()]) { await this.c.net.portUp(this.c.netnsHost(host)); this.portsDown.delete(host); }
    for (const key of [...this.routes.keys()]) {
      const [from, to] = key.split('>') as [Host, Host];
      await this.routeDel(from, to);
      this.routes.delete(key);
    }
    for (const n of this.c.nodes) if (!n.running) await n.start(60_000);
    if (!this.c.witness.running) await this.c.witness.start();
  }

  /** Forgets the heals still to come (the run is being torn down: nothing may start again). */
  cancel(): void {
    for (const h of this.heals) clearTimeout(h.timer);
    this.heals.clear();
  }

  /** the node where the pool is ACTIVE, else the owner both answering nodes name, else the last one seen */
  async owner(): Promise<NodeName> {
    const [a, b] = await Promise.all([this.c.status('alpha', 500), this.c.status('beta', 500)]);
    const pool = (s: NodeStatus | undefined): { owner: string; phase: string } | undefined => s?.clusterState?.pools.find((p) => p.name === POOL);
    const pa = pool(a);
    const pb = pool(b);
    let owner: NodeName | undefined;
    if (pa?.phase === 'ACTIVE' && pa.owner === 'alpha') owner = 'alpha';
    else if (pb?.phase === 'ACTIVE' && pb.owner === 'beta') owner = 'beta';
    else {
      const named = [pa?.owner, pb?.owner].filter((x): x is NodeName => x === 'alpha' || x === 'beta');
      if (named.length > 0 && named.every((x) => x === named[0])) owner = named[0];
    }
    if (owner !== undefined) this.lastOwner = owner;
    return this.lastOwner;
  }

  private async resolve(t: Target): Promise<Host> {
    if (t === 'witness') return 'witness';
    const o = await this.owner();
    return t === 'primary' ? o : o === 'alpha' ? 'beta' : 'alpha';
  }

  private record(f: ScheduledFault, hosts: Host[]): AppliedFault {
    const a: AppliedFault = { n: f.n, kind: f.kind, hosts, at: Date.now() };
    this.applied.push(a);
    return a;
  }

  private later(a: AppliedFault, ms: number, fn: () => Promise<string>): void {
    const h: Heal = {
      n: a.n,
      timer: setTimeout(() => {
        this.heals.delete(h);
        const p = h.fn().catch((e: unknown) => { this.say(`${this.at()}  #${a.n} heal failed: ${errText(e)}`); });
        this.running.add(p);
        void p.finally(() => this.running.delete(p));
      }, ms),
      fn: async () => {
        try {
          const what = await fn();
          a.healedAt = Date.now();
          this.say(`${this.at()}  #${a.n} healed: ${what}`);
        } catch (e) {
          a.error = `heal: ${errText(e)}`;
          throw e;
        }
      },
    };
    this.heals.add(h);
  }

  private async apply(f: ScheduledFault): Promise<void> {
    const target = await this.resolve(f.target);
    const peer = f.peer === undefined ? undefined : await this.resolve(f.peer);
    const hosts = peer === undefined ? [target] : [target, peer];
    const a = this.record(f, hosts);
    const skip = (why: string): void => {
      a.skipped = why;
      this.say(`${this.at()}  #${f.n} ${describeFault(f)}: skipped (${why})`);
    };
    const said = (): void => this.say(`${this.at()}  #${f.n} ${describeFault(f)} [${hosts.join(', ')}]`);
    if (peer === target) { skip(`${f.target} and ${f.peer ?? '?'} are both ${target}`); return; }
    switch (f.kind) {
      case 'kill': {
        const proc = target === 'witness' ? this.c.witness : target === 'clients' ? undefined : this.c.node(target);
        if (proc === undefined || !proc.running) { skip(`${target} is down already`); return; }
        this.paused.delete(target);
        said();
        if (target === 'witness') await this.c.witness.kill9(); else await this.c.node(target as NodeName).kill9();
        this.later(a, f.durationMs, async () => {
          if (target === 'witness') { if (!this.c.witness.running) await this.c.witness.start(); } else {
            const n = this.c.node(target as NodeName);
            if (!n.running) await n.start(60_000);
          }
          return `${target} started again`;
        });
        return;
      }
      case 'crash': {
        if (target === 'witness' || target === 'clients') { skip('only a node crashes here'); return; }
        const n = this.c.node(target);
        if (!n.running) { skip(`${target} is down already`); return; }
        this.paused.delete(target);
        said();
        // the power goes: the daemon and the machine's network at once
        await Promise.all([n.kill9(), this.portDown(target)]);
        this.later(a, f.durationMs, async () => {
          // a boot brings the interfaces up without the addresses the daemon had added
          await run('ip', ['-n', this.ns(target), 'addr', 'del', `${this.c.vip}/24`, 'dev', 'eth0'], { timeoutMs: 10_000, allowFail: true });
          await this.portUp(target);
          if (!n.running) await n.start(60_000);
          return `${target} booted again`;
        });
        return;
      }
      case 'pause': {
        const pid = target === 'witness' ? this.c.witness.pid : target === 'clients' ? undefined : this.c.node(target).pid;
        if (pid === undefined) { skip(`${target} is down`); return; }
        if (this.paused.has(target)) { skip(`${target} is paused already`); return; }
        said();
        this.paused.set(target, pid);
        signal(pid, 'SIGSTOP');
        this.later(a, f.durationMs, async () => {
          if (this.paused.get(target) !== pid) return `${target} was killed meanwhile`;
          this.paused.delete(target);
          signal(pid, 'SIGCONT');
          return `${target} continued`;
        });
        return;
      }
      case 'isolate': {
        said();
        await this.portDown(target);
        this.later(a, f.durationMs, async () => (await this.portUp(target)) ? `${target}'s port is up` : `${target} stays cut off (another fault)`);
        return;
      }
      case 'cut':
      case 'cut-one-way': {
        const to = peer as Host;
        said();
        const dirs: Array<[Host, Host]> = f.kind === 'cut' ? [[target, to], [to, target]] : [[target, to]];
        for (const [x, y] of dirs) await this.routeUp(x, y);
        this.later(a, f.durationMs, async () => {
          for (const [x, y] of dirs) await this.routeDown(x, y);
          return f.kind === 'cut' ? `${target} <-> ${to} restored` : `${target} -> ${to} restored`;
        });
        return;
      }
      case 'disk-stall': {
        if (target === 'witness' || target === 'clients') { skip('only a node has a disk to stall'); return; }
        const n = this.c.node(target);
        if (!n.running || this.paused.has(target)) { skip(`${target} is ${n.running ? 'paused' : 'down'}`); return; }
        said();
        try {
          const r = await httpJson('POST', n.addr.api.host, n.addr.api.port, '/api/v1/faults/disk-stall', { ms: f.durationMs }, 2_000);
          if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`);
          a.healedAt = a.at + f.durationMs;
        } catch (e) {
          // a node cut off or stuck cannot be asked: the fault did not happen
          a.skipped = `the API did not take it: ${errText(e)}`;
          this.say(`${this.at()}  #${f.n} not injected: ${a.skipped}`);
        }
        return;
      }
    }
  }

  /** the host's switch port down, counted */
  private async portDown(h: Host): Promise<void> {
    const k = (this.portsDown.get(h) ?? 0) + 1;
    this.portsDown.set(h, k);
    if (k === 1) await this.c.net.portDown(this.c.netnsHost(h));
  }

  /** back up once no other fault holds it down; false if one still does */
  private async portUp(h: Host): Promise<boolean> {
    const left = (this.portsDown.get(h) ?? 1) - 1;
    if (left > 0) { this.portsDown.set(h, left); return false; }
    this.portsDown.delete(h);
    await this.c.net.portUp(this.c.netnsHost(h));
    return true;
  }

  /** packets from `from` to `to` are dropped inside from's namespace (a blackhole route), counted */
  private async routeUp(from: Host, to: Host): Promise<void> {
    const key = `${from}>${to}`;
    const k = (this.routes.get(key) ?? 0) + 1;
    this.routes.set(key, k);
    if (k === 1) await run('ip', ['-n', this.ns(from), 'route', 'add', 'blackhole', `${this.c.ip(to)}/32`], { timeoutMs: 10_000 });
  }

  private async routeDown(from: Host, to: Host): Promise<void> {
    const key = `${from}>${to}`;
    const left = (this.routes.get(key) ?? 1) - 1;
    if (left > 0) { this.routes.set(key, left); return; }
    this.routes.delete(key);
    await this.routeDel(from, to);
  }

  private async routeDel(from: Host, to: Host): Promise<void> {
    await run('ip', ['-n', this.ns(from), 'route', 'del', 'blackhole', `${this.c.ip(to)}/32`], { timeoutMs: 10_000, allowFail: true });
  }

  private ns(h: Host): string {
    return (this.c.net.hosts[this.c.netnsHost(h)] as { ns: string }).ns;
  }
}

/** a signal to a process this run started, by its PID; one that is gone already is no error */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
