// The API token records of the cluster configuration document: checked on arrival (from disk
// or from the peer), added and revoked, and merged when an operator settles a divergence.
// Pure; a refused change throws and changes nothing.
import { CodedError } from '../util/coded-error';
import { fail, obj } from '../util/config-fields';
import { isRole, isSha256Hex, isTokenId, tokenLimits, tokenNameProblem, type TokenRecord } from './api-token';

export class TokenError extends CodedError<'ERR_BAD_REQUEST' | 'ERR_TOKEN_EXISTS' | 'ERR_TOO_MANY_TOKENS' | 'ERR_UNKNOWN_TOKEN'> {
  override readonly name = 'TokenError';
}

/** The tokens valid on both nodes, and the ids of those revoked (newest last). */
export interface TokenSet {
  readonly tokens: readonly TokenRecord[];
  readonly revoked: readonly string[];
}

const RECORD_KEYS = ['id', 'name', 'role', 'sha256', 'createdAt'];

/** A document's `tokens`, each record checked, ids and names unique; throws ConfigError naming the bad one. */
export function parseTokenRecords(v: unknown, where: string): TokenRecord[] {
  if (!Array.isArray(v) || v.length > tokenLimits.tokensMax) fail(where, `must be a list of at most ${tokenLimits.tokensMax} tokens`);
  const out = v.map((x, i): TokenRecord => {
    const at = `${where}[${i}]`;
    const o = obj(x, at, RECORD_KEYS);
    if (!isTokenId(o.id)) fail(`${at}.id`, 'must be 16 hex digits');
    const problem = tokenNameProblem(o.name);
    if (problem !== null) fail(`${at}.name`, problem);
    if (!isRole(o.role)) fail(`${at}.role`, 'must be admin or read');
    if (!isSha256Hex(o.sha256)) fail(`${at}.sha256`, 'must be 64 hex digits');
    if (typeof o.createdAt !== 'string' || o.createdAt.length > tokenLimits.createdAtCharsMax) {
      fail(`${at}.createdAt`, `must be a string of at most ${tokenLimits.createdAtCharsMax} characters`);
    }
    return { id: o.id, name: o.name as string, role: o.role, sha256: o.sha256, createdAt: o.createdAt };
  });
  if (new Set(out.map((t) => t.id)).size !== out.length) fail(where, 'token ids must be unique');
  if (new Set(out.map((t) => t.name)).size !== out.length) fail(where, 'token names must be unique');
  return out;
}

/** A document's `revokedTokens`: ids, bounded. */
export function parseRevoked(v: unknown, where: string): string[] {
  if (!Array.isArray(v) || v.length > tokenLimits.revokedMax || !v.every(isTokenId)) {
    fail(where, `must be a list of at most ${tokenLimits.revokedMax} token ids`);
  }
  return v;
}

/** The set with `record` added; refused if its name or id is taken or the set is full. */
export function addToken(set: TokenSet, record: TokenRecord): TokenSet {
  if (set.tokens.some((t) => t.name === record.name)) {
    throw new TokenError('ERR_TOKEN_EXISTS', `a token named ${record.name} exists already: revoke it first, or choose another name`);
  }
  if (set.tokens.length >= tokenLimits.tokensMax) {
    throw new TokenError('ERR_TOO_MANY_TOKENS', `the cluster has ${tokenLimits.tokensMax} tokens, the most it keeps: revoke one first`);
  }
  // 64 random bits: a clash is a broken random source, not bad luck
  if (set.tokens.some((t) => t.id === record.id) || set.revoked.includes(record.id)) throw new Error(`token id ${record.id} is in use`);
  return { tokens: [...set.tokens, record], revoked: set.revoked };
}

/** The token named by its id or its name. */
export function findToken(set: TokenSet, idOrName: string): TokenRecord | undefined {
  return set.tokens.find((t) => t.id === idOrName) ?? set.tokens.find((t) => t.name === idOrName);
}

/** The set without the token named (by id or name), its id remembered as revoked. */
export function revokeToken(set: TokenSet, idOrName: string): { set: TokenSet; record: TokenRecord } {
  const record = findToken(set, idOrName);
  if (record === undefined) {
    const names = set.tokens.map((t) => t.name).join(', ');
    throw new TokenError('ERR_UNKNOWN_TOKEN', `no token with the id or name ${JSON.stringify(idOrName)} (tokens: ${names === '' ? 'none' : names})`);
  }
  return {
    set: { tokens: set.tokens.filter((t) => t.id !== record.id), revoked: remember(set.revoked, [record.id]) },
    record,
  };
}

function remember(revoked: readonly string[], more: readonly string[]): string[] {
  return [...new Set([...revoked, ...more])].slice(-tokenLimits.revokedMax);
}

/**
 * When an operator makes this node's document win over a diverged peer's: a token revoked on
 * either side stays revoked (the safe side), a token made on either side is kept. Two tokens
 * of one name made apart cannot both stay: this node's wins and the other is named in `dropped`
 * (it stops working, which is safe; make it again).
 */
export function mergeForPush(mine: TokenSet, theirs: TokenSet): { set: TokenSet; dropped: TokenRecord[] } {
  const revoked = remember(mine.revoked, theirs.revoked);
  const gone = new Set(revoked);
  const tokens = mine.tokens.filter((t) => !gone.has(t.id));
  const dropped: TokenRecord[] = [];
  for (const t of theirs.tokens) {
    if (gone.has(t.id) || tokens.some((x) => x.id === t.id)) continue;
    if (tokens.some((x) => x.name === t.name) || tokens.length >= tokenLimits.tokensMax) dropped.push(t);
    else tokens.push(t);
  }
  return { set: { tokens, revoked }, dropped };
}

/** A record as the API shows it: never its hash. */
export function publicRecord(t: TokenRecord): Omit<TokenRecord, 'sha256'> {
  return { id: t.id, name: t.name, role: t.role, createdAt: t.createdAt };
}
