// The management commands: each is one call to a node's API (docs/mirroring.md).
import http from 'node:http';
import { parseArgs } from 'node:util';
import type { NodeStatus } from '../replication/status';
import { parseHostPort } from '../util/address';
import { formatSize } from '../util/size';
import { UsageError } from './errors';

export const adminUsage = `usage: tandem status   --api HOST:PORT [--json]
       tandem verify   VOLUME --api HOST:PORT [--resync] [--json]
       tandem resolve  VOLUME --discard NODE --api HOST:PORT
       tandem promote  VOLUME --api HOST:PORT [--force]
       tandem demote   VOLUME --api HOST:PORT
       tandem connect  VOLUME --api HOST:PORT
       tandem disconnect VOLUME --api HOST:PORT
       tandem swap     POOL --api HOST:PORT       (planned switchover to the peer)
       tandem pool move POOL --node NODE --api HOST:PORT  (ask the owner to migrate the pool to NODE)
       tandem maintenance on|off --api HOST:PORT  (nothing moves automatically while on)
--api defaults to $TANDEM_API, then 127.0.0.1:7780.`;

export class ApiCallError extends Error {
  constructor(readonly code: string, message: string) { super(message); }
}

function call(api: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const at = parseHostPort(api);
  if (typeof at === 'string') throw new UsageError(`--api: ${at}`);
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: at.host, port: at.port, method, path, headers: data === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let v: unknown;
        try {
          v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          reject(new ApiCallError('ERR_API', `${api} answered with something that is not JSON`));
          return;
        }
        const err = (v as { error?: { code: string; message: string } }).error;
        if ((res.statusCode ?? 500) >= 400 && err !== undefined) reject(new ApiCallError(err.code, err.message));
        else resolve(v);
      });
    });
    req.on('error', (e) => reject(new ApiCallError('ERR_API', `cannot reach ${api}: ${e.message}`)));
    req.end(data);
  });
}

function formatStatus(s: NodeStatus): string {
  const lines = [`node ${s.node}   peer ${s.peer.name}: ${s.peer.connected ? 'connected' : 'not connected'}`, ''];
  lines.push(['VOLUME', 'STATE', 'ROLE', 'DISK', 'PEER DISK', 'LINK', 'OUT OF SYNC'].map((h, i) => h.padEnd([12, 12, 10, 13, 13, 12, 0][i] as number)).join(''));
  for (const v of s.volumes) {
    lines.push([v.name, v.state, v.role, v.diskState, v.peerDiskState ?? '-', v.connection, formatSize(v.outOfSyncBytes)]
      .map((c, i) => c.padEnd([12, 12, 10, 13, 13, 12, 0][i] as number)).join(''));
    if (v.resync !== null) {
      const r = v.resync;
      const pct = r.totalBytes === 0 ? 100 : Math.floor((r.doneBytes / r.totalBytes) * 100);
      lines.push(`  resync ${r.direction}: ${pct}% (${formatSize(r.doneBytes)} of ${formatSize(r.totalBytes)}), ${formatSize(r.rateBytesPerSecond)}/s, eta ${r.etaSeconds ?? '?'} s`);
    }
    if (v.splitBrain !== null) lines.push(`  split brain: ${v.splitBrain.reason}`);
    if (v.suspended !== null) lines.push(`  writes suspended: ${v.suspended}`);
    if (v.error !== null) lines.push(`  error: ${v.error}`);
  }
  const c = s.clusterState;
  if (c !== undefined) {
    lines.push('', `fencing ${c.policy}${c.maintenance ? '   MAINTENANCE: nothing moves automatically' : ''}   peer ${c.peer.up ? 'up' : 'DOWN'}, heartbeat links ${c.peer.links.up}/${c.peer.links.total}`);
    lines.push(['POOL', 'OWNER', 'TERM', 'PHASE', ''].map((h, i) => h.padEnd([12, 12, 6, 14, 0][i] as number)).join(''));
    for (const p of c.pools) {
      lines.push([p.name, p.owner, String(p.term), p.phase, p.reason ?? ''].map((x, i) => x.padEnd([12, 12, 6, 14, 0][i] as number)).join(''));
      if ((p.floatingIps ?? []).length > 0) lines.push(`  floating IPs: ${(p.floatingIps ?? []).join(', ')}`);
      if ((p.exports ?? []).length > 0) lines.push(`  exports: ${(p.exports ?? []).join(', ')}`);
    }
  }
  return lines.join('\n') + '\n';
}

export async function runAdmin(command: string, args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args, strict: true, allowPositionals: true, options: {
        api: { type: 'string', default: process.env.TANDEM_API ?? '127.0.0.1:7780' },
        json: { type: 'boolean', default: false },
        resync: { type: 'boolean', default: false },
        force: { type: 'boolean', default: false },
        discard: { type: 'string' },
        node: { type: 'string' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  const out = (v: unknown, text: string): void => { process.stdout.write(values.json ? JSON.stringify(v, null, 2) + '\n' : text); };
  if (command === 'status') {
    if (positionals.length > 0) throw new UsageError('status takes no volume name');
    const s = await call(values.api, 'GET', '/api/v1/status');
    out(s, formatStatus(s as NodeStatus));
    return 0;
  }
  if (command === 'maintenance') {
    if (positionals.length !== 1 || (positionals[0] !== 'on' && positionals[0] !== 'off')) throw new UsageError('maintenance takes on or off');
    out(await call(values.api, 'POST', '/api/v1/maintenance', { on: positionals[0] === 'on' }), `maintenance ${positionals[0]}\n`);
    return 0;
  }
  if (command === 'pool') {
    // tandem pool move POOL --node NODE
    if (positionals[0] !== 'move' || positionals.length !== 2 || values.node === undefined) throw new UsageError('pool move needs POOL and --node NODE');
    const r = await call(values.api, 'POST', `/api/v1/pools/${encodeURIComponent(positionals[1] as string)}/move`, { node: values.node }) as { message: string };
    out(r, `${r.message}\n`);
    return 0;
  }
  if (command === 'swap') {
    if (positionals.length !== 1) throw new UsageError('swap needs exactly one POOL');
    const r = await call(values.api, 'POST', `/api/v1/pools/${encodeURIComponent(positionals[0] as string)}/swap`, {}) as { message: string };
    out(r, `${r.message}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`${command} needs exactly one VOLUME`);
  const path = `/api/v1/volumes/${encodeURIComponent(positionals[0] as string)}/${command}`;
  switch (command) {
    case 'verify': {
      const r = await call(values.api, 'POST', path, { resync: values.resync }) as { checkedBytes: number; differingBytes: number; differing: Array<{ offset: number; length: number }>; resentBytes: number };
      out(r, `checked ${formatSize(r.checkedBytes)}: ${r.differingBytes === 0 ? 'the copies are identical' : `${formatSize(r.differingBytes)} differ`}\n` +
        r.differing.slice(0, 20).map((d) => `  ${d.offset}+${d.length}\n`).join('') + (values.resync ? `resent ${formatSize(r.resentBytes)}\n` : ''));
      return r.differingBytes > 0 && !values.resync ? 3 : 0;
    }
    case 'resolve':
      if (values.discard === undefined) throw new UsageError('resolve needs --discard NODE (the node whose changes are thrown away)');
      out(await call(values.api, 'POST', path, { discard: values.discard }), `${positionals[0]}: changes on ${values.discard} will be discarded; resync starts when the nodes meet\n`);
      return 0;
    case 'promote':
      out(await call(values.api, 'POST', path, { force: values.force }), `${positionals[0]}: PRIMARY\n`);
      return 0;
    case 'demote':
    case 'connect':
    case 'disconnect':
      out(await call(values.api, 'POST', path, {}), `${positionals[0]}: ${command} done\n`);
      return 0;
  }
  throw new UsageError(`unknown command ${command}`);
}
