// Notification hooks on a real node: a command hook and a webhook each get the
// node's activity entries they asked for, once each, in order, as the operator
// changes things through the API.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { sleep, startCluster } from '../helpers/cluster';

interface Received { event: string; message: string; node: string; seq: number; dropped: number }

test('a command hook and a webhook receive the activity entries they filter for, once each, in order', { timeout: 120_000 }, async () => {
  const posts: Received[] = [];
  const web = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Received);
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  const webPort = (web.address() as net.AddressInfo).port;
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-notify-out-'));
  const file = path.join(out, 'alpha.jsonl');
  const c = await startCluster({
    size: '16M', prefix: 'tandem-notify-',
    extraConfig: (n) => (n === 'alpha' ? {
      notify: [
        { command: `printf "%s\\n" "$TANDEM_NOTIFICATION" >> ${file}`, events: ['maintenance'] },
        { webhook: `http://127.0.0.1:${webPort}/hook`, events: ['maintenance'], timeoutMs: 2000 },
      ],
    } : {}),
  });
  try {
    await c.waitForStates('PRIM', 'SECOND', 60_000);
    for (const on of [true, false, true, false]) await c.alpha.postOk('/api/v1/maintenance', { on });
    const deadline = Date.now() + 20_000;
    const lines = (): Received[] => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Received) : []);
    while ((posts.length < 4 || lines().length < 4) && Date.now() < deadline) await sleep(50);
    await sleep(300);
    for (const [hook, got] of [['webhook', posts], ['command', lines()]] as const) {
      assert.deepEqual(got.map((p) => /^maintenance (on|off)/.exec(p.message)?.[1]), ['on', 'off', 'on', 'off'], `${hook}: ${JSON.stringify(got)}`);
      assert.ok(got.every((p) => p.node === 'alpha' && p.event === 'maintenance' && p.dropped === 0), hook);
      const seqs = got.map((p) => p.seq);
      assert.deepEqual([...seqs].sort((a, b) => a - b), seqs, `${hook}: in order`);
      assert.equal(new Set(seqs).size, 4, `${hook}: once each, nothing unasked`);
    }
    assert.deepEqual(lines().map((p) => p.seq), posts.map((p) => p.seq), 'both hooks saw the same entries');
  } finally {
    await c.cleanup();
    web.close();
    fs.rmSync(out, { recursive: true, force: true });
  }
});
