// A volume's metadata: what it is (id, size, block size), which copy it is
// (generations, disk state). Pure: encode to text, decode with validation.

export const DISK_STATES = ['UpToDate', 'Outdated', 'Inconsistent', 'Diskless'] as const;
export type DiskState = (typeof DISK_STATES)[number];

/** 64-bit identifiers as 16 hex digits; "0000000000000000" means none */
export interface Generations {
  readonly current: string;
  readonly bitmap: string;
  readonly history: readonly [string, string];
}

export interface VolumeMetadata {
  readonly volumeId: string;
  readonly size: number;
  readonly blockSize: number;
  readonly backingKind: 'file' | 'device';
  readonly generations: Generations;
  readonly diskState: DiskState;
  /** bytes of client writes this copy acknowledged while apart from its peer (generations.ts SyncSide.dirtyBytes) */
  readonly dirtyBytes?: number;
  /** when this copy last became primary (ms since the epoch), 0 if never */
  readonly becamePrimaryAt?: number;
  /** set while this copy is primary, cleared by a clean stop or a demotion: found set at start, it crashed as primary */
  readonly primaryOpen?: boolean;
  /** it crashed as primary and has not met its peer since */
  readonly crashedPrimary?: boolean;
  /** the role an operator last gave this copy (a node starts in it) */
  readonly role?: 'PRIMARY' | 'SECONDARY';
}

const FORMAT = 'tandem-volume';
const VERSION = 1;
export const NO_GENERATION = '0000000000000000';
export const metadataLimits = {
  /** a metadata file is a few hundred bytes; anything much larger is not ours */
  fileBytesMax: 64 * 1024,
  sizeBytesMax: Number.MAX_SAFE_INTEGER,
} as const;

const GEN = /^[0-9a-f]{16}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function encodeMetadata(m: VolumeMetadata): string {
  return JSON.stringify({ format: FORMAT, version: VERSION, ...m }, null, 2) + '\n';
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Returns the metadata, or the reason it is not valid. */
export function decodeMetadata(text: string): VolumeMetadata | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return `not JSON: ${(e as Error).message}`;
  }
  if (typeof raw !== 'object' || raw === null) return 'not an object';
  const o = raw as Record<string, unknown>;
  if (o.format !== FORMAT) return `format is not ${FORMAT}`;
  if (o.version !== VERSION) return `unsupported version ${String(o.version)}`;
  if (typeof o.volumeId !== 'string' || !UUID.test(o.volumeId)) return 'volumeId is not a UUID';
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size <= 0) return 'size is not a positive integer';
  if (typeof o.blockSize !== 'number' || !isPowerOfTwo(o.blockSize) || o.blockSize < 512 || o.blockSize > 65536) {
    return 'blockSize is not a power of two between 512 and 65536';
  }
  if (o.backingKind !== 'file' && o.backingKind !== 'device') return 'backingKind is not file or device';
  if (typeof o.diskState !== 'string' || !(DISK_STATES as readonly string[]).includes(o.diskState)) return 'unknown diskState';
  const g = o.generations as Record<string, unknown> | undefined;
  if (typeof g !== 'object' || g === null) return 'generations missing';
  const h = g.history;
  if (typeof g.current !== 'string' || !GEN.test(g.current) || typeof g.bitmap !== 'string' || !GEN.test(g.bitmap) ||
      !Array.isArray(h) || h.length !== 2 || !h.every((x) => typeof x === 'string' && GEN.test(x))) {
    return 'generations malformed';
  }
  const count = (k: string): number | string | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : `${k} is not a non-negative integer`;
  };
  const flag = (k: string): boolean | string | undefined => {
    const v = o[k];
    return v === undefined || typeof v === 'boolean' ? v : `${k} is not a boolean`;
  };
  const dirtyBytes = count('dirtyBytes');
  const becamePrimaryAt = count('becamePrimaryAt');
  const primaryOpen = flag('primaryOpen');
  const crashedPrimary = flag('crashedPrimary');
  for (const v of [dirtyBytes, becamePrimaryAt, primaryOpen, crashedPrimary]) if (typeof v === 'string') return v;
  if (o.role !== undefined && o.role !== 'PRIMARY' && o.role !== 'SECONDARY') return 'role is not PRIMARY or SECONDARY';
  return {
    ...(dirtyBytes === undefined ? {} : { dirtyBytes: dirtyBytes as number }),
    ...(becamePrimaryAt === undefined ? {} : { becamePrimaryAt: becamePrimaryAt as number }),
    ...(primaryOpen === undefined ? {} : { primaryOpen: primaryOpen as boolean }),
    ...(crashedPrimary === undefined ? {} : { crashedPrimary: crashedPrimary as boolean }),
    ...(o.role === undefined ? {} : { role: o.role }),
    volumeId: o.volumeId,
    size: o.size,
    blockSize: o.blockSize,
    backingKind: o.backingKind,
    generations: { current: g.current, bitmap: g.bitmap, history: [h[0] as string, h[1] as string] },
    diskState: o.diskState as DiskState,
  };
}
