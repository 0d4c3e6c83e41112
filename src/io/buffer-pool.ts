/**
 * Reuses large read buffers: allocating (and later collecting) a fresh
 * megabyte per request costs more than the read (DESIGN.md performance notes).
 * Sizes are rounded up to powers of two; small ones come from Node's own pool.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooledBytes = 0;

  constructor(private readonly bytesMax: number, private readonly pooledMin = 64 * 1024) {}

  take(length: number): Buffer {
    if (length < this.pooledMin) return Buffer.allocUnsafe(length);
    const cls = 2 ** Math.ceil(Math.log2(length));
    const list = this.free.get(cls);
    const b = list?.pop();
    if (b !== undefined) {
      this.pooledBytes -= cls;
      return b;
    }
    return Buffer.allocUnsafeSlow(cls);
  }

  /** gives back a buffer from take(); the caller must not touch it afterwards */
  give(b: Buffer): void {
    const cls = b.buffer.byteLength;
    if (cls < this.pooledMin || this.pooledBytes + cls > this.bytesMax || b.byteOffset !== 0) return;
    let list = this.free.get(cls);
    if (list === undefined) this.free.set(cls, (list = []));
    list.push(b);
    this.pooledBytes += cls;
  }
}
