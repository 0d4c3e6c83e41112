import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferPool } from '../../src/io/buffer-pool';

const KiB = 1024;

test('a buffer given back is lent again, through any view of it', () => {
  const pool = new BufferPool(4 * 1024 * KiB);
  const a = pool.take(1000 * KiB);
  assert.equal(a.length, 1024 * KiB, 'rounded up to its size class');
  pool.give(a.subarray(36, 500));
  const b = pool.take(700 * KiB);
  assert.equal(b.buffer, a.buffer, 'the same memory');
  assert.equal(b.length, 1024 * KiB);
});

test('memory the pool did not lend, or that came back already, is never taken', () => {
  const pool = new BufferPool(4 * 1024 * KiB);
  const foreign = Buffer.allocUnsafeSlow(1024 * KiB);
  pool.give(foreign);
  assert.notEqual(pool.take(1024 * KiB).buffer, foreign.buffer, 'a socket chunk must not be handed out');
  const a = pool.take(1024 * KiB);
  pool.give(a);
  pool.give(a);
  const first = pool.take(1024 * KiB);
  const second = pool.take(1024 * KiB);
  assert.equal(first.buffer, a.buffer);
  assert.notEqual(second.buffer, a.buffer, 'given twice, lent once');
});

test('the pool keeps at most bytesMax; small buffers are not pooled', () => {
  const pool = new BufferPool(1024 * KiB);
  const a = pool.take(1024 * KiB);
  const b = pool.take(1024 * KiB);
  pool.give(a);
  pool.give(b);
  assert.equal(pool.take(1024 * KiB).buffer, a.buffer);
  assert.notEqual(pool.take(1024 * KiB).buffer, b.buffer, 'b did not fit under the cap');
  const small = pool.take(100);
  assert.equal(small.length, 100);
  pool.give(small);
  assert.notEqual(pool.take(64 * KiB).buffer, small.buffer, 'Node\'s shared small-buffer memory is not the pool\'s');
});
