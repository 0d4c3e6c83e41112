// API tokens (docs/operations.md, "API security"): what a token looks like, how one is
// checked against its stored hash, and what each role may do. Pure: the random bytes come in.
//
// A token is `tdm_<id>_<secret>`: the id (16 hex digits) names its record, the secret is 256
// random bits in base64url. Only the SHA-256 of the whole token is kept. A plain hash is
// enough: the secret is random and long, so there is nothing to guess that a slow hash would
// protect.
import { createHash, timingSafeEqual } from 'node:crypto';

export const tokenLimits = {
  idBytes: 8,
  secretBytes: 32,
  /** tokens in the cluster configuration; each node's own token is not one of them */
  tokensMax: 64,
  nameCharsMax: 63,
  /** ids of revoked tokens remembered, so that settling a divergence cannot bring one back */
  revokedMax: 256,
  /** `createdAt` is an ISO date; anything longer is not one */
  createdAtCharsMax: 40,
} as const;

export type Role = 'admin' | 'read';
export const ROLES: readonly Role[] = ['admin', 'read'];

/** What a route needs: nothing, a token of either role, or an admin token. */
export type Access = 'public' | 'read' | 'admin';

export interface TokenRecord {
  readonly id: string;
  readonly name: string;
  readonly role: Role;
  /** hex SHA-256 of the whole token text */
  readonly sha256: string;
  readonly createdAt: string;
}

export const TOKEN_PREFIX = 'tdm_';
const TOKEN = /^tdm_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const ID = /^[0-9a-f]{16}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const SHA256 = /^[0-9a-f]{64}$/;

export function isTokenId(v: unknown): v is string {
  return typeof v === 'string' && ID.test(v);
}

export function isSha256Hex(v: unknown): v is string {
  return typeof v === 'string' && SHA256.test(v);
}

/** Why `name` cannot name a token, or null when it can. */
export function tokenNameProblem(name: unknown): string | null {
  if (typeof name !== 'string' || name.length === 0) return 'a token name must be a non-empty string';
  if (name.length > tokenLimits.nameCharsMax) return `a token name has at most ${tokenLimits.nameCharsMax} characters`;
  if (!NAME.test(name)) return `${JSON.stringify(name)} is not a token name (letters, digits, '.', '_', '-', starting with a letter or digit)`;
  // revoke takes a name or an id: the two must never be confused
  if (ID.test(name)) return `${JSON.stringify(name)} looks like a token id (16 hex digits): choose another name`;
  return null;
}

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}

/** The SHA-256 of a token's text, hex: what is stored. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A new token from its random bytes (idBytes and secretBytes long). */
export function makeToken(idBytes: Buffer, secretBytes: Buffer): { token: string; id: string; sha256: string } {
  if (idBytes.length !== tokenLimits.idBytes || secretBytes.length !== tokenLimits.secretBytes) throw new RangeError('wrong number of random bytes for a token');
  const id = idBytes.toString('hex');
  const token = `${TOKEN_PREFIX}${id}_${secretBytes.toString('base64url')}`;
  return { token, id, sha256: tokenHash(token) };
}

/** The id of a well-formed token, or null for anything else. */
export function tokenIdOf(text: string): string | null {
  const m = TOKEN.exec(text);
  return m === null ? null : (m[1] as string);
}

/** Whether `token` hashes to `sha256` (hex), compared in constant time. */
export function hashMatches(token: string, sha256: string): boolean {
  if (!SHA256.test(sha256)) return false;
  return timingSafeEqual(Buffer.from(tokenHash(token), 'hex'), Buffer.from(sha256, 'hex'));
}

/** A read token may read (GET); an admin token may do anything. */
export function roleAllows(role: Role, access: Access): boolean {
  if (access === 'public') return true;
  return access === 'read' || role === 'admin';
}
