/**
 * Reuses large buffers: allocating (and later collecting) a fresh megabyte per
 * request costs more in page faults and garbage collections than the request's
 * own work (DESIGN.md performance notes). Sizes are rounded up to powers of two;
 * small ones come from Node's own pool.
 *
 * A buffer comes back through give() with any view of it. Only memory this pool
 * lent and that was not given back already is taken: a view into someone else's
 * memory (a socket's chunk) must never be handed out again while it is in use.
 */
export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private readonly lent = new WeakSet<ArrayBuffer>();
  private pooledBytes = 0;

  constructor(private readonly bytesMax: number, private readonly pooledMin = 64 * 1024) {}

  /** a buffer of at least `length` bytes (its length is the size class) */
  take(length: number): Buffer {
    if (length < this.pooledMin) return Buffer.allocUnsafe(length);
    const cls = 2 ** Math.ceil(Math.log2(length));
    const ab = this.free.get(cls)?.pop();
    let b: Buffer;
    if (ab !== undefined) {
      this.pooledBytes -= cls;
      b = Buffer.from(ab);
    } else {
      b = Buffer.allocUnsafeSlow(cls);
    }
    this.lent.add(b.buffer as ArrayBuffer);
    return b;
  }

  /** gives back a buffer from take(), or any view of it; the caller must not touch it afterwards */
  give(view: Buffer): void {
    const ab = view.buffer as ArrayBuffer;
    if (!this.lent.delete(ab)) return;
    const cls = ab.byteLength;
    if (this.pooledBytes + cls > this.bytesMax) return;
    let list = this.free.get(cls);
    if (list === undefined) this.free.set(cls, (list = []));
    list.push(ab);
    this.pooledBytes += cls;
  }
}
