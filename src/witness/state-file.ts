// The witness's state file: per cluster the term, per node the flags, lease
// and last request id. Written atomically and fsync'd; read once at start.
// A file that exists but does not parse stops the witness: starting empty
// would forget which node is fenced.
import fs from 'node:fs';
import type { PersistedWitnessCluster, PersistedWitnessNode, PersistedWitnessState } from '../cluster/witness-rules';
import { WITNESS_NAME } from '../protocol/witness/codec';
import { witnessLimits } from '../protocol/witness/limits';
import { writeFileAtomic } from '../storage/atomic-file';
import { CodedError } from '../util/coded-error';

export class WitnessStateError extends CodedError<'ERR_WITNESS_STATE'> {
  override readonly name = 'WitnessStateError';
}

const FORMAT_VERSION = 1;
const FILE_BYTES_MAX = 1024 * 1024;
const CLUSTER_ID = /^[0-9a-f]{32}$/;
const REQUEST_ID = /^(?:-1|0|[1-9][0-9]{0,19})$/;

type Obj = Record<string, unknown>;

function obj(v: unknown, where: string, keys: readonly string[] | null): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new WitnessStateError('ERR_WITNESS_STATE', `${where}: must be an object`);
  if (keys !== null) {
    for (const k of Object.keys(v)) if (!keys.includes(k)) throw new WitnessStateError('ERR_WITNESS_STATE', `${where}.${k}: unknown key`);
  }
  return v as Obj;
}

function bool(o: Obj, k: string, where: string): boolean {
  const v = o[k];
  if (typeof v !== 'boolean') throw new WitnessStateError('ERR_WITNESS_STATE', `${where}.${k}: must be true or false`);
  return v;
}

function int(o: Obj, k: string, where: string, max: number): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) {
    throw new WitnessStateError('ERR_WITNESS_STATE', `${where}.${k}: must be an integer from 0 to ${max}`);
  }
  return v;
}

function parseNode(v: unknown, where: string): PersistedWitnessNode {
  const o = obj(v, where, ['leaseMs', 'alone', 'fenced', 'lastRequestId']);
  const id = o.lastRequestId;
  if (typeof id !== 'string' || !REQUEST_ID.test(id) || BigInt(id) > 0xffffffffffffffffn) {
    throw new WitnessStateError('ERR_WITNESS_STATE', `${where}.lastRequestId: must be a decimal u64 in a string, or "-1"`);
  }
  return {
    leaseMs: int(o, 'leaseMs', where, witnessLimits.leaseMsMax),
    alone: bool(o, 'alone', where),
    fenced: bool(o, 'fenced', where),
    lastRequestId: BigInt(id),
  };
}

function parseCluster(v: unknown, where: string): PersistedWitnessCluster {
  const o = obj(v, where, ['term', 'nodes']);
  const n = obj(o.nodes, `${where}.nodes`, null);
  const entries = Object.entries(n);
  if (entries.length > witnessLimits.nodesPerClusterMax) {
    throw new WitnessStateError('ERR_WITNESS_STATE', `${where}.nodes: more than ${witnessLimits.nodesPerClusterMax} nodes`);
  }
  const nodes = new Map<string, PersistedWitnessNode>();
  for (const [name, node] of entries) {
    if (!WITNESS_NAME.test(name)) throw new WitnessStateError('ERR_WITNESS_STATE', `${where}.nodes: ${JSON.stringify(name)} is not a node name`);
    nodes.set(name, parseNode(node, `${where}.nodes.${name}`));
  }
  return { term: int(o, 'term', where, Number.MAX_SAFE_INTEGER), nodes };
}

/** Parses the text of a state file; throws WitnessStateError naming the first bad key. */
export function parseWitnessState(text: string): PersistedWitnessState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new WitnessStateError('ERR_WITNESS_STATE', `not JSON: ${(e as Error).message}`);
  }
  const top = obj(raw, 'state', ['version', 'clusters']);
  if (top.version !== FORMAT_VERSION) throw new WitnessStateError('ERR_WITNESS_STATE', `state.version: must be ${FORMAT_VERSION}`);
  const c = obj(top.clusters, 'state.clusters', null);
  const entries = Object.entries(c);
  if (entries.length > witnessLimits.clustersMax) {
    throw new WitnessStateError('ERR_WITNESS_STATE', `state.clusters: more than ${witnessLimits.clustersMax}`);
  }
  const out = new Map<string, PersistedWitnessCluster>();
  for (const [id, cluster] of entries) {
    if (!CLUSTER_ID.test(id)) throw new WitnessStateError('ERR_WITNESS_STATE', `state.clusters: ${JSON.stringify(id)} is not a cluster id (32 hex digits)`);
    out.set(id, parseCluster(cluster, `state.clusters.${id}`));
  }
  return out;
}

export function formatWitnessState(s: PersistedWitnessState): string {
  const clusters: Record<string, unknown> = {};
  for (const [id, c] of s) {
    const nodes: Record<string, unknown> = {};
    for (const [name, n] of c.nodes) {
      nodes[name] = { leaseMs: n.leaseMs, alone: n.alone, fenced: n.fenced, lastRequestId: n.lastRequestId.toString() };
    }
    clusters[id] = { term: c.term, nodes };
  }
  return JSON.stringify({ version: FORMAT_VERSION, clusters }, null, 2) + '\n';
}

/** The persisted state, or undefined when the file does not exist. Throws WitnessStateError or a file system error. */
export function readWitnessStateFile(file: string): PersistedWitnessState | undefined {
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new WitnessStateError('ERR_WITNESS_STATE', `${file}: not a regular file`);
    if (st.size > FILE_BYTES_MAX) throw new WitnessStateError('ERR_WITNESS_STATE', `${file}: larger than ${FILE_BYTES_MAX} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return parseWitnessState(text);
  } catch (e) {
    if (e instanceof WitnessStateError) throw new WitnessStateError('ERR_WITNESS_STATE', `${file}: ${e.message}`);
    throw e;
  }
}

/** Replaces the file atomically and durably. */
export function writeWitnessStateFile(file: string, s: PersistedWitnessState): void {
  writeFileAtomic(file, formatWitnessState(s));
}
