// Every size and count of the sync link, in one place. Units are the last
// word of each name. The fixed field sizes are typed as their literal values:
// they are the wire format, not tunables, and a limits object cannot change them.

export interface SyncLimits {
  /** one whole frame on the wire: header, payload and MAC (one maximal WRITE plus room for its fields) */
  readonly frameBytesMax: number;
  /** one whole frame before the session is authenticated: HELLO, AUTH, AUTH_OK, REJECT are small */
  readonly unauthenticatedFrameBytesMax: number;
  /** data of one WRITE or RESYNC_DATA, and the length of one RESYNC_REQUEST (NBD's payload maximum) */
  readonly dataBytesMax: number;
  /** a node name in HELLO, UTF-8 */
  readonly nodeNameBytesMax: number;
  /** protocol versions offered in one HELLO */
  readonly versionsMax: number;
  /** bytes after the known HELLO fields, reserved for later versions (ignored, but covered by AUTH) */
  readonly helloExtensionBytesMax: number;
  /** the reason text of a REJECT, UTF-8 */
  readonly rejectReasonBytesMax: number;
  /** hashes in one HASH_REQUEST, blocks in one HASH_REPLY */
  readonly hashesMax: number;
  /** the block size of a HASH_REQUEST is a power of two in [min, max] */
  readonly hashBlockBytesMin: number;
  readonly hashBlockBytesMax: number;
  /** the bits of one BITMAP message (a dirty bitmap travels as consecutive chunks of at most this) */
  readonly bitmapChunkBytesMax: number;
  /** the region size of a BITMAP is a power of two in [min, max] (as core/dirty-bitmap's) */
  readonly bitmapRegionBytesMin: number;
  readonly bitmapRegionBytesMax: number;
  /** one CLUSTER message (a JSON document between the cluster machines) */
  readonly clusterMessageBytesMax: number;
  /** the cluster secret both nodes share */
  readonly clusterSecretBytesMin: number;
  readonly clusterSecretBytesMax: number;

  // the wire format
  readonly frameHeaderBytes: 20;
  readonly clusterIdBytes: 16;
  readonly volumeIdBytes: 16;
  readonly nonceBytes: 32;
  /** the MAC that ends every authenticated frame: the AES-256-GCM tag of an empty plaintext (GMAC) */
  readonly macBytes: 16;
  /** the MAC of an AUTH message: HMAC-SHA256, whole */
  readonly authMacBytes: 32;
  /** one session key per direction, from HKDF-SHA256 */
  readonly sessionKeyBytes: 32;
  /** one SHA-256 in HASH_REQUEST */
  readonly hashBytes: 32;
}

export const syncLimits: SyncLimits = {
  frameBytesMax: 64 * 1024 * 1024 + 4 * 1024,
  unauthenticatedFrameBytesMax: 4 * 1024,
  dataBytesMax: 64 * 1024 * 1024,
  nodeNameBytesMax: 64,
  versionsMax: 16,
  helloExtensionBytesMax: 1024,
  rejectReasonBytesMax: 1024,
  hashesMax: 64 * 1024,
  hashBlockBytesMin: 512,
  hashBlockBytesMax: 1024 * 1024,
  bitmapChunkBytesMax: 1024 * 1024,
  bitmapRegionBytesMin: 4096,
  bitmapRegionBytesMax: 1024 * 1024 * 1024,
  clusterMessageBytesMax: 512 * 1024,
  clusterSecretBytesMin: 16,
  clusterSecretBytesMax: 1024,

  frameHeaderBytes: 20,
  clusterIdBytes: 16,
  volumeIdBytes: 16,
  nonceBytes: 32,
  macBytes: 16,
  authMacBytes: 32,
  sessionKeyBytes: 32,
  hashBytes: 32,
};
