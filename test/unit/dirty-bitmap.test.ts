import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import { BitmapError, bitmapGeometry, DirtyBitmap, dirtyBitmapLimits, type ByteRun } from '../../src/core/dirty-bitmap';

const KiB = 1024;
const R = 64 * KiB;
/** ten whole regions and a last one of 1000 bytes */
const V = 10 * R + 1000;

const isBitmapError = (code: string) => (e: unknown): boolean => e instanceof BitmapError && e.code === code;
const regions = (b: DirtyBitmap): number[] => Array.from({ length: b.regionCount }, (_, i) => i).filter((i) => b.isRegionDirty(i));

test('a range marks every region it touches, and only those, at region boundaries', () => {
  const b = new DirtyBitmap({ volumeBytes: V, regionBytes: R });
  assert.equal(b.regionCount, 11);
  b.set(0, R);
  assert.deepEqual(regions(b), [0]);
  b.set(2 * R, R);
  assert.deepEqual(regions(b), [0, 2], 'a range ending exactly at a boundary stops there');
  b.set(4 * R - 1, 2);
  assert.deepEqual(regions(b), [0, 2, 3, 4], 'two bytes straddling a boundary touch both regions');
  b.set(6 * R, 0);
  assert.deepEqual(regions(b), [0, 2, 3, 4], 'an empty range touches nothing');
  assert.equal(b.test(R, R), false);
  assert.equal(b.test(R, R + 1), true);
  assert.equal(b.test(0, 0), false);
});

test('unaligned ranges round outward when set and inward when cleared', () => {
  const b = new DirtyBitmap({ volumeBytes: V, regionBytes: R });
  b.set(100, 10);
  assert.deepEqual(regions(b), [0]);
  assert.equal(b.dirtyBytes, R);
  b.set(R + 5, 3 * R);
  assert.deepEqual(regions(b), [0, 1, 2, 3, 4]);
  b.clear(R / 2, 2 * R);
  assert.deepEqual(regions(b), [0, 2, 3, 4], 'only region 1 lies wholly inside the cleared range');
  b.clear(3 * R, R - 1);
  assert.deepEqual(regions(b), [0, 2, 3, 4], 'a region cleared all but one byte stays dirty');
  b.clear(3 * R, R);
  assert.deepEqual(regions(b), [0, 2, 4]);
});

test('the whole volume, and the last partial region', () => {
  const b = new DirtyBitmap({ volumeBytes: V, regionBytes: R });
  b.set(V - 1, 1);
  assert.deepEqual(regions(b), [10]);
  assert.equal(b.dirtyBytes, 1000, 'the last region counts only the bytes the volume has');
  assert.deepEqual([...b.dirtyRuns()], [{ offset: 10 * R, length: 1000 }]);
  b.clear(10 * R, 999);
  assert.equal(b.dirtyRegions, 1);
  b.clear(10 * R, 1000);
  assert.equal(b.dirtyRegions, 0, 'a clear reaching the end of the volume covers the last region');
  b.set(0, V);
  assert.equal(b.dirtyRegions, 11);
  assert.equal(b.dirtyBytes, V);
  assert.deepEqual([...b.dirtyRuns()], [{ offset: 0, length: V }]);
  b.clear(0, V);
  assert.equal(b.dirtyRegions, 0);
  assert.deepEqual([...b.dirtyRuns()], []);
});

test('dirty runs merge neighbours across byte boundaries and come in order', () => {
  const b = new DirtyBitmap({ volumeBytes: 40 * R, regionBytes: R });
  for (const r of [1, 6, 7, 8, 9, 15, 16, 24, 25, 26, 27, 28, 29, 30, 31, 39]) b.set(r * R, 1);
  assert.deepEqual([...b.dirtyRuns()], [
    { offset: R, length: R }, { offset: 6 * R, length: 4 * R }, { offset: 15 * R, length: 2 * R },
    { offset: 24 * R, length: 8 * R }, { offset: 39 * R, length: R },
  ]);
  b.clearAll();
  assert.equal(b.dirtyRegions, 0);
});

test('out-of-range arguments and bad geometry are refused with codes', () => {
  const b = new DirtyBitmap({ volumeBytes: V, regionBytes: R });
  assert.throws(() => b.set(V, 1), isBitmapError('ERR_BITMAP_RANGE'));
  assert.throws(() => b.set(-1, 1), isBitmapError('ERR_BITMAP_RANGE'));
  assert.throws(() => b.clear(0, V + 1), isBitmapError('ERR_BITMAP_RANGE'));
  assert.throws(() => b.test(0.5, 1), isBitmapError('ERR_BITMAP_RANGE'));
  assert.throws(() => new DirtyBitmap({ volumeBytes: V, regionBytes: 3000 }), isBitmapError('ERR_BITMAP_GEOMETRY'));
  assert.throws(() => new DirtyBitmap({ volumeBytes: V, regionBytes: 2048 }), isBitmapError('ERR_BITMAP_GEOMETRY'));
  assert.throws(() => new DirtyBitmap({ volumeBytes: 0, regionBytes: R }), isBitmapError('ERR_BITMAP_GEOMETRY'));
  assert.throws(() => bitmapGeometry({ volumeBytes: 2 ** 52, regionBytes: 4096 }), isBitmapError('ERR_BITMAP_GEOMETRY'));
  assert.equal(bitmapGeometry({ volumeBytes: 1 }).regionBytes, 64 * KiB, 'default region size');
});

test('serialize and load round-trip; a wrong length or a set padding bit is refused', () => {
  const g = { volumeBytes: V, regionBytes: R };
  const b = new DirtyBitmap(g);
  b.set(0, 1);
  b.set(5 * R, 3 * R);
  b.set(V - 1, 1);
  const bytes = b.serialize();
  assert.equal(bytes.length, 2);
  assert.deepEqual([...bytes], [0b11100001, 0b00000100]);
  const c = DirtyBitmap.load(g, bytes);
  assert.deepEqual(c.serialize(), bytes);
  assert.equal(c.dirtyRegions, b.dirtyRegions);
  assert.equal(c.dirtyBytes, b.dirtyBytes);
  assert.deepEqual(c.takeDirtyPages(), [], 'a loaded bitmap has nothing to persist');
  assert.throws(() => DirtyBitmap.load(g, Buffer.alloc(3)), isBitmapError('ERR_BITMAP_LENGTH'));
  assert.throws(() => DirtyBitmap.load(g, Buffer.alloc(1)), isBitmapError('ERR_BITMAP_LENGTH'));
  assert.throws(() => DirtyBitmap.load(g, Buffer.from([0, 0b00001000])), isBitmapError('ERR_BITMAP_PADDING'));
});

test('union adds the other bitmap and refuses another geometry', () => {
  const g = { volumeBytes: V, regionBytes: R };
  const a = new DirtyBitmap(g);
  const b = new DirtyBitmap(g);
  a.set(0, R);
  b.set(3 * R, 2 * R);
  b.set(V - 1, 1);
  a.union(b);
  assert.deepEqual(regions(a), [0, 3, 4, 10]);
  assert.deepEqual(regions(b), [3, 4, 10], 'the other bitmap is unchanged');
  assert.throws(() => a.union(new DirtyBitmap({ volumeBytes: V, regionBytes: 2 * R })), isBitmapError('ERR_BITMAP_GEOMETRY'));
  assert.throws(() => a.union(new DirtyBitmap({ volumeBytes: V + 1, regionBytes: R })), isBitmapError('ERR_BITMAP_GEOMETRY'));
});

test('takeDirtyPages lists only the pages whose bytes changed, once', () => {
  const regionsPerPage = dirtyBitmapLimits.pageBytes * 8;
  // three pages, the last one short
  const g = { volumeBytes: (2 * regionsPerPage + 100) * 4096, regionBytes: 4096 };
  const b = new DirtyBitmap(g);
  assert.equal(b.pageCount, 3);
  assert.deepEqual(b.takeDirtyPages(), []);
  b.set(0, 1);
  b.set((2 * regionsPerPage + 99) * 4096, 1);
  assert.deepEqual(b.takeDirtyPages(), [0, 2]);
  assert.deepEqual(b.takeDirtyPages(), [], 'taken pages are forgotten');
  b.set(0, 1);
  assert.deepEqual(b.takeDirtyPages(), [], 'setting a set bit changes no byte');
  b.clear(4096, 4096);
  assert.deepEqual(b.takeDirtyPages(), [], 'clearing a clear bit changes no byte');
  b.set((regionsPerPage - 1) * 4096, 2 * 4096);
  assert.deepEqual(b.takeDirtyPages(), [0, 1], 'a range across a page boundary touches both pages');
  assert.equal(b.page(2).length, Math.ceil(100 / 8));
  assert.equal(b.page(0).length, dirtyBitmapLimits.pageBytes);
  b.markPagesDirty([1]);
  assert.deepEqual(b.takeDirtyPages(), [1], 'pages handed back after a failed persist are taken again');
  const other = new DirtyBitmap(g);
  other.set(regionsPerPage * 4096 + 4096 * 20, 1);
  b.union(other);
  assert.deepEqual(b.takeDirtyPages(), [1]);
  b.clearAll();
  assert.deepEqual(b.takeDirtyPages(), [0, 1, 2]);
});

type Op =
  | { readonly op: 'set' | 'clear' | 'test'; readonly a: number; readonly b: number }
  | { readonly op: 'clearAll' }
  | { readonly op: 'union'; readonly ranges: ReadonlyArray<readonly [number, number]> }
  | { readonly op: 'take' };

const arbFraction = fc.double({ min: 0, max: 1, noNaN: true });
const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constantFrom('set' as const, 'clear' as const, 'test' as const), a: arbFraction, b: arbFraction }) },
  { weight: 1, arbitrary: fc.constant({ op: 'clearAll' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('union' as const), ranges: fc.array(fc.tuple(arbFraction, arbFraction), { maxLength: 3 }) }) },
  { weight: 2, arbitrary: fc.constant({ op: 'take' as const }) },
);

/** the naive model: a Set of dirty region indexes, ranges mapped region by region */
function modelRuns(set: ReadonlySet<number>, regionBytes: number, volumeBytes: number): ByteRun[] {
  const runs: Array<{ offset: number; length: number }> = [];
  for (const r of [...set].sort((x, y) => x - y)) {
    const offset = r * regionBytes;
    const length = Math.min(regionBytes, volumeBytes - offset);
    const last = runs[runs.length - 1];
    if (last !== undefined && last.offset + last.length === offset) last.length += length;
    else runs.push({ offset, length });
  }
  return runs;
}

test('property: agrees with a naive Set of regions under any sequence of operations', () => {
  const arbGeometry = fc.record({
    regionBytes: fc.constantFrom(4096, 8192, 65536),
    regionsWhole: fc.integer({ min: 0, max: 3000 }),
    tail: fc.integer({ min: 0, max: 65535 }),
  });
  fc.assert(fc.property(arbGeometry, fc.array(arbOp, { maxLength: 40 }), ({ regionBytes, regionsWhole, tail }, ops) => {
    const volumeBytes = regionsWhole * regionBytes + (tail % regionBytes) + (regionsWhole === 0 ? 1 : 0);
    const g = { volumeBytes, regionBytes };
    const b = new DirtyBitmap(g);
    const model = new Set<number>();
    const range = (x: number, y: number): [number, number] => {
      const lo = Math.floor(Math.min(x, y) * volumeBytes);
      const hi = Math.floor(Math.max(x, y) * volumeBytes);
      return [lo, hi - lo];
    };
    const touched = (offset: number, length: number): number[] => {
      const out: number[] = [];
      if (length === 0) return out;
      for (let r = Math.floor(offset / regionBytes); r * regionBytes < offset + length; r++) out.push(r);
      return out;
    };
    const covered = (offset: number, length: number): number[] =>
      touched(offset, length).filter((r) => r * regionBytes >= offset && Math.min((r + 1) * regionBytes, volumeBytes) <= offset + length);
    /** some operation changed a byte since the last take (perhaps changing it back later) */
    let changed = false;
    for (const o of ops) {
      const before = b.serialize();
      if (o.op === 'set') {
        const [off, len] = range(o.a, o.b);
        b.set(off, len);
        for (const r of touched(off, len)) model.add(r);
      } else if (o.op === 'clear') {
        const [off, len] = range(o.a, o.b);
        b.clear(off, len);
        for (const r of covered(off, len)) model.delete(r);
      } else if (o.op === 'test') {
        const [off, len] = range(o.a, o.b);
        assert.equal(b.test(off, len), touched(off, len).some((r) => model.has(r)));
      } else if (o.op === 'clearAll') {
        b.clearAll();
        model.clear();
      } else if (o.op === 'union') {
        const other = new DirtyBitmap(g);
        for (const [x, y] of o.ranges) {
          const [off, len] = range(x, y);
          other.set(off, len);
          for (const r of touched(off, len)) model.add(r);
        }
        b.union(other);
      } else {
        // with at most one page here, the page is listed exactly when an operation changed its bytes
        assert.deepEqual(b.takeDirtyPages(), changed ? [0] : []);
        changed = false;
      }
      if (!b.serialize().equals(before)) changed = true;
      assert.equal(b.dirtyRegions, model.size);
    }
    const runs = modelRuns(model, regionBytes, volumeBytes);
    assert.deepEqual([...b.dirtyRuns()], runs);
    assert.equal(b.dirtyBytes, runs.reduce((n, r) => n + r.length, 0));
    assert.deepEqual(regions(b), [...model].sort((x, y) => x - y));
    const copy = DirtyBitmap.load(g, b.serialize());
    assert.deepEqual(copy.serialize(), b.serialize());
    assert.deepEqual([...copy.dirtyRuns()], runs);
  }), { numRuns: 300 });
});

test('property: across many pages, takeDirtyPages lists exactly the pages whose bytes differ from the last take', () => {
  const regionsPerPage = dirtyBitmapLimits.pageBytes * 8;
  const g = { volumeBytes: (4 * regionsPerPage + 777) * 4096, regionBytes: 4096 };
  const arbStep = fc.record({
    op: fc.constantFrom('set', 'clear', 'take'),
    region: fc.nat(5 * regionsPerPage),
    regionsLong: fc.nat(40),
  });
  fc.assert(fc.property(fc.array(arbStep, { maxLength: 60 }), (steps) => {
    const b = new DirtyBitmap(g);
    let last = b.serialize();
    /** pages where some operation changed a byte since the last take (it may have changed back since) */
    const touchedPages = new Set<number>();
    const check = (): void => {
      const now = b.serialize();
      const taken = b.takeDirtyPages();
      assert.deepEqual(taken, [...touchedPages].sort((x, y) => x - y));
      for (let p = 0; p < b.pageCount; p++) {
        const at = p * dirtyBitmapLimits.pageBytes;
        const page = (x: Buffer): Buffer => x.subarray(at, at + dirtyBitmapLimits.pageBytes);
        if (!page(now).equals(page(last))) assert.ok(taken.includes(p), `page ${p} differs from the last take but was not listed`);
      }
      touchedPages.clear();
      last = now;
    };
    for (const s of steps) {
      const offset = Math.min(s.region, b.regionCount - 1) * 4096;
      const length = Math.min(s.regionsLong * 4096, g.volumeBytes - offset);
      if (s.op === 'take') {
        check();
        continue;
      }
      const before = b.serialize();
      if (s.op === 'set') b.set(offset, length);
      else b.clear(offset, length);
      const after = b.serialize();
      for (let i = 0; i < after.length; i++) if (after[i] !== before[i]) touchedPages.add(Math.floor(i / dirtyBitmapLimits.pageBytes));
    }
    check();
  }), { numRuns: 200 });
});
