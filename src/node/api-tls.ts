// The API's certificate and key (`api.tls` of the node file): read once when the API starts,
// and checked as a pair, so a missing file or a key of another certificate stops the start
// with the file named instead of failing at the first client.
import fs from 'node:fs';
import tls from 'node:tls';
import { ConfigError } from '../util/config-fields';
import type { ApiConfig } from './config';

export interface TlsFiles { readonly cert: Buffer; readonly key: Buffer }

function read(file: string, key: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied (the node runs as root; is it another user here?)' : (e as Error).message;
    throw new ConfigError('ERR_CONFIG', `api.tls.${key}: cannot read ${file}: ${why}`);
  }
}

/** The certificate and key, read and checked; throws ConfigError naming the file that is wrong. */
export function loadTls(t: NonNullable<ApiConfig['tls']>): TlsFiles {
  const cert = read(t.certFile, 'certFile');
  const key = read(t.keyFile, 'keyFile');
  try {
    tls.createSecureContext({ cert, key });
  } catch (e) {
    throw new ConfigError('ERR_CONFIG', `api.tls: ${t.certFile} and ${t.keyFile} are not a usable PEM certificate and its key: ${(e as Error).message}`);
  }
  return { cert, key };
}

/** What `node check` reports of api.tls: empty when the API would start. */
export function tlsProblems(api: ApiConfig): string[] {
  if (api.tls === null) return [];
  try {
    loadTls(api.tls);
    return [];
  } catch (e) {
    return [(e as Error).message];
  }
}
