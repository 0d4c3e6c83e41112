// Volumes on disk: a backing (sparse file or block device) and its metadata
// kept beside it. Opening refuses a backing that does not match its metadata.
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './atomic-file';
import { FileBackend } from './file-backend';
import { decodeMetadata, encodeMetadata, metadataLimits, NO_GENERATION, type VolumeMetadata } from './metadata';
import { native } from './native';
import { CodedError } from '../util/coded-error';

export type VolumeErrorCode =
  | 'ERR_VOLUME_EXISTS' | 'ERR_VOLUME_NOT_FOUND' | 'ERR_VOLUME_METADATA' | 'ERR_VOLUME_MISMATCH' | 'ERR_VOLUME_BACKING'
  | 'ERR_VOLUME_BUSY';

export class VolumeError extends CodedError<VolumeErrorCode> {
  override readonly name = 'VolumeError';
}

export const volumeDefaults = {
  blockSize: 4096,
  /** requests up to this size use synchronous I/O (see file-backend.ts) */
  syncIoBytesMax: 256 * 1024,
} as const;

export interface VolumeLocation {
  readonly backingPath: string;
  /** defaults to BACKING.tandem.json for files; required for block devices */
  readonly metaPath?: string;
}

export interface Volume {
  readonly meta: VolumeMetadata;
  readonly backend: FileBackend;
  readonly backingPath: string;
  readonly metaPath: string;
}

export function defaultMetaPath(loc: VolumeLocation): string {
  if (loc.metaPath !== undefined) return loc.metaPath;
  if (loc.backingPath.startsWith('/dev/')) {
    throw new VolumeError('ERR_VOLUME_METADATA', `${loc.backingPath} is a device: give a metadata path (--meta)`);
  }
  return `${loc.backingPath}.tandem.json`;
}

function newGeneration(): string {
  return randomBytes(8).toString('hex');
}

export function freshMetadata(size: number, backingKind: 'file' | 'device', blockSize: number = volumeDefaults.blockSize): VolumeMetadata {
  return {
    volumeId: randomUUID(),
    size,
    blockSize,
    backingKind,
    generations: { current: newGeneration(), bitmap: NO_GENERATION, history: [NO_GENERATION, NO_GENERATION] },
    diskState: 'UpToDate',
  };
}

export function readMetadata(metaPath: string): VolumeMetadata | undefined {
  let text: string;
  try {
    const st = fs.statSync(metaPath);
    if (st.size > metadataLimits.fileBytesMax) {
      throw new VolumeError('ERR_VOLUME_METADATA', `${metaPath}: ${st.size} bytes is too large for volume metadata`);
    }
    text = fs.readFileSync(metaPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const m = decodeMetadata(text);
  if (typeof m === 'string') throw new VolumeError('ERR_VOLUME_METADATA', `${metaPath}: ${m}`);
  return m;
}

export function writeMetadata(metaPath: string, m: VolumeMetadata): void {
  writeFileAtomic(metaPath, encodeMetadata(m));
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
}

/** Creates a sparse backing file of exactly `size` bytes and its metadata. Refuses to overwrite. */
export function createVolume(loc: VolumeLocation, size: number, blockSize: number = volumeDefaults.blockSize): VolumeMetadata {
  if (!Number.isSafeInteger(size) || size <= 0) throw new VolumeError('ERR_VOLUME_METADATA', `size ${size} is not a positive integer`);
  const metaPath = defaultMetaPath(loc);
  if (fs.existsSync(metaPath)) throw new VolumeError('ERR_VOLUME_EXISTS', `${metaPath} already exists`);
  let fd: number;
  try {
    fd = fs.openSync(loc.backingPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new VolumeError('ERR_VOLUME_EXISTS', `${loc.backingPath} already exists`);
    throw new VolumeError('ERR_VOLUME_BACKING', `cannot create ${loc.backingPath}: ${(e as Error).message}`);
  }
  try {
    fs.ftruncateSync(fd, size);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(loc.backingPath, { force: true });
    throw new VolumeError('ERR_VOLUME_BACKING', `cannot size ${loc.backingPath}: ${(e as Error).message}`);
  }
  fs.closeSync(fd);
  const m = freshMetadata(size, 'file', blockSize);
  try {
    fsyncDir(path.dirname(path.resolve(loc.backingPath)));
    writeMetadata(metaPath, m);
  } catch (e) {
    // leave nothing half made: a backing without metadata is not a volume
    fs.rmSync(loc.backingPath, { force: true });
    throw new VolumeError('ERR_VOLUME_METADATA', `cannot write ${metaPath}: ${(e as Error).message}`);
  }
  return m;
}

/** Removes a volume this process just created (used to undo a start that failed later). */
export function removeVolume(loc: VolumeLocation): void {
  fs.rmSync(loc.backingPath, { force: true });
  fs.rmSync(defaultMetaPath(loc), { force: true });
}

function backingSize(fd: number, st: fs.Stats): number {
  return st.isBlockDevice() ? native.blockDeviceSize(fd) : st.size;
}

export interface OpenOptions {
  readonly readOnly?: boolean;
  readonly syncIoBytesMax?: number;
  /** an existing backing without metadata gets fresh metadata at its current size */
  readonly adopt?: boolean;
}

/**
 * The open backing once more, with O_DIRECT, for writes that should not go through the page cache;
 * undefined where the file system refuses O_DIRECT (tmpfs, some FUSE): those writes then use the cache.
 * Reopened through /proc so it is the very file `fd` is, whatever happened to its path since.
 */
function openDirect(fd: number): number | undefined {
  try {
    return fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_WRONLY | fs.constants.O_DIRECT);
  } catch {
    return undefined;
  }
}

/** Opens a volume, checking the backing against its metadata. */
export function openVolume(loc: VolumeLocation, o: OpenOptions = {}): Volume {
  const metaPath = defaultMetaPath(loc);
  const readOnly = o.readOnly ?? false;
  let fd: number;
  try {
    fd = fs.openSync(loc.backingPath, readOnly ? 'r' : 'r+');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new VolumeError(code === 'ENOENT' ? 'ERR_VOLUME_NOT_FOUND' : 'ERR_VOLUME_BACKING',
      `cannot open ${loc.backingPath}: ${(e as Error).message}`);
  }
  try {
    try {
      native.flock(fd, readOnly ? 0 : 1);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EWOULDBLOCK') throw e;
      throw new VolumeError('ERR_VOLUME_BUSY', `${loc.backingPath} is in use by another process`);
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) {
      throw new VolumeError('ERR_VOLUME_BACKING', `${loc.backingPath} is neither a regular file nor a block device`);
    }
    const kind = st.isBlockDevice() ? 'device' : 'file';
    const actual = backingSize(fd, st);
    let meta = readMetadata(metaPath);
    if (meta === undefined) {
      if (o.adopt !== true) throw new VolumeError('ERR_VOLUME_NOT_FOUND', `${metaPath} does not exist: not a volume (create it first)`);
      if (actual <= 0) throw new VolumeError('ERR_VOLUME_BACKING', `${loc.backingPath} is empty: give a size to create a volume`);
      meta = freshMetadata(actual, kind);
      if (!readOnly) writeMetadata(metaPath, meta);
    }
    if (meta.backingKind !== kind) {
      throw new VolumeError('ERR_VOLUME_MISMATCH', `${loc.backingPath} is a ${kind} but its metadata says ${meta.backingKind}`);
    }
    // a file must be exactly the volume; a device may be larger than the volume it holds
    if (kind === 'file' ? actual !== meta.size : actual < meta.size) {
      throw new VolumeError('ERR_VOLUME_MISMATCH',
        `${loc.backingPath} is ${actual} bytes but volume ${meta.volumeId} is ${meta.size} bytes (metadata ${metaPath})`);
    }
    const backend = new FileBackend({
      fd, size: meta.size, readOnly, blockDevice: kind === 'device',
      syncIoBytesMax: o.syncIoBytesMax ?? volumeDefaults.syncIoBytesMax,
      directFd: readOnly ? undefined : openDirect(fd),
    });
    return { meta, backend, backingPath: loc.backingPath, metaPath };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
