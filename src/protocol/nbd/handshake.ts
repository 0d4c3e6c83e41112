// The NBD fixed newstyle handshake as a pure state machine: bytes in,
// steps out (bytes to send, close, or enter transmission). No sockets.
import {
  BASE_ALLOCATION, EXPORT_NAME_ZEROES_BYTES, IHAVEOPT, NBDMAGIC, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION, NBD_INFO_EXPORT,
  NBD_INFO_NAME, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT, NBD_OPT_REPLY_MAGIC, NBD_OPT_SET_META_CONTEXT, NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_ERR_INVALID, NBD_REP_ERR_SHUTDOWN, NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_INFO, NBD_REP_META_CONTEXT, NBD_REP_SERVER, OPTION_HEADER_BYTES,
} from './constants';
import type { ExportCatalog, ExportInfo } from './export-info';
import { transmissionFlags } from './export-info';
import { nbdLimits, type NbdLimits } from './limits';

/** What the handshake agreed on; the transmission phase runs under it. */
export interface Negotiated {
  readonly export: ExportInfo;
  readonly structuredReplies: boolean;
  readonly noZeroes: boolean;
  /** context id of base:allocation, when the client selected it for this export */
  readonly baseAllocationId: number | undefined;
}

export type HandshakeStep =
  | { readonly kind: 'send'; readonly data: Buffer }
  | { readonly kind: 'close'; readonly reason: string; readonly soft: boolean }
  | { readonly kind: 'transmit'; readonly negotiated: Negotiated; readonly rest: Buffer };

export interface HandshakeOptions {
  readonly limits?: NbdLimits;
  /** while true, options other than ABORT are answered NBD_REP_ERR_SHUTDOWN */
  readonly shuttingDown?: () => boolean;
}

const BASE_ALLOCATION_ID = 1;
const EMPTY = Buffer.alloc(0);

export function serverGreeting(): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return b;
}

export function optionReply(option: number, type: number, data: Buffer = EMPTY): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

function errorReply(option: number, type: number, message: string): Buffer {
  return optionReply(option, type, Buffer.from(message, 'utf8'));
}

/** Reads the length-prefixed fields of an option's data; every read is bounds-checked. */
class OptionReader {
  private at = 0;
  constructor(private readonly data: Buffer) {}
  get remaining(): number { return this.data.length - this.at; }
  u16(): number | undefined {
    if (this.remaining < 2) return undefined;
    const v = this.data.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  u32(): number | undefined {
    if (this.remaining < 4) return undefined;
    const v = this.data.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  string(length: number, max: number): string | undefined {
    if (length > this.remaining || length > max) return undefined;
    const raw = this.data.subarray(this.at, this.at + length);
    this.at += length;
    if (raw.includes(0)) return undefined;
    const s = raw.toString('utf8');
    // reject invalid UTF-8 rather than silently replacing it
    if (Buffer.byteLength(s, 'utf8') !== length) return undefined;
    return s;
  }
}

type State = 'clientFlags' | 'options' | 'done';

export class Handshake {
  private state: State = 'clientFlags';
  private pending: Buffer = EMPTY;
  private skipRemaining = 0;
  private skippedOption = 0;
  private optionsSeen = 0;
  private noZeroes = false;
  private structuredReplies = false;
  /** the export named by the last SET_META_CONTEXT and whether it selected base:allocation */
  private metaExport: string | undefined;
  private metaBaseAllocation = false;
  private readonly limits: NbdLimits;
  private readonly shuttingDown: () => boolean;

  constructor(private readonly catalog: ExportCatalog, options: HandshakeOptions = {}) {
    this.limits = options.limits ?? nbdLimits;
    this.shuttingDown = options.shuttingDown ?? (() => false);
  }

  get finished(): boolean { return this.state === 'done'; }

  /** Consumes client bytes; returns what to do, in order. After 'close' or 'transmit' it returns nothing more. */
  receive(chunk: Buffer): HandshakeStep[] {
    const steps: HandshakeStep[] = [];
    if (this.state === 'done') return steps;
    let input = chunk;
    for (;;) {
      if (this.skipRemaining > 0) {
        const n = Math.min(this.skipRemaining, input.length);
        this.skipRemaining -= n;
        input = input.subarray(n);
        if (this.skipRemaining > 0) return steps;
        steps.push({ kind: 'send', data: errorReply(this.skippedOption, NBD_REP_ERR_TOO_BIG, 'option data too large') });
        continue;
      }
      this.pending = this.pending.length === 0 ? input : Buffer.concat([this.pending, input]);
      input = EMPTY;
      if (this.state === 'clientFlags') {
        if (this.pending.length < 4) return steps;
        const flags = this.pending.readUInt32BE(0);
        this.pending = this.pending.subarray(4);
        if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
          return this.close(steps, `unknown client flags 0x${flags.toString(16)}`);
        }
        if ((flags & NBD_FLAG_C_FIXED_NEWSTYLE) === 0) {
          return this.close(steps, 'client does not speak the fixed newstyle handshake');
        }
        this.noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
        this.state = 'options';
      }
      if (this.pending.length < OPTION_HEADER_BYTES) return steps;
      if (this.pending.readBigUInt64BE(0) !== IHAVEOPT) return this.close(steps, 'bad option magic');
      const option = this.pending.readUInt32BE(8);
      const length = this.pending.readUInt32BE(12);
      if (++this.optionsSeen > this.limits.optionsPerHandshakeMax) {
        return this.close(steps, `more than ${this.limits.optionsPerHandshakeMax} options`);
      }
      if (length > this.limits.optionBytesMax) {
        // EXPORT_NAME has no way to report an error: the protocol says disconnect
        if (option === NBD_OPT_EXPORT_NAME) return this.close(steps, 'export name longer than the limit');
        this.skippedOption = option;
        this.skipRemaining = length;
        input = this.pending.subarray(OPTION_HEADER_BYTES);
        this.pending = EMPTY;
        continue;
      }
      if (this.pending.length < OPTION_HEADER_BYTES + length) {
        this.optionsSeen--; // counted again when the rest arrives
        return steps;
      }
      const data = this.pending.subarray(OPTION_HEADER_BYTES, OPTION_HEADER_BYTES + length);
      const rest = this.pending.subarray(OPTION_HEADER_BYTES + length);
      this.pending = EMPTY;
      const end = this.handleOption(option, data, rest, steps);
      if (end) return steps;
      input = rest;
    }
  }

  private close(steps: HandshakeStep[], reason: string, soft = false): HandshakeStep[] {
    this.state = 'done';
    steps.push({ kind: 'close', reason, soft });
    return steps;
  }

  /** Returns true when the handshake is over (closed or transmitting). */
  private handleOption(option: number, data: Buffer, rest: Buffer, steps: HandshakeStep[]): boolean {
    const send = (b: Buffer): void => { steps.push({ kind: 'send', data: b }); };
    if (option === NBD_OPT_ABORT) {
      send(optionReply(option, NBD_REP_ACK));
      this.close(steps, 'client aborted the handshake', true);
      return true;
    }
    if (this.shuttingDown()) {
      if (option === NBD_OPT_EXPORT_NAME) { this.close(steps, 'server is shutting down'); return true; }
      send(errorReply(option, NBD_REP_ERR_SHUTDOWN, 'server is shutting down'));
      return false;
    }
    switch (option) {
      case NBD_OPT_EXPORT_NAME: {
        const name = new OptionReader(data).string(data.length, this.limits.stringBytesMax);
        const e = name === undefined ? undefined : this.catalog.find(name);
        if (e === undefined) { this.close(steps, `unknown export ${JSON.stringify(name ?? '')}`); return true; }
        const reply = Buffer.alloc(10 + (this.noZeroes ? 0 : EXPORT_NAME_ZEROES_BYTES));
        reply.writeBigUInt64BE(BigInt(e.size), 0);
        reply.writeUInt16BE(transmissionFlags(e, this.structuredReplies), 8);
        send(reply);
        this.enter(e, rest, steps);
        return true;
      }
      case NBD_OPT_LIST: {
        if (data.length !== 0) { send(errorReply(option, NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data')); return false; }
        for (const e of this.catalog.list()) {
          const name = Buffer.from(e.name, 'utf8');
          const desc = Buffer.from(e.description, 'utf8');
          const payload = Buffer.alloc(4 + name.length + desc.length);
          payload.writeUInt32BE(name.length, 0);
          name.copy(payload, 4);
          desc.copy(payload, 4 + name.length);
          send(optionReply(option, NBD_REP_SERVER, payload));
        }
        send(optionReply(option, NBD_REP_ACK));
        return false;
      }
      case NBD_OPT_STARTTLS:
        send(errorReply(option, data.length === 0 ? NBD_REP_ERR_UNSUP : NBD_REP_ERR_INVALID, 'TLS is not offered'));
        return false;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, data, rest, steps);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) { send(errorReply(option, NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data')); return false; }
        this.structuredReplies = true;
        send(optionReply(option, NBD_REP_ACK));
        return false;
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        this.metaContext(option, data, steps);
        return false;
      default:
        send(errorReply(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`));
        return false;
    }
  }

  private infoOrGo(option: number, data: Buffer, rest: Buffer, steps: HandshakeStep[]): boolean {
    const send = (b: Buffer): void => { steps.push({ kind: 'send', data: b }); };
    const r = new OptionReader(data);
    const nameLength = r.u32();
    const name = nameLength === undefined ? undefined : r.string(nameLength, this.limits.stringBytesMax);
    const count = name === undefined ? undefined : r.u16();
    if (count === undefined || r.remaining !== count * 2) {
      send(errorReply(option, NBD_REP_ERR_INVALID, 'malformed NBD_OPT_INFO/GO request'));
      return false;
    }
    const requests = new Set<number>();
    for (let i = 0; i < count; i++) requests.add(r.u16() as number);
    const e = this.catalog.find(name as string);
    if (e === undefined) {
      send(errorReply(option, NBD_REP_ERR_UNKNOWN, `unknown export ${JSON.stringify(name)}`));
      return false;
    }
    const exp = Buffer.alloc(12);
    exp.writeUInt16BE(NBD_INFO_EXPORT, 0);
    exp.writeBigUInt64BE(BigInt(e.size), 2);
    exp.writeUInt16BE(transmissionFlags(e, this.structuredReplies), 10);
    send(optionReply(option, NBD_REP_INFO, exp));
    if (requests.has(NBD_INFO_NAME)) {
      const n = Buffer.from(e.name, 'utf8');
      const b = Buffer.alloc(2 + n.length);
      b.writeUInt16BE(NBD_INFO_NAME, 0);
      n.copy(b, 2);
      send(optionReply(option, NBD_REP_INFO, b));
    }
    if (requests.has(NBD_INFO_DESCRIPTION) && e.description !== '') {
      const d = Buffer.from(e.description, 'utf8');
      const b = Buffer.alloc(2 + d.length);
      b.writeUInt16BE(NBD_INFO_DESCRIPTION, 0);
      d.copy(b, 2);
      send(optionReply(option, NBD_REP_INFO, b));
    }
    // Sent even when not requested: our minimum of 1 is the protocol's default,
    // so a client that ignores it loses nothing.
    const bs = Buffer.alloc(14);
    bs.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
    bs.writeUInt32BE(e.blockSizeMin, 2);
    bs.writeUInt32BE(e.blockSizePreferred, 6);
    bs.writeUInt32BE(e.blockSizeMax, 10);
    send(optionReply(option, NBD_REP_INFO, bs));
    send(optionReply(option, NBD_REP_ACK));
    if (option === NBD_OPT_GO) {
      this.enter(e, rest, steps);
      return true;
    }
    return false;
  }

  private enter(e: ExportInfo, rest: Buffer, steps: HandshakeStep[]): void {
    this.state = 'done';
    const baseAllocationId =
      this.structuredReplies && this.metaBaseAllocation && this.metaExport !== undefined &&
      this.catalog.find(this.metaExport) === e ? BASE_ALLOCATION_ID : undefined;
    steps.push({
      kind: 'transmit',
      negotiated: { export: e, structuredReplies: this.structuredReplies, noZeroes: this.noZeroes, baseAllocationId },
      rest,
    });
  }

  private metaContext(option: number, data: Buffer, steps: HandshakeStep[]): void {
    const send = (b: Buffer): void => { steps.push({ kind: 'send', data: b }); };
    const set = option === NBD_OPT_SET_META_CONTEXT;
    if (set) { this.metaExport = undefined; this.metaBaseAllocation = false; }
    if (set && !this.structuredReplies) {
      send(errorReply(option, NBD_REP_ERR_INVALID, 'negotiate structured replies first'));
      return;
    }
    const r = new OptionReader(data);
    const nameLength = r.u32();
    const name = nameLength === undefined ? undefined : r.string(nameLength, this.limits.stringBytesMax);
    const count = name === undefined ? undefined : r.u32();
    if (count === undefined) { send(errorReply(option, NBD_REP_ERR_INVALID, 'malformed meta context request')); return; }
    if (count > this.limits.metaContextQueriesMax) {
      send(errorReply(option, NBD_REP_ERR_TOO_BIG, `more than ${this.limits.metaContextQueriesMax} queries`));
      return;
    }
    const queries: string[] = [];
    for (let i = 0; i < count; i++) {
      const len = r.u32();
      const q = len === undefined ? undefined : r.string(len, this.limits.stringBytesMax);
      if (q === undefined || !q.includes(':')) {
        send(errorReply(option, NBD_REP_ERR_INVALID, 'malformed meta context query'));
        return;
      }
      queries.push(q);
    }
    if (r.remaining !== 0) { send(errorReply(option, NBD_REP_ERR_INVALID, 'trailing bytes in meta context request')); return; }
    const e = this.catalog.find(name as string);
    if (e === undefined) { send(errorReply(option, NBD_REP_ERR_UNKNOWN, `unknown export ${JSON.stringify(name)}`)); return; }
    const matches = e.canExtents && (set
      ? queries.includes(BASE_ALLOCATION)
      : count === 0 || queries.some((q) => q === 'base:' || q === BASE_ALLOCATION));
    if (matches) {
      const ctx = Buffer.from(BASE_ALLOCATION, 'utf8');
      const b = Buffer.alloc(4 + ctx.length);
      b.writeUInt32BE(set ? BASE_ALLOCATION_ID : 0, 0);
      ctx.copy(b, 4);
      send(optionReply(option, NBD_REP_META_CONTEXT, b));
    }
    if (set) { this.metaExport = name; this.metaBaseAllocation = matches; }
    send(optionReply(option, NBD_REP_ACK));
  }
}
