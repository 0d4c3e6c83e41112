// A tiny NBD client for tests: fixed newstyle handshake with NBD_OPT_GO, then
// simple replies only (no structured replies are negotiated). Requests carry
// 64-bit cookies; replies are matched to requests by cookie, so any number
// may be in flight and they may complete in any order.
import net from 'node:net';
import {
  IHAVEOPT, NBD_CMD_DISC, NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_WRITE, NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_INFO_EXPORT, NBD_OPT_GO, NBD_OPT_REPLY_MAGIC,
  NBD_REP_ACK, NBD_REP_INFO, NBD_SIMPLE_REPLY_MAGIC, NBDMAGIC, SIMPLE_REPLY_HEADER_BYTES,
} from '../../src/protocol/nbd/constants';
import { encodeRequestHeader } from '../../src/protocol/nbd/request';

/** The server answered a request with a non-zero error (an NBD errno such as NBD_EPERM). */
export class NbdRequestError extends Error {
  override readonly name = 'NbdRequestError';
  constructor(readonly errno: number, readonly type: number, readonly cookie: bigint) {
    super(`NBD request type ${type} (cookie 0x${cookie.toString(16)}) failed with errno ${errno}`);
  }
}

interface Pending {
  readonly type: number;
  readonly length: number;
  readonly cookie: bigint;
  readonly resolve: (data: Buffer) => void;
  readonly reject: (e: Error) => void;
}

export interface NbdConnectOptions {
  readonly exportName?: string;
  readonly timeoutMs?: number;
  /** keep our side open after the server closes its side (net's allowHalfOpen); default false */
  readonly allowHalfOpen?: boolean;
}

/** Reads exact byte counts from a socket during the handshake. */
class HandshakeReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private readonly onData = (d: Buffer): void => {
    this.buf = Buffer.concat([this.buf, d]);
    this.waiter?.();
  };

  private readonly onError = (e: Error): void => {
    this.failure ??= e;
    this.waiter?.();
  };

  private readonly onClose = (): void => {
    this.failure ??= new Error('server closed the connection during the handshake');
    this.waiter?.();
  };

  async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.failure !== undefined) throw this.failure;
      await new Promise<void>((resolve) => { this.waiter = resolve; });
      this.waiter = undefined;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Stops listening; returns whatever arrived beyond the handshake. */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    return this.buf;
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

export class NbdClient {
  private readonly pending = new Map<bigint, Pending>();
  private rx: Buffer = Buffer.alloc(0);
  /** cookies start high so both 32-bit halves are exercised */
  private nextCookie = 0xfeed_0000_0000_0000n;
  private closedError: Error | undefined;
  private readonly closedPromise: Promise<void>;
  private readonly endedPromise: Promise<void>;

  private constructor(
    private readonly socket: net.Socket,
    /** export size in bytes */
    readonly size: number,
    /** NBD transmission flags (NBD_FLAG_*) */
    readonly transmissionFlags: number,
    leftover: Buffer,
  ) {
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    this.endedPromise = new Promise((resolve) => {
      socket.once('end', () => resolve());
      socket.once('close', () => resolve());
    });
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => { this.closedError ??= e; });
    socket.on('close', () => this.failAll(this.closedError ?? new Error('connection closed')));
    if (leftover.length > 0) this.onData(leftover);
  }

  /**
   * Connects, retrying every stepMs until it works: a client of a floating address while it moves.
   * Throws the last error once `deadline` (Date.now() ms) has passed, or when stopped() says so.
   */
  static async connectUntil(
    host: string, port: number, deadline: number, o: NbdConnectOptions & { stepMs?: number; stopped?: () => boolean } = {},
  ): Promise<NbdClient> {
    for (;;) {
      try {
        return await NbdClient.connect(host, port, o);
      } catch (e) {
        if (Date.now() > deadline || (o.stopped?.() ?? false)) throw e;
        await new Promise((resolve) => setTimeout(resolve, o.stepMs ?? 20));
      }
    }
  }

  /** Connects and negotiates with NBD_OPT_GO. */
  static async connect(host: string, port: number, o: NbdConnectOptions = {}): Promise<NbdClient> {
    const socket = net.connect({ host, port, allowHalfOpen: o.allowHalfOpen ?? false });
    socket.setNoDelay(true);
    const reader = new HandshakeReader(socket);
    const timer = setTimeout(() => socket.destroy(new Error('NBD handshake timed out')), o.timeoutMs ?? 10_000);
    try {
      const greeting = await reader.take(18);
      if (greeting.readBigUInt64BE(0) !== NBDMAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
        throw new Error(`not a fixed newstyle NBD server: ${greeting.toString('hex')}`);
      }
      const serverFlags = greeting.readUInt16BE(16);
      if ((serverFlags & NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new Error('server lacks NBD_FLAG_FIXED_NEWSTYLE');
      const noZeroes = (serverFlags & NBD_FLAG_NO_ZEROES) !== 0;
      socket.write(u32(NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0)));

      const name = Buffer.from(o.exportName ?? '');
      const data = Buffer.concat([u32(name.length), name, Buffer.from([0, 0])]); // no information requests
      const opt = Buffer.alloc(16);
      opt.writeBigUInt64BE(IHAVEOPT, 0);
      opt.writeUInt32BE(NBD_OPT_GO, 8);
      opt.writeUInt32BE(data.length, 12);
      socket.write(Buffer.concat([opt, data]));

      let size: number | undefined;
      let flags = 0;
      for (;;) {
        const h = await reader.take(20);
        if (h.readBigUInt64BE(0) !== NBD_OPT_REPLY_MAGIC) throw new Error(`bad option reply magic ${h.toString('hex', 0, 8)}`);
        const option = h.readUInt32BE(8);
        const type = h.readUInt32BE(12);
        const len = h.readUInt32BE(16);
        const body = await reader.take(len);
        if (option !== NBD_OPT_GO) throw new Error(`reply for option ${option}, expected NBD_OPT_GO`);
        if (type === NBD_REP_ACK) break;
        if ((type & 0x80000000) !== 0) {
          throw new Error(`NBD_OPT_GO refused: reply type 0x${type.toString(16)} ${body.toString('utf8')}`);
        }
        if (type === NBD_REP_INFO && body.length >= 12 && body.readUInt16BE(0) === NBD_INFO_EXPORT) {
          size = Number(body.readBigUInt64BE(2));
          flags = body.readUInt16BE(10);
        }
      }
      if (size === undefined) throw new Error('server acknowledged NBD_OPT_GO without NBD_INFO_EXPORT');
      clearTimeout(timer);
      return new NbdClient(socket, size, flags, reader.detach());
    } catch (e) {
      clearTimeout(timer);
      reader.detach();
      socket.on('error', () => { /* already failed */ });
      socket.destroy();
      throw e;
    }
  }

  /** requests sent and not answered yet */
  get inFlight(): number { return this.pending.size; }

  get closed(): boolean { return this.socket.destroyed; }

  read(offset: number, length: number): Promise<Buffer> {
    return this.request(NBD_CMD_READ, 0, offset, length);
  }

  async write(offset: number, data: Buffer, o: { fua?: boolean } = {}): Promise<void> {
    await this.request(NBD_CMD_WRITE, o.fua === true ? NBD_CMD_FLAG_FUA : 0, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(NBD_CMD_FLUSH, 0, 0, 0);
  }

  /** Sends any request; for READ, resolves with the data. */
  request(type: number, flags: number, offset: number, length: number, payload?: Buffer): Promise<Buffer> {
    try {
      const { header, reply } = this.prepare(type, flags, offset, length);
      this.socket.write(payload === undefined ? header : Buffer.concat([header, payload]));
      return reply;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Encodes a request and registers it for its reply without sending anything:
   * the test sends the bytes itself with sendRaw (a header alone, a payload in
   * pieces, several requests in one write).
   */
  prepare(type: number, flags: number, offset: number, length: number): { header: Buffer; reply: Promise<Buffer> } {
    if (this.closedError !== undefined || this.socket.destroyed) throw this.closedError ?? new Error('connection closed');
    const cookie = this.nextCookie++;
    const header = encodeRequestHeader({
      flags, type, offset, length,
      cookieHi: Number(cookie >> 32n), cookieLo: Number(cookie & 0xffffffffn),
    });
    const reply = new Promise<Buffer>((resolve, reject) => {
      this.pending.set(cookie, { type, length, cookie, resolve, reject });
    });
    return { header, reply };
  }

  /** Writes bytes to the socket as they are. */
  sendRaw(data: Buffer): void {
    this.socket.write(data);
  }

  /** Sends NBD_CMD_DISC and waits for the server to close. */
  async disconnect(): Promise<void> {
    if (!this.socket.destroyed) {
      const header = encodeRequestHeader({ flags: 0, type: NBD_CMD_DISC, offset: 0, length: 0, cookieHi: 0, cookieLo: 0 });
      this.socket.end(header);
    }
    await this.closedPromise;
  }

  /** Closes our sending side (FIN) without NBD_CMD_DISC. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves when the server has closed its side (or the socket closed). */
  whenServerEnded(): Promise<void> {
    return this.endedPromise;
  }

  /** Resolves when the socket has closed (for whatever reason). */
  whenClosed(): Promise<void> {
    return this.closedPromise;
  }

  private onData(d: Buffer): void {
    this.rx = this.rx.length === 0 ? d : Buffer.concat([this.rx, d]);
    while (this.rx.length >= SIMPLE_REPLY_HEADER_BYTES) {
      const magic = this.rx.readUInt32BE(0);
      if (magic !== NBD_SIMPLE_REPLY_MAGIC) {
        this.protocolError(`bad reply magic 0x${magic.toString(16)}`);
        return;
      }
      const errno = this.rx.readUInt32BE(4);
      const cookie = this.rx.readBigUInt64BE(8);
      const p = this.pending.get(cookie);
      if (p === undefined) {
        this.protocolError(`reply with unknown cookie 0x${cookie.toString(16)}`);
        return;
      }
      // a simple reply to a successful READ is followed by exactly the data asked for
      const dataLength = p.type === NBD_CMD_READ && errno === 0 ? p.length : 0;
      if (this.rx.length < SIMPLE_REPLY_HEADER_BYTES + dataLength) return;
      const data = Buffer.from(this.rx.subarray(SIMPLE_REPLY_HEADER_BYTES, SIMPLE_REPLY_HEADER_BYTES + dataLength));
      this.rx = this.rx.subarray(SIMPLE_REPLY_HEADER_BYTES + dataLength);
      this.pending.delete(cookie);
      if (errno === 0) p.resolve(data);
      else p.reject(new NbdRequestError(errno, p.type, cookie));
    }
  }

  private protocolError(reason: string): void {
    this.closedError ??= new Error(`NBD protocol error: ${reason}`);
    this.socket.destroy();
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
