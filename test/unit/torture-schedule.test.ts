// The torture's schedule is a pure function of its seed (docs/torture.md), and
// the checker's verdicts on records, logs and copies are what the run reports.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { checkCopy, countMoves, expectations, longestGap, overlappingRuns, parseAckRuns, parseActivations, type AckRun } from '../../torture/checker';
import { BLOCK_SIZE, blockContent, contentHash, formatRecord, parseRecords, type WriteRecord } from '../../torture/client';
import { FAULT_KINDS, formatSchedule, generateSchedule, parseDuration, prng, ScheduleError, type ScheduleOptions } from '../../torture/schedule';

const random = (seed: number, durationMs = 600_000): ScheduleOptions => ({ seed, durationMs, profile: 'random' });

test('the same seed gives the same schedule; another seed another one', () => {
  for (const seed of [0, 1, 42, 0xffff_ffff]) {
    const a = generateSchedule(random(seed));
    const b = generateSchedule(random(seed));
    assert.deepEqual(a, b, `seed ${seed}`);
    assert.equal(formatSchedule(a), formatSchedule(b));
    const other = (seed ^ 1) >>> 0;
    assert.notDeepEqual(a, generateSchedule(random(other)), `seeds ${seed} and ${other}`);
  }
  const p1 = { seed: 7, durationMs: 60_000, profile: 'crash-primary' } as const;
  assert.deepEqual(generateSchedule(p1), generateSchedule(p1));
  assert.notDeepEqual(generateSchedule(p1), generateSchedule({ ...p1, seed: 8 }));
  // 100 seeds, 100 different schedules
  const seen = new Set(Array.from({ length: 100 }, (_, i) => JSON.stringify(generateSchedule(random(i, 120_000)))));
  assert.equal(seen.size, 100);
});

test('a schedule is in time order, within the run, and uses every kind over a long run', () => {
  for (let seed = 0; seed < 50; seed++) {
    const s = generateSchedule(random(seed));
    assert.ok(s.length >= 40, `seed ${seed}: ${s.length} faults in 10 minutes`);
    s.forEach((f, i) => {
      assert.equal(f.n, i + 1);
      if (i > 0) assert.ok(f.atMs > (s[i - 1] as typeof f).atMs, `seed ${seed}: #${f.n} after #${f.n - 1}`);
      assert.ok(f.atMs >= 3_000 && f.durationMs > 0 && f.atMs + f.durationMs <= 600_000, `seed ${seed}: #${f.n} ${JSON.stringify(f)}`);
      assert.equal(f.peer !== undefined, f.kind === 'cut' || f.kind === 'cut-one-way');
      assert.notEqual(f.peer, f.target);
      if (f.kind === 'disk-stall' || f.kind === 'crash') assert.notEqual(f.target, 'witness');
    });
    assert.deepEqual(new Set(s.map((f) => f.kind)), new Set(FAULT_KINDS), `seed ${seed} draws every kind`);
  }
  const only = generateSchedule({ ...random(3), kinds: ['pause', 'cut-one-way'] });
  assert.ok(only.length > 0 && only.every((f) => f.kind === 'pause' || f.kind === 'cut-one-way'));
  const crashes = generateSchedule({ seed: 3, durationMs: 60_000, profile: 'crash-primary' });
  assert.ok(crashes.length >= 3 && crashes.every((f) => f.kind === 'crash' && f.target === 'primary' && f.atMs + f.durationMs <= 60_000));
});

test('bad schedule options are refused; durations parse', () => {
  assert.throws(() => generateSchedule(random(-1)), ScheduleError);
  assert.throws(() => generateSchedule(random(2 ** 32)), ScheduleError);
  assert.throws(() => generateSchedule(random(1, 10)), ScheduleError);
  assert.throws(() => generateSchedule({ ...random(1), kinds: [] }), ScheduleError);
  assert.equal(parseDuration('10m'), 600_000);
  assert.equal(parseDuration('120s'), 120_000);
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('1500ms'), 1_500);
  assert.equal(parseDuration('90'), 90_000);
  for (const bad of ['', 'm', '10x', '5m trailing']) assert.equal(typeof parseDuration(bad), 'string', bad);
  // the generator is portable: its first values are fixed
  const r = prng(1);
  assert.deepEqual([r(), r(), r()].map((x) => x.toFixed(6)), ['0.627074', '0.002736', '0.527447']);
});

function rec(seq: number, block: number, outcome: WriteRecord['outcome'], doneAt = 1_000 + seq): WriteRecord {
  return { seq, block, issuedAt: doneAt - 1, doneAt, outcome, hash: contentHash(blockContent(block, seq)) };
}

test('the checker: newest acknowledged write or a later unacknowledged one; anything older is a lost write', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-torture-unit-'));
  try {
    const file = path.join(dir, 'copy.img');
    const blocks = 8;
    const img = Buffer.alloc(blocks * BLOCK_SIZE);
    const put = (block: number, seq: number): void => { blockContent(block, seq).copy(img, block * BLOCK_SIZE); };
    const records = [
      rec(1, 0, 'ack'), rec(2, 0, 'ack'), // block 0: holds 2, fine
      rec(3, 1, 'ack'), rec(4, 1, 'lost'), // block 1: holds 4, the unanswered later write: fine
      rec(5, 2, 'ack'), rec(6, 2, 'ack'), // block 2: holds 5: seq 6 is lost
      rec(7, 3, 'ack'), // block 3: zeros: lost
      rec(8, 4, 'err'), // block 4: never acknowledged: zeros are fine
      rec(9, 5, 'ack'), // block 5: holds block 6's data: lost
    ];
    put(0, 2); put(1, 4); put(2, 5);
    // block 5 holds block 6's pattern; blocks 6 and 7 were never written and hold data
    blockContent(6, 9).copy(img, 5 * BLOCK_SIZE);
    put(6, 9); put(7, 1);
    fs.writeFileSync(file, img);
    const text = records.map(formatRecord).join('') + '12 3 4'; // a torn last line
    const parsed = parseRecords(text);
    assert.equal(parsed.torn, 1);
    assert.deepEqual(parsed.records, records);
    const c = checkCopy(file, expectations(parsed.records));
    assert.equal(c.blocks, blocks);
    assert.deepEqual(c.lost.map((b) => [b.block, b.expected?.seq, b.found]), [[2, 6, 'seq 5'], [3, 7, 'zeros'], [5, 9, 'the pattern of block 6 seq 9']]);
    assert.deepEqual(c.unexpected.map((b) => b.block).sort(), [6, 7]);
    assert.equal(c.unackedLanded, 1);
    assert.equal(c.ok, 3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the checker: spans of acknowledged writes on two nodes that overlap are two writers', () => {
  const line = (node: string, from: string, until: string, writes: number): string =>
    `${until} info  node ${node}/vol0: accepted client writes volume=vol0 from=${from} until=${until} writes=${writes}`;
  const alphaLog = [
    '===== alpha: start #1 at 2030-01-01T00:00:00.000Z =====',
    line('alpha', '2030-01-01T00:00:01.000Z', '2030-01-01T00:00:02.000Z', 10),
    line('alpha', '2030-01-01T00:00:05.000Z', '2030-01-01T00:00:06.000Z', 10),
    '2030-01-01T00:00:01.500Z info  node alpha/cluster: pool pool0: ACTIVE at term 1 event=activated',
  ].join('\n');
  const betaLog = [
    line('beta', '2030-01-01T00:00:03.000Z', '2030-01-01T00:00:04.000Z', 5),
    line('beta', '2030-01-01T00:00:05.900Z', '2030-01-01T00:00:07.000Z', 5),
    '2030-01-01T00:00:03.000Z info  node beta/cluster: pool pool0: ACTIVE at term 2 event=activated',
    '2030-01-01T00:00:08.000Z info  node beta/cluster: pool pool1: ACTIVE at term 2 event=activated',
  ].join('\n');
  const a = parseAckRuns(alphaLog, 'alpha', 'vol0');
  const b = parseAckRuns(betaLog, 'beta', 'vol0');
  assert.equal(a.length, 2);
  assert.equal(parseAckRuns(alphaLog, 'alpha', 'vol1').length, 0);
  const o = overlappingRuns(a, b);
  assert.equal(o.length, 1);
  assert.deepEqual(o.map(([x, y]) => [x.from, y.from]), [[Date.parse('2030-01-01T00:00:05.000Z'), Date.parse('2030-01-01T00:00:05.900Z')]]);
  // back to back is not overlapping
  const touching: AckRun[] = [{ node: 'beta', from: Date.parse('2030-01-01T00:00:02.001Z'), until: Date.parse('2030-01-01T00:00:04.999Z'), writes: 1 }];
  assert.equal(overlappingRuns(a, touching).length, 0);
  const acts = [...parseActivations(alphaLog, 'pool0'), ...parseActivations(betaLog, 'pool0')];
  assert.equal(acts.length, 2);
  assert.equal(countMoves(acts), 1);
  assert.deepEqual(longestGap([10, 20, 25, 60, 61], 0, 100), { ms: 35, from: 25, until: 60 });
});
