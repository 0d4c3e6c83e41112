// Which API token a test uses for which node: that node's own admin token (DATA_DIR/api-token,
// written when its API starts), registered by API address when the test makes the node. The
// helpers that ask a node's API, and the CLI runs given --api, carry it as root on that node
// would; a test that checks refusals passes a token of its own, or none.
import fs from 'node:fs';
import path from 'node:path';

const files = new Map<string, string>();

function key(host: string, port: number): string {
  return `${host}:${port}`;
}

export function registerNodeToken(api: { host: string; port: number }, dataDir: string): void {
  files.set(key(api.host, api.port), path.join(dataDir, 'api-token'));
}

/** The token file of the node at HOST:PORT (as --api takes it), if a test made that node. */
export function tokenFileFor(hostPort: string): string | undefined {
  return files.get(hostPort.replace(/^https?:\/\//, '').replace(/\/$/, ''));
}

/** The node's own token, or undefined when the node is unknown or its API has not written it yet. */
export function tokenFor(host: string, port: number): string | undefined {
  const file = files.get(key(host, port));
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}
