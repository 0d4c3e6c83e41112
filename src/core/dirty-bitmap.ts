// Which regions of a volume may differ between the two copies: one bit per
// region, like DRBD's bitmap. Pure: storage/bitmap-file.ts persists it, and
// only the 4 KiB pages of the serialized form that changed since the last persist.
//
// Setting rounds outward (a write touching one byte of a region makes the
// whole region suspect); clearing rounds inward (a region is only known to
// agree when all of it was copied), so neither ever loses a difference.
import { CodedError } from '../util/coded-error';

export const dirtyBitmapDefaults = {
  regionBytes: 64 * 1024,
} as const;

export const dirtyBitmapLimits = {
  regionBytesMin: 4096,
  regionBytesMax: 1024 * 1024 * 1024,
  /** the serialized form is persisted in pages of this size: one filesystem block, written whole */
  pageBytes: 4096,
  /** 2^31 regions (128 TiB at the default region size), so region indexes stay in 32-bit arithmetic */
  serializedBytesMax: 256 * 1024 * 1024,
} as const;

export type BitmapErrorCode = 'ERR_BITMAP_GEOMETRY' | 'ERR_BITMAP_RANGE' | 'ERR_BITMAP_LENGTH' | 'ERR_BITMAP_PADDING';

export class BitmapError extends CodedError<BitmapErrorCode> {
  override readonly name = 'BitmapError';
}

export interface BitmapGeometry {
  readonly volumeBytes: number;
  /** a power of two between regionBytesMin and regionBytesMax */
  readonly regionBytes: number;
}

/** A byte range of the volume: dirty runs are whole regions, the last one clipped to the volume's end. */
export interface ByteRun {
  readonly offset: number;
  readonly length: number;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && n <= 2 ** 30 && (n & (n - 1)) === 0;
}

/** Fills in the default region size and checks the geometry; throws BitmapError ERR_BITMAP_GEOMETRY. */
export function bitmapGeometry(o: { readonly volumeBytes: number; readonly regionBytes?: number }): BitmapGeometry {
  const regionBytes = o.regionBytes ?? dirtyBitmapDefaults.regionBytes;
  if (!Number.isSafeInteger(o.volumeBytes) || o.volumeBytes <= 0) {
    throw new BitmapError('ERR_BITMAP_GEOMETRY', `volume size ${o.volumeBytes} is not a positive integer`);
  }
  if (!isPowerOfTwo(regionBytes) || regionBytes < dirtyBitmapLimits.regionBytesMin || regionBytes > dirtyBitmapLimits.regionBytesMax) {
    throw new BitmapError('ERR_BITMAP_GEOMETRY', `region size ${regionBytes} is not a power of two between ` +
      `${dirtyBitmapLimits.regionBytesMin} and ${dirtyBitmapLimits.regionBytesMax}`);
  }
  const serialized = Math.ceil(Math.ceil(o.volumeBytes / regionBytes) / 8);
  if (serialized > dirtyBitmapLimits.serializedBytesMax) {
    throw new BitmapError('ERR_BITMAP_GEOMETRY', `a ${o.volumeBytes}-byte volume needs ${serialized} bitmap bytes at ` +
      `${regionBytes}-byte regions (at most ${dirtyBitmapLimits.serializedBytesMax}): use larger regions`);
  }
  return { volumeBytes: o.volumeBytes, regionBytes };
}

/** set bits in each byte value */
const POPCOUNT = ((): Uint8Array => {
  const t = new Uint8Array(256);
  for (let i = 1; i < 256; i++) t[i] = (i & 1) + (t[i >>> 1] as number);
  return t;
})();

export class DirtyBitmap {
  readonly volumeBytes: number;
  readonly regionBytes: number;
  readonly regionCount: number;
  /** length of serialize(): one bit per region, least significant bit first, padding bits zero */
  readonly serializedBytes: number;
  readonly pageCount: number;
  private readonly bits: Buffer;
  /** one flag per page: changed since the last takeDirtyPages() */
  private readonly pageChanged: Uint8Array;
  private dirtyCount = 0;

  /** An all-clean bitmap; the geometry is checked (BitmapError ERR_BITMAP_GEOMETRY). */
  constructor(geometry: BitmapGeometry) {
    const g = bitmapGeometry(geometry);
    this.volumeBytes = g.volumeBytes;
    this.regionBytes = g.regionBytes;
    this.regionCount = Math.ceil(g.volumeBytes / g.regionBytes);
    this.serializedBytes = Math.ceil(this.regionCount / 8);
    this.pageCount = Math.ceil(this.serializedBytes / dirtyBitmapLimits.pageBytes);
    this.bits = Buffer.alloc(this.serializedBytes);
    this.pageChanged = new Uint8Array(this.pageCount);
  }

  /**
   * A bitmap from its serialized form; no page counts as changed. Throws BitmapError:
   * ERR_BITMAP_LENGTH if the length does not fit the geometry, ERR_BITMAP_PADDING if a bit past the last region is set.
   */
  static load(geometry: BitmapGeometry, bytes: Uint8Array): DirtyBitmap {
    const b = new DirtyBitmap(geometry);
    if (bytes.length !== b.serializedBytes) {
      throw new BitmapError('ERR_BITMAP_LENGTH', `bitmap is ${bytes.length} bytes; ${b.regionCount} regions need ${b.serializedBytes}`);
    }
    const tailBits = b.regionCount % 8;
    if (tailBits !== 0 && ((bytes[b.serializedBytes - 1] as number) >>> tailBits) !== 0) {
      throw new BitmapError('ERR_BITMAP_PADDING', 'bits past the last region are set: not a bitmap of this geometry');
    }
    b.bits.set(bytes);
    for (const x of b.bits) b.dirtyCount += POPCOUNT[x] as number;
    return b;
  }

  /** Marks every region the range touches. */
  set(offset: number, length: number): void {
    this.checkRange(offset, length);
    if (length === 0) return;
    this.fill(Math.floor(offset / this.regionBytes), Math.ceil((offset + length) / this.regionBytes), true);
  }

  /** Clears the regions the range covers entirely (the last, partial region of the volume counts when the range reaches the end). */
  clear(offset: number, length: number): void {
    this.checkRange(offset, length);
    const end = offset + length;
    const endRegion = end === this.volumeBytes ? this.regionCount : Math.floor(end / this.regionBytes);
    this.fill(Math.ceil(offset / this.regionBytes), endRegion, false);
  }

  /** Whether any region the range touches is dirty. */
  test(offset: number, length: number): boolean {
    this.checkRange(offset, length);
    if (length === 0) return false;
    const endRegion = Math.ceil((offset + length) / this.regionBytes);
    for (let r = Math.floor(offset / this.regionBytes); r < endRegion; r++) {
      if ((r & 7) === 0 && endRegion - r >= 8) {
        if (this.bits[r >>> 3] !== 0) return true;
        r += 7;
      } else if (this.isRegionDirty(r)) {
        return true;
      }
    }
    return false;
  }

  isRegionDirty(region: number): boolean {
    return (((this.bits[region >>> 3] ?? 0) >>> (region & 7)) & 1) === 1;
  }

  get dirtyRegions(): number {
    return this.dirtyCount;
  }

  /** bytes of the volume in dirty regions (the last region may be shorter than regionBytes) */
  get dirtyBytes(): number {
    const last = this.regionCount - 1;
    const short = this.regionCount * this.regionBytes - this.volumeBytes;
    return this.dirtyCount * this.regionBytes - (this.isRegionDirty(last) ? short : 0);
  }

  /** Maximal runs of dirty regions, in ascending order, as byte ranges of the volume. */
  *dirtyRuns(): Generator<ByteRun> {
    let start = -1;
    for (let r = 0; r < this.regionCount; r++) {
      const byte = this.bits[r >>> 3] as number;
      // skip whole bytes that cannot end or start a run (padding bits are zero, so a 0xff byte is 8 real regions)
      if ((r & 7) === 0 && (start < 0 ? byte === 0 : byte === 0xff)) {
        r += 7;
        continue;
      }
      const on = ((byte >>> (r & 7)) & 1) === 1;
      if (on && start < 0) start = r;
      else if (!on && start >= 0) {
        yield this.run(start, r);
        start = -1;
      }
    }
    if (start >= 0) yield this.run(start, this.regionCount);
  }

  clearAll(): void {
    for (let i = 0; i < this.serializedBytes; i++) this.store(i, 0);
  }

  /** Adds every dirty region of `other`, which must have the same geometry. */
  union(other: DirtyBitmap): void {
    if (other.volumeBytes !== this.volumeBytes || other.regionBytes !== this.regionBytes) {
      throw new BitmapError('ERR_BITMAP_GEOMETRY', `cannot unite a ${other.volumeBytes}/${other.regionBytes} bitmap ` +
        `with a ${this.volumeBytes}/${this.regionBytes} one (volume bytes/region bytes)`);
    }
    for (let i = 0; i < this.serializedBytes; i++) {
      const x = other.bits[i] as number;
      if (x !== 0) this.store(i, (this.bits[i] as number) | x);
    }
  }

  /** A copy of the serialized form. */
  serialize(): Buffer {
    return Buffer.from(this.bits);
  }

  /** A copy of one page of the serialized form (the last page may be shorter), to write at index × pageBytes. */
  page(index: number): Buffer {
    if (!Number.isInteger(index) || index < 0 || index >= this.pageCount) {
      throw new BitmapError('ERR_BITMAP_RANGE', `page ${index} is outside 0..${this.pageCount - 1}`);
    }
    const at = index * dirtyBitmapLimits.pageBytes;
    return Buffer.from(this.bits.subarray(at, Math.min(at + dirtyBitmapLimits.pageBytes, this.serializedBytes)));
  }

  /**
   * The pages whose bytes changed since the last call, ascending, and forgets them: the caller
   * persists them (copy each with page() before yielding to other work). If persisting fails,
   * hand them back with markPagesDirty() so the next persist retries them.
   */
  takeDirtyPages(): number[] {
    const out: number[] = [];
    for (let p = 0; p < this.pageCount; p++) {
      if (this.pageChanged[p] === 1) {
        out.push(p);
        this.pageChanged[p] = 0;
      }
    }
    return out;
  }

  markPagesDirty(pages: Iterable<number>): void {
    for (const p of pages) {
      if (!Number.isInteger(p) || p < 0 || p >= this.pageCount) {
        throw new BitmapError('ERR_BITMAP_RANGE', `page ${p} is outside 0..${this.pageCount - 1}`);
      }
      this.pageChanged[p] = 1;
    }
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
        offset + length > this.volumeBytes) {
      throw new BitmapError('ERR_BITMAP_RANGE', `range ${offset}+${length} is outside the ${this.volumeBytes}-byte volume`);
    }
  }

  /** Sets or clears regions [first, end), a byte at a time where it can. */
  private fill(first: number, end: number, on: boolean): void {
    for (let r = first; r < end;) {
      const shift = r & 7;
      const n = Math.min(8 - shift, end - r);
      const mask = n === 8 ? 0xff : ((1 << n) - 1) << shift;
      const old = this.bits[r >>> 3] as number;
      this.store(r >>> 3, on ? old | mask : old & ~mask & 0xff);
      r += n;
    }
  }

  private store(byte: number, value: number): void {
    const old = this.bits[byte] as number;
    if (old === value) return;
    this.bits[byte] = value;
    this.dirtyCount += (POPCOUNT[value] as number) - (POPCOUNT[old] as number);
    this.pageChanged[Math.floor(byte / dirtyBitmapLimits.pageBytes)] = 1;
  }

  private run(first: number, end: number): ByteRun {
    const offset = first * this.regionBytes;
    return { offset, length: Math.min(end * this.regionBytes, this.volumeBytes) - offset };
  }
}
