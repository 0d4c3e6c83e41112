// Listens for NBD clients and serves a fixed set of exports.
import net from 'node:net';
import type { Backend } from '../storage/backend';
import { staticCatalog, type ExportInfo } from '../protocol/nbd/export-info';
import { nbdLimits, nbdServerLimits, type NbdLimits, type NbdServerLimits } from '../protocol/nbd/limits';
import { ByteBudget } from '../util/byte-budget';
import type { Logger } from '../util/log';
import { BufferPool } from './buffer-pool';
import { NbdConnection } from './nbd-connection';

export interface ServedExport {
  readonly name: string;
  readonly description: string;
  readonly backend: Backend;
}

export interface NbdServerOptions {
  readonly exports: readonly ServedExport[];
  readonly log: Logger;
  readonly limits?: NbdLimits;
  readonly serverLimits?: NbdServerLimits;
}

export function exportInfo(e: ServedExport, limits: NbdLimits = nbdLimits): ExportInfo {
  const b = e.backend;
  return {
    name: e.name,
    description: e.description,
    size: b.size,
    readOnly: b.readOnly,
    canFlush: true,
    canFua: !b.readOnly,
    canTrim: b.canTrim && !b.readOnly,
    canZero: b.canZero && !b.readOnly,
    canFastZero: b.canFastZero && !b.readOnly,
    canCache: true,
    // one file descriptor behind every connection: a flush on any covers all
    canMultiConn: true,
    canExtents: b.canExtents,
    blockSizeMin: 1,
    blockSizePreferred: 4096,
    blockSizeMax: limits.payloadBytesMax,
  };
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly connections = new Set<NbdConnection>();
  private shuttingDown = false;
  private readonly limits: NbdLimits;
  private readonly serverLimits: NbdServerLimits;

  constructor(private readonly o: NbdServerOptions) {
    if (o.exports.length === 0) throw new Error('NbdServer needs at least one export');
    const names = new Set(o.exports.map((e) => e.name));
    if (names.size !== o.exports.length) throw new Error('export names must be unique');
    this.limits = o.limits ?? nbdLimits;
    this.serverLimits = o.serverLimits ?? nbdServerLimits;
    const catalog = staticCatalog(o.exports.map((e) => exportInfo(e, this.limits)));
    const backends = new Map(o.exports.map((e) => [e.name, e.backend] as const));
    const ctx = {
      catalog,
      backendFor: (name: string) => backends.get(name) as Backend,
      limits: this.limits,
      serverLimits: this.serverLimits,
      budget: new ByteBudget(this.serverLimits.serverInflightBytesMax),
      pool: new BufferPool(this.serverLimits.readBufferPoolBytesMax),
      log: o.log,
      shuttingDown: () => this.shuttingDown,
    };
    this.server = net.createServer((socket) => {
      const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
      if (this.shuttingDown || this.connections.size >= this.serverLimits.connectionsMax) {
        o.log.warn('connection refused', { peer, reason: this.shuttingDown ? 'shutting down' : `${this.serverLimits.connectionsMax} connections already` });
        socket.destroy();
        return;
      }
      const c = new NbdConnection(socket, ctx, peer);
      this.connections.add(c);
      void c.whenClosed().then(() => this.connections.delete(c));
    });
  }

  get connectionCount(): number { return this.connections.size; }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return this.listenOn({ host, port, exclusive: true }).then(() => this.server.address() as net.AddressInfo);
  }

  /** A unix socket: a node-private export (the pool's filesystem), out of reach of the network. */
  listenPath(socketPath: string): Promise<void> {
    return this.listenOn({ path: socketPath, exclusive: true });
  }

  private listenOn(o: net.ListenOptions): Promise<void> {
    // both handlers go on a failure too, so retrying a busy port does not pile up listeners
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => { this.server.off('listening', onListening); reject(e); };
      const onListening = (): void => { this.server.off('error', onError); resolve(); };
      this.server.once('error', onError);
      this.server.once('listening', onListening);
      this.server.listen(o);
    });
  }

  /** Stops accepting, lets in-flight requests finish (bounded by drainTimeoutMs), closes every connection. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.connections) c.drain();
    const all = Promise.all([...this.connections].map((c) => c.whenClosed()));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), this.serverLimits.drainTimeoutMs); });
    const outcome = await Promise.race([all, timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.o.log.warn('drain timed out, closing connections', { connections: this.connections.size });
      for (const c of this.connections) c.hardClose('server shut down');
      await Promise.all([...this.connections].map((c) => c.whenClosed()));
    }
    await closed;
  }
}
