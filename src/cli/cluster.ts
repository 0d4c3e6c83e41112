// `tandem cluster create` (first node), `tandem cluster join` (second node) and
// `tandem cluster token`: a two-node cluster formed with two commands (docs/cluster-setup.md).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../util/config-fields';
import { configLimits } from '../node/config';
import { parseHostPort } from '../util/address';
import { acceptMac, joinKey, macMatches, requestMac, type JoinRequestFields } from '../node/join-auth';
import { JOIN_PATHS } from '../node/join';
import {
  configText, isWaitingConfigText, joinerConfigObject, parseWaitingConfig, readConfigText, tokenOf, waitingConfigObject, writeConfigFile,
} from '../node/join-files';
import {
  FENCING_POLICIES, FLOATING_IP_DRIVERS, JoinTokenError, checkHostPort, decodeJoinToken, encodeJoinToken, formatHostPort, isNodeName,
  joinTokenLimits, type JoinToken,
} from '../node/join-token';
import { hostProblems } from './node';
import { ApiCallError, ApiUnreachableError, callApi, type ApiAddress } from './api-client';
import { UsageError, exitCodes } from './errors';

export const clusterUsage = `usage: tandem cluster create --cluster NAME --node NAME --sync HOST:PORT --data-dir DIR --config FILE
           [--api HOST:PORT] [--nbd HOST:PORT] [--heartbeat HOST:PORT]...
           [--heartbeat-interval MS] [--heartbeat-timeout MS]
           [--fencing none|ignore|manual|fence|witness] [--witness HOST:PORT]
           [--fence-command 'PROGRAM ARG...'] [--floating-ip-driver linux|loopback] [--force]
       tandem cluster join TOKEN --node NAME --sync HOST:PORT --data-dir DIR --config FILE
           [--api HOST:PORT] [--nbd HOST:PORT] [--heartbeat HOST:PORT]...
           [--fence-command 'PROGRAM ARG...'] [--force]
       tandem cluster token --config FILE

Forms a two-node cluster (docs/cluster-setup.md).

create: on the first node. Makes a new cluster id and secret, writes this node's
FILE (mode 0600) without a peer, and prints a join token. Then start the node
(tandem node start --config FILE): it waits for the other node to join.
join: on the second node, while the first waits. Proves to the first node that
it holds the token's secret (without sending it); the first node writes this
node into its FILE and starts; this command writes this node's FILE (mode
0600). Then start it: tandem node start --config FILE.
token: prints the join token of a first node's FILE again, until a node joins.

THE JOIN TOKEN HOLDS THE CLUSTER SECRET: whoever has it can join the cluster.
Pass it to the other node over a safe channel. TOKEN "-" reads it from stdin,
which keeps it out of the process list and the shell history.

  --sync       where the other node reaches this node's sync link (TCP)
  --api        this node's API (default: the --sync host, port 7780); the
               joining node contacts the first node's there
  --nbd        where pools without floating IPs export (default: the --sync
               host, port 10809)
  --heartbeat  this node's heartbeat listen address (UDP, an IP address),
               once per link; link i of one node pairs with link i of the
               other, so join gives as many as create did. Without it: one
               link on each node's sync port + 1
  --fencing, --witness, --heartbeat-interval, --heartbeat-timeout,
  --floating-ip-driver   the cluster's settings (docs/cluster.md, docs/pools.md):
               create writes them, join takes them from the token
  --fence-command   with --fencing fence: the command that powers the OTHER
               node off, split at whitespace (no quoting); join gives its own
  --force      replace an existing FILE

exit status: 0 done; 1 refused (the first node said why) or a file cannot be
written; 2 usage error (a garbage token too); 3 the first node's API cannot be
reached.`;

const DEFAULT_API_PORT = 7780;
const DEFAULT_NBD_PORT = 10809;

function usage(option: string, e: unknown): never {
  if (e instanceof ConfigError) throw new UsageError(`${option}: ${e.message.replace(/^[^:]*: /, '')}`);
  throw e;
}

/** An address the other node reaches (no wildcard); `ipOnly` for heartbeats and the witness. */
function reachable(v: string, option: string, ipOnly = false): string {
  try {
    return checkHostPort(v, option, ipOnly).text;
  } catch (e) {
    usage(option, e);
  }
}

/** An address this node listens on: a wildcard is fine. */
function listenAddress(v: string, option: string): { host: string; port: number; text: string } {
  const a = parseHostPort(v);
  if (typeof a === 'string') throw new UsageError(`${option}: ${a}`);
  return { ...a, text: formatHostPort(a) };
}

function nodeName(v: string | undefined, option: string): string {
  if (v === undefined) throw new UsageError(`${option} NAME is required`);
  if (!isNodeName(v)) throw new UsageError(`${option}: ${JSON.stringify(v)} is not a name (letters, digits, '.', '_', '-'; at most 63)`);
  return v;
}

function required(v: string | undefined, option: string): string {
  if (v === undefined || v === '') throw new UsageError(`${option} is required`);
  return v;
}

function milliseconds(v: string | undefined, option: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new UsageError(`${option}: ${JSON.stringify(v)} is not a number of milliseconds`);
  return Number(v);
}

function fenceCommand(v: string | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  const argv = v.trim().split(/\s+/).filter((a) => a !== '');
  if (argv.length === 0) throw new UsageError('--fence-command: empty');
  if (argv.length > configLimits.fenceArgsMax) throw new UsageError(`--fence-command: at most ${configLimits.fenceArgsMax} words`);
  return argv;
}

/** The node's own addresses: --sync is required; --api and --nbd default to its host. */
function ownAddresses(v: { sync?: string | undefined; api?: string | undefined; nbd?: string | undefined; heartbeat?: string[] | undefined }):
  { sync: string; api: string; nbd: string; heartbeat: string[] } {
  const sync = reachable(required(v.sync, '--sync HOST:PORT'), '--sync');
  const host = (parseHostPort(sync) as { host: string }).host;
  const heartbeat = (v.heartbeat ?? []).map((h) => reachable(h, '--heartbeat', true));
  if (heartbeat.length > joinTokenLimits.heartbeatLinksMax) throw new UsageError(`--heartbeat: at most ${joinTokenLimits.heartbeatLinksMax} links`);
  if (new Set(heartbeat).size !== heartbeat.length) throw new UsageError('--heartbeat: each link needs its own address');
  return {
    sync,
    api: v.api === undefined ? formatHostPort({ host, port: DEFAULT_API_PORT }) : listenAddress(v.api, '--api').text,
    nbd: v.nbd === undefined ? formatHostPort({ host, port: DEFAULT_NBD_PORT }) : listenAddress(v.nbd, '--nbd').text,
    heartbeat,
  };
}

function refuseExisting(file: string, force: boolean): void {
  if (!force && fs.existsSync(file)) {
    throw Object.assign(new Error(`${file} exists already: move it away, or give --force to replace it`), { code: 'EEXIST' });
  }
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>, positionals = false): ReturnType<typeof parseArgs> {
  try {
    return parseArgs({ args, strict: true, allowPositionals: positionals, options });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

type Values = Record<string, string | boolean | string[] | undefined>;
const str = (v: Values, k: string): string | undefined => v[k] as string | undefined;

async function create(args: string[]): Promise<number> {
  const v = parse(args, {
    cluster: { type: 'string' }, node: { type: 'string' }, sync: { type: 'string' }, api: { type: 'string' }, nbd: { type: 'string' },
    'data-dir': { type: 'string' }, config: { type: 'string' }, heartbeat: { type: 'string', multiple: true },
    'heartbeat-interval': { type: 'string' }, 'heartbeat-timeout': { type: 'string' },
    fencing: { type: 'string' }, witness: { type: 'string' }, 'fence-command': { type: 'string' }, 'floating-ip-driver': { type: 'string' },
    force: { type: 'boolean', default: false },
  }).values as Values;
  const clusterName = nodeName(str(v, 'cluster'), '--cluster');
  const name = nodeName(str(v, 'node'), '--node');
  const own = ownAddresses({ sync: str(v, 'sync'), api: str(v, 'api'), nbd: str(v, 'nbd'), heartbeat: v.heartbeat as string[] | undefined });
  // the joining node contacts this API at the address in the token
  reachable(own.api, '--api');
  const dataDir = path.resolve(required(str(v, 'data-dir'), '--data-dir DIR'));
  const file = path.resolve(required(str(v, 'config'), '--config FILE'));
  const policy = str(v, 'fencing');
  if (policy !== undefined && !(FENCING_POLICIES as readonly string[]).includes(policy)) throw new UsageError(`--fencing: must be one of ${FENCING_POLICIES.join(', ')}`);
  const witness = str(v, 'witness') === undefined ? undefined : reachable(str(v, 'witness') as string, '--witness', true);
  if (policy === 'witness' && witness === undefined) throw new UsageError('--fencing witness needs --witness HOST:PORT (where tandem witness listens)');
  if (policy !== 'witness' && witness !== undefined) throw new UsageError('--witness is for --fencing witness');
  const command = fenceCommand(str(v, 'fence-command'));
  if (policy === 'fence' && command === undefined) throw new UsageError('--fencing fence needs --fence-command \'PROGRAM ARG...\' (it powers the other node off)');
  if (policy !== 'fence' && command !== undefined) throw new UsageError('--fence-command is for --fencing fence');
  const driver = str(v, 'floating-ip-driver');
  if (driver !== undefined && !(FLOATING_IP_DRIVERS as readonly string[]).includes(driver)) {
    throw new UsageError(`--floating-ip-driver: must be one of ${FLOATING_IP_DRIVERS.join(', ')}`);
  }
  refuseExisting(file, v.force === true);
  const text = configText(waitingConfigObject({
    clusterName, clusterId: crypto.randomBytes(16), secret: crypto.randomBytes(32), nodeName: name, dataDir, ...own,
    heartbeatIntervalMs: milliseconds(str(v, 'heartbeat-interval'), '--heartbeat-interval'),
    heartbeatTimeoutMs: milliseconds(str(v, 'heartbeat-timeout'), '--heartbeat-timeout'),
    fencingPolicy: policy, witness, fenceCommand: command, floatingIpDriver: driver,
  }), true);
  const w = parseWaitingConfig(text);
  const token = encodeJoinToken(tokenOf(w));
  writeConfigFile(file, text, v.force === true);
  for (const p of hostProblems(w.cfg)) process.stderr.write(`tandem: warning: ${p}\n`);
  process.stdout.write([
    `cluster ${clusterName} created: node ${name}'s configuration is in ${file} (mode 0600: it holds the cluster secret)`,
    'next:',
    `  on this node:      tandem node start --config ${file}`,
    `                     (it waits for the other node to join, on its API ${own.api})`,
    '  on the other node: tandem cluster join TOKEN --node NAME --sync HOST:PORT --data-dir DIR --config FILE',
    '                     TOKEN is the line below. It holds the cluster secret: pass it on over a safe channel.',
    token,
  ].join('\n') + '\n');
  return exitCodes.ok;
}

function readToken(arg: string): JoinToken {
  let text = arg;
  if (arg === '-') {
    const buf = fs.readFileSync(0);
    if (buf.length > joinTokenLimits.textCharsMax + 2) throw new UsageError(`TOKEN: more than ${joinTokenLimits.textCharsMax} characters on stdin`);
    text = buf.toString('utf8');
  }
  try {
    return decodeJoinToken(text);
  } catch (e) {
    if (e instanceof JoinTokenError) throw new UsageError(`TOKEN: ${e.message}`);
    throw e;
  }
}

async function join(args: string[]): Promise<number> {
  const parsed = parse(args, {
    node: { type: 'string' }, sync: { type: 'string' }, api: { type: 'string' }, nbd: { type: 'string' },
    'data-dir': { type: 'string' }, config: { type: 'string' }, heartbeat: { type: 'string', multiple: true },
    'fence-command': { type: 'string' }, force: { type: 'boolean', default: false },
  }, true);
  const v = parsed.values as Values;
  if (parsed.positionals.length !== 1) throw new UsageError('cluster join needs exactly one TOKEN (the line tandem cluster create printed, or - to read it from stdin)');
  const token = readToken(parsed.positionals[0] as string);
  const name = nodeName(str(v, 'node'), '--node');
  const own = ownAddresses({ sync: str(v, 'sync'), api: str(v, 'api'), nbd: str(v, 'nbd'), heartbeat: v.heartbeat as string[] | undefined });
  const dataDir = path.resolve(required(str(v, 'data-dir'), '--data-dir DIR'));
  const file = path.resolve(required(str(v, 'config'), '--config FILE'));
  const first = token.node;
  // the first node refuses these too; said here before anything is asked
  if (name === first.name) throw new ConfigError('ERR_CONFIG', `node names must differ: the first node of cluster ${token.cluster.name} is named ${first.name}; choose another --node`);
  if (own.sync === first.sync.text) throw new UsageError(`--sync: ${own.sync} is ${first.name}'s sync address; give this node's`);
  if (own.heartbeat.length !== first.heartbeat.length) {
    throw new UsageError(first.heartbeat.length === 0
      ? `node ${first.name} uses the default heartbeat link (beside its sync port): join without --heartbeat`
      : `node ${first.name} has ${first.heartbeat.length} heartbeat link(s) (${first.heartbeat.map((h) => h.text).join(', ')}): give --heartbeat ${first.heartbeat.length} time(s), link i pairs with its link i`);
  }
  const policy = token.settings.fencing?.policy;
  const command = fenceCommand(str(v, 'fence-command'));
  if (policy === 'fence' && command === undefined) {
    throw new UsageError(`cluster ${token.cluster.name} fences: give --fence-command 'PROGRAM ARG...', the command that powers ${first.name} off`);
  }
  if (policy !== 'fence' && command !== undefined) throw new UsageError(`--fence-command: cluster ${token.cluster.name}'s fencing policy is ${policy ?? 'manual'}, not fence`);
  refuseExisting(file, v.force === true);
  let text: string;
  try {
    text = configText(joinerConfigObject(token, { nodeName: name, dataDir, ...own, fenceCommand: command }));
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError('ERR_CONFIG', `this node's configuration would be refused: ${e.message}`);
    throw e;
  }

  // the join exchange proves itself with the cluster secret's MACs: it needs no API token
  const api: ApiAddress = { host: first.api.host, port: first.api.port, text: first.api.text, https: false, ca: null, credential: null };
  let offer;
  try {
    offer = (await callApi(api, 'GET', JOIN_PATHS.nonce, { timeoutMs: 10_000 })).value as { node?: unknown; cluster?: unknown; nonce?: unknown };
  } catch (e) {
    // a node of an earlier version, running as usual: it does not know the join at all
    if (!(e instanceof ApiCallError && e.httpStatus === 404)) throw e;
    throw new ApiCallError('ERR_NOT_WAITING', `the node at ${api.text} does not wait for a join: it has a peer already, or it was not made by tandem cluster create`, 404);
  }
  if (typeof offer?.nonce !== 'string' || !/^[0-9a-f]{64}$/.test(offer.nonce)) throw new ApiUnreachableError(`${api.text} answered, but not with a join nonce: not a Tandem node waiting for a join`);
  if (offer.node !== first.name) {
    throw new ApiCallError('ERR_WRONG_NODE', `the node at ${api.text} is ${JSON.stringify(offer.node)}, not ${first.name} as the token says`);
  }
  const fields: JoinRequestFields = {
    clusterId: token.cluster.id.toString('hex'), node: name, syncAddress: own.sync, apiAddress: own.api, heartbeat: own.heartbeat, settings: token.settings, nonce: offer.nonce,
  };
  const key = joinKey(token.cluster.id, token.cluster.secret);
  const mac = requestMac(key, fields).toString('hex');
  let answer;
  try {
    answer = (await callApi(api, 'POST', JOIN_PATHS.join, { body: { ...fields, mac }, timeoutMs: 30_000 })).value as Record<string, unknown>;
  } catch (e) {
    if (e instanceof ApiUnreachableError) {
      throw new ApiUnreachableError(`${e.message}. ${file} is not written: run this command again with the same options ` +
        `(if the join was taken, ${first.name} names ${name} as its peer, and the command writes the file)`);
    }
    throw e;
  }
  const expected = acceptMac(key, { clusterId: fields.clusterId, nonce: fields.nonce, requestMac: mac, node: first.name, peer: name });
  if (!macMatches(expected, answer?.mac) || answer?.node !== first.name || answer?.peer !== name) {
    throw new ApiCallError('ERR_BAD_ANSWER', `the answer from ${api.text} is not signed with the cluster secret: it is not node ${first.name} of cluster ${token.cluster.name}. ${file} is not written`);
  }
  writeConfigFile(file, text, v.force === true);
  // a node running as usual that names this one as its peer: an earlier join was taken and its answer lost
  const head = answer.already === true
    ? `node ${first.name} of cluster ${token.cluster.name} names ${name} as its peer already (an earlier join was taken)`
    : `node ${name} joined cluster ${token.cluster.name}: its peer is ${first.name} (sync ${first.sync.text}), which starts now`;
  process.stdout.write([head, ...written(name, file)].join('\n') + '\n');
  return exitCodes.ok;
}

function written(name: string, file: string): string[] {
  return [`node ${name}'s configuration is in ${file} (mode 0600: it holds the cluster secret)`, `start this node: tandem node start --config ${file}`];
}

function token(args: string[]): number {
  const v = parse(args, { config: { type: 'string' } }).values as Values;
  const file = required(str(v, 'config'), '--config FILE');
  const text = readConfigText(file);
  if (!isWaitingConfigText(text)) throw new ConfigError('ERR_CONFIG', `${file} names a peer already (or is not a node configuration): the cluster is formed, there is nothing to join`);
  process.stdout.write(encodeJoinToken(tokenOf(parseWaitingConfig(text))) + '\n');
  return exitCodes.ok;
}

export async function runCluster(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(clusterUsage + '\n');
    return exitCodes.ok;
  }
  switch (sub) {
    case 'create': return create(rest);
    case 'join': return join(rest);
    case 'token': return token(rest);
    case undefined: throw new UsageError('cluster needs a subcommand (create, join, token)');
    default: throw new UsageError(`unknown cluster subcommand ${JSON.stringify(sub)}`);
  }
}
