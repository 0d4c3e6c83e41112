// Notification hooks: config checks, the filter, order and once-only delivery,
// and the bounded queue of a hook slower than the events.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ActivityEntry } from '../../src/node/cluster-driver';
import { Notifier, notifyLimits, parseNotify, type Deliver, type Notification } from '../../src/node/notify';
import { createLogger } from '../../src/util/log';

const quiet = createLogger('test', () => undefined);

function entry(i: number, level: ActivityEntry['level'] = 'info', event = 'takeover'): ActivityEntry {
  return { at: new Date(1_700_000_000_000 + i).toISOString(), level, event, message: `entry ${i}` };
}

test('notify config: defaults, and each bad key named', () => {
  assert.deepEqual(parseNotify(undefined), []);
  const [h] = parseNotify([{ command: 'logger -t tandem "$TANDEM_MESSAGE"' }]);
  assert.deepEqual(h, { target: { kind: 'command', command: 'logger -t tandem "$TANDEM_MESSAGE"' }, events: [], minLevel: 'info', timeoutMs: 10_000 });
  const bad: Array<[unknown, RegExp]> = [
    [[{}], /notify\[0\]: give exactly one of "command" and "webhook"/],
    [[{ command: 'x', webhook: 'http://a' }], /exactly one/],
    [[{ webhook: 'ftp://a' }], /notify\[0\]\.webhook: must be an http/],
    [[{ command: 'x', events: ['Take Over'] }], /notify\[0\]\.events: must be a list of activity event names/],
    [[{ command: 'x', minLevel: 'debug' }], /minLevel: must be "info", "warn" or "error"/],
    [[{ command: 'x', timeoutMs: 5 }], /timeoutMs: must be an integer from 100/],
    [[{ command: 'x', retries: 3 }], /notify\[0\]\.retries: unknown key/],
    [Array.from({ length: 9 }, () => ({ command: 'x' })), /notify: must be a list of at most 8 hooks/],
  ];
  for (const [v, re] of bad) assert.throws(() => parseNotify(v), re, JSON.stringify(v).slice(0, 80));
});

test('each hook gets the entries its filter matches, once each, in order, one at a time', async () => {
  const got: Record<string, Notification[]> = { all: [], errors: [], takeovers: [] };
  let inFlight = 0;
  const deliver: Deliver = async (hook, n) => {
    inFlight++;
    assert.equal(inFlight <= 3, true);
    const name = hook.minLevel === 'error' ? 'errors' : hook.events.length > 0 ? 'takeovers' : 'all';
    // a slow hook must not be overtaken by its own next entry
    await new Promise((r) => setTimeout(r, (n.seq % 3) * 2));
    got[name]?.push(n);
    inFlight--;
    return { ok: true, detail: '' };
  };
  const hooks = parseNotify([{ command: 'a' }, { command: 'b', minLevel: 'error' }, { command: 'c', events: ['takeover'] }]);
  const notifier = new Notifier(hooks, 'alpha', 'prod', quiet, deliver);
  for (let i = 1; i <= 30; i++) notifier.onActivity(entry(i, i % 5 === 0 ? 'error' : 'info', i % 2 === 0 ? 'takeover' : 'peer-down'));
  await notifier.idle();
  assert.deepEqual(got.all?.map((n) => n.seq), Array.from({ length: 30 }, (_, i) => i + 1));
  assert.deepEqual(got.errors?.map((n) => n.seq), [5, 10, 15, 20, 25, 30]);
  assert.deepEqual(got.takeovers?.map((n) => n.seq), Array.from({ length: 15 }, (_, i) => 2 * (i + 1)));
  assert.equal(got.all?.[0]?.node, 'alpha');
  assert.equal(got.all?.[0]?.cluster, 'prod');
  assert.equal(got.all?.[0]?.message, 'entry 1');
});

test('a hook slower than the events loses the oldest, within a bounded queue, and says how many', async () => {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => { release = r; });
  const got: Notification[] = [];
  const deliver: Deliver = async (_h, n) => {
    if (n.seq === 1) await gate;
    got.push(n);
    return { ok: n.seq % 2 === 0, detail: '' };
  };
  const notifier = new Notifier(parseNotify([{ command: 'slow' }]), 'alpha', 'prod', quiet, deliver);
  const total = notifyLimits.queueMax + 50;
  for (let i = 1; i <= total; i++) notifier.onActivity(entry(i));
  release();
  await notifier.idle();
  // the first was in flight; of the rest the queue kept the newest queueMax
  assert.equal(got.length, 1 + notifyLimits.queueMax);
  assert.equal(got[1]?.seq, total - notifyLimits.queueMax + 1);
  assert.equal(got[1]?.dropped, total - 1 - notifyLimits.queueMax);
  assert.equal(got[2]?.dropped, 0);
  assert.equal(got.at(-1)?.seq, total);
});
