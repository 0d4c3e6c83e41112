// The console's static files: plain HTML, CSS and a script in src/web/static,
// served as they are (no build step). The compiled module runs from
// dist/src/web, and tsc copies no assets, so they are read from the source
// tree: ../../../src/web/static from there, or ./static beside a module run
// from src/web itself. A file is read again when it changes on disk, so an
// edited page needs a reload of the browser, not a restart of the node.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface Asset {
  readonly body: Buffer;
  readonly contentType: string;
  readonly etag: string;
}

/** URL path → file in the static directory: nothing else is ever read */
const files: Readonly<Record<string, { file: string; contentType: string }>> = {
  '/': { file: 'index.html', contentType: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', contentType: 'text/html; charset=utf-8' },
  '/console.css': { file: 'console.css', contentType: 'text/css; charset=utf-8' },
  '/console.js': { file: 'console.js', contentType: 'text/javascript; charset=utf-8' },
};

/** the URL paths of the console's files: the API serves them without a token */
export const assetPaths: readonly string[] = Object.keys(files);

export function staticDir(): string {
  const candidates = [path.join(__dirname, 'static'), path.join(__dirname, '..', '..', '..', 'src', 'web', 'static')];
  const found = candidates.find((d) => fs.existsSync(path.join(d, 'index.html')));
  if (found === undefined) throw new Error(`the console's files are not in ${candidates.join(' or ')}`);
  return found;
}

export class Assets {
  private readonly cache = new Map<string, Asset & { mtimeMs: number; size: number }>();
  private dir: string | undefined;

  /** The asset served at urlPath, undefined for any other path. Kept in memory until the file changes. */
  get(urlPath: string): Asset | undefined {
    const f = files[urlPath];
    if (f === undefined) return undefined;
    this.dir ??= staticDir();
    const file = path.join(this.dir, f.file);
    const st = fs.statSync(file);
    let a = this.cache.get(f.file);
    if (a === undefined || a.mtimeMs !== st.mtimeMs || a.size !== st.size) {
      const body = fs.readFileSync(file);
      a = { body, contentType: f.contentType, etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`, mtimeMs: st.mtimeMs, size: st.size };
      this.cache.set(f.file, a);
    }
    return a;
  }
}
