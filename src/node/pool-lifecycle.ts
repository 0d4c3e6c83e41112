// The pool lifecycle commands (docs/pools.md, "Lifecycle"): each is a change of
// the cluster configuration document, made on the node asked, carried to the
// peer, and waited for here until it has taken effect. What each may act on is
// checked first; a refused command changes nothing.
import type { PoolStatus } from '../replication/status';
import { CodedError } from '../util/coded-error';
import type { PoolConfig, PoolControl } from './config';
import type { NodeDaemon } from './daemon';

export class LifecycleError extends CodedError<'ERR_POOL_EXISTS' | 'ERR_UNKNOWN_POOL' | 'ERR_POOL_BUSY' | 'ERR_BAD_REQUEST' | 'ERR_TIMEOUT'> {
  override readonly name = 'LifecycleError';
}

export const lifecycleLimits = { waitMs: 120_000, pollMs: 50 } as const;

const nameOf = (x: unknown): unknown => (x as { name?: unknown }).name;

function poolView(d: NodeDaemon, pool: string): PoolStatus | undefined {
  return d.cluster.status().pools.find((p) => p.name === pool);
}

/** The pool as the cluster machine sees it here, and its definition in the configuration in force. */
function known(d: NodeDaemon, pool: string): { view: PoolStatus; def: PoolConfig } {
  const view = poolView(d, pool);
  const def = d.cfg.pools.find((p) => p.name === pool);
  if (view === undefined || def === undefined) {
    throw new LifecycleError('ERR_UNKNOWN_POOL', `no pool named ${JSON.stringify(pool)} (pools: ${d.cfg.pools.map((p) => p.name).join(', ') || 'none'})`);
  }
  return { view, def };
}

/** Waits until the pool's view here satisfies `done`; throws ERR_TIMEOUT with what it is instead. */
async function until(d: NodeDaemon, pool: string, what: string, done: (v: PoolStatus | undefined) => boolean): Promise<PoolStatus | undefined> {
  const deadline = Date.now() + lifecycleLimits.waitMs;
  for (;;) {
    const v = poolView(d, pool);
    if (done(v)) return v;
    if (Date.now() >= deadline) {
      throw new LifecycleError('ERR_TIMEOUT', `pool ${pool} is not ${what} after ${lifecycleLimits.waitMs} ms: it is ${v?.phase ?? 'gone'}${v?.reason === null || v?.reason === undefined ? '' : ` (${v.reason})`}`);
    }
    await new Promise((r) => setTimeout(r, lifecycleLimits.pollMs));
  }
}

/**
 * Done with its activation here, as far as this node can tell: owned elsewhere, or ACTIVE, INACTIVE
 * or ORPHANED here for a reason other than waiting for the peer's state or configuration.
 */
function settled(d: NodeDaemon): (v: PoolStatus | undefined) => boolean {
  return (v) => v !== undefined && v.phase !== 'ACTIVATING' && v.phase !== 'TAKING-OVER' &&
    (v.owner !== d.cfg.node.name || v.phase === 'ACTIVE' || v.phase === 'INACTIVE' || (v.phase === 'ORPHANED' && v.reason?.startsWith('waiting for') !== true));
}

/**
 * `pool create`: the pool and its new volumes join the configuration. Both nodes create their
 * copies (the preferred node's is the initial sync source) and the preferred node activates it.
 * The request is a pool as the node file writes one, with `volumes` as volume definitions.
 */
export async function createPool(d: NodeDaemon, body: Record<string, unknown>): Promise<string> {
  const name = body.name;
  if (typeof name !== 'string') throw new LifecycleError('ERR_BAD_REQUEST', 'name must name the new pool');
  if (d.cfg.pools.some((p) => p.name === name)) throw new LifecycleError('ERR_POOL_EXISTS', `pool ${name} exists already`);
  const volumes = body.volumes;
  if (!Array.isArray(volumes) || volumes.length === 0) throw new LifecycleError('ERR_BAD_REQUEST', 'volumes must list the new pool\'s volumes, each { name, size, … }');
  const pool = { ...body, volumes: volumes.map(nameOf), preferredNode: body.preferredNode ?? d.cfg.node.name };
  await d.changeConfig(`pool create ${name}`, (raw) => ({ volumes: [...raw.volumes, ...volumes], pools: [...raw.pools, pool] }));
  const v = await until(d, name, 'served', settled(d));
  return `pool ${name} created (configuration epoch ${d.clusterConfig.document.epoch}): ${v?.phase ?? '?'} on ${d.cfg.node.name}, owned by ${v?.owner ?? '?'}`;
}

/** `pool remove`: only a pool nobody serves (exported, or INACTIVE here); its copies' files are moved aside on both nodes. */
export async function removePool(d: NodeDaemon, pool: string): Promise<string> {
  const { view: v, def } = known(d, pool);
  if (def.control !== 'exported' && v.phase !== 'INACTIVE') {
    throw new LifecycleError('ERR_POOL_BUSY', `pool ${pool} is ${v.phase} here (owned by ${v.owner}): export it first (tandem pool export ${pool}), or remove it while it is INACTIVE`);
  }
  const volumes = new Set(def.volumes);
  await d.changeConfig(`pool remove ${pool}`, (raw) => ({
    volumes: raw.volumes.filter((x) => !volumes.has(nameOf(x) as string)),
    pools: raw.pools.filter((x) => nameOf(x) !== pool),
  }));
  return `pool ${pool} removed (configuration epoch ${d.clusterConfig.document.epoch}); the files of ${[...volumes].join(', ')} are under data/removed/ on each node`;
}

async function setControl(d: NodeDaemon, pool: string, control: PoolControl, what: string): Promise<void> {
  await d.changeConfig(`pool ${what} ${pool}`, (raw) => ({
    volumes: raw.volumes,
    pools: raw.pools.map((x) => (nameOf(x) === pool ? { ...(x as object), control } : x)),
  }));
}

/** `pool export`: released on both nodes (applications, filesystem, exports, addresses, volumes SECONDARY); the data stays. */
export async function exportPool(d: NodeDaemon, pool: string): Promise<string> {
  const { view: v, def } = known(d, pool);
  if (def.control === 'exported') return `pool ${pool} is exported already`;
  if (v.phase === 'ACTIVATING' || v.phase === 'DEACTIVATING') throw new LifecycleError('ERR_POOL_BUSY', `pool ${pool} is ${v.phase} here: try again when it has settled`);
  const started = Date.now();
  await setControl(d, pool, 'exported', 'export');
  await until(d, pool, 'EXPORTED', (x) => x?.phase === 'EXPORTED');
  return `pool ${pool} exported in ${Date.now() - started} ms: released, its data kept on both nodes (tandem pool import ${pool} brings it back on ${v.owner})`;
}

/** `pool import`: managed again; its recorded owner serves it. */
export async function importPool(d: NodeDaemon, pool: string): Promise<string> {
  if (known(d, pool).def.control !== 'exported') throw new LifecycleError('ERR_POOL_BUSY', `pool ${pool} is not exported`);
  const started = Date.now();
  await setControl(d, pool, 'managed', 'import');
  const v = await until(d, pool, 'imported', (x) => x?.phase !== 'EXPORTED' && settled(d)(x));
  return `pool ${pool} imported in ${Date.now() - started} ms: ${v?.phase ?? '?'} here, owned by ${v?.owner ?? '?'}`;
}

/** `pool unmanage` / `pool manage`: the cluster leaves the pool as it is (services keep running), or takes it back. */
export async function manage(d: NodeDaemon, pool: string, on: boolean): Promise<string> {
  const { view: v, def: { control } } = known(d, pool);
  if (control === 'exported') throw new LifecycleError('ERR_POOL_BUSY', `pool ${pool} is exported: import it`);
  if (control === (on ? 'managed' : 'unmanaged')) return `pool ${pool} is ${control} already`;
  await setControl(d, pool, on ? 'managed' : 'unmanaged', on ? 'manage' : 'unmanage');
  return on
    ? `pool ${pool} is managed again: the cluster serves it from ${v.owner}`
    : `pool ${pool} is unmanaged: it stays ${v.phase} here and nothing moves it until tandem pool manage ${pool}`;
}
