import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { SyncMessageType, type SyncMessage } from '../../src/protocol/sync/messages';
import { forEachPiece, readFast, zeroHash } from '../../src/replication/read-fast';
import { establishLink, type SyncLink, type SyncLinkOptions } from '../../src/replication/sync-link';
import { createVolume, openVolume } from '../../src/storage/volume-store';
import { handshakePair, newCluster, waitFor } from '../helpers/memory-pair';
import { tempDir } from '../helpers/serve-process';

const tmp = tempDir('tandem-resync-io-');
after(() => tmp.cleanup());
const KiB = 1024;

test('readFast reports the holes it skipped; forEachPiece marks pieces wholly in them and zero-fills pieces partly in them', async () => {
  const l = { backingPath: path.join(tmp.dir, 'holes.img') };
  createVolume(l, 1024 * KiB);
  const v = openVolume(l);
  try {
    const data = Buffer.alloc(8 * KiB, 0x5a);
    await v.backend.write(data, 64 * KiB);
    await v.backend.write(data, 200 * KiB);
    // stale bytes, as in a reused buffer: none may show through
    const buf = Buffer.alloc(256 * KiB, 0xee);
    const holes = await readFast(v.backend, buf, 0, false);
    assert.deepEqual(holes, [{ start: 0, end: 64 * KiB }, { start: 72 * KiB, end: 200 * KiB }, { start: 208 * KiB, end: 256 * KiB }]);
    const pieces: Array<[number, number, boolean]> = [];
    forEachPiece(buf, holes, 16 * KiB, (start, end, known) => pieces.push([start, end, known]));
    assert.deepEqual(pieces.map(([s, , k]) => [s / KiB, k]), [
      [0, true], [16, true], [32, true], [48, true], [64, false], [80, true], [96, true], [112, true], [128, true], [144, true],
      [160, true], [176, true], [192, false], [208, true], [224, true], [240, true],
    ]);
    const expect = Buffer.alloc(256 * KiB);
    data.copy(expect, 64 * KiB);
    data.copy(expect, 200 * KiB);
    for (const [start, end, known] of pieces) if (!known) assert.deepEqual(buf.subarray(start, end), expect.subarray(start, end), `piece at ${start}`);
    // filled, everything is the volume's content
    const full = Buffer.alloc(256 * KiB, 0xee);
    await readFast(v.backend, full, 0);
    assert.deepEqual(full, expect);
  } finally {
    await v.backend.close();
  }
});

test('zeroHash is the SHA-256 of that many zero bytes', () => {
  for (const n of [4096, 512, 100]) assert.deepEqual(zeroHash(n), createHash('sha256').update(Buffer.alloc(n)).digest());
});

const cluster = newCluster();
const options = (name: string, peerName: string, role: 'initiator' | 'acceptor'): SyncLinkOptions => ({
  role, clusterId: cluster.id, clusterSecret: cluster.secret, nodeName: name, peerName, pingIntervalMs: 200, timeoutMs: 3000,
});

test('send(m, written) over TCP: once written runs, the sender may reuse its buffer and the peer still gets what was sent', async () => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<SyncLink>((resolve, reject) => {
    server.once('connection', (s) => { establishLink(s, options('beta', 'alpha', 'acceptor')).then(resolve, reject); });
  });
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => socket.once('connect', r));
  const [a, b] = await Promise.all([establishLink(socket, options('alpha', 'beta', 'initiator')), accepted]);
  try {
    const got: Buffer[] = [];
    b.start((m: SyncMessage) => { if (m.type === SyncMessageType.RESYNC_DATA) got.push(Buffer.from(m.data)); });
    a.start(() => undefined);
    const buf = Buffer.alloc(4 << 20);
    const sent: Buffer[] = [];
    for (let round = 0; round < 8; round++) {
      buf.fill(round + 1);
      sent.push(Buffer.from(buf));
      await new Promise<void>((written) => {
        assert.equal(a.send({ type: SyncMessageType.RESYNC_DATA, volumeId: Buffer.alloc(16), requestId: BigInt(round), offset: 0, data: buf }, written), true);
      });
      // reused at once, as a resync source reuses its read buffers
    }
    await waitFor(() => got.length === sent.length, 'every message');
    assert.deepEqual(got, sent);
  } finally {
    a.close('done');
    b.close('done');
    server.close();
  }
});

test('send(m, written) over an in-memory pair never calls written: the reader holds the very buffers sent', async () => {
  const { la, lb } = await handshakePair({ name: 'alpha', linkOptions: (r) => options('alpha', 'beta', r) }, { name: 'beta', linkOptions: (r) => options('beta', 'alpha', r) });
  try {
    let got = 0;
    lb.start(() => { got++; });
    la.start(() => undefined);
    let written = false;
    assert.equal(la.send({ type: SyncMessageType.RESYNC_DATA, volumeId: Buffer.alloc(16), requestId: 1n, offset: 0, data: Buffer.alloc(4096, 1) }, () => { written = true; }), true);
    await waitFor(() => got === 1, 'the message');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(written, false);
    la.close('done');
    assert.equal(la.send({ type: SyncMessageType.RESYNC_ZERO, volumeId: Buffer.alloc(16), requestId: 2n, offset: 0, length: 4096 }, () => { written = true; }), false);
    assert.equal(written, false);
  } finally {
    la.close('done');
    lb.close('done');
  }
});
