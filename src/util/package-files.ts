// Files of the source tree the running program reads: package.json (its version) and the
// OpenAPI description. Compiled modules run from dist/src/…, one level deeper than src/…,
// and tsc copies no data files, so each is looked for from both places.
import fs from 'node:fs';
import path from 'node:path';

/** The source tree's root: the directory with package.json above this module (src/util or dist/src/util). */
export function repoRoot(): string {
  const candidates = [path.join(__dirname, '..', '..'), path.join(__dirname, '..', '..', '..')];
  const found = candidates.find((d) => fs.existsSync(path.join(d, 'package.json')) && fs.existsSync(path.join(d, 'src')));
  if (found === undefined) throw new Error(`package.json is not in ${candidates.join(' or ')}`);
  return found;
}

let cachedVersion: string | undefined;

export function packageVersion(): string {
  cachedVersion ??= (JSON.parse(fs.readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return cachedVersion;
}

export function openApiFile(): string {
  return path.join(repoRoot(), 'docs', 'openapi.json');
}
