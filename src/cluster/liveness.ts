// Who is alive, as the heartbeats tell it (docs/cluster.md, "Heartbeats").
// Pure: no sockets, timers or clocks; every call brings `now` (monotonic ms).
// The transport decodes datagrams (protocol/heartbeat/codec.ts) and hands the
// ones that verified to accept(); it reports the others to count().
import type { Heartbeat, HeartbeatRefusal } from '../protocol/heartbeat/codec';
import { CodedError } from '../util/coded-error';

export type LivenessRefusal = 'unknownNode' | 'wrongLink' | 'replayed';
export type LivenessCounter = 'accepted' | 'sent' | HeartbeatRefusal | LivenessRefusal;
export type LivenessCounters = Readonly<Record<LivenessCounter, number>>;

export class LivenessError extends CodedError<'ERR_LIVENESS_ARGUMENT'> {
  override readonly name = 'LivenessError';
}

export interface LivenessOptions {
  readonly selfName: string;
  readonly peerName: string;
  /** this process's start, ms since the epoch */
  readonly incarnation: number;
  /** how many heartbeat links, numbered from 0 in the same order on both nodes */
  readonly links: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** how many recent seqs keep their send time for echoes (256) */
  readonly sentSeqsMax?: number;
}

/** What one heartbeat carries besides the cluster id and the flags the transport adds. */
export type HeartbeatBody = Pick<Heartbeat, 'incarnation' | 'seq' | 'echoIncarnation' | 'echoSeq' | 'linkIndex' | 'name'>;

export interface LinkView {
  readonly index: number;
  readonly up: boolean;
  readonly lastHeardAt: number | null;
}

export interface LivenessView {
  /** up while some link accepted a heartbeat less than timeoutMs ago */
  readonly peer: 'up' | 'down';
  readonly lastHeardAt: number | null;
  /** the newest incarnation accepted from the peer; null before the first heartbeat */
  readonly peerIncarnation: number | null;
  /** the flags of the newest heartbeat accepted from the peer (0 before the first) */
  readonly peerFlags: number;
  /** the send time of the newest of this node's heartbeats the peer echoed; null: none yet */
  readonly peerAckSentAt: number | null;
  readonly links: readonly LinkView[];
}

interface LinkState {
  lastHeardAt: number | null;
  /** the (incarnation, seq) of the last heartbeat accepted on this link: anything not above it is a replay */
  incarnation: number;
  seq: number;
}

export const livenessDefaults = { sentSeqsMax: 256 } as const;
export const livenessLimits = { linksMax: 256, sentSeqsMax: 1 << 20 } as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function fail(why: string): never {
  throw new LivenessError('ERR_LIVENESS_ARGUMENT', why);
}

function positiveInt(v: number, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(v) || v < 1 || v > max) fail(`${what} must be an integer from 1 to ${max}, not ${String(v)}`);
  return v;
}

export class Liveness {
  readonly selfName: string;
  readonly peerName: string;
  readonly incarnation: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly sentSeqsMax: number;
  private readonly links: LinkState[];
  /** seq of this node's last heartbeat; 0 before the first */
  private lastSentSeq = 0;
  /** ring of send times, indexed by seq % sentSeqsMax; sentSeqs says which seq each slot holds */
  private readonly sentAt: Float64Array;
  private readonly sentSeqs: Float64Array;
  private peerIncarnation: number | null = null;
  /** the highest seq accepted from the peer in peerIncarnation: what this node echoes */
  private peerSeq = 0;
  private peerFlags = 0;
  private lastHeardAt: number | null = null;
  private peerAckSentAt: number | null = null;
  private readonly counts: Record<LivenessCounter, number> = {
    accepted: 0, sent: 0, malformed: 0, otherCluster: 0, badMac: 0, unknownNode: 0, wrongLink: 0, replayed: 0,
  };

  constructor(o: LivenessOptions) {
    if (typeof o.selfName !== 'string' || !NAME.test(o.selfName)) fail(`selfName ${JSON.stringify(o.selfName)} is not a node name`);
    if (typeof o.peerName !== 'string' || !NAME.test(o.peerName)) fail(`peerName ${JSON.stringify(o.peerName)} is not a node name`);
    if (o.selfName === o.peerName) fail('selfName and peerName are the same');
    this.selfName = o.selfName;
    this.peerName = o.peerName;
    this.incarnation = positiveInt(o.incarnation, 'incarnation');
    this.intervalMs = positiveInt(o.intervalMs, 'intervalMs');
    this.timeoutMs = positiveInt(o.timeoutMs, 'timeoutMs');
    if (this.timeoutMs < this.intervalMs) fail(`timeoutMs (${this.timeoutMs}) is below intervalMs (${this.intervalMs})`);
    this.sentSeqsMax = positiveInt(o.sentSeqsMax ?? livenessDefaults.sentSeqsMax, 'sentSeqsMax', livenessLimits.sentSeqsMax);
    const links = positiveInt(o.links, 'links', livenessLimits.linksMax);
    this.links = Array.from({ length: links }, () => ({ lastHeardAt: null, incarnation: 0, seq: 0 }));
    this.sentAt = new Float64Array(this.sentSeqsMax);
    this.sentSeqs = new Float64Array(this.sentSeqsMax);
  }

  /** The next heartbeat to send on linkIndex: a new seq, whose send time (now) is remembered for its echo. */
  nextHeartbeat(now: number, linkIndex: number): HeartbeatBody {
    this.checkLink(linkIndex);
    if (this.lastSentSeq >= Number.MAX_SAFE_INTEGER) fail('heartbeat seqs are exhausted');
    const seq = ++this.lastSentSeq;
    const slot = seq % this.sentSeqsMax;
    this.sentAt[slot] = now;
    this.sentSeqs[slot] = seq;
    this.counts.sent++;
    return {
      incarnation: this.incarnation,
      seq,
      echoIncarnation: this.peerIncarnation ?? 0,
      echoSeq: this.peerIncarnation === null ? 0 : this.peerSeq,
      linkIndex,
      name: this.selfName,
    };
  }

  /**
   * Judges a heartbeat that arrived on linkIndex and passed the codec (cluster
   * id and MAC). Refused: another sender (`unknownNode`, which includes this
   * node's own heartbeats reflected back), a link index other than the one it
   * arrived on (`wrongLink`), and (incarnation, seq) not above the last
   * accepted on this link, or an incarnation older than the peer's newest
   * (`replayed`). A refused heartbeat changes nothing but a counter.
   */
  accept(now: number, linkIndex: number, h: Heartbeat): 'accepted' | LivenessRefusal {
    const link = this.checkLink(linkIndex);
    const refused = this.judge(link, linkIndex, h);
    if (refused !== undefined) {
      this.counts[refused]++;
      return refused;
    }
    this.counts.accepted++;
    link.incarnation = h.incarnation;
    link.seq = h.seq;
    link.lastHeardAt = now;
    this.lastHeardAt = now;
    if (this.peerIncarnation === null || h.incarnation > this.peerIncarnation) {
      // a new peer process: its seqs start again, and it has echoed nothing of ours yet
      this.peerIncarnation = h.incarnation;
      this.peerSeq = h.seq;
    } else if (h.seq > this.peerSeq) {
      this.peerSeq = h.seq;
    }
    this.peerFlags = h.flags;
    if (h.echoIncarnation === this.incarnation) {
      const sentAt = this.sentTimeOf(h.echoSeq);
      if (sentAt !== undefined && (this.peerAckSentAt === null || sentAt > this.peerAckSentAt)) this.peerAckSentAt = sentAt;
    }
    return 'accepted';
  }

  /** Counts a datagram the codec refused. */
  count(reason: HeartbeatRefusal): void {
    this.counts[reason]++;
  }

  get counters(): LivenessCounters {
    return { ...this.counts };
  }

  view(now: number): LivenessView {
    const links = this.links.map((l, index) => ({ index, up: this.isRecent(now, l.lastHeardAt), lastHeardAt: l.lastHeardAt }));
    return {
      peer: links.some((l) => l.up) ? 'up' : 'down',
      lastHeardAt: this.lastHeardAt,
      peerIncarnation: this.peerIncarnation,
      peerFlags: this.peerFlags,
      peerAckSentAt: this.peerAckSentAt,
      links,
    };
  }

  private isRecent(now: number, at: number | null): boolean {
    return at !== null && now - at < this.timeoutMs;
  }

  private judge(link: LinkState, linkIndex: number, h: Heartbeat): LivenessRefusal | undefined {
    if (h.name !== this.peerName) return 'unknownNode';
    if (h.linkIndex !== linkIndex) return 'wrongLink';
    if (h.incarnation < link.incarnation || (h.incarnation === link.incarnation && h.seq <= link.seq)) return 'replayed';
    // a late datagram of the peer's previous process, on a link that has not heard the new one yet
    if (this.peerIncarnation !== null && h.incarnation < this.peerIncarnation) return 'replayed';
    return undefined;
  }

  /**
   * The send time of this node's heartbeat numbered seq, while the ring still
   * holds it: seqs are consecutive, so a slot holds the newest seq of its
   * residue, and an older or a future seq finds another one there.
   */
  private sentTimeOf(seq: number): number | undefined {
    const slot = seq % this.sentSeqsMax;
    return seq >= 1 && this.sentSeqs[slot] === seq ? this.sentAt[slot] : undefined;
  }

  private checkLink(linkIndex: number): LinkState {
    const link = Number.isInteger(linkIndex) ? this.links[linkIndex] : undefined;
    if (link === undefined) fail(`link ${String(linkIndex)} is not one of the ${this.links.length} links`);
    return link;
  }
}
