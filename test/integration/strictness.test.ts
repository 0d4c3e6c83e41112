// `tandem serve` against a raw-socket client: every answer of the NBD server
// checked byte for byte against the protocol document (doc/proto.md of the NBD
// project), including the answers to clients that break the protocol.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import * as C from '../../src/protocol/nbd/constants';
import {
  RawNbd, encodeOption, encodeRequest, goData, lstr, metaData, parseBlockStatus, parseErrorChunk, parseOffsetData,
  parseOffsetHole, u16, u32, type Chunk, type GoOptions, type Reply, type Session,
} from '../helpers/raw-nbd';
import { startServe, tempDir, type ServeProcess } from '../helpers/serve-process';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 256 * MiB;

// Regions of the main export, one per test that depends on its contents.
const R_ABANDONED = 0; // a client disconnects in the middle of a write here
const R_GENERAL = 2 * MiB;
const R_HOLEY = 8 * MiB;
const R_ZEROES = 12 * MiB;
const R_TRIM = 16 * MiB;
const R_FAST_ZERO = 18 * MiB;
const R_MANY = 20 * MiB;
const R_FLOOD = 24 * MiB;
const R_BIG_READ = 32 * MiB;
const R_OVERSIZE = 128 * MiB;

// a writable file export: everything but READ_ONLY, ROTATIONAL and RESIZE (DF only with structured replies)
const WRITABLE_FLAGS = C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_TRIM |
  C.NBD_FLAG_SEND_WRITE_ZEROES | C.NBD_FLAG_SEND_FAST_ZERO | C.NBD_FLAG_SEND_CACHE | C.NBD_FLAG_CAN_MULTI_CONN;

let tmp: { dir: string; cleanup: () => void } | undefined;
let srv: ServeProcess | undefined;
const servers = new Set<ServeProcess>();
const clients = new Set<RawNbd>();

function server(): ServeProcess {
  assert.ok(srv, 'main server is running');
  return srv;
}

async function serve(args: string[]): Promise<ServeProcess> {
  const s = await startServe(args);
  servers.add(s);
  return s;
}

async function stopServer(s: ServeProcess): Promise<void> {
  servers.delete(s);
  await s.stop();
}

before(async () => {
  tmp = tempDir('tandem-strict-');
  srv = await serve(['--file', path.join(tmp.dir, 'disk.img'), '--size', '256M']);
});

afterEach(() => {
  for (const c of clients) c.destroy();
  clients.clear();
});

after(async () => {
  for (const c of clients) c.destroy();
  for (const s of [...servers]) await stopServer(s);
  tmp?.cleanup();
});

async function connect(s: ServeProcess = server()): Promise<RawNbd> {
  const c = await RawNbd.connect(s.host, s.port);
  clients.add(c);
  return c;
}

/** A connection through the handshake into transmission. */
async function open(o: GoOptions = {}, s: ServeProcess = server()): Promise<RawNbd & { session: Session }> {
  const { c, session } = await RawNbd.open(s.host, s.port, o);
  clients.add(c);
  return Object.assign(c, { session });
}

/** Connected, greeting read, client flags sent: ready for options. */
async function negotiating(clientFlags = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES, s: ServeProcess = server()): Promise<RawNbd> {
  const c = await connect(s);
  await c.readGreeting();
  await c.sendClientFlags(clientFlags);
  return c;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** The 20-byte option reply header followed by its data, as the server must send it. */
function optionReplyBytes(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeBigUInt64BE(C.NBD_OPT_REPLY_MAGIC, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(type >>> 0, 12);
  h.writeUInt32BE(data.length, 16);
  return Buffer.concat([h, data]);
}

function hex(n: number): string { return `0x${(n >>> 0).toString(16)}`; }

let nextCookie = 1;
function cookie(): bigint {
  // both halves of the 64-bit cookie in use, so a server that truncates it is caught
  return (BigInt(nextCookie++) << 32n) | 0xc0de0000n | BigInt(nextCookie & 0xffff);
}

/** Sends one request and reads its whole reply (one simple reply, or chunks up to DONE). */
async function call(c: RawNbd, r: { type: number; flags?: number; offset?: number; length?: number; payload?: Buffer }, readLength = 0): Promise<{ cookie: bigint; replies: Reply[] }> {
  const k = cookie();
  await c.request({ ...r, cookie: k });
  const first = await c.readReply(readLength);
  const replies: Reply[] = [first];
  if (first.kind === 'chunk' && !first.done) replies.push(...await c.readStructuredReply());
  for (const x of replies) assert.equal(x.cookie, k, `reply cookie ${x.cookie.toString(16)} is the request's ${k.toString(16)}`);
  return { cookie: k, replies };
}

/** Asserts a simple reply with this errno and no data. */
function assertSimpleError(replies: Reply[], errno: number, what = ''): void {
  assert.equal(replies.length, 1);
  const r = replies[0] as Reply;
  assert.equal(r.kind, 'simple', 'a simple reply');
  if (r.kind === 'simple') {
    assert.equal(r.error, errno, `${what} error ${r.error}, expected ${errno}`);
    assert.equal(r.data.length, 0);
  }
}

/** Asserts a single NBD_REPLY_TYPE_ERROR chunk with DONE and this errno. */
function assertErrorChunk(replies: Reply[], errno: number): void {
  assert.equal(replies.length, 1, 'one chunk');
  const r = replies[0] as Reply;
  assert.equal(r.kind, 'chunk', 'a structured reply (never a simple one for READ)');
  if (r.kind === 'chunk') {
    assert.equal(r.type, C.NBD_REPLY_TYPE_ERROR);
    assert.equal(r.flags, C.NBD_REPLY_FLAG_DONE);
    assert.equal(parseErrorChunk(r).error, errno, `error ${parseErrorChunk(r).error} (${parseErrorChunk(r).message}), expected ${errno}`);
  }
}

/** Asserts success: a simple reply with error 0, or structured chunks without an error chunk. */
function assertOk(replies: Reply[]): void {
  for (const r of replies) {
    if (r.kind === 'simple') assert.equal(r.error, 0, `simple reply error ${r.error}`);
    else assert.equal(r.type & 0x8000, 0, `error chunk: ${r.type & 0x8000 ? JSON.stringify(parseErrorChunk(r)) : ''}`);
  }
}

/** 0 for a successful reply, else the error it carries. */
function errnoOf(replies: Reply[]): number {
  for (const r of replies) {
    if (r.kind === 'simple' && r.error !== 0) return r.error;
    if (r.kind === 'chunk' && (r.type & 0x8000) !== 0) return parseErrorChunk(r).error;
  }
  return 0;
}

/** A good request right after a bad one: proves the connection is still in sync. */
async function assertInSync(c: RawNbd, structured = false): Promise<void> {
  const { replies } = await call(c, { type: C.NBD_CMD_READ, offset: R_GENERAL, length: 512 }, structured ? 0 : 512);
  assertOk(replies);
  if (structured) {
    const data = replies.filter((r): r is Chunk => r.kind === 'chunk' && r.type === C.NBD_REPLY_TYPE_OFFSET_DATA);
    assert.equal(data.reduce((s, r) => s + parseOffsetData(r).data.length, 0), 512);
  } else {
    assert.equal((replies[0] as { data: Buffer }).data.length, 512);
  }
}

async function writeOk(c: RawNbd, offset: number, data: Buffer): Promise<void> {
  assertOk((await call(c, { type: C.NBD_CMD_WRITE, offset, payload: data })).replies);
}

/** READ with simple replies. */
async function readSimple(c: RawNbd, offset: number, length: number): Promise<Buffer> {
  const { replies } = await call(c, { type: C.NBD_CMD_READ, offset, length }, length);
  assertOk(replies);
  return (replies[0] as { data: Buffer }).data;
}

/** BLOCK_STATUS descriptors for base:allocation. */
async function blockStatus(c: RawNbd & { session: Session }, offset: number, length: number, flags = 0): Promise<Array<{ length: number; flags: number }>> {
  const { replies } = await call(c, { type: C.NBD_CMD_BLOCK_STATUS, flags, offset, length });
  assertOk(replies);
  const chunks = replies.filter((r): r is Chunk => r.kind === 'chunk' && r.type === C.NBD_REPLY_TYPE_BLOCK_STATUS);
  assert.equal(chunks.length, 1, 'one BLOCK_STATUS chunk for the one selected context');
  const bs = parseBlockStatus(chunks[0] as Chunk);
  assert.equal(bs.contextId, c.session.contextId, 'the chunk carries the id SET_META_CONTEXT gave');
  return bs.descriptors;
}

/** Flags of the descriptors covering [0, length) of a BLOCK_STATUS answer. */
function flagsCovering(descriptors: Array<{ length: number; flags: number }>, length: number): number[] {
  const out: number[] = [];
  let at = 0;
  for (const d of descriptors) {
    if (at >= length) break;
    out.push(d.flags);
    at += d.length;
  }
  assert.ok(at >= length, `descriptors cover ${at} of ${length} bytes`);
  return out;
}

/** VmRSS of a process, in bytes. */
function processRss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) * 1024;
}

/** Bytes waiting unread in the server's receive queue for the connection from clientPort (Linux /proc/net/tcp). */
function serverRecvQueue(serverPort: number, clientPort: number): number {
  const hexPort = (p: number): string => p.toString(16).toUpperCase().padStart(4, '0');
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    if ((f[1] as string).endsWith(`:${hexPort(serverPort)}`) && (f[2] as string).endsWith(`:${hexPort(clientPort)}`)) {
      return parseInt((f[4] as string).split(':')[1] as string, 16);
    }
  }
  throw new Error(`no socket ${serverPort} <- ${clientPort} in /proc/net/tcp`);
}

// ---------------------------------------------------------------------------

describe('handshake', () => {
  test('the greeting is exactly 18 bytes: NBDMAGIC, IHAVEOPT, handshake flags FIXED_NEWSTYLE|NO_ZEROES', async () => {
    const c = await connect();
    const g = await c.readGreeting();
    assert.equal(g.raw.toString('hex'), '4e42444d41474943' + '49484156454f5054' + '0003');
    assert.equal(g.magic, C.NBDMAGIC);
    assert.equal(g.ihaveopt, C.IHAVEOPT);
    assert.equal(g.flags, C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
    assert.ok(await c.quietFor(100), 'nothing more until the client answers');
  });

  test('client flags with an unknown bit (0x4) make the server drop the connection without a word', async () => {
    const c = await negotiating(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES | 0x4);
    assert.equal((await c.expectClose()).length, 0);
  });

  test('a client without NBD_FLAG_C_FIXED_NEWSTYLE (flags 0) is dropped without a word', async () => {
    const c = await negotiating(0);
    assert.equal((await c.expectClose()).length, 0);
  });

  test('garbage where the IHAVEOPT option magic belongs makes the server close', async () => {
    const c = await negotiating();
    await c.send(Buffer.from('NOTMAGIC\0\0\0\x07\0\0\0\0', 'latin1'));
    assert.equal((await c.expectClose()).length, 0);
  });

  test('an unknown option (999) gets NBD_REP_ERR_UNSUP and the handshake goes on to a working GO', async () => {
    const c = await negotiating();
    await c.sendOption(999, Buffer.from('some data'));
    const r = await c.readOptionReply();
    assert.equal(r.magic, C.NBD_OPT_REPLY_MAGIC);
    assert.equal(r.option, 999);
    assert.equal(hex(r.type), hex(C.NBD_REP_ERR_UNSUP));
    const s = await c.go();
    assert.equal(s.size, SIZE);
    await assertInSync(c);
  });

  test('NBD_OPT_LIST with data gets NBD_REP_ERR_INVALID; without data it lists the default export, then ACK', async () => {
    const c = await negotiating();
    const bad = await c.option(C.NBD_OPT_LIST, Buffer.from('x'));
    assert.equal(bad.length, 1);
    assert.equal(hex((bad[0] as { type: number }).type), hex(C.NBD_REP_ERR_INVALID));
    const good = await c.option(C.NBD_OPT_LIST);
    assert.deepEqual(good.map((r) => r.type), [C.NBD_REP_SERVER, C.NBD_REP_ACK]);
    const server0 = (good[0] as { data: Buffer }).data;
    assert.equal(server0.readUInt32BE(0), 0, 'the export name "" has length 0');
    assert.equal((good[1] as { data: Buffer }).data.length, 0);
  });

  test('option data of 65 KiB (over the 64 KiB limit) is skipped with NBD_REP_ERR_TOO_BIG and the connection stays usable', async () => {
    const c = await negotiating();
    const big = Buffer.concat([goData(''), Buffer.alloc(65 * KiB - goData('').length, 0x41)]);
    await c.send(encodeOption(C.NBD_OPT_GO, big));
    const r = await c.readOptionReply();
    assert.equal(r.option, C.NBD_OPT_GO);
    assert.equal(hex(r.type), hex(C.NBD_REP_ERR_TOO_BIG));
    assert.ok(await c.quietFor(50), 'one reply for the skipped option');
    const s = await c.go();
    assert.equal(s.size, SIZE);
    await assertInSync(c);
  });

  test('GO for an unknown export gets NBD_REP_ERR_UNKNOWN (no NBD_REP_INFO) and a GO for the default export still works', async () => {
    const c = await negotiating();
    const r = await c.option(C.NBD_OPT_GO, goData('no-such-export'));
    assert.equal(r.length, 1, 'no NBD_REP_INFO before the error');
    assert.equal(hex((r[0] as { type: number }).type), hex(C.NBD_REP_ERR_UNKNOWN));
    await c.go();
    await assertInSync(c);
  });

  test('a GO whose name length runs past the option data gets NBD_REP_ERR_INVALID', async () => {
    const c = await negotiating();
    const data = Buffer.concat([u32(100), Buffer.from('abc'), u16(0)]);
    const r = await c.option(C.NBD_OPT_GO, data);
    assert.deepEqual(r.map((x) => hex(x.type)), [hex(C.NBD_REP_ERR_INVALID)]);
    await c.go();
    await assertInSync(c);
  });

  test('NBD_OPT_EXPORT_NAME without NO_ZEROES answers 8 bytes size + 2 bytes flags + 124 zero bytes, then transmission', async () => {
    const c = await negotiating(C.NBD_FLAG_C_FIXED_NEWSTYLE);
    await c.sendOption(C.NBD_OPT_EXPORT_NAME);
    const reply = await c.read(8 + 2 + 124);
    assert.equal(Number(reply.readBigUInt64BE(0)), SIZE);
    assert.equal(hex(reply.readUInt16BE(8) & ~C.NBD_FLAG_SEND_DF), hex(WRITABLE_FLAGS));
    assert.ok(reply.subarray(10).equals(Buffer.alloc(124)), '124 zero bytes');
    assert.ok(await c.quietFor(50), 'nothing after the zeroes');
    await assertInSync(c);
  });

  test('NBD_OPT_EXPORT_NAME with NO_ZEROES answers exactly 10 bytes', async () => {
    const c = await negotiating(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
    await c.sendOption(C.NBD_OPT_EXPORT_NAME);
    const reply = await c.read(10);
    assert.equal(Number(reply.readBigUInt64BE(0)), SIZE);
    assert.equal(hex(reply.readUInt16BE(8) & ~C.NBD_FLAG_SEND_DF), hex(WRITABLE_FLAGS));
    assert.ok(await c.quietFor(50), 'no zeroes follow');
    assert.equal(c.available, 0);
    // the next bytes are the reply to this request: no stray zeroes in between
    await assertInSync(c);
  });

  test('NBD_OPT_GO without NO_ZEROES sends no zero padding after its ACK', async () => {
    const c = await negotiating(C.NBD_FLAG_C_FIXED_NEWSTYLE);
    await c.go();
    assert.ok(await c.quietFor(50), 'nothing after the ACK');
    assert.equal(c.available, 0);
    await assertInSync(c);
  });

  test('the transmission flags carry NBD_FLAG_SEND_DF only when structured replies were negotiated', async () => {
    // proto.md, transmission flags: SEND_DF "MUST leave this flag clear if structured replies have not been negotiated"
    const viaExportName = await negotiating(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
    await viaExportName.sendOption(C.NBD_OPT_EXPORT_NAME);
    assert.equal(hex((await viaExportName.read(10)).readUInt16BE(8)), hex(WRITABLE_FLAGS), 'EXPORT_NAME without structured replies');
    const simple = await open();
    assert.equal(hex(simple.session.flags), hex(WRITABLE_FLAGS), 'GO without structured replies');
    const structured = await open({ structured: true });
    assert.equal(hex(structured.session.flags), hex(WRITABLE_FLAGS | C.NBD_FLAG_SEND_DF), 'GO after STRUCTURED_REPLY');
  });

  test('NBD_OPT_ABORT (with or without data) is answered with NBD_REP_ACK (20 bytes), then the server closes', async () => {
    for (const data of [Buffer.alloc(0), Buffer.from('ignored')]) {
      const c = await negotiating();
      await c.sendOption(C.NBD_OPT_ABORT, data);
      const rest = await c.expectClose();
      assert.equal(rest.toString('hex'), optionReplyBytes(C.NBD_OPT_ABORT, C.NBD_REP_ACK).toString('hex'), `data ${JSON.stringify(data.toString())}`);
    }
  });

  test('SET_META_CONTEXT before STRUCTURED_REPLY gets NBD_REP_ERR_INVALID', async () => {
    const c = await negotiating();
    const r = await c.option(C.NBD_OPT_SET_META_CONTEXT, metaData('', ['base:allocation']));
    assert.deepEqual(r.map((x) => hex(x.type)), [hex(C.NBD_REP_ERR_INVALID)]);
  });

  test('LIST_META_CONTEXT with no queries, and with the "base:" wildcard, lists base:allocation (id 0) then ACK', async () => {
    const c = await negotiating();
    await c.option(C.NBD_OPT_STRUCTURED_REPLY);
    const expected = optionReplyBytes(C.NBD_OPT_LIST_META_CONTEXT, C.NBD_REP_META_CONTEXT, Buffer.concat([u32(0), Buffer.from('base:allocation')]));
    const ack = optionReplyBytes(C.NBD_OPT_LIST_META_CONTEXT, C.NBD_REP_ACK);
    for (const queries of [[], ['base:']]) {
      await c.sendOption(C.NBD_OPT_LIST_META_CONTEXT, metaData('', queries));
      const got = await c.read(expected.length + ack.length);
      assert.equal(got.toString('hex'), Buffer.concat([expected, ack]).toString('hex'), `queries ${JSON.stringify(queries)}`);
    }
  });

  test('SET_META_CONTEXT base:allocation returns a context id that BLOCK_STATUS then uses', async () => {
    const c = await negotiating();
    await c.option(C.NBD_OPT_STRUCTURED_REPLY);
    const r = await c.option(C.NBD_OPT_SET_META_CONTEXT, metaData('', ['base:allocation']));
    assert.deepEqual(r.map((x) => x.type), [C.NBD_REP_META_CONTEXT, C.NBD_REP_ACK]);
    const ctx = (r[0] as { data: Buffer }).data;
    assert.equal(ctx.subarray(4).toString(), 'base:allocation');
    const id = ctx.readUInt32BE(0);
    const session = await c.go();
    const { replies } = await call(c, { type: C.NBD_CMD_BLOCK_STATUS, offset: R_GENERAL, length: 4096 });
    assertOk(replies);
    assert.equal(parseBlockStatus(replies[0] as Chunk).contextId, id);
    assert.equal(session.size, SIZE);
  });

  test('an unknown namespace (x-unknown:thing) is ignored by LIST and SET: only ACK, and BLOCK_STATUS is then refused', async () => {
    const c = await negotiating();
    await c.option(C.NBD_OPT_STRUCTURED_REPLY);
    const list = await c.option(C.NBD_OPT_LIST_META_CONTEXT, metaData('', ['x-unknown:thing']));
    assert.deepEqual(list.map((x) => x.type), [C.NBD_REP_ACK]);
    // "base:" MUST be ignored by SET, as must an unknown leaf in base:
    const set = await c.option(C.NBD_OPT_SET_META_CONTEXT, metaData('', ['x-unknown:thing', 'base:', 'base:nothing']));
    assert.deepEqual(set.map((x) => x.type), [C.NBD_REP_ACK]);
    await c.go();
    const { replies } = await call(c, { type: C.NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 });
    assertErrorChunk(replies, C.NBD_EINVAL);
  });
});

// ---------------------------------------------------------------------------

describe('transmission', () => {
  test('beyond the end: READ and TRIM get EINVAL, WRITE and WRITE_ZEROES get ENOSPC, each followed by a good request', async () => {
    const c = await open();
    const cases: Array<[string, number, number, Buffer | undefined, number]> = [
      ['READ', C.NBD_CMD_READ, 8192, undefined, C.NBD_EINVAL],
      ['TRIM', C.NBD_CMD_TRIM, 8192, undefined, C.NBD_EINVAL],
      ['WRITE', C.NBD_CMD_WRITE, 8192, Buffer.alloc(8192, 0x5a), C.NBD_ENOSPC],
      ['WRITE_ZEROES', C.NBD_CMD_WRITE_ZEROES, 8192, undefined, C.NBD_ENOSPC],
    ];
    for (const [what, type, length, payload, errno] of cases) {
      const r = await call(c, payload === undefined ? { type, offset: SIZE - 4096, length } : { type, offset: SIZE - 4096, payload });
      assertSimpleError(r.replies, errno, what);
      await assertInSync(c);
    }
    // an offset past the end, and one past 2^63
    assertSimpleError((await call(c, { type: C.NBD_CMD_READ, offset: SIZE + 4096, length: 1 })).replies, C.NBD_EINVAL);
    assertSimpleError((await call(c, { type: C.NBD_CMD_READ, offset: Number.MAX_SAFE_INTEGER, length: 4096 })).replies, C.NBD_EINVAL);
    const huge = encodeRequest({ type: C.NBD_CMD_READ, cookie: 0xabcdn, offset: 0, length: 1 });
    huge.writeBigUInt64BE(0xffffffffffffffffn, 16);
    await c.send(huge);
    const r = await c.readSimpleReply();
    assert.equal(r.cookie, 0xabcdn);
    assert.equal(r.error, C.NBD_EINVAL, 'offset 2^64 - 1');
    await assertInSync(c);
    // the rejected write left the last 4 KiB untouched
    assert.ok((await readSimple(c, SIZE - 4096, 4096)).equals(Buffer.alloc(4096)));
  });

  test('beyond the end with structured replies: READ and BLOCK_STATUS get EINVAL error chunks (never a simple reply for READ)', async () => {
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    assertErrorChunk((await call(c, { type: C.NBD_CMD_READ, offset: SIZE - 4096, length: 8192 })).replies, C.NBD_EINVAL);
    await assertInSync(c, true);
    assertErrorChunk((await call(c, { type: C.NBD_CMD_BLOCK_STATUS, offset: SIZE - 4096, length: 8192 })).replies, C.NBD_EINVAL);
    await assertInSync(c, true);
    assert.ok((await blockStatus(c, SIZE - 4096, 4096)).length >= 1, 'a good BLOCK_STATUS after the bad one');
  });

  test('a WRITE of 64 MiB + 1 (over the maximum payload) gets EINVAL after its payload is skipped, writes nothing, and a good request follows', { timeout: 60_000 }, async () => {
    const c = await open();
    const length = 64 * MiB + 1;
    const k = cookie();
    const payload = Buffer.alloc(length, 0xab);
    await c.request({ type: C.NBD_CMD_WRITE, cookie: k, offset: R_OVERSIZE, length, payload });
    const r = await c.readSimpleReply(0, 30_000);
    assert.equal(r.cookie, k);
    assert.equal(r.error, C.NBD_EINVAL);
    await assertInSync(c);
    assert.ok((await readSimple(c, R_OVERSIZE, 64 * KiB)).equals(Buffer.alloc(64 * KiB)), 'nothing of the payload was written');
  });

  test('an unknown command (99) gets EINVAL and the next request works', async () => {
    const c = await open();
    assertSimpleError((await call(c, { type: 99, offset: 0, length: 4096 })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    const s = await open({ structured: true });
    assertErrorChunk((await call(s, { type: 99, offset: 0, length: 4096 })).replies, C.NBD_EINVAL);
    await assertInSync(s, true);
  });

  test('unknown flag bits get EINVAL: bit 15 on READ, bit 5 on FLUSH, NO_HOLE on WRITE, REQ_ONE on READ', async () => {
    const c = await open();
    assertSimpleError((await call(c, { type: C.NBD_CMD_READ, flags: 1 << 15, offset: 0, length: 512 })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    assertSimpleError((await call(c, { type: C.NBD_CMD_FLUSH, flags: 1 << 5 })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    assertSimpleError((await call(c, { type: C.NBD_CMD_WRITE, flags: C.NBD_CMD_FLAG_NO_HOLE, offset: R_GENERAL, payload: Buffer.alloc(512, 1) })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    assertSimpleError((await call(c, { type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_REQ_ONE, offset: 0, length: 512 })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    // with structured replies even this early EINVAL for a READ is a structured error chunk
    const s = await open({ structured: true });
    assertErrorChunk((await call(s, { type: C.NBD_CMD_READ, flags: 1 << 15, offset: 0, length: 512 })).replies, C.NBD_EINVAL);
    await assertInSync(s, true);
  });

  test('DF where not valid (WRITE) or not negotiated (READ without structured replies) gets EINVAL', async () => {
    const c = await open();
    assertSimpleError((await call(c, { type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_DF, offset: 0, length: 512 })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    assertSimpleError((await call(c, { type: C.NBD_CMD_WRITE, flags: C.NBD_CMD_FLAG_DF, offset: R_GENERAL, payload: Buffer.alloc(512) })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    const s = await open({ structured: true });
    assertErrorChunk((await call(s, { type: C.NBD_CMD_WRITE, flags: C.NBD_CMD_FLAG_DF, offset: R_GENERAL, payload: Buffer.alloc(512) })).replies, C.NBD_EINVAL);
    await assertInSync(s, true);
  });

  test('FUA is accepted on every command when NBD_FLAG_SEND_FUA is advertised (READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS)', async () => {
    // proto.md, command flags: FUA "is valid for all commands, provided NBD_FLAG_SEND_FUA has been
    // negotiated, in which case the server MUST accept all commands with this bit set (even by ignoring the bit)"
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    assert.notEqual(c.session.flags & C.NBD_FLAG_SEND_FUA, 0);
    const fua = C.NBD_CMD_FLAG_FUA;
    const at = R_GENERAL + 4096;
    const errors: Record<string, number> = {
      WRITE: errnoOf((await call(c, { type: C.NBD_CMD_WRITE, flags: fua, offset: at, payload: Buffer.alloc(512, 7) })).replies),
      READ: errnoOf((await call(c, { type: C.NBD_CMD_READ, flags: fua, offset: at, length: 512 })).replies),
      FLUSH: errnoOf((await call(c, { type: C.NBD_CMD_FLUSH, flags: fua })).replies),
      TRIM: errnoOf((await call(c, { type: C.NBD_CMD_TRIM, flags: fua, offset: at + 4096, length: 4096 })).replies),
      WRITE_ZEROES: errnoOf((await call(c, { type: C.NBD_CMD_WRITE_ZEROES, flags: fua, offset: at + 4096, length: 4096 })).replies),
      CACHE: errnoOf((await call(c, { type: C.NBD_CMD_CACHE, flags: fua, offset: at, length: 4096 })).replies),
      BLOCK_STATUS: errnoOf((await call(c, { type: C.NBD_CMD_BLOCK_STATUS, flags: fua, offset: at, length: 4096 })).replies),
    };
    assert.deepEqual(errors, { WRITE: 0, READ: 0, FLUSH: 0, TRIM: 0, WRITE_ZEROES: 0, CACHE: 0, BLOCK_STATUS: 0 }, 'errno per command with FUA set');
  });

  test('BLOCK_STATUS without a negotiated metadata context gets EINVAL (simple and structured sessions)', async () => {
    const c = await open();
    assertSimpleError((await call(c, { type: C.NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).replies, C.NBD_EINVAL);
    await assertInSync(c);
    const s = await open({ structured: true });
    assertErrorChunk((await call(s, { type: C.NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).replies, C.NBD_EINVAL);
    await assertInSync(s, true);
  });

  test('a --read-only export: READ_ONLY flag, WRITE/TRIM/WRITE_ZEROES get EPERM, FUA is not offered (EINVAL), READ works', async () => {
    const dir = tempDir('tandem-ro-');
    const ro = await serve(['--file', path.join(dir.dir, 'ro.img'), '--size', '1M', '--read-only']);
    try {
      const c = await open({}, ro);
      const f = c.session.flags;
      assert.notEqual(f & C.NBD_FLAG_READ_ONLY, 0, 'READ_ONLY');
      assert.equal(f & (C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_WRITE_ZEROES | C.NBD_FLAG_SEND_FAST_ZERO), 0);
      assertSimpleError((await call(c, { type: C.NBD_CMD_WRITE, offset: 0, payload: Buffer.alloc(4096, 9) })).replies, C.NBD_EPERM);
      assertSimpleError((await call(c, { type: C.NBD_CMD_TRIM, offset: 0, length: 4096 })).replies, C.NBD_EPERM);
      assertSimpleError((await call(c, { type: C.NBD_CMD_WRITE_ZEROES, offset: 0, length: 4096 })).replies, C.NBD_EPERM);
      assertSimpleError((await call(c, { type: C.NBD_CMD_WRITE, flags: C.NBD_CMD_FLAG_FUA, offset: 0, payload: Buffer.alloc(512) })).replies, C.NBD_EINVAL);
      assert.ok((await readSimple(c, 0, 4096)).equals(Buffer.alloc(4096)), 'still zero');
    } finally {
      await stopServer(ro);
      dir.cleanup();
    }
  });

  test('a zero-length READ is answered without disconnecting, and with structured replies never with an empty OFFSET_DATA chunk', async () => {
    const c = await open();
    const r = await call(c, { type: C.NBD_CMD_READ, offset: R_GENERAL, length: 0 });
    assert.equal(r.replies.length, 1);
    assert.equal(r.replies[0]?.kind, 'simple');
    await assertInSync(c);
    // proto.md: an OFFSET_DATA chunk's length MUST be at least 9, and each content chunk describes at least one byte
    const s = await open({ structured: true });
    const { replies } = await call(s, { type: C.NBD_CMD_READ, offset: R_GENERAL, length: 0 });
    for (const x of replies as Chunk[]) {
      assert.notEqual(x.type, C.NBD_REPLY_TYPE_OFFSET_HOLE, 'no hole chunk for zero bytes');
      if (x.type === C.NBD_REPLY_TYPE_OFFSET_DATA) assert.ok(x.payload.length >= 9, `OFFSET_DATA chunk of length ${x.payload.length}`);
    }
    await assertInSync(s, true);
  });

  test('NBD_CMD_DISC right after a pipelined WRITE: the WRITE is answered and done, then the server closes', async () => {
    const c = await open();
    const data = pattern(4096, 42);
    await c.send(Buffer.concat([
      encodeRequest({ type: C.NBD_CMD_WRITE, cookie: 77, offset: R_GENERAL + 16384, payload: data }),
      encodeRequest({ type: C.NBD_CMD_DISC, cookie: 78 }),
    ]));
    const rest = await c.expectClose();
    assert.equal(rest.length, 16, 'one simple reply, none for DISC');
    assert.equal(rest.readUInt32BE(0), C.NBD_SIMPLE_REPLY_MAGIC);
    assert.equal(rest.readUInt32BE(4), 0);
    assert.equal(rest.readBigUInt64BE(8), 77n);
    assert.ok((await readSimple(await open(), R_GENERAL + 16384, 4096)).equals(data));
  });

  test('a request with a bad magic makes the server close the connection; other clients are unaffected', async () => {
    const c = await open();
    const bad = encodeRequest({ type: C.NBD_CMD_READ, cookie: 1, offset: 0, length: 512 });
    bad.writeUInt32BE(0x12560953, 0); // the historic request magic
    await c.send(bad);
    assert.equal((await c.expectClose()).length, 0, 'no reply, just the close');
    await assertInSync(await open());
  });

  test('clients that vanish in the middle of 64 MiB WRITE payloads do not hurt the server: a new client still writes and reads, and the log shows each close', { timeout: 60_000 }, async () => {
    // a server of its own: if abandoned writes leaked anything, the main server would suffer for the rest of the file
    const dir = tempDir('tandem-abandon-');
    const s = await serve(['--file', path.join(dir.dir, 'disk.img'), '--size', '128M']);
    try {
      // more abandoned 64 MiB writes than the server's 1 GiB in-flight budget holds
      const ports: number[] = [];
      for (let i = 0; i < 17; i++) {
        const c = await open({}, s);
        await c.request({ type: C.NBD_CMD_WRITE, cookie: i, offset: R_ABANDONED, length: 64 * MiB, payload: pattern(1024, i) });
        ports.push(c.socket.localPort as number);
        c.destroy();
        clients.delete(c);
      }
      const c = await open({}, s);
      const data = pattern(4096, 99);
      const k = cookie();
      await c.request({ type: C.NBD_CMD_WRITE, cookie: k, offset: R_GENERAL, payload: data });
      const w = await c.readSimpleReply(0, 5_000);
      assert.equal(w.cookie, k);
      assert.equal(w.error, 0);
      assert.ok((await readSimple(c, R_GENERAL, 4096)).equals(data));
      const deadline = Date.now() + 5_000;
      const closedAll = (): boolean => ports.every((p) => s.log().includes(`connection closed peer=127.0.0.1:${p} `));
      while (!closedAll() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const p of ports) {
        assert.match(s.log(), new RegExp(`connection closed peer=127\\.0\\.0\\.1:${p} export="" reason="client disconnected"`));
      }
    } finally {
      await stopServer(s);
      dir.cleanup();
    }
  });
});

// ---------------------------------------------------------------------------

describe('structured replies', () => {
  // R_HOLEY: 32 KiB of data, then (never written) a hole
  const DATA = 32 * KiB;
  const READ = 128 * KiB;
  const holey = pattern(DATA, 3);

  before(async () => {
    const c = await open();
    await writeOk(c, R_HOLEY, holey);
    assertOk((await call(c, { type: C.NBD_CMD_FLUSH })).replies);
    c.destroy();
    clients.delete(c);
  });

  test('a 128 KiB READ of 32 KiB data then a hole is OFFSET_DATA + OFFSET_HOLE chunks covering exactly the range, DONE on the last only', async () => {
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    const { replies } = await call(c, { type: C.NBD_CMD_READ, offset: R_HOLEY, length: READ });
    const chunks = replies as Chunk[];
    assert.deepEqual(chunks.map((x) => x.done), [...chunks.slice(1).map(() => false), true], 'DONE on the last chunk only');
    const types = new Set(chunks.map((x) => x.type));
    assert.ok(types.has(C.NBD_REPLY_TYPE_OFFSET_DATA) && types.has(C.NBD_REPLY_TYPE_OFFSET_HOLE), `chunk types ${[...types].join(',')}`);
    const image = Buffer.alloc(READ, 0xee);
    const pieces: Array<[number, number]> = [];
    for (const x of chunks) {
      if (x.type === C.NBD_REPLY_TYPE_OFFSET_DATA) {
        const d = parseOffsetData(x);
        assert.ok(d.data.length > 0);
        pieces.push([d.offset, d.data.length]);
        d.data.copy(image, d.offset - R_HOLEY);
      } else if (x.type === C.NBD_REPLY_TYPE_OFFSET_HOLE) {
        assert.equal(x.payload.length, 12);
        const h = parseOffsetHole(x);
        assert.ok(h.length > 0);
        assert.ok(h.offset >= R_HOLEY + DATA, `hole at ${h.offset - R_HOLEY} overlaps the written data`);
        pieces.push([h.offset, h.length]);
        image.fill(0, h.offset - R_HOLEY, h.offset - R_HOLEY + h.length);
      } else {
        assert.fail(`unexpected chunk type ${x.type}`);
      }
    }
    pieces.sort((a, b) => a[0] - b[0]);
    let at = R_HOLEY;
    for (const [offset, length] of pieces) {
      assert.equal(offset, at, 'chunks are contiguous and do not overlap');
      at += length;
    }
    assert.equal(at, R_HOLEY + READ, 'the chunks cover exactly the request');
    assert.ok(image.equals(Buffer.concat([holey, Buffer.alloc(READ - DATA)])), 'reassembled content');
  });

  test('the same READ with NBD_CMD_FLAG_DF is a single OFFSET_DATA chunk of 128 KiB with DONE, the hole as explicit zeroes', async () => {
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    assert.notEqual(c.session.flags & C.NBD_FLAG_SEND_DF, 0);
    const { replies } = await call(c, { type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_DF, offset: R_HOLEY, length: READ });
    assert.equal(replies.length, 1);
    const x = replies[0] as Chunk;
    assert.equal(x.type, C.NBD_REPLY_TYPE_OFFSET_DATA);
    assert.equal(x.flags, C.NBD_REPLY_FLAG_DONE);
    const d = parseOffsetData(x);
    assert.equal(d.offset, R_HOLEY);
    assert.ok(d.data.equals(Buffer.concat([holey, Buffer.alloc(READ - DATA)])));
  });

  test('BLOCK_STATUS with REQ_ONE gives exactly one descriptor, no longer than the request', async () => {
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    const onData = await blockStatus(c, R_HOLEY, 64 * KiB, C.NBD_CMD_FLAG_REQ_ONE);
    assert.deepEqual(onData, [{ length: DATA, flags: 0 }], 'the written 32 KiB, allocated');
    const onHole = await blockStatus(c, R_HOLEY + DATA, 8 * KiB, C.NBD_CMD_FLAG_REQ_ONE);
    assert.deepEqual(onHole, [{ length: 8 * KiB, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO }], 'the hole, cut to the request');
    const all = await blockStatus(c, R_HOLEY, READ);
    assert.deepEqual(all[0], { length: DATA, flags: 0 });
    assert.equal((all[1] as { flags: number }).flags, C.NBD_STATE_HOLE | C.NBD_STATE_ZERO);
  });

  test('WRITE_ZEROES without NO_HOLE turns written data into hole|zero for BLOCK_STATUS, and it reads back as zeroes', async () => {
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    const length = 64 * KiB;
    await writeOk(c, R_ZEROES, pattern(length, 5));
    assert.deepEqual(flagsCovering(await blockStatus(c, R_ZEROES, length), length), [0], 'written: allocated');
    assertOk((await call(c, { type: C.NBD_CMD_WRITE_ZEROES, offset: R_ZEROES, length })).replies);
    for (const f of flagsCovering(await blockStatus(c, R_ZEROES, length), length)) assert.equal(f, C.NBD_STATE_HOLE | C.NBD_STATE_ZERO);
    const { replies } = await call(c, { type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_DF, offset: R_ZEROES, length });
    assert.ok(parseOffsetData(replies[0] as Chunk).data.equals(Buffer.alloc(length)));
  });

  test('TRIM punches a hole: BLOCK_STATUS reports NBD_STATE_HOLE where data was', async () => {
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    const length = 64 * KiB;
    await writeOk(c, R_TRIM, pattern(length, 6));
    assert.deepEqual(flagsCovering(await blockStatus(c, R_TRIM, length), length), [0]);
    assertOk((await call(c, { type: C.NBD_CMD_TRIM, offset: R_TRIM, length })).replies);
    for (const f of flagsCovering(await blockStatus(c, R_TRIM, length), length)) assert.equal(f & C.NBD_STATE_HOLE, C.NBD_STATE_HOLE);
  });

  test('WRITE_ZEROES with FAST_ZERO is accepted where SEND_FAST_ZERO is advertised, and zeroes the range', async () => {
    const c = await open({ structured: true, metaContexts: ['base:allocation'] });
    assert.notEqual(c.session.flags & C.NBD_FLAG_SEND_FAST_ZERO, 0);
    const length = 64 * KiB;
    await writeOk(c, R_FAST_ZERO, pattern(length, 8));
    assertOk((await call(c, { type: C.NBD_CMD_WRITE_ZEROES, flags: C.NBD_CMD_FLAG_FAST_ZERO, offset: R_FAST_ZERO, length })).replies);
    const { replies } = await call(c, { type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_DF, offset: R_FAST_ZERO, length });
    assert.ok(parseOffsetData(replies[0] as Chunk).data.equals(Buffer.alloc(length)));
  });
});

// ---------------------------------------------------------------------------

describe('concurrency', () => {
  test('a 32 MiB READ and a 4 KiB READ pipelined back to back are both answered, each with its own cookie and data', { timeout: 60_000 }, async () => {
    const c = await open();
    const head = pattern(4096, 11);
    const tail = pattern(4096, 12);
    const small = pattern(4096, 13);
    await writeOk(c, R_BIG_READ, head);
    await writeOk(c, R_BIG_READ + 32 * MiB - 4096, tail);
    await writeOk(c, R_GENERAL + 8192, small);
    const bigCookie = 0x0123456789abcdefn;
    const smallCookie = 0xfedcba9876543210n;
    await c.send(Buffer.concat([
      encodeRequest({ type: C.NBD_CMD_READ, cookie: bigCookie, offset: R_BIG_READ, length: 32 * MiB }),
      encodeRequest({ type: C.NBD_CMD_READ, cookie: smallCookie, offset: R_GENERAL + 8192, length: 4096 }),
    ]));
    const seen = new Map<bigint, Buffer>();
    for (let i = 0; i < 2; i++) {
      const r = await c.readSimpleReply(0, 30_000);
      assert.equal(r.error, 0);
      assert.ok(r.cookie === bigCookie || r.cookie === smallCookie, `unknown cookie ${r.cookie.toString(16)}`);
      assert.ok(!seen.has(r.cookie), 'each cookie answered once');
      seen.set(r.cookie, await c.read(r.cookie === bigCookie ? 32 * MiB : 4096, 30_000));
    }
    const big = seen.get(bigCookie) as Buffer;
    assert.ok(big.subarray(0, 4096).equals(head) && big.subarray(32 * MiB - 4096).equals(tail), '32 MiB read data');
    assert.ok((seen.get(smallCookie) as Buffer).equals(small), '4 KiB read data');
    assert.ok(await c.quietFor(50));
  });

  test('50 connections at once each write their own 4 KiB and read it back', { timeout: 60_000 }, async () => {
    const n = 50;
    const conns = await Promise.all(Array.from({ length: n }, () => open()));
    await Promise.all(conns.map(async (c, i) => {
      const data = pattern(4096, 100 + i);
      await writeOk(c, R_MANY + i * 4096, data);
      assert.ok((await readSimple(c, R_MANY + i * 4096, 4096)).equals(data), `connection ${i}`);
    }));
    // and each sees the others' writes (one store behind all connections)
    const check = conns[0] as RawNbd;
    const all = await readSimple(check, R_MANY, n * 4096);
    for (let i = 0; i < n; i++) assert.ok(all.subarray(i * 4096, (i + 1) * 4096).equals(pattern(4096, 100 + i)));
    await Promise.all(conns.map((c) => c.disconnect()));
  });

  test('a client flooding 1 GiB of pipelined 4 KiB WRITEs without reading replies keeps the server RSS under 300 MB, and every write is answered once it reads', { timeout: 120_000 }, async (tc) => {
    const s = server();
    const rss = (): number => processRss(s.child.pid as number);
    const c = await open();
    c.stopReading();
    const rssStart = rss();
    let rssMax = rssStart;
    const sampler = setInterval(() => { rssMax = Math.max(rssMax, rss()); }, 20);
    const total = (1024 * MiB) / (4 * KiB);
    const batch = 128;
    const payload = pattern(4096, 21);
    let sent = 0;
    let stalledAt: number | undefined;
    const started = Date.now();
    try {
      while (sent < total) {
        const n = Math.min(batch, total - sent);
        const buf = Buffer.allocUnsafe(n * (28 + 4096));
        for (let i = 0; i < n; i++) {
          const k = sent + i;
          encodeRequest({ type: C.NBD_CMD_WRITE, cookie: k, offset: R_FLOOD + (k % 256) * 4096, length: 4096 }).copy(buf, i * (28 + 4096));
          payload.copy(buf, i * (28 + 4096) + 28);
        }
        const ok = c.socket.write(buf);
        sent += n;
        if (!ok) {
          const drained = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => { c.socket.off('drain', onDrain); resolve(false); }, 2_000);
            const onDrain = (): void => { clearTimeout(timer); resolve(true); };
            c.socket.once('drain', onDrain);
          });
          if (!drained) { stalledAt = sent; break; }
        }
      }
      const floodMs = Date.now() - started;
      const rssFlood = rssMax;
      // now read: every request gets exactly one reply, error 0, its own cookie
      c.startReading();
      const answered = new Uint8Array(sent);
      let count = 0;
      while (count < sent) {
        const k = Math.min(4096, sent - count);
        const b = await c.read(16 * k, 60_000);
        for (let i = 0; i < k; i++) {
          const at = i * 16;
          assert.equal(b.readUInt32BE(at), C.NBD_SIMPLE_REPLY_MAGIC);
          const err = b.readUInt32BE(at + 4);
          const ck = Number(b.readBigUInt64BE(at + 8));
          if (err !== 0 || ck >= sent || answered[ck] !== 0) assert.fail(`reply ${count + i}: cookie ${ck} error ${err}`);
          answered[ck] = 1;
        }
        count += k;
      }
      assert.ok(await c.quietFor(50), 'no extra replies');
      tc.diagnostic(`sent ${sent} writes (${(sent * 4 / 1024).toFixed(0)} MiB) in ${floodMs} ms; ${stalledAt === undefined ? 'the server kept reading' : `the server stopped reading after ${stalledAt} writes`}; RSS start ${(rssStart / MiB).toFixed(0)} MB, max ${(rssMax / MiB).toFixed(0)} MB (${(rssFlood / MiB).toFixed(0)} MB while flooding)`);
      assert.ok(rssMax < 300 * 1000 * 1000, `server RSS reached ${rssMax} bytes`);
    } finally {
      clearInterval(sampler);
    }
    await assertInSync(c);
  });
  test('a client pipelining 20000 4 KiB READs without reading replies makes the server stop reading: requests wait unread in its receive queue, RSS stays under 300 MB, and all 20000 replies arrive once the client reads', { timeout: 60_000 }, async (tc) => {
    const s = server();
    const c = await open();
    c.stopReading();
    const n = 20_000;
    const requests = Buffer.concat(Array.from({ length: n }, (_, i) =>
      encodeRequest({ type: C.NBD_CMD_READ, cookie: i, offset: R_FLOOD + (i % 256) * 4096, length: 4096 })));
    c.socket.write(requests);
    // 20000 replies are 80 MiB: far more than the server queues (4 MiB) plus what the kernel
    // buffers, so it must stop taking requests off its socket until the client reads
    const queued = (): number => serverRecvQueue(s.port, c.socket.localPort as number);
    const samples: number[] = [];
    let rss = 0;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      samples.push(queued());
      rss = Math.max(rss, processRss(s.child.pid as number));
      const last = samples.slice(-5);
      if (last.length === 5 && (last[0] as number) > 0 && last.every((x) => x === last[0])) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const stuck = samples.at(-1) as number;
    tc.diagnostic(`server receive queue settled at ${stuck} bytes (${Math.floor(stuck / 28)} requests) left unread; server RSS max ${(rss / MiB).toFixed(0)} MB`);
    assert.ok(stuck > 0 && samples.slice(-5).every((x) => x === stuck), `the server's receive queue should hold unread requests, samples ${samples.join(',')}`);
    assert.ok(rss < 300 * 1000 * 1000, `server RSS ${rss}`);
    c.startReading();
    const answered = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const h = await c.read(16 + 4096, 30_000);
      assert.equal(h.readUInt32BE(0), C.NBD_SIMPLE_REPLY_MAGIC);
      const ck = Number(h.readBigUInt64BE(8));
      if (h.readUInt32BE(4) !== 0 || ck >= n || answered[ck] !== 0) assert.fail(`reply ${i}: cookie ${ck} error ${h.readUInt32BE(4)}`);
      answered[ck] = 1;
    }
    assert.ok(await c.quietFor(50), 'no extra replies');
    assert.equal(queued(), 0);
  });
});

// ---------------------------------------------------------------------------

describe('multiple named exports', () => {
  test('GO on each name reaches its own data, GO on "" reaches the first, and LIST names both', async () => {
    const dir = tempDir('tandem-multi-');
    const s = await serve([
      '--file', path.join(dir.dir, 'a.img'), '--name', 'alpha',
      '--file', path.join(dir.dir, 'b.img'), '--name', 'beta',
      '--size', '1M',
    ]);
    try {
      const a = await open({ name: 'alpha' }, s);
      const b = await open({ name: 'beta' }, s);
      assert.equal(a.session.size, MiB);
      assert.equal(b.session.size, MiB);
      await writeOk(a, 0, pattern(4096, 1));
      await writeOk(b, 0, pattern(4096, 2));
      assert.ok((await readSimple(a, 0, 4096)).equals(pattern(4096, 1)), 'alpha has its data');
      assert.ok((await readSimple(b, 0, 4096)).equals(pattern(4096, 2)), 'beta has its data');
      const dflt = await open({ name: '' }, s);
      assert.ok((await readSimple(dflt, 0, 4096)).equals(pattern(4096, 1)), '"" is alpha');
      const l = await negotiating(undefined, s);
      const list = await l.option(C.NBD_OPT_LIST);
      const names = list.filter((r) => r.type === C.NBD_REP_SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
      assert.deepEqual(names.sort(), ['alpha', 'beta']);
      const unknown = await l.option(C.NBD_OPT_GO, goData('gamma'));
      assert.equal(hex((unknown[0] as { type: number }).type), hex(C.NBD_REP_ERR_UNKNOWN));
      // a context selected for one export does not carry over to a GO on another
      const m = await negotiating(undefined, s);
      await m.option(C.NBD_OPT_STRUCTURED_REPLY);
      await m.option(C.NBD_OPT_SET_META_CONTEXT, Buffer.concat([lstr('alpha'), u32(1), lstr('base:allocation')]));
      await m.go({ name: 'beta' });
      assertErrorChunk((await call(m, { type: C.NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).replies, C.NBD_EINVAL);
    } finally {
      await stopServer(s);
      dir.cleanup();
    }
  });
});
