// The cluster configuration document (docs/pools.md, "The cluster
// configuration"): the volumes and pools both nodes serve, one document with
// an epoch, the same on both nodes. Pure: parse, hash, compare, change. The
// store (cluster-config.ts) persists it and carries it over the sync link.
//
// Every change makes the next epoch and appends the hash of the document it
// changed to `lineage`. A document replaces another only if it descends from
// it; two documents that do not descend from one another (both nodes changed
// the configuration while apart, or their files differed from the start) have
// diverged, and that is reported, never resolved silently.
//
// The document also carries the cluster's API tokens (src/node/api-token.ts): records with
// hashes, never a token itself, so a token made on either node works on both and a revocation
// reaches both. Both lists are optional, and left out of the hash while empty, so a document
// without tokens keeps the hash it always had.
import { createHash } from 'node:crypto';
import { canonicalJson } from '../util/canonical-json';
import { ConfigError, fail, obj } from '../util/config-fields';
import type { TokenRecord } from './api-token';
import { parseRevoked, parseTokenRecords, type TokenSet } from './api-token-records';

export const documentLimits = {
  /** the document as JSON; a CLUSTER message carries it whole */
  bytesMax: 256 * 1024,
  /** ancestors remembered: a node further behind than this meets a "diverged" document */
  lineageMax: 256,
  changeTextMax: 200,
} as const;

export interface ClusterDocument {
  readonly epoch: number;
  /** hashes of the documents this one descends from, oldest first */
  readonly lineage: readonly string[];
  readonly changedBy: string;
  readonly changedAt: string;
  /** what the change was, for people: "pool create p1", "config file edited on alpha" */
  readonly change: string;
  /** as in the node configuration file: the `volumes` and `pools` lists, checked by its parser */
  readonly volumes: readonly unknown[];
  readonly pools: readonly unknown[];
  /** the API tokens valid on both nodes; absent while there are none */
  readonly tokens?: readonly TokenRecord[];
  /** ids of revoked tokens, newest last; absent while there are none */
  readonly revokedTokens?: readonly string[];
}

/** What a change sets: the volumes and pools, and the tokens when it changes them. */
export interface DocumentSection {
  readonly volumes: readonly unknown[];
  readonly pools: readonly unknown[];
  readonly tokens?: TokenSet;
}

export type Comparison = 'same' | 'theirs-newer' | 'mine-newer' | 'diverged';

/** The content's identity: epoch and configuration, not who made it or when (two nodes seeding the same files agree). */
export function documentHash(d: ClusterDocument): string {
  const content = { epoch: d.epoch, volumes: d.volumes, pools: d.pools, ...tokenFields(tokenSetOf(d)) };
  return createHash('sha256').update(canonicalJson(content)).digest('hex').slice(0, 32);
}

/** The document's tokens and revoked ids (empty lists when it has none). */
export function tokenSetOf(d: ClusterDocument): TokenSet {
  return { tokens: d.tokens ?? [], revoked: d.revokedTokens ?? [] };
}

/** The document fields of a token set: each list only when it is not empty. */
function tokenFields(s: TokenSet): { tokens?: readonly TokenRecord[]; revokedTokens?: readonly string[] } {
  return { ...(s.tokens.length > 0 ? { tokens: s.tokens } : {}), ...(s.revoked.length > 0 ? { revokedTokens: s.revoked } : {}) };
}

/** The first document of a cluster, from a node's configuration file. */
export function seedDocument(section: { volumes: readonly unknown[]; pools: readonly unknown[] }, node: string, at: Date): ClusterDocument {
  return { epoch: 1, lineage: [], changedBy: node, changedAt: at.toISOString(), change: `first configuration, from ${node}'s file`, volumes: section.volumes, pools: section.pools };
}

/** The next epoch: `section` replaces the volumes and pools, and the tokens if it has them. */
export function changeDocument(
  d: ClusterDocument, section: DocumentSection, node: string, change: string, at: Date,
  /** further ancestors (a push over a diverged peer's document) */
  alsoDescendsFrom: readonly ClusterDocument[] = [],
): ClusterDocument {
  const epoch = Math.max(d.epoch, ...alsoDescendsFrom.map((x) => x.epoch)) + 1;
  const ancestors = [...d.lineage, ...alsoDescendsFrom.flatMap((x) => x.lineage), documentHash(d), ...alsoDescendsFrom.map(documentHash)];
  const lineage = [...new Set(ancestors)].slice(-documentLimits.lineageMax);
  return {
    epoch, lineage, changedBy: node, changedAt: at.toISOString(), change: change.slice(0, documentLimits.changeTextMax),
    volumes: section.volumes, pools: section.pools, ...tokenFields(section.tokens ?? tokenSetOf(d)),
  };
}

export function compareDocuments(mine: ClusterDocument, theirs: ClusterDocument): Comparison {
  const a = documentHash(mine);
  const b = documentHash(theirs);
  if (a === b) return 'same';
  if (theirs.epoch > mine.epoch && theirs.lineage.includes(a)) return 'theirs-newer';
  if (mine.epoch > theirs.epoch && mine.lineage.includes(b)) return 'mine-newer';
  return 'diverged';
}

const HASH = /^[0-9a-f]{32}$/;

/** A document from disk: bounded, then checked as documentFrom does. */
export function parseDocument(text: string, where: string): ClusterDocument {
  if (Buffer.byteLength(text) > documentLimits.bytesMax) fail(where, `larger than ${documentLimits.bytesMax} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    fail(where, `not JSON: ${(e as Error).message}`);
  }
  return documentFrom(v, where);
}

/**
 * A document already parsed (from disk, or inside the peer's CLUSTER message, which the sync
 * protocol bounds): shape checked here, content by the node configuration's parser.
 */
export function documentFrom(v: unknown, where: string): ClusterDocument {
  const o = obj(v, where, ['version', 'epoch', 'lineage', 'changedBy', 'changedAt', 'change', 'volumes', 'pools', 'tokens', 'revokedTokens']);
  if (o.version !== 1) fail(`${where}.version`, 'must be 1');
  if (typeof o.epoch !== 'number' || !Number.isSafeInteger(o.epoch) || o.epoch < 1) fail(`${where}.epoch`, 'must be an integer ≥ 1');
  if (!Array.isArray(o.lineage) || o.lineage.length > documentLimits.lineageMax || !o.lineage.every((h): h is string => typeof h === 'string' && HASH.test(h))) {
    fail(`${where}.lineage`, `must be a list of at most ${documentLimits.lineageMax} hashes`);
  }
  for (const k of ['changedBy', 'changedAt', 'change'] as const) {
    if (typeof o[k] !== 'string' || (o[k] as string).length > documentLimits.changeTextMax) fail(`${where}.${k}`, `must be a string of at most ${documentLimits.changeTextMax} characters`);
  }
  if (!Array.isArray(o.volumes)) fail(`${where}.volumes`, 'must be a list');
  if (!Array.isArray(o.pools)) fail(`${where}.pools`, 'must be a list');
  const tokens = o.tokens === undefined ? [] : parseTokenRecords(o.tokens, `${where}.tokens`);
  const revoked = o.revokedTokens === undefined ? [] : parseRevoked(o.revokedTokens, `${where}.revokedTokens`);
  const both = tokens.find((t) => revoked.includes(t.id));
  if (both !== undefined) fail(`${where}.tokens`, `token ${both.name} (${both.id}) is listed as revoked too`);
  return {
    epoch: o.epoch, lineage: o.lineage, changedBy: o.changedBy as string, changedAt: o.changedAt as string, change: o.change as string,
    volumes: o.volumes as unknown[], pools: o.pools as unknown[], ...tokenFields({ tokens, revoked }),
  };
}

export function serializeDocument(d: ClusterDocument): string {
  const text = JSON.stringify({ version: 1, ...d }, null, 2) + '\n';
  if (Buffer.byteLength(text) > documentLimits.bytesMax) {
    throw new ConfigError('ERR_CONFIG', `the cluster configuration would be larger than ${documentLimits.bytesMax} bytes`);
  }
  return text;
}
