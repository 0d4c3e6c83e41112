// The error of the witness codec's encoders and key derivation. Decoding
// never throws: a datagram from the network is refused with a reason instead.
import { CodedError } from '../../util/coded-error';

export type WitnessErrorCode =
  /** a caller passed a value the protocol cannot carry */
  'ERR_WITNESS_ARGUMENT';

export class WitnessProtocolError extends CodedError<WitnessErrorCode> {
  override readonly name = 'WitnessProtocolError';
}
