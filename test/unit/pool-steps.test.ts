// Taking a pool over step by step: a failing step undoes the ones before it,
// newest first, and nothing after it runs; a release goes on past a failure.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { releaseSteps, runSteps, StepFailed, type Step, type StepReport } from '../../src/pool/steps';

function recorder(): { trail: string[]; step(name: string, o?: { failRun?: boolean; failUndo?: boolean }): Step } {
  const trail: string[] = [];
  return {
    trail,
    step: (name, o = {}) => ({
      name,
      run: async () => { trail.push(`run ${name}`); if (o.failRun === true) throw new Error(`${name} broke`); },
      undo: async () => { trail.push(`undo ${name}`); if (o.failUndo === true) throw new Error(`${name} stuck`); },
    }),
  };
}

test('all steps succeed: run in order, each reported once with its duration', async () => {
  const r = recorder();
  const reports: StepReport[] = [];
  await runSteps([r.step('promote'), r.step('address'), r.step('export')], (x) => reports.push(x));
  assert.deepEqual(r.trail, ['run promote', 'run address', 'run export']);
  assert.deepEqual(reports.map((x) => `${x.phase} ${x.step} ${x.ok}`), ['run promote true', 'run address true', 'run export true']);
  assert.ok(reports.every((x) => Number.isInteger(x.ms) && x.ms >= 0));
});

test('a failing step undoes the ones before it, newest first, and the later ones never run', async () => {
  const r = recorder();
  const reports: StepReport[] = [];
  await assert.rejects(
    runSteps([r.step('promote'), r.step('address'), r.step('export', { failRun: true }), r.step('application')], (x) => reports.push(x)),
    (e: unknown) => e instanceof StepFailed && e.step === 'export' && /export failed: export broke$/.test(e.message),
  );
  assert.deepEqual(r.trail, ['run promote', 'run address', 'run export', 'undo address', 'undo promote']);
  assert.deepEqual(reports.map((x) => `${x.phase} ${x.step} ${x.ok}`), [
    'run promote true', 'run address true', 'run export false', 'undo address true', 'undo promote true',
  ]);
  assert.equal(reports[2]?.error, 'export broke');
});

test('an undo that fails is reported and named in the error, and the earlier undos still run', async () => {
  const r = recorder();
  await assert.rejects(
    runSteps([r.step('promote'), r.step('address', { failUndo: true }), r.step('export', { failRun: true })], () => undefined),
    (e: unknown) => e instanceof StepFailed && e.undoErrors.length === 1 && /undoing: address: address stuck/.test(e.message),
  );
  assert.deepEqual(r.trail, ['run promote', 'run address', 'run export', 'undo address', 'undo promote']);
});

test('a release undoes every step newest first, going on past a failure, and returns the failures', async () => {
  const r = recorder();
  const reports: StepReport[] = [];
  const errors = await releaseSteps([r.step('promote'), r.step('address', { failUndo: true }), r.step('export')], (x) => reports.push(x));
  assert.deepEqual(r.trail, ['undo export', 'undo address', 'undo promote']);
  assert.deepEqual(errors, ['address: address stuck']);
  assert.ok(reports.every((x) => x.phase === 'release'));
});
