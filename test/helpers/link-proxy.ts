// A TCP proxy for the sync link: the nodes' peer.syncAddress points at it, so a
// test can cut the link for real (every connection reset, new ones refused),
// make it silent (sockets stay open, bytes are dropped both ways), and count
// or record what crosses it.
import net from 'node:net';

export type LinkMode = 'forward' | 'cut' | 'blackhole';

export interface LinkProxyOptions {
  /** loopback address to listen on */
  readonly host: string;
  /** 0 (default) picks a free port */
  readonly port?: number;
  readonly target: { readonly host: string; readonly port: number };
  /** keep up to this many bytes of each direction of each connection (default 0: none) */
  readonly recordBytes?: number;
}

/** What one connection carried (up to recordBytes per direction). */
export interface RecordedConnection {
  /** client → target (from the dialling node to the accepting one) */
  readonly toTarget: Buffer[];
  /** target → client */
  readonly fromTarget: Buffer[];
  recordedToTarget: number;
  recordedFromTarget: number;
}

interface Pair {
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
  /** bytes were dropped in this connection (blackhole): the stream is broken for good */
  dropped: boolean;
  readonly record: RecordedConnection;
}

export interface LinkProxy {
  readonly host: string;
  readonly port: number;
  /** "host:port", for a config file */
  readonly address: string;
  readonly mode: LinkMode;
  /** bytes forwarded client → target and target → client, since the start */
  readonly bytes: { readonly toTarget: number; readonly fromTarget: number };
  /** bytes dropped while silent */
  readonly dropped: { readonly toTarget: number; readonly fromTarget: number };
  /** connections accepted since the start (refused ones included) */
  readonly accepted: number;
  /** connections open right now */
  readonly open: number;
  /** every connection's recorded bytes, oldest first (with recordBytes) */
  recordings(): readonly RecordedConnection[];
  /** Destroys every connection, and closes new ones as soon as they are accepted. */
  cut(): void;
  /** Keeps every socket open but forwards nothing, either way: bytes are read and dropped. */
  blackhole(): void;
  /**
   * Forwards again. Connections that lost bytes while silent are destroyed
   * (their byte streams are broken); the nodes reconnect.
   */
  restore(): void;
  close(): Promise<void>;
}

export async function startLinkProxy(o: LinkProxyOptions): Promise<LinkProxy> {
  const pairs = new Set<Pair>();
  const recorded: RecordedConnection[] = [];
  const recordMax = o.recordBytes ?? 0;
  let mode: LinkMode = 'forward';
  let accepted = 0;
  let closed = false;
  const bytes = { toTarget: 0, fromTarget: 0 };
  const dropped = { toTarget: 0, fromTarget: 0 };

  const destroyPair = (p: Pair): void => {
    pairs.delete(p);
    // resetAndDestroy sends an RST where it can: a cut link, not a polite close
    for (const s of [p.client, p.upstream]) {
      if (s === undefined || s.destroyed) continue;
      try {
        s.resetAndDestroy();
      } catch {
        s.destroy();
      }
    }
  };

  const keep = (p: Pair, dir: 'toTarget' | 'fromTarget', d: Buffer): void => {
    if (recordMax === 0) return;
    const r = p.record;
    const have = dir === 'toTarget' ? r.recordedToTarget : r.recordedFromTarget;
    const n = Math.min(d.length, recordMax - have);
    if (n <= 0) return;
    const piece = Buffer.from(d.subarray(0, n));
    if (dir === 'toTarget') { r.toTarget.push(piece); r.recordedToTarget += n; } else { r.fromTarget.push(piece); r.recordedFromTarget += n; }
  };

  /** Forwards d from `from` to `to`, or drops it when silent. */
  const pass = (p: Pair, dir: 'toTarget' | 'fromTarget', d: Buffer, to: net.Socket | undefined): void => {
    if (mode !== 'forward' || p.dropped || to === undefined) {
      dropped[dir] += d.length;
      p.dropped = true;
      return;
    }
    bytes[dir] += d.length;
    keep(p, dir, d);
    to.write(d);
  };

  const connectUpstream = (p: Pair): void => {
    const up = net.connect({ host: o.target.host, port: o.target.port });
    up.setNoDelay(true);
    p.upstream = up;
    // the client's bytes wait (paused) until the upstream connection is there
    up.once('connect', () => p.client.resume());
    up.on('data', (d: Buffer) => pass(p, 'fromTarget', d, p.client));
    up.on('error', () => destroyPair(p));
    up.on('close', () => destroyPair(p));
  };

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    client.on('error', () => { /* a reset; the close handler cleans up */ });
    if (mode === 'cut' || closed) {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const record: RecordedConnection = { toTarget: [], fromTarget: [], recordedToTarget: 0, recordedFromTarget: 0 };
    if (recordMax > 0) recorded.push(record);
    const p: Pair = { client, upstream: undefined, dropped: false, record };
    pairs.add(p);
    client.on('data', (d: Buffer) => pass(p, 'toTarget', d, p.upstream));
    client.on('close', () => destroyPair(p));
    if (mode === 'blackhole') {
      // a silent link: the connection is accepted and nothing ever answers
      p.dropped = true;
      client.resume();
    } else {
      connectUpstream(p);
    }
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: o.host, port: o.port ?? 0, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    host: o.host,
    port,
    address: `${o.host}:${port}`,
    get mode() { return mode; },
    bytes,
    dropped,
    get accepted() { return accepted; },
    get open() { return pairs.size; },
    recordings: () => recorded,
    cut() {
      mode = 'cut';
      for (const p of [...pairs]) destroyPair(p);
    },
    blackhole() {
      if (mode === 'cut') return;
      mode = 'blackhole';
    },
    restore() {
      mode = 'forward';
      for (const p of [...pairs]) if (p.dropped) destroyPair(p);
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      mode = 'cut';
      for (const p of [...pairs]) destroyPair(p);
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
