// `tandem serve`: volumes over NBD on one machine, no cluster (like `nbdkit file`).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { NbdServer, type ServedExport } from '../io/nbd-server';
import {
  createVolume, defaultMetaPath, openVolume, readMetadata, removeVolume, VolumeError, type Volume, type VolumeLocation,
} from '../storage/volume-store';
import { parseHostPort } from '../util/address';
import { createLogger, type Logger } from '../util/log';
import { formatSize, parseSize } from '../util/size';
import { UsageError } from './errors';
import { untilStopSignal } from './signals';

export const serveUsage = `usage: tandem serve --file PATH [--size SIZE] [--listen HOST:PORT] [--name EXPORT]
                    [--read-only] [--meta PATH] [--file PATH --name EXPORT ...]

Serves volumes over NBD without a cluster. --size creates the backing file
(sparse, exactly SIZE bytes) and its metadata when they do not exist yet; an
existing file without metadata is adopted at its current size. Give --file and
--name once per export to serve several; the first is also the default export "".
Prints "listening on HOST:PORT" when ready; SIGTERM finishes in-flight requests, then exits.
  --listen      address to listen on (default 127.0.0.1:10809; port 0 picks a free one)
  --meta        metadata path (default FILE.tandem.json; needed for block devices)
  --sync-io-max requests up to this size use synchronous I/O (default 256K)`;

export interface ServeOptions {
  readonly files: string[];
  readonly names: string[];
  readonly size: number | undefined;
  readonly listen: { host: string; port: number };
  readonly readOnly: boolean;
  readonly meta: string | undefined;
  readonly syncIoBytesMax: number | undefined;
  readonly debug: boolean;
}

function sizeOption(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  const n = parseSize(text);
  if (typeof n === 'string') throw new UsageError(`${what}: ${n}`);
  return n;
}

export function parseServeArgs(args: string[]): ServeOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        file: { type: 'string', multiple: true },
        size: { type: 'string' },
        listen: { type: 'string', default: '127.0.0.1:10809' },
        name: { type: 'string', multiple: true },
        'read-only': { type: 'boolean', default: false },
        meta: { type: 'string' },
        'sync-io-max': { type: 'string' },
        debug: { type: 'boolean', default: false },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const files = values.file ?? [];
  const names = values.name ?? [];
  if (files.length === 0) throw new UsageError('--file is required');
  if (files.length > 1 && names.length !== files.length) throw new UsageError('with several --file, give one --name for each');
  if (names.length > files.length) throw new UsageError('more --name than --file');
  if (files.length > 1 && values.meta !== undefined) throw new UsageError('--meta applies to a single --file');
  if (new Set(names).size !== names.length) throw new UsageError('export names must differ');
  for (const n of names) {
    if (Buffer.byteLength(n) > 4096 || n.includes('\0')) throw new UsageError(`export name ${JSON.stringify(n)} is too long or has a NUL`);
  }
  const listen = parseHostPort(values.listen);
  if (typeof listen === 'string') throw new UsageError(`--listen: ${listen}`);
  const syncIoBytesMax = sizeOption(values['sync-io-max'], '--sync-io-max');
  const size = sizeOption(values.size, '--size');
  if (size === 0) throw new UsageError('--size must be larger than 0');
  return {
    files, names, listen,
    size,
    readOnly: values['read-only'],
    meta: values.meta,
    syncIoBytesMax,
    debug: values.debug,
  };
}

/** Opens a volume, creating it first when --size asks for it; `created` collects what was made here. */
function openOrCreate(file: string, meta: string | undefined, o: ServeOptions, log: Logger, created: VolumeLocation[]): Volume {
  const loc = meta === undefined ? { backingPath: file } : { backingPath: file, metaPath: meta };
  const existing = readMetadata(defaultMetaPath(loc));
  if (o.size !== undefined) {
    if (existing === undefined && !fs.existsSync(file)) {
      const m = createVolume(loc, o.size);
      created.push(loc);
      log.info('volume created', { file, size: m.size, volume: m.volumeId });
    } else if (existing !== undefined && existing.size !== o.size) {
      throw new VolumeError('ERR_VOLUME_MISMATCH', `${file} is volume ${existing.volumeId} of ${existing.size} bytes, not --size ${o.size}`);
    } else if (existing === undefined) {
      const st = fs.statSync(file);
      if (st.isFile() && st.size !== o.size) {
        throw new VolumeError('ERR_VOLUME_MISMATCH', `${file} exists with ${st.size} bytes, not --size ${o.size}`);
      }
    }
  }
  const openOpts = o.syncIoBytesMax === undefined
    ? { readOnly: o.readOnly, adopt: true }
    : { readOnly: o.readOnly, adopt: true, syncIoBytesMax: o.syncIoBytesMax };
  return openVolume(loc, openOpts);
}

export async function runServe(o: ServeOptions): Promise<number> {
  const log = createLogger('serve', undefined, o.debug);
  const volumes: Volume[] = [];
  const created: VolumeLocation[] = [];
  // a start that fails leaves nothing behind: volumes made by this run are removed again
  const undo = async (): Promise<void> => {
    for (const v of volumes) await v.backend.close();
    for (const loc of created) removeVolume(loc);
  };
  try {
    for (const file of o.files) volumes.push(openOrCreate(file, o.meta, o, log, created));
  } catch (e) {
    await undo();
    throw e;
  }
  const exports: ServedExport[] = volumes.map((v, i) => ({
    name: o.names[i] ?? '',
    description: `tandem volume ${v.meta.volumeId}`,
    backend: v.backend,
  }));
  const server = new NbdServer({ exports, log });
  let addr;
  try {
    addr = await server.listen(o.listen.host, o.listen.port);
  } catch (e) {
    await undo();
    throw e;
  }
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  for (const [i, v] of volumes.entries()) {
    log.info('serving', { export: exports[i]?.name ?? '', file: v.backingPath, size: formatSize(v.meta.size), read_only: o.readOnly });
  }
  process.stdout.write(`listening on ${host}:${addr.port}\n`);
  const signal = await untilStopSignal();
  log.info('stopping', { signal, connections: server.connectionCount });
  await server.shutdown();
  for (const v of volumes) {
    if (!o.readOnly) await v.backend.flush();
    await v.backend.close();
  }
  log.info('stopped');
  return 0;
}
