// Reading a range of a store for a resync or a verify: holes read as zeroes
// without touching the disk, and are reported, so a caller can skip
// comparing or hashing bytes it already knows are zero.
import { createHash } from 'node:crypto';
import type { Backend } from '../storage/backend';

/** [start, end) */
export interface Span { readonly start: number; readonly end: number }

/**
 * Fills buf from offset and returns the ranges of buf known to be zero (sorted, relative to
 * buf). With `fillHoles` false those ranges are left as they were, for a caller that treats
 * them as zeroes without looking at them.
 */
export async function readFast(backend: Backend, buf: Buffer, offset: number, fillHoles = true): Promise<Span[]> {
  const ext = await backend.extents(offset, buf.length, 1024);
  const zero: Span[] = [];
  let covered = offset;
  for (const e of ext) {
    if (e.offset !== covered) break;
    const start = e.offset - offset;
    const into = buf.subarray(start, start + e.length);
    if (e.hole || e.zero) {
      if (fillHoles) into.fill(0);
      zero.push({ start, end: start + e.length });
    } else {
      await backend.read(into, e.offset);
    }
    covered = e.offset + e.length;
  }
  if (covered < offset + buf.length) await backend.read(buf.subarray(covered - offset), covered);
  return zero;
}

/**
 * Walks buf in pieces of `piece` bytes, with the zero spans readFast gave for it with
 * `fillHoles` false: `each` learns whether a piece lies wholly in those spans (its bytes
 * were never filled: do not look at them). A piece only partly in them has those parts
 * zero-filled first, so all its bytes can be read.
 */
export function forEachPiece(buf: Buffer, zero: readonly Span[], piece: number, each: (start: number, end: number, known: boolean) => void): void {
  let h = 0;
  for (let start = 0; start < buf.length; start += piece) {
    const end = Math.min(start + piece, buf.length);
    while (h < zero.length && (zero[h] as Span).end <= start) h++;
    const first = zero[h];
    if (first !== undefined && first.start <= start && first.end >= end) {
      each(start, end, true);
      continue;
    }
    for (let k = h; k < zero.length && (zero[k] as Span).start < end; k++) {
      const part = zero[k] as Span;
      buf.fill(0, Math.max(start, part.start), Math.min(end, part.end));
    }
    each(start, end, false);
  }
}

export function sha256(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest();
}

const zeroHashes = new Map<number, Buffer>();

/** the SHA-256 of `length` zero bytes (a block, or a shorter last block) */
export function zeroHash(length: number): Buffer {
  let h = zeroHashes.get(length);
  if (h === undefined) {
    h = sha256(Buffer.alloc(length));
    zeroHashes.set(length, h);
  }
  return h;
}
