/** A client broke the protocol badly enough that the connection cannot stay in sync. */
export class NbdProtocolError extends Error {
  override readonly name = 'NbdProtocolError';
  readonly code = 'ERR_NBD_PROTOCOL';
}
