// Every bound of the replication engine, in one place.
export const replicationLimits = {
  /** bytes of client writes in flight per volume (local + peer); more writers wait */
  inFlightBytesMax: 64 * 1024 * 1024,
  /** received frame memory a sync link keeps for reuse once its writes are applied */
  recycledFrameBytesMax: 64 * 1024 * 1024,
  /** bytes of peer writes and resync data a node applies at once; above it the sync link stops being read */
  applyBytesMax: 256 * 1024 * 1024,
  /**
   * one resync request (whole regions). Large, because every request costs a lock, an extents
   * lookup, a thread-pool read and write and a frame's MAC setup on top of its bytes
   */
  resyncChunkBytes: 4 * 1024 * 1024,
  /** resync requests a target keeps outstanding (many small ones when the dirty regions are scattered) */
  resyncWindow: 16,
  /**
   * once the window is full, requests go out again only when this many have been answered: each
   * sync-link write wakes the source, and scattered regions asked for one by one cost a write each
   */
  resyncRequestBatch: 8,
  /** bytes those requests may ask for at once: what a resync holds in memory on each side */
  resyncWindowBytes: 32 * 1024 * 1024,
  /** read buffers a resync source keeps for reuse, in bytes (those of one window) */
  resyncPoolBytesMax: 32 * 1024 * 1024,
  /** resync data writes a target has under way at once; the rest of the window waits in memory */
  resyncWritesMax: 2,
  /** resync data a target writes through the page cache before it starts a flush in the background */
  resyncWritebackBytes: 8 * 1024 * 1024,
  /** the block a resync or verify hash covers */
  hashBlockBytes: 4096,
  /** one verify request */
  verifyChunkBytes: 4 * 1024 * 1024,
  /** differing ranges a verify lists (the totals count all) */
  verifyRangesMax: 1000,
  /** a resync target makes its progress durable (data flush, then bitmap) this often */
  checkpointMs: 1000,
  /** while a primary writes alone, its count of bytes written apart is saved at most this often */
  metadataSaveMs: 5000,
  /** one BITMAP message */
  bitmapChunkBytes: 1024 * 1024,
} as const;
