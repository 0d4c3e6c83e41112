import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import '../helpers/fc-seed';
import * as C from '../../src/protocol/nbd/constants';
import { staticCatalog, type ExportInfo } from '../../src/protocol/nbd/export-info';
import { Handshake, serverGreeting, type HandshakeStep } from '../../src/protocol/nbd/handshake';

const disk: ExportInfo = {
  name: 'disk', description: 'test disk', size: 1 << 20, readOnly: false, canFlush: true, canFua: true,
  canTrim: true, canZero: true, canFastZero: true, canCache: true, canMultiConn: true, canExtents: true,
  blockSizeMin: 1, blockSizePreferred: 4096, blockSizeMax: 64 << 20,
};
const catalog = staticCatalog([disk, { ...disk, name: 'ro', readOnly: true }]);

function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; }
function u16(n: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; }
function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(C.IHAVEOPT, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}
function str(s: string): Buffer { const b = Buffer.from(s); return Buffer.concat([u32(b.length), b]); }
function go(name: string, infos: number[] = []): Buffer {
  return option(C.NBD_OPT_GO, Buffer.concat([str(name), u16(infos.length), ...infos.map(u16)]));
}
function metaContext(opt: number, name: string, queries: string[]): Buffer {
  return option(opt, Buffer.concat([str(name), u32(queries.length), ...queries.map(str)]));
}
const clientFlags = u32(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);

/** Everything the machine sent, and how it ended. */
function summarize(steps: HandshakeStep[]): { sent: Buffer; end: string } {
  const sent = Buffer.concat(steps.filter((s) => s.kind === 'send').map((s) => (s as { data: Buffer }).data));
  const last = steps.find((s) => s.kind !== 'send');
  let end = 'open';
  if (last?.kind === 'close') end = `close:${last.reason}`;
  if (last?.kind === 'transmit') end = `transmit:${JSON.stringify({ ...last.negotiated, export: last.negotiated.export.name })}:${last.rest.toString('hex')}`;
  return { sent, end };
}

/** Feeds chunks as a connection would: once in transmission, later bytes go to the request parser. */
function feed(chunks: Buffer[]): { sent: Buffer; end: string } {
  const h = new Handshake(catalog);
  const steps: HandshakeStep[] = [];
  let after = '';
  for (const c of chunks) {
    if (h.finished) after += c.toString('hex');
    else steps.push(...h.receive(c));
  }
  const r = summarize(steps);
  return { sent: r.sent, end: r.end.startsWith('transmit:') ? r.end + after : r.end };
}

test('greeting is NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES (golden bytes)', () => {
  assert.equal(serverGreeting().toString('hex'), '4e42444d41474943' + '49484156454f5054' + '0003');
});

test('GO with no info requests: INFO_EXPORT, INFO_BLOCK_SIZE, ACK (golden bytes), then transmission', () => {
  const r = feed([Buffer.concat([clientFlags, go('disk')])]);
  const rep = (type: number, data: string): string => '0003e889045565a9' + '00000007' + type.toString(16).padStart(8, '0') +
    (data.length / 2).toString(16).padStart(8, '0') + data;
  const flags = (C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_TRIM |
    C.NBD_FLAG_SEND_WRITE_ZEROES | C.NBD_FLAG_SEND_FAST_ZERO | C.NBD_FLAG_SEND_CACHE | C.NBD_FLAG_CAN_MULTI_CONN).toString(16).padStart(4, '0');
  assert.equal(r.sent.toString('hex'),
    rep(3, '0000' + '0000000000100000' + flags) + rep(3, '0003' + '00000001' + '00001000' + '04000000') + rep(1, ''));
  assert.match(r.end, /^transmit:.*"export":"disk"/);
  assert.match(r.end, /"structuredReplies":false/);
});

test('EXPORT_NAME without NO_ZEROES sends size, flags and 124 zero bytes; with it, 10 bytes', () => {
  const withZeroes = feed([u32(C.NBD_FLAG_C_FIXED_NEWSTYLE), option(C.NBD_OPT_EXPORT_NAME, Buffer.from('disk'))]);
  assert.equal(withZeroes.sent.length, 134);
  assert.ok(withZeroes.sent.subarray(10).every((b) => b === 0));
  const without = feed([clientFlags, option(C.NBD_OPT_EXPORT_NAME, Buffer.from('disk'))]);
  assert.equal(without.sent.length, 10);
  assert.equal(without.sent.readBigUInt64BE(0), BigInt(disk.size));
});

test('a client without fixed newstyle, or with unknown flags, is disconnected', () => {
  assert.match(feed([u32(0)]).end, /^close:.*fixed newstyle/);
  assert.match(feed([u32(0x81)]).end, /^close:unknown client flags/);
});

test('base:allocation is selected only after structured replies, and only for the export named', () => {
  const early = feed([clientFlags, metaContext(C.NBD_OPT_SET_META_CONTEXT, 'disk', ['base:allocation'])]);
  assert.equal(early.sent.readUInt32BE(12), C.NBD_REP_ERR_INVALID >>> 0);
  const ok = feed([clientFlags, option(C.NBD_OPT_STRUCTURED_REPLY),
    metaContext(C.NBD_OPT_SET_META_CONTEXT, 'disk', ['base:allocation', 'x-unknown:thing']), go('disk')]);
  assert.match(ok.end, /"baseAllocationId":1/);
  const other = feed([clientFlags, option(C.NBD_OPT_STRUCTURED_REPLY),
    metaContext(C.NBD_OPT_SET_META_CONTEXT, 'ro', ['base:allocation']), go('disk')]);
  assert.doesNotMatch(other.end, /baseAllocationId/);
});

// A complete, valid client conversation followed by the first transmission bytes.
const script = Buffer.concat([
  clientFlags,
  option(C.NBD_OPT_LIST),
  option(99),
  option(C.NBD_OPT_INFO, Buffer.concat([str('nope'), u16(0)])),
  option(C.NBD_OPT_STRUCTURED_REPLY),
  metaContext(C.NBD_OPT_LIST_META_CONTEXT, 'disk', []),
  metaContext(C.NBD_OPT_SET_META_CONTEXT, 'disk', ['base:allocation']),
  go('disk', [C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE]),
  Buffer.from('25609513deadbeef', 'hex'),
]);

test('the same conversation split at every byte offset gives the same replies and outcome', () => {
  const whole = feed([script]);
  assert.match(whole.end, /^transmit:.*25609513deadbeef$/);
  for (let i = 0; i <= script.length; i++) {
    assert.deepEqual(feed([script.subarray(0, i), script.subarray(i)]), whole, `split at ${i}`);
  }
  const bytewise: Buffer[] = [];
  for (let i = 0; i < script.length; i++) bytewise.push(script.subarray(i, i + 1));
  assert.deepEqual(feed(bytewise), whole);
});

test('an option above optionBytesMax is skipped without buffering and refused with TOO_BIG', () => {
  const big = option(77, Buffer.alloc(70 * 1024, 0x55));
  const r = feed([clientFlags, big.subarray(0, 1000), big.subarray(1000), go('disk')]);
  assert.equal(r.sent.readUInt32BE(12), C.NBD_REP_ERR_TOO_BIG >>> 0);
  assert.match(r.end, /^transmit:/);
});

test('random byte streams only ever produce send, close or transmit steps, never an exception', () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 8 }), (chunks) => {
    const h = new Handshake(catalog);
    for (const c of chunks) {
      for (const s of h.receive(Buffer.from(c))) assert.ok(['send', 'close', 'transmit'].includes(s.kind));
    }
  }), { numRuns: 2000 });
});

test('mutated valid conversations never throw and never transmit an export that does not exist', () => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(script.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), fc.nat(script.length), (mutations, split) => {
    const s = Buffer.from(script);
    for (const [at, v] of mutations) s[at] = v;
    const h = new Handshake(catalog);
    const steps = [...h.receive(s.subarray(0, split)), ...h.receive(s.subarray(split))];
    for (const st of steps) {
      if (st.kind === 'transmit') assert.ok(catalog.find(st.negotiated.export.name) !== undefined);
    }
  }), { numRuns: 3000 });
});
