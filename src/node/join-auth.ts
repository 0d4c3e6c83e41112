// How a joining node proves it holds the cluster secret without sending it, and how the
// first node proves it back (docs/cluster-setup.md, "The join exchange"): a one-time nonce
// from the first node, then HMAC-SHA256 over a canonical encoding of the join request.
import crypto from 'node:crypto';
import { canonicalJson } from '../util/canonical-json';
import type { SharedSettings } from './join-token';

export const joinAuthLimits = {
  nonceBytes: 32,
  /** a nonce is good for one join request within this long */
  nonceTtlMs: 30_000,
  /** nonces handed out and not yet used; the oldest goes first when more are asked for */
  noncesOutstandingMax: 64,
  macBytes: 32,
} as const;

/** The key of the join exchange: HKDF-SHA256(secret, salt = cluster id, info "tandem-join-v1"), as the heartbeat key is made. */
export function joinKey(clusterId: Buffer, secret: Buffer): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', secret, clusterId, 'tandem-join-v1', 32));
}

/**
 * An unambiguous encoding of fields in a fixed layout (each message starts with its own tag):
 * each string a 4-byte big-endian length and its UTF-8 bytes, a list its item count (as a
 * string field) then its items. Within one layout, no two different sets of values encode alike.
 */
export function canonicalFields(fields: ReadonlyArray<string | readonly string[]>): Buffer {
  const parts: Buffer[] = [];
  const one = (s: string): void => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    parts.push(len, b);
  };
  for (const f of fields) {
    if (typeof f === 'string') {
      one(f);
    } else {
      one(String(f.length));
      for (const x of f) one(x);
    }
  }
  return Buffer.concat(parts);
}

/** What the joining node asks: everything in it is covered by the MAC. */
export interface JoinRequestFields {
  /** hex */
  readonly clusterId: string;
  /** the joining node's name */
  readonly node: string;
  /** where the first node reaches the joining node's sync listener */
  readonly syncAddress: string;
  /** where the first node (and a console on it) reaches the joining node's API */
  readonly apiAddress: string;
  /** the joining node's heartbeat listen addresses, in link order (empty: the default link) */
  readonly heartbeat: readonly string[];
  /** the shared settings the joining node will write, from the token */
  readonly settings: SharedSettings;
  /** hex, as the first node handed it out */
  readonly nonce: string;
}

export function requestMac(key: Buffer, r: JoinRequestFields): Buffer {
  const data = canonicalFields(['tandem-join-request-v2', r.clusterId, r.nonce, r.node, r.syncAddress, r.apiAddress, r.heartbeat, canonicalJson(r.settings)]);
  return crypto.createHmac('sha256', key).update(data).digest();
}

/** The first node's answer: it accepted this very request (its MAC), as `node`, for `peer`. */
export function acceptMac(key: Buffer, a: { clusterId: string; nonce: string; requestMac: string; node: string; peer: string }): Buffer {
  const data = canonicalFields(['tandem-join-accept-v1', a.clusterId, a.nonce, a.requestMac, a.node, a.peer]);
  return crypto.createHmac('sha256', key).update(data).digest();
}

/** A MAC given as hex, compared in constant time; false for anything that is not 32 bytes of hex. */
export function macMatches(expected: Buffer, givenHex: unknown): boolean {
  if (typeof givenHex !== 'string' || !/^[0-9a-f]{64}$/.test(givenHex)) return false;
  return crypto.timingSafeEqual(expected, Buffer.from(givenHex, 'hex'));
}

/** One-time nonces, each good for nonceTtlMs; the clock is injected so tests can move it. */
export class NonceStore {
  private readonly issued = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now, private readonly random: (n: number) => Buffer = crypto.randomBytes) {}

  issue(): { nonce: string; expiresInMs: number } {
    this.prune();
    while (this.issued.size >= joinAuthLimits.noncesOutstandingMax) {
      const oldest = this.issued.keys().next().value as string;
      this.issued.delete(oldest);
    }
    const nonce = this.random(joinAuthLimits.nonceBytes).toString('hex');
    this.issued.set(nonce, this.now() + joinAuthLimits.nonceTtlMs);
    return { nonce, expiresInMs: joinAuthLimits.nonceTtlMs };
  }

  /** True once for a nonce handed out less than nonceTtlMs ago; it is gone afterwards, whatever the request's fate. */
  consume(nonce: string): boolean {
    const expires = this.issued.get(nonce);
    if (expires === undefined) return false;
    this.issued.delete(nonce);
    return this.now() <= expires;
  }

  get outstanding(): number {
    this.prune();
    return this.issued.size;
  }

  private prune(): void {
    const t = this.now();
    for (const [n, expires] of this.issued) if (expires < t) this.issued.delete(n);
  }
}
