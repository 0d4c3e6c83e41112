// What `tandem serve` stored is still there after it stops: a clean SIGTERM
// with an ext4 filesystem on the export (through nbdfuse and a loop device),
// and a kill -9 in the middle of a write load (every write acknowledged
// before an acknowledged FLUSH must survive).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { NbdClient } from '../helpers/nbd-client';
import { run } from '../helpers/run';
import { startServe, tempDir } from '../helpers/serve-process';

// mkfs.ext4, e2fsck, losetup and mount live in sbin
for (const dir of ['/usr/sbin', '/sbin']) {
  if (!(process.env.PATH ?? '').split(':').includes(dir)) process.env.PATH = `${process.env.PATH ?? ''}:${dir}`;
}

const MiB = 1024 * 1024;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `p`'s value, or 'timeout' after `ms` (the timer is cleared either way, so it keeps nothing alive). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Mount points (second field of /proc/mounts) at or under `dir`. */
function mountsUnder(dir: string): string[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs.readFileSync('/proc/mounts', 'utf8').split('\n')
    .map((line) => unescape(line.split(' ')[1] ?? ''))
    .filter((mp) => mp === dir || mp.startsWith(dir + '/'));
}

function isMounted(mp: string): boolean {
  return mountsUnder(mp).includes(mp);
}

/** Cleanup steps run in reverse order of registration; each runs even when an earlier one failed. */
class Cleanup {
  private readonly steps: Array<{ what: string; fn: () => Promise<void> | void }> = [];

  push(what: string, fn: () => Promise<void> | void): void {
    this.steps.push({ what, fn });
  }

  async run(): Promise<string[]> {
    const problems: string[] = [];
    for (const s of this.steps.splice(0).reverse()) {
      try {
        await s.fn();
      } catch (e) {
        problems.push(`${s.what}: ${(e as Error).message}`);
      }
    }
    return problems;
  }
}

/**
 * Runs `body` with a temp directory and a cleanup stack; afterwards cleans up
 * and checks that nothing is left mounted under the directory. A cleanup
 * problem fails the test only if the body itself passed (so it never hides the first failure).
 */
async function withCleanup(t: TestContext, body: (dir: string, c: Cleanup) => Promise<void>): Promise<void> {
  const tmp = tempDir('tandem-durability-');
  const dir = fs.realpathSync(tmp.dir);
  const c = new Cleanup();
  c.push('remove temp dir', () => {
    const left = mountsUnder(dir);
    if (left.length > 0) throw new Error(`not removing ${dir}: still mounted: ${left.join(', ')}`);
    tmp.cleanup();
  });
  let failed = true;
  try {
    await body(dir, c);
    failed = false;
  } finally {
    const problems = await c.run();
    const left = mountsUnder(dir);
    if (left.length > 0) problems.push(`still mounted after cleanup: ${left.join(', ')}`);
    if (problems.length > 0) {
      if (failed) t.diagnostic(`cleanup problems: ${problems.join('; ')}`);
      else assert.fail(`cleanup problems: ${problems.join('; ')}`);
    }
  }
}

interface FuseMount {
  readonly dir: string;
  /** the export as a file: DIR/nbd */
  readonly file: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stderr(): string;
}

/** `nbdfuse DIR URI` as a child process; waits until DIR/nbd is there with the export's size. */
async function mountNbdfuse(dir: string, uri: string, size: number, c: Cleanup): Promise<FuseMount> {
  fs.mkdirSync(dir, { recursive: true });
  const child = spawn('nbdfuse', [dir, uri], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', (e) => { stderr += `spawn error: ${e.message}\n`; done = true; resolve(null); });
    child.once('exit', (code) => { done = true; resolve(code); });
  });
  const m: FuseMount = { dir, file: path.join(dir, 'nbd'), child, exited, stderr: () => stderr };
  c.push(`unmount nbdfuse at ${dir}`, async () => {
    if (isMounted(dir)) {
      const r = await run('fusermount3', ['-u', dir], { allowFail: true, timeoutMs: 10_000 });
      if (r.code !== 0) await run('fusermount3', ['-u', '-z', dir], { allowFail: true, timeoutMs: 10_000 });
    }
    if (!done && child.pid !== undefined) {
      // fusermount3 -u makes nbdfuse exit on its own; if it does not, end it by its PID
      if (await within(exited, 3000) === 'timeout') {
        process.kill(child.pid, 'SIGTERM');
        if (await within(exited, 3000) === 'timeout') { process.kill(child.pid, 'SIGKILL'); await exited; }
      }
    }
    if (isMounted(dir)) throw new Error(`${dir} is still mounted`);
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (done) throw new Error(`nbdfuse exited before the export appeared:\n${stderr}`);
    try {
      const st = fs.statSync(m.file);
      if (st.size === size) return m;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (Date.now() > deadline) throw new Error(`nbdfuse did not present ${m.file} of ${size} bytes within 15 s:\n${stderr}`);
    await sleep(50);
  }
}

/** fusermount3 -u (retrying while the loop device lets go of the file) and wait for nbdfuse to exit. */
async function unmountNbdfuse(m: FuseMount): Promise<number | null> {
  for (let i = 0; ; i++) {
    const r = await run('fusermount3', ['-u', m.dir], { allowFail: true, timeoutMs: 10_000 });
    if (r.code === 0) break;
    if (i >= 20) throw new Error(`fusermount3 -u ${m.dir} failed: ${r.stderr}`);
    await sleep(100);
  }
  const code = await within(m.exited, 10_000);
  if (code === 'timeout') throw new Error(`nbdfuse did not exit after fusermount3 -u:\n${m.stderr()}`);
  return code;
}

/** Detaches loop devices still backed by `file` (only ours: found with losetup -j). */
async function detachLoops(file: string): Promise<void> {
  const r = await run('losetup', ['-j', file], { allowFail: true, timeoutMs: 10_000 });
  for (const line of r.stdout.split('\n')) {
    const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
    if (dev !== undefined) await run('losetup', ['-d', dev], { allowFail: true, timeoutMs: 10_000 });
  }
}

/** `mount -o loop IMAGE MNT`, with its cleanup (lazy umount if needed, then loop devices). */
async function mountLoop(image: string, mnt: string, c: Cleanup): Promise<void> {
  fs.mkdirSync(mnt, { recursive: true });
  c.push(`umount ${mnt}`, async () => {
    if (isMounted(mnt)) {
      const r = await run('umount', [mnt], { allowFail: true, timeoutMs: 30_000 });
      if (r.code !== 0) await run('umount', ['-l', mnt], { allowFail: true, timeoutMs: 10_000 });
    }
    if (fs.existsSync(image)) await detachLoops(image);
    if (isMounted(mnt)) throw new Error(`${mnt} is still mounted`);
  });
  await run('mount', ['-o', 'loop', image, mnt], { timeoutMs: 30_000 });
}

async function umountLoop(image: string, mnt: string): Promise<void> {
  await run('umount', [mnt], { timeoutMs: 30_000 });
  assert.equal(isMounted(mnt), false, `${mnt} still mounted after umount`);
  const r = await run('losetup', ['-j', image], { allowFail: true, timeoutMs: 10_000 });
  assert.equal(r.stdout.trim(), '', `a loop device still holds ${image} after umount`);
}

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Server log lines that say a request or the protocol went wrong. */
function trouble(log: string): string[] {
  return log.split('\n').filter((l) => /^\S+ (warn|error) /.test(l) || /request failed|protocol error/.test(l));
}

test('ext4 on nbdfuse survives a clean stop and restart: files intact, e2fsck clean', { timeout: 60_000 }, async (t) => {
  await withCleanup(t, async (dir, c) => {
    const image = path.join(dir, 'vol.img');
    const fuseDir = path.join(dir, 'fuse');
    const mnt = path.join(dir, 'mnt');
    const size = 256 * MiB;

    // known content: a few MB in several files, some in subdirectories, one empty
    const files = new Map<string, Buffer>([
      ['a.bin', crypto.randomBytes(3 * MiB)],
      ['b.bin', crypto.randomBytes(MiB + 123)],
      ['sub/c.txt', Buffer.from('tandem durability test\n'.repeat(1000))],
      ['sub/deeper/d.bin', Buffer.alloc(2 * MiB, 0xa5)],
      ['empty', Buffer.alloc(0)],
    ]);
    const expected = new Map([...files].map(([name, data]) => [name, sha256(data)]));

    // ---- first run: create, mkfs, write ----
    const s1 = await startServe(['--file', image, '--size', '256M']);
    c.push('stop first server', async () => { await s1.stop(); });
    const f1 = await mountNbdfuse(fuseDir, s1.uri(), size, c);
    await run('mkfs.ext4', ['-q', '-F', f1.file], { timeoutMs: 60_000 });
    await mountLoop(f1.file, mnt, c);
    for (const [name, data] of files) {
      const p = path.join(mnt, name);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      const fd = fs.openSync(p, 'w');
      try {
        fs.writeFileSync(fd, data);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    for (const d of [mnt, path.join(mnt, 'sub'), path.join(mnt, 'sub', 'deeper')]) {
      const fd = fs.openSync(d, 'r');
      try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
    }
    await umountLoop(f1.file, mnt);
    assert.equal(await unmountNbdfuse(f1), 0, `nbdfuse exit code\n${f1.stderr()}`);
    assert.equal(isMounted(fuseDir), false);
    assert.equal(await s1.stop(), 0, `first server exit code after SIGTERM\n${s1.log()}`);
    assert.match(s1.log(), /stopped/);
    const written = [...s1.log().matchAll(/written_bytes=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    const payload = [...files.values()].reduce((sum, d) => sum + d.length, 0);
    assert.ok(written >= payload, `the server saw ${written} bytes written, less than the ${payload} bytes of files`);
    assert.deepEqual(trouble(s1.log()), [], 'first server logged trouble');
    assert.equal(fs.statSync(image).size, size, 'backing file keeps the volume size');

    // ---- second run: same file, no --size ----
    const s2 = await startServe(['--file', image]);
    c.push('stop second server', async () => { await s2.stop(); });
    const f2 = await mountNbdfuse(fuseDir, s2.uri(), size, c);
    await mountLoop(f2.file, mnt, c);
    for (const [name, hash] of expected) {
      assert.equal(sha256(fs.readFileSync(path.join(mnt, name))), hash, `${name} changed across the restart`);
    }
    await umountLoop(f2.file, mnt);
    const fsck = await run('e2fsck', ['-f', '-n', f2.file], { allowFail: true, timeoutMs: 60_000 });
    assert.equal(fsck.code, 0, `e2fsck -fn reports problems:\n${fsck.stdout}\n${fsck.stderr}`);
    assert.doesNotMatch(fsck.stdout, /\berror|corrupt|fix\?/i, fsck.stdout);
    assert.equal(await unmountNbdfuse(f2), 0, `nbdfuse exit code\n${f2.stderr()}`);
    assert.equal(await s2.stop(), 0, `second server exit code after SIGTERM\n${s2.log()}`);
    assert.deepEqual(trouble(s2.log()), [], 'second server logged trouble');
  });
});

const BLOCK = 4096;

/** 4 KiB that only write `id` to `block` has: a header, then a xorshift stream seeded by both. */
function blockContent(id: number, block: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write('TNDM', 0, 'latin1');
  b.writeUInt32BE(id, 4);
  b.writeUInt32BE(block, 8);
  let x = (Math.imul(id + 1, 0x9e3779b1) ^ Math.imul(block + 1, 0x85ebca6b)) | 1;
  for (let at = 12; at < BLOCK; at += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    b.writeInt32BE(x | 0, at);
  }
  return b;
}

test('kill -9 during a write load: every write acknowledged before the last acknowledged FLUSH survives', { timeout: 60_000 }, async (t) => {
  await withCleanup(t, async (dir, c) => {
    const image = path.join(dir, 'vol.img');
    const size = 1024 * MiB;
    const blocks = size / BLOCK;
    const window = 8;
    const flushEvery = 32;
    const loadMs = 2000;

    const s1 = await startServe(['--file', image, '--size', '1G']);
    c.push('kill first server', async () => { await s1.kill9(); });
    const metaBefore = fs.readFileSync(`${image}.tandem.json`, 'utf8');
    const client = await NbdClient.connect(s1.host, s1.port);
    c.push('close first client', () => client.destroy());
    assert.equal(client.size, size);

    /** block of each write, by write id */
    const blockOf: number[] = [];
    /** write ids per block, in issue order (a block never has two writes in flight, so this is also execution order) */
    const perBlock = new Map<number, number[]>();
    const busyBlocks = new Set<number>();
    /** write ids in the order their acknowledgements arrived */
    const acked: number[] = [];
    /** acked[0..durable) were acknowledged before a FLUSH that was itself acknowledged */
    let durable = 0;
    let flushesAcked = 0;
    let ops = 0;
    let killed = false;
    const failures: string[] = [];

    const worker = async (): Promise<void> => {
      while (!killed) {
        const op = ops++;
        try {
          if (op % flushEvery === flushEvery - 1) {
            // a FLUSH covers every write whose reply arrived before the FLUSH was sent
            const covers = acked.length;
            await client.flush();
            if (!killed) { durable = Math.max(durable, covers); flushesAcked++; }
          } else {
            let block: number;
            do { block = crypto.randomInt(blocks); } while (busyBlocks.has(block));
            busyBlocks.add(block);
            const id = blockOf.length;
            blockOf.push(block);
            const list = perBlock.get(block);
            if (list === undefined) perBlock.set(block, [id]); else list.push(id);
            try {
              await client.write(block * BLOCK, blockContent(id, block));
            } finally {
              busyBlocks.delete(block);
            }
            if (!killed) acked.push(id);
          }
        } catch (e) {
          if (!killed) failures.push((e as Error).message);
          return;
        }
      }
    };

    const workers = Array.from({ length: window }, () => worker());
    await sleep(loadMs);
    assert.deepEqual(failures, [], 'requests failed before the kill');
    // replies that arrive from here on are not counted: the server may die before sending them
    killed = true;
    const inFlightAtKill = client.inFlight;
    assert.ok(inFlightAtKill > 0, 'the kill should land while requests are in flight');
    await s1.kill9();
    await Promise.allSettled(workers);
    await client.whenClosed();
    t.diagnostic(`writes issued ${blockOf.length}, acknowledged ${acked.length}, flushes acknowledged ${flushesAcked}, ` +
      `covered by a FLUSH ${durable}, requests in flight at the kill ${inFlightAtKill}`);
    assert.ok(flushesAcked >= 5, `only ${flushesAcked} FLUSHes were acknowledged in ${loadMs} ms`);
    assert.ok(durable >= 100, `only ${durable} writes were covered by an acknowledged FLUSH`);

    // ---- restart on the same file: the volume must be accepted as it is ----
    assert.equal(fs.statSync(image).size, size, 'backing file size after kill -9');
    const s2 = await startServe(['--file', image]);
    c.push('stop second server', async () => { await s2.stop(); });
    assert.doesNotMatch(s2.log(), /error|refus|mismatch/i, s2.log());
    assert.equal(fs.readFileSync(`${image}.tandem.json`, 'utf8'), metaBefore, 'metadata changed across kill -9 and restart');
    const reader = await NbdClient.connect(s2.host, s2.port);
    c.push('close second client', () => reader.destroy());
    assert.equal(reader.size, size);

    // the last write to each block decides its content; check the blocks whose last write is durable
    const durableIds = new Set(acked.slice(0, durable));
    const toCheck: Array<{ id: number; block: number }> = [];
    let superseded = 0;
    for (const [block, ids] of perBlock) {
      const last = ids[ids.length - 1] as number;
      if (durableIds.has(last)) toCheck.push({ id: last, block });
      else if (ids.some((id) => durableIds.has(id))) superseded++;
    }
    t.diagnostic(`checking ${toCheck.length} blocks; ${superseded} durable writes were superseded by later, unflushed writes`);
    assert.ok(toCheck.length >= 100, `only ${toCheck.length} blocks to check`);
    const bad: string[] = [];
    for (let i = 0; i < toCheck.length; i += 64) {
      await Promise.all(toCheck.slice(i, i + 64).map(async ({ id, block }) => {
        const got = await reader.read(block * BLOCK, BLOCK);
        if (!got.equals(blockContent(id, block))) {
          const what = got.subarray(0, 4).toString('latin1') === 'TNDM' ? `write ${got.readUInt32BE(4)}` : `bytes ${got.subarray(0, 16).toString('hex')}`;
          bad.push(`block ${block}: expected write ${id}, found ${what}`);
        }
      }));
    }
    assert.deepEqual(bad.slice(0, 20), [], `${bad.length} acknowledged and flushed writes were lost`);
    await reader.disconnect();
    assert.equal(await s2.stop(), 0, `restarted server exit code after SIGTERM\n${s2.log()}`);
    assert.deepEqual(trouble(s2.log()), [], 'restarted server logged trouble');
  });
});
