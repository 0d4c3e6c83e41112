// What the torture proves, from what the clients recorded, what the nodes
// logged and what the two copies hold once everything has stopped:
//
// (a) every acknowledged write is there: each block holds its newest
//     acknowledged write, or a write issued after it that was never
//     acknowledged (it may have landed); a block never acknowledged may also
//     still be zeros; a block nobody wrote is zeros.
// (b) no two nodes accepted client writes for the volume at overlapping times
//     (the spans of acknowledgements each node logs: 'accepted client writes').
// (c) both copies end identical.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { decodeBlock } from '../test/helpers/acked-writer';
import { BLOCK_SIZE, contentHash, type WriteRecord } from './client';

// ---------------------------------------------------------------- (a) acknowledged writes

/** per block: its newest acknowledged write, and the writes after it that were never acknowledged */
export interface BlockExpectation {
  readonly acked: WriteRecord | undefined;
  readonly maybe: readonly WriteRecord[];
  /** every write to the block, by seq, for describing what was found instead */
  readonly all: readonly WriteRecord[];
}

export function expectations(records: Iterable<WriteRecord>): Map<number, BlockExpectation> {
  const byBlock = new Map<number, WriteRecord[]>();
  for (const r of records) {
    let l = byBlock.get(r.block);
    if (l === undefined) byBlock.set(r.block, (l = []));
    l.push(r);
  }
  const out = new Map<number, BlockExpectation>();
  for (const [block, l] of byBlock) {
    l.sort((x, y) => x.seq - y.seq);
    let acked: WriteRecord | undefined;
    for (const r of l) if (r.outcome === 'ack') acked = r;
    const maybe = l.filter((r) => r.outcome !== 'ack' && (acked === undefined || r.seq > acked.seq));
    out.set(block, { acked, maybe, all: l });
  }
  return out;
}

export interface BadBlock {
  readonly block: number;
  /** the newest acknowledged write the block should hold (or a later unacknowledged one) */
  readonly expected: WriteRecord | undefined;
  readonly found: string;
  /** found an older write of this block: which one */
  readonly foundRecord?: WriteRecord;
}

export interface CopyCheck {
  readonly blocks: number;
  /** blocks holding their newest acknowledged write, or an allowed later one */
  readonly ok: number;
  /** blocks whose newest acknowledged write is missing: acknowledged writes lost */
  readonly lost: BadBlock[];
  /** blocks holding what nobody wrote there (another block's data, garbage, data in a block never written) */
  readonly unexpected: BadBlock[];
  /** blocks holding a write issued after the newest acknowledged one (allowed) */
  readonly unackedLanded: number;
  readonly sha256: string;
}

/** Checks every block of a copy against the expectations; reads the file once. */
export function checkCopy(file: string, exp: ReadonlyMap<number, BlockExpectation>): CopyCheck {
  const fd = fs.openSync(file, 'r');
  const hash = createHash('sha256');
  const lost: BadBlock[] = [];
  const unexpected: BadBlock[] = [];
  let ok = 0;
  let unackedLanded = 0;
  let blocks = 0;
  try {
    const size = fs.fstatSync(fd).size;
    const chunk = Buffer.alloc(1024 * 1024);
    for (let at = 0; at < size; at += chunk.length) {
      const n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, size - at), at);
      hash.update(chunk.subarray(0, n));
      for (let off = 0; off + BLOCK_SIZE <= n; off += BLOCK_SIZE) {
        const block = (at + off) / BLOCK_SIZE;
        blocks++;
        const data = chunk.subarray(off, off + BLOCK_SIZE);
        const e = exp.get(block);
        const d = decodeBlock(data);
        if (e === undefined) {
          if (d.kind === 'zeros') ok++;
          else unexpected.push({ block, expected: undefined, found: describeDecoded(d) });
          continue;
        }
        if (d.kind === 'zeros') {
          if (e.acked === undefined) ok++;
          else lost.push({ block, expected: e.acked, found: 'zeros' });
          continue;
        }
        if (d.kind === 'pattern' && d.index === block) {
          const rec = e.all.find((r) => r.seq === d.seq);
          const sameContent = rec !== undefined && contentHash(data) === rec.hash;
          if (sameContent && rec === e.acked) { ok++; continue; }
          if (sameContent && e.maybe.includes(rec)) { ok++; unackedLanded++; continue; }
          if (rec !== undefined && sameContent) {
            // an older write of this block: the acknowledged one after it is gone
            (e.acked === undefined ? unexpected : lost).push({ block, expected: e.acked, found: `seq ${d.seq}`, foundRecord: rec });
            continue;
          }
        }
        (e.acked === undefined ? unexpected : lost).push({ block, expected: e.acked, found: describeDecoded(d) });
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return { blocks, ok, lost, unexpected, unackedLanded, sha256: hash.digest('hex') };
}

function describeDecoded(d: ReturnType<typeof decodeBlock>): string {
  if (d.kind === 'zeros') return 'zeros';
  if (d.kind === 'pattern') return `the pattern of block ${d.index} seq ${d.seq}`;
  return `bytes ${d.head}…`;
}

/** Blocks at which two copies differ (first `max` of them) and how many in all. */
export function diffCopies(a: string, b: string, max = 10): { count: number; first: number[] } {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const first: number[] = [];
  let count = 0;
  try {
    const size = Math.max(fs.fstatSync(fa).size, fs.fstatSync(fb).size);
    const ba = Buffer.alloc(1024 * 1024);
    const bb = Buffer.alloc(1024 * 1024);
    for (let at = 0; at < size; at += ba.length) {
      const len = Math.min(ba.length, size - at);
      ba.fill(0, 0, len);
      bb.fill(0, 0, len);
      fs.readSync(fa, ba, 0, len, at);
      fs.readSync(fb, bb, 0, len, at);
      if (ba.subarray(0, len).equals(bb.subarray(0, len))) continue;
      for (let off = 0; off < len; off += BLOCK_SIZE) {
        const end = Math.min(off + BLOCK_SIZE, len);
        if (ba.subarray(off, end).equals(bb.subarray(off, end))) continue;
        count++;
        if (first.length < max) first.push((at + off) / BLOCK_SIZE);
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
  return { count, first };
}

// ---------------------------------------------------------------- (b) one writer at a time

export interface AckRun {
  readonly node: string;
  /** ms since the epoch: the first and last acknowledgement of the span */
  readonly from: number;
  readonly until: number;
  readonly writes: number;
}

const ACK_RUN = /accepted client writes .*?\bfrom=(\S+) until=(\S+) writes=(\d+)/;

/** The spans of acknowledged client writes a node logged ('accepted client writes … from=… until=… writes=…'). */
export function parseAckRuns(log: string, node: string, volume: string): AckRun[] {
  const out: AckRun[] = [];
  for (const line of log.split('\n')) {
    if (!line.includes('accepted client writes') || !line.includes(`volume=${volume} `)) continue;
    const m = ACK_RUN.exec(line);
    if (m === null) continue;
    const from = Date.parse(m[1] as string);
    const until = Date.parse(m[2] as string);
    if (!Number.isFinite(from) || !Number.isFinite(until)) continue;
    out.push({ node, from, until, writes: Number(m[3]) });
  }
  return out.sort((x, y) => x.from - y.from);
}

/** Pairs of spans, one of each node, that overlap in time. */
export function overlappingRuns(a: readonly AckRun[], b: readonly AckRun[]): Array<readonly [AckRun, AckRun]> {
  const out: Array<readonly [AckRun, AckRun]> = [];
  let j0 = 0;
  for (const x of a) {
    while (j0 < b.length && (b[j0] as AckRun).until < x.from) j0++;
    for (let j = j0; j < b.length && (b[j] as AckRun).from <= x.until; j++) {
      const y = b[j] as AckRun;
      if (y.until >= x.from) out.push([x, y]);
    }
  }
  return out;
}

/** which node's logged span covers time t, if any */
export function ackerAt(runs: readonly AckRun[], t: number): string | undefined {
  return runs.find((r) => r.from <= t && t <= r.until)?.node;
}

// ---------------------------------------------------------------- failovers and unavailability

export interface Activation { readonly node: string; readonly at: number; readonly term: number }

const ACTIVATED = /^(\S+Z) \w+\s+node (\S+?)\/cluster: pool (\S+): ACTIVE at term (\d+).*\bevent=activated\b/;

/** Every 'pool P: ACTIVE at term N' a node logged, in time order. */
export function parseActivations(log: string, pool: string): Activation[] {
  const out: Activation[] = [];
  for (const line of log.split('\n')) {
    const m = ACTIVATED.exec(line);
    if (m === null || m[3] !== pool) continue;
    out.push({ at: Date.parse(m[1] as string), node: m[2] as string, term: Number(m[4]) });
  }
  return out;
}

/** how many times the pool came up on another node than the one before */
export function countMoves(acts: readonly Activation[]): number {
  const sorted = [...acts].sort((x, y) => x.at - y.at);
  let moves = 0;
  for (let i = 1; i < sorted.length; i++) if ((sorted[i] as Activation).node !== (sorted[i - 1] as Activation).node) moves++;
  return moves;
}

/** lines of a node log with this event name */
export function countEvents(log: string, event: string): number {
  let n = 0;
  for (const line of log.split('\n')) if (line.endsWith(` event=${event}`) || line.includes(` event=${event} `)) n++;
  return n;
}

export interface Gap { readonly ms: number; readonly from: number; readonly until: number }

/** The longest time between two consecutive acknowledgements (of any client) within [from, until]. */
export function longestGap(ackTimes: readonly number[], from: number, until: number): Gap {
  const t = ackTimes.filter((x) => x >= from && x <= until).sort((x, y) => x - y);
  let best: Gap = { ms: 0, from, until: from };
  for (let i = 1; i < t.length; i++) {
    const ms = (t[i] as number) - (t[i - 1] as number);
    if (ms > best.ms) best = { ms, from: t[i - 1] as number, until: t[i] as number };
  }
  return best;
}
