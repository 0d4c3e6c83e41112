// The witness process: one UDP socket, the rules of src/cluster/witness-rules,
// and the state file. A decision that changes the persisted state is written
// (atomically, fsync'd) before its reply is sent; if the write fails, the
// decision is undone and no reply goes out, so the node sees a timeout.
import dgram from 'node:dgram';
import net from 'node:net';
import {
  handle, persistedView, startWitnessState, type WitnessState,
} from '../cluster/witness-rules';
import { decodeWitnessRequest, encodeWitnessReply, witnessKey, type WitnessRequestMessage } from '../protocol/witness/codec';
import { monotonicMs } from '../util/clock';
import type { Logger } from '../util/log';
import type { WitnessConfig } from './config';
import { RefusalLog } from './refusal-log';
import { readWitnessStateFile, writeWitnessStateFile } from './state-file';

export interface WitnessServerOptions {
  readonly config: WitnessConfig;
  readonly listen: { readonly host: string; readonly port: number };
  readonly log: Logger;
  /** a reason refused again within this window is counted, not logged (default 10 s) */
  readonly refusalLogIntervalMs?: number;
}

export interface WitnessNodeStatus {
  readonly name: string;
  readonly alone: boolean;
  readonly fenced: boolean;
  readonly leaseMs: number;
  /** since the node last renewed (or the witness started) */
  readonly sinceRenewMs: number;
}

export interface WitnessStatus {
  readonly name: string;
  readonly address: { readonly host: string; readonly port: number };
  readonly uptimeMs: number;
  /** datagrams received */
  readonly received: number;
  /** GRANT replies sent */
  readonly granted: number;
  /** dropped datagrams (malformed, unknownCluster, badMac) and REFUSE replies, by reason */
  readonly refused: Readonly<Record<string, number>>;
  /** decisions undone because the state file could not be written */
  readonly persistFailures: number;
  readonly clusters: ReadonlyArray<{ readonly id: string; readonly term: number; readonly nodes: readonly WitnessNodeStatus[] }>;
}

function bind(socket: dgram.Socket, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    socket.once('error', onError);
    socket.bind(port, host, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}

const CHANGES_STATE: ReadonlySet<WitnessRequestMessage['type']> = new Set(['claim', 'alone', 'clear']);

export class WitnessServer {
  private state: WitnessState;
  private received = 0;
  private granted = 0;
  private persistFailures = 0;
  private readonly refusals: RefusalLog;
  private readonly keys: ReadonlyMap<string, Buffer>;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly o: WitnessServerOptions,
    private readonly socket: dgram.Socket,
    readonly address: { readonly host: string; readonly port: number },
  ) {
    this.keys = new Map(o.config.clusters.map((c) => [c.id.toString('hex'), witnessKey(c.secret, c.id)]));
    // the state is read only once the address is ours: a second witness started
    // by mistake on the same address fails at bind, before it touches the file
    const persisted = readWitnessStateFile(o.config.stateFile);
    this.state = startWitnessState(monotonicMs(), [...this.keys.keys()], persisted);
    for (const [id, c] of this.state.clusters) {
      if (!this.keys.has(id)) o.log.warn('keeping the state of a cluster not in the configuration', { cluster: id, term: c.term });
    }
    // written at once, so an unwritable state file stops the start instead of the first decision
    writeWitnessStateFile(o.config.stateFile, persistedView(this.state));
    this.refusals = new RefusalLog(o.log, o.refusalLogIntervalMs ?? 10_000, monotonicMs);
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    socket.on('error', (e) => o.log.error('socket error', { error: e.message }));
  }

  /** Binds, loads the state file (creating it when absent) and starts answering. Throws on a bind or state file error. */
  static async start(o: WitnessServerOptions): Promise<WitnessServer> {
    const socket = dgram.createSocket({ type: net.isIPv6(o.listen.host) ? 'udp6' : 'udp4' });
    try {
      await bind(socket, o.listen.host, o.listen.port);
      const a = socket.address();
      return new WitnessServer(o, socket, { host: a.address, port: a.port });
    } catch (e) {
      socket.close();
      throw e;
    }
  }

  status(): WitnessStatus {
    const now = monotonicMs();
    return {
      name: this.o.config.name,
      address: this.address,
      uptimeMs: now - this.state.startedAt,
      received: this.received,
      granted: this.granted,
      refused: this.refusals.counts(),
      persistFailures: this.persistFailures,
      clusters: [...this.state.clusters].map(([id, c]) => ({
        id,
        term: c.term,
        nodes: [...c.nodes].map(([name, n]) => ({ name, alone: n.alone, fenced: n.fenced, leaseMs: n.leaseMs, sinceRenewMs: now - n.lastRenewAt })),
      })),
    };
  }

  close(): Promise<void> {
    this.closing ??= new Promise((resolve) => {
      this.refusals.close();
      this.socket.close(() => resolve());
    });
    return this.closing;
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.received += 1;
    const from = `${rinfo.address}:${rinfo.port}`;
    const d = decodeWitnessRequest(msg, (id) => this.keys.get(id.toString('hex')));
    if (!d.ok) {
      this.refusals.count(d.reason, { from, detail: d.detail });
      return;
    }
    const req = d.message;
    const cluster = req.clusterId.toString('hex');
    const decision = handle(this.state, monotonicMs(), req);
    if (decision.persist) {
      try {
        writeWitnessStateFile(this.o.config.stateFile, persistedView(decision.state));
      } catch (e) {
        this.persistFailures += 1;
        this.o.log.error('cannot write the state file: decision undone, no reply', {
          file: this.o.config.stateFile, error: (e as Error).message, type: req.type, sender: req.sender,
        });
        return;
      }
    }
    this.state = decision.state;
    const { granted, reason, term } = decision.reply;
    for (const name of decision.learned) this.o.log.info('new node', { cluster, node: name });
    if (granted) {
      this.granted += 1;
      if (CHANGES_STATE.has(req.type)) {
        const fields: Record<string, unknown> = { cluster, type: req.type, sender: req.sender, term };
        if (req.subject !== '') fields.subject = req.subject;
        if (req.clear !== null) fields.flag = req.clear;
        this.o.log.info('granted', fields);
      }
    } else {
      this.refusals.count(reason, { from, cluster, type: req.type, sender: req.sender, ...(req.subject === '' ? {} : { subject: req.subject }) });
    }
    const key = this.keys.get(cluster) as Buffer;
    const reply = encodeWitnessReply({ granted, reason, clusterId: req.clusterId, requestId: req.requestId, term, sender: this.o.config.name }, key);
    this.socket.send(reply, rinfo.port, rinfo.address, (err) => {
      if (err) this.o.log.warn('cannot send a reply', { to: from, error: err.message });
    });
  }
}
