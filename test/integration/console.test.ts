// The web console in a real browser (Debian's chromium through playwright-core)
// against a real `tandem demo`: it shows both nodes, vol0 PRIM and SECOND; a
// kill -9 of the secondary turns the primary ALONE on screen within 3 s,
// without a reload; the restarted node's resync shows as SYNCING and then
// SECOND; Swap (confirmed in its dialog) exchanges the roles; when the
// node that served the page dies, the page keeps what it knew, marked stale,
// and comes back live when the node does; then that node is taken offline and
// brought online from the console (each confirmed). Screenshots of every state go to
// a directory the test prints. Assertions read roles and accessible names.
// Along the way: the event stream's contract by plain HTTP, and GET /metrics
// agreeing with what the page shows. Without a token the page asks for one
// (an accessible sign-in form); the demo's link (#token=…) signs it in.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { DEMO_HOSTS, DEMO_API_PORT, DEMO_NBD_URL, startDemo, type DemoProcess } from '../helpers/demo-process';
import { run } from '../helpers/run';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = path.join(os.tmpdir(), 'tandem-console-shots');
/** what the console must show within this long of a kill -9 (the console's promise, not a tuning knob) */
const ALONE_WITHIN_MS = 3000;
const MiB = 1024 * 1024;
// written while the secondary is down and resynced at the demo's --resync-rate: a few seconds of SYNCING
const WRITTEN_WHILE_DOWN = 48 * MiB;
const RESYNC_RATE = '8M';

interface OpenStream { readonly res: http.IncomingMessage; readonly req: http.ClientRequest; text(): string }

/** GET /api/v1/events; resolves with the response once its headers arrived */
function openEvents(host: string, port: number, headers: Record<string, string> = {}): Promise<OpenStream> {
  return new Promise((resolve, reject) => {
    let text = '';
    const req = http.get({ host, port, path: '/api/v1/events', agent: false, headers }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('error', () => undefined);
      resolve({ res, req, text: () => text });
    });
    req.on('error', reject);
  });
}

async function until<T>(what: string, probe: () => T | undefined, deadline: number): Promise<T> {
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) throw new Error(`no ${what} in time`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The demo's token, from the console link it prints. */
function demoToken(demo: DemoProcess): string {
  const m = new RegExp(`console +http://${DEMO_HOSTS.alpha.replace(/\./g, '\\.')}:${DEMO_API_PORT}/#token=(tdm_[A-Za-z0-9_-]+)`).exec(demo.output());
  assert.ok(m !== null, `the demo prints the console's link with its token:\n${demo.output()}`);
  return m[1] as string;
}

/**
 * The event stream's contract, by plain HTTP: no stream without a token, a first `status` event
 * with the whole status (and the peer's API), an `activity` event per new log entry, CORS for
 * reads (with the preflight a token needs), at most 32 streams with a 503 beyond, a stream slot
 * freed when its client goes, and commands refused from another origin.
 */
async function checkEventStream(t: TestContext, token: string): Promise<void> {
  const host = DEMO_HOSTS.alpha;
  const auth = { authorization: `Bearer ${token}` };
  const streams: OpenStream[] = [];
  try {
    const refused = await openEvents(host, DEMO_API_PORT);
    streams.push(refused);
    assert.equal(refused.res.statusCode, 401, 'no stream without a token');
    assert.equal(refused.res.headers['www-authenticate'], 'Bearer realm="tandem"');
    const preflight = await fetch(`http://${host}:${DEMO_API_PORT}/api/v1/events`, {
      method: 'OPTIONS', headers: { origin: 'http://example.invalid', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
    });
    assert.equal(preflight.status, 204);
    assert.match(String(preflight.headers.get('access-control-allow-headers')), /authorization/);
    const first = await openEvents(host, DEMO_API_PORT, { origin: 'http://example.invalid', ...auth });
    streams.push(first);
    assert.equal(first.res.statusCode, 200);
    assert.match(String(first.res.headers['content-type']), /^text\/event-stream/);
    assert.equal(first.res.headers['access-control-allow-origin'], '*');
    const data = await until('first status event', () => /^event: status\ndata: (.*)\n\n/m.exec(first.text())?.[1], Date.now() + 5000);
    const st = JSON.parse(data) as { node: string; peerApi?: string; volumes: unknown[] };
    assert.equal(st.node, 'alpha');
    assert.equal(st.peerApi, `${DEMO_HOSTS.beta}:${DEMO_API_PORT}`);
    assert.ok(first.text().startsWith('retry: '), 'the stream starts with its retry delay');
    // a command's activity-log entry arrives as an `activity` event, and the new state as a `status` event
    for (const on of [true, false]) {
      const seen = first.text().length;
      const r = await fetch(`http://${host}:${DEMO_API_PORT}/api/v1/maintenance`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ on }) });
      assert.equal(r.status, 200, `maintenance ${on ? 'on' : 'off'}: HTTP ${r.status}`);
      const entry = await until(`activity event for maintenance ${on ? 'on' : 'off'}`,
        () => /^event: activity\ndata: (.*"event":"maintenance".*)\n\n/m.exec(first.text().slice(seen))?.[1], Date.now() + 5000);
      assert.match((JSON.parse(entry) as { message: string }).message, on ? /^maintenance on/ : /^maintenance off/);
      await until(`status event with maintenance ${on ? 'on' : 'off'}`,
        () => (first.text().slice(seen).includes(`"maintenance":${on}`) ? true : undefined), Date.now() + 5000);
    }
    refused.req.destroy();
    streams.splice(streams.indexOf(refused), 1);
    while (streams.length < 32) streams.push(await openEvents(host, DEMO_API_PORT, auth));
    assert.ok(streams.every((s) => s.res.statusCode === 200), 'the first 32 streams are accepted');
    const over = await openEvents(host, DEMO_API_PORT, auth);
    streams.push(over);
    assert.equal(over.res.statusCode, 503);
    await until('503 body', () => (over.text().includes('ERR_TOO_MANY_STREAMS') ? true : undefined), Date.now() + 5000);
    for (const s of streams) s.req.destroy();
    streams.length = 0;
    // the slots come back as the server sees the clients go
    const deadline = Date.now() + 5000;
    for (;;) {
      const again = await openEvents(host, DEMO_API_PORT, auth);
      again.req.destroy();
      if (again.res.statusCode === 200) break;
      if (Date.now() >= deadline) throw new Error('the stream slots did not come back after the clients went away');
      await new Promise((r) => setTimeout(r, 50));
    }
    const cross = await fetch(`http://${host}:${DEMO_API_PORT}/api/v1/maintenance`, {
      method: 'POST', headers: { origin: 'http://example.invalid', 'content-type': 'application/json', ...auth }, body: '{"on":true}',
    });
    assert.equal(cross.status, 403, 'a command from another origin is refused, token or not');
    assert.equal(((await cross.json()) as { error: { code: string } }).error.code, 'ERR_CROSS_ORIGIN');
    const status = await fetch(`http://${host}:${DEMO_API_PORT}/api/v1/status`, { headers: auth });
    assert.equal(status.headers.get('access-control-allow-origin'), '*');
    assert.equal(((await status.json()) as { clusterState: { maintenance: boolean } }).clusterState.maintenance, false);
    t.diagnostic('event stream: 401 without a token, status first, activity and status events on a command, CORS for reads, 32 streams then 503, slots freed, cross-origin commands refused');
  } finally {
    for (const s of streams) s.req.destroy();
  }
}

/** One sample of GET /metrics on a node, by its name and exact label set as printed. */
async function metricOf(host: string, sample: string, token: string): Promise<number | undefined> {
  const res = await fetch(`http://${host}:${DEMO_API_PORT}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  assert.match(String(res.headers.get('content-type')), /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

/** The row of one volume's copy on one node, while the console has it live (a stale row is named otherwise). */
function row(page: Page, volume: string, node: string) {
  return page.getByRole('row', { name: `${volume} on ${node}`, exact: true });
}

/** Waits until the state cell of `volume on node` starts with `state`; the deadline is absolute. */
async function waitForState(page: Page, volume: string, node: string, state: string, deadline: number): Promise<number> {
  const cell = row(page, volume, node).getByRole('cell', { name: new RegExp(`^${state}\\b`) });
  try {
    await cell.waitFor({ state: 'attached', timeout: Math.max(1, deadline - Date.now()) });
  } catch {
    const table = await page.getByRole('region', { name: 'Volumes' }).ariaSnapshot().catch((e: unknown) => `(no snapshot: ${String(e)})`);
    throw new Error(`the console did not show ${volume} on ${node} as ${state} in time; it shows:\n${table}`);
  }
  return Date.now();
}

async function shot(t: TestContext, page: Page, name: string): Promise<void> {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  t.diagnostic(`screenshot: ${file}`);
}

test('the web console follows a demo cluster live: both nodes, kill -9, resync, swap, its own node dying', { timeout: 300_000 }, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/ensure-tools installs it`);
  fs.mkdirSync(SHOTS, { recursive: true });
  t.diagnostic(`screenshots in ${SHOTS}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-console-'));
  const alphaConsole = `http://${DEMO_HOSTS.alpha}:${DEMO_API_PORT}/`;
  let demo: DemoProcess | undefined;
  let browser: Browser | undefined;
  const pageErrors: string[] = [];
  try {
    demo = await startDemo({ dir, size: '64M', resyncRate: RESYNC_RATE });
    const token = demoToken(demo);
    const metric = (host: string, sample: string): Promise<number | undefined> => metricOf(host, sample, token);
    await checkEventStream(t, token);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));

    // 0. without a token the page asks for one, in a labelled form; the demo's link signs it in
    await page.goto(alphaConsole);
    const signIn = page.getByRole('form', { name: 'Sign in' });
    await signIn.waitFor({ timeout: 10_000 });
    assert.equal(await signIn.getByLabel('API token').getAttribute('type'), 'password');
    await signIn.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(await page.getByRole('region', { name: 'Volumes' }).count(), 0, 'nothing of the cluster shows before signing in');
    await shot(t, page, '0-sign-in');
    await page.goto(`${alphaConsole}#token=${token}`);
    await signIn.waitFor({ state: 'hidden', timeout: 10_000 });
    assert.doesNotMatch(page.url(), /token/, 'the token leaves the address bar');

    // 1. both nodes, vol0 PRIM on alpha and SECOND on beta
    await waitForState(page, 'vol0', 'alpha', 'PRIM', Date.now() + 30_000);
    await waitForState(page, 'vol0', 'beta', 'SECOND', Date.now() + 30_000);
    await page.getByRole('article', { name: 'Node alpha' }).getByText('Healthy').waitFor({ timeout: 10_000 });
    await page.getByRole('article', { name: 'Node beta' }).getByText('Healthy').waitFor({ timeout: 10_000 });
    await page.getByRole('row', { name: 'pool0' }).getByRole('cell', { name: 'alpha', exact: true }).waitFor({ timeout: 10_000 });
    await shot(t, page, '1-prim-second');
    assert.equal(await metric(DEMO_HOSTS.alpha, 'tandem_volume_state{volume="vol0",state="PRIM"}'), 1);
    assert.equal(await metric(DEMO_HOSTS.alpha, 'tandem_pool_owned_here{pool="pool0"}'), 1);
    assert.equal(await metric(DEMO_HOSTS.beta, 'tandem_volume_primary{volume="vol0"}'), 0);
    assert.equal(await metric(DEMO_HOSTS.beta, 'tandem_heartbeat_links_up'), 1);

    // 2. kill -9 of the secondary: ALONE on screen within 3 s of the kill, with no reload
    const killedAt = Date.now();
    await demo.kill9('beta');
    const aloneAt = await waitForState(page, 'vol0', 'alpha', 'ALONE', killedAt + ALONE_WITHIN_MS);
    t.diagnostic(`kill -9 beta → ALONE on screen: ${aloneAt - killedAt} ms`);
    await page.getByRole('row', { name: /^vol0 on beta, stale/ }).waitFor({ timeout: 10_000 });
    await shot(t, page, '2-alone');

    // writes while beta is down, through the pool's floating IP: what the resync will carry
    await run('qemu-io', ['-f', 'raw', '-c', `write -P 0xab 0 ${WRITTEN_WHILE_DOWN}`, DEMO_NBD_URL], { timeoutMs: 60_000 });

    // 3. beta again: SYNCING with its progress, then SECOND
    const restartedAt = Date.now();
    await demo.startAgain('beta');
    const syncingAt = await waitForState(page, 'vol0', 'beta', 'SYNCING', Date.now() + 30_000);
    t.diagnostic(`beta started again → SYNCING on screen: ${syncingAt - restartedAt} ms`);
    await row(page, 'vol0', 'beta').getByRole('progressbar', { name: 'Resync of vol0 on beta' }).waitFor({ timeout: 10_000 });
    await shot(t, page, '3-syncing');
    assert.equal(await metric(DEMO_HOSTS.beta, 'tandem_volume_state{volume="vol0",state="SYNCING"}'), 1, 'the metrics agree with the console');
    assert.ok(((await metric(DEMO_HOSTS.beta, 'tandem_volume_resync_total_bytes{volume="vol0"}')) ?? 0) > 0, 'a resync runs, by the metrics');
    assert.ok(((await metric(DEMO_HOSTS.alpha, 'tandem_volume_write_bytes_total{volume="vol0"}')) ?? 0) >= WRITTEN_WHILE_DOWN);
    const secondAt = await waitForState(page, 'vol0', 'beta', 'SECOND', Date.now() + 120_000);
    await waitForState(page, 'vol0', 'alpha', 'PRIM', Date.now() + 30_000);
    t.diagnostic(`SYNCING → SECOND on screen: ${secondAt - syncingAt} ms`);
    await shot(t, page, '4-second-again');

    // 4. Swap, confirmed in its dialog: the roles change places
    await page.getByRole('row', { name: 'pool0' }).getByRole('button', { name: 'Swap pool0' }).click();
    const dialog = page.getByRole('dialog', { name: 'Swap pool0?' });
    await dialog.waitFor({ timeout: 5000 });
    await shot(t, page, '5-swap-dialog');
    await dialog.getByRole('button', { name: 'Swap', exact: true }).click();
    const swappedAt = Date.now();
    try {
      await waitForState(page, 'vol0', 'beta', 'PRIM', Date.now() + 60_000);
      await waitForState(page, 'vol0', 'alpha', 'SECOND', Date.now() + 30_000);
    } catch (e) {
      const said = await page.locator('#command-result').textContent().catch(() => null);
      throw new Error(`${(e as Error).message}\nthe console's command result: ${said ?? '(none)'}`);
    }
    await page.getByRole('row', { name: 'pool0' }).getByRole('cell', { name: 'beta', exact: true }).waitFor({ timeout: 10_000 });
    t.diagnostic(`Swap confirmed → roles exchanged on screen: ${Date.now() - swappedAt} ms`);
    await shot(t, page, '6-swapped');

    // 5. the node that served the page dies: what it said stays, marked stale; the peer's view goes on live
    const selfKilledAt = Date.now();
    await demo.kill9('alpha');
    await page.getByRole('row', { name: /^vol0 on alpha, stale/ }).waitFor({ timeout: ALONE_WITHIN_MS });
    await page.getByRole('status', { name: 'Connection' }).filter({ hasText: 'alpha is unreachable' }).waitFor({ timeout: ALONE_WITHIN_MS });
    await waitForState(page, 'vol0', 'beta', 'ALONE', selfKilledAt + ALONE_WITHIN_MS);
    t.diagnostic(`kill -9 alpha → stale and beta ALONE on screen: ${Date.now() - selfKilledAt} ms`);
    await shot(t, page, '7-own-node-dead');
    await demo.startAgain('alpha');
    await waitForState(page, 'vol0', 'alpha', 'SECOND', Date.now() + 120_000);
    await page.getByRole('status', { name: 'Connection' }).filter({ hasText: /^Live: alpha/ }).waitFor({ timeout: 10_000 });
    await shot(t, page, '8-own-node-back');

    // 6. alpha leaves the cluster from its console (it owns nothing now: nothing to hand over), and comes back
    await page.getByRole('button', { name: 'Take alpha offline…' }).click();
    const offline = page.getByRole('dialog', { name: 'Take alpha offline?' });
    await offline.waitFor({ timeout: 5000 });
    await offline.getByRole('button', { name: 'Take offline', exact: true }).click();
    const alphaCard = page.getByRole('article', { name: 'Node alpha' });
    await alphaCard.getByText(/^offline · holds beta as a member$/).waitFor({ timeout: 15_000 });
    await page.getByRole('article', { name: 'Node beta' }).getByText(/^member · holds alpha offline$/).waitFor({ timeout: 15_000 });
    await shot(t, page, '9-alpha-offline');
    await page.getByRole('button', { name: 'Bring alpha online…' }).click();
    const online = page.getByRole('dialog', { name: 'Bring alpha online?' });
    await online.waitFor({ timeout: 5000 });
    await online.getByRole('button', { name: 'Bring online', exact: true }).click();
    await alphaCard.getByText(/^member · holds beta as a member$/).waitFor({ timeout: 15_000 });
    await page.getByRole('button', { name: 'Take alpha offline…' }).waitFor({ timeout: 5000 });

    assert.deepEqual(pageErrors, [], 'the page threw');
  } catch (e) {
    if (e instanceof Error && demo !== undefined) e.message += `\n--- demo ---\n${demo.output()}\n${demo.logs(30)}`;
    throw e;
  } finally {
    await browser?.close().catch(() => undefined);
    await demo?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
