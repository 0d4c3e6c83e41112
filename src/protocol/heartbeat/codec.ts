// The HEARTBEAT datagram (docs/cluster.md, "Heartbeats"): fixed big-endian
// fields, the sender's name, and a truncated HMAC-SHA256 under a key derived
// from the cluster secret. Decoding never throws on received bytes: a refused
// datagram is counted by reason and nothing in it is used.
//
//   0 u32 magic "TNHB"   4 u8 version (1)   5 u8 type (1)   6 u16 flags
//   8 cluster id (16)    24 u64 incarnation  32 u64 seq
//   40 u64 echo incarnation   48 u64 echo seq   56 u32 link index
//   60 u8 name length n   61 name (n)   61+n MAC (16)
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { CodedError } from '../../util/coded-error';

/** "TNHB" */
export const HEARTBEAT_MAGIC = 0x544e4842;
export const HEARTBEAT_VERSION = 1;
export const HEARTBEAT_TYPE = 1;
export const HEARTBEAT_KEY_INFO = 'tandem-heartbeat-v1';

export const HeartbeatFlags = {
  MAINTENANCE: 1 << 0,
  /** the sender's main thread has not stamped its liveness for a while (its worker still sends) */
  MAIN_STALLED: 1 << 1,
} as const;
const KNOWN_FLAGS = HeartbeatFlags.MAINTENANCE | HeartbeatFlags.MAIN_STALLED;

export const heartbeatLimits = {
  /** anything longer is dropped before it is read */
  datagramBytesMax: 160,
  nameBytesMin: 1,
  nameBytesMax: 63,
  /** the cluster secret, as the sync link accepts it */
  secretBytesMin: 16,
  secretBytesMax: 1024,
  linkIndexMax: 0xffffffff,

  // the wire format
  headerBytes: 61,
  clusterIdBytes: 16,
  keyBytes: 32,
  macBytes: 16,
} as const;

/** the shortest and the longest well-formed datagram */
export const HEARTBEAT_BYTES_MIN = heartbeatLimits.headerBytes + heartbeatLimits.nameBytesMin + heartbeatLimits.macBytes;
export const HEARTBEAT_BYTES_MAX = heartbeatLimits.headerBytes + heartbeatLimits.nameBytesMax + heartbeatLimits.macBytes;

/** node names (the config's rule): ASCII, so one character is one byte */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export type HeartbeatErrorCode = 'ERR_HEARTBEAT_ARGUMENT';

/** A caller passed a value the datagram cannot carry. Received bytes never throw: see decodeHeartbeat. */
export class HeartbeatError extends CodedError<HeartbeatErrorCode> {
  override readonly name = 'HeartbeatError';
}

/**
 * The fields of one HEARTBEAT. The u64 fields are numbers: incarnation is ms
 * since the epoch and seq counts datagrams, so both stay far below 2^53; the
 * codec refuses anything above Number.MAX_SAFE_INTEGER rather than round it.
 */
export interface Heartbeat {
  readonly flags: number;
  readonly clusterId: Buffer;
  /** the sender's process start, ms since the epoch: at least 1 */
  readonly incarnation: number;
  /** at least 1, per sender and incarnation */
  readonly seq: number;
  /** the receiver's incarnation as the sender last saw it; 0: none yet */
  readonly echoIncarnation: number;
  /** the highest seq the sender accepted from the receiver in echoIncarnation; 0 with it */
  readonly echoSeq: number;
  readonly linkIndex: number;
  readonly name: string;
}

export type HeartbeatRefusal = 'malformed' | 'otherCluster' | 'badMac';

export type HeartbeatDecoded =
  | { readonly ok: true; readonly heartbeat: Heartbeat }
  | { readonly ok: false; readonly reason: HeartbeatRefusal; readonly detail: string };

function argument(why: string): HeartbeatError {
  return new HeartbeatError('ERR_HEARTBEAT_ARGUMENT', why);
}

function checkClusterId(id: Buffer): Buffer {
  if (!Buffer.isBuffer(id) || id.length !== heartbeatLimits.clusterIdBytes) throw argument(`a cluster id is ${heartbeatLimits.clusterIdBytes} bytes`);
  return id;
}

function checkKey(key: Buffer): Buffer {
  if (!Buffer.isBuffer(key) || key.length !== heartbeatLimits.keyBytes) throw argument(`a heartbeat key is ${heartbeatLimits.keyBytes} bytes`);
  return key;
}

/** key = HKDF-SHA256(secret, salt = cluster id, info = "tandem-heartbeat-v1", 32 bytes) */
export function deriveHeartbeatKey(secret: Buffer, clusterId: Buffer): Buffer {
  const l = heartbeatLimits;
  if (!Buffer.isBuffer(secret) || secret.length < l.secretBytesMin || secret.length > l.secretBytesMax) {
    throw argument(`the cluster secret must be ${l.secretBytesMin} to ${l.secretBytesMax} bytes`);
  }
  return Buffer.from(hkdfSync('sha256', secret, checkClusterId(clusterId), HEARTBEAT_KEY_INFO, l.keyBytes));
}

/** The first macBytes of HMAC-SHA256(key, body). */
export function heartbeatMac(key: Buffer, body: Buffer): Buffer {
  return createHmac('sha256', checkKey(key)).update(body).digest().subarray(0, heartbeatLimits.macBytes);
}

function isName(s: unknown): s is string {
  return typeof s === 'string' && NAME.test(s);
}

function checkU64(v: number, what: string, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw argument(`${what} ${String(v)} is not an integer from ${min} to 2^53 - 1`);
}

/** One datagram, MAC included. Throws HeartbeatError for a field the format cannot carry. */
export function encodeHeartbeat(h: Heartbeat, key: Buffer): Buffer {
  const l = heartbeatLimits;
  checkKey(key);
  checkClusterId(h.clusterId);
  if (!Number.isInteger(h.flags) || h.flags < 0 || (h.flags & ~KNOWN_FLAGS) !== 0) throw argument(`flags ${String(h.flags)} has unknown bits`);
  checkU64(h.incarnation, 'incarnation', 1);
  checkU64(h.seq, 'seq', 1);
  checkU64(h.echoIncarnation, 'echo incarnation', 0);
  checkU64(h.echoSeq, 'echo seq', 0);
  if (h.echoIncarnation === 0 && h.echoSeq !== 0) throw argument('an echo seq needs an echo incarnation');
  if (!Number.isInteger(h.linkIndex) || h.linkIndex < 0 || h.linkIndex > l.linkIndexMax) throw argument(`link index ${String(h.linkIndex)} is not a u32`);
  if (!isName(h.name)) throw argument(`${JSON.stringify(h.name)} is not a node name`);
  const n = h.name.length;
  const b = Buffer.alloc(l.headerBytes + n + l.macBytes);
  b.writeUInt32BE(HEARTBEAT_MAGIC, 0);
  b.writeUInt8(HEARTBEAT_VERSION, 4);
  b.writeUInt8(HEARTBEAT_TYPE, 5);
  b.writeUInt16BE(h.flags, 6);
  h.clusterId.copy(b, 8);
  b.writeBigUInt64BE(BigInt(h.incarnation), 24);
  b.writeBigUInt64BE(BigInt(h.seq), 32);
  b.writeBigUInt64BE(BigInt(h.echoIncarnation), 40);
  b.writeBigUInt64BE(BigInt(h.echoSeq), 48);
  b.writeUInt32BE(h.linkIndex, 56);
  b.writeUInt8(n, 60);
  b.write(h.name, l.headerBytes, 'latin1');
  const end = l.headerBytes + n;
  heartbeatMac(key, b.subarray(0, end)).copy(b, end);
  return b;
}

function malformed(detail: string): HeartbeatDecoded {
  return { ok: false, reason: 'malformed', detail };
}

/** a u64 at `at` that fits a safe integer, or undefined */
function safeU64(b: Buffer, at: number): number | undefined {
  const v = b.readBigUInt64BE(at);
  return v > MAX_SAFE ? undefined : Number(v);
}

/**
 * Checks, in order: size and structure (`malformed`), the cluster id
 * (`otherCluster`), the MAC (`badMac`). Who sent it and whether it is new is
 * the receiver's business (cluster/liveness.ts).
 */
export function decodeHeartbeat(datagram: Buffer, clusterId: Buffer, key: Buffer): HeartbeatDecoded {
  const l = heartbeatLimits;
  checkClusterId(clusterId);
  checkKey(key);
  const b = datagram;
  if (b.length > l.datagramBytesMax) return malformed(`${b.length} bytes, above the maximum of ${l.datagramBytesMax}`);
  if (b.length < HEARTBEAT_BYTES_MIN) return malformed(`${b.length} bytes, below the minimum of ${HEARTBEAT_BYTES_MIN}`);
  const magic = b.readUInt32BE(0);
  if (magic !== HEARTBEAT_MAGIC) return malformed(`magic 0x${magic.toString(16)}`);
  if (b[4] !== HEARTBEAT_VERSION) return malformed(`version ${String(b[4])}`);
  if (b[5] !== HEARTBEAT_TYPE) return malformed(`type ${String(b[5])}`);
  const flags = b.readUInt16BE(6);
  if ((flags & ~KNOWN_FLAGS) !== 0) return malformed(`unknown flags 0x${flags.toString(16)}`);
  const n = b.readUInt8(60);
  if (n < l.nameBytesMin || n > l.nameBytesMax) return malformed(`name length ${n}`);
  if (b.length !== l.headerBytes + n + l.macBytes) return malformed(`${b.length} bytes for a name of ${n}`);
  const name = b.toString('latin1', l.headerBytes, l.headerBytes + n);
  if (!isName(name)) return malformed('the name is not a node name');
  const incarnation = safeU64(b, 24);
  const seq = safeU64(b, 32);
  const echoIncarnation = safeU64(b, 40);
  const echoSeq = safeU64(b, 48);
  if (incarnation === undefined || seq === undefined || echoIncarnation === undefined || echoSeq === undefined) {
    return malformed('a u64 field is above 2^53 - 1');
  }
  if (incarnation === 0 || seq === 0) return malformed('incarnation and seq start at 1');
  if (echoIncarnation === 0 && echoSeq !== 0) return malformed('an echo seq without an echo incarnation');
  const id = b.subarray(8, 8 + l.clusterIdBytes);
  if (!id.equals(clusterId)) return { ok: false, reason: 'otherCluster', detail: `cluster ${id.toString('hex')}` };
  const end = l.headerBytes + n;
  if (!timingSafeEqual(b.subarray(end), heartbeatMac(key, b.subarray(0, end)))) {
    return { ok: false, reason: 'badMac', detail: 'the MAC does not verify: another secret, or altered bytes' };
  }
  return {
    ok: true,
    heartbeat: {
      flags, clusterId: Buffer.from(id), incarnation, seq, echoIncarnation, echoSeq, linkIndex: b.readUInt32BE(56), name,
    },
  };
}
