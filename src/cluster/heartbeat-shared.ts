// What the main thread and the heartbeat worker share: the worker's
// configuration, the messages between them, and a SharedArrayBuffer of times and
// counters. The buffer is read without a message round trip, so the daemon sees
// the newest peer and witness acknowledgements even when messages queue up
// behind a busy event loop, and the worker sees whether the main thread is alive.
// Messages carry changes only: peer up or down, links up or down, replies.
import type { LinkView, LivenessCounters } from './liveness';
import type { WitnessClientRequest, WitnessReply } from './witness-client';

export interface HostPort { readonly host: string; readonly port: number }
export interface HeartbeatLink { readonly listen: HostPort; readonly peer: HostPort }

export interface HeartbeatWitnessOptions {
  readonly address: HostPort;
  /** how long a witness GRANT keeps this node's lease (= the heartbeat timeout) */
  readonly leaseMs: number;
  /** an unanswered request counts as refused after this long */
  readonly timeoutMs: number;
}

/** workerData of the heartbeat worker (Buffers arrive as Uint8Arrays) */
export interface HeartbeatWorkerData {
  readonly clusterId: Uint8Array;
  readonly secret: Uint8Array;
  readonly selfName: string;
  readonly peerName: string;
  readonly incarnation: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly mainStallMs: number;
  readonly sentSeqsMax: number;
  readonly links: readonly HeartbeatLink[];
  readonly witness: HeartbeatWitnessOptions | null;
  readonly shared: SharedArrayBuffer;
}

export type HeartbeatCounters = LivenessCounters & {
  /** datagrams the kernel would not send (no route, link down) */
  readonly sendErrors: number;
  /** intervals in which nothing was sent because the main thread had not stamped its liveness for mainStallMs */
  readonly stalledTicks: number;
};

export interface LinksState {
  readonly up: number;
  readonly total: number;
  readonly links: readonly LinkView[];
}

export type WorkerToMain =
  | { readonly type: 'ready' }
  /** the worker could not start (a socket would not bind); it exits */
  | { readonly type: 'failed'; readonly code: string; readonly message: string }
  | { readonly type: 'peer-up'; readonly now: number; readonly incarnation: number }
  | { readonly type: 'peer-down'; readonly now: number; readonly lastHeardAt: number }
  | ({ readonly type: 'links'; readonly now: number } & LinksState)
  | { readonly type: 'witness-reply'; readonly id: number; readonly reply: WitnessReply }
  /** the witness client refused the request itself (a bad subject) */
  | { readonly type: 'witness-error'; readonly id: number; readonly code: string; readonly message: string };

export type MainToWorker =
  | { readonly type: 'renewing'; readonly on: boolean }
  | { readonly type: 'maintenance'; readonly on: boolean }
  /** one witness client per node: request ids must grow across all of a sender's requests */
  | { readonly type: 'witness-request'; readonly id: number; readonly request: WitnessClientRequest; readonly subject?: string }
  /** closes the sockets and stops the timers: the worker then exits by itself */
  | { readonly type: 'close' };

export const HEARTBEAT_COUNTERS = [
  'sent', 'accepted', 'malformed', 'otherCluster', 'badMac', 'unknownNode', 'wrongLink', 'replayed', 'sendErrors', 'stalledTicks',
] as const satisfies ReadonlyArray<keyof HeartbeatCounters>;

// The layout: two Int32 sequence words (one per writing thread), then Float64
// slots. ECMAScript does not promise that a plain Float64 access is tear-free,
// so each thread writes its slots inside a seqlock and readers retry a read
// that overlapped a write.
const LOCK_WORKER = 0;
const LOCK_MAIN = 1;
const LOCKS_BYTES = 8;
/** written by main: monotonicMs() of its last stampMain() */
const MAIN_STAMP = 0;
/** the worker's slots, NaN while unknown */
const PEER_ACK_SENT_AT = 1;
const LAST_HEARD_AT = 2;
const WITNESS_ACK_SENT_AT = 3;
const PEER_FLAGS = 4;
const COUNTERS = 5;
const SLOTS = COUNTERS + HEARTBEAT_COUNTERS.length;
export const SHARED_BYTES = LOCKS_BYTES + SLOTS * 8;
/** a reader stops waiting for a writer that died inside a write (a terminated worker) */
const READ_TRIES = 1000;

export interface WorkerState {
  readonly peerAckSentAt: number;
  readonly lastHeardAt: number;
  readonly witnessAckSentAt: number;
  readonly peerFlags: number;
  readonly counters: HeartbeatCounters;
}

export class SharedState {
  private readonly locks: Int32Array;
  private readonly slots: Float64Array;

  constructor(readonly buffer: SharedArrayBuffer) {
    if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < SHARED_BYTES) {
      throw new TypeError(`the shared state must be a SharedArrayBuffer of ${SHARED_BYTES} bytes`);
    }
    this.locks = new Int32Array(buffer, 0, 2);
    this.slots = new Float64Array(buffer, LOCKS_BYTES, SLOTS);
  }

  /** a new buffer: times NaN, counters 0, main stamped at `now` */
  static create(now: number): SharedState {
    const s = new SharedState(new SharedArrayBuffer(SHARED_BYTES));
    s.slots.fill(NaN, 0, COUNTERS);
    s.slots.fill(0, COUNTERS);
    s.stampMain(now);
    return s;
  }

  stampMain(now: number): void {
    this.write(LOCK_MAIN, () => { this.slots[MAIN_STAMP] = now; });
  }

  mainStamp(): number {
    return this.read(LOCK_MAIN, () => this.slots[MAIN_STAMP] as number);
  }

  writeWorker(w: WorkerState): void {
    this.write(LOCK_WORKER, () => {
      const s = this.slots;
      s[PEER_ACK_SENT_AT] = w.peerAckSentAt;
      s[LAST_HEARD_AT] = w.lastHeardAt;
      s[WITNESS_ACK_SENT_AT] = w.witnessAckSentAt;
      s[PEER_FLAGS] = w.peerFlags;
      HEARTBEAT_COUNTERS.forEach((k, i) => { s[COUNTERS + i] = w.counters[k]; });
    });
  }

  readWorker(): WorkerState {
    return this.read(LOCK_WORKER, () => {
      const s = this.slots;
      const counters = Object.fromEntries(HEARTBEAT_COUNTERS.map((k, i) => [k, s[COUNTERS + i] as number])) as HeartbeatCounters;
      return {
        peerAckSentAt: s[PEER_ACK_SENT_AT] as number,
        lastHeardAt: s[LAST_HEARD_AT] as number,
        witnessAckSentAt: s[WITNESS_ACK_SENT_AT] as number,
        peerFlags: s[PEER_FLAGS] as number,
        counters,
      };
    });
  }

  /** Only what a lease needs: cheap enough for the write path (no counters copied). */
  readAcks(): { peerAckSentAt: number; witnessAckSentAt: number } {
    return this.read(LOCK_WORKER, () => ({ peerAckSentAt: this.slots[PEER_ACK_SENT_AT] as number, witnessAckSentAt: this.slots[WITNESS_ACK_SENT_AT] as number }));
  }

  private write(lock: number, f: () => void): void {
    Atomics.add(this.locks, lock, 1);
    f();
    Atomics.add(this.locks, lock, 1);
  }

  private read<T>(lock: number, f: () => T): T {
    let v = f();
    for (let i = 0; i < READ_TRIES; i++) {
      const before = Atomics.load(this.locks, lock);
      v = f();
      if ((before & 1) === 0 && Atomics.load(this.locks, lock) === before) return v;
    }
    return v;
  }
}
