// A pool's filesystem on one of its mirrored volumes, on the node that owns
// the pool: a node-private NBD export on a unix socket → nbdfuse presents it
// as a file → fsck (journal replay after a failover) or mkfs on first use →
// mount -o loop. Released in reverse: umount, fusermount3 -u, stop the export.
// The volume is the replica's own backend, so every write the filesystem makes
// is mirrored like a client's.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { NbdServer } from '../io/nbd-server';
import type { Backend } from '../storage/backend';
import type { Logger } from '../util/log';
import type { FilesystemConfig } from './config';
import { describeResult, runProgram, type ScriptResult } from './script';

export const filesystemLimits = {
  /** sun_path is 108 bytes with its NUL */
  socketPathBytesMax: 107,
  fuseReadyMs: 15_000,
  fsckMs: 30 * 60_000,
  mkfsMs: 30 * 60_000,
  mountMs: 5 * 60_000,
  /** how long a busy umount is retried before the processes holding it are killed */
  umountBusyMs: 10_000,
} as const;

const SBIN = '/usr/sbin:/usr/bin:/sbin:/bin';

function sh(file: string, args: readonly string[], timeoutMs: number): Promise<ScriptResult> {
  return runProgram(file, args, { timeoutMs, env: { PATH: SBIN } });
}

async function must(what: string, file: string, args: readonly string[], timeoutMs: number): Promise<ScriptResult> {
  const r = await sh(file, args, timeoutMs);
  if (r.code !== 0) throw new Error(describeResult(what, r));
  return r;
}

/** Mount points (second field of /proc/mounts; octal escapes decoded). */
export function mountPoints(): string[] {
  return fs.readFileSync('/proc/mounts', 'utf8').split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p !== '');
}

export function isMounted(dir: string): boolean {
  return mountPoints().includes(dir);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface PoolFilesystemDeps {
  readonly pool: string;
  readonly cfg: FilesystemConfig;
  /** the node's run directory (not mirrored): sockets, the FUSE directory, pid and log files */
  readonly runDir: string;
  readonly backend: () => Backend;
  readonly size: () => number;
  readonly log: Logger;
}

export class PoolFilesystem {
  private server: NbdServer | undefined;
  private nbdfusePid: number | undefined;
  private nbdfuseExited: Promise<void> | undefined;

  constructor(private readonly d: PoolFilesystemDeps) {}

  private get base(): string { return path.join(this.d.runDir, `${this.d.pool}.${this.d.cfg.volume}`); }
  private get socketPath(): string { return `${this.base}.sock`; }
  private get fuseDir(): string { return `${this.base}.fuse`; }
  /** the volume as a file */
  get image(): string { return path.join(this.fuseDir, this.d.cfg.volume); }
  private get pidFile(): string { return `${this.base}.nbdfuse.pid`; }
  get mountpoint(): string { return this.d.cfg.mountpoint; }

  describe(): string {
    return `filesystem ${this.d.cfg.type} on ${this.d.cfg.volume} at ${this.d.cfg.mountpoint}`;
  }

  async mount(): Promise<void> {
    const { cfg } = this.d;
    if (Buffer.byteLength(this.socketPath) > filesystemLimits.socketPathBytesMax) {
      throw new Error(`the export socket path ${this.socketPath} is longer than ${filesystemLimits.socketPathBytesMax} bytes: use a shorter node.dataDir`);
    }
    if (isMounted(cfg.mountpoint)) throw new Error(`something is mounted at ${cfg.mountpoint} already`);
    fs.mkdirSync(this.d.runDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(cfg.mountpoint, { recursive: true });
    try {
      await this.startExport();
      await this.startNbdfuse();
      await this.prepare();
      const opts = ['loop', ...cfg.mountOptions].join(',');
      await must(`mount ${cfg.mountpoint}`, 'mount', ['-t', cfg.type, '-o', opts, this.image, cfg.mountpoint], filesystemLimits.mountMs);
    } catch (e) {
      await this.unmount().catch((u: unknown) => this.d.log.error('undoing a failed mount failed', { pool: this.d.pool, error: String(u) }));
      throw e;
    }
  }

  /** fsck of what is there (replays the journal after a failover), or mkfs when there is nothing and the config asks */
  private async prepare(): Promise<void> {
    const { cfg } = this.d;
    const probe = await sh('blkid', ['-p', '-o', 'value', '-s', 'TYPE', this.image], 60_000);
    const found = probe.code === 0 ? probe.output.trim() : '';
    if (probe.code !== 0 && probe.code !== 2) throw new Error(describeResult(`blkid ${cfg.volume}`, probe));
    if (found === '') {
      if (!cfg.mkfs) throw new Error(`volume ${cfg.volume} holds no filesystem, and filesystem.mkfs is false`);
      this.d.log.info('creating the filesystem', { pool: this.d.pool, volume: cfg.volume, type: cfg.type });
      // nodiscard: a fresh volume reads as zeroes already
      await must(`mkfs.${cfg.type} ${cfg.volume}`, `mkfs.${cfg.type}`, ['-q', '-F', '-E', 'nodiscard', '-L', this.d.pool.slice(0, 16), this.image], filesystemLimits.mkfsMs);
      return;
    }
    if (found !== cfg.type) throw new Error(`volume ${cfg.volume} holds a ${found} filesystem, not ${cfg.type}: not touching it`);
    // -p: repair what is safe without questions; 1 = errors fixed, 2 = fixed (reboot advised, not for a fresh mount)
    const r = await sh('e2fsck', ['-p', this.image], filesystemLimits.fsckMs);
    if (r.code === 1 || r.code === 2) this.d.log.warn('fsck repaired the filesystem', { pool: this.d.pool, volume: cfg.volume, output: r.output.trim().slice(-500) });
    else if (r.code !== 0) throw new Error(describeResult(`e2fsck ${cfg.volume} (needs an operator: e2fsck -f)`, r));
  }

  private async startExport(): Promise<void> {
    fs.rmSync(this.socketPath, { force: true });
    const server = new NbdServer({
      exports: [{ name: '', description: `tandem volume ${this.d.cfg.volume} (filesystem of pool ${this.d.pool})`, backend: this.d.backend() }],
      log: this.d.log.child('nbd'),
    });
    await server.listenPath(this.socketPath);
    fs.chmodSync(this.socketPath, 0o600);
    this.server = server;
  }

  private async startNbdfuse(): Promise<void> {
    fs.mkdirSync(this.fuseDir, { recursive: true, mode: 0o700 });
    fs.rmSync(this.pidFile, { force: true });
    const logFd = fs.openSync(`${this.base}.nbdfuse.log`, 'w');
    // its own process group, output to a file: it must not die with a pipe if the daemon does
    const child = spawn('nbdfuse', ['-P', this.pidFile, this.image, '--unix', this.socketPath], { stdio: ['ignore', logFd, logFd], detached: true });
    fs.closeSync(logFd);
    let exitedEarly = false;
    this.nbdfuseExited = new Promise((resolve) => {
      child.once('error', () => { exitedEarly = true; resolve(); });
      child.once('exit', () => { exitedEarly = true; resolve(); });
    });
    child.unref();
    this.nbdfusePid = child.pid;
    const size = this.d.size();
    const deadline = Date.now() + filesystemLimits.fuseReadyMs;
    for (;;) {
      if (exitedEarly) throw new Error(`nbdfuse exited before presenting the volume: ${this.nbdfuseLog()}`);
      try {
        // async: the answer may need this process's own export
        if ((await fs.promises.stat(this.image)).size === size) return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && (e as NodeJS.ErrnoException).code !== 'ENOTCONN') throw e;
      }
      if (Date.now() > deadline) throw new Error(`nbdfuse did not present ${this.image} of ${size} bytes within ${filesystemLimits.fuseReadyMs} ms: ${this.nbdfuseLog()}`);
      await sleep(25);
    }
  }

  private nbdfuseLog(): string {
    try { return fs.readFileSync(`${this.base}.nbdfuse.log`, 'utf8').trim().slice(-1000) || '(no output)'; } catch { return '(no output)'; }
  }

  /**
   * umount (a busy one is retried, then the processes holding it are killed: a release must
   * finish, and a lazy umount would cut the filesystem off its disk with writes still in it),
   * then the FUSE file and the private export. Safe to call at any stage of a mount.
   */
  async unmount(): Promise<void> {
    const mp = this.d.cfg.mountpoint;
    // written out first: if another mount namespace holds a copy of this mount (ip netns exec,
    // unshare -m), umount here only detaches it and would flush nothing before the disk goes
    if (isMounted(mp)) {
      const s = await sh('sync', ['-f', mp], filesystemLimits.mountMs);
      if (s.code !== 0) this.d.log.warn('syncing the filesystem before release failed', { pool: this.d.pool, output: s.output.trim() });
    }
    const deadline = Date.now() + filesystemLimits.umountBusyMs;
    let killed = false;
    while (isMounted(mp)) {
      const r = await sh('umount', [mp], 60_000);
      if (r.code === 0) break;
      if (Date.now() < deadline) { await sleep(200); continue; }
      if (killed) throw new Error(describeResult(`umount ${mp}`, r));
      this.d.log.warn('filesystem busy at release: killing the processes that hold it', { pool: this.d.pool, mountpoint: mp });
      await sh('fuser', ['-k', '-9', '-m', mp], 10_000);
      killed = true;
    }
    await this.detachLoops();
    await this.stopNbdfuse();
    if (this.server !== undefined) {
      await this.server.shutdown();
      this.server = undefined;
    }
    fs.rmSync(this.socketPath, { force: true });
  }

  /** loop devices still backed by the FUSE file (mount -o loop normally frees its own) */
  private async detachLoops(): Promise<void> {
    const r = await sh('losetup', ['-j', this.image], 10_000);
    for (const line of r.output.split('\n')) {
      const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
      if (dev === undefined) continue;
      // still attached after umount: the filesystem is mounted in another mount namespace too
      this.d.log.warn('the loop device outlived the umount: the filesystem is still mounted in another mount namespace (it was synced first)', { pool: this.d.pool, device: dev });
      await sh('losetup', ['-d', dev], 10_000);
    }
  }

  private async stopNbdfuse(): Promise<void> {
    if (isMounted(this.fuseDir)) {
      for (let i = 0; i < 50 && isMounted(this.fuseDir); i++) {
        const r = await sh('fusermount3', ['-u', this.fuseDir], 10_000);
        if (r.code === 0) break;
        await sleep(100);
      }
      if (isMounted(this.fuseDir)) await sh('fusermount3', ['-u', '-z', this.fuseDir], 10_000);
    }
    const pid = this.nbdfusePid ?? readPid(this.pidFile);
    if (pid !== undefined && isNbdfuse(pid)) {
      const exited = this.nbdfuseExited ?? Promise.resolve();
      const gone = await Promise.race([exited.then(() => true), sleep(3000).then(() => !isNbdfuse(pid))]);
      if (!gone) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    }
    this.nbdfusePid = undefined;
    this.nbdfuseExited = undefined;
    fs.rmSync(this.pidFile, { force: true });
  }

  /**
   * At node start: what a crashed run left (its mount, the FUSE file whose server died with it,
   * nbdfuse). The data below it is gone with that server, so a lazy umount loses nothing more.
   */
  async removeLeftovers(): Promise<boolean> {
    const mp = this.d.cfg.mountpoint;
    const pid = readPid(this.pidFile);
    const left = isMounted(mp) || isMounted(this.fuseDir) || (pid !== undefined && isNbdfuse(pid));
    if (!left) return false;
    if (isMounted(mp)) {
      const r = await sh('umount', [mp], 30_000);
      if (r.code !== 0) await sh('umount', ['-l', mp], 30_000);
    }
    await this.detachLoops();
    if (isMounted(this.fuseDir)) await sh('fusermount3', ['-u', '-z', this.fuseDir], 10_000);
    if (pid !== undefined && isNbdfuse(pid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    fs.rmSync(this.pidFile, { force: true });
    fs.rmSync(this.socketPath, { force: true });
    return true;
  }

  mounted(): boolean {
    return isMounted(this.d.cfg.mountpoint);
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** the pid is an nbdfuse still (a pid file can outlive its process, and pids are reused) */
function isNbdfuse(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]?.endsWith('nbdfuse') === true;
  } catch {
    return false;
  }
}
