// `tandem serve` and bad input: usage mistakes exit 2, refused volumes exit 1,
// each with a clear message on stderr, and neither creates nor changes a file.
// Also --read-only, SIGTERM with clients connected, and a port already in use.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { NBD_EPERM, NBD_FLAG_READ_ONLY } from '../../src/protocol/nbd/constants';
import { NbdClient, NbdRequestError } from '../helpers/nbd-client';
import { run } from '../helpers/run';
import { startServe, tandemBin, tempDir } from '../helpers/serve-process';

const MiB = 1024 * 1024;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `tandem serve ARGS` for a case that should exit by itself; SIGKILLs it after `timeoutMs`. */
function serveOnce(args: string[], o: { cwd?: string; timeoutMs?: number } = {}): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tandemBin, 'serve', ...args], {
      cwd: o.cwd ?? os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tandem serve ${args.join(' ')} did not exit within ${o.timeoutMs ?? 15_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, o.timeoutMs ?? 15_000);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

/** Every file under `dir`: type, size, mode, mtime and content hash, by relative path. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = path.join(rel, name);
      const p = path.join(dir, r);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) {
        out[r + '/'] = `dir mode=${st.mode.toString(8)}`;
        walk(r);
      } else {
        const hash = st.isFile() ? crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex') : '-';
        out[r] = `size=${st.size} mode=${st.mode.toString(8)} mtime=${st.mtimeMs} sha256=${hash}`;
      }
    }
  };
  walk('');
  return out;
}

/** A one-line "tandem: ..." message: no stack trace, no listening line. */
function assertCleanRefusal(r: Exit, code: number, message: RegExp): void {
  const context = `exit ${r.code} signal ${r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  assert.equal(r.signal, null, context);
  assert.equal(r.code, code, context);
  assert.match(r.stderr, message, context);
  assert.match(r.stderr, /^tandem: /m, context);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `stack trace on stderr\n${context}`);
  assert.doesNotMatch(r.stdout, /listening on/, context);
  if (code === 2) assert.match(r.stderr, /usage: tandem serve/, `usage hint expected\n${context}`);
}

async function withTemp(body: (dir: string) => Promise<void>): Promise<void> {
  const t = tempDir('tandem-cli-');
  try {
    await body(t.dir);
  } finally {
    t.cleanup();
  }
}

function pattern(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) b.writeUInt32BE(((seed * 0x9e3779b1) ^ i) >>> 0, i);
  return b;
}

/** Creates a volume with `tandem serve --size`, writes a pattern at both ends, stops it cleanly. */
async function makeVolume(file: string, size: string): Promise<void> {
  const s = await startServe(['--file', file, '--size', size]);
  try {
    const c = await NbdClient.connect(s.host, s.port);
    await c.write(0, pattern(1, 4096));
    await c.write(c.size - 4096, pattern(2, 4096));
    await c.flush();
    await c.disconnect();
  } finally {
    assert.equal(await s.stop(), 0, s.log());
  }
}

test('missing --file: exit 2, says --file is required, creates nothing', async () => {
  await withTemp(async (dir) => {
    const r = await serveOnce(['--size', '1M', '--listen', '127.0.0.1:0'], { cwd: dir });
    assertCleanRefusal(r, 2, /--file is required/);
    assert.deepEqual(snapshot(dir), {});
  });
});

test('unknown option: exit 2, names the option, creates nothing', async () => {
  await withTemp(async (dir) => {
    const r = await serveOnce(['--file', path.join(dir, 'v.img'), '--size', '1M', '--listen', '127.0.0.1:0', '--frobnicate'], { cwd: dir });
    assertCleanRefusal(r, 2, /unknown option '--frobnicate'/i);
    assert.deepEqual(snapshot(dir), {});
  });
});

test('bad --size ("12X" and others): exit 2, names the value, creates nothing', async () => {
  await withTemp(async (dir) => {
    for (const bad of ['12X', '1.5G', 'lots', '99999999999P']) {
      const r = await serveOnce(['--file', path.join(dir, 'v.img'), '--size', bad, '--listen', '127.0.0.1:0'], { cwd: dir });
      assertCleanRefusal(r, 2, new RegExp(`--size: .*${bad.replace('.', '\\.')}`));
      assert.deepEqual(snapshot(dir), {}, `--size ${bad}`);
    }
  });
});

test('--size 0 is a usage mistake too: exit 2, creates nothing', async () => {
  await withTemp(async (dir) => {
    const r = await serveOnce(['--file', path.join(dir, 'v.img'), '--size', '0', '--listen', '127.0.0.1:0'], { cwd: dir });
    assert.deepEqual(snapshot(dir), {});
    assertCleanRefusal(r, 2, /--size/);
  });
});

test('bad --listen: exit 2, names --listen, creates nothing', async () => {
  await withTemp(async (dir) => {
    for (const bad of ['nope', '127.0.0.1', '127.0.0.1:99999', ':10809', '127.0.0.1:http', '[::1]', '127.0.0.1:-1']) {
      const r = await serveOnce(['--file', path.join(dir, 'v.img'), '--size', '1M', `--listen=${bad}`], { cwd: dir });
      assertCleanRefusal(r, 2, /--listen/);
      assert.deepEqual(snapshot(dir), {}, `--listen ${bad}`);
    }
  });
});

test('--listen on an address this host does not have: exit 1 with a one-line message, creates nothing', async () => {
  // a documentation address that is not on any local interface; binding to it fails locally (EADDRNOTAVAIL), nothing is sent
  const local = new Set(Object.values(os.networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address)));
  const addr = ['203.0.113.7', '198.51.100.7', '192.0.2.123'].find((a) => !local.has(a));
  assert.ok(addr !== undefined, 'every candidate address is on this host');
  await withTemp(async (dir) => {
    const r = await serveOnce(['--file', path.join(dir, 'v.img'), '--size', '1M', '--listen', `${addr}:0`], { cwd: dir });
    assert.deepEqual(snapshot(dir), {}, `a volume was created although the server could not listen\n${r.stderr}`);
    assertCleanRefusal(r, 1, new RegExp(addr.replace(/\./g, '\\.')));
  });
});

test('a missing backing file without --size is refused (exit 1) and not created', async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'nothing.img');
    const r = await serveOnce(['--file', file, '--listen', '127.0.0.1:0'], { cwd: dir });
    assertCleanRefusal(r, 1, new RegExp(`${file}.*(ENOENT|no such file)`));
    assert.deepEqual(snapshot(dir), {});
  });
});

test('--meta in a directory that does not exist is refused (exit 1) and leaves no backing file behind', async () => {
  await withTemp(async (dir) => {
    const meta = path.join(dir, 'no-such-dir', 'v.tandem.json');
    const r = await serveOnce(['--file', path.join(dir, 'v.img'), '--size', '1M', '--meta', meta, '--listen', '127.0.0.1:0'], { cwd: dir });
    assert.deepEqual(snapshot(dir), {}, `files left behind\n${r.stderr}`);
    assertCleanRefusal(r, 1, /no-such-dir/);
  });
});

test('an existing volume opened with a different --size is refused (exit 1) and left unchanged', async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'v.img');
    await makeVolume(file, '1M');
    const before = snapshot(dir);
    for (const size of ['2M', '512K']) {
      const r = await serveOnce(['--file', file, '--size', size, '--listen', '127.0.0.1:0'], { cwd: dir });
      assertCleanRefusal(r, 1, new RegExp(`${MiB}\\b.*--size`));
      assert.match(r.stderr, new RegExp(String(size === '2M' ? 2 * MiB : MiB / 2)), r.stderr);
      assert.deepEqual(snapshot(dir), before, `--size ${size}`);
    }
  });
});

test('a backing file resized behind the metadata\'s back is refused at open, naming both sizes', async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'v.img');
    await makeVolume(file, '1M');
    for (const actual of [MiB / 2, MiB + 4096, MiB - 1]) {
      fs.truncateSync(file, actual);
      const before = snapshot(dir);
      // with and without a --size that agrees with the metadata
      for (const extra of [[], ['--size', '1M']]) {
        const r = await serveOnce(['--file', file, ...extra, '--listen', '127.0.0.1:0'], { cwd: dir });
        assertCleanRefusal(r, 1, new RegExp(`\\b${actual}\\b`));
        assert.match(r.stderr, new RegExp(`\\b${MiB}\\b`), `the metadata's size should be named\n${r.stderr}`);
        assert.deepEqual(snapshot(dir), before, `backing resized to ${actual}, args ${extra.join(' ')}`);
      }
    }
  });
});

test('corrupt metadata is refused (exit 1) and left as it was', async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'v.img');
    const meta = `${file}.tandem.json`;
    await makeVolume(file, '1M');
    const good = fs.readFileSync(meta, 'utf8');
    for (const garbage of ['garbage{ not json', good.slice(0, good.length / 2), '{}', '', '[1,2,3]\n', good.replace('"size": 1048576', '"size": -5')]) {
      fs.writeFileSync(meta, garbage);
      const before = snapshot(dir);
      for (const extra of [[], ['--size', '1M'], ['--read-only']]) {
        const r = await serveOnce(['--file', file, ...extra, '--listen', '127.0.0.1:0'], { cwd: dir });
        assertCleanRefusal(r, 1, new RegExp(`${meta.replace(/\./g, '\\.')}: `));
        assert.deepEqual(snapshot(dir), before, `metadata ${JSON.stringify(garbage.slice(0, 40))}, args ${extra.join(' ')}`);
        assert.equal(fs.readFileSync(meta, 'utf8'), garbage);
      }
    }
  });
});

test('--read-only: writes through qemu-io and raw NBD writes fail, data unchanged', async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'v.img');
    await makeVolume(file, '1M');
    const before = snapshot(dir);
    const s = await startServe(['--file', file, '--read-only']);
    try {
      const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 4k', s.uri()], { allowFail: true, timeoutMs: 30_000 });
      assert.notEqual(w.code, 0, `qemu-io write on a read-only export succeeded:\n${w.stdout}${w.stderr}`);
      // qemu-io reads still work and see the data that was there
      const r = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4k', s.uri()], { allowFail: true, timeoutMs: 30_000 });
      assert.equal(r.code, 0, `qemu-io read on a read-only export failed:\n${r.stdout}${r.stderr}`);

      // the server itself refuses writes (qemu gives up before sending one)
      const c = await NbdClient.connect(s.host, s.port);
      try {
        assert.notEqual(c.transmissionFlags & NBD_FLAG_READ_ONLY, 0, 'export should advertise NBD_FLAG_READ_ONLY');
        await assert.rejects(c.write(0, Buffer.alloc(4096, 0x55)), (e: unknown) => e instanceof NbdRequestError && e.errno === NBD_EPERM);
        await assert.rejects(c.write(c.size - 512, Buffer.alloc(512, 0x55)), (e: unknown) => e instanceof NbdRequestError && e.errno === NBD_EPERM);
        await c.flush();
        assert.deepEqual(await c.read(0, 4096), pattern(1, 4096));
        await c.disconnect();
      } finally {
        c.destroy();
      }
    } finally {
      assert.equal(await s.stop(), 0, s.log());
    }
    assert.deepEqual(snapshot(dir), before);
  });
});

test('SIGTERM with clients connected: requests in flight finish, exit 0, log says stopping and stopped', { timeout: 60_000 }, async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'v.img');
    const s = await startServe(['--file', file, '--size', '64M']);
    let idle: NbdClient | undefined;
    let busy: NbdClient | undefined;
    let raw: net.Socket | undefined;
    try {
      // one client done with its work, one still in the handshake, one with writes in flight
      idle = await NbdClient.connect(s.host, s.port);
      await idle.write(0, pattern(7, 65536));
      await idle.flush();
      raw = net.connect({ host: s.host, port: s.port });
      const rawClosed = new Promise<void>((resolve) => raw?.once('close', () => resolve()));
      raw.on('error', () => { /* reset by the server is fine */ });
      await new Promise<void>((resolve) => raw?.once('data', () => resolve())); // the greeting
      const b = await NbdClient.connect(s.host, s.port);
      busy = b;
      const chunk = 256 * 1024;
      const writes = Array.from({ length: 48 }, (_, i) => {
        const offset = MiB + i * chunk;
        return b.write(offset, pattern(100 + i, chunk)).then(() => ({ i, offset, ok: true as const }), (e: unknown) => ({ i, offset, ok: false as const, e }));
      });
      await Promise.race(writes); // the first reply: the load is under way
      const t0 = Date.now();
      const code = await s.stop();
      const seconds = (Date.now() - t0) / 1000;
      assert.equal(code, 0, s.log());
      assert.match(s.log(), /stopping signal=SIGTERM connections=3/, s.log());
      assert.match(s.log(), /info {2}serve: stopped/, s.log());
      assert.doesNotMatch(s.log(), /drain timed out/, `the drain should not need its timeout\n${s.log()}`);
      assert.ok(seconds < 5, `SIGTERM took ${seconds} s with clients connected\n${s.log()}`);
      await Promise.all([idle.whenClosed(), busy.whenClosed(), rawClosed]);

      // every write was answered or cut off by the close, never refused; answered ones are on disk
      const results = await Promise.all(writes);
      const image = fs.readFileSync(file);
      let answered = 0;
      for (const r of results) {
        if (r.ok) {
          answered++;
          assert.ok(image.subarray(r.offset, r.offset + chunk).equals(pattern(100 + r.i, chunk)), `acknowledged write ${r.i} is not in the file`);
        } else {
          assert.ok(!(r.e instanceof NbdRequestError), `write ${r.i} got an error reply during shutdown: ${(r.e as Error).message}`);
        }
      }
      assert.ok(answered >= 1);
      assert.ok(image.subarray(0, 65536).equals(pattern(7, 65536)), 'the idle client\'s write is in the file');
    } finally {
      idle?.destroy();
      busy?.destroy();
      raw?.destroy();
      await s.kill9();
    }
  });
});

test('SIGTERM: the server exits promptly even when a client sends more requests after the server closed its side', { timeout: 60_000 }, async () => {
  await withTemp(async (dir) => {
    const s = await startServe(['--file', path.join(dir, 'v.img'), '--size', '1M']);
    // allowHalfOpen: like a busy client whose next requests cross the server's FIN on the wire
    const c = await NbdClient.connect(s.host, s.port, { allowHalfOpen: true });
    try {
      await c.write(0, pattern(3, 4096));
      const t0 = Date.now();
      const stopped = s.stop();
      await c.whenServerEnded(); // drained: the server has closed its side
      const late = [c.flush().catch(() => undefined)];
      await sleep(100);
      late.push(c.flush().catch(() => undefined)); // arrives in a separate read
      await sleep(100);
      c.end(); // our FIN: both sides are now closed
      const code = await stopped;
      const seconds = (Date.now() - t0) / 1000;
      await Promise.all(late);
      assert.equal(code, 0, s.log());
      assert.doesNotMatch(s.log(), /drain timed out/, `the server did not notice the client's FIN\n${s.log()}`);
      assert.ok(seconds < 5, `SIGTERM took ${seconds} s although the client had closed its side after 0.2 s\n${s.log()}`);
      assert.ok(fs.readFileSync(path.join(dir, 'v.img')).subarray(0, 4096).equals(pattern(3, 4096)));
    } finally {
      c.destroy();
      await s.kill9();
    }
  });
});

test('a second server on a port in use fails with exit 1 and leaves its volume and the first server alone', async () => {
  await withTemp(async (dir) => {
    const first = path.join(dir, 'first.img');
    const second = path.join(dir, 'second.img');
    await makeVolume(second, '1M');
    const s = await startServe(['--file', first, '--size', '1M']);
    try {
      const before = snapshot(dir);
      const r = await serveOnce(['--file', second, '--listen', `127.0.0.1:${s.port}`], { cwd: dir });
      assertCleanRefusal(r, 1, new RegExp(`(EADDRINUSE|address already in use).*127\\.0\\.0\\.1:${s.port}`));
      assert.deepEqual(snapshot(dir), before);
      // the first server still serves
      const c = await NbdClient.connect(s.host, s.port);
      assert.equal(c.size, MiB);
      await c.read(0, 4096);
      await c.disconnect();
    } finally {
      assert.equal(await s.stop(), 0, s.log());
    }
  });
});

test('a server that cannot listen leaves no new volume behind', async () => {
  await withTemp(async (dir) => {
    const s = await startServe(['--file', path.join(dir, 'first.img'), '--size', '1M']);
    try {
      const before = snapshot(dir);
      const r = await serveOnce(['--file', path.join(dir, 'new.img'), '--size', '1M', '--listen', `127.0.0.1:${s.port}`], { cwd: dir });
      assertCleanRefusal(r, 1, /EADDRINUSE|address already in use/);
      assert.deepEqual(snapshot(dir), before, 'the failed server created a volume');
    } finally {
      assert.equal(await s.stop(), 0, s.log());
    }
  });
});
