// The witness's configuration file, checked as a whole so a bad file is one
// clear error naming the key, and the witness does not start:
//   { "name": "witness", "stateFile": "PATH", "clusters": [{ "id": "32 hex", "secret": "hex" }] }
import path from 'node:path';
import { fail, hex, obj } from '../util/config-fields';
import { WITNESS_NAME } from '../protocol/witness/codec';
import { witnessLimits } from '../protocol/witness/limits';

export interface WitnessClusterConfig {
  readonly id: Buffer;
  readonly secret: Buffer;
}

export interface WitnessConfig {
  /** sent as the sender of every reply */
  readonly name: string;
  /** absolute; a relative path in the file is relative to the file's directory */
  readonly stateFile: string;
  readonly clusters: readonly WitnessClusterConfig[];
}

const FILE_BYTES_MAX = 1024 * 1024;





/** Parses and checks a witness configuration; `baseDir` anchors a relative stateFile. Throws ConfigError. */
export function parseWitnessConfig(text: string, baseDir: string): WitnessConfig {
  if (text.length > FILE_BYTES_MAX) fail('config', `larger than ${FILE_BYTES_MAX} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail('config', `not JSON: ${(e as Error).message}`);
  }
  const top = obj(raw, 'config', ['name', 'stateFile', 'clusters']);
  const name = top.name ?? 'witness';
  if (typeof name !== 'string' || !WITNESS_NAME.test(name)) {
    fail('name', `${JSON.stringify(name)} is not a name (letters, digits, '.', '_', '-'; at most 63)`);
  }
  const stateFile = top.stateFile;
  if (typeof stateFile !== 'string' || stateFile.length === 0 || stateFile.includes('\0')) fail('stateFile', 'must be a non-empty path');
  if (!Array.isArray(top.clusters) || top.clusters.length === 0) fail('clusters', 'must be a non-empty list');
  if (top.clusters.length > witnessLimits.clustersMax) fail('clusters', `at most ${witnessLimits.clustersMax}`);
  const seen = new Set<string>();
  const clusters = top.clusters.map((c, i): WitnessClusterConfig => {
    const where = `clusters[${i}]`;
    const o = obj(c, where, ['id', 'secret']);
    const id = hex(o, 'id', where, 16, 16);
    if (seen.has(id.toString('hex'))) fail(`${where}.id`, `cluster ${id.toString('hex')} is listed twice`);
    seen.add(id.toString('hex'));
    return { id, secret: hex(o, 'secret', where, witnessLimits.secretBytesMin, witnessLimits.secretBytesMax) };
  });
  return { name, stateFile: path.resolve(baseDir, stateFile), clusters };
}
