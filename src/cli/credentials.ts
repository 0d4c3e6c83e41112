// Where a command finds its API token and the certificates it trusts (docs/operations.md,
// "API security"). The token, first found wins: --token, $TANDEM_TOKEN, --token-file,
// $TANDEM_TOKEN_FILE, then the node's own token file at its usual place, readable by root on
// that node. Without any, the call goes out without one, and a refusal says how to give one.
// A token or file given explicitly that is not usable is a usage error, not a silent fallback.
import fs from 'node:fs';
import { tokenIdOf } from '../node/api-token';
import type { ApiAddress, Credential } from './api-client';
import { UsageError } from './errors';

/** node.dataDir in docs/operations.md and deploy/examples, and the node's api-token in it */
export const DEFAULT_TOKEN_FILE = '/var/lib/tandem/api-token';

export const credentialLimits = {
  /** a token file holds one token (85 characters) and a newline */
  tokenFileBytesMax: 4096,
  /** a CA bundle of a few certificates */
  caFileBytesMax: 1024 * 1024,
} as const;

export interface CredentialOptions {
  readonly token?: string | undefined;
  readonly 'token-file'?: string | undefined;
  readonly ca?: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

/** Where the token is to come from: a value or a file, and how to name that place to the operator. */
export type TokenSource =
  | { readonly kind: 'value'; readonly value: string; readonly said: string }
  | { readonly kind: 'file'; readonly file: string; readonly said: string; readonly explicit: boolean };

function set(v: string | undefined): v is string {
  return v !== undefined && v !== '';
}

/** The first place that names a token; an empty environment variable counts as unset. */
export function tokenSource(o: CredentialOptions, env: Env, defaultFile: string = DEFAULT_TOKEN_FILE): TokenSource {
  if (set(o.token)) return { kind: 'value', value: o.token, said: '--token' };
  if (set(env.TANDEM_TOKEN)) return { kind: 'value', value: env.TANDEM_TOKEN, said: '$TANDEM_TOKEN' };
  if (set(o['token-file'])) return { kind: 'file', file: o['token-file'], said: `--token-file ${o['token-file']}`, explicit: true };
  if (set(env.TANDEM_TOKEN_FILE)) return { kind: 'file', file: env.TANDEM_TOKEN_FILE, said: `$TANDEM_TOKEN_FILE (${env.TANDEM_TOKEN_FILE})`, explicit: true };
  return { kind: 'file', file: defaultFile, said: defaultFile, explicit: false };
}

export function howToGiveToken(defaultFile: string, note = ''): string {
  return `give one with --token TOKEN, $TANDEM_TOKEN, --token-file FILE or $TANDEM_TOKEN_FILE${note}. ` +
    `As root on a node, ${defaultFile} is that node's own admin token; tandem token create NAME makes one for both nodes`;
}

/** The first usable token, or none (with how to give one); throws UsageError for one given that is not usable. */
export function resolveCredential(o: CredentialOptions, env: Env = process.env, defaultFile: string = DEFAULT_TOKEN_FILE): Credential {
  const src = tokenSource(o, env, defaultFile);
  if (src.kind === 'value') {
    if (tokenIdOf(src.value.trim()) === null) throw new UsageError(`${src.said}: not a Tandem API token (they look like tdm_ID_SECRET)`);
    return { token: src.value.trim(), said: src.said };
  }
  let text: string;
  try {
    const fd = fs.openSync(src.file, 'r');
    try {
      const buf = Buffer.alloc(credentialLimits.tokenFileBytesMax);
      text = buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0)).toString('utf8').trim();
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (src.explicit) throw new UsageError(`${src.said}: cannot read it: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    const note = code === 'ENOENT' ? '' : ` (${src.file} is there but cannot be read here: ${code ?? (e as Error).message}; run as root on the node)`;
    return { token: null, said: howToGiveToken(defaultFile, note) };
  }
  if (tokenIdOf(text) === null) {
    if (src.explicit) throw new UsageError(`${src.said}: the file does not hold a Tandem API token (tdm_ID_SECRET)`);
    return { token: null, said: howToGiveToken(defaultFile, ` (${src.file} holds no token)`) };
  }
  return { token: text, said: src.said };
}

/** The certificates of --ca or $TANDEM_CA, or null. */
export function resolveCa(o: CredentialOptions, env: Env = process.env): { pem: Buffer; said: string } | null {
  const file = set(o.ca) ? o.ca : set(env.TANDEM_CA) ? env.TANDEM_CA : undefined;
  if (file === undefined) return null;
  const said = set(o.ca) ? `--ca ${file}` : `$TANDEM_CA (${file})`;
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (e) {
    throw new UsageError(`${said}: cannot read it: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (pem.length > credentialLimits.caFileBytesMax || !pem.toString('utf8').includes('-----BEGIN CERTIFICATE-----')) {
    throw new UsageError(`${said}: not a PEM certificate file`);
  }
  return { pem, said };
}

/** The address with the caller's token and certificates. */
export function withCredentials(at: ApiAddress, o: CredentialOptions, env: Env = process.env): ApiAddress {
  if (set(o.ca) && !at.https) throw new UsageError(`--ca trusts the certificate of an API served over HTTPS: give the address as https://HOST:PORT`);
  const ca = at.https ? resolveCa(o, env) : null;
  return { ...at, ca: ca?.pem ?? null, credential: resolveCredential(o, env) };
}
