// Fault injection, for tests and diagnostics only (docs/cluster.md, "Fault
// injection"): a disk that hangs on demand. Small reads and writes are
// synchronous on the main thread (file-backend.ts), so a hung disk blocks the
// whole event loop - sockets, timers, the API - and nothing but the heartbeat
// worker runs. DiskStall reproduces that: once armed, the next I/O through a
// StallingBackend blocks the calling thread until the window ends.
import { monotonicMs } from '../util/clock';
import type { Backend, StoreExtent, ZeroOptions } from './backend';

export const diskStallLimits = { msMax: 60_000 } as const;

/** A stall window shared by every store of a node. */
export class DiskStall {
  /** monotonic ms at which the current window ends (0: none) */
  private until = 0;
  /** never notified: Atomics.wait on it is a plain, uninterruptible sleep */
  private readonly word = new Int32Array(new SharedArrayBuffer(4));

  /** From now until `ms` from now, the next I/O blocks until the window ends. Extends a window under way. */
  arm(ms: number): void {
    if (!Number.isInteger(ms) || ms < 1 || ms > diskStallLimits.msMax) throw new RangeError(`a disk stall lasts 1 to ${diskStallLimits.msMax} ms, not ${ms}`);
    this.until = Math.max(this.until, monotonicMs() + ms);
  }

  /** Blocks the calling thread while a window is open; returns at once otherwise. */
  block(): void {
    for (let left = this.until - monotonicMs(); left > 0; left = this.until - monotonicMs()) {
      Atomics.wait(this.word, 0, 0, left);
    }
  }
}

/** A store whose every I/O first waits out the stall window, as it would wait for a hung disk. */
export class StallingBackend implements Backend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canExtents: boolean;
  readonly wholeWrites: boolean;

  constructor(private readonly inner: Backend, private readonly stall: DiskStall) {
    this.size = inner.size;
    this.readOnly = inner.readOnly;
    this.canTrim = inner.canTrim;
    this.canZero = inner.canZero;
    this.canFastZero = inner.canFastZero;
    this.canExtents = inner.canExtents;
    this.wholeWrites = inner.wholeWrites === true;
  }

  read(buf: Buffer, offset: number): Promise<void> {
    this.stall.block();
    return this.inner.read(buf, offset);
  }

  write(buf: Buffer, offset: number): Promise<void> {
    this.stall.block();
    return this.inner.write(buf, offset);
  }

  flush(): Promise<void> {
    this.stall.block();
    return this.inner.flush();
  }

  trim(offset: number, length: number): Promise<void> {
    this.stall.block();
    return this.inner.trim(offset, length);
  }

  zero(offset: number, length: number, options: ZeroOptions): Promise<void> {
    this.stall.block();
    return this.inner.zero(offset, length, options);
  }

  cache(offset: number, length: number): Promise<void> {
    this.stall.block();
    return this.inner.cache(offset, length);
  }

  extents(offset: number, length: number, extentsMax: number): Promise<StoreExtent[]> {
    this.stall.block();
    return this.inner.extents(offset, length, extentsMax);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
