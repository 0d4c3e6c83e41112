import { CodedError } from '../util/coded-error';

// The interface every store offers to the data path, as nbdkit's backends do.
// Wrappers (read-only, replicate, fault-inject) implement it around another one.

export interface StoreExtent {
  readonly offset: number;
  readonly length: number;
  /** not allocated: reads as zero and costs no space */
  readonly hole: boolean;
  /** known to read as zeroes */
  readonly zero: boolean;
}

export interface ZeroOptions {
  /** the range must stay allocated (NBD_CMD_FLAG_NO_HOLE) */
  readonly noHole: boolean;
  /** fail with ENOTSUP rather than write zeroes slowly (NBD_CMD_FLAG_FAST_ZERO) */
  readonly fast: boolean;
}

export interface Backend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canExtents: boolean;
  /**
   * write() wants each client write whole, in one call (a mirrored store sends one message to
   * its peer per call); otherwise a write's payload is stored piece by piece as it arrives
   */
  readonly wholeWrites?: boolean;
  /** fills buf from offset; the range is inside the store */
  read(buf: Buffer, offset: number): Promise<void>;
  write(buf: Buffer, offset: number): Promise<void>;
  /**
   * write() for bulk data this node will not read back soon (a resync's copy): where the store
   * can, the data goes around the page cache, which it would otherwise fill and evict for nothing.
   * Durable, like write(), only after flush(); every read sees it once the returned promise resolves.
   * Resolves true when the data went around the cache, false when it went through it (small or
   * unaligned writes, or a store that refuses the bypass) and waits there for a flush.
   */
  writeUncached?(buf: Buffer, offset: number): Promise<boolean>;
  /** makes every completed write durable */
  flush(): Promise<void>;
  trim(offset: number, length: number): Promise<void>;
  zero(offset: number, length: number, options: ZeroOptions): Promise<void>;
  /** warms the cache for a range; data is not returned */
  cache(offset: number, length: number): Promise<void>;
  /** consecutive extents from offset, covering at most length bytes and at most extentsMax entries */
  extents(offset: number, length: number, extentsMax: number): Promise<StoreExtent[]>;
  close(): Promise<void>;
}

/** An operating error of a store, with the errno-like code it came from. */
export class StoreError extends CodedError<string> {
  override readonly name = 'StoreError';
}
