// The node's NBD exports: one server per address, exporting the volumes of
// every exporting pool that listens there. Pools say which addresses they
// want; refresh() makes the servers match, one refresh at a time.
import { NbdServer, type ServedExport } from '../io/nbd-server';
import type { Backend } from '../storage/backend';
import { DiskStall, StallingBackend } from '../storage/stall-backend';
import { hostForUrl } from '../pool/floating-ip';
import type { Logger } from '../util/log';
import type { Replica } from '../replication/replica';
import type { HostPort } from './config';

/** A port can stay taken for a moment after its holder lets go (the peer's export, a server just closed). */
export const exportLimits = { bindRetryMs: 5000, bindRetryStepMs: 100 } as const;

export interface ExportRequest {
  readonly at: HostPort;
  readonly replicas: readonly Replica[];
}

function addressKey(at: HostPort): string {
  return `${hostForUrl(at.host)}:${at.port}`;
}

export class Exports {
  private readonly servers = new Map<string, { server: NbdServer; volumes: string }>();
  private busy: Promise<void> = Promise.resolve();

  constructor(private readonly log: Logger, private readonly diskStall: DiskStall | undefined) {}

  serving(at: HostPort): boolean {
    return this.servers.has(addressKey(at));
  }

  /**
   * Makes the servers match `wanted()` (read when this refresh runs, not when it was asked for).
   * One failed refresh (an address in use) must not fail every later one.
   */
  refresh(wanted: () => readonly ExportRequest[]): Promise<void> {
    this.busy = this.busy.catch(() => undefined).then(async () => {
      const want = new Map<string, ExportRequest>();
      for (const w of wanted()) {
        const key = addressKey(w.at);
        const prev = want.get(key);
        want.set(key, { at: w.at, replicas: [...(prev?.replicas ?? []), ...w.replicas] });
      }
      for (const [key, running] of [...this.servers]) {
        if (want.get(key)?.replicas.map((r) => r.name).join(',') === running.volumes) continue;
        await running.server.shutdown();
        this.servers.delete(key);
        this.log.info('export stopped', { volumes: running.volumes, nbd: key });
      }
      const errors: string[] = [];
      for (const [key, w] of want) {
        if (this.servers.has(key) || w.replicas.length === 0) continue;
        try {
          await this.start(key, w.at, w.replicas);
        } catch (e) {
          errors.push(`exporting on ${key}: ${(e as Error).message}`);
        }
      }
      if (errors.length > 0) throw new Error(errors.join('; '));
    });
    return this.busy;
  }

  private async start(key: string, at: HostPort, replicas: readonly Replica[]): Promise<void> {
    const stall = this.diskStall;
    const backendOf = (r: Replica): Backend => stall === undefined ? r.backendForExport() : new StallingBackend(r.backendForExport(), stall);
    // (not named `exports`: under CommonJS that would shadow the module's own exports object)
    const served: ServedExport[] = replicas.map((r) => ({ name: r.name, description: `tandem volume ${r.name}`, backend: backendOf(r) }));
    const first = replicas[0] as Replica;
    served.push({ name: '', description: `tandem volume ${first.name}`, backend: backendOf(first) });
    const server = new NbdServer({ exports: served, log: this.log.child('nbd') });
    const deadline = Date.now() + exportLimits.bindRetryMs;
    for (;;) {
      try {
        await server.listen(at.host, at.port);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EADDRINUSE' || Date.now() >= deadline) {
          throw new Error(code === 'EADDRINUSE'
            ? `port ${at.port} on ${at.host} is taken by another program (still after ${exportLimits.bindRetryMs} ms)`
            : (e as Error).message);
        }
        await new Promise((res) => setTimeout(res, exportLimits.bindRetryStepMs));
      }
    }
    const volumes = replicas.map((r) => r.name).join(',');
    this.servers.set(key, { server, volumes });
    this.log.info('exporting', { volumes, nbd: key });
  }

  /** Stops every server (node shutdown). */
  async stopAll(): Promise<void> {
    await this.busy.catch(() => undefined);
    for (const s of this.servers.values()) await s.server.shutdown();
    this.servers.clear();
  }
}
