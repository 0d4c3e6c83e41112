// One authenticated sync link over any duplex byte stream (a TCP socket, or an
// in-memory pair in tests): the handshake, framing with per-frame MACs, and a
// keepalive. Messages go out in the order send() is called.
import { randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { SyncAuth, type AuthDone, type SyncRole } from '../protocol/sync/auth';
import { SyncProtocolError } from '../protocol/sync/errors';
import { FrameDecoder, FrameEncoder, type Frame } from '../protocol/sync/frame';
import { SyncMessageType, syncMessageTypeName, type SyncMessage } from '../protocol/sync/messages';
import { syncLimits } from '../protocol/sync/limits';
import { BufferPool } from '../io/buffer-pool';
import { replicationLimits } from './limits';

export interface SyncLinkOptions {
  readonly role: SyncRole;
  readonly clusterId: Buffer;
  readonly clusterSecret: Buffer;
  readonly nodeName: string;
  /** the only peer this node accepts */
  readonly peerName: string;
  readonly pingIntervalMs: number;
  /** the handshake, and silence afterwards, may last this long */
  readonly timeoutMs: number;
}

export class SyncLinkError extends Error {
  override readonly name = 'SyncLinkError';
  constructor(readonly code: string, message: string) { super(message); }
}

/** Runs the handshake on `stream`; resolves with the link, or rejects (and destroys the stream). */
export function establishLink(stream: Duplex, o: SyncLinkOptions): Promise<SyncLink> {
  return new Promise<SyncLink>((resolve, reject) => {
    const auth = new SyncAuth({
      role: o.role, clusterId: o.clusterId, clusterSecret: o.clusterSecret, nodeName: o.nodeName,
      nonce: randomBytes(syncLimits.nonceBytes),
    });
    let settled = false;
    const finish = (err: Error | undefined, done?: AuthDone): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('error', onError);
      stream.off('close', onClose);
      if (err !== undefined) {
        // let the REJECT reach the peer, then close
        stream.end();
        setTimeout(() => stream.destroy(), 100).unref();
        reject(err);
        return;
      }
      stream.pause();
      resolve(new SyncLink(stream, o, done as AuthDone));
    };
    const send = (frames: Buffer[]): void => { for (const f of frames) stream.write(f); };
    const onData = (chunk: Buffer): void => {
      let step;
      try {
        step = auth.step(chunk);
      } catch (e) {
        finish(e as Error);
        return;
      }
      send(step.send);
      if (step.fail !== undefined) finish(new SyncProtocolError(step.fail.code, step.fail.reason));
      else if (step.done !== undefined) {
        if (step.done.peerName !== o.peerName) {
          finish(new SyncLinkError('ERR_SYNC_PEER', `peer calls itself ${JSON.stringify(step.done.peerName)}, expected ${JSON.stringify(o.peerName)}`));
        } else {
          finish(undefined, step.done);
        }
      }
    };
    const onError = (e: Error): void => finish(new SyncLinkError('ERR_SYNC_IO', `sync link failed during the handshake: ${e.message}`));
    const onClose = (): void => finish(new SyncLinkError('ERR_SYNC_CLOSED', 'the peer closed the connection during the handshake'));
    const timer = setTimeout(() => finish(new SyncLinkError('ERR_SYNC_TIMEOUT', `handshake not done within ${o.timeoutMs} ms`)), o.timeoutMs);
    stream.on('data', onData);
    stream.on('error', onError);
    stream.on('close', onClose);
    send(auth.start().send);
  });
}

export type MessageHandler = (m: SyncMessage) => void;

export class SyncLink {
  readonly peerName: string;
  private readonly encoder: FrameEncoder;
  private readonly decoder: FrameDecoder;
  private handler: MessageHandler | undefined;
  private readonly closeHandlers: Array<(reason: string) => void> = [];
  private closedReason: string | undefined;
  private lastHeard = Date.now();
  private readonly pinger: NodeJS.Timeout;
  private pingToken = 0n;
  private pauses = 0;
  private corked = false;
  /** bytes that came with the handshake's last frame: the first of the session */
  private rest: Buffer;
  /** memory for received frames that span chunks (mirrored writes, resync data), reused via recycle() */
  private readonly frames = new BufferPool(replicationLimits.recycledFrameBytesMax);
  bytesSent = 0;
  bytesReceived = 0;
  /** a socket's writes copy the data out of the buffers given to it */
  private readonly copiesOnWrite: boolean;

  constructor(private readonly stream: Duplex, private readonly o: SyncLinkOptions, done: AuthDone) {
    this.peerName = done.peerName;
    this.copiesOnWrite = stream instanceof Socket;
    this.encoder = new FrameEncoder({ key: done.sessionKeys.send, nextSeq: done.sendSeq });
    this.decoder = new FrameDecoder((f) => this.onFrame(f), {
      key: done.sessionKeys.receive, nextSeq: done.receiveSeq, allocate: (n) => this.frames.take(n),
    });
    this.pinger = setInterval(() => this.keepalive(), o.pingIntervalMs);
    this.pinger.unref();
    stream.on('error', (e: Error) => this.close(`sync link failed: ${e.message}`));
    stream.on('close', () => this.close('the peer closed the sync link'));
    stream.on('end', () => this.close('the peer closed the sync link'));
    this.rest = done.rest;
    stream.on('data', (chunk: Buffer) => this.receive(chunk));
  }

  get closed(): boolean { return this.closedReason !== undefined; }

  /** Starts delivering messages (call once the owner is ready for them). */
  start(handler: MessageHandler): void {
    this.handler = handler;
    const rest = this.rest;
    this.rest = Buffer.alloc(0);
    if (rest.length > 0) this.receive(rest);
    this.stream.resume();
  }

  onClose(f: (reason: string) => void): void {
    if (this.closedReason !== undefined) queueMicrotask(() => f(this.closedReason as string));
    else this.closeHandlers.push(f);
  }

  /**
   * Queues a message; false when the link is closed (the message is dropped). `written` runs once
   * nothing holds the message's buffers any more - a socket has copied them into the kernel, or a
   * failed link dropped them - so the caller may reuse the data it sent. It never runs when send()
   * returns false, nor on a stream that hands buffers on by reference (the in-memory pairs of tests):
   * such buffers belong to the reader.
   */
  send(m: SyncMessage, written?: () => void): boolean {
    if (this.closedReason !== undefined) return false;
    const parts = this.encoder.encodeParts(m);
    const s = this.stream;
    // messages queued in one turn of the event loop leave in one writev, at the next tick
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(() => { this.corked = false; s.uncork(); });
    }
    const last = parts.length - 1;
    parts.forEach((p, i) => {
      // a stream calls back its writes in order, so the last one's callback covers them all
      if (i === last && written !== undefined && this.copiesOnWrite) s.write(p, () => written());
      else s.write(p);
      this.bytesSent += p.length;
    });
    return true;
  }

  /**
   * A received message's bytes (any view of them) are no longer used: their memory may carry a later
   * frame. Memory the link did not allocate is left alone.
   */
  recycle(view: Buffer): void {
    this.frames.give(view);
  }

  /** Stops reading (the receiver is over its budget); every pause needs one resume. */
  pause(): void {
    if (this.pauses++ === 0) this.stream.pause();
  }

  resume(): void {
    if (--this.pauses === 0 && this.closedReason === undefined) {
      this.lastHeard = Date.now();
      this.stream.resume();
    }
  }

  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    clearInterval(this.pinger);
    this.stream.destroy();
    for (const f of this.closeHandlers.splice(0)) f(reason);
  }

  private receive(chunk: Buffer): void {
    if (this.closedReason !== undefined) return;
    this.bytesReceived += chunk.length;
    this.lastHeard = Date.now();
    try {
      this.decoder.push(chunk);
    } catch (e) {
      if (e instanceof SyncProtocolError) this.close(`${e.code}: ${e.message}`);
      else this.close(`message handler failed: ${(e as Error).stack ?? String(e)}`);
    }
  }

  private onFrame(f: Frame): void {
    const m = f.message;
    switch (m.type) {
      case SyncMessageType.PING:
        this.send({ type: SyncMessageType.PONG, token: m.token });
        return;
      case SyncMessageType.PONG:
        return;
      case SyncMessageType.HELLO:
      case SyncMessageType.AUTH:
      case SyncMessageType.AUTH_OK:
      case SyncMessageType.REJECT:
        throw new SyncProtocolError('ERR_SYNC_STATE', `${syncMessageTypeName(m.type)} after the handshake`);
    }
    if (this.handler === undefined) throw new SyncProtocolError('ERR_SYNC_STATE', 'message before the link was started');
    this.handler(m);
  }

  private keepalive(): void {
    if (this.closedReason !== undefined) return;
    // a paused reader hears nothing by choice: the peer is not silent
    if (this.pauses === 0 && Date.now() - this.lastHeard > this.o.timeoutMs) {
      this.close(`peer silent for more than ${this.o.timeoutMs} ms`);
      return;
    }
    this.send({ type: SyncMessageType.PING, token: ++this.pingToken });
  }
}
