// The deployment examples of deploy/ (docs/operations.md) go through the real parsers, and each
// pair is one cluster: same id, secret, volumes and pools, each node's peer the other, links
// and addresses that meet. Their addresses stay in 198.18.0.0/15 (RFC 2544) and their secrets
// are placeholders nobody could mistake for real ones.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { parseNodeConfig, type HostPort, type NodeConfig } from '../../src/node/config';
import { parseWitnessConfig } from '../../src/witness/config';
import { repoRoot } from '../helpers/serve-process';

const EXAMPLES = path.join(repoRoot, 'deploy', 'examples');
const SYSTEMD = path.join(repoRoot, 'deploy', 'systemd');
const LAYOUTS = ['active-standby', 'active-active'] as const;

function read(file: string): string {
  return fs.readFileSync(file, 'utf8');
}

function hp(a: HostPort): string {
  return `${a.host}:${a.port}`;
}

/** 198.18.0.0/15: 198.18.0.0 to 198.19.255.255 */
function inBenchmarkRange(ip: string): boolean {
  const [a, b] = ip.split('.').map(Number);
  return net.isIPv4(ip) && a === 198 && (b === 18 || b === 19);
}

/** every dotted quad anywhere in the text */
function addressesIn(text: string): string[] {
  return [...text.matchAll(/\b\d{1,3}(?:\.\d{1,3}){3}\b/g)].map((m) => m[0]);
}

/** a short pattern repeated: a placeholder, not a secret anyone generated */
function isPlaceholder(hex: string): boolean {
  return [2, 4, 8, 16].some((n) => hex.length % n === 0 && hex.slice(0, n).repeat(hex.length / n) === hex) || /^(0123456789abcdef)+$|^(fedcba9876543210)+$/.test(hex);
}

function pair(layout: string): { alpha: NodeConfig; beta: NodeConfig; raw: Record<'alpha' | 'beta', string> } {
  const raw = { alpha: read(path.join(EXAMPLES, layout, 'alpha.json')), beta: read(path.join(EXAMPLES, layout, 'beta.json')) };
  return { alpha: parseNodeConfig(raw.alpha), beta: parseNodeConfig(raw.beta), raw };
}

for (const layout of LAYOUTS) {
  test(`${layout}: both files parse, and they describe one cluster of two nodes that find each other`, () => {
    const { alpha, beta, raw } = pair(layout);
    assert.equal(alpha.node.name, 'alpha');
    assert.equal(beta.node.name, 'beta');
    assert.equal(alpha.peer.name, beta.node.name, 'alpha\'s peer is beta');
    assert.equal(beta.peer.name, alpha.node.name, 'beta\'s peer is alpha');
    assert.equal(alpha.cluster.name, beta.cluster.name);
    assert.ok(alpha.cluster.id.equals(beta.cluster.id), 'cluster ids differ');
    assert.ok(alpha.cluster.secret.equals(beta.cluster.secret), 'cluster secrets differ');
    assert.equal(hp(alpha.peer.syncAddress), hp(beta.node.syncListen), 'alpha dials where beta listens');
    assert.equal(hp(beta.peer.syncAddress), hp(alpha.node.syncListen), 'beta dials where alpha listens');
    assert.deepEqual(alpha.heartbeat.links.map((l) => [hp(l.listen), hp(l.peer)]), beta.heartbeat.links.map((l) => [hp(l.peer), hp(l.listen)]),
      'the heartbeat links, in the same order on both nodes, each one\'s listen the other\'s peer');
    assert.ok(alpha.heartbeat.links.length >= 2, 'a single heartbeat link makes one cable a reason to fail over');
    assert.deepEqual({ ...alpha.heartbeat, links: [] }, { ...beta.heartbeat, links: [] }, 'heartbeat timing differs');
    assert.deepEqual(alpha.sync, beta.sync, 'sync link timing differs');
    assert.deepEqual(alpha.volumes, beta.volumes, 'the volumes differ');
    assert.deepEqual(alpha.pools, beta.pools, 'the pools differ');
    assert.deepEqual(alpha.floatingIp, beta.floatingIp);
    assert.equal(alpha.floatingIp.driver, 'linux', 'two real servers move addresses with the linux driver');
    assert.equal(alpha.fencing.policy, beta.fencing.policy);
    assert.notEqual(alpha.fencing.policy, 'ignore', 'an example must not teach the policy that allows two writers');
    for (const p of alpha.pools) {
      assert.ok(p.floatingIps.length > 0, `pool ${p.name}: clients reach a pool on its floating IPs`);
      assert.equal(p.filesystem, null);
      assert.deepEqual(p.applications, []);
    }
    for (const [n, text] of Object.entries(raw)) {
      const pools = (JSON.parse(text) as { pools: Array<Record<string, unknown>> }).pools;
      for (const p of pools) for (const k of ['filesystem', 'applications']) assert.ok(!(k in p), `${n}: pool ${String(p.name)} uses ${k}`);
    }
    // each node listens on its own addresses, never on its peer's
    const own = (c: NodeConfig): string[] => [c.node.syncListen.host, c.node.apiListen.host, c.node.nbdListen.host, ...c.heartbeat.links.map((l) => l.listen.host)];
    for (const h of own(alpha)) assert.ok(!own(beta).includes(h), `${h} is an address of both nodes`);
    assert.ok(alpha.node.dataDir.startsWith('/var/lib/tandem'), 'dataDir is where tandem-node.service\'s StateDirectory is');
  });

  test(`${layout}: example addresses are all in 198.18.0.0/15 and the secrets are placeholders`, () => {
    const { alpha, raw } = pair(layout);
    for (const [n, text] of Object.entries(raw)) {
      const found = addressesIn(text);
      assert.ok(found.length > 5, `${n}: no addresses found`);
      for (const a of found) assert.ok(inBenchmarkRange(a), `${n}: ${a} is outside 198.18.0.0/15`);
    }
    assert.ok(isPlaceholder(alpha.cluster.id.toString('hex')), 'the cluster id looks generated');
    assert.ok(isPlaceholder(alpha.cluster.secret.toString('hex')), 'the cluster secret looks generated');
    assert.ok(alpha.cluster.secret.length >= 32, 'an example should show a secret of the recommended length (32 bytes)');
  });
}

test('active-standby uses the witness, which serves its cluster at the address tandem-witness.service listens on', () => {
  const { alpha, beta } = pair('active-standby');
  assert.equal(alpha.fencing.policy, 'witness');
  assert.ok(alpha.fencing.witness !== null && beta.fencing.witness !== null);
  assert.equal(hp(alpha.fencing.witness), hp(beta.fencing.witness));
  const env = read(path.join(EXAMPLES, 'witness.env'));
  const listen = /^TANDEM_WITNESS_LISTEN=(\S+)$/m.exec(env)?.[1];
  assert.equal(listen, hp(alpha.fencing.witness), 'witness.env listens where the nodes send');
  assert.ok(inBenchmarkRange(alpha.fencing.witness.host));
  // the witness client is bound to the first heartbeat link's address: it must be on the witness's network
  const net24 = (h: string): string => h.split('.').slice(0, 3).join('.');
  for (const c of [alpha, beta]) assert.equal(net24((c.heartbeat.links[0] as { listen: HostPort }).listen.host), net24(alpha.fencing.witness.host));

  const text = read(path.join(EXAMPLES, 'witness.json'));
  const w = parseWitnessConfig(text, EXAMPLES);
  assert.equal(w.stateFile, '/var/lib/tandem-witness/state.json', 'the state file is in tandem-witness.service\'s StateDirectory');
  const served = w.clusters.find((c) => c.id.equals(alpha.cluster.id));
  assert.ok(served !== undefined, 'the witness does not serve the active-standby cluster');
  assert.ok(served.secret.equals(alpha.cluster.secret), 'the witness has another secret than the nodes');
  for (const a of addressesIn(text + env)) assert.ok(inBenchmarkRange(a), `${a} is outside 198.18.0.0/15`);
});

test('active-active fences with fence_ipmilan, each node aiming at its peer\'s BMC, never its own', () => {
  const { alpha, beta } = pair('active-active');
  assert.equal(alpha.fencing.policy, 'fence');
  const target = (c: NodeConfig): string => {
    const argv = c.fencing.command ?? [];
    assert.equal(argv[0], '/usr/sbin/fence_ipmilan');
    assert.ok(argv.includes('--action=off'), 'a takeover needs the peer off, not rebooting into the cluster');
    assert.ok(!argv.some((a) => a.startsWith('--password=')), 'the password belongs in a --password-script, not in the config');
    const ip = argv.find((a) => a.startsWith('--ip='))?.slice('--ip='.length);
    assert.ok(ip !== undefined && inBenchmarkRange(ip), `fence target ${ip}`);
    return ip;
  };
  assert.notEqual(target(alpha), target(beta), 'both nodes would fence the same machine');
  const preferred = new Set(alpha.pools.map((p) => p.preferredNode));
  assert.deepEqual([...preferred].sort(), ['alpha', 'beta'], 'active-active: each node prefers a pool of its own');
});

test('the systemd units stop the node with SIGTERM to the daemon alone, with time to release its pools', () => {
  const unit = read(path.join(SYSTEMD, 'tandem-node.service'));
  const key = (text: string, k: string): string | undefined => new RegExp(`^${k}=(.*)$`, 'm').exec(text)?.[1];
  assert.equal(key(unit, 'KillMode'), 'mixed');
  assert.equal(key(unit, 'KillSignal'), 'SIGTERM');
  assert.ok(Number(key(unit, 'TimeoutStopSec')) >= 60, 'TimeoutStopSec too short to release pools');
  assert.equal(key(unit, 'Restart'), 'on-failure');
  assert.match(key(unit, 'After') ?? '', /network-online\.target/);
  assert.match(key(unit, 'ExecStart') ?? '', / node start --config \/etc\/tandem\/node\.json$/);
  const witness = read(path.join(SYSTEMD, 'tandem-witness.service'));
  assert.match(key(witness, 'ExecStart') ?? '', / witness --listen \$\{TANDEM_WITNESS_LISTEN\} --config \/etc\/tandem\/witness\.json$/);
  assert.equal(key(witness, 'Restart'), 'on-failure');
  assert.equal(key(witness, 'StateDirectory'), 'tandem-witness');
});
