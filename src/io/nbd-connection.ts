// One client connection: the handshake machine, then the transmission loop
// that validates each request, runs it against the export's store and replies.
// Memory is bounded by admission: a request whose bytes do not fit the
// connection's and the server's budgets stalls the parser and the socket.
import type net from 'node:net';
import type { Backend } from '../storage/backend';
import { StoreError } from '../storage/backend';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_CACHE, NBD_CMD_DISC, NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM,
} from '../protocol/nbd/constants';
import type { ExportCatalog } from '../protocol/nbd/export-info';
import { Handshake, serverGreeting, type Negotiated } from '../protocol/nbd/handshake';
import type { NbdLimits, NbdServerLimits } from '../protocol/nbd/limits';
import {
  blockStatusChunk, errorChunk, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply,
} from '../protocol/nbd/reply';
import { RequestParser, validateRequest, type Rejection, type RequestHeader, type RequestSink } from '../protocol/nbd/request';
import type { ByteBudget } from '../util/byte-budget';
import type { Logger } from '../util/log';
import type { BufferPool } from './buffer-pool';

export interface ConnectionContext {
  readonly catalog: ExportCatalog;
  readonly backendFor: (exportName: string) => Backend;
  readonly limits: NbdLimits;
  readonly serverLimits: NbdServerLimits;
  readonly budget: ByteBudget;
  readonly pool: BufferPool;
  readonly log: Logger;
  readonly shuttingDown: () => boolean;
}

export interface ConnectionStats {
  requests: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
}

function nbdErrno(e: unknown): number {
  const code = e instanceof StoreError ? e.code : (e as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOSPC': case 'EDQUOT': case 'EFBIG': return NBD_ENOSPC;
    case 'EPERM': case 'EACCES': case 'EROFS': return NBD_EPERM;
    case 'ENOTSUP': case 'EOPNOTSUPP': return NBD_ENOTSUP;
    case 'ENOMEM': return NBD_ENOMEM;
    default: return NBD_EIO;
  }
}

/** The write whose payload is arriving: its pieces are stored as they come. */
interface WriteInProgress {
  readonly req: RequestHeader;
  readonly pieces: Promise<void>[];
  /** the whole payload, for a store that wants one write per request (Backend.wholeWrites); from the pool */
  readonly whole: Buffer | undefined;
  failure: unknown;
}

export class NbdConnection implements RequestSink {
  readonly stats: ConnectionStats = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0 };
  private readonly handshake: Handshake;
  private parser: RequestParser | undefined;
  private negotiated: Negotiated | undefined;
  private backend: Backend | undefined;
  /** bytes this connection holds in admitted requests, also taken from the server budget */
  private inflightBytes = 0;
  private inflightRequests = 0;
  private rejection: Rejection | undefined;
  /** budget of the admitted request whose end() has not come yet (a write mid-payload) */
  private unendedCost = 0;
  private write: WriteInProgress | undefined;
  private draining = false;
  /** our side is ended: input is read and dropped so the client's FIN can arrive */
  private finishing = false;
  private closed = false;
  private waitingForBudget = false;
  private corked = false;
  private closeReason = 'client disconnected';
  private readonly opened = Date.now();
  private handshakeTimer: NodeJS.Timeout | undefined;
  private readonly closedWaiters: Array<() => void> = [];

  constructor(private readonly socket: net.Socket, private readonly ctx: ConnectionContext, readonly peer: string) {
    this.handshake = new Handshake(ctx.catalog, { limits: ctx.limits, shuttingDown: ctx.shuttingDown });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.wake());
    socket.on('error', (e) => { this.closeReason = `socket error: ${e.message}`; });
    socket.on('close', () => this.onClose());
    this.handshakeTimer = setTimeout(() => this.hardClose('handshake timed out'), ctx.serverLimits.handshakeTimeoutMs);
    socket.write(serverGreeting());
  }

  /** Resolves when the socket is closed. */
  whenClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  /** Stops taking requests; those in flight finish and are answered, then the connection closes. */
  drain(): void {
    this.draining = true;
    if (this.parser === undefined) { this.hardClose('server shutting down'); return; }
    this.maybeFinish();
  }

  hardClose(reason: string): void {
    if (this.closed) return;
    this.closeReason = reason;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.finishing) return;
    if (this.parser !== undefined) {
      this.parser.push(chunk);
      return;
    }
    for (const step of this.handshake.receive(chunk)) {
      if (step.kind === 'send') {
        this.send(step.data);
      } else if (step.kind === 'close') {
        this.closeReason = step.reason;
        if (!step.soft) this.ctx.log.warn('handshake refused', { peer: this.peer, reason: step.reason });
        this.endOurSide();
      } else {
        this.startTransmission(step.negotiated, step.rest);
      }
    }
  }

  private startTransmission(n: Negotiated, rest: Buffer): void {
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.negotiated = n;
    this.backend = this.ctx.backendFor(n.export.name);
    this.parser = new RequestParser(this);
    this.ctx.log.info('connection open', {
      peer: this.peer, export: n.export.name, structured: n.structuredReplies,
      base_allocation: n.baseAllocationId !== undefined,
    });
    if (this.draining) { this.maybeFinish(); return; }
    if (rest.length > 0) this.parser.push(rest);
  }

  // ---- RequestSink ----

  admit(req: RequestHeader): boolean {
    if (this.draining || this.closed) { this.stall(); return false; }
    const n = this.negotiated as Negotiated;
    this.rejection = validateRequest(req, n, this.ctx.limits);
    const cost = this.rejection === undefined && (req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE) ? req.length : 0;
    const fitsHere = this.inflightBytes === 0 || this.inflightBytes + cost <= this.ctx.serverLimits.connectionInflightBytesMax;
    const queueOk = this.socket.writableLength <= this.ctx.serverLimits.replyQueueBytesMax;
    if (!fitsHere || !queueOk) { this.stall(); return false; }
    if (cost > 0 && !this.ctx.budget.tryTake(cost)) {
      if (!this.waitingForBudget) {
        this.waitingForBudget = true;
        this.ctx.budget.waitForRelease(() => { this.waitingForBudget = false; this.wake(); });
      }
      this.stall();
      return false;
    }
    this.inflightBytes += cost;
    this.unendedCost = cost;
    this.inflightRequests++;
    this.stats.requests++;
    if (req.type === NBD_CMD_WRITE && this.rejection === undefined) {
      // pooled: a fresh megabyte per write costs more in page faults and collections than its copy
      const whole = this.backend?.wholeWrites === true ? this.ctx.pool.take(req.length).subarray(0, req.length) : undefined;
      this.write = { req, pieces: [], whole, failure: undefined };
    }
    return true;
  }

  payload(req: RequestHeader, data: Buffer, at: number): void {
    const w = this.write;
    if (w === undefined || w.req !== req) return; // a rejected write's payload is skipped
    if (w.failure !== undefined) return;
    if (w.whole !== undefined) {
      data.copy(w.whole, at);
      return;
    }
    const p = (this.backend as Backend).write(data, req.offset + at);
    // Keep only pending pieces: a synchronous store has already finished and fails by rejecting.
    w.pieces.push(p.catch((e: unknown) => { w.failure ??= e; }));
  }

  end(req: RequestHeader): void {
    this.unendedCost = 0;
    const rejection = this.rejection;
    this.rejection = undefined;
    if (rejection !== undefined) {
      this.stats.errors++;
      this.ctx.log.debug('request rejected', { peer: this.peer, type: req.type, reason: rejection.message });
      this.replyError(req, rejection.errno, rejection.message);
      this.finishRequest(0);
      return;
    }
    if (req.type === NBD_CMD_DISC) {
      this.closeReason = 'client disconnected (NBD_CMD_DISC)';
      this.draining = true;
      this.finishRequest(0);
      return;
    }
    void this.run(req);
  }

  framingError(reason: string): void {
    this.ctx.log.warn('protocol error, disconnecting', { peer: this.peer, reason });
    this.hardClose(`protocol error: ${reason}`);
  }

  // ---- request execution ----

  private async run(req: RequestHeader): Promise<void> {
    const b = this.backend as Backend;
    const fua = (req.flags & NBD_CMD_FLAG_FUA) !== 0;
    try {
      switch (req.type) {
        case NBD_CMD_READ:
          await this.read(req);
          return; // read() replies and releases itself
        case NBD_CMD_WRITE: {
          const w = this.write as WriteInProgress;
          this.write = undefined;
          if (w.whole !== undefined) {
            await b.write(w.whole, req.offset);
            // only after a write that settled well: a failed one may still be referenced by the store
            this.ctx.pool.give(w.whole);
          }
          if (w.pieces.length > 0) await Promise.all(w.pieces);
          if (w.failure !== undefined) throw w.failure;
          if (fua) await b.flush();
          this.stats.bytesWritten += req.length;
          break;
        }
        case NBD_CMD_FLUSH:
          await b.flush();
          break;
        case NBD_CMD_TRIM:
          await b.trim(req.offset, req.length);
          if (fua) await b.flush();
          break;
        case NBD_CMD_WRITE_ZEROES:
          await b.zero(req.offset, req.length, {
            noHole: (req.flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
            fast: (req.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
          });
          if (fua) await b.flush();
          break;
        case NBD_CMD_CACHE:
          await b.cache(req.offset, req.length);
          break;
        case NBD_CMD_BLOCK_STATUS:
          await this.blockStatus(req);
          return;
      }
      this.replyOk(req);
    } catch (e) {
      this.failed(req, e);
    }
    this.finishRequest(req.type === NBD_CMD_WRITE ? req.length : 0);
  }

  private failed(req: RequestHeader, e: unknown): void {
    this.stats.errors++;
    const errno = nbdErrno(e);
    // ENOTSUP for a FAST_ZERO is an answer, not a fault
    if (errno !== NBD_ENOTSUP) this.ctx.log.warn('request failed', { peer: this.peer, type: req.type, offset: req.offset, length: req.length, error: (e as Error).message });
    this.replyError(req, errno, (e as Error).message);
  }

  private async read(req: RequestHeader): Promise<void> {
    const n = this.negotiated as Negotiated;
    if (req.length === 0) {
      // an OFFSET_DATA chunk must carry at least one byte: answer with NONE
      this.replyOk(req);
      this.finishRequest(0);
      return;
    }
    const whole = this.ctx.pool.take(req.length);
    const buf = whole.subarray(0, req.length);
    const release = (): void => {
      this.ctx.pool.give(whole);
      this.finishRequest(req.length);
    };
    try {
      await (this.backend as Backend).read(buf, req.offset);
    } catch (e) {
      this.failed(req, e);
      release();
      return;
    }
    this.stats.bytesRead += req.length;
    if (this.closed) { release(); return; }
    if (!n.structuredReplies) {
      this.send(simpleReply(req, 0));
      this.send(buf, () => release());
      return;
    }
    const holeMap = (req.flags & NBD_CMD_FLAG_DF) === 0 && n.export.canExtents &&
      req.length >= this.ctx.serverLimits.readHoleMapBytesMin;
    let extents: Array<{ offset: number; length: number; hole: boolean }> = [];
    if (holeMap) {
      try {
        extents = await (this.backend as Backend).extents(req.offset, req.length, this.ctx.serverLimits.readHoleMapExtentsMax);
      } catch {
        extents = []; // the data was read; without a map it is sent as data
      }
    }
    const end = req.offset + req.length;
    const covered = extents.reduce((s, x) => s + x.length, 0);
    if (extents.length === 0 || (extents.length === 1 && !(extents[0] as { hole: boolean }).hole)) {
      this.send(offsetDataHeader(req, true, req.offset, req.length));
      this.send(buf, () => release());
      return;
    }
    if (covered < req.length) extents.push({ offset: req.offset + covered, length: end - req.offset - covered, hole: false });
    for (let i = 0; i < extents.length; i++) {
      const x = extents[i] as { offset: number; length: number; hole: boolean };
      const last = i === extents.length - 1;
      if (x.hole) {
        this.send(offsetHoleChunk(req, last, x.offset, x.length), last ? () => release() : undefined);
      } else {
        this.send(offsetDataHeader(req, last, x.offset, x.length));
        const at = x.offset - req.offset;
        this.send(buf.subarray(at, at + x.length), last ? () => release() : undefined);
      }
    }
  }

  private async blockStatus(req: RequestHeader): Promise<void> {
    const n = this.negotiated as Negotiated;
    const limits = this.ctx.limits;
    const length = Math.min(req.length, limits.blockStatusBytesMax);
    const reqOne = (req.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
    try {
      const extents = await (this.backend as Backend).extents(req.offset, length, reqOne ? 1 : limits.blockStatusDescriptorsMax);
      this.send(blockStatusChunk(req, n.baseAllocationId as number, extents));
    } catch (e) {
      this.failed(req, e);
    }
    this.finishRequest(0);
  }

  // ---- replies and bookkeeping ----

  /**
   * Writes to the client. Everything written in one turn of the event loop leaves in one writev:
   * the replies to a chunk's requests, and the write replies that one batch of the peer's
   * acknowledgements releases (at QD32, a syscall per reply was a ninth of the primary's time).
   */
  private send(data: Buffer, written?: () => void): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => { this.corked = false; this.socket.uncork(); });
    }
    if (written === undefined) this.socket.write(data);
    else this.socket.write(data, () => written());
  }

  private replyOk(req: RequestHeader): void {
    if (this.closed) return;
    const n = this.negotiated as Negotiated;
    this.send(n.structuredReplies && req.type === NBD_CMD_READ ? noneChunk(req) : simpleReply(req, 0));
  }

  private replyError(req: RequestHeader, errno: number, message: string): void {
    if (this.closed) return;
    const n = this.negotiated as Negotiated;
    this.send(n.structuredReplies ? errorChunk(req, errno, message) : simpleReply(req, errno));
  }

  private finishRequest(cost: number): void {
    this.inflightRequests--;
    if (cost > 0) {
      this.inflightBytes -= cost;
      this.ctx.budget.release(cost);
    }
    this.wake();
    this.maybeFinish();
  }

  private stall(): void {
    this.socket.pause();
  }

  private wake(): void {
    if (this.closed || this.draining || this.parser === undefined) return;
    if (this.parser.stalled) this.parser.resume();
    if (!this.parser.stalled) this.socket.resume();
  }

  private maybeFinish(): void {
    if (!this.draining || this.closed || this.finishing || this.inflightRequests > 0) return;
    this.endOurSide();
  }

  private endOurSide(): void {
    this.finishing = true;
    this.socket.end();
    // a paused socket never sees the client's FIN, so 'close' would wait for the drain timeout
    this.socket.resume();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.handshakeTimer);
    if (this.unendedCost > 0) {
      // the client left in the middle of a write's payload: give its budget back
      // once the pieces already handed to the store have settled
      const cost = this.unendedCost;
      this.unendedCost = 0;
      const pieces = this.write?.pieces ?? [];
      this.write = undefined;
      void Promise.all(pieces).then(() => this.finishRequest(cost));
    }
    const s = this.stats;
    this.ctx.log.info('connection closed', {
      peer: this.peer, export: this.negotiated?.export.name ?? '-', reason: this.closeReason,
      seconds: ((Date.now() - this.opened) / 1000).toFixed(1), requests: s.requests, errors: s.errors,
      read_bytes: s.bytesRead, written_bytes: s.bytesWritten,
    });
    for (const w of this.closedWaiters.splice(0)) w();
  }
}

