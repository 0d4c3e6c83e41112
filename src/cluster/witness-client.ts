// A node's side of the witness protocol: sends requests on a socket the caller
// owns and matches the replies the caller feeds back in. Every request settles
// exactly once: with the witness's reply, or as a refusal without one.
import type { Socket } from 'node:dgram';
import {
  WITNESS_NAME, decodeWitnessReply, encodeWitnessRequest, singleClusterKey, witnessKey,
  type WitnessClearKind, type WitnessDropReason, type WitnessKeyLookup, type WitnessRequestType,
} from '../protocol/witness/codec';
import { WitnessProtocolError } from '../protocol/witness/errors';
import { witnessLimits } from '../protocol/witness/limits';
import { monotonicMs } from '../util/clock';

export interface WitnessReply {
  readonly granted: boolean;
  /**
   * The witness's reason ('ok', 'fenced', 'peer-alone', 'peer-alive',
   * 'stale-request', 'bad-request'), or, without a reply: 'timeout' (also for
   * requests given up by close() or by the pending limit), 'send-failed', 'closed'.
   */
  readonly reason: string;
  /** the witness's term for the cluster; 0 without a reply */
  readonly term: number;
  /** monotonicMs() when the request was sent */
  readonly sentAt: number;
}

export interface WitnessClientOptions {
  readonly clusterId: Buffer;
  readonly secret: Buffer;
  readonly nodeName: string;
  /** the process start in ms since the epoch: request ids start at incarnation × 1000 */
  readonly incarnation: number;
  readonly leaseMs: number;
  /** where the witness listens; replies count only from exactly this address (numeric host) */
  readonly address: { readonly host: string; readonly port: number };
  readonly timeoutMs: number;
  /** bound, owned by the caller */
  readonly socket: Socket;
}

export type WitnessClientRequest = 'renew' | 'claim' | 'alone' | 'clear-alone' | 'clear-fenced' | 'query';

/** Datagrams handle() did not take, by why. */
export interface WitnessClientDrops {
  readonly notFromWitness: number;
  readonly malformed: number;
  readonly unknownCluster: number;
  readonly badMac: number;
  /** valid, but for no pending request: late, duplicated or replayed */
  readonly unexpected: number;
}

interface Pending {
  readonly sentAt: number;
  readonly resolve: (r: WitnessReply) => void;
  timer: NodeJS.Timeout | undefined;
}

const WIRE: Record<WitnessClientRequest, { type: WitnessRequestType; clear: WitnessClearKind | null }> = {
  renew: { type: 'renew', clear: null },
  claim: { type: 'claim', clear: null },
  alone: { type: 'alone', clear: null },
  'clear-alone': { type: 'clear', clear: 'alone' },
  'clear-fenced': { type: 'clear', clear: 'fenced' },
  query: { type: 'query', clear: null },
};

/** IPv4 addresses may arrive IPv4-mapped on a dual-stack socket. */
function plainAddress(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

function argument(why: string): WitnessProtocolError {
  return new WitnessProtocolError('ERR_WITNESS_ARGUMENT', why);
}

export class WitnessClient {
  private readonly o: WitnessClientOptions;
  private readonly clusterId: Buffer;
  private readonly key: Buffer;
  private readonly keyFor: WitnessKeyLookup;
  private nextId: bigint;
  /** in send order, which Map keeps: the first entry is the oldest */
  private readonly pending = new Map<bigint, Pending>();
  private closed = false;
  private readonly drops = { notFromWitness: 0, malformed: 0, unknownCluster: 0, badMac: 0, unexpected: 0 };

  /** Throws ERR_WITNESS_ARGUMENT for options the protocol cannot carry. */
  constructor(o: WitnessClientOptions) {
    if (!WITNESS_NAME.test(o.nodeName)) throw argument(`node name ${JSON.stringify(o.nodeName)} is not a name`);
    if (!Number.isSafeInteger(o.incarnation) || o.incarnation < 0) throw argument(`incarnation ${o.incarnation} is not a non-negative integer`);
    if (!Number.isInteger(o.leaseMs) || o.leaseMs < 1 || o.leaseMs > witnessLimits.leaseMsMax) {
      throw argument(`leaseMs ${o.leaseMs} is not in [1, ${witnessLimits.leaseMsMax}]`);
    }
    if (!Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0) throw argument(`timeoutMs ${o.timeoutMs} must be positive`);
    this.o = o;
    this.clusterId = Buffer.from(o.clusterId);
    this.key = witnessKey(o.secret, this.clusterId);
    this.keyFor = singleClusterKey(this.clusterId, this.key);
    this.nextId = BigInt(o.incarnation) * 1000n;
  }

  /** requests sent and not settled yet */
  get pendingCount(): number { return this.pending.size; }

  get dropped(): WitnessClientDrops { return { ...this.drops }; }

  /**
   * Sends one request. `subject`: for claim, the node to fence (required);
   * for clear-alone and clear-fenced, whose flag (this node by default).
   * Rejects only for a subject that is no node name or a claim without one.
   */
  request(type: WitnessClientRequest, subject?: string): Promise<WitnessReply> {
    const wire = WIRE[type];
    if (wire === undefined) return Promise.reject(argument(`unknown witness request ${String(type)}`));
    const about = wire.type === 'claim' ? subject : wire.type === 'clear' ? subject ?? this.o.nodeName : undefined;
    if (wire.type === 'claim' && subject === undefined) return Promise.reject(argument('a claim needs the node to fence'));
    if (about !== undefined && !WITNESS_NAME.test(about)) return Promise.reject(argument(`subject ${JSON.stringify(about)} is not a name`));
    const sentAt = monotonicMs();
    if (this.closed) return Promise.resolve({ granted: false, reason: 'closed', term: 0, sentAt });
    const requestId = this.nextId;
    this.nextId += 1n;
    const datagram = encodeWitnessRequest({
      type: wire.type,
      clusterId: this.clusterId,
      requestId,
      leaseMs: wire.type === 'renew' || wire.type === 'claim' || wire.type === 'alone' ? this.o.leaseMs : 0,
      sender: this.o.nodeName,
      subject: about ?? '',
      clear: wire.clear,
    }, this.key);
    // the newest request is worth most (a lease runs from its send time), so the oldest gives way
    if (this.pending.size >= witnessLimits.clientPendingMax) {
      const oldest = this.pending.keys().next().value;
      if (oldest !== undefined) this.settle(oldest, 'timeout');
    }
    const promise = new Promise<WitnessReply>((resolve) => {
      this.pending.set(requestId, { sentAt, resolve, timer: undefined });
    });
    const p = this.pending.get(requestId) as Pending;
    p.timer = setTimeout(() => this.settle(requestId, 'timeout'), this.o.timeoutMs);
    try {
      this.o.socket.send(datagram, this.o.address.port, this.o.address.host, (err) => {
        if (err) this.settle(requestId, 'send-failed');
      });
    } catch {
      this.settle(requestId, 'send-failed');
    }
    return promise;
  }

  /** Takes one datagram from the caller's socket; true if it answered one of this client's pending requests. */
  handle(datagram: Buffer, from: { address: string; port: number }): boolean {
    if (plainAddress(from.address) !== plainAddress(this.o.address.host) || from.port !== this.o.address.port) {
      this.drops.notFromWitness += 1;
      return false;
    }
    const d = decodeWitnessReply(datagram, this.keyFor);
    if (!d.ok) {
      this.count(d.reason);
      return false;
    }
    const p = this.pending.get(d.message.requestId);
    if (p === undefined) {
      this.drops.unexpected += 1;
      return false;
    }
    this.pending.delete(d.message.requestId);
    clearTimeout(p.timer);
    p.resolve({ granted: d.message.granted, reason: d.message.reason, term: d.message.term, sentAt: p.sentAt });
    return true;
  }

  /** Settles every pending request as a timeout; later requests resolve as 'closed'. */
  close(): void {
    this.closed = true;
    for (const id of [...this.pending.keys()]) this.settle(id, 'timeout');
  }

  private count(reason: WitnessDropReason): void {
    this.drops[reason] += 1;
  }

  private settle(id: bigint, reason: string): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve({ granted: false, reason, term: 0, sentAt: p.sentAt });
  }
}
