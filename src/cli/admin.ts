// The management commands: each asks a node's API (docs/mirroring.md, docs/cluster.md,
// docs/pools.md); exit codes as in docs/operations.md.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { NodeStatus } from '../replication/status';
import { formatSize } from '../util/size';
import { ApiCallError, ApiUnreachableError, callApi, parseApi, type ApiAddress, type ApiAnswer } from './api-client';
import { DEFAULT_TOKEN_FILE, withCredentials } from './credentials';
import { UsageError, exitCodes } from './errors';
import { formatElapsed, painter, parseDuration, wantsColor, type Painter } from './format';
import { formatStatus } from './status-format';
import { runToken } from './token';
import { readStatus, waitForSync, type WaitOutcome } from './wait-sync';

export const adminUsage = `usage: tandem status     [--json] [--timeout DURATION]
       tandem wait-sync  VOLUME [--timeout DURATION]   (until both copies are in sync)
       tandem verify     VOLUME [--resync] [--wait [--timeout DURATION]] [--json]
       tandem resolve    VOLUME --discard NODE     (on NODE, the node whose changes are thrown away)
       tandem promote    VOLUME [--force]
       tandem demote     VOLUME
       tandem connect    VOLUME
       tandem disconnect VOLUME
       tandem swap       POOL                      (planned switchover to the peer)
       tandem pool move  POOL --node NODE          (asked of the pool's owner)
       tandem pool create POOL --volume NAME:SIZE [--volume …] [--ip ADDR/PREFIX[@IF] …]
                         [--port N] [--node PREFERRED] [--auto-failback] [--file POOL.json]
       tandem pool remove|export|import|unmanage|manage POOL
       tandem pool reattach POOL --node NODE      (an INACTIVE pool; asked of its owner)
       tandem config show|push                    (the cluster configuration document)
       tandem maintenance on|off                   (nothing moves automatically while on)
       tandem node offline [--force]               (hand this node's pools to the peer, then leave the cluster)
       tandem node online [--force]                (back in, once the peer took note)
       tandem node remove NAME [--force] | add NAME   (on the other node: the peer leaves for good, or may come back)
       tandem activity   [--pool POOL] [--level warn|error] [-n LINES] [--json]
       tandem token create NAME [--role admin|read]   (prints the new token, once)
       tandem token list                           (names, ids, roles; never a token)
       tandem token revoke NAME|ID
Every command takes --api HOST:PORT: the node's node.apiListen; the default is
$TANDEM_API, then 127.0.0.1:7780. A node that serves its API over HTTPS (api.tls):
--api https://HOST:PORT, and --ca FILE (or $TANDEM_CA) to trust its certificate when
it is self-signed. Every command sends an API token, the first found of:
--token TOKEN, $TANDEM_TOKEN, --token-file FILE, $TANDEM_TOKEN_FILE, and
${DEFAULT_TOKEN_FILE} (as root on a node: that node's own admin token).
  status --json      the status JSON as the node sent it (docs/status.schema.json)
  status --timeout   how long to wait for the answer (default 10s)
  wait-sync          polls until the volume is PRIM or SECOND with nothing out of sync;
                     a progress bar on a terminal, a line every few seconds elsewhere.
                     --timeout: give up after this long (default: no limit)
  verify --wait      first waits as wait-sync does (verify needs both copies connected
                     and no resync running); --timeout bounds that wait
  verify --resync    sends this node's version of every differing block to the peer
  pool create        adds a pool and its new volumes to the cluster configuration; both
                     nodes create their copies and the preferred node (default: the node
                     asked) serves it. --file: a pool as the node file writes one (docs/pools.md),
                     with volume definitions in "volumes"; options override its keys
  pool export        releases the pool on both nodes, keeps its data; import brings it back
  pool unmanage      the cluster leaves the pool as it is, services running; manage undoes it
  pool remove        an exported or INACTIVE pool leaves the configuration; its volumes'
                     files are moved to DATA_DIR/removed/ on each node
  config push        after the two nodes' configurations diverged: this node's wins
  activity           the node's activity log (its last 200 entries): cluster decisions and
                     every pool step with its outcome and duration, oldest first; -n 0: all
  token create       a token valid on both nodes (once they have met): admin may do
                     everything, read may only read (status, events, metrics, config)
DURATION: 30 (seconds), 30s, 500ms, 10m, 2h.

exit status:
  0  done: the status was read, the node carried the command out, the copies are in sync
  1  refused or failed: the node answered with an error (401: no valid token, 403: a read
     token asked for a command), a volume is in split brain or will not reconnect, verify
     found differing blocks (without --resync), --timeout ran out
  2  usage error: unknown command or option, missing or extra argument
  3  the node's API cannot be reached: nothing listens, no route, no answer in time,
     its certificate is not trusted, or something that is not the Tandem API answered`;

interface VerifyResult {
  checkedBytes: number;
  differingBytes: number;
  differing: Array<{ offset: number; length: number }>;
  resentBytes: number;
}

const VOLUME_COMMANDS = ['verify', 'resolve', 'promote', 'demote', 'connect', 'disconnect', 'wait-sync'];

/** the options each command takes beside --api and --help: any other is a usage error, not silently ignored */
const COMMAND_OPTIONS: Record<string, readonly string[]> = {
  status: ['json', 'timeout'],
  'wait-sync': ['timeout'],
  verify: ['resync', 'wait', 'timeout', 'json'],
  resolve: ['discard', 'json', 'timeout'],
  promote: ['force', 'json', 'timeout'],
  demote: ['json', 'timeout'],
  connect: ['json', 'timeout'],
  disconnect: ['json', 'timeout'],
  swap: ['json', 'timeout'],
  pool: ['node', 'json', 'timeout', 'volume', 'ip', 'port', 'auto-failback', 'file'],
  config: ['json', 'timeout'],
  maintenance: ['json', 'timeout'],
  node: ['force', 'json', 'timeout'],
  activity: ['pool', 'level', 'lines', 'json', 'timeout'],
  token: ['role', 'json', 'timeout'],
};

/** how every command reaches the node: taken by all of them */
const CONNECTION_OPTIONS = ['api', 'token', 'token-file', 'ca'];

const LEVELS = ['info', 'warn', 'error'];

type ActivityEntry = NonNullable<NodeStatus['clusterState']>['activity'][number];

function activityLine(e: ActivityEntry, p: Painter): string {
  const at = e.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const level = p.paint(e.level.padEnd(5), e.level === 'error' ? 'bad' : e.level === 'warn' ? 'warn' : null);
  return `${at}  ${level}  ${e.event.padEnd(16)}  ${e.message}`;
}

function outcomeCode(r: WaitOutcome): number {
  if (r.kind === 'in-sync') return exitCodes.ok;
  process.stderr.write(`tandem: ${r.kind === 'unreachable' ? 'unreachable' : 'error'}: ${r.message}\n`);
  return r.kind === 'unreachable' ? exitCodes.unreachable : exitCodes.failed;
}

/** While a verify runs the API says nothing: a terminal gets the elapsed time so it does not look hung. */
async function withElapsed<T>(label: string, show: boolean, run: Promise<T>): Promise<T> {
  if (!show) return run;
  const started = Date.now();
  const tick = (): void => { process.stdout.write(`\r${label} ${formatElapsed(Date.now() - started)}\x1b[K`); };
  tick();
  const timer = setInterval(tick, 1000);
  try {
    return await run;
  } finally {
    clearInterval(timer);
    process.stdout.write('\r\x1b[K');
  }
}

async function verify(api: ApiAddress, volume: string, o: { resync: boolean; wait: boolean; timeoutMs: number | null; json: boolean }): Promise<number> {
  // with --json, stdout carries the JSON only: progress goes to stderr
  const progress = o.json ? process.stderr : process.stdout;
  if (o.wait) {
    const r = await waitForSync({ api, volume, timeoutMs: o.timeoutMs, out: progress, painter: painter(wantsColor(progress)) });
    if (r.kind !== 'in-sync') return outcomeCode(r);
  }
  const node = (await readStatus(api)).node;
  if (!o.json && !process.stdout.isTTY) process.stdout.write(`verifying ${volume} on ${node}${o.resync ? ', resending what differs' : ''}\n`);
  const call = callApi(api, 'POST', `/api/v1/volumes/${encodeURIComponent(volume)}/verify`, { body: { resync: o.resync } });
  const answer = await withElapsed(`verifying ${volume} on ${node}:`, !o.json && process.stdout.isTTY === true, call);
  const r = answer.value as VerifyResult;
  const differs = r.differingBytes > 0 && !o.resync;
  if (o.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  } else {
    const p = painter(wantsColor(process.stdout));
    const lines = [`${volume}: checked ${formatSize(r.checkedBytes)}: ${r.differingBytes === 0 ? p.paint('the copies are identical', 'good') : p.paint(`${formatSize(r.differingBytes)} differ`, 'bad')}`];
    for (const d of r.differing.slice(0, 20)) lines.push(`  offset ${d.offset} length ${d.length}`);
    if (r.differing.length > 20) lines.push(`  … and ${r.differing.length - 20} more ranges`);
    if (o.resync) lines.push(`resent ${formatSize(r.resentBytes)} from ${node}: the peer now holds ${node}'s version`);
    else if (differs) lines.push(`to make the peer a copy of ${node}'s version: tandem verify ${volume} --resync --api ${api.text}`);
    process.stdout.write(lines.join('\n') + '\n');
  }
  return differs ? exitCodes.failed : exitCodes.ok;
}

/** `pool create`'s request: the --file definition, then the options over it. */
function poolDefinition(pool: string, v: { volume?: string[]; ip?: string[]; port?: string; node?: string; 'auto-failback': boolean; file?: string }): Record<string, unknown> {
  let def: Record<string, unknown> = {};
  if (v.file !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(v.file, 'utf8'));
    } catch (e) {
      throw new UsageError(`--file ${v.file}: ${(e as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new UsageError(`--file ${v.file}: not a JSON object`);
    def = parsed as Record<string, unknown>;
  }
  const volumes = (v.volume ?? []).map((x) => {
    const m = /^([^:]+):(.+)$/.exec(x);
    if (m === null) throw new UsageError(`--volume ${JSON.stringify(x)}: expected NAME:SIZE, e.g. vol1:10G`);
    return { name: m[1], size: m[2] };
  });
  const ips = (v.ip ?? []).map((x) => {
    const [address, iface] = x.split('@');
    return iface === undefined ? { address } : { address, interface: iface };
  });
  if (v.port !== undefined && !/^\d+$/.test(v.port)) throw new UsageError(`--port ${JSON.stringify(v.port)} is not a port number`);
  const out: Record<string, unknown> = { ...def, name: pool };
  if (volumes.length > 0) out.volumes = volumes;
  if (ips.length > 0) out.floatingIps = ips;
  if (v.port !== undefined) out.nbdPort = Number(v.port);
  if (v.node !== undefined) out.preferredNode = v.node;
  if (v['auto-failback']) out.autoFailback = true;
  if (!Array.isArray(out.volumes) || out.volumes.length === 0) throw new UsageError('pool create needs at least one --volume NAME:SIZE (or volumes in --file)');
  return out;
}

export async function runAdmin(command: string, args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args, strict: true, allowPositionals: true, tokens: true, options: {
        api: { type: 'string', default: process.env.TANDEM_API ?? '127.0.0.1:7780' },
        json: { type: 'boolean', default: false },
        resync: { type: 'boolean', default: false },
        force: { type: 'boolean', default: false },
        wait: { type: 'boolean', default: false },
        timeout: { type: 'string' },
        discard: { type: 'string' },
        node: { type: 'string' },
        pool: { type: 'string' },
        level: { type: 'string' },
        lines: { type: 'string', short: 'n' },
        volume: { type: 'string', multiple: true },
        ip: { type: 'string', multiple: true },
        port: { type: 'string' },
        'auto-failback': { type: 'boolean', default: false },
        file: { type: 'string' },
        role: { type: 'string' },
        token: { type: 'string' },
        'token-file': { type: 'string' },
        ca: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals, tokens } = parsed;
  if (values.help) {
    process.stdout.write(adminUsage + '\n');
    return exitCodes.ok;
  }
  const allowed = COMMAND_OPTIONS[command] ?? [];
  for (const t of tokens) {
    if (t.kind === 'option' && !CONNECTION_OPTIONS.includes(t.name) && !allowed.includes(t.name)) throw new UsageError(`${command} does not take --${t.name}`);
  }
  const api = withCredentials(parseApi(values.api), values);
  const timeoutMs = values.timeout === undefined ? null : parseDuration(values.timeout, '--timeout');
  const out = (v: unknown, text: string): void => { process.stdout.write(values.json ? JSON.stringify(v, null, 2) + '\n' : text); };
  const message = (v: unknown): string => `${(v as { message?: unknown }).message ?? 'done'}\n`;

  if (command === 'status') {
    if (positionals.length > 0) throw new UsageError('status takes no arguments');
    const answer = await callApi(api, 'GET', '/api/v1/status', { timeoutMs: timeoutMs ?? 10_000 });
    const s = answer.value as Partial<NodeStatus> | null;
    if (s === null || typeof s !== 'object' || typeof s.node !== 'string' || !Array.isArray(s.volumes) || typeof s.peer !== 'object') {
      throw new ApiUnreachableError(`${api.text} answered, but not with a Tandem node's status`);
    }
    process.stdout.write(values.json ? answer.text : formatStatus(s as NodeStatus, api.text, painter(wantsColor(process.stdout))));
    return exitCodes.ok;
  }
  if (command === 'activity') {
    if (positionals.length > 0) throw new UsageError('activity takes no arguments (--pool POOL picks one pool)');
    const level = values.level ?? 'info';
    if (!LEVELS.includes(level)) throw new UsageError(`--level: ${JSON.stringify(level)} is not one of ${LEVELS.join(', ')}`);
    const lines = values.lines === undefined ? 30 : Number(values.lines);
    if (!Number.isInteger(lines) || lines < 0) throw new UsageError(`-n: ${JSON.stringify(values.lines)} is not a number of lines`);
    const s = await readStatus(api, timeoutMs ?? 10_000);
    const pool = values.pool;
    if (pool !== undefined && s.clusterState !== undefined && !s.clusterState.pools.some((x) => x.name === pool)) {
      throw new ApiCallError('ERR_UNKNOWN_POOL', `no pool named ${JSON.stringify(pool)} on ${s.node} (it has ${s.clusterState.pools.map((x) => x.name).join(', ')})`);
    }
    // pool steps carry the pool; the cluster's decisions name it in the message
    const named = pool === undefined ? null : new RegExp(`(^|\\s)pool ${pool.replace(/[.]/g, '\\.')}(?=[\\s:,;)]|$)`);
    const about = (e: ActivityEntry): boolean => named === null || e.pool === pool || named.test(e.message);
    const picked = (s.clusterState?.activity ?? []).filter((e) => LEVELS.indexOf(e.level) >= LEVELS.indexOf(level) && about(e));
    const shown = lines === 0 ? picked : picked.slice(-lines);
    if (values.json) {
      process.stdout.write(JSON.stringify(shown, null, 2) + '\n');
    } else {
      const p = painter(wantsColor(process.stdout));
      const head = `activity log of ${s.node}${pool === undefined ? '' : `, pool ${pool}`}${level === 'info' ? '' : `, ${level} and worse`}: ${shown.length} of ${picked.length} entries, oldest first`;
      process.stdout.write([head, ...shown.map((e) => activityLine(e, p))].join('\n') + '\n');
    }
    return exitCodes.ok;
  }
  if (command === 'maintenance') {
    if (positionals.length !== 1 || (positionals[0] !== 'on' && positionals[0] !== 'off')) throw new UsageError('maintenance takes on or off');
    const r = await callApi(api, 'POST', '/api/v1/maintenance', { body: { on: positionals[0] === 'on' }, ...(timeoutMs === null ? {} : { timeoutMs }) });
    out(r.value, `maintenance ${positionals[0]}: ${message(r.value)}`);
    return exitCodes.ok;
  }
  if (command === 'node') {
    // tandem node offline|online [--force], tandem node remove|add NAME [--force] (docs/cluster.md, "Taking a node offline")
    const [sub, name] = positionals;
    const forced = values.force ? { force: true } : {};
    const call = (path: string, body: object): Promise<ApiAnswer> => callApi(api, 'POST', path, { body, ...(timeoutMs === null ? {} : { timeoutMs }) });
    let r: ApiAnswer;
    if ((sub === 'offline' || sub === 'online') && positionals.length === 1) r = await call(`/api/v1/node/${sub}`, forced);
    else if (sub === 'remove' && positionals.length === 2) r = await call(`/api/v1/nodes/${encodeURIComponent(name ?? '')}/remove`, forced);
    else if (sub === 'add' && positionals.length === 2 && !values.force) r = await call(`/api/v1/nodes/${encodeURIComponent(name ?? '')}/add`, {});
    else throw new UsageError('node takes offline [--force], online [--force], remove NAME [--force] or add NAME');
    out(r.value, message(r.value));
    return exitCodes.ok;
  }
  if (command === 'config') {
    const sub = positionals[0];
    if (positionals.length !== 1 || (sub !== 'show' && sub !== 'push')) throw new UsageError('config takes show or push');
    const r = sub === 'show'
      ? await callApi(api, 'GET', '/api/v1/config', timeoutMs === null ? {} : { timeoutMs })
      : await callApi(api, 'POST', '/api/v1/config/push', { body: {}, ...(timeoutMs === null ? {} : { timeoutMs }) });
    out(r.value, sub === 'show' ? r.text : message(r.value));
    return exitCodes.ok;
  }
  if (command === 'pool') {
    const sub = positionals[0];
    const subs = ['move', 'create', 'remove', 'export', 'import', 'unmanage', 'manage', 'reattach'];
    if (sub === undefined || !subs.includes(sub)) throw new UsageError(sub === undefined ? `pool needs a subcommand: ${subs.join(', ')}` : `unknown pool subcommand ${JSON.stringify(sub)}`);
    if (positionals.length !== 2) throw new UsageError(`pool ${sub} needs exactly one POOL`);
    const pool = positionals[1] as string;
    const creating = ['volume', 'ip', 'port', 'auto-failback', 'file'];
    for (const t of tokens) {
      if (t.kind === 'option' && creating.includes(t.name) && sub !== 'create') throw new UsageError(`pool ${sub} does not take --${t.name}`);
    }
    if ((sub === 'move' || sub === 'reattach') && values.node === undefined) throw new UsageError(`pool ${sub} needs POOL and --node NODE`);
    if (sub !== 'move' && sub !== 'reattach' && sub !== 'create' && values.node !== undefined) throw new UsageError(`pool ${sub} does not take --node`);
    const body = sub === 'create' ? poolDefinition(pool, values) : sub === 'move' || sub === 'reattach' ? { node: values.node } : {};
    const at = sub === 'create' ? '/api/v1/pools' : `/api/v1/pools/${encodeURIComponent(pool)}/${sub}`;
    // export, import and create wait for the pool to settle on the node: up to two minutes
    const r = await callApi(api, 'POST', at, { body, timeoutMs: timeoutMs ?? 150_000 });
    out(r.value, message(r.value));
    return exitCodes.ok;
  }
  if (command === 'token') return runToken(api, positionals, { role: values.role, json: values.json, timeoutMs });
  if (command === 'swap') {
    if (positionals.length !== 1) throw new UsageError('swap needs exactly one POOL');
    const r = await callApi(api, 'POST', `/api/v1/pools/${encodeURIComponent(positionals[0] as string)}/swap`, { body: {}, ...(timeoutMs === null ? {} : { timeoutMs }) });
    out(r.value, message(r.value));
    return exitCodes.ok;
  }
  if (!VOLUME_COMMANDS.includes(command)) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  if (positionals.length !== 1) throw new UsageError(`${command} needs exactly one VOLUME`);
  const volume = positionals[0] as string;
  if (command === 'wait-sync') {
    const r = await waitForSync({ api, volume, timeoutMs, out: process.stdout, painter: painter(wantsColor(process.stdout)) });
    return outcomeCode(r);
  }
  if (command === 'verify') {
    if (timeoutMs !== null && !values.wait) throw new UsageError('verify: --timeout bounds --wait; give both, or neither');
    return verify(api, volume, { resync: values.resync, wait: values.wait, timeoutMs, json: values.json });
  }
  const path = `/api/v1/volumes/${encodeURIComponent(volume)}/${command}`;
  const post = (body: unknown): Promise<unknown> => callApi(api, 'POST', path, { body, ...(timeoutMs === null ? {} : { timeoutMs }) }).then((r) => r.value);
  switch (command) {
    case 'resolve':
      if (values.discard === undefined) throw new UsageError('resolve needs --discard NODE (the node whose changes are thrown away)');
      out(await post({ discard: values.discard }), `${volume}: the changes on ${values.discard} will be discarded; the resync starts when the nodes meet\n`);
      return exitCodes.ok;
    case 'promote':
      out(await post({ force: values.force }), `${volume}: PRIMARY\n`);
      return exitCodes.ok;
    default:
      out(await post({}), `${volume}: ${command} done\n`);
      return exitCodes.ok;
  }
}

export { ApiCallError, ApiUnreachableError };
