// Each node's own admin token, DATA_DIR/api-token: how the first cluster token gets made, and
// how root on a node always reaches its API. It is valid on this node only and is not in the
// cluster configuration. Made at the first start (mode 0600, written atomically) and kept
// across restarts, so a running console or script does not lose it; delete the file and
// restart the node to replace it.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../storage/atomic-file';
import { makeToken, tokenHash, tokenIdOf, tokenLimits } from './api-token';

export const LOCAL_TOKEN_FILE = 'api-token';

export interface LocalToken {
  readonly id: string;
  readonly sha256: string;
  readonly file: string;
  /** made by this start (there was none) */
  readonly created: boolean;
}

/** The token in the file, or null when the file is missing or does not hold one. */
function readToken(file: string): string | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return tokenIdOf(text) === null ? null : text;
}

/** Reads this node's token, making it first if there is none; the file is left readable by its owner only. */
export function ensureLocalToken(dataDir: string, random: (n: number) => Buffer = randomBytes): LocalToken {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, LOCAL_TOKEN_FILE);
  let token = readToken(file);
  const created = token === null;
  if (token === null) {
    token = makeToken(random(tokenLimits.idBytes), random(tokenLimits.secretBytes)).token;
    writeFileAtomic(file, `${token}\n`);
  } else if ((fs.statSync(file).mode & 0o077) !== 0) {
    // whoever can read it is an administrator of this node: nobody but its owner
    fs.chmodSync(file, 0o600);
  }
  return { id: tokenIdOf(token) as string, sha256: tokenHash(token), file, created };
}
