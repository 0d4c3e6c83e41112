// The activity log's geometry and persisted form: a ring of fixed-size slots,
// each holding one self-contained transaction (sequence number, the full list
// of active extents, CRC-32C). Pure: storage/activity-log-file.ts writes the
// slots, and recover() reads them back after a crash.
//
// Full lists rather than deltas: even 1017 extents fit one 4 KiB slot, so the
// newest intact record alone says what was active. A torn or rotted record
// fails its checksum and recovery falls back to the record before it; with deltas a bad record would break the chain of every later one.
import { crc32c } from './crc32c';
import { CodedError } from '../util/coded-error';

export const activityLogDefaults = {
  extentBytes: 4 * 1024 * 1024,
  /**
   * 1017 × 4 MiB, about 4 GiB that may need resync after a crash of the primary: the most one
   * 4 KiB slot can list (a full list per record is what makes a torn record harmless, above).
   * DRBD's default al-extents is 1237 (4.8 GiB); with 257 (1 GiB), random writes over a few GiB
   * spent most of their time persisting log transactions
   */
  extentsMax: 1017,
  /** 8 × 4 KiB, the size of DRBD's on-disk activity log */
  journalSlots: 8,
} as const;

/** slot layout: header, extent indexes (u32 LE, ascending), zeros, CRC-32C of everything before it in the last 4 bytes */
const HEADER_BYTES = 24;
const CHECKSUM_BYTES = 4;
const MAGIC = 0x4c414454; // "TDAL" read as u32 LE
const VERSION = 1;

export const activityLogLimits = {
  /** one record per slot, one filesystem block: written whole or detectably torn */
  slotBytes: 4096,
  /** extents one record can list */
  recordExtentsMax: (4096 - HEADER_BYTES - CHECKSUM_BYTES) / 4,
  /** at least two, so a torn newest record leaves the one before it intact */
  journalSlotsMin: 2,
  journalSlotsMax: 1024,
  extentBytesMin: 4096,
  extentBytesMax: 1024 * 1024 * 1024,
  /** extent indexes are stored as u32 */
  extentCountMax: 2 ** 32,
} as const;

export type ActivityLogErrorCode =
  | 'ERR_AL_GEOMETRY' | 'ERR_AL_RANGE' | 'ERR_AL_NOT_IN_FLIGHT' | 'ERR_AL_TRANSACTION' | 'ERR_AL_JOURNAL_SIZE';

export class ActivityLogError extends CodedError<ActivityLogErrorCode> {
  override readonly name = 'ActivityLogError';
}

export interface ActivityLogGeometry {
  readonly volumeBytes: number;
  /** a power of two */
  readonly extentBytes: number;
  /** at most this many extents are active; a policy of the running log, not stored in the journal */
  readonly extentsMax: number;
  readonly journalSlots: number;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && n <= 2 ** 30 && (n & (n - 1)) === 0;
}

/** Fills in defaults and checks the geometry; throws ActivityLogError ERR_AL_GEOMETRY. */
export function activityLogGeometry(o: {
  readonly volumeBytes: number; readonly extentBytes?: number; readonly extentsMax?: number; readonly journalSlots?: number;
}): ActivityLogGeometry {
  const L = activityLogLimits;
  const g = {
    volumeBytes: o.volumeBytes,
    extentBytes: o.extentBytes ?? activityLogDefaults.extentBytes,
    extentsMax: o.extentsMax ?? activityLogDefaults.extentsMax,
    journalSlots: o.journalSlots ?? activityLogDefaults.journalSlots,
  };
  const bad = (why: string): never => { throw new ActivityLogError('ERR_AL_GEOMETRY', why); };
  if (!Number.isSafeInteger(g.volumeBytes) || g.volumeBytes <= 0) bad(`volume size ${g.volumeBytes} is not a positive integer`);
  if (!isPowerOfTwo(g.extentBytes) || g.extentBytes < L.extentBytesMin || g.extentBytes > L.extentBytesMax) {
    bad(`extent size ${g.extentBytes} is not a power of two between ${L.extentBytesMin} and ${L.extentBytesMax}`);
  }
  if (Math.ceil(g.volumeBytes / g.extentBytes) > L.extentCountMax) bad(`a ${g.volumeBytes}-byte volume has too many ${g.extentBytes}-byte extents`);
  if (!Number.isInteger(g.extentsMax) || g.extentsMax < 1 || g.extentsMax > L.recordExtentsMax) {
    bad(`extentsMax ${g.extentsMax} is not between 1 and ${L.recordExtentsMax}`);
  }
  if (!Number.isInteger(g.journalSlots) || g.journalSlots < L.journalSlotsMin || g.journalSlots > L.journalSlotsMax) {
    bad(`journalSlots ${g.journalSlots} is not between ${L.journalSlotsMin} and ${L.journalSlotsMax}`);
  }
  return g;
}

export function extentCount(g: ActivityLogGeometry): number {
  return Math.ceil(g.volumeBytes / g.extentBytes);
}

/** The bytes of the volume an extent covers (the last extent may be short). */
export function extentRange(g: ActivityLogGeometry, extent: number): { readonly offset: number; readonly length: number } {
  const offset = extent * g.extentBytes;
  return { offset, length: Math.min(g.extentBytes, g.volumeBytes - offset) };
}

export function journalBytes(g: ActivityLogGeometry): number {
  return g.journalSlots * activityLogLimits.slotBytes;
}

/** The record of one transaction: `extents` ascending, at most recordExtentsMax; it belongs in slot sequence mod journalSlots. */
export function encodeRecord(g: ActivityLogGeometry, sequence: number, extents: readonly number[]): Buffer {
  if (!Number.isSafeInteger(sequence) || sequence < 1) throw new ActivityLogError('ERR_AL_TRANSACTION', `sequence ${sequence} is not a positive integer`);
  if (extents.length > activityLogLimits.recordExtentsMax) {
    throw new ActivityLogError('ERR_AL_TRANSACTION', `${extents.length} extents do not fit in one record`);
  }
  const b = Buffer.alloc(activityLogLimits.slotBytes);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt16LE(VERSION, 4);
  b.writeUInt16LE(extents.length, 6);
  b.writeBigUInt64LE(BigInt(sequence), 8);
  b.writeUInt32LE(g.extentBytes, 16);
  extents.forEach((e, i) => b.writeUInt32LE(e, HEADER_BYTES + 4 * i));
  b.writeUInt32LE(crc32c(b, 0, b.length - CHECKSUM_BYTES), b.length - CHECKSUM_BYTES);
  return b;
}

export interface JournalRecord {
  readonly sequence: number;
  readonly extents: readonly number[];
}

/** One slot's record; 'blank' for a never-written (all-zero) slot, or the reason it is not a valid record. */
export function decodeRecord(g: ActivityLogGeometry, slotBytes: Uint8Array, slot: number): JournalRecord | 'blank' | string {
  const L = activityLogLimits;
  if (slotBytes.length !== L.slotBytes) return `slot is ${slotBytes.length} bytes, not ${L.slotBytes}`;
  if (slotBytes.every((x) => x === 0)) return 'blank';
  const b = Buffer.from(slotBytes.buffer, slotBytes.byteOffset, slotBytes.length);
  if (b.readUInt32LE(L.slotBytes - CHECKSUM_BYTES) !== crc32c(b, 0, L.slotBytes - CHECKSUM_BYTES)) return 'checksum mismatch (torn or damaged)';
  if (b.readUInt32LE(0) !== MAGIC) return 'not an activity log record';
  if (b.readUInt16LE(4) !== VERSION) return `unsupported record version ${b.readUInt16LE(4)}`;
  if (b.readUInt32LE(16) !== g.extentBytes) return `record is for ${b.readUInt32LE(16)}-byte extents, not ${g.extentBytes}`;
  const count = b.readUInt16LE(6);
  if (count > L.recordExtentsMax) return `record lists ${count} extents`;
  const big = b.readBigUInt64LE(8);
  if (big < 1n || big > BigInt(Number.MAX_SAFE_INTEGER)) return `sequence ${big} is out of range`;
  const sequence = Number(big);
  if (sequence % g.journalSlots !== slot) return `sequence ${sequence} does not belong in slot ${slot}`;
  const limit = extentCount(g);
  const extents: number[] = [];
  for (let i = 0; i < count; i++) {
    const e = b.readUInt32LE(HEADER_BYTES + 4 * i);
    if (e >= limit) return `extent ${e} is past the end of the volume`;
    if (i > 0 && e <= (extents[i - 1] as number)) return 'extents are not ascending';
    extents.push(e);
  }
  return { sequence, extents };
}

export interface RecoveredLog {
  /** the extents of the newest intact record, ascending: the only ones where writes may have been in flight */
  readonly extents: readonly number[];
  /** that record's sequence number, 0 if the journal holds none; the log resumes after it */
  readonly sequence: number;
  readonly slotsValid: number;
  readonly slotsBlank: number;
  /** slots that are neither blank nor valid: one is a torn last write; more means damage */
  readonly slotsDamaged: number;
}

/**
 * What the journal says was active when the log last persisted a transaction. Never throws on
 * damaged content; throws ActivityLogError ERR_AL_JOURNAL_SIZE if the bytes are not a whole journal.
 *
 * The record count is checked against the slot's capacity, not extentsMax, so a journal written
 * with a larger extentsMax is still read whole.
 */
export function recover(g: ActivityLogGeometry, journal: Uint8Array): RecoveredLog {
  const slotBytes = activityLogLimits.slotBytes;
  if (journal.length !== journalBytes(g)) {
    throw new ActivityLogError('ERR_AL_JOURNAL_SIZE', `journal is ${journal.length} bytes; ${g.journalSlots} slots need ${journalBytes(g)}`);
  }
  let newest: JournalRecord | undefined;
  let slotsValid = 0;
  let slotsBlank = 0;
  for (let slot = 0; slot < g.journalSlots; slot++) {
    const r = decodeRecord(g, journal.subarray(slot * slotBytes, (slot + 1) * slotBytes), slot);
    if (r === 'blank') slotsBlank++;
    else if (typeof r !== 'string') {
      slotsValid++;
      if (newest === undefined || r.sequence > newest.sequence) newest = r;
    }
  }
  return {
    extents: newest?.extents ?? [],
    sequence: newest?.sequence ?? 0,
    slotsValid,
    slotsBlank,
    slotsDamaged: g.journalSlots - slotsValid - slotsBlank,
  };
}
