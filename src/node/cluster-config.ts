// Keeps this node's copy of the cluster configuration document
// (cluster-document.ts): on disk, written atomically before it takes effect;
// compared with the peer's at every meeting of the sync link; changed by the
// pool lifecycle commands. What a document means is checked by the node
// configuration's parser, and what may change between two documents here.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../storage/atomic-file';
import { canonicalJson } from '../util/canonical-json';
import { ConfigError, fail } from '../util/config-fields';
import type { Logger } from '../util/log';
import { mergeForPush, type TokenSet } from './api-token-records';
import {
  changeDocument, compareDocuments, documentFrom, documentHash, parseDocument, seedDocument, serializeDocument, tokenSetOf, type ClusterDocument,
} from './cluster-document';
import { parseClusterSection, type PoolConfig, type RawSection, type SectionContext, type VolumeConfig } from './config';

export const DOCUMENT_FILE = 'cluster-config.json';
/** the hash of the node file's volumes and pools last taken into the document: an edit of the file is a change */
const SEED_FILE = 'config-seed.json';

export interface Section {
  readonly volumes: readonly VolumeConfig[];
  readonly pools: readonly PoolConfig[];
}

export interface Divergence {
  readonly peerEpoch: number;
  readonly peerChangedBy: string;
  readonly peerChange: string;
  readonly message: string;
  /** the peer's document, which a push must descend from */
  readonly theirs: ClusterDocument;
}

/** What receiving the peer's document led to. */
export type Received =
  | { readonly kind: 'same' }
  /** ours is newer: the peer needs it */
  | { readonly kind: 'send-ours' }
  /** theirs is newer, checked and persisted: it takes effect */
  | { readonly kind: 'adopted'; readonly section: Section }
  | { readonly kind: 'diverged'; readonly message: string }
  | { readonly kind: 'refused'; readonly message: string };

/**
 * What may not change between two documents while the nodes run: a volume's size (its two
 * copies would no longer match) and which pool a volume is in (remove the pool, create another).
 */
export function checkTransition(before: Section, after: Section): void {
  const poolOf = (s: Section, v: string): string | undefined => s.pools.find((p) => p.volumes.includes(v))?.name;
  for (const v of after.volumes) {
    const old = before.volumes.find((x) => x.name === v.name);
    if (old === undefined) continue;
    if (old.size !== v.size) fail(`volume ${v.name}`, `its size cannot change (${old.size} → ${v.size} bytes): both copies must keep the same size`);
    const a = poolOf(before, v.name);
    const b = poolOf(after, v.name);
    if (a !== b) fail(`volume ${v.name}`, `cannot move from pool ${a ?? '(none)'} to pool ${b ?? '(none)'}: remove the pool and create it again`);
  }
}

function readSeed(file: string): RawSection | null {
  try {
    const v = (JSON.parse(fs.readFileSync(file, 'utf8')) as { seed?: RawSection }).seed;
    return v !== undefined && Array.isArray(v.volumes) && Array.isArray(v.pools) ? v : null;
  } catch {
    return null;
  }
}

/**
 * The document after an edit of the node file: entries the edit added or changed (by name) are
 * set, entries it deleted are removed; everything else in the document stays.
 */
export function mergeEdit(doc: RawSection, before: RawSection, after: RawSection): { volumes: unknown[]; pools: unknown[] } {
  const nameOf = (x: unknown): unknown => (x as { name?: unknown }).name;
  const merge = (current: readonly unknown[], was: readonly unknown[], now: readonly unknown[]): unknown[] => {
    const old = new Map(was.map((x) => [nameOf(x), canonicalJson(x)]));
    const next = new Map(now.map((x) => [nameOf(x), x]));
    const out = current.filter((x) => !(old.has(nameOf(x)) && !next.has(nameOf(x))))
      .map((x) => (next.has(nameOf(x)) && old.get(nameOf(x)) !== canonicalJson(next.get(nameOf(x))) ? next.get(nameOf(x)) : x));
    for (const x of now) if (!current.some((y) => nameOf(y) === nameOf(x))) out.push(x);
    return out;
  };
  return { volumes: merge(doc.volumes, before.volumes, after.volumes), pools: merge(doc.pools, before.pools, after.pools) };
}

export class ClusterConfigStore {
  private doc: ClusterDocument;
  private section: Section;
  private divergence: Divergence | null = null;
  private readonly file: string;

  constructor(private readonly o: { dataDir: string; node: string; ctx: SectionContext; seed: RawSection; log: Logger; now?: () => Date }) {
    fs.mkdirSync(o.dataDir, { recursive: true });
    this.file = path.join(o.dataDir, DOCUMENT_FILE);
    const seedFile = path.join(o.dataDir, SEED_FILE);
    let doc = this.read();
    const lastSeed = readSeed(seedFile);
    if (doc === null) {
      doc = seedDocument(o.seed, o.node, this.now());
      this.parse(doc);
      this.write(doc);
      o.log.info('cluster configuration created from the node file', { epoch: doc.epoch });
    } else if (lastSeed !== null && canonicalJson(lastSeed) !== canonicalJson(o.seed) &&
      canonicalJson(mergeEdit(doc, lastSeed, o.seed)) !== canonicalJson({ volumes: doc.volumes, pools: doc.pools })) {
      // the operator edited the node file: what the edit changed is a change like any other, and
      // reaches the peer; pools made at run time are left as they are
      const next = changeDocument(doc, mergeEdit(doc, lastSeed, o.seed), o.node, `the node file was edited on ${o.node}`, this.now());
      checkTransition(this.parse(doc), this.parse(next));
      this.write(next);
      o.log.warn('the node file\'s volumes or pools changed: a new cluster configuration epoch', { epoch: next.epoch });
      doc = next;
    }
    writeFileAtomic(seedFile, JSON.stringify({ seed: o.seed }) + '\n');
    this.doc = doc;
    this.section = this.parse(doc);
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private read(): ClusterDocument | null {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    return parseDocument(text, this.file);
  }

  private write(d: ClusterDocument): void {
    writeFileAtomic(this.file, serializeDocument(d));
  }

  /** The document's volumes and pools, checked as a node file's would be; throws ConfigError. */
  parse(d: ClusterDocument): Section {
    const s = parseClusterSection({ volumes: d.volumes, pools: d.pools }, this.o.ctx);
    return { volumes: s.volumes, pools: s.pools };
  }

  get document(): ClusterDocument { return this.doc; }
  get current(): Section { return this.section; }
  get diverged(): Divergence | null { return this.divergence; }

  status(): { epoch: number; changedBy: string; changedAt: string; change: string; hash: string; diverged: string | null } {
    const d = this.doc;
    return { epoch: d.epoch, changedBy: d.changedBy, changedAt: d.changedAt, change: d.change, hash: documentHash(d), diverged: this.divergence?.message ?? null };
  }

  /** The API tokens in force. */
  get tokens(): TokenSet { return tokenSetOf(this.doc); }

  /**
   * A change made on this node: the next epoch, checked, on disk before it is applied.
   * `edit` gets the volumes and pools as written, and the tokens, and returns the new ones
   * (tokens left out: they stay as they are). An edit that throws changes nothing.
   */
  change(what: string, edit: (raw: { volumes: unknown[]; pools: unknown[]; tokens: TokenSet }) => { volumes: unknown[]; pools: unknown[]; tokens?: TokenSet }): Section {
    const raw = edit({ volumes: [...this.doc.volumes], pools: [...this.doc.pools], tokens: tokenSetOf(this.doc) });
    const next = changeDocument(this.doc, raw, this.o.node, what, this.now());
    const section = this.parse(next);
    checkTransition(this.section, section);
    this.write(next);
    this.doc = next;
    this.section = section;
    this.o.log.info('cluster configuration changed', { epoch: next.epoch, change: what });
    return section;
  }

  /**
   * The operator settles a divergence: this node's document wins, as a new epoch that descends
   * from both. Its volumes and pools win whole; of the tokens, a revocation on either side
   * stands and a token made on either side stays (mergeForPush).
   */
  push(): ClusterDocument {
    const d = this.divergence;
    if (d === null) throw new ConfigError('ERR_CONFIG', 'the two nodes\' configurations have not diverged: nothing to push');
    const tokens = mergeForPush(tokenSetOf(this.doc), tokenSetOf(d.theirs));
    const dropped = tokens.dropped.length === 0 ? '' : `; the peer's tokens ${tokens.dropped.map((t) => t.name).join(', ')} were dropped (their names are taken here)`;
    const next = changeDocument(this.doc, { volumes: this.doc.volumes, pools: this.doc.pools, tokens: tokens.set }, this.o.node,
      `pushed by an operator on ${this.o.node} over ${d.peerChangedBy}'s epoch ${d.peerEpoch}${dropped}`, this.now(), [d.theirs]);
    this.write(next);
    this.doc = next;
    this.divergence = null;
    return next;
  }

  /** The peer's document, as its CLUSTER message carried it (the peer may speak garbage). */
  receive(document: unknown): Received {
    let theirs: ClusterDocument;
    try {
      theirs = documentFrom(document, 'the peer\'s cluster configuration');
    } catch (e) {
      return { kind: 'refused', message: (e as Error).message };
    }
    const c = compareDocuments(this.doc, theirs);
    if (c === 'same') {
      this.divergence = null;
      return { kind: 'same' };
    }
    if (c === 'mine-newer') return { kind: 'send-ours' };
    if (c === 'diverged') {
      const message = `this node's cluster configuration (epoch ${this.doc.epoch}, ${this.doc.change}) and the peer's (epoch ${theirs.epoch}, ${theirs.change}, by ${theirs.changedBy}) ` +
        'were changed apart: neither is applied over the other. Choose one: tandem config push on the node whose configuration should win';
      this.divergence = { peerEpoch: theirs.epoch, peerChangedBy: theirs.changedBy, peerChange: theirs.change, message, theirs };
      return { kind: 'diverged', message };
    }
    let section: Section;
    try {
      section = this.parse(theirs);
      checkTransition(this.section, section);
    } catch (e) {
      return { kind: 'refused', message: `the peer's cluster configuration (epoch ${theirs.epoch}) is refused: ${(e as Error).message}` };
    }
    this.write(theirs);
    this.doc = theirs;
    this.section = section;
    this.divergence = null;
    return { kind: 'adopted', section };
  }

  /** The CLUSTER message that carries this node's document. */
  message(): string {
    // its size was checked when it was written (every document in force was)
    return JSON.stringify({ kind: 'config', document: { version: 1, ...this.doc } });
  }
}
