// The one error type of the sync link codecs and the authentication machine.
// Every code is stable: callers and logs may match on it.

export type SyncErrorCode =
  /** the frame does not start with the sync magic */
  | 'ERR_SYNC_MAGIC'
  /** the frame header carries a framing version this side does not speak, or HELLO offered no common version */
  | 'ERR_SYNC_VERSION'
  /** the frame type is not one of SyncMessageType */
  | 'ERR_SYNC_TYPE'
  /** the declared payload length is above the frame's or the type's cap (rejected before anything is allocated) */
  | 'ERR_SYNC_TOO_BIG'
  /** the frame's MAC does not verify under the session key */
  | 'ERR_SYNC_MAC'
  /** the sequence number is not exactly the previous one plus 1 */
  | 'ERR_SYNC_REPLAY'
  /** the payload fails its type's decoder: short, trailing bytes, or a field out of range */
  | 'ERR_SYNC_TRUNCATED'
  /** a message or a call that is not allowed in the current state */
  | 'ERR_SYNC_STATE'
  /** the peer's HELLO names another cluster */
  | 'ERR_SYNC_CLUSTER'
  /** the peer's AUTH does not verify: another secret, or a replayed or tampered handshake */
  | 'ERR_SYNC_AUTH'
  /** the peer uses this node's own name */
  | 'ERR_SYNC_NAME'
  /** the peer sent REJECT */
  | 'ERR_SYNC_REJECTED'
  /** a caller passed a value the protocol cannot carry (to an encoder or a constructor) */
  | 'ERR_SYNC_ARGUMENT';

/** The peer broke the sync protocol, failed authentication, or a caller passed an impossible value. */
export class SyncProtocolError extends Error {
  override readonly name = 'SyncProtocolError';
  constructor(readonly code: SyncErrorCode, message: string) {
    super(message);
  }
}
