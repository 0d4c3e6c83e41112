// The main thread's side of the heartbeats (docs/cluster.md, "Heartbeats"):
// starts the worker thread that sends and judges them, forwards what it
// reports, and reads the newest times and counters it shares. The daemon
// calls stampMain() from its ticker; a main thread that stops stamping for
// mainStallMs stops the heartbeats, so the peer fails this node over.
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { deriveHeartbeatKey } from '../protocol/heartbeat/codec';
import { monotonicMs } from '../util/clock';
import { CodedError } from '../util/coded-error';
import {
  SharedState, type HeartbeatCounters, type HeartbeatLink, type HeartbeatWorkerData, type HostPort, type LinksState, type MainToWorker,
  type WorkerToMain,
} from './heartbeat-shared';
import { livenessDefaults, livenessLimits, type LinkView } from './liveness';
import type { WitnessClientRequest, WitnessReply } from './witness-client';

export type { HeartbeatCounters, HeartbeatLink, HostPort, LinksState } from './heartbeat-shared';

export type HeartbeatErrorCode = 'ERR_HEARTBEAT_OPTIONS' | 'ERR_HEARTBEAT_START' | 'ERR_HEARTBEAT_WORKER' | 'ERR_HEARTBEAT_STATE';

export class HeartbeatRunError extends CodedError<HeartbeatErrorCode> {
  override readonly name = 'HeartbeatRunError';
}

export interface HeartbeatOptions {
  readonly clusterId: Buffer;
  readonly secret: Buffer;
  readonly selfName: string;
  readonly peerName: string;
  /** this process's start, ms since the epoch */
  readonly incarnation: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** 10 000 */
  readonly mainStallMs?: number;
  /** 256 */
  readonly sentSeqsMax?: number;
  /** IP literals only: the worker never resolves names */
  readonly links: readonly HeartbeatLink[];
  /** where the witness listens: the worker renews the lease there while setRenewing(true); null: no witness */
  readonly witness?: HostPort | null;
  /** a RENEW unanswered this long counts as refused (default: timeoutMs) */
  readonly witnessTimeoutMs?: number;
}

export interface HeartbeatSnapshot {
  readonly peer: 'up' | 'down';
  readonly peerIncarnation: number | null;
  /** local send time of the newest heartbeat the peer echoed; null: none yet */
  readonly peerAckSentAt: number | null;
  /** local send time of the newest RENEW the witness granted; null: none yet */
  readonly witnessAckSentAt: number | null;
  /** when a heartbeat was last accepted from the peer (monotonic ms); null: never */
  readonly lastHeardAt: number | null;
  /** HeartbeatFlags of the peer's newest accepted heartbeat; null: none yet */
  readonly peerFlags: number | null;
  readonly links: LinksState;
  readonly counters: HeartbeatCounters;
}

export interface HeartbeatEvents {
  /** the peer is up: first heard, heard again after peer-down, or restarted (a new incarnation) */
  'peer-up': [incarnation: number, now: number];
  /** no link has accepted a heartbeat for timeoutMs */
  'peer-down': [lastHeardAt: number, now: number];
  /** some link went up or down */
  links: [up: number, total: number, links: readonly LinkView[], now: number];
  /**
   * the worker died: this node no longer sends heartbeats. Like any 'error'
   * event, it throws when nobody listens, which ends a daemon that would
   * otherwise keep serving while its peer takes over.
   */
  error: [err: HeartbeatRunError];
}

export const heartbeatDefaults = { mainStallMs: 10_000 } as const;
const CLOSE_WAIT_MS = 2000;
const WORKER_FILE = path.join(__dirname, 'heartbeat-worker.js');
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function bad(why: string): never {
  throw new HeartbeatRunError('ERR_HEARTBEAT_OPTIONS', why);
}

function checkInt(v: unknown, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) bad(`${what} must be an integer from ${min} to ${max}, not ${String(v)}`);
  return v;
}

function checkAddress(a: HostPort | undefined, what: string, portMin: number): HostPort {
  if (a === undefined || typeof a.host !== 'string' || isIP(a.host) === 0) bad(`${what} must be an IP address, not ${JSON.stringify(a?.host)}`);
  checkInt(a.port, `${what} port`, portMin, 65535);
  return { host: a.host, port: a.port };
}

function workerData(o: HeartbeatOptions, shared: SharedState): HeartbeatWorkerData {
  try {
    deriveHeartbeatKey(o.secret, o.clusterId); // a bad secret or cluster id is refused here, not in the worker
  } catch (e) {
    bad((e as Error).message);
  }
  const intervalMs = checkInt(o.intervalMs, 'intervalMs', 1);
  const timeoutMs = checkInt(o.timeoutMs, 'timeoutMs', intervalMs);
  const mainStallMs = checkInt(o.mainStallMs ?? heartbeatDefaults.mainStallMs, 'mainStallMs', timeoutMs);
  const sentSeqsMax = checkInt(o.sentSeqsMax ?? livenessDefaults.sentSeqsMax, 'sentSeqsMax', 1, livenessLimits.sentSeqsMax);
  checkInt(o.incarnation, 'incarnation', 1);
  if (!Array.isArray(o.links) || o.links.length === 0 || o.links.length > livenessLimits.linksMax) {
    bad(`links must list 1 to ${livenessLimits.linksMax} links`);
  }
  const links = o.links.map((l, i) => ({
    listen: checkAddress(l.listen, `links[${i}].listen`, 0),
    peer: checkAddress(l.peer, `links[${i}].peer`, 1),
  }));
  const witness = o.witness === undefined || o.witness === null ? null : {
    address: checkAddress(o.witness, 'witness', 1),
    leaseMs: timeoutMs,
    timeoutMs: checkInt(o.witnessTimeoutMs ?? timeoutMs, 'witnessTimeoutMs', 1),
  };
  if (!isName(o.selfName) || !isName(o.peerName) || o.selfName === o.peerName) {
    bad(`selfName and peerName must be two different node names, not ${JSON.stringify(o.selfName)} and ${JSON.stringify(o.peerName)}`);
  }
  return {
    clusterId: o.clusterId, secret: o.secret, selfName: o.selfName, peerName: o.peerName, incarnation: o.incarnation,
    intervalMs, timeoutMs, mainStallMs, sentSeqsMax, links, witness, shared: shared.buffer,
  };
}

function isName(n: unknown): boolean {
  return typeof n === 'string' && NAME.test(n);
}

function orNull(v: number): number | null {
  return Number.isNaN(v) ? null : v;
}

export class Heartbeat extends EventEmitter<HeartbeatEvents> {
  private readonly shared: SharedState;
  private readonly data: HeartbeatWorkerData;
  private worker: Worker | undefined;
  private exited: Promise<void> | undefined;
  private closing = false;
  private renewing = false;
  private maintenance = false;
  private nextRequestId = 1;
  private readonly witnessWaiters = new Map<number, { resolve: (r: WitnessReply) => void; reject: (e: Error) => void }>();
  private peer: 'up' | 'down' = 'down';
  private peerIncarnation: number | null = null;
  private links: LinksState;

  /** Checks the options (HeartbeatRunError ERR_HEARTBEAT_OPTIONS); start() starts the worker. */
  constructor(options: HeartbeatOptions) {
    super();
    this.shared = SharedState.create(monotonicMs());
    this.data = workerData(options, this.shared);
    const total = this.data.links.length;
    this.links = { up: 0, total, links: this.data.links.map((_, index) => ({ index, up: false, lastHeardAt: null })) };
  }

  /** Resolves once every socket is bound; rejects (ERR_HEARTBEAT_START) if one is not. */
  start(): Promise<void> {
    if (this.worker !== undefined || this.closing) return Promise.reject(new HeartbeatRunError('ERR_HEARTBEAT_STATE', 'start() was already called'));
    this.shared.stampMain(monotonicMs());
    const w = new Worker(WORKER_FILE, { workerData: this.data });
    this.worker = w;
    this.exited = new Promise((resolve) => w.once('exit', () => resolve()));
    if (this.renewing) this.send({ type: 'renewing', on: true });
    if (this.maintenance) this.send({ type: 'maintenance', on: true });
    return new Promise((resolve, reject) => {
      let started = false;
      w.on('message', (m: WorkerToMain) => {
        if (m.type === 'ready') {
          started = true;
          resolve();
        } else if (m.type === 'failed') {
          reject(new HeartbeatRunError('ERR_HEARTBEAT_START', `heartbeat sockets: ${m.code}: ${m.message}`));
        } else {
          this.onWorker(m);
        }
      });
      // an uncaught exception in the worker comes as 'error' and then 'exit': one report is enough
      let reported = false;
      const fail = (err: HeartbeatRunError): void => {
        if (reported) return;
        reported = true;
        if (!started) reject(err);
        else if (!this.closing) this.emit('error', err);
      };
      w.on('error', (e) => fail(new HeartbeatRunError(started ? 'ERR_HEARTBEAT_WORKER' : 'ERR_HEARTBEAT_START', `the heartbeat worker failed: ${e.message}`)));
      w.on('exit', (code) => {
        this.settleWitnessWaiters();
        fail(new HeartbeatRunError(started ? 'ERR_HEARTBEAT_WORKER' : 'ERR_HEARTBEAT_START', `the heartbeat worker exited with code ${code}`));
      });
    });
  }

  private onWorker(m: WorkerToMain): void {
    if (this.closing) return;
    switch (m.type) {
      case 'witness-reply':
        this.witnessWaiters.get(m.id)?.resolve(m.reply);
        this.witnessWaiters.delete(m.id);
        return;
      case 'witness-error':
        this.witnessWaiters.get(m.id)?.reject(new CodedError(m.code, m.message));
        this.witnessWaiters.delete(m.id);
        return;
      case 'peer-up':
        this.peer = 'up';
        this.peerIncarnation = m.incarnation;
        this.emit('peer-up', m.incarnation, m.now);
        return;
      case 'peer-down':
        this.peer = 'down';
        this.emit('peer-down', m.lastHeardAt, m.now);
        return;
      case 'links':
        this.links = { up: m.up, total: m.total, links: m.links };
        this.emit('links', m.up, m.total, m.links, m.now);
        return;
      default:
        return;
    }
  }

  /** The main thread is alive: call it more often than mainStallMs (the daemon's ticker does). */
  stampMain(now = monotonicMs()): void {
    this.shared.stampMain(now);
  }

  /** While on, the worker sends a witness RENEW every intervalMs (and stops with the heartbeats when main stalls). */
  setRenewing(on: boolean): void {
    this.renewing = on;
    this.send({ type: 'renewing', on });
  }

  /**
   * Sends a witness request through the worker's client: the witness wants
   * each sender's request ids to grow, so a node has one client, and the
   * worker's RENEWs share it. Resolves as the client does (a timeout is a
   * refusal; 'closed' once close() was called); rejects for a bad subject or
   * when no witness is configured.
   */
  witnessRequest(request: WitnessClientRequest, subject?: string): Promise<WitnessReply> {
    if (this.data.witness === null) return Promise.reject(new HeartbeatRunError('ERR_HEARTBEAT_STATE', 'no witness is configured'));
    if (this.worker === undefined || this.closing) return Promise.resolve({ granted: false, reason: 'closed', term: 0, sentAt: monotonicMs() });
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      this.witnessWaiters.set(id, { resolve, reject });
      this.send(subject === undefined ? { type: 'witness-request', id, request } : { type: 'witness-request', id, request, subject });
    });
  }

  /** Sets the MAINTENANCE flag of the heartbeats this node sends. */
  setMaintenance(on: boolean): void {
    this.maintenance = on;
    this.send({ type: 'maintenance', on });
  }

  /** The newest times and counters (shared memory), with the peer and link states as last reported. */
  /** The send times of the newest heartbeat the peer echoed and RENEW the witness granted (null: none yet). */
  acks(): { peerAckSentAt: number | null; witnessAckSentAt: number | null } {
    const a = this.shared.readAcks();
    return { peerAckSentAt: orNull(a.peerAckSentAt), witnessAckSentAt: orNull(a.witnessAckSentAt) };
  }

  snapshot(): HeartbeatSnapshot {
    const w = this.shared.readWorker();
    return {
      peer: this.peer,
      peerIncarnation: this.peerIncarnation,
      peerAckSentAt: orNull(w.peerAckSentAt),
      witnessAckSentAt: orNull(w.witnessAckSentAt),
      lastHeardAt: orNull(w.lastHeardAt),
      peerFlags: orNull(w.peerFlags),
      links: this.links,
      counters: w.counters,
    };
  }

  /** Stops the worker and its sockets; resolves once the thread is gone. Safe to call more than once. */
  async close(): Promise<void> {
    this.closing = true;
    this.settleWitnessWaiters();
    const w = this.worker;
    if (w === undefined) return;
    this.send({ type: 'close' });
    let timer: NodeJS.Timeout | undefined;
    const gone = await Promise.race([
      this.exited?.then(() => true),
      new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), CLOSE_WAIT_MS); }),
    ]);
    clearTimeout(timer);
    // a worker that did not wind down by itself is stopped; terminate() closes its handles too
    if (gone !== true) await w.terminate();
  }

  private settleWitnessWaiters(): void {
    for (const w of this.witnessWaiters.values()) w.resolve({ granted: false, reason: 'closed', term: 0, sentAt: monotonicMs() });
    this.witnessWaiters.clear();
  }

  private send(m: MainToWorker): void {
    const w = this.worker;
    if (w === undefined || (this.closing && m.type !== 'close')) return;
    try {
      w.postMessage(m);
    } catch {
      // the worker is gone: close() and the 'exit' handler deal with it
    }
  }
}
