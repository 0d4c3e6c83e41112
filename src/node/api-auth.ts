// Who a request comes from: its `Authorization: Bearer TOKEN` header checked against the
// cluster's tokens and this node's own. Pure; the answer says why a request is refused.
import { hashMatches, tokenIdOf, type Role, type TokenRecord } from './api-token';

export const authLimits = {
  /** a token is 85 characters; a header far longer is not one of ours */
  headerCharsMax: 512,
} as const;

/** A request's verified token. */
export interface Caller {
  readonly id: string;
  /** the token's name; the node's own token is `node-local` */
  readonly name: string;
  readonly role: Role;
  /** the node's own token (DATA_DIR/api-token), not one of the cluster's */
  readonly local: boolean;
}

export type AuthResult = { readonly ok: true; readonly caller: Caller } | { readonly ok: false; readonly message: string };

export const LOCAL_TOKEN_NAME = 'node-local';

/** The token of an Authorization header: null without one, 'malformed' for anything but `Bearer TOKEN`. */
export function bearerOf(header: string | undefined): string | null | 'malformed' {
  if (header === undefined || header === '') return null;
  if (header.length > authLimits.headerCharsMax) return 'malformed';
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m === null ? 'malformed' : (m[1] as string);
}

export interface KnownTokens {
  readonly tokens: readonly TokenRecord[];
  /** this node's own token */
  readonly local: { readonly id: string; readonly sha256: string } | null;
  /** this node's name, for the messages */
  readonly node: string;
}

/** Checks a request's Authorization header. */
export function authenticate(header: string | undefined, known: KnownTokens): AuthResult {
  const token = bearerOf(header);
  if (token === null) {
    return { ok: false, message: `${known.node}'s API needs a token: send Authorization: Bearer TOKEN (tandem token create makes one; root on the node finds one in DATA_DIR/api-token)` };
  }
  if (token === 'malformed') return { ok: false, message: 'the Authorization header must be "Bearer TOKEN"' };
  const id = tokenIdOf(token);
  if (id === null) return { ok: false, message: 'that is not a Tandem API token (they look like tdm_ID_SECRET)' };
  if (known.local !== null && id === known.local.id && hashMatches(token, known.local.sha256)) {
    return { ok: true, caller: { id, name: LOCAL_TOKEN_NAME, role: 'admin', local: true } };
  }
  const record = known.tokens.find((t) => t.id === id);
  if (record !== undefined && hashMatches(token, record.sha256)) return { ok: true, caller: { id, name: record.name, role: record.role, local: false } };
  return {
    ok: false,
    message: `the token is not valid on ${known.node}: revoked, mistyped, another node's own token (DATA_DIR/api-token is valid on its node only), ` +
      'or made on the peer while the two have not met since',
  };
}

/** Whether a caller verified earlier still holds: its token may have been revoked since (an open event stream). */
export function stillValid(caller: Caller, known: KnownTokens): boolean {
  return caller.local ? known.local?.id === caller.id : known.tokens.some((t) => t.id === caller.id);
}
