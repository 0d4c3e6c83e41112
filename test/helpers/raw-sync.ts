// A raw TCP client for a node's sync port: sends exactly the bytes it is told
// to, keeps what the node answers, and tells when the node closed the
// connection. With the cluster secret it can also complete the handshake as a
// peer and then speak authenticated frames (for replay and MAC tests).
import crypto from 'node:crypto';
import net from 'node:net';
import { SyncAuth, type AuthDone } from '../../src/protocol/sync/auth';
import { FRAME_HEADER_BYTES, FrameDecoder, FrameEncoder, SYNC_MAGIC, type Frame } from '../../src/protocol/sync/frame';
import { syncLimits } from '../../src/protocol/sync/limits';
import { decodeMessage, SyncMessageType, type SyncMessage } from '../../src/protocol/sync/messages';

export class RawSync {
  private chunks: Buffer[] = [];
  private listener: ((d: Buffer) => void) | undefined;
  private wake: (() => void) | undefined;
  private ended = false;
  /** everything received, in order */
  readonly received: Buffer[] = [];
  /** resolves when the connection is fully closed (or failed) */
  readonly closed: Promise<void>;
  /** resolves when the node ended or reset its side */
  readonly peerEnded: Promise<void>;
  closedAt: number | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.received.push(d);
      if (this.listener !== undefined) this.listener(d);
      else this.chunks.push(d);
      this.poke();
    });
    let onEnded: () => void = () => undefined;
    this.peerEnded = new Promise((resolve) => { onEnded = resolve; });
    const ended = (): void => {
      this.ended = true;
      this.closedAt ??= Date.now();
      onEnded();
      this.poke();
    };
    socket.on('end', ended);
    socket.on('error', ended);
    this.closed = new Promise((resolve) => socket.on('close', () => { ended(); resolve(); }));
  }

  static connect(host: string, port: number, timeoutMs = 5000): Promise<RawSync> {
    return new Promise((resolve, reject) => {
      // half-open: after our end() we still see what the node sends and when it closes
      const s = net.connect({ host, port, allowHalfOpen: true });
      s.setNoDelay(true);
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`connect to ${host}:${port} timed out`)); }, timeoutMs);
      s.once('error', (e) => { clearTimeout(timer); reject(e); });
      s.once('connect', () => { clearTimeout(timer); resolve(new RawSync(s)); });
    });
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  get isEnded(): boolean { return this.ended; }

  /** all bytes received so far */
  all(): Buffer { return Buffer.concat(this.received); }

  send(bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.destroyed || !this.socket.writable) { reject(new Error('socket closed')); return; }
      this.socket.write(bytes, (e) => (e ? reject(e) : resolve()));
    });
  }

  /** Closes our sending side (FIN). */
  end(): void { this.socket.end(); }

  destroy(): void { this.socket.destroy(); }

  /** The next chunk received, or undefined once the node closed (or after timeoutMs). */
  async readChunk(timeoutMs: number): Promise<Buffer | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const c = this.chunks.shift();
      if (c !== undefined) return c;
      if (this.ended) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  /** From now on every chunk (queued ones first) goes to f. */
  onData(f: (d: Buffer) => void): void {
    for (const c of this.chunks.splice(0)) f(c);
    this.listener = f;
  }

  /** True when the node ended the connection within timeoutMs. */
  async closedByPeerWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.peerEnded.then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); }),
    ]);
    clearTimeout(timer);
    return r;
  }
}

export interface RawFrame {
  readonly type: number;
  readonly seq: bigint;
  readonly payload: Buffer;
}

/**
 * Splits the frames one side sent during the handshake: no MAC up to and
 * including that side's AUTH, a 16-byte MAC on every later frame. Stops at
 * the first thing that is not a frame or is cut short.
 */
export function splitHandshakeFrames(b: Buffer): RawFrame[] {
  const out: RawFrame[] = [];
  let at = 0;
  let sentAuth = false;
  while (b.length - at >= FRAME_HEADER_BYTES) {
    if (b.readUInt32BE(at) !== SYNC_MAGIC) break;
    const type = b.readUInt16BE(at + 6);
    const seq = b.readBigUInt64BE(at + 8);
    const length = b.readUInt32BE(at + 16);
    const total = FRAME_HEADER_BYTES + length + (sentAuth ? syncLimits.macBytes : 0);
    if (b.length - at < total) break;
    out.push({ type, seq, payload: b.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length) });
    if (type === SyncMessageType.AUTH) sentAuth = true;
    at += total;
  }
  return out;
}

/** The REJECT code in frames, if the node sent one. */
export function rejectCode(frames: readonly RawFrame[]): number | undefined {
  const r = frames.find((f) => f.type === SyncMessageType.REJECT);
  return r === undefined || r.payload.length < 4 ? undefined : r.payload.readUInt32BE(0);
}

export interface HandshakeOptions {
  readonly clusterId: Buffer;
  readonly secret: Buffer;
  readonly nodeName: string;
  readonly timeoutMs?: number;
}

export type HandshakeOutcome =
  | { readonly kind: 'done'; readonly done: AuthDone }
  | { readonly kind: 'failed'; readonly code: string; readonly reason: string }
  | { readonly kind: 'closed' };

/**
 * Runs the initiator's side of the handshake over raw. Our own REJECT (when
 * our side fails, e.g. with a wrong secret) is not sent: the node must find
 * the fault by itself.
 */
export async function initiatorHandshake(raw: RawSync, o: HandshakeOptions): Promise<HandshakeOutcome> {
  const auth = new SyncAuth({
    role: 'initiator', clusterId: o.clusterId, clusterSecret: o.secret, nodeName: o.nodeName,
    nonce: crypto.randomBytes(syncLimits.nonceBytes),
  });
  const sendFrames = async (frames: Buffer[]): Promise<void> => {
    for (const f of frames) {
      if (f.readUInt16BE(6) === SyncMessageType.REJECT) continue;
      await raw.send(f);
    }
  };
  await sendFrames(auth.start().send);
  const deadline = Date.now() + (o.timeoutMs ?? 5000);
  for (;;) {
    const chunk = await raw.readChunk(Math.max(1, deadline - Date.now()));
    if (chunk === undefined) return { kind: 'closed' };
    const step = auth.step(chunk);
    await sendFrames(step.send);
    if (step.done !== undefined) return { kind: 'done', done: step.done };
    if (step.fail !== undefined) return { kind: 'failed', code: step.fail.code, reason: step.fail.reason };
  }
}

/** An authenticated session over raw: frames out with MACs, PONGs (and any frame type) in. */
export class RawSession {
  readonly encoder: FrameEncoder;
  readonly frames: Array<Frame<SyncMessage | undefined>> = [];
  decodeError: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(readonly raw: RawSync, done: AuthDone) {
    this.encoder = new FrameEncoder({ key: done.sessionKeys.send, nextSeq: done.sendSeq });
    // only PING and PONG are decoded; the node's other messages are kept as frames
    const decoder = new FrameDecoder<SyncMessage | undefined>((f) => { this.frames.push(f); this.poke(); }, {
      key: done.sessionKeys.receive, nextSeq: done.receiveSeq,
      decode: (type, payload, limits) => (type === SyncMessageType.PING || type === SyncMessageType.PONG ? decodeMessage(type, payload, limits) : undefined),
    });
    const push = (d: Buffer): void => {
      if (this.decodeError !== undefined) return;
      try {
        decoder.push(d);
      } catch (e) {
        this.decodeError = e as Error;
      }
    };
    if (done.rest.length > 0) push(done.rest);
    raw.onData(push);
    void raw.peerEnded.then(() => this.poke());
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** tokens of the PONGs received */
  pongs(): bigint[] {
    return this.frames.flatMap((f) => (f.message?.type === SyncMessageType.PONG ? [f.message.token] : []));
  }

  /** Waits for a PONG carrying token. */
  async waitPong(token: bigint, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.pongs().includes(token)) return true;
      const left = deadline - Date.now();
      if (left <= 0 || this.raw.isEnded) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  /** One frame with the next sequence number and a MAC. */
  frame(m: SyncMessage): Buffer {
    return this.encoder.encode(m);
  }
}
