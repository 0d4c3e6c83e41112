import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { decodeMetadata, encodeMetadata } from '../../src/storage/metadata';
import { native } from '../../src/storage/native';
import { createVolume, freshMetadata, openVolume, VolumeError } from '../../src/storage/volume-store';
import { tempDir } from '../helpers/serve-process';

const tmp = tempDir('tandem-volume-');
after(() => tmp.cleanup());
let n = 0;
const loc = (): { backingPath: string } => ({ backingPath: path.join(tmp.dir, `v${n++}.img`) });

test('metadata round-trips and each malformed field is named', () => {
  const m = freshMetadata(1 << 30, 'file');
  assert.deepEqual(decodeMetadata(encodeMetadata(m)), m);
  const base = JSON.parse(encodeMetadata(m)) as Record<string, unknown>;
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ ...base, format: 'x' }, /format/],
    [{ ...base, version: 2 }, /version/],
    [{ ...base, size: -1 }, /size/],
    [{ ...base, size: 1.5 }, /size/],
    [{ ...base, blockSize: 1000 }, /blockSize/],
    [{ ...base, volumeId: 'nope' }, /volumeId/],
    [{ ...base, diskState: 'Happy' }, /diskState/],
    [{ ...base, generations: { current: 'xyz', bitmap: '0', history: [] } }, /generations/],
  ];
  for (const [o, re] of bad) assert.match(decodeMetadata(JSON.stringify(o)) as string, re);
  assert.match(decodeMetadata('{not json') as string, /not JSON/);
});

test('a created volume is a sparse file of exactly its size, with metadata beside it and no temp file left', () => {
  const l = loc();
  const m = createVolume(l, 256 * 1024 * 1024);
  const st = fs.statSync(l.backingPath);
  assert.equal(st.size, 256 * 1024 * 1024);
  assert.ok(st.blocks * 512 < 1024 * 1024, 'backing is sparse');
  assert.deepEqual(decodeMetadata(fs.readFileSync(`${l.backingPath}.tandem.json`, 'utf8')), m);
  assert.deepEqual(fs.readdirSync(tmp.dir).filter((f) => f.endsWith('.tmp')), []);
  assert.throws(() => createVolume(l, 4096), (e: unknown) => e instanceof VolumeError && e.code === 'ERR_VOLUME_EXISTS');
});

test('opening a backing whose size differs from its metadata is refused, naming both sizes', () => {
  const l = loc();
  createVolume(l, 1 << 20);
  fs.truncateSync(l.backingPath, 2 << 20);
  assert.throws(() => openVolume(l), (e: unknown) => e instanceof VolumeError && e.code === 'ERR_VOLUME_MISMATCH' &&
    /2097152 bytes/.test(e.message) && /1048576 bytes/.test(e.message));
});

test('a volume without metadata is refused unless adopted; a corrupt metadata file is refused and kept', () => {
  const l = loc();
  fs.writeFileSync(l.backingPath, Buffer.alloc(8192, 1));
  assert.throws(() => openVolume(l), (e: unknown) => e instanceof VolumeError && e.code === 'ERR_VOLUME_NOT_FOUND');
  const v = openVolume(l, { adopt: true });
  assert.equal(v.meta.size, 8192);
  void v.backend.close();
  fs.writeFileSync(`${l.backingPath}.tandem.json`, 'garbage');
  assert.throws(() => openVolume(l, { adopt: true }), (e: unknown) => e instanceof VolumeError && e.code === 'ERR_VOLUME_METADATA');
  assert.equal(fs.readFileSync(`${l.backingPath}.tandem.json`, 'utf8'), 'garbage');
});

test('store: write, read back, punch, zero and extents agree with the file', async () => {
  const l = loc();
  createVolume(l, 1 << 20);
  const v = openVolume(l, { syncIoBytesMax: 4096 });
  const b = v.backend;
  try {
    const data = Buffer.alloc(3 * 65536, 0xa5);
    await b.write(data, 65536); // async path (above syncIoBytesMax)
    await b.write(Buffer.from('small'), 3); // sync path
    const back = Buffer.alloc(data.length);
    await b.read(back, 65536);
    assert.deepEqual(back, data);
    await b.flush();
    assert.deepEqual(await b.extents(0, 1 << 20, 100), [
      { offset: 0, length: 4096, hole: false, zero: false },
      { offset: 4096, length: 61440, hole: true, zero: true },
      { offset: 65536, length: 196608, hole: false, zero: false },
      { offset: 262144, length: 786432, hole: true, zero: true },
    ]);
    assert.equal((await b.extents(0, 1 << 20, 2)).length, 2, 'extentsMax is honoured');
    await b.trim(65536, 65536);
    await b.zero(131072, 4096, { noHole: true, fast: true });
    const z = Buffer.alloc(65536 + 4096, 1);
    await b.read(z, 65536);
    assert.ok(z.every((x) => x === 0));
    const ext = await b.extents(65536, 65536 + 4096, 10);
    assert.equal(ext[0]?.hole, true, 'trim punched a hole');
    assert.equal(ext[0]?.length, 65536);
    assert.equal(ext[1]?.hole, false, 'NO_HOLE zeroing keeps the range allocated');
  } finally {
    await b.close();
  }
});

test('store: writes larger than a piece, on and off the event loop, land whole at any offset and length', async () => {
  const l = loc();
  createVolume(l, 8 << 20);
  const b = openVolume(l, { syncIoBytesMax: 200 * 1024 }).backend;
  const data = (n: number, seed: number): Buffer => {
    const m = Buffer.alloc(n);
    for (let i = 0; i < n; i++) m[i] = (i * 7 + seed * 13 + (i >> 11)) & 0xff;
    return m;
  };
  try {
    // synchronous (at most syncIoBytesMax) and on the thread pool (larger), neither a multiple of the piece
    const cases = [{ offset: 12_345, length: 150_001 }, { offset: (1 << 20) + 3, length: (1 << 20) + 4097 }, { offset: 5 << 20, length: 64 * 1024 }];
    for (const [i, c] of cases.entries()) await b.write(data(c.length, i), c.offset);
    const file = fs.readFileSync(l.backingPath);
    for (const [i, c] of cases.entries()) assert.deepEqual(file.subarray(c.offset, c.offset + c.length), data(c.length, i), `write ${c.offset}+${c.length}`);
    assert.ok(file.subarray(12_345 + 150_001, (1 << 20) + 3).every((x) => x === 0), 'nothing written between the writes');
  } finally {
    await b.close();
  }
});

test('native pwritePieces: refuses a piece of zero bytes and a source that is not a Buffer; a write error rejects with its errno', async () => {
  const file = path.join(tmp.dir, 'pieces.bin');
  const fd = fs.openSync(file, 'w+');
  try {
    assert.throws(() => native.pwritePieces(fd, Buffer.alloc(10), 0, 0), { name: 'RangeError' });
    assert.throws(() => native.pwritePieces(fd, 'text' as unknown as Buffer, 0, 4096), { name: 'TypeError' });
    await native.pwritePieces(fd, Buffer.from('abcdefghij'), 5, 3);
    assert.equal(fs.readFileSync(file).subarray(5).toString(), 'abcdefghij');
  } finally {
    fs.closeSync(fd);
  }
  const ro = fs.openSync(file, 'r');
  try {
    await assert.rejects(native.pwritePieces(ro, Buffer.alloc(10), 0, 4), { code: 'EBADF' });
  } finally {
    fs.closeSync(ro);
  }
});

test('store: an uncached write reads back as written, over what the cache held, whatever its size or alignment', async () => {
  const l = loc();
  createVolume(l, 16 << 20);
  const v = openVolume(l, { syncIoBytesMax: 4096 });
  const b = v.backend;
  const pattern = (n: number, seed: number): Buffer => {
    // a view 52 bytes into its memory, as a received frame's data is: never aligned for O_DIRECT
    const m = Buffer.alloc(n + 52);
    for (let i = 0; i < m.length; i++) m[i] = (i * 31 + seed) & 0xff;
    return m.subarray(52);
  };
  const readBack = async (offset: number, n: number): Promise<Buffer> => {
    const out = Buffer.alloc(n);
    await b.read(out, offset);
    return out;
  };
  try {
    assert.ok(b.writeUncached !== undefined);
    // cached first, so a write around the cache must not leave the old pages visible
    await b.write(pattern(1 << 20, 1), 1 << 20);
    assert.deepEqual(await readBack(1 << 20, 1 << 20), pattern(1 << 20, 1));
    assert.equal(await b.writeUncached(pattern(1 << 20, 2), 1 << 20), true, 'a large aligned write goes around the cache');
    assert.deepEqual(await readBack(1 << 20, 1 << 20), pattern(1 << 20, 2));
    // larger than one aligned staging buffer
    assert.equal(await b.writeUncached(pattern(6 << 20, 3), 8 << 20), true);
    assert.deepEqual(await readBack(8 << 20, 6 << 20), pattern(6 << 20, 3));
    // small, and unaligned: through the cache
    assert.equal(await b.writeUncached(pattern(4096, 4), 4 << 20), false, 'a small write goes through the cache');
    assert.deepEqual(await readBack(4 << 20, 4096), pattern(4096, 4));
    assert.equal(await b.writeUncached(pattern(70000, 5), (5 << 20) + 512), false, 'an unaligned write goes through the cache');
    assert.deepEqual(await readBack((5 << 20) + 512, 70000), pattern(70000, 5));
    await b.flush();
    const file = fs.readFileSync(l.backingPath);
    assert.deepEqual(file.subarray(1 << 20, 2 << 20), pattern(1 << 20, 2));
    assert.deepEqual(file.subarray(8 << 20, 14 << 20), pattern(6 << 20, 3));
  } finally {
    await b.close();
  }
});

test('a volume has one writer: a second open for writing is refused while the first holds it', async () => {
  const l = loc();
  createVolume(l, 1 << 20);
  const first = openVolume(l);
  try {
    assert.throws(() => openVolume(l), (e: unknown) => e instanceof VolumeError && e.code === 'ERR_VOLUME_BUSY' && /in use/.test(e.message));
    assert.throws(() => openVolume(l, { readOnly: true }), (e: unknown) => e instanceof VolumeError && e.code === 'ERR_VOLUME_BUSY');
  } finally {
    await first.backend.close();
  }
  const again = openVolume(l);
  await again.backend.close();
});
