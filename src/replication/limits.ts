// Every bound of the replication engine, in one place.
export const replicationLimits = {
  /** bytes of client writes in flight per volume (local + peer); more writers wait */
  inFlightBytesMax: 64 * 1024 * 1024,
  /** received frame memory a sync link keeps for reuse once its writes are applied */
  recycledFrameBytesMax: 64 * 1024 * 1024,
  /** bytes of peer writes and resync data a node applies at once; above it the sync link stops being read */
  applyBytesMax: 256 * 1024 * 1024,
  /** one resync request (whole regions) */
  resyncChunkBytes: 1024 * 1024,
  /** resync requests a target keeps outstanding */
  resyncWindow: 16,
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
