// The checks every JSON config file shares (node, witness): one error type, an
// error that names the bad key, unknown keys refused, hex strings bounded.
import { CodedError } from './coded-error';

export class ConfigError extends CodedError<'ERR_CONFIG'> {
  override readonly name = 'ConfigError';
}

export type Obj = Record<string, unknown>;

const HEX = /^(?:[0-9a-f]{2})+$/;

/** The key path of `k` inside `where` ('config' is the file itself). */
export function keyPath(where: string, k: string): string {
  return where === 'config' ? k : `${where}.${k}`;
}

export function fail(where: string, why: string): never {
  throw new ConfigError('ERR_CONFIG', `${where}: ${why}`);
}

/** v as an object with no keys but `keys`. */
export function obj(v: unknown, where: string, keys: readonly string[]): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'must be an object');
  for (const k of Object.keys(v)) if (!keys.includes(k)) fail(keyPath(where, k), `unknown key (known: ${keys.join(', ')})`);
  return v as Obj;
}

/** o[k] as minBytes..maxBytes of hex (either case); required. */
export function hex(o: Obj, k: string, where: string, minBytes: number, maxBytes: number): Buffer {
  const v = o[k];
  if (v === undefined) fail(keyPath(where, k), 'is required');
  const digits = minBytes === maxBytes ? `${minBytes * 2}` : `${minBytes * 2} to ${maxBytes * 2}`;
  if (typeof v !== 'string' || !HEX.test(v.toLowerCase()) || v.length / 2 < minBytes || v.length / 2 > maxBytes) {
    fail(keyPath(where, k), `must be ${digits} hex digits`);
  }
  return Buffer.from(v, 'hex');
}
