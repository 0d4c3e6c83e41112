// Two replication nodes in one process: real volume files in a temp dir, the
// sync link over an in-memory duplex pair instead of TCP. Each MemNode wires
// its replicas to a link exactly as src/node/daemon.ts does (one PeerSession
// per link, WRITE_ACK/FLUSH_ACK to session.settle, FLUSH to flushForPeer then
// FLUSH_ACK, every volume message to its replica) — NodeDaemon.onLink and
// dispatch are private, so the minimum is duplicated here (see MemNode.onLink
// and MemNode.dispatch); keep the two in step, or extract them from daemon.ts.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import { newVolume, type SplitBrainPolicy } from '../../src/core/generations';
import type { SyncMessage } from '../../src/protocol/sync/messages';
import { ChangeTracking, changeTrackingGeometry } from '../../src/storage/change-tracking';
import { createVolume, openVolume, readMetadata, writeMetadata, type Volume } from '../../src/storage/volume-store';
import type { VolumeMetadata } from '../../src/storage/metadata';
import { ByteBudget } from '../../src/util/byte-budget';
import { createLogger, type Logger } from '../../src/util/log';
import { replicationLimits } from '../../src/replication/limits';
import { dispatchPeerMessage } from '../../src/replication/dispatch';
import { PeerSession } from '../../src/replication/peer-session';
import { Replica, type AlonePolicy, type CacheMode } from '../../src/replication/replica';
import { establishLink, type SyncLink, type SyncLinkOptions } from '../../src/replication/sync-link';
import { wireVolumeId } from '../../src/node/daemon';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Two Duplex ends: what one writes, the other reads. Destroying either destroys both (like a reset). */
export function memoryDuplexPair(): [Duplex, Duplex] {
  const ab = new PassThrough();
  const ba = new PassThrough();
  return [Duplex.from({ readable: ba, writable: ab }), Duplex.from({ readable: ab, writable: ba })];
}

/** Polls `pred` until true; rejects with `what` (and `detail()`) after timeoutMs. */
export async function waitFor(pred: () => boolean, what: string, timeoutMs = 10_000, detail?: () => unknown): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > until) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail === undefined ? '' : `: ${JSON.stringify(detail())}`}`);
    }
    await sleep(5);
  }
}

export interface Cluster {
  readonly id: Buffer;
  readonly secret: Buffer;
}

export function newCluster(): Cluster {
  return { id: randomBytes(16), secret: randomBytes(32) };
}

export interface MemNodeOptions {
  readonly cluster: Cluster;
  readonly name: string;
  readonly peerName: string;
  readonly dir: string;
  readonly volumeName?: string;
  readonly size: number;
  /** this node is the volume's configured primary (and its initial source) */
  readonly primary: boolean;
  readonly cacheMode?: CacheMode;
  readonly checksumResync?: boolean;
  readonly splitBrainPolicy?: SplitBrainPolicy;
  /** the fencing policy's say over writes the peer lacks (the daemon's comes from the cluster machine) */
  readonly alonePolicy?: AlonePolicy;
  readonly resyncRate?: number;
  /** runs on the fresh backing file before the volume is opened (e.g. to put data in it) */
  readonly prepare?: (backingPath: string) => void;
  /** print the log lines to stderr as well */
  readonly verbose?: boolean;
}

/** One node: its copy of one volume, the replica, and the link it is on (if any). */
export class MemNode {
  link: SyncLink | undefined;
  session: PeerSession | undefined;
  private readonly ticker: NodeJS.Timeout;
  private closed = false;

  private constructor(
    readonly o: MemNodeOptions,
    readonly backingPath: string,
    readonly volume: Volume,
    readonly tracking: ChangeTracking,
    readonly replica: Replica,
    /** every log line of this node, in order */
    readonly logs: string[],
    readonly log: Logger,
    /** the node-wide budget of bytes being applied for the peer */
    readonly applyBudget: ByteBudget,
  ) {
    // the daemon ticks every min(250, pingIntervalMs): session deadlines, metadata, resync checkpoints
    this.ticker = setInterval(() => { this.session?.tick(Date.now()); this.replica.tick(); }, 50);
  }

  get name(): string { return this.o.name; }

  /** Creates the volume as daemon.ts's openCopy does at a first start, then opens it. */
  static async create(o: MemNodeOptions): Promise<MemNode> {
    const volumeName = o.volumeName ?? 'vol0';
    const dir = path.join(o.dir, o.name, 'volumes');
    fs.mkdirSync(dir, { recursive: true });
    const backingPath = path.join(dir, `${volumeName}.img`);
    const loc = { backingPath };
    const geometry = changeTrackingGeometry({ volumeBytes: o.size });
    const m = createVolume(loc, o.size);
    const initial = newVolume(m.generations.current, { initialSource: o.primary });
    writeMetadata(`${backingPath}.tandem.json`, { ...m, generations: initial.generations, diskState: initial.diskState });
    const t = await ChangeTracking.create(backingPath, geometry);
    await t.closeClean();
    o.prepare?.(backingPath);
    const volume = openVolume(loc);
    const tracking = await ChangeTracking.open(backingPath, geometry);
    const applyBudget = new ByteBudget(replicationLimits.applyBytesMax);
    const logs: string[] = [];
    const log = createLogger(o.name, (line) => {
      logs.push(line);
      if (o.verbose === true) process.stderr.write(line);
    });
    const replica = new Replica({
      name: volumeName, wireId: wireVolumeId(o.cluster.id, volumeName), nodeName: o.name, peerName: o.peerName,
      volume, tracking, role: o.primary ? 'PRIMARY' : 'SECONDARY', cacheMode: o.cacheMode ?? 'write-back',
      ...(o.splitBrainPolicy === undefined ? {} : { splitBrainPolicy: o.splitBrainPolicy }),
      ...(o.alonePolicy === undefined ? {} : { alonePolicy: o.alonePolicy }),
      resyncRateBytesPerSecond: o.resyncRate ?? 0, checksumResync: o.checksumResync ?? false,
      log: log.child(volumeName), applyBudget,
    });
    return new MemNode(o, backingPath, volume, tracking, replica, logs, log, applyBudget);
  }

  /** The volume's metadata as it is on disk now. */
  metaOnDisk(): VolumeMetadata {
    const m = readMetadata(this.volume.metaPath);
    if (m === undefined) throw new Error(`${this.volume.metaPath} is gone`);
    return m;
  }

  linkOptions(role: 'initiator' | 'acceptor', timeoutMs = 3000): SyncLinkOptions {
    return {
      role, clusterId: this.o.cluster.id, clusterSecret: this.o.cluster.secret, nodeName: this.o.name, peerName: this.o.peerName,
      pingIntervalMs: 200, timeoutMs,
    };
  }

  /** As NodeDaemon.onLink: one session per link, every replica attached, detached when it closes. */
  onLink(link: SyncLink, timeoutMs = 3000): void {
    if (this.link !== undefined && !this.link.closed) this.link.close('replaced by a new connection from the peer');
    this.link = link;
    const session = new PeerSession(link, timeoutMs);
    this.session = session;
    link.onClose((reason) => {
      if (this.session === session) { this.session = undefined; this.link = undefined; }
      this.log.warn('peer disconnected', { peer: link.peerName, reason });
      this.replica.detach(reason);
    });
    this.replica.attach(session);
    link.start((m) => this.dispatch(session, m));
  }

  /** As the node daemon does, for this node's one volume. */
  dispatch(session: PeerSession, m: SyncMessage): void {
    dispatchPeerMessage({
      nodeName: this.o.name, log: this.log,
      replicas: () => [this.replica],
      replica: (wireId) => (wireId.equals(this.replica.wireId) ? this.replica : undefined),
    }, session, m);
  }

  /** Closes the link and the replica (a clean stop); safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ticker);
    this.link?.close('node stopping');
    await this.replica.close();
  }
}

/** One link between two nodes over an in-memory pair. */
export interface MemLink {
  readonly a: SyncLink;
  readonly b: SyncLink;
  readonly ends: readonly [Duplex, Duplex];
  /** Destroys the pair (both ends see the link close at once, as with a reset). */
  cut(): void;
}

/** One side of a link about to be made: a node, or a scripted peer. */
export interface LinkEnd {
  readonly name: string;
  linkOptions(role: 'initiator' | 'acceptor'): SyncLinkOptions;
}

/** Handshakes both ends over a new in-memory pair (the name that sorts first initiates, as in the daemon). */
export async function handshakePair(a: LinkEnd, b: LinkEnd): Promise<{ la: SyncLink; lb: SyncLink; ends: [Duplex, Duplex] }> {
  const ends = memoryDuplexPair();
  const aDials = a.name < b.name;
  const [la, lb] = await Promise.all([
    establishLink(ends[0], a.linkOptions(aDials ? 'initiator' : 'acceptor')),
    establishLink(ends[1], b.linkOptions(aDials ? 'acceptor' : 'initiator')),
  ]);
  return { la, lb, ends };
}

/** Joins two nodes: handshake, then both wired as the daemon wires a new link. */
export async function connect(a: MemNode, b: MemNode): Promise<MemLink> {
  const { la, lb, ends } = await handshakePair(a, b);
  a.onLink(la);
  b.onLink(lb);
  return { a: la, b: lb, ends, cut: () => { ends[0].destroy(); ends[1].destroy(); } };
}

/**
 * A scripted peer: completes the handshake as `node`'s peer, then records every message it gets
 * and sends whatever the test tells it to (encoded and MACed by a real SyncLink).
 */
export class FakePeer {
  readonly received: SyncMessage[] = [];
  private constructor(readonly link: SyncLink, readonly ends: readonly [Duplex, Duplex]) {}

  static async attach(node: MemNode): Promise<FakePeer> {
    const o = node.o;
    const fake: LinkEnd = {
      name: o.peerName,
      linkOptions: (role) => ({
        role, clusterId: o.cluster.id, clusterSecret: o.cluster.secret, nodeName: o.peerName, peerName: o.name,
        pingIntervalMs: 200, timeoutMs: 3000,
      }),
    };
    const { la, lb, ends } = await handshakePair(node, fake);
    const peer = new FakePeer(lb, ends);
    lb.start((m) => peer.received.push(m));
    node.onLink(la);
    return peer;
  }

  send(m: SyncMessage): boolean { return this.link.send(m); }

  of<K extends SyncMessage['type']>(type: K): Array<Extract<SyncMessage, { type: K }>> {
    return this.received.filter((m): m is Extract<SyncMessage, { type: K }> => m.type === type);
  }
}

/** Reads a whole (small) file. */
export function readAll(file: string): Buffer {
  return fs.readFileSync(file);
}

/** The first offset where two buffers differ, or -1. */
export function firstDiff(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** A small deterministic PRNG (mulberry32), for data and sizes that must not depend on Math.random. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `length` pseudo-random bytes from `seed` (never all zero, so they cross the link as data). */
export function pattern(seed: number, length: number): Buffer {
  const r = prng(seed);
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i += 4) {
    const v = Math.floor(r() * 4294967296) >>> 0;
    if (i + 4 <= length) b.writeUInt32LE(v, i);
    else for (let j = i; j < length; j++) b[j] = (v >>> (8 * (j - i))) & 0xff;
  }
  if (length > 0) b[0] = (b[0] as number) | 1;
  return b;
}
