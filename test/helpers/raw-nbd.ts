// A minimal raw-socket NBD client for tests: it sends exactly the bytes it is
// told to and reads exactly the bytes it asks for, so tests can break the
// protocol on purpose and check the server's answer byte for byte.
import net from 'node:net';
import {
  IHAVEOPT, NBD_CMD_DISC, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES, NBD_INFO_EXPORT, NBD_OPT_GO,
  NBD_OPT_REPLY_MAGIC, NBD_OPT_SET_META_CONTEXT, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_INFO,
  NBD_REP_META_CONTEXT, NBD_REP_SERVER, NBD_REPLY_FLAG_DONE, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC,
  OPTION_HEADER_BYTES, SIMPLE_REPLY_HEADER_BYTES, STRUCTURED_REPLY_HEADER_BYTES,
} from '../../src/protocol/nbd/constants';
import { encodeRequestHeader } from '../../src/protocol/nbd/request';

export const DEFAULT_TIMEOUT_MS = 10_000;

// ---- encoders for option data ----

export function u16(n: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; }
export function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; }
/** a string as options carry it: 32-bit length, then the UTF-8 bytes */
export function lstr(s: string): Buffer { const b = Buffer.from(s, 'utf8'); return Buffer.concat([u32(b.length), b]); }

/** IHAVEOPT, option, length, data */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(OPTION_HEADER_BYTES);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(option >>> 0, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

/** data of NBD_OPT_INFO / NBD_OPT_GO */
export function goData(name: string, infos: number[] = []): Buffer {
  return Buffer.concat([lstr(name), u16(infos.length), ...infos.map(u16)]);
}

/** data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT */
export function metaData(name: string, queries: string[]): Buffer {
  return Buffer.concat([lstr(name), u32(queries.length), ...queries.map(lstr)]);
}

// ---- decoded messages ----

export interface Greeting { readonly magic: bigint; readonly ihaveopt: bigint; readonly flags: number; readonly raw: Buffer }

export interface OptionReply {
  readonly magic: bigint;
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

export interface SimpleReply {
  readonly kind: 'simple';
  readonly error: number;
  readonly cookie: bigint;
  /** read data, when the caller asked for it */
  readonly data: Buffer;
}

export interface Chunk {
  readonly kind: 'chunk';
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly payload: Buffer;
  readonly done: boolean;
}

export type Reply = SimpleReply | Chunk;

export interface RequestSpec {
  readonly type: number;
  readonly flags?: number;
  readonly cookie?: bigint | number;
  readonly offset?: number;
  readonly length?: number;
  /** bytes sent right after the header (a WRITE's payload); not checked against length */
  readonly payload?: Buffer;
}

export function encodeRequest(r: RequestSpec): Buffer {
  const cookie = BigInt(r.cookie ?? 0);
  const header = encodeRequestHeader({
    flags: r.flags ?? 0,
    type: r.type,
    cookieHi: Number(cookie >> 32n),
    cookieLo: Number(cookie & 0xffffffffn),
    offset: r.offset ?? 0,
    length: r.length ?? r.payload?.length ?? 0,
  });
  return r.payload === undefined ? header : Buffer.concat([header, r.payload]);
}

// ---- structured chunk payloads ----

export function parseOffsetData(c: Chunk): { offset: number; data: Buffer } {
  return { offset: Number(c.payload.readBigUInt64BE(0)), data: c.payload.subarray(8) };
}

export function parseOffsetHole(c: Chunk): { offset: number; length: number } {
  return { offset: Number(c.payload.readBigUInt64BE(0)), length: c.payload.readUInt32BE(8) };
}

export function parseErrorChunk(c: Chunk): { error: number; message: string } {
  const length = c.payload.readUInt16BE(4);
  return { error: c.payload.readUInt32BE(0), message: c.payload.subarray(6, 6 + length).toString('utf8') };
}

export interface Descriptor { readonly length: number; readonly flags: number }

export function parseBlockStatus(c: Chunk): { contextId: number; descriptors: Descriptor[] } {
  const descriptors: Descriptor[] = [];
  for (let at = 4; at + 8 <= c.payload.length; at += 8) {
    descriptors.push({ length: c.payload.readUInt32BE(at), flags: c.payload.readUInt32BE(at + 4) });
  }
  return { contextId: c.payload.readUInt32BE(0), descriptors };
}

// ---- the client ----

export interface GoOptions {
  readonly name?: string;
  /** client flags; FIXED_NEWSTYLE|NO_ZEROES unless told */
  readonly clientFlags?: number;
  readonly structured?: boolean;
  /** SET_META_CONTEXT queries (needs structured) */
  readonly metaContexts?: readonly string[];
  readonly infos?: readonly number[];
}

export interface Session {
  readonly size: number;
  readonly flags: number;
  /** context id of base:allocation, if selected */
  readonly contextId: number | undefined;
}

export class RawNbd {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private endError: Error | undefined;
  private wakeup: (() => void) | undefined;
  /** resolves when the server closed the connection (or the socket failed) */
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      this.wake();
    });
    let onClosed: () => void = () => undefined;
    this.closed = new Promise<void>((resolve) => { onClosed = resolve; });
    const finish = (e?: Error): void => {
      if (e !== undefined) this.endError ??= e;
      this.ended = true;
      this.wake();
      onClosed();
    };
    socket.on('end', () => finish());
    socket.on('close', () => finish());
    socket.on('error', (e) => finish(e));
  }

  static connect(host: string, port: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port });
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`connect to ${host}:${port} timed out`)); }, timeoutMs);
      s.once('error', (e) => { clearTimeout(timer); reject(e); });
      s.once('connect', () => {
        clearTimeout(timer);
        s.setNoDelay(true);
        resolve(new RawNbd(s));
      });
    });
  }

  /** Connects, reads the greeting, does the handshake (optionally structured replies and meta contexts) and NBD_OPT_GO. */
  static async open(host: string, port: number, o: GoOptions = {}): Promise<{ c: RawNbd; session: Session }> {
    const c = await RawNbd.connect(host, port);
    try {
      await c.readGreeting();
      c.sendClientFlags(o.clientFlags ?? (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES));
      const session = await c.go(o);
      return { c, session };
    } catch (e) {
      c.destroy();
      throw e;
    }
  }

  private wake(): void {
    const w = this.wakeup;
    this.wakeup = undefined;
    w?.();
  }

  /** Bytes received and not consumed yet. */
  get available(): number { return this.buffered; }

  /** True once the server closed its side (or the socket failed). */
  get isClosed(): boolean { return this.ended; }

  /** Reads exactly n bytes; fails on timeout or when the connection ends first. */
  async read(n: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this.ended) {
        throw new Error(`connection closed after ${this.buffered} of ${n} bytes${this.endError ? ` (${this.endError.message})` : ''}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms with ${this.buffered} of ${n} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wakeup = () => { clearTimeout(timer); resolve(); };
      });
    }
    return this.take(n);
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0] as Buffer;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }

  /**
   * Waits until the server closes the connection; returns whatever it sent
   * that was not read yet. Fails if it is still open after timeoutMs.
   */
  async expectClose(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); });
    const outcome = await Promise.race([this.closed.then(() => 'closed' as const), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') throw new Error(`server did not close the connection within ${timeoutMs} ms`);
    return this.take(this.buffered);
  }

  /** True if nothing arrives and the connection stays open for ms. */
  async quietFor(ms: number): Promise<boolean> {
    const before = this.buffered;
    await new Promise((resolve) => setTimeout(resolve, ms));
    return this.buffered === before && !this.ended;
  }

  /** Sends raw bytes; resolves when they were handed to the kernel. */
  send(bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (e) => (e ? reject(e) : resolve()));
    });
  }

  /** Stops taking bytes off the socket: the kernel buffers fill and TCP pushes back on the server. */
  stopReading(): void { this.socket.pause(); }

  startReading(): void { this.socket.resume(); }

  destroy(): void { this.socket.destroy(); }

  // ---- handshake ----

  async readGreeting(): Promise<Greeting> {
    const raw = await this.read(18);
    return { magic: raw.readBigUInt64BE(0), ihaveopt: raw.readBigUInt64BE(8), flags: raw.readUInt16BE(16), raw };
  }

  sendClientFlags(flags: number): Promise<void> { return this.send(u32(flags)); }

  sendOption(option: number, data?: Buffer): Promise<void> { return this.send(encodeOption(option, data)); }

  async readOptionReply(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<OptionReply> {
    const h = await this.read(20, timeoutMs);
    const length = h.readUInt32BE(16);
    const data = await this.read(length, timeoutMs);
    return { magic: h.readBigUInt64BE(0), option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
  }

  /** Sends an option and collects replies up to and including the first that is not REP_INFO/REP_SERVER/REP_META_CONTEXT. */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    await this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      if (r.magic !== NBD_OPT_REPLY_MAGIC) throw new Error(`bad option reply magic 0x${r.magic.toString(16)}`);
      if (r.option !== option) throw new Error(`reply for option ${r.option}, expected ${option}`);
      replies.push(r);
      if (r.type !== NBD_REP_INFO && r.type !== NBD_REP_SERVER && r.type !== NBD_REP_META_CONTEXT) return replies;
    }
  }

  /** After the client flags: optional STRUCTURED_REPLY and SET_META_CONTEXT, then GO. Throws unless GO succeeds. */
  async go(o: GoOptions = {}): Promise<Session> {
    const name = o.name ?? '';
    let contextId: number | undefined;
    if (o.structured === true) {
      const r = await this.option(NBD_OPT_STRUCTURED_REPLY);
      if (r.at(-1)?.type !== NBD_REP_ACK) throw new Error('structured replies refused');
    }
    if (o.metaContexts !== undefined) {
      const r = await this.option(NBD_OPT_SET_META_CONTEXT, metaData(name, [...o.metaContexts]));
      if (r.at(-1)?.type !== NBD_REP_ACK) throw new Error(`SET_META_CONTEXT failed: 0x${(r.at(-1)?.type ?? 0).toString(16)}`);
      for (const x of r) {
        if (x.type === NBD_REP_META_CONTEXT && x.data.subarray(4).toString() === 'base:allocation') contextId = x.data.readUInt32BE(0);
      }
    }
    const replies = await this.option(NBD_OPT_GO, goData(name, [...(o.infos ?? [])]));
    const last = replies.at(-1) as OptionReply;
    if (last.type !== NBD_REP_ACK) throw new Error(`GO ${JSON.stringify(name)} failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    const info = replies.find((r) => r.type === NBD_REP_INFO && r.data.readUInt16BE(0) === NBD_INFO_EXPORT);
    if (info === undefined) throw new Error('GO succeeded without NBD_INFO_EXPORT');
    return { size: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10), contextId };
  }

  // ---- transmission ----

  request(r: RequestSpec): Promise<void> { return this.send(encodeRequest(r)); }

  /**
   * Reads one reply message: a simple reply (with `readLength` bytes of data
   * after it when its error is 0, for a READ without structured replies) or
   * one structured chunk.
   */
  async readReply(readLength = 0, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Reply> {
    const magicBytes = await this.read(4, timeoutMs);
    const magic = magicBytes.readUInt32BE(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(SIMPLE_REPLY_HEADER_BYTES - 4, timeoutMs);
      const error = rest.readUInt32BE(0);
      const data = error === 0 && readLength > 0 ? await this.read(readLength, timeoutMs) : Buffer.alloc(0);
      return { kind: 'simple', error, cookie: rest.readBigUInt64BE(4), data };
    }
    if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
      const rest = await this.read(STRUCTURED_REPLY_HEADER_BYTES - 4, timeoutMs);
      const flags = rest.readUInt16BE(0);
      const payload = await this.read(rest.readUInt32BE(12), timeoutMs);
      return { kind: 'chunk', flags, type: rest.readUInt16BE(2), cookie: rest.readBigUInt64BE(4), payload, done: (flags & NBD_REPLY_FLAG_DONE) !== 0 };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  async readSimpleReply(readLength = 0, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<SimpleReply> {
    const r = await this.readReply(readLength, timeoutMs);
    if (r.kind !== 'simple') throw new Error(`expected a simple reply, got a structured chunk of type ${r.type}`);
    return r;
  }

  /** Reads structured chunks up to and including the one with the DONE flag. */
  async readStructuredReply(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Chunk[]> {
    const chunks: Chunk[] = [];
    for (;;) {
      const r = await this.readReply(0, timeoutMs);
      if (r.kind !== 'chunk') throw new Error(`expected a structured chunk, got a simple reply (error ${r.error})`);
      chunks.push(r);
      if (r.done) return chunks;
    }
  }

  /** Sends NBD_CMD_DISC and closes. */
  async disconnect(): Promise<void> {
    if (this.ended) return;
    try {
      await this.request({ type: NBD_CMD_DISC });
    } catch {
      // already gone
    }
    this.socket.end();
    this.socket.destroySoon();
  }
}
