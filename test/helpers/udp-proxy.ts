// A UDP forwarder for tests: a node sends its heartbeats or witness requests
// to the proxy's address instead of the real one, so a test can cut that path
// for real (every datagram dropped, both ways) and restore it. Each sender gets
// its own upstream socket, so the target's replies can be relayed back to the
// sender that caused them, from the proxy's own address (the one the sender
// addressed: a witness client takes replies only from there).
import dgram from 'node:dgram';
import { isIP } from 'node:net';

export type UdpProxyMode = 'forward' | 'cut';

export interface UdpProxyOptions {
  /** IP literal to listen on (and to send upstream from) */
  readonly host: string;
  /** 0 (default) picks a free port */
  readonly port?: number;
  readonly target: { readonly host: string; readonly port: number };
  /** at most this many senders get an upstream socket; the least recently heard one gives way (default 16) */
  readonly maxSenders?: number;
  /** an upstream socket unused for this long is closed (default 30 000 ms) */
  readonly idleMs?: number;
}

export interface UdpProxy {
  readonly host: string;
  readonly port: number;
  /** "host:port", for a config file */
  readonly address: string;
  readonly mode: UdpProxyMode;
  /** datagrams forwarded sender → target and target → sender, since the start */
  readonly forwarded: { readonly toTarget: number; readonly fromTarget: number };
  /** datagrams dropped while cut (or because the proxy was closing) */
  readonly dropped: { readonly toTarget: number; readonly fromTarget: number };
  /** senders with an upstream socket right now */
  readonly senders: number;
  /** Drops every datagram, both ways, until restore(). */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

interface Sender {
  readonly address: string;
  readonly port: number;
  readonly upstream: dgram.Socket;
  lastUsed: number;
}

function udpSocket(host: string): dgram.Socket {
  return dgram.createSocket({ type: isIP(host) === 6 ? 'udp6' : 'udp4' });
}

/** IPv4 addresses may arrive IPv4-mapped on a dual-stack socket. */
function plain(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export async function startUdpProxy(o: UdpProxyOptions): Promise<UdpProxy> {
  if (isIP(o.host) === 0 || isIP(o.target.host) === 0) throw new Error('udp proxy: host and target must be IP literals');
  const maxSenders = o.maxSenders ?? 16;
  const idleMs = o.idleMs ?? 30_000;
  /** by "address:port", least recently used first (Map keeps insertion order; a use re-inserts) */
  const senders = new Map<string, Sender>();
  const forwarded = { toTarget: 0, fromTarget: 0 };
  const dropped = { toTarget: 0, fromTarget: 0 };
  let mode: UdpProxyMode = 'forward';
  let closed = false;

  const front = udpSocket(o.host);
  // a send error (ICMP unreachable on some systems) is not the proxy's concern
  front.on('error', () => undefined);

  const drop = (key: string): void => {
    const s = senders.get(key);
    if (s === undefined) return;
    senders.delete(key);
    try {
      s.upstream.close();
    } catch {
      // already closed
    }
  };

  const senderFor = (address: string, port: number): Sender => {
    const key = `${address}:${port}`;
    const known = senders.get(key);
    if (known !== undefined) {
      senders.delete(key);
      senders.set(key, known);
      known.lastUsed = Date.now();
      return known;
    }
    while (senders.size >= maxSenders) {
      const oldest = senders.keys().next().value;
      if (oldest === undefined) break;
      drop(oldest);
    }
    const upstream = udpSocket(o.host);
    upstream.on('error', () => undefined);
    // sends made while the bind is under way are queued by dgram until it completes
    upstream.bind({ address: o.host, port: 0 });
    upstream.on('message', (msg, from) => {
      // only the target's datagrams are relayed: this socket's port is no open relay
      if (plain(from.address) !== plain(o.target.host) || from.port !== o.target.port) return;
      if (mode !== 'forward' || closed) { dropped.fromTarget++; return; }
      forwarded.fromTarget++;
      front.send(msg, port, address);
    });
    const s: Sender = { address, port, upstream, lastUsed: Date.now() };
    senders.set(key, s);
    return s;
  };

  front.on('message', (msg, from) => {
    if (mode !== 'forward' || closed) { dropped.toTarget++; return; }
    const s = senderFor(plain(from.address), from.port);
    forwarded.toTarget++;
    s.upstream.send(msg, o.target.port, o.target.host);
  });

  await new Promise<void>((resolve, reject) => {
    front.once('error', reject);
    front.bind({ address: o.host, port: o.port ?? 0, exclusive: true }, () => {
      front.off('error', reject);
      resolve();
    });
  });
  const port = front.address().port;

  const sweeper = setInterval(() => {
    const before = Date.now() - idleMs;
    for (const [key, s] of [...senders]) if (s.lastUsed < before) drop(key);
  }, Math.max(100, Math.min(idleMs, 5_000)));
  sweeper.unref();

  return {
    host: o.host,
    port,
    address: `${o.host}:${port}`,
    get mode() { return mode; },
    forwarded,
    dropped,
    get senders() { return senders.size; },
    cut() { if (!closed) mode = 'cut'; },
    restore() { if (!closed) mode = 'forward'; },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      mode = 'cut';
      clearInterval(sweeper);
      for (const key of [...senders.keys()]) drop(key);
      return new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}
