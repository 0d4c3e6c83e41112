/**
 * An operating error with a stable code that API, CLI and logs can match on
 * (undici's habit). Each part subclasses it with its own name and code union.
 */
export class CodedError<C extends string> extends Error {
  constructor(readonly code: C, message: string) {
    super(message);
  }
}
