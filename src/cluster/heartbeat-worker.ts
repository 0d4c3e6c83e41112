// The heartbeat worker thread (docs/cluster.md, "Heartbeats"). It sends and
// judges heartbeats, and renews the witness lease, away from the main event
// loop: a slow disk or a long hash there must not make this node look dead.
// It does no disk I/O, and only talks to IP literals (a name would need a
// lookup in libuv's thread pool, which the main thread's file I/O can fill).
//
// It stops sending - heartbeats and RENEWs - while the main thread has not
// stamped its liveness for mainStallMs: a truly hung node must be failed over,
// and a witness that keeps hearing RENEWs would refuse the peer's CLAIM.
// A shorter silence (over timeoutMs) only sets the MAIN_STALLED flag.
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { decodeHeartbeat, deriveHeartbeatKey, encodeHeartbeat, HeartbeatFlags } from '../protocol/heartbeat/codec';
import { monotonicMs } from '../util/clock';
import { SharedState, type HeartbeatCounters, type HeartbeatWorkerData, type HostPort, type MainToWorker, type WorkerToMain } from './heartbeat-shared';
import { Liveness, type LivenessView } from './liveness';
import { WitnessClient, type WitnessClientRequest } from './witness-client';

function socketFor(host: string): dgram.Socket {
  return dgram.createSocket({ type: isIP(host) === 6 ? 'udp6' : 'udp4' });
}

function bind(socket: dgram.Socket, at: HostPort): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: at.host, port: at.port }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}

function buf(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

class HeartbeatWorker {
  private readonly clusterId: Buffer;
  private readonly key: Buffer;
  private readonly liveness: Liveness;
  private readonly shared: SharedState;
  private readonly sockets: dgram.Socket[] = [];
  private witnessSocket: dgram.Socket | undefined;
  private witness: WitnessClient | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private renewing = false;
  private renewsInFlight = 0;
  private maintenance = false;
  private sendErrors = 0;
  private stalledTicks = 0;
  private witnessAckSentAt = NaN;
  /** what the main thread was last told */
  private posted: { peer: 'up' | 'down'; incarnation: number | null; linksUp: readonly boolean[] };

  constructor(private readonly d: HeartbeatWorkerData, private readonly port: MessagePort) {
    this.clusterId = Buffer.from(buf(d.clusterId));
    this.key = deriveHeartbeatKey(buf(d.secret), this.clusterId);
    this.liveness = new Liveness({
      selfName: d.selfName, peerName: d.peerName, incarnation: d.incarnation, links: d.links.length,
      intervalMs: d.intervalMs, timeoutMs: d.timeoutMs, sentSeqsMax: d.sentSeqsMax,
    });
    this.shared = new SharedState(d.shared);
    this.posted = { peer: 'down', incarnation: null, linksUp: d.links.map(() => false) };
  }

  async start(): Promise<void> {
    this.port.on('message', (m: MainToWorker) => this.onMessage(m));
    try {
      for (const [i, link] of this.d.links.entries()) {
        const s = socketFor(link.listen.host);
        this.sockets.push(s);
        await bind(s, link.listen);
        s.on('message', (msg) => this.onDatagram(i, msg));
        // a send error also arrives here on some systems; the send callback counts it
        s.on('error', () => undefined);
      }
      await this.startWitness();
      // close() came while the sockets were binding: release the ones bound since
      if (this.closed) {
        this.release();
        return;
      }
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      this.post({ type: 'failed', code: err.code ?? 'ERR_HEARTBEAT_START', message: err.message });
      this.close();
      return;
    }
    this.post({ type: 'ready' });
    this.tick();
    this.timer = setInterval(() => this.tick(), this.d.intervalMs);
  }

  private async startWitness(): Promise<void> {
    const w = this.d.witness;
    const first = this.d.links[0];
    if (w === null || first === undefined) return;
    const s = socketFor(first.listen.host);
    this.witnessSocket = s;
    await bind(s, { host: first.listen.host, port: 0 });
    s.on('error', () => undefined);
    const client = new WitnessClient({
      clusterId: this.clusterId, secret: buf(this.d.secret), nodeName: this.d.selfName, incarnation: this.d.incarnation,
      leaseMs: w.leaseMs, address: w.address, timeoutMs: w.timeoutMs, socket: s,
    });
    this.witness = client;
    s.on('message', (msg, from) => { client.handle(msg, { address: from.address, port: from.port }); });
  }

  private onMessage(m: MainToWorker): void {
    switch (m.type) {
      case 'renewing': this.renewing = m.on; return;
      case 'maintenance': this.maintenance = m.on; return;
      case 'witness-request': this.forward(m.id, m.request, m.subject); return;
      case 'close': this.close(); return;
    }
  }

  private tick(): void {
    if (this.closed) return;
    const now = monotonicMs();
    const mainAgeMs = now - this.shared.mainStamp();
    if (mainAgeMs >= this.d.mainStallMs) {
      this.stalledTicks++;
    } else {
      const flags = (this.maintenance ? HeartbeatFlags.MAINTENANCE : 0) | (mainAgeMs >= this.d.timeoutMs ? HeartbeatFlags.MAIN_STALLED : 0);
      this.sendHeartbeats(now, flags);
      this.renew();
    }
    this.publish(now);
  }

  private sendHeartbeats(now: number, flags: number): void {
    for (const [i, link] of this.d.links.entries()) {
      const s = this.sockets[i] as dgram.Socket;
      const datagram = encodeHeartbeat({ ...this.liveness.nextHeartbeat(now, i), flags, clusterId: this.clusterId }, this.key);
      s.send(datagram, link.peer.port, link.peer.host, (err) => { if (err) this.sendErrors++; });
    }
  }

  /**
   * One RENEW per interval while the main thread wants the lease. They may
   * overlap - a lost reply must not delay the next RENEW by a whole timeout -
   * up to as many as one timeout holds.
   */
  private renew(): void {
    const w = this.witness;
    const o = this.d.witness;
    if (!this.renewing || w === undefined || o === null) return;
    if (this.renewsInFlight > Math.ceil(o.timeoutMs / this.d.intervalMs)) return;
    this.renewsInFlight++;
    w.request('renew').then((r) => {
      this.renewsInFlight--;
      if (r.granted && !(r.sentAt <= this.witnessAckSentAt)) this.witnessAckSentAt = r.sentAt;
      if (!this.closed) this.publish(monotonicMs());
    }, () => { this.renewsInFlight--; });
  }

  /** A request of the main thread's, through the one client whose request ids the witness has seen grow. */
  private forward(id: number, request: WitnessClientRequest, subject: string | undefined): void {
    const w = this.witness;
    if (w === undefined) {
      this.post({ type: 'witness-error', id, code: 'ERR_HEARTBEAT_STATE', message: 'no witness is configured' });
      return;
    }
    w.request(request, subject).then(
      (reply) => { if (!this.closed) this.post({ type: 'witness-reply', id, reply }); },
      (e: unknown) => {
        if (!this.closed) this.post({ type: 'witness-error', id, code: (e as { code?: string }).code ?? 'ERR_WITNESS', message: (e as Error).message });
      },
    );
  }

  private onDatagram(linkIndex: number, msg: Buffer): void {
    if (this.closed) return;
    const now = monotonicMs();
    const d = decodeHeartbeat(msg, this.clusterId, this.key);
    if (!d.ok) {
      this.liveness.count(d.reason);
      this.writeShared(this.liveness.view(now));
      return;
    }
    this.liveness.accept(now, linkIndex, d.heartbeat);
    this.publish(now);
  }

  /** Writes the shared state and tells the main thread what changed. */
  private publish(now: number): void {
    const v = this.liveness.view(now);
    this.writeShared(v);
    const p = this.posted;
    if (v.peer === 'up' && v.peerIncarnation !== null && (p.peer === 'down' || v.peerIncarnation !== p.incarnation)) {
      p.peer = 'up';
      p.incarnation = v.peerIncarnation;
      this.post({ type: 'peer-up', now, incarnation: v.peerIncarnation });
    } else if (v.peer === 'down' && p.peer === 'up') {
      p.peer = 'down';
      this.post({ type: 'peer-down', now, lastHeardAt: v.lastHeardAt ?? now });
    }
    if (v.links.some((l, i) => l.up !== p.linksUp[i])) {
      p.linksUp = v.links.map((l) => l.up);
      this.post({ type: 'links', now, up: v.links.filter((l) => l.up).length, total: v.links.length, links: v.links });
    }
  }

  private writeShared(v: LivenessView): void {
    const counters: HeartbeatCounters = { ...this.liveness.counters, sendErrors: this.sendErrors, stalledTicks: this.stalledTicks };
    this.shared.writeWorker({
      peerAckSentAt: v.peerAckSentAt ?? NaN,
      lastHeardAt: v.lastHeardAt ?? NaN,
      witnessAckSentAt: this.witnessAckSentAt,
      peerFlags: v.peerIncarnation === null ? NaN : v.peerFlags,
      counters,
    });
  }

  private post(m: WorkerToMain): void {
    this.port.postMessage(m);
  }

  /** Stops everything this thread holds, so its event loop empties and the thread ends. */
  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.release();
    this.port.close();
  }

  private release(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.witness?.close();
    for (const s of [...this.sockets, ...(this.witnessSocket === undefined ? [] : [this.witnessSocket])]) {
      try {
        s.close();
      } catch {
        // never bound, or already closed
      }
    }
  }
}

if (parentPort === null) throw new Error('heartbeat-worker runs as a worker thread (see cluster/heartbeat.ts)');
void new HeartbeatWorker(workerData as HeartbeatWorkerData, parentPort).start();
