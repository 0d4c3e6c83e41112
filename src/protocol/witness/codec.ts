// Requests and replies of the witness protocol (docs/cluster.md, "Witness
// protocol"): one UDP datagram each, big-endian, ending in a truncated
// HMAC-SHA256 under a key derived from the cluster's secret.
//
//   0 u32 magic "TNWT"   4 u8 version (1)   5 u8 type   6 u8 reason   7 u8 clear kind
//   8 cluster id (16)    24 u64 request id  32 u64 term  40 u32 lease ms
//   44 u8 n, sender (n)  45+n u8 m, subject (m)          46+n+m MAC (16)
//
// Every field has exactly one valid encoding for its type, so decode(encode(m))
// is m and a datagram that decodes re-encodes to the same bytes.
// The MAC needs HMAC and HKDF: node:crypto is pure computation, no I/O.
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { WitnessProtocolError } from './errors';
import { witnessLimits, type WitnessLimits } from './limits';

/** "TNWT": the first four bytes of every datagram */
export const WITNESS_MAGIC = 0x544e5754;
export const WITNESS_VERSION = 1;
/** the domain label of the MAC key */
export const WITNESS_KEY_INFO = 'tandem-witness-v1';

/** Type codes on the wire. */
export const WitnessType = { RENEW: 1, CLAIM: 2, ALONE: 3, CLEAR: 4, QUERY: 5, GRANT: 129, REFUSE: 130 } as const;

export type WitnessRequestType = 'renew' | 'claim' | 'alone' | 'clear' | 'query';
export type WitnessReason = 'ok' | 'fenced' | 'peer-alone' | 'peer-alive' | 'stale-request' | 'bad-request';
export type WitnessClearKind = 'alone' | 'fenced';
/** Why a datagram was dropped without a reply, in the order they are checked. */
export type WitnessDropReason = 'malformed' | 'unknownCluster' | 'badMac';

const REQUEST_TYPES: readonly WitnessRequestType[] = ['renew', 'claim', 'alone', 'clear', 'query'];
/** reason codes 0..5 on the wire, in this order */
const REASONS: readonly WitnessReason[] = ['ok', 'fenced', 'peer-alone', 'peer-alive', 'stale-request', 'bad-request'];
/** clear kinds 1..2 on the wire, in this order */
const CLEAR_KINDS: readonly WitnessClearKind[] = ['alone', 'fenced'];

export const WITNESS_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const U64_MAX = 0xffffffffffffffffn;

export interface WitnessRequestMessage {
  readonly type: WitnessRequestType;
  readonly clusterId: Buffer;
  /** strictly increasing per sender */
  readonly requestId: bigint;
  /** renew, claim, alone: the sender's lease, 1..leaseMsMax; 0 for clear and query */
  readonly leaseMs: number;
  readonly sender: string;
  /** claim: the node to fence; clear: whose flag; '' for the others */
  readonly subject: string;
  /** clear: which flag; null for the others */
  readonly clear: WitnessClearKind | null;
}

export interface WitnessReplyMessage {
  readonly granted: boolean;
  /** 'ok' exactly when granted */
  readonly reason: WitnessReason;
  readonly clusterId: Buffer;
  /** the id of the request this answers */
  readonly requestId: bigint;
  /** the cluster's current term at the witness */
  readonly term: number;
  /** the witness's name */
  readonly sender: string;
}

export type WitnessDecoded<M> =
  | { readonly ok: true; readonly message: M }
  | { readonly ok: false; readonly reason: WitnessDropReason; readonly detail: string };

/** The MAC key of a cluster id, or undefined when the reader does not serve that cluster. */
export type WitnessKeyLookup = (clusterId: Buffer) => Buffer | undefined;

function argument(why: string): WitnessProtocolError {
  return new WitnessProtocolError('ERR_WITNESS_ARGUMENT', why);
}

/** key = HKDF-SHA256(secret, salt = cluster id, info = "tandem-witness-v1", 32 bytes). Throws ERR_WITNESS_ARGUMENT. */
export function witnessKey(secret: Buffer, clusterId: Buffer, limits: WitnessLimits = witnessLimits): Buffer {
  if (!Buffer.isBuffer(secret) || secret.length < limits.secretBytesMin || secret.length > limits.secretBytesMax) {
    throw argument(`the cluster secret must be ${limits.secretBytesMin} to ${limits.secretBytesMax} bytes`);
  }
  checkClusterId(clusterId, limits);
  return Buffer.from(hkdfSync('sha256', secret, clusterId, WITNESS_KEY_INFO, limits.keyBytes));
}

/** The first macBytes of HMAC-SHA256(key, bytes). */
export function witnessMac(key: Buffer, bytes: Buffer, limits: WitnessLimits = witnessLimits): Buffer {
  return createHmac('sha256', key).update(bytes).digest().subarray(0, limits.macBytes);
}

/** A key lookup for a node, which belongs to exactly one cluster. */
export function singleClusterKey(clusterId: Buffer, key: Buffer): WitnessKeyLookup {
  const id = Buffer.from(clusterId);
  return (other) => (other.equals(id) ? key : undefined);
}

function checkClusterId(id: Buffer, limits: WitnessLimits): void {
  if (!Buffer.isBuffer(id) || id.length !== limits.clusterIdBytes) throw argument(`a cluster id is ${limits.clusterIdBytes} bytes`);
}

function checkKey(key: Buffer, limits: WitnessLimits): void {
  if (!Buffer.isBuffer(key) || key.length !== limits.keyBytes) throw argument(`a witness key is ${limits.keyBytes} bytes`);
}

function checkName(name: string, what: string): void {
  if (typeof name !== 'string' || !WITNESS_NAME.test(name)) throw argument(`${what} ${JSON.stringify(name)} is not a node name`);
}

function checkU64(v: bigint, what: string): void {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw argument(`${what} ${String(v)} is not a u64`);
}

/** Why a request's fields do not fit its type, or undefined: shared by encoder and decoder so both accept exactly the same set. */
function requestShapeReason(m: WitnessRequestMessage, limits: WitnessLimits): string | undefined {
  const leased = m.type === 'renew' || m.type === 'claim' || m.type === 'alone';
  if (leased && (!Number.isInteger(m.leaseMs) || m.leaseMs < 1 || m.leaseMs > limits.leaseMsMax)) {
    return `${m.type}: lease ${m.leaseMs} ms is not in [1, ${limits.leaseMsMax}]`;
  }
  if (!leased && m.leaseMs !== 0) return `${m.type}: carries a lease (${m.leaseMs} ms)`;
  const subjected = m.type === 'claim' || m.type === 'clear';
  if (subjected && m.subject === '') return `${m.type}: needs a subject`;
  if (!subjected && m.subject !== '') return `${m.type}: carries a subject`;
  if (m.type === 'clear' && m.clear === null) return 'clear: needs a clear kind';
  if (m.type !== 'clear' && m.clear !== null) return `${m.type}: carries a clear kind`;
  return undefined;
}

interface Fields {
  readonly type: number;
  readonly reason: number;
  readonly clear: number;
  readonly clusterId: Buffer;
  readonly requestId: bigint;
  readonly term: number;
  readonly leaseMs: number;
  readonly sender: string;
  readonly subject: string;
}

function encodeFields(f: Fields, key: Buffer, limits: WitnessLimits): Buffer {
  const n = f.sender.length;
  const m = f.subject.length;
  const b = Buffer.alloc(limits.headerBytes + 2 + n + m + limits.macBytes);
  b.writeUInt32BE(WITNESS_MAGIC, 0);
  b.writeUInt8(WITNESS_VERSION, 4);
  b.writeUInt8(f.type, 5);
  b.writeUInt8(f.reason, 6);
  b.writeUInt8(f.clear, 7);
  f.clusterId.copy(b, 8);
  b.writeBigUInt64BE(f.requestId, 24);
  b.writeBigUInt64BE(BigInt(f.term), 32);
  b.writeUInt32BE(f.leaseMs, 40);
  b.writeUInt8(n, 44);
  b.write(f.sender, 45, 'ascii');
  b.writeUInt8(m, 45 + n);
  b.write(f.subject, 46 + n, 'ascii');
  const end = 46 + n + m;
  witnessMac(key, b.subarray(0, end), limits).copy(b, end);
  return b;
}

/** One request datagram, MAC'd under key (witnessKey). Throws ERR_WITNESS_ARGUMENT. */
export function encodeWitnessRequest(m: WitnessRequestMessage, key: Buffer, limits: WitnessLimits = witnessLimits): Buffer {
  const type = REQUEST_TYPES.indexOf(m.type);
  if (type < 0) throw argument(`unknown request type ${String(m.type)}`);
  checkKey(key, limits);
  checkClusterId(m.clusterId, limits);
  checkU64(m.requestId, 'request id');
  checkName(m.sender, 'sender');
  if (m.subject !== '') checkName(m.subject, 'subject');
  if (m.clear !== null && !CLEAR_KINDS.includes(m.clear)) throw argument(`unknown clear kind ${String(m.clear)}`);
  const reason = requestShapeReason(m, limits);
  if (reason !== undefined) throw argument(reason);
  return encodeFields({
    type: type + 1, reason: 0, clear: m.clear === null ? 0 : CLEAR_KINDS.indexOf(m.clear) + 1,
    clusterId: m.clusterId, requestId: m.requestId, term: 0, leaseMs: m.leaseMs, sender: m.sender, subject: m.subject,
  }, key, limits);
}

/** One reply datagram, MAC'd under key. Throws ERR_WITNESS_ARGUMENT. */
export function encodeWitnessReply(m: WitnessReplyMessage, key: Buffer, limits: WitnessLimits = witnessLimits): Buffer {
  const reason = REASONS.indexOf(m.reason);
  if (reason < 0) throw argument(`unknown reason ${String(m.reason)}`);
  if (m.granted !== (reason === 0)) throw argument(`a ${m.granted ? 'grant' : 'refusal'} with reason ${m.reason}`);
  checkKey(key, limits);
  checkClusterId(m.clusterId, limits);
  checkU64(m.requestId, 'request id');
  if (!Number.isSafeInteger(m.term) || m.term < 0) throw argument(`term ${m.term} is not a non-negative safe integer`);
  checkName(m.sender, 'sender');
  return encodeFields({
    type: m.granted ? WitnessType.GRANT : WitnessType.REFUSE, reason, clear: 0,
    clusterId: m.clusterId, requestId: m.requestId, term: m.term, leaseMs: 0, sender: m.sender, subject: '',
  }, key, limits);
}

type Parsed = { readonly ok: true; readonly fields: Fields; readonly end: number } | { readonly ok: false; readonly detail: string };

const malformed = (detail: string): { ok: false; detail: string } => ({ ok: false, detail });

/** The structure every datagram shares: sizes, magic, version, names, exact length. */
function parse(b: Buffer, limits: WitnessLimits): Parsed {
  if (b.length < limits.datagramBytesMin || b.length > limits.datagramBytesMax) {
    return malformed(`${b.length} bytes, not ${limits.datagramBytesMin} to ${limits.datagramBytesMax}`);
  }
  const magic = b.readUInt32BE(0);
  if (magic !== WITNESS_MAGIC) return malformed(`magic 0x${magic.toString(16)}`);
  const version = b.readUInt8(4);
  if (version !== WITNESS_VERSION) return malformed(`version ${version}`);
  const n = b.readUInt8(44);
  if (n < 1 || n > limits.nameBytesMax) return malformed(`sender name of ${n} bytes`);
  // the subject's length byte and the MAC must fit after the sender
  if (45 + n + 1 + limits.macBytes > b.length) return malformed('cut short in the sender name');
  const m = b.readUInt8(45 + n);
  if (m > limits.nameBytesMax) return malformed(`subject name of ${m} bytes`);
  const end = 46 + n + m;
  if (end + limits.macBytes !== b.length) return malformed(`${b.length} bytes, the fields say ${end + limits.macBytes}`);
  const sender = b.toString('latin1', 45, 45 + n);
  if (!WITNESS_NAME.test(sender)) return malformed('the sender is not a node name');
  const subject = b.toString('latin1', 46 + n, end);
  if (m > 0 && !WITNESS_NAME.test(subject)) return malformed('the subject is not a node name');
  const term = b.readBigUInt64BE(32);
  if (term > BigInt(Number.MAX_SAFE_INTEGER)) return malformed(`term ${term} is beyond 2^53`);
  return {
    ok: true,
    end,
    fields: {
      type: b.readUInt8(5), reason: b.readUInt8(6), clear: b.readUInt8(7),
      clusterId: Buffer.from(b.subarray(8, 24)), requestId: b.readBigUInt64BE(24), term: Number(term),
      leaseMs: b.readUInt32BE(40), sender, subject,
    },
  };
}

/** The cluster and MAC checks, after the structure passed. */
function authenticate<M>(b: Buffer, end: number, clusterId: Buffer, keyFor: WitnessKeyLookup, message: M, limits: WitnessLimits): WitnessDecoded<M> {
  const key = keyFor(clusterId);
  if (key === undefined) return { ok: false, reason: 'unknownCluster', detail: `cluster ${clusterId.toString('hex')}` };
  const expected = witnessMac(key, b.subarray(0, end), limits);
  if (!timingSafeEqual(expected, b.subarray(end))) return { ok: false, reason: 'badMac', detail: `cluster ${clusterId.toString('hex')}` };
  return { ok: true, message };
}

/**
 * A request as the witness receives it. Checks, in order: structure and the
 * fields of a request (`malformed`: replies are malformed here too, so two
 * witnesses never answer each other), the cluster id (`unknownCluster`:
 * keyFor has no key for it), the MAC (`badMac`). Never throws.
 */
export function decodeWitnessRequest(b: Buffer, keyFor: WitnessKeyLookup, limits: WitnessLimits = witnessLimits): WitnessDecoded<WitnessRequestMessage> {
  const p = parse(b, limits);
  if (!p.ok) return { ok: false, reason: 'malformed', detail: p.detail };
  const f = p.fields;
  const type = REQUEST_TYPES[f.type - 1];
  if (type === undefined) return { ok: false, reason: 'malformed', detail: `type ${f.type} is not a request` };
  if (f.reason !== 0) return { ok: false, reason: 'malformed', detail: `a request with reason ${f.reason}` };
  if (f.term !== 0) return { ok: false, reason: 'malformed', detail: `a request with term ${f.term}` };
  const clear = f.clear === 0 ? null : CLEAR_KINDS[f.clear - 1];
  if (clear === undefined) return { ok: false, reason: 'malformed', detail: `clear kind ${f.clear}` };
  const message: WitnessRequestMessage = {
    type, clusterId: f.clusterId, requestId: f.requestId, leaseMs: f.leaseMs, sender: f.sender, subject: f.subject, clear,
  };
  const shape = requestShapeReason(message, limits);
  if (shape !== undefined) return { ok: false, reason: 'malformed', detail: shape };
  return authenticate(b, p.end, f.clusterId, keyFor, message, limits);
}

/** A reply as a node receives it; the same checks in the same order as decodeWitnessRequest. Never throws. */
export function decodeWitnessReply(b: Buffer, keyFor: WitnessKeyLookup, limits: WitnessLimits = witnessLimits): WitnessDecoded<WitnessReplyMessage> {
  const p = parse(b, limits);
  if (!p.ok) return { ok: false, reason: 'malformed', detail: p.detail };
  const f = p.fields;
  if (f.type !== WitnessType.GRANT && f.type !== WitnessType.REFUSE) return { ok: false, reason: 'malformed', detail: `type ${f.type} is not a reply` };
  const granted = f.type === WitnessType.GRANT;
  const reason = REASONS[f.reason];
  if (reason === undefined || granted !== (f.reason === 0)) {
    return { ok: false, reason: 'malformed', detail: `${granted ? 'GRANT' : 'REFUSE'} with reason ${f.reason}` };
  }
  if (f.clear !== 0 || f.leaseMs !== 0 || f.subject !== '') return { ok: false, reason: 'malformed', detail: 'a reply with request fields' };
  const message: WitnessReplyMessage = { granted, reason, clusterId: f.clusterId, requestId: f.requestId, term: f.term, sender: f.sender };
  return authenticate(b, p.end, f.clusterId, keyFor, message, limits);
}
