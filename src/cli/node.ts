// `tandem node start --config FILE`: run a node in the foreground until SIGTERM or SIGINT.
// `tandem node check --config FILE`: what start would refuse, found before a restart.
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { tlsProblems } from '../node/api-tls';
import { parseNodeConfig, type NodeConfig } from '../node/config';
import { NodeDaemon } from '../node/daemon';
import { JoinWaiter } from '../node/join';
import { isWaitingConfigText, parseWaitingConfig, type WaitingConfig } from '../node/join-files';
import { createLogger } from '../util/log';
import { runAdmin } from './admin';
import { UsageError, exitCodes } from './errors';
import { untilStopSignal } from './signals';

export const nodeUsage = `usage: tandem node start --config FILE [--debug]
       tandem node check --config FILE
       tandem node offline|online [--force] [--api HOST:PORT]
       tandem node remove|add NAME [--force] [--api HOST:PORT]

start: runs this node in the foreground: opens (or creates) its copy of each
volume, keeps the sync link to the peer, serves the pools it owns and the API.
Prints "node NAME ready" once the API answers. A file from tandem cluster create
that no node has joined yet: the node first prints "node NAME waiting for a
peer to join (cluster CLUSTER)" and serves only the join on its API; once the
other node joins (tandem cluster join), it writes the peer into FILE and starts. SIGTERM or SIGINT stops it
cleanly: it releases its pools first. The file format is in docs/mirroring.md,
docs/cluster.md and docs/pools.md; examples in deploy/examples/.

check: parses the file as start would, checks that the addresses this node
listens on belong to this host and that the fence command can be run, and
prints a summary. Exit 0 when start would accept it, 1 when not. With api.tls, it
reads the certificate and key and checks that they belong together.

offline: this node leaves the cluster: its pools go to the peer (each as with
swap: only with the copies in sync), then it owns and takes nothing, and the
peer needs no fence to go on without it. --force: with the peer away, its pools
stop instead. online: back in once the peer takes note (--force: without it).
remove NAME, on the other node: the peer leaves for good (it must be offline;
--force: down, and the operator vouches it is powered off). add NAME: a removed
node may come back (then tandem node online on it). docs/cluster.md.`;

/** The addresses of this host's interfaces, and the wildcards that are always bindable. */
function localAddresses(): Set<string> {
  const out = new Set(['0.0.0.0', '::']);
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  return out;
}

/** What `node start` would trip over on this host that the parser cannot see. */
export function hostProblems(cfg: NodeConfig, local: Set<string> = localAddresses()): string[] {
  const problems: string[] = [];
  const listens: Array<[string, string]> = [
    ['node.syncListen', cfg.node.syncListen.host], ['node.apiListen', cfg.node.apiListen.host],
    ...cfg.heartbeat.links.map((l, i): [string, string] => [`heartbeat.links[${i}].listen`, l.listen.host]),
  ];
  // node.nbdListen is bound only by pools without floating IPs
  if (cfg.pools.some((p) => p.floatingIps.length === 0 && p.nbdListen === null)) listens.push(['node.nbdListen', cfg.node.nbdListen.host]);
  for (const p of cfg.pools) if (p.floatingIps.length === 0 && p.nbdListen !== null) listens.push([`pools[${p.name}].nbdListen`, p.nbdListen.host]);
  for (const [key, host] of listens) {
    // the whole of 127.0.0.0/8 is local on Linux, though only 127.0.0.1 is listed on lo
    if (!local.has(host) && !host.startsWith('127.')) {
      problems.push(`${key}: ${host} is not an address of this host (is this the other node's file?)`);
    }
  }
  problems.push(...tlsProblems(cfg.api));
  const fence = cfg.fencing.command?.[0];
  if (fence !== undefined) {
    try {
      fs.accessSync(fence, fs.constants.X_OK);
    } catch {
      problems.push(`fencing.command: ${fence} is not an executable file here (fence-agents installed?)`);
    }
  }
  return problems;
}

function summary(cfg: NodeConfig): string {
  const f = cfg.fencing;
  const fencing = f.policy === 'witness' && f.witness !== null ? `witness at ${f.witness.host}:${f.witness.port}`
    : f.policy === 'fence' && f.command !== null ? `fence with ${f.command[0] as string}` : f.policy;
  const at = (a: { host: string; port: number }): string => `${a.host}:${a.port}`;
  return [
    `node ${cfg.node.name} of cluster ${cfg.cluster.name}, peer ${cfg.peer.name} at ${at(cfg.peer.syncAddress)}`,
    `  API ${cfg.api.tls === null ? '' : 'https://'}${at(cfg.node.apiListen)}, sync ${at(cfg.node.syncListen)}, ${cfg.heartbeat.links.length} heartbeat link(s), fencing: ${fencing}`,
    `  data in ${cfg.node.dataDir}`,
    ...cfg.pools.map((p) => `  pool ${p.name} (prefers ${p.preferredNode}): ${p.volumes.join(', ')}${p.floatingIps.length === 0 ? '' : ` on ${p.floatingIps.map((ip) => `${ip.address}/${ip.prefix}`).join(', ')}`}`),
  ].join('\n');
}

function checkWaiting(file: string, w: WaitingConfig): number {
  const c = w.cfg;
  const at = (a: { host: string; port: number }): string => `${a.host}:${a.port}`;
  process.stdout.write([
    `node ${c.node.name} of cluster ${c.cluster.name}, waiting for a peer to join (tandem cluster join on the other node)`,
    `  API ${at(c.node.apiListen)}, sync ${at(c.node.syncListen)}, ${Math.max(1, w.heartbeatListens.length)} heartbeat link(s), fencing: ${c.fencing.policy}`,
    `  data in ${c.node.dataDir}`,
  ].join('\n') + '\n');
  const problems = hostProblems(c);
  if (problems.length > 0) {
    process.stderr.write(problems.map((p) => `tandem: error: ${p}\n`).join(''));
    return exitCodes.failed;
  }
  process.stdout.write(`${file}: ok\n`);
  return exitCodes.ok;
}

/** p's value, or the first SIGTERM or SIGINT before it; the handlers are removed either way. */
function raceStopSignal<T>(p: Promise<T>): Promise<{ kind: 'value'; value: T } | { kind: 'signal'; signal: string }> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
    };
    const onTerm = (): void => { done(); resolve({ kind: 'signal', signal: 'SIGTERM' }); };
    const onInt = (): void => { done(); resolve({ kind: 'signal', signal: 'SIGINT' }); };
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
    p.then((value) => { done(); resolve({ kind: 'value', value }); }, (e: unknown) => { done(); reject(e); });
  });
}

export async function runNode(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || sub === undefined) {
    if (sub === undefined) throw new UsageError('node needs a subcommand (start, check, offline, online, remove, add)');
    process.stdout.write(nodeUsage + '\n');
    return exitCodes.ok;
  }
  // the cluster membership commands ask a running node's API
  if (sub === 'offline' || sub === 'online' || sub === 'remove' || sub === 'add') return runAdmin('node', [sub, ...rest]);
  if (sub !== 'start' && sub !== 'check') throw new UsageError(`unknown node subcommand ${JSON.stringify(sub)}`);
  let values;
  try {
    ({ values } = parseArgs({ args: rest, strict: true, options: { config: { type: 'string' }, debug: { type: 'boolean', default: false } } }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.config === undefined) throw new UsageError('--config is required');
  let text = fs.readFileSync(values.config, 'utf8');
  if (isWaitingConfigText(text)) {
    // made by tandem cluster create and not joined yet (docs/cluster-setup.md)
    const w = parseWaitingConfig(text);
    if (sub === 'check') return checkWaiting(values.config, w);
    const log = createLogger(`node ${w.cfg.node.name}`, undefined, values.debug);
    const waiter = await JoinWaiter.start(values.config, w, log.child('join'));
    process.stdout.write(`node ${w.cfg.node.name} waiting for a peer to join (cluster ${w.cfg.cluster.name})\n`);
    log.info('waiting for a peer to join', { api: `${w.cfg.node.apiListen.host}:${w.cfg.node.apiListen.port}` });
    const r = await raceStopSignal(waiter.joined);
    if (r.kind === 'signal') {
      log.info('stopping', { signal: r.signal });
      await waiter.close();
      log.info('stopped');
      return exitCodes.ok;
    }
    process.stdout.write(`node ${w.cfg.node.name} joined by ${r.value.peer}\n`);
    text = fs.readFileSync(values.config, 'utf8');
  }
  const cfg = parseNodeConfig(text);
  if (sub === 'check') {
    const problems = hostProblems(cfg);
    process.stdout.write(`${summary(cfg)}\n`);
    if (problems.length > 0) {
      process.stderr.write(problems.map((p) => `tandem: error: ${p}\n`).join(''));
      return exitCodes.failed;
    }
    process.stdout.write(`${values.config}: ok\n`);
    return exitCodes.ok;
  }
  const log = createLogger(`node ${cfg.node.name}`, undefined, values.debug);
  const daemon = new NodeDaemon(cfg, log);
  await daemon.start();
  process.stdout.write(`node ${cfg.node.name} ready\n`);
  log.info('stopping', { signal: await untilStopSignal() });
  await daemon.stop();
  log.info('stopped');
  return exitCodes.ok;
}
