// Real NBD clients (nbdinfo, qemu-io, qemu-img, nbdcopy, fio) against a real
// `tandem serve` process. Each test starts its own server on 127.0.0.1 and a
// fresh temp dir, and stops/removes both in a finally, even when it fails.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { sha256File } from '../helpers/files';
import { run, type RunResult } from '../helpers/run';
import { startServe, tempDir, type ServeProcess } from '../helpers/serve-process';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------- helpers

/**
 * Starts `tandem serve ARGS`, runs fn, then stops the server. The server is
 * always stopped (SIGTERM, SIGKILL if it hangs); when fn succeeded the server
 * must also have exited 0 and logged no protocol errors.
 */
async function withServe<T>(args: string[], fn: (srv: ServeProcess) => Promise<T>): Promise<T> {
  const srv = await startServe(args);
  let ok = false;
  let result: T;
  try {
    result = await fn(srv);
    ok = true;
  } finally {
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      srv.stop(),
      new Promise<'hung'>((resolve) => { timer = setTimeout(() => resolve('hung'), 20_000); }),
    ]);
    clearTimeout(timer);
    if (code === 'hung') await srv.kill9();
    if (ok) {
      assert.equal(code, 0, `tandem serve did not exit 0 on SIGTERM:\n${srv.log()}`);
      assert.doesNotMatch(srv.log(), /protocol error/, `server saw a protocol error:\n${srv.log()}`);
    }
  }
  return result;
}

/** A temp dir removed after fn, whatever happens. */
async function withTemp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const t = tempDir('tandem-clients-');
  try {
    return await fn(t.dir);
  } finally {
    t.cleanup();
  }
}

/** Runs a client; on failure the error carries the server's log too. */
async function client(srv: ServeProcess, cmd: string, args: string[], timeoutMs = 50_000): Promise<RunResult> {
  try {
    return await run(cmd, args, { timeoutMs });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- tandem serve log ---\n${srv.log()}`);
  }
}

/** qemu-io in a process of its own: each call is a new NBD connection. */
function qemuIo(srv: ServeProcess, uri: string, cmds: string[], extra: string[] = []): Promise<RunResult> {
  return client(srv, 'qemu-io', ['-f', 'raw', ...extra, ...cmds.flatMap((c) => ['-c', c]), uri]);
}

interface NbdInfoExport {
  'export-name': string;
  'export-size': number;
  contexts?: string[];
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fast_zero: boolean;
  can_cache: boolean;
  can_multi_conn: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
}

async function nbdinfoJson(srv: ServeProcess, args: string[]): Promise<NbdInfoExport[]> {
  const r = await client(srv, 'nbdinfo', ['--json', ...args]);
  const j = JSON.parse(r.stdout) as { exports: NbdInfoExport[] };
  return j.exports;
}

interface MapExtent { offset: number; length: number; type: number; description: string }

async function nbdMap(srv: ServeProcess, uri: string): Promise<MapExtent[]> {
  const r = await client(srv, 'nbdinfo', ['--map', '--json', uri]);
  return JSON.parse(r.stdout) as MapExtent[];
}

function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(2, '0')}`;
}

// ------------------------------------------------ a minimal raw NBD client
//
// qemu-io and libnbd refuse out-of-range requests themselves, before the
// server sees them. This client sends exactly what it is told, so the
// server's own range checks (and its skipping of a rejected write's payload)
// are what get tested.

const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_DISC = 2;
const NBD_CMD_FLUSH = 3;
const NBD_EPERM = 1;
const NBD_EINVAL = 22;
const NBD_ENOSPC = 28;

interface SimpleReply { error: number; data: Buffer | undefined }

class RawNbd {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended = false;
  private cookie = 1n;
  private readonly readLengths = new Map<bigint, number>();
  readonly closed: Promise<void>;
  size = 0;
  transmissionFlags = 0;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.poke(); });
    this.closed = new Promise((resolve) => sock.on('close', () => { this.ended = true; this.poke(); resolve(); }));
    sock.on('error', () => { /* surfaces as a short read */ });
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  static async connect(host: string, port: number, exportName: string): Promise<RawNbd> {
    assert.equal(host, '127.0.0.1');
    const sock = net.connect({ host, port });
    await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const c = new RawNbd(sock);
    const greeting = await c.take(18);
    assert.equal(greeting.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
    assert.equal(greeting.subarray(8, 16).toString('latin1'), 'IHAVEOPT');
    const hsFlags = greeting.readUInt16BE(16);
    assert.equal(hsFlags & 3, 3, 'server offers FIXED_NEWSTYLE and NO_ZEROES');
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(3);
    const name = Buffer.from(exportName);
    const opt = Buffer.alloc(16);
    opt.write('IHAVEOPT', 0, 'latin1');
    opt.writeUInt32BE(1, 8); // NBD_OPT_EXPORT_NAME
    opt.writeUInt32BE(name.length, 12);
    sock.write(Buffer.concat([clientFlags, opt, name]));
    const info = await c.take(10); // size, transmission flags; no zero padding
    c.size = Number(info.readBigUInt64BE(0));
    c.transmissionFlags = info.readUInt16BE(8);
    return c;
  }

  private async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buf.length} of ${n} bytes`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 10_000).unref();
      });
      if (this.buf.length < n && !this.ended && this.wake !== undefined) throw new Error(`timed out waiting for ${n} bytes`);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Sends one request (without waiting); offset may exceed 2^53. Returns its cookie. */
  send(type: number, offset: bigint | number, length: number, payload?: Buffer): bigint {
    const h = Buffer.alloc(28);
    const cookie = this.cookie++;
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    if (type === NBD_CMD_READ) this.readLengths.set(cookie, length);
    this.sock.write(payload === undefined ? h : Buffer.concat([h, payload]));
    return cookie;
  }

  /** Reads the next simple reply (with a successful READ's data). */
  async reply(): Promise<SimpleReply & { cookie: bigint }> {
    const h = await this.take(16);
    assert.equal(h.readUInt32BE(0), 0x67446698, 'simple reply magic');
    const error = h.readUInt32BE(4);
    const cookie = h.readBigUInt64BE(8);
    const readLen = this.readLengths.get(cookie);
    this.readLengths.delete(cookie);
    const data = readLen !== undefined && error === 0 ? Buffer.from(await this.take(readLen)) : undefined;
    return { error, cookie, data };
  }

  /** Reads replies until every cookie has one; replies may come in any order. */
  async replies(cookies: bigint[]): Promise<SimpleReply[]> {
    const got = new Map<bigint, SimpleReply>();
    while (got.size < cookies.length) {
      const r = await this.reply();
      assert.ok(cookies.includes(r.cookie), `unexpected reply cookie ${r.cookie}`);
      assert.ok(!got.has(r.cookie), `two replies for cookie ${r.cookie}`);
      got.set(r.cookie, r);
    }
    return cookies.map((c) => got.get(c) as SimpleReply);
  }

  async disconnect(): Promise<void> {
    this.send(NBD_CMD_DISC, 0, 0);
    this.sock.end();
    await this.closed;
  }

  destroy(): void {
    this.sock.destroy();
  }
}

async function withRaw<T>(srv: ServeProcess, exportName: string, fn: (c: RawNbd) => Promise<T>): Promise<T> {
  const c = await RawNbd.connect(srv.host, srv.port, exportName);
  try {
    return await fn(c);
  } finally {
    c.destroy();
  }
}

// ---------------------------------------------------------------- nbdinfo

test('nbdinfo sees the export size, block sizes, every capability and base:allocation', { timeout: 60_000 }, async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'v.img');
    const size = 48 * MiB + 4096 * 3 + 512; // not a power of two, not MiB-aligned
    await withServe(['--file', file, '--size', String(size)], async (srv) => {
      const exports = await nbdinfoJson(srv, [srv.uri()]);
      assert.equal(exports.length, 1);
      const e = exports[0] as NbdInfoExport;
      assert.equal(e['export-size'], size);
      assert.equal(e.block_size_minimum, 1);
      assert.equal(e.block_size_preferred, 4096);
      assert.equal(e.block_size_maximum, 64 * MiB);
      assert.equal(e.is_read_only, false);
      for (const k of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_cache', 'can_multi_conn'] as const) {
        assert.equal(e[k], true, k);
      }
      assert.ok(e.contexts?.includes('base:allocation'), `contexts: ${JSON.stringify(e.contexts)}`);
      // plain nbdinfo --size agrees, and a fresh volume is one hole
      assert.equal((await client(srv, 'nbdinfo', ['--size', srv.uri()])).stdout.trim(), String(size));
      const map = await nbdMap(srv, srv.uri());
      assert.deepEqual(map.map((x) => [x.offset, x.length, x.type & 1]), [[0, size, 1]]);
    });
  });
});

test('a --read-only export says so, offers no trim/zero, refuses writes and keeps its data', { timeout: 60_000 }, async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'ro.img');
    const size = 16 * MiB;
    // fill some data through a writable server first
    await withServe(['--file', file, '--size', String(size)], async (srv) => {
      await qemuIo(srv, srv.uri(), ['write -P 0x6b 4096 65536']);
    });
    const before = sha256File(file);
    await withServe(['--file', file, '--size', String(size), '--read-only'], async (srv) => {
      const [e] = await nbdinfoJson(srv, [srv.uri()]);
      assert.ok(e !== undefined);
      assert.equal(e['export-size'], size);
      assert.equal(e.is_read_only, true);
      assert.equal(e.can_trim, false);
      assert.equal(e.can_zero, false);
      assert.equal(e.can_fast_zero, false);
      assert.equal(e.can_flush, true);
      // the data written before the restart is served
      await qemuIo(srv, srv.uri(), ['read -P 0x6b 4096 65536', 'read -P 0 69632 4096'], ['-r']);
      // qemu refuses to write to it
      const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 4096', srv.uri()], { allowFail: true, timeoutMs: 30_000 });
      assert.notEqual(w.code, 0, `qemu-io wrote to a read-only export:\n${w.stdout}${w.stderr}`);
      // and so does the server itself, when a client writes anyway
      await withRaw(srv, '', async (c) => {
        assert.equal(c.size, size);
        assert.equal(c.transmissionFlags & 2, 2, 'NBD_FLAG_READ_ONLY');
        const [wr, rd] = await c.replies([
          c.send(NBD_CMD_WRITE, 4096, 4096, Buffer.alloc(4096, 0x99)),
          c.send(NBD_CMD_READ, 4096, 4096),
        ]);
        assert.equal(wr?.error, NBD_EPERM);
        assert.equal(rd?.error, 0);
        assert.ok(rd?.data?.equals(Buffer.alloc(4096, 0x6b)), 'read after a refused write returns the old data');
        await c.disconnect();
      });
    });
    assert.equal(sha256File(file), before, 'the read-only server changed the backing file');
  });
});

test('nbdinfo --list shows every named export with its size; each name reaches its own volume', { timeout: 60_000 }, async () => {
  await withTemp(async (dir) => {
    const a = path.join(dir, 'a.img');
    const b = path.join(dir, 'b.img');
    await withServe(['--file', a, '--name', 'alpha', '--file', b, '--name', 'beta', '--size', '8M'], async (srv) => {
      const exports = await nbdinfoJson(srv, ['--list', srv.uri()]);
      const byName = new Map(exports.map((e) => [e['export-name'], e['export-size']] as const));
      assert.deepEqual([...byName.keys()].sort(), ['alpha', 'beta'], JSON.stringify(exports.map((e) => e['export-name'])));
      assert.equal(exports.length, 2, 'each export listed once');
      assert.equal(byName.get('alpha'), 8 * MiB);
      assert.equal(byName.get('beta'), 8 * MiB);
      // the text form lists them too
      const text = (await client(srv, 'nbdinfo', ['--list', srv.uri()])).stdout;
      assert.match(text, /export="alpha":/);
      assert.match(text, /export="beta":/);

      // writes through one name land in that volume only
      await qemuIo(srv, srv.uri('alpha'), ['write -P 0xa1 0 65536']);
      await qemuIo(srv, srv.uri('beta'), ['write -P 0xb2 4096 8192']);
      await qemuIo(srv, srv.uri('alpha'), ['read -P 0xa1 0 65536', 'read -P 0 65536 65536']);
      await qemuIo(srv, srv.uri('beta'), ['read -P 0 0 4096', 'read -P 0xb2 4096 8192', 'read -P 0 12288 65536']);
      // "" is the default export, i.e. the first one
      await qemuIo(srv, srv.uri(''), ['read -P 0xa1 0 65536']);
      // an unknown name is refused
      const bad = await run('nbdinfo', [srv.uri('gamma')], { allowFail: true, timeoutMs: 30_000 });
      assert.notEqual(bad.code, 0, 'nbdinfo of an unknown export succeeded');
    });
    const fa = fs.readFileSync(a);
    const fb = fs.readFileSync(b);
    assert.ok(fa.subarray(0, 65536).equals(Buffer.alloc(65536, 0xa1)));
    assert.ok(fb.subarray(4096, 12288).equals(Buffer.alloc(8192, 0xb2)));
    assert.equal(fb.subarray(0, 4096).some((x) => x !== 0), false);
  });

  // exports of different sizes (files adopted without --size)
  await withTemp(async (dir) => {
    const a = path.join(dir, 'a.img');
    const b = path.join(dir, 'b.img');
    fs.writeFileSync(a, '');
    fs.truncateSync(a, 3 * MiB);
    fs.writeFileSync(b, '');
    fs.truncateSync(b, 5 * MiB + 4096);
    await withServe(['--file', a, '--name', 'alpha', '--file', b, '--name', 'beta'], async (srv) => {
      const exports = await nbdinfoJson(srv, ['--list', srv.uri()]);
      const byName = new Map(exports.map((e) => [e['export-name'], e['export-size']] as const));
      assert.equal(byName.get('alpha'), 3 * MiB);
      assert.equal(byName.get('beta'), 5 * MiB + 4096);
      assert.equal((await client(srv, 'nbdinfo', ['--size', srv.uri('beta')])).stdout.trim(), String(5 * MiB + 4096));
    });
  });
});

// ---------------------------------------------------------------- qemu-io

test('qemu-io writes at aligned and odd offsets read back from the server in new processes', { timeout: 60_000 }, async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'q.img');
    const size = 16 * MiB;
    await withServe(['--file', file, '--size', String(size)], async (srv) => {
      const uri = srv.uri();
      // each write in its own process, each overlapping the one before
      const writes: Array<[number, number, number]> = [
        [0, 64 * KiB, 0x11],
        [1000, 70000, 0x22],
        [12345, 4097, 0x33],
        [3 * MiB + 1, 2 * MiB + 3, 0x44], // odd, several hundred KiB per request
        [size - 4097, 4097, 0x55], // up to the last byte
        [8 * MiB - 1, 2, 0x66], // straddles a 4 KiB block boundary
      ];
      for (const [off, len, p] of writes) await qemuIo(srv, uri, [`write -P ${hex(p)} ${off} ${len}`]);

      // what the volume must hold now
      const expect = Buffer.alloc(size);
      for (const [off, len, p] of writes) expect.fill(p, off, off + len);
      const reads: Array<[number, number, number]> = [
        [0, 1000, 0x11],
        [1000, 12345 - 1000, 0x22],
        [12345, 4097, 0x33],
        [12345 + 4097, 71000 - 12345 - 4097, 0x22],
        [71000, 3 * MiB + 1 - 71000, 0], // mostly hole, starts inside a data block
        [3 * MiB + 1, 2 * MiB + 3, 0x44],
        [5 * MiB + 4, 3 * MiB - 5 - 4, 0],
        [8 * MiB - 1, 2, 0x66],
        [8 * MiB + 1, size - 4097 - 8 * MiB - 1, 0],
        [size - 4097, 4097, 0x55],
      ];
      for (const [off, len, p] of reads) {
        assert.ok(expect.subarray(off, off + len).every((x) => x === p), `test table is wrong at ${off}+${len}`);
      }
      // one new process per read, so nothing comes from a client cache
      for (const [off, len, p] of reads) await qemuIo(srv, uri, [`read -P ${hex(p)} ${off} ${len}`]);
      // a wrong pattern is detected (the checks above can fail)
      const wrong = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x22 0 1000', uri], { allowFail: true, timeoutMs: 30_000 });
      assert.notEqual(wrong.code, 0, 'qemu-io read -P accepted the wrong pattern');

      // the whole image, read in big requests without block status (so the
      // server answers with its own hole/data chunks), is byte-for-byte right
      const out = path.join(dir, 'out.img');
      await client(srv, 'nbdcopy', ['--no-extents', '--request-size=1048576', uri, out]);
      assert.ok(fs.readFileSync(out).equals(expect), 'nbdcopy of the whole export differs from what was written');
      fs.rmSync(out);

      // the backing file holds the same bytes
      assert.ok(fs.readFileSync(file).equals(expect), 'backing file differs from what was written');
    });
  });
});

test('accesses across the end of the export fail, and the server keeps serving correctly', { timeout: 60_000 }, async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'e.img');
    const size = 8 * MiB;
    await withServe(['--file', file, '--size', String(size)], async (srv) => {
      const uri = srv.uri();
      await qemuIo(srv, uri, ['write -P 0x5e ' + String(size - 8192) + ' 8192']);

      // qemu-io reports failure for a read and a write across the end
      for (const cmd of [`read ${size - 4096} 8192`, `write -P 0x77 ${size - 4096} 8192`, `read ${size} 1`]) {
        const r = await run('qemu-io', ['-f', 'raw', '-c', cmd, uri], { allowFail: true, timeoutMs: 30_000 });
        assert.notEqual(r.code, 0, `qemu-io '${cmd}' past the end succeeded:\n${r.stdout}`);
        assert.match(r.stdout + r.stderr, /failed|error/i, cmd);
      }

      // the server itself rejects them when a client sends them anyway; a
      // rejected write's payload is skipped, not parsed as requests
      await withRaw(srv, '', async (c) => {
        assert.equal(c.size, size);
        const junk = Buffer.alloc(8192, 0x77);
        // a payload that looks like a request header: if the server parsed it
        // as one, it would see a READ of 4096 bytes
        junk.writeUInt32BE(0x25609513, 0);
        junk.writeUInt16BE(NBD_CMD_READ, 6);
        junk.writeUInt32BE(4096, 24);
        const cookies = [
          c.send(NBD_CMD_READ, size - 4096, 8192),
          c.send(NBD_CMD_READ, size, 1),
          c.send(NBD_CMD_READ, size + 4096, 4096),
          c.send(NBD_CMD_READ, 0xfffffffffffff000n, 8192), // offset + length wraps 2^64
          c.send(NBD_CMD_WRITE, size - 4096, 8192, junk),
          c.send(NBD_CMD_WRITE, size, 4096, junk.subarray(0, 4096)),
          c.send(NBD_CMD_READ, size - 8192, 8192), // valid, after all that
          c.send(NBD_CMD_FLUSH, 0, 0),
        ];
        const r = await c.replies(cookies);
        assert.deepEqual(r.map((x) => x.error), [NBD_EINVAL, NBD_EINVAL, NBD_EINVAL, NBD_EINVAL, NBD_ENOSPC, NBD_ENOSPC, 0, 0]);
        for (const x of r.slice(0, 6)) assert.equal(x.data, undefined);
        assert.ok(r[6]?.data?.equals(Buffer.alloc(8192, 0x5e)), 'the in-range part was not changed by the rejected write');
        // the connection is still in step: one more round trip
        const [again] = await c.replies([c.send(NBD_CMD_READ, 0, 4096)]);
        assert.equal(again?.error, 0);
        assert.ok(again?.data?.equals(Buffer.alloc(4096)));
        await c.disconnect();
      });

      // new clients are served normally afterwards
      await qemuIo(srv, uri, [`read -P 0x5e ${size - 8192} 8192`]);
      await qemuIo(srv, uri, ['write -P 0x3c 123 4567', 'read -P 0x3c 123 4567']);
      await qemuIo(srv, uri, ['read -P 0x3c 123 4567', `read -P 0x5e ${size - 8192} 8192`]);
      assert.equal((await client(srv, 'nbdinfo', ['--size', uri])).stdout.trim(), String(size));
    });
    assert.equal(fs.statSync(file).size, size, 'the backing file did not grow');
  });
});

// ------------------------------------------------------- qemu-img, nbdcopy

test('qemu-img convert and nbdcopy copy a sparse 256 MiB image both ways, exactly and sparsely', { timeout: 90_000 }, async () => {
  await withTemp(async (dir) => {
    const size = 256 * MiB;
    const src = path.join(dir, 'src.img');
    const vol = path.join(dir, 'vol.img');
    const out = path.join(dir, 'out.img');
    await run('qemu-img', ['create', '-f', 'raw', src, String(size)]);
    // random data at a few scattered (some unaligned) offsets, a hole everywhere else
    const regions: Array<[number, number]> = [
      [0, 1 * MiB],
      [37 * MiB + 12345, 2 * MiB],
      [128 * MiB, 1 * MiB + 4096],
      [200 * MiB + 1, 300 * KiB],
      [size - 512 * KiB, 512 * KiB],
    ];
    const fd = fs.openSync(src, 'r+');
    try {
      for (const [off, len] of regions) {
        const data = crypto.randomBytes(len);
        data[0] = data[0] || 1; // first and last bytes nonzero: the extent is really that long
        data[len - 1] = data[len - 1] || 1;
        fs.writeSync(fd, data, 0, len, off);
      }
    } finally {
      fs.closeSync(fd);
    }
    const written = regions.reduce((s, [, len]) => s + len, 0);
    const srcHash = sha256File(src);
    const sparse = (what: string, bytes: number): void => {
      // each region may round out to whole 4 KiB blocks at both ends
      assert.ok(bytes >= written && bytes <= written + regions.length * 2 * 4096 + 64 * KiB,
        `${what}: ${bytes} bytes of data, expected about ${written}`);
    };
    sparse('src.img allocation', allocatedBytes(src));

    await withServe(['--file', vol, '--size', '256M'], async (srv) => {
      const uri = srv.uri();
      const mappedData = async (): Promise<number> => {
        const map = await nbdMap(srv, uri);
        assert.equal(map.reduce((s, x) => s + x.length, 0), size, 'the map covers the export');
        assert.ok(map.some((x) => (x.type & 1) === 1), 'the map shows holes');
        return map.filter((x) => (x.type & 1) === 0).reduce((s, x) => s + x.length, 0);
      };

      await client(srv, 'qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri]);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri], { allowFail: true, timeoutMs: 50_000 });
      assert.equal(cmp.code, 0, `qemu-img compare: ${cmp.stdout}${cmp.stderr}\n${srv.log()}`);
      assert.match(cmp.stdout, /Images are identical/);
      sparse('export map after qemu-img convert', await mappedData());
      sparse('backing allocation after qemu-img convert', allocatedBytes(vol));
      assert.equal(sha256File(vol), srcHash, 'backing file after qemu-img convert');

      // scribble over holes and data, so the next copy has to zero and rewrite
      await qemuIo(srv, uri, ['write -P 0xff 64M 3M', 'write -P 0xee 1000 5000', `write -P 0xdd ${size - 100} 100`]);
      assert.notEqual(sha256File(vol), srcHash);

      await client(srv, 'nbdcopy', ['--flush', src, uri]);
      const cmp2 = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri], { allowFail: true, timeoutMs: 50_000 });
      assert.equal(cmp2.code, 0, `qemu-img compare after nbdcopy: ${cmp2.stdout}${cmp2.stderr}`);
      sparse('export map after nbdcopy', await mappedData());
      sparse('backing allocation after nbdcopy', allocatedBytes(vol));
      assert.equal(sha256File(vol), srcHash, 'backing file after nbdcopy');

      // and back out again
      await client(srv, 'nbdcopy', [uri, out]);
      assert.equal(fs.statSync(out).size, size);
      assert.equal(sha256File(out), srcHash, 'nbdcopy URI out.img differs from src.img');
      assert.ok(allocatedBytes(out) < size / 4, `out.img is not sparse: ${allocatedBytes(out)} bytes allocated`);
    });
  });
});

// ---------------------------------------------------------------- fio

interface FioJob {
  jobname: string;
  error: number;
  total_err?: number;
  read: { io_kbytes: number };
  write: { io_kbytes: number };
}

function fioJobs(stdout: string): FioJob[] {
  // fio may print notices before the JSON document
  const start = stdout.indexOf('{');
  assert.ok(start >= 0, `no JSON from fio:\n${stdout}`);
  return (JSON.parse(stdout.slice(start)) as { jobs: FioJob[] }).jobs;
}

test('fio over 4 NBD connections: random writes verified with crc32c, again after a restart', { timeout: 120_000 }, async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'fio.img');
    const jobs = 4;
    const perJob = 64 * MiB;
    const size = jobs * perJob;
    const common = (uri: string): string[] => [
      '--name=v', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', `--size=${perJob}`,
      `--numjobs=${jobs}`, `--offset_increment=${perJob}`, '--iodepth=8', '--verify=crc32c', '--verify_fatal=1',
      '--output-format=json', '--verify_state_save=0',
    ];
    await withServe(['--file', file, '--size', String(size)], async (srv) => {
      const r = await run('fio', [...common(srv.uri()), '--do_verify=1'], { allowFail: true, timeoutMs: 90_000 });
      assert.equal(r.code, 0, `fio failed (${r.code}):\n${r.stderr}\n${r.stdout.slice(-4000)}\n${srv.log()}`);
      const js = fioJobs(r.stdout);
      assert.equal(js.length, jobs);
      for (const j of js) {
        assert.equal(j.error, 0, `job ${j.jobname} error`);
        assert.equal(j.total_err ?? 0, 0);
        assert.equal(j.write.io_kbytes, perJob / KiB, 'every block written');
        assert.equal(j.read.io_kbytes, perJob / KiB, 'every block read back and verified');
      }
      // four clients at once, as multi-conn promised
      const opened = (srv.log().match(/connection open/g) ?? []).length;
      assert.ok(opened >= jobs, `only ${opened} connections`);
    });
    // SIGTERM flushed everything: a new server and a new fio verify every block
    await withServe(['--file', file, '--size', String(size)], async (srv) => {
      const r = await run('fio', [...common(srv.uri()), '--verify_only=1'], { allowFail: true, timeoutMs: 90_000 });
      assert.equal(r.code, 0, `fio --verify_only failed (${r.code}):\n${r.stderr}\n${r.stdout.slice(-4000)}\n${srv.log()}`);
      for (const j of fioJobs(r.stdout)) {
        assert.equal(j.error, 0, `job ${j.jobname} error`);
        assert.equal(j.read.io_kbytes, perJob / KiB, 'every block verified');
      }
    });
  });
});
