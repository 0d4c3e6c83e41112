import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import * as C from '../../src/protocol/nbd/constants';
import type { ExportInfo } from '../../src/protocol/nbd/export-info';
import type { Negotiated } from '../../src/protocol/nbd/handshake';
import { nbdLimits } from '../../src/protocol/nbd/limits';
import {
  blockStatusChunk, errorChunk, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply,
} from '../../src/protocol/nbd/reply';
import {
  RequestParser, decodeRequestHeader, encodeRequestHeader, validateRequest, type RequestHeader,
} from '../../src/protocol/nbd/request';

const disk: ExportInfo = {
  name: '', description: '', size: 1 << 20, readOnly: false, canFlush: true, canFua: true,
  canTrim: true, canZero: true, canFastZero: true, canCache: true, canMultiConn: true, canExtents: true,
  blockSizeMin: 1, blockSizePreferred: 4096, blockSizeMax: 64 << 20,
};
const structured: Negotiated = { export: disk, structuredReplies: true, noZeroes: true, baseAllocationId: 1 };
const simple: Negotiated = { export: disk, structuredReplies: false, noZeroes: true, baseAllocationId: undefined };

function req(type: number, offset: number, length: number, flags = 0, cookieLo = 7): RequestHeader {
  return { flags, type, cookieHi: 0, cookieLo, offset, length };
}

interface Seen { headers: RequestHeader[]; payloads: Map<number, Buffer[]>; errors: string[] }

function parse(chunks: Buffer[], admitEvery = true): Seen {
  const seen: Seen = { headers: [], payloads: new Map(), errors: [] };
  const p = new RequestParser({
    admit: () => admitEvery,
    payload: (r, data, at) => {
      const list = seen.payloads.get(r.cookieLo) ?? [];
      assert.equal(at, list.reduce((s, b) => s + b.length, 0), 'payload arrives in order');
      list.push(Buffer.from(data));
      seen.payloads.set(r.cookieLo, list);
    },
    end: (r) => { seen.headers.push(r); },
    framingError: (reason) => { seen.errors.push(reason); },
  });
  for (const c of chunks) p.push(c);
  return seen;
}

const arbRequest = fc.record({
  flags: fc.integer({ min: 0, max: 0xffff }),
  type: fc.constantFrom(C.NBD_CMD_READ, C.NBD_CMD_WRITE, C.NBD_CMD_FLUSH, C.NBD_CMD_TRIM, C.NBD_CMD_BLOCK_STATUS, 42),
  cookieHi: fc.nat({ max: 0xffffffff }),
  cookieLo: fc.nat({ max: 0xffffffff }),
  offset: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  length: fc.nat({ max: 3000 }),
});

test('request header round trip: decode(encode(r)) equals r', () => {
  fc.assert(fc.property(arbRequest, (r) => { assert.deepEqual(decodeRequestHeader(encodeRequestHeader(r), 0), { ...r }); }), { numRuns: 2000 });
});

test('request header golden bytes', () => {
  const b = encodeRequestHeader(req(C.NBD_CMD_WRITE, 0x100000001, 512, C.NBD_CMD_FLAG_FUA, 0xabcdef));
  assert.equal(b.toString('hex'), '25609513' + '0001' + '0001' + '0000000000abcdef' + '0000000100000001' + '00000200');
});

test('a stream of requests split at every byte offset yields the same requests and payloads', () => {
  const reqs = [req(C.NBD_CMD_WRITE, 0, 5, 0, 1), req(C.NBD_CMD_READ, 10, 4096, 0, 2), req(C.NBD_CMD_WRITE, 9, 3, 0, 3), req(C.NBD_CMD_FLUSH, 0, 0, 0, 4)];
  const stream = Buffer.concat([encodeRequestHeader(reqs[0] as RequestHeader), Buffer.from('hello'), encodeRequestHeader(reqs[1] as RequestHeader),
    encodeRequestHeader(reqs[2] as RequestHeader), Buffer.from('abc'), encodeRequestHeader(reqs[3] as RequestHeader)]);
  const whole = parse([stream]);
  assert.deepEqual(whole.headers, reqs);
  assert.equal(Buffer.concat(whole.payloads.get(1) ?? []).toString(), 'hello');
  assert.equal(Buffer.concat(whole.payloads.get(3) ?? []).toString(), 'abc');
  for (let i = 0; i <= stream.length; i++) {
    for (let j = i; j <= stream.length; j += 7) {
      const split = parse([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
      assert.deepEqual(split.headers, whole.headers);
      for (const k of [1, 3]) assert.deepEqual(Buffer.concat(split.payloads.get(k) ?? []), Buffer.concat(whole.payloads.get(k) ?? []));
    }
  }
});

test('random request streams in random chunks round-trip through the parser', () => {
  fc.assert(fc.property(fc.array(arbRequest, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 10 }), (rs, cuts) => {
    const withUniqueCookies = rs.map((r, i) => ({ ...r, cookieLo: i, offset: Math.min(r.offset, 2 ** 53 - 2 ** 32) }));
    const parts: Buffer[] = [];
    for (const r of withUniqueCookies) {
      parts.push(encodeRequestHeader(r));
      if (r.type === C.NBD_CMD_WRITE) parts.push(Buffer.alloc(r.length, r.cookieLo & 0xff));
    }
    const stream = Buffer.concat(parts);
    const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
    const chunks: Buffer[] = [];
    let last = 0;
    for (const p of points) { chunks.push(stream.subarray(last, p)); last = p; }
    chunks.push(stream.subarray(last));
    const seen = parse(chunks);
    assert.deepEqual(seen.headers, withUniqueCookies);
    assert.equal(seen.errors.length, 0);
  }), { numRuns: 500 });
});

test('a bad magic is a framing error, reported once, and nothing after it is parsed', () => {
  const bad = encodeRequestHeader(req(C.NBD_CMD_READ, 0, 1));
  bad.writeUInt32BE(0x12345678, 0);
  const seen = parse([Buffer.concat([encodeRequestHeader(req(C.NBD_CMD_FLUSH, 0, 0)), bad, encodeRequestHeader(req(C.NBD_CMD_FLUSH, 0, 0))])]);
  assert.equal(seen.headers.length, 1);
  assert.equal(seen.errors.length, 1);
  assert.match(seen.errors[0] as string, /bad request magic 0x12345678/);
});

test('random bytes produce only requests or one framing error, never an exception', () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }), (chunks) => {
    const seen = parse(chunks.map((c) => Buffer.from(c)));
    assert.ok(seen.errors.length <= 1);
  }), { numRuns: 2000 });
});

test('a stalled parser keeps the rest of the chunk and resumes where it stopped', () => {
  let allow = false;
  const ends: number[] = [];
  const p = new RequestParser({ admit: () => allow, payload: () => undefined, end: (r) => ends.push(r.cookieLo), framingError: assert.fail });
  p.push(Buffer.concat([encodeRequestHeader(req(C.NBD_CMD_FLUSH, 0, 0, 0, 1)), encodeRequestHeader(req(C.NBD_CMD_FLUSH, 0, 0, 0, 2))]));
  assert.equal(p.stalled, true);
  assert.deepEqual(ends, []);
  allow = true;
  p.resume();
  assert.deepEqual(ends, [1, 2]);
  assert.equal(p.stalled, false);
});

test('validation: the protocol errors for each kind of bad request', () => {
  const cases: Array<[string, RequestHeader, Negotiated, number | undefined]> = [
    ['good read', req(C.NBD_CMD_READ, 0, 4096), simple, undefined],
    ['read past the end', req(C.NBD_CMD_READ, disk.size - 1, 2), simple, C.NBD_EINVAL],
    ['write past the end', req(C.NBD_CMD_WRITE, disk.size, 1), simple, C.NBD_ENOSPC],
    ['trim past the end', req(C.NBD_CMD_TRIM, 1, disk.size), simple, C.NBD_EINVAL],
    ['offset beyond 2^53', req(C.NBD_CMD_READ, Number.MAX_SAFE_INTEGER, 1), simple, C.NBD_EINVAL],
    ['unknown command', req(99, 0, 1), simple, C.NBD_EINVAL],
    ['unknown flag', req(C.NBD_CMD_WRITE, 0, 1, 1 << 9), simple, C.NBD_EINVAL],
    ['NO_HOLE on a write', req(C.NBD_CMD_WRITE, 0, 1, C.NBD_CMD_FLAG_NO_HOLE), simple, C.NBD_EINVAL],
    ['DF without structured replies', req(C.NBD_CMD_READ, 0, 1, C.NBD_CMD_FLAG_DF), simple, C.NBD_EINVAL],
    ['DF with structured replies', req(C.NBD_CMD_READ, 0, 1, C.NBD_CMD_FLAG_DF), structured, undefined],
    ['write above the maximum payload', req(C.NBD_CMD_WRITE, 0, nbdLimits.payloadBytesMax + 1), { ...simple, export: { ...disk, size: 2 ** 40 } }, C.NBD_EINVAL],
    ['zeroes larger than the maximum payload are fine', req(C.NBD_CMD_WRITE_ZEROES, 0, disk.size), simple, undefined],
    ['flush with a length', req(C.NBD_CMD_FLUSH, 0, 1), simple, C.NBD_EINVAL],
    ['block status without a context', req(C.NBD_CMD_BLOCK_STATUS, 0, 1), simple, C.NBD_EINVAL],
    ['block status with a context', req(C.NBD_CMD_BLOCK_STATUS, 0, 1, C.NBD_CMD_FLAG_REQ_ONE), structured, undefined],
    ['write to a read-only export', req(C.NBD_CMD_WRITE, 0, 1), { ...simple, export: { ...disk, readOnly: true } }, C.NBD_EPERM],
    ['FAST_ZERO not offered', req(C.NBD_CMD_WRITE_ZEROES, 0, 1, C.NBD_CMD_FLAG_FAST_ZERO), { ...simple, export: { ...disk, canFastZero: false } }, C.NBD_EINVAL],
    ['zero-length trim', req(C.NBD_CMD_TRIM, 0, 0), simple, C.NBD_EINVAL],
  ];
  for (const [name, r, n, errno] of cases) assert.equal(validateRequest(r, n, nbdLimits)?.errno, errno, name);
});

test('reply golden bytes: simple, none, data header, hole, error, block status', () => {
  const c = { cookieHi: 1, cookieLo: 2 };
  assert.equal(simpleReply(c, C.NBD_EINVAL).toString('hex'), '67446698' + '00000016' + '0000000100000002');
  assert.equal(noneChunk(c).toString('hex'), '668e33ef' + '0001' + '0000' + '0000000100000002' + '00000000');
  assert.equal(offsetDataHeader(c, false, 0x200000000, 512).toString('hex'), '668e33ef' + '0000' + '0001' + '0000000100000002' + '00000208' + '0000000200000000');
  assert.equal(offsetHoleChunk(c, true, 4096, 8192).toString('hex'), '668e33ef' + '0001' + '0002' + '0000000100000002' + '0000000c' + '0000000000001000' + '00002000');
  assert.equal(errorChunk(c, C.NBD_EIO, 'x').toString('hex'), '668e33ef' + '0001' + '8001' + '0000000100000002' + '00000007' + '00000005' + '0001' + '78');
  assert.equal(blockStatusChunk(c, 1, [{ length: 4096, hole: false, zero: false }, { length: 512, hole: true, zero: true }]).toString('hex'),
    '668e33ef' + '0001' + '0005' + '0000000100000002' + '00000014' + '00000001' + '00001000' + '00000000' + '00000200' + '00000003');
});
