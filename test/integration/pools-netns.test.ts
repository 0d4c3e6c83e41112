// Pools with floating IPs across network namespaces (docs/pools.md): node A,
// node B and a client on one bridge, addresses from 198.18.0.0/15. The client
// writes through a pool's floating IP, reconnecting to the same address when
// the connection drops, and every write it saw acknowledged is read back at
// the end. Failover times are printed, not asserted.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sleep } from '../helpers/cluster';
import { spawnInHost, startNetnsCluster, verifyAcked, Writer, type NetnsCluster, type NetnsClusterOptions, type WriterEvent } from '../helpers/netns-cluster';

async function withNetnsCluster(t: { after: (fn: () => Promise<void>) => void }, o: NetnsClusterOptions): Promise<NetnsCluster> {
  const c = await startNetnsCluster(o);
  t.after(() => c.cleanup());
  return c;
}

/** A gratuitous ARP for ip from mac: an unsolicited request (who-has ip tell ip) or reply (ip is-at mac). */
function gratuitousArpSeen(lines: readonly string[], ip: string, mac: string): boolean {
  // tcpdump -e: "TIME SRCMAC > DSTMAC, ethertype ARP …: Request who-has IP (ff:…) tell IP" or "…: Reply IP is-at MAC"
  return lines.some((l) => l.toLowerCase().includes(` ${mac} > `) &&
    (new RegExp(`who-has ${ip.replaceAll('.', '\\.')} (\\([0-9a-f:]+\\) )?tell ${ip.replaceAll('.', '\\.')},`).test(l) || l.includes(`Reply ${ip} is-at ${mac},`)));
}

async function expectVerified(c: NetnsCluster, pool: string, volume: string, w: Writer): Promise<void> {
  const v = await verifyAcked(c, pool, volume, w.logFile);
  assert.equal(v.code, 0, `an acknowledged write is missing or wrong: ${v.summary}`);
}

test('kill -9 of the owner under load: the floating IP moves to B, neighbours learn B\'s MAC, and every acknowledged write is there', { timeout: 180_000 }, async (t) => {
  const c = await withNetnsCluster(t, { subnet: 11, size: '64M', pools: [{ name: 'pool0', volume: 'vol0', preferredNode: 'alpha', vipOctet: 100 }] });
  const vip = c.vip('pool0');
  const cidr = `${vip}/24`;
  await c.waitPool('alpha', 'pool0', 'ACTIVE');
  await c.waitPool('beta', 'pool0', 'STANDBY');
  assert.ok((await c.addresses('alpha')).includes(cidr), 'the owner holds the floating IP');
  assert.ok(!(await c.addresses('beta')).includes(cidr), 'the standby does not');

  const writer = Writer.start(c, 'pool0', 'vol0');
  t.after(() => writer.kill());
  await writer.waitFor((ev) => ev.some((e) => e.event === 'progress' && (e.acked as number) >= 200), '200 acknowledged writes');
  const macA = await c.net.hosts.a?.mac() as string;
  const macB = await c.net.hosts.b?.mac() as string;
  assert.equal(await c.net.neighbour('c', vip), macA, 'the client reaches the floating IP at A');
  const arp = await c.net.captureArp('c');

  const killedAt = Date.now();
  await c.alpha.kill9();
  await c.waitAddress('beta', cidr, true, 30_000);
  const addressMs = Date.now() - killedAt;
  await c.waitPool('beta', 'pool0', 'ACTIVE');
  await writer.waitFor((ev) => ev.some((e) => e.event === 'reconnected'), 'the client reconnecting to the floating IP');
  const reconnected = writer.events.find((e) => e.event === 'reconnected');
  const ackedAtKill = writer.acked();
  await writer.waitFor(() => writer.acked() >= ackedAtKill + 200, '200 more writes acknowledged by B');
  const summary = await writer.stop();
  const lines = await arp.stop();

  assert.equal(await c.net.neighbour('c', vip), macB, 'the client\'s neighbour entry for the floating IP points at B');
  assert.ok(gratuitousArpSeen(lines, vip, macB), `no gratuitous ARP from B (${macB}) for ${vip} was seen:\n${lines.join('\n')}`);
  const activity = (await c.beta.status()).clusterState?.activity ?? [];
  assert.ok(activity.some((e) => e.event === 'fence-run'), 'B fenced A before taking over');
  assert.ok(activity.some((e) => e.event === 'pool-run' && e.message.includes(`floating IP ${cidr}`)), 'the address step is in the activity log');
  await expectVerified(c, 'pool0', 'vol0', writer);
  t.diagnostic(`failover: the address was on B ${addressMs} ms after kill -9 of A; the client was back after ${String(reconnected?.downMs)} ms; ` +
    `${String(summary.writes)} writes, ${String(summary.failures)} failed in flight`);
});

test('active/active: each node serves its own pool; A dies and B serves all; A returns, resyncs, and only the auto-failback pool goes home', { timeout: 240_000 }, async (t) => {
  const c = await withNetnsCluster(t, {
    subnet: 12, size: '32M', pools: [
      { name: 'p1', volume: 'vol1', preferredNode: 'alpha', vipOctet: 101, autoFailback: true },
      { name: 'p2', volume: 'vol2', preferredNode: 'beta', vipOctet: 102 },
      { name: 'p3', volume: 'vol3', preferredNode: 'alpha', vipOctet: 103 },
    ],
  });
  for (const [node, pool] of [['alpha', 'p1'], ['beta', 'p2'], ['alpha', 'p3']] as const) await c.waitPool(node, pool, 'ACTIVE');
  const writers = (['p1', 'p2', 'p3'] as const).map((p, i) => Writer.start(c, p, `vol${i + 1}`));
  t.after(() => { for (const w of writers) w.kill(); });
  for (const w of writers) await w.waitFor(() => w.acked() >= 100, '100 acknowledged writes');

  await c.alpha.kill9();
  for (const p of ['p1', 'p2', 'p3']) await c.waitPool('beta', p, 'ACTIVE', 30_000);
  assert.ok((await c.addresses('beta')).includes(`${c.vip('p1')}/24`) && (await c.addresses('beta')).includes(`${c.vip('p3')}/24`));
  for (const w of writers) {
    const before = w.acked();
    await w.waitFor(() => w.acked() >= before + 100, 'writes acknowledged by B alone');
  }

  // A comes back as a machine does after fencing: its daemon starts (clearing the addresses it held when it died), then its port is let back in
  assert.ok((await c.addresses('alpha')).includes(`${c.vip('p1')}/24`), 'the killed daemon left its address behind, as a crash does');
  await c.alpha.start();
  await c.waitAddress('alpha', `${c.vip('p1')}/24`, false, 10_000);
  await c.net.portUp('a');
  await c.waitPool('alpha', 'p1', 'ACTIVE', 60_000);
  await c.waitPool('beta', 'p1', 'STANDBY', 10_000);
  await sleep(2000);
  assert.equal((await c.pool('beta', 'p3'))?.phase, 'ACTIVE', 'p3 (no auto-failback) stays on B');
  assert.equal((await c.pool('alpha', 'p3'))?.phase, 'STANDBY');
  assert.equal((await c.pool('beta', 'p2'))?.phase, 'ACTIVE', 'p2 stays on its own node');
  const vol3 = (await c.alpha.status()).volumes.find((v) => v.name === 'vol3');
  assert.equal(vol3?.state, 'SECOND', `A's copy of vol3 resynced and mirrors again: ${JSON.stringify(vol3)}`);
  assert.ok((vol3?.lastResync?.totalBytes ?? 0) > 0, 'A resynced what it missed');
  for (const [i, w] of writers.entries()) {
    await w.stop();
    await expectVerified(c, `p${i + 1}`, `vol${i + 1}`, w);
  }
});

test('a floating IP in use on the network is refused; a pool whose export port is taken goes INACTIVE holding no address', { timeout: 120_000 }, async (t) => {
  const c = await withNetnsCluster(t, {
    subnet: 13, size: '16M', start: false, pools: [
      { name: 'taken-ip', volume: 'vol1', preferredNode: 'alpha', vipOctet: 111 },
      { name: 'taken-port', volume: 'vol2', preferredNode: 'alpha', vipOctet: 112, nbdPort: 10899 },
    ],
  });
  // someone else answers for the first pool's address; something else holds the second pool's port on every address of A
  await c.net.exec('c', 'ip', ['addr', 'add', `${c.vip('taken-ip')}/24`, 'dev', 'eth0']);
  const squatter = spawnInHost(c.net, 'a', process.execPath, ['-e', "require('net').createServer().listen(10899, '0.0.0.0', () => console.log('listening'))"]);
  t.after(() => squatter.kill());
  await squatter.ready('listening');
  await Promise.all(c.nodes.map((n) => n.start()));

  const ipRefused = await c.waitPool('alpha', 'taken-ip', 'INACTIVE', 30_000);
  assert.match(ipRefused.reason ?? '', new RegExp(`floating IP ${c.vip('taken-ip').replaceAll('.', '\\.')} is in use on the network already`));
  const portRefused = await c.waitPool('alpha', 'taken-port', 'INACTIVE', 30_000);
  assert.match(portRefused.reason ?? '', /port 10899 on 198\.18\.13\.112 is taken/);
  const held = await c.addresses('alpha');
  assert.ok(!held.includes(`${c.vip('taken-ip')}/24`) && !held.includes(`${c.vip('taken-port')}/24`), `A holds no address of an INACTIVE pool: ${held.join(', ')}`);
  // (taken-ip's volume is promoted for a moment at each automatic retry: the port's pool is the stable witness)
  const volumes = (await c.alpha.status()).volumes;
  assert.equal(volumes.find((v) => v.name === 'vol2')?.role, 'SECONDARY', 'the promote was undone');
  const activity = (await c.alpha.status()).clusterState?.activity ?? [];
  assert.ok(activity.some((e) => e.event === 'pool-undo' && e.message.includes('floating IP')), 'the address step was undone, and the activity log says so');
  // an address still answering may clear by itself (an old owner restarting): the owner tries again
  await c.waitPool('alpha', 'taken-ip', 'INACTIVE', 30_000);
  const retried = (await c.alpha.status()).clusterState?.activity ?? [];
  assert.ok(retried.some((e) => e.event === 'activate-retry-scheduled' && e.message.startsWith('pool taken-ip')), 'a retry is scheduled for the address in use');
  assert.ok(!retried.some((e) => e.event === 'activate-retry-scheduled' && e.message.startsWith('pool taken-port')), 'a port held by another program waits for an operator');

  // the other host lets the address go: the next retry brings the pool up, with no operator
  await c.net.exec('c', 'ip', ['addr', 'del', `${c.vip('taken-ip')}/24`, 'dev', 'eth0']);
  await c.waitPool('alpha', 'taken-ip', 'ACTIVE', 60_000);
  assert.ok((await c.addresses('alpha')).includes(`${c.vip('taken-ip')}/24`));
});

test('pool move under load: the client follows the floating IP to B and back, and loses no acknowledged write', { timeout: 180_000 }, async (t) => {
  const c = await withNetnsCluster(t, { subnet: 14, size: '64M', pools: [{ name: 'pool0', volume: 'vol0', preferredNode: 'alpha', vipOctet: 100 }] });
  const cidr = `${c.vip('pool0')}/24`;
  await c.waitPool('alpha', 'pool0', 'ACTIVE');
  await c.waitPool('beta', 'pool0', 'STANDBY');
  const writer = Writer.start(c, 'pool0', 'vol0');
  t.after(() => writer.kill());
  await writer.waitFor(() => writer.acked() >= 200, '200 acknowledged writes');
  for (const [from, to] of [['alpha', 'beta'], ['beta', 'alpha']] as const) {
    const reconnects = writer.events.filter((e) => e.event === 'reconnected').length;
    const r = await c.node(from).postOk<{ message: string }>('/api/v1/pools/pool0/move', { node: to });
    assert.match(r.message, new RegExp(`pool pool0 moved to ${to}`));
    await c.waitPool(to, 'pool0', 'ACTIVE');
    await c.waitAddress(to, cidr, true);
    assert.ok(!(await c.addresses(from)).includes(cidr), `${from} let the address go`);
    // the client lost its connection when the exports stopped, and found the address again at the new owner
    await writer.waitFor((ev) => ev.filter((e) => e.event === 'reconnected').length > reconnects, `the client reconnecting to ${to}`);
    // counted from the first progress line after the reconnect, so only the new owner's acknowledgements count
    const ackedAfter = (ev: readonly WriterEvent[]): number[] => {
      const from = ev.map((e) => e.event).lastIndexOf('reconnected');
      return ev.slice(from).filter((e) => e.event === 'progress').map((e) => e.acked as number);
    };
    await writer.waitFor((ev) => { const a = ackedAfter(ev); return a.length >= 2 && (a.at(-1) as number) >= (a[0] as number) + 200; }, `200 writes acknowledged by ${to}`);
    const mac = await c.net.hosts[c.host(to)]?.mac();
    const seen: Array<string | undefined> = [];
    for (let i = 0; i < 50 && seen.at(-1) !== mac; i++) {
      seen.push(await c.net.neighbour('c', c.vip('pool0')));
      if (seen.at(-1) !== mac) await sleep(100);
    }
    assert.equal(seen.at(-1), mac, `the client reaches the address at ${to} (${mac}); its neighbour entry went ${seen.join(' ')}; ` +
      `a is ${String(await c.net.hosts.a?.mac())}, b is ${String(await c.net.hosts.b?.mac())}`);
  }
  // asking the owner to move the pool where it is already changes nothing
  const again = await c.alpha.postOk<{ message: string }>('/api/v1/pools/pool0/move', { node: 'alpha' });
  assert.match(again.message, /is on alpha already/);
  const summary = await writer.stop();
  assert.ok((summary.reconnects as number) >= 2, `the client reconnected at each move: ${JSON.stringify(summary)}\n` +
    JSON.stringify(writer.events.filter((e) => e.event !== 'progress')));
  await expectVerified(c, 'pool0', 'vol0', writer);
});
