/**
 * The exit codes every `tandem` command keeps to, so scripts can tell a refusal from a typo
 * from a node that is down (docs/operations.md, "Exit codes").
 */
export const exitCodes = {
  ok: 0,
  /** the node refused the operation, or it failed (an API error, a volume in split brain, a timeout) */
  failed: 1,
  /** the command was called wrongly: printed with the usage text */
  usage: 2,
  /** the node's API did not answer (nothing listening, no route, a timeout, not the Tandem API) */
  unreachable: 3,
} as const;

/** A mistake in how a command was called: printed with the usage hint, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'ERR_USAGE';
}
