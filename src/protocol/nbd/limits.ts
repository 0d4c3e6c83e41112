// Every size and count the NBD server accepts from a client, in one place.
// Units are the last word of each name.

export const nbdLimits = {
  /** data of one handshake option; larger options are skipped and refused with NBD_REP_ERR_TOO_BIG */
  optionBytesMax: 64 * 1024,
  /** export names, context names, descriptions (proto.md: strings MUST be no longer than 4096 bytes) */
  stringBytesMax: 4096,
  /** queries in one LIST/SET_META_CONTEXT option */
  metaContextQueriesMax: 128,
  /** options in one handshake before the client is considered abusive */
  optionsPerHandshakeMax: 1024,
  /** payload of one READ or WRITE (nbdkit accepts 64 MiB too) */
  payloadBytesMax: 64 * 1024 * 1024,
  /** descriptors in one BLOCK_STATUS chunk (proto.md: SHOULD NOT exceed 2^20) */
  blockStatusDescriptorsMax: 64 * 1024,
  /** BLOCK_STATUS examines at most this many bytes per request; the reply may cover less */
  blockStatusBytesMax: 4 * 1024 * 1024 * 1024,
} as const;

export type NbdLimits = typeof nbdLimits;

/** Limits of the serving loop: how much one connection and the whole server may hold. */
export const nbdServerLimits = {
  connectionsMax: 256,
  /** bytes of reads and writes admitted but not yet answered, per connection (one maximal request always fits) */
  connectionInflightBytesMax: 64 * 1024 * 1024,
  /** the same, summed over every connection of the server */
  serverInflightBytesMax: 1024 * 1024 * 1024,
  /** replies queued on a socket before the connection stops reading new requests */
  replyQueueBytesMax: 4 * 1024 * 1024,
  /** a client must finish the handshake within this time */
  handshakeTimeoutMs: 30_000,
  /** on shutdown, in-flight requests get this long to finish before connections are cut */
  drainTimeoutMs: 10_000,
  /** structured READs at least this large are answered with hole chunks where the store has holes */
  readHoleMapBytesMin: 64 * 1024,
  /** extents looked up for one READ's hole map */
  readHoleMapExtentsMax: 64,
  /** freed read buffers and whole-write buffers (a mirrored store's) kept for reuse, in total */
  readBufferPoolBytesMax: 64 * 1024 * 1024,
} as const;

export type NbdServerLimits = typeof nbdServerLimits;
