// The node daemon: opens its copy of every volume, keeps the sync link to the
// peer (dialling or accepting it), exports the volumes it is primary for over
// NBD, and answers the status and command API. It owns every socket and timer;
// the replication logic lives in src/replication.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { newVolume } from '../core/generations';
import { ChangeTracking, changeTrackingGeometry, changeTrackingPaths } from '../storage/change-tracking';
import { DiskStall } from '../storage/stall-backend';
import { createVolume, openVolume, readMetadata, writeMetadata, type Volume } from '../storage/volume-store';
import { ByteBudget } from '../util/byte-budget';
import type { Logger } from '../util/log';
import { replicationLimits } from '../replication/limits';
import { dispatchPeerMessage, type DispatchContext } from '../replication/dispatch';
import { PeerSession } from '../replication/peer-session';
import { Replica } from '../replication/replica';
import type { ClusterStateStatus, NodeStatus } from '../replication/status';
import { establishLink, type SyncLink } from '../replication/sync-link';
import { SyncMessageType } from '../protocol/sync/messages';
import type { Command, VolumeFacts } from '../cluster/machine-types';
import { describeIp, hostForUrl, type FloatingIpDriver } from '../pool/floating-ip';
import { LinuxDriver } from '../pool/linux-driver';
import { LoopbackDriver } from '../pool/loopback-driver';
import { startApi, type ApiServer } from './api';
import { ClusterConfigStore, type Section } from './cluster-config';
import { ClusterDriver, type ClusterHost } from './cluster-driver';
import { sectionContext, type NodeConfig, type PoolConfig, type VolumeConfig } from './config';
import { Exports } from './exports';
import { Notifier } from './notify';
import { PoolHost } from './pool-host';

export function wireVolumeId(clusterId: Buffer, volumeName: string): Buffer {
  return createHash('sha256').update(clusterId).update('\0volume\0').update(volumeName).digest().subarray(0, 16);
}

/** Opens this node's copy of a volume, creating it (and its tracking files) at the first start. */
async function openCopy(cfg: NodeConfig, v: VolumeConfig, log: Logger): Promise<{ volume: Volume; tracking: ChangeTracking }> {
  const dir = path.join(cfg.node.dataDir, 'volumes');
  fs.mkdirSync(dir, { recursive: true });
  const backingPath = path.join(dir, `${v.name}.img`);
  // the metadata path is explicit, so a data directory under /dev (e.g. /dev/shm) is not taken for a device
  const loc = { backingPath, metaPath: `${backingPath}.tandem.json` };
  const geometry = changeTrackingGeometry({ volumeBytes: v.size, extentsMax: v.activityLogExtents });
  const existing = readMetadata(`${backingPath}.tandem.json`);
  if (existing === undefined) {
    const m = createVolume(loc, v.size);
    const initial = newVolume(m.generations.current, { initialSource: v.primary === cfg.node.name });
    writeMetadata(`${backingPath}.tandem.json`, { ...m, generations: initial.generations, diskState: initial.diskState });
    const paths = changeTrackingPaths(backingPath);
    for (const p of [paths.bitmapPath, paths.activityLogPath]) fs.rmSync(p, { force: true });
    const t = await ChangeTracking.create(backingPath, geometry);
    await t.closeClean();
    log.info('volume created', { volume: v.name, size: v.size, diskState: initial.diskState });
  } else if (existing.size !== v.size) {
    throw new Error(`volume ${v.name}: ${backingPath} holds ${existing.size} bytes but the configuration says ${v.size}`);
  }
  const volume = openVolume(loc);
  try {
    return { volume, tracking: await ChangeTracking.open(backingPath, geometry) };
  } catch (e) {
    await volume.backend.close();
    throw e;
  }
}

export class NodeDaemon {
  private readonly replicas = new Map<string, Replica>();
  private readonly byWireId = new Map<string, Replica>();
  private link: SyncLink | undefined;
  private session: PeerSession | undefined;
  private syncServer: net.Server | undefined;
  private readonly exports: Exports;
  private readonly floatingIps: FloatingIpDriver;
  readonly pools: PoolHost;
  readonly cluster: ClusterDriver;
  private readonly notifier: Notifier;
  private api: ApiServer | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private dialTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private readonly applyBudget = new ByteBudget(replicationLimits.applyBytesMax);
  /** with faults.enabled: the window in which client I/O hangs (docs/cluster.md, "Fault injection") */
  readonly diskStall: DiskStall | undefined;

  private readonly dispatchContext: DispatchContext;

  /** the node file, with the volumes and pools of the cluster configuration document in force */
  cfg: NodeConfig;
  readonly clusterConfig: ClusterConfigStore;
  /** changes of the cluster configuration take effect one at a time */
  private applying: Promise<void> = Promise.resolve();

  constructor(fileCfg: NodeConfig, private readonly log: Logger) {
    this.clusterConfig = new ClusterConfigStore({
      dataDir: fileCfg.node.dataDir, node: fileCfg.node.name, ctx: sectionContext(fileCfg), seed: fileCfg.seed, log: log.child('config'),
    });
    const cfg: NodeConfig = { ...fileCfg, ...this.clusterConfig.current };
    this.cfg = cfg;
    this.dispatchContext = {
      nodeName: cfg.node.name,
      log,
      replicas: () => this.replicas.values(),
      replica: (wireId) => this.byWireId.get(wireId.toString('hex')),
      cluster: (json) => this.onClusterMessage(json),
    };
    this.diskStall = cfg.faults.enabled ? new DiskStall() : undefined;
    this.exports = new Exports(log, this.diskStall);
    const fl = cfg.floatingIp;
    this.floatingIps = fl.driver === 'linux'
      ? new LinuxDriver({ probeMs: fl.probeMs, announceCount: fl.announceCount, log: log.child('floating-ip') })
      : new LoopbackDriver();
    const current = (): NodeConfig => this.cfg;
    this.pools = new PoolHost({
      // the configuration in force, read at each use: the cluster configuration changes it
      get cfg() { return current(); },
      log: log.child('pool'), driver: this.floatingIps, exports: this.exports, replica: (v) => this.need(v),
      note: (level, event, message, extra) => this.cluster.note(level, event, message, extra),
      failover: (p, reason) => {
        this.cluster.command({ kind: 'swap', pool: p.name }).then(
          (r) => this.cluster.note(r.ok ? 'info' : 'error', 'app-failover', r.ok
            ? `pool ${p.name} handed to ${cfg.peer.name} after its application failed: ${r.message}`
            : `pool ${p.name} cannot fail over (${r.message}); it stays here with its application failed: ${reason}`, { pool: p.name, ok: r.ok }),
          (e: unknown) => this.log.error('failing a pool over failed', { pool: p.name, error: String(e) }),
        );
      },
    });
    this.cluster = new ClusterDriver(cfg, this.clusterHost(), log.child('cluster'));
    this.notifier = new Notifier(cfg.notify, cfg.node.name, cfg.cluster.name, log.child('notify'));
    this.cluster.onActivity((e) => this.notifier.onActivity(e));
  }

  private clusterHost(): ClusterHost {
    const replicasOf = (p: PoolConfig): Replica[] => p.volumes.map((v) => this.need(v));
    return {
      activate: async (p, report) => {
        // a meeting under way decides the resync direction: promote after it, not in the middle
        const deadline = Date.now() + this.cfg.sync.timeoutMs;
        while (!replicasOf(p).every((r) => r.settled) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        await this.pools.activate(p, report, async (r) => {
          // after a handover the peer's demotion reaches this copy with the next meeting, just behind the handover
          for (;;) {
            try {
              await r.promote({ force: false });
              return;
            } catch (e) {
              if ((e as { code?: string }).code !== 'ERR_PEER_PRIMARY' || Date.now() >= deadline) throw e;
              await new Promise((res) => setTimeout(res, 20));
            }
          }
        });
      },
      // clients go first, so nothing is admitted while the roles change
      deactivate: (p, report) => this.pools.deactivate(p, report),
      // a suspended pool also gives up its addresses, so the peer can serve them if it takes the pool over
      suspend: (p, reason) => {
        for (const r of replicasOf(p)) r.suspend(reason);
        this.pools.suspend(p).catch((e: unknown) => this.log.error('releasing a suspended pool failed', { pool: p.name, error: String(e) }));
      },
      resume: (p, report) => {
        for (const r of replicasOf(p)) r.resume();
        this.pools.resume(p, report).catch((e: unknown) => this.log.error('serving a resumed pool failed', { pool: p.name, error: String(e) }));
      },
      volumeFacts: (v): VolumeFacts => {
        const r = this.need(v);
        return { diskState: r.diskState, connected: r.isConnected, inSync: r.inSync };
      },
      sendPeer: (json) => {
        const link = this.link;
        if (link === undefined || link.closed) return false;
        link.send({ type: SyncMessageType.CLUSTER, json });
        return true;
      },
    };
  }

  get nodeName(): string { return this.cfg.node.name; }

  async start(): Promise<void> {
    const cfg = this.cfg;
    try {
      for (const v of cfg.volumes) await this.openReplica(v);
      await this.pools.removeLeftovers();
      this.api = await startApi(this, cfg.node.apiListen, this.log.child('api'));
      await this.listenSync();
      await this.cluster.start();
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.ticker = setInterval(() => {
      // one deadline check per link, however many volumes share it
      this.session?.tick(Date.now());
      for (const r of this.replicas.values()) r.tick();
    }, Math.min(250, cfg.sync.pingIntervalMs));
    if (this.dials()) this.dial();
  }

  private async openReplica(v: VolumeConfig): Promise<Replica> {
    const cfg = this.cfg;
    const { volume, tracking } = await openCopy(cfg, v, this.log);
    const r = new Replica({
      name: v.name, wireId: wireVolumeId(cfg.cluster.id, v.name), nodeName: cfg.node.name, peerName: cfg.peer.name,
      volume, tracking, role: v.primary === cfg.node.name ? 'PRIMARY' : 'SECONDARY', cacheMode: v.cacheMode,
      splitBrainPolicy: v.afterSplitBrain, resyncRateBytesPerSecond: v.resyncRate, checksumResync: v.checksumResync,
      log: this.log.child(v.name), applyBudget: this.applyBudget,
      alonePolicy: this.cluster.alonePolicy(), roleFromCluster: true, ackBeforePeer: cfg.faults.ackBeforePeer,
    });
    r.handshakeTimeoutMs = cfg.sync.timeoutMs;
    this.replicas.set(v.name, r);
    this.byWireId.set(r.wireId.toString('hex'), r);
    return r;
  }

  // ------------------------------------------------------------------ the cluster configuration

  /** A CLUSTER message: the peer's configuration document, or one for the cluster machine. */
  private onClusterMessage(json: string): void {
    let v: unknown;
    try {
      v = JSON.parse(json);
    } catch (e) {
      this.cluster.note('warn', 'peer-garbage', `a CLUSTER message from the peer was refused: not JSON: ${(e as Error).message}`);
      return;
    }
    const kind = typeof v === 'object' && v !== null ? (v as { kind?: unknown }).kind : undefined;
    if (kind !== 'config') { this.cluster.onPeerMessage(v); return; }
    const document = (v as { document?: unknown }).document;
    const r = this.clusterConfig.receive(document);
    switch (r.kind) {
      case 'same': return;
      case 'send-ours': this.sendConfig(); return;
      case 'diverged': this.cluster.note('error', 'config-diverged', r.message); return;
      case 'refused': this.cluster.note('error', 'config-refused', r.message); return;
      case 'adopted':
        this.cluster.note('info', 'config-adopted', `cluster configuration epoch ${this.clusterConfig.document.epoch} from ${this.cfg.peer.name}: ${this.clusterConfig.document.change}`);
        void this.apply(r.section);
    }
  }

  private sendConfig(): void {
    const link = this.link;
    if (link !== undefined && !link.closed) link.send({ type: SyncMessageType.CLUSTER, json: this.clusterConfig.message() });
  }

  /**
   * A change asked of this node (the pool lifecycle commands): the next epoch, on disk, to the
   * peer, then in effect here. Resolves when it has taken effect on this node.
   */
  async changeConfig(what: string, edit: Parameters<ClusterConfigStore['change']>[1]): Promise<void> {
    const section = this.clusterConfig.change(what, edit);
    this.sendConfig();
    this.cluster.note('info', 'config-changed', `cluster configuration epoch ${this.clusterConfig.document.epoch}: ${what}`);
    await this.apply(section);
  }

  /** The operator settles a divergence in favour of this node's document. */
  pushConfig(): void {
    this.clusterConfig.push();
    this.cluster.note('warn', 'config-pushed', `cluster configuration epoch ${this.clusterConfig.document.epoch} pushed over the peer's`);
    this.sendConfig();
  }

  /**
   * Puts a document's volumes and pools in force: new copies open (and meet the peer's) before
   * the cluster machine learns of their pools; the copies of removed pools close once the machine
   * has let the pools go, and their files are moved aside, never deleted.
   */
  private apply(next: Section): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.stopping) return;
      const before = this.cfg;
      for (const v of next.volumes) {
        if (this.replicas.has(v.name)) continue;
        const r = await this.openReplica(v);
        if (this.session !== undefined) r.attach(this.session);
      }
      this.cfg = { ...before, volumes: next.volumes, pools: next.pools };
      this.pools.reconcile();
      this.cluster.reconfigure(this.cfg);
      const gone = before.pools.filter((p) => !next.pools.some((q) => q.name === p.name));
      for (const p of gone) await this.cluster.untilForgotten(p.name);
      this.pools.reconcile();
      for (const v of before.volumes.filter((x) => !next.volumes.some((y) => y.name === x.name))) await this.retireReplica(v.name);
    };
    const next0 = this.applying.then(run);
    this.applying = next0.catch((e: unknown) => { this.log.error('applying the cluster configuration failed', { error: String(e) }); });
    return next0;
  }

  /** A removed volume's copy closes; its files go to data/removed/, where an operator may still find them. */
  private async retireReplica(name: string): Promise<void> {
    const r = this.replicas.get(name);
    if (r === undefined) return;
    this.replicas.delete(name);
    this.byWireId.delete(r.wireId.toString('hex'));
    await r.close();
    const dir = path.join(this.cfg.node.dataDir, 'volumes');
    const aside = path.join(this.cfg.node.dataDir, 'removed', `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    fs.mkdirSync(aside, { recursive: true });
    const backingPath = path.join(dir, `${name}.img`);
    const tracking = changeTrackingPaths(backingPath);
    for (const f of [backingPath, `${backingPath}.tandem.json`, tracking.bitmapPath, tracking.activityLogPath]) {
      if (fs.existsSync(f)) fs.renameSync(f, path.join(aside, path.basename(f)));
    }
    this.cluster.note('info', 'volume-retired', `volume ${name} is in no pool any more: its copy was closed and its files moved to ${aside}`);
  }

  replica(name: string): Replica | undefined {
    return this.replicas.get(name);
  }

  status(): NodeStatus {
    return {
      node: this.cfg.node.name,
      cluster: this.cfg.cluster.name,
      peer: { name: this.cfg.peer.name, connected: this.link !== undefined && !this.link.closed },
      volumes: [...this.replicas.values()].map((r) => r.status()),
      clusterState: this.clusterStatus(),
      config: this.clusterConfig.status(),
    };
  }

  private clusterStatus(): ClusterStateStatus {
    const c = this.cluster.status();
    return {
      ...c,
      pools: c.pools.map((v) => {
        const p = this.cfg.pools.find((x) => x.name === v.name);
        if (p === undefined) return v;
        return {
          ...v, floatingIps: p.floatingIps.map(describeIp), exports: this.pools.exportAddresses(p).map((a) => `nbd://${hostForUrl(a.host)}:${a.port}`),
          ...this.pools.serviceStatus(p),
        };
      }),
    };
  }

  /** The node whose name sorts first dials; the other accepts. */
  private dials(): boolean {
    return this.cfg.node.name < this.cfg.peer.name;
  }

  private linkOptions(role: 'initiator' | 'acceptor'): Parameters<typeof establishLink>[1] {
    const c = this.cfg;
    return {
      role, clusterId: c.cluster.id, clusterSecret: c.cluster.secret, nodeName: c.node.name, peerName: c.peer.name,
      pingIntervalMs: c.sync.pingIntervalMs, timeoutMs: c.sync.timeoutMs,
    };
  }

  private listenSync(): Promise<void> {
    const server = net.createServer((socket) => {
      const from = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
      socket.setNoDelay(true);
      establishLink(socket, this.linkOptions('acceptor')).then(
        (link) => this.onLink(link, from),
        (e: unknown) => this.log.warn('sync link refused', { from, code: (e as { code?: string }).code ?? 'ERR_SYNC', reason: (e as Error).message }),
      );
    });
    this.syncServer = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.cfg.node.syncListen.host, port: this.cfg.node.syncListen.port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  private dial(): void {
    if (this.stopping || (this.link !== undefined && !this.link.closed)) return;
    const { host, port } = this.cfg.peer.syncAddress;
    const local = this.cfg.node.syncListen.host;
    // dial from the sync address, so the peer (and any firewall) sees the link come from it
    const socket = net.connect(local === '0.0.0.0' || local === '::' ? { host, port } : { host, port, localAddress: local });
    socket.setNoDelay(true);
    let retried = false;
    const retry = (): void => {
      if (retried || this.stopping) return;
      retried = true;
      this.dialTimer = setTimeout(() => this.dial(), this.cfg.sync.reconnectMs);
    };
    socket.once('error', retry);
    socket.once('connect', () => {
      socket.off('error', retry);
      establishLink(socket, this.linkOptions('initiator')).then(
        (link) => { this.onLink(link, `${host}:${port}`); link.onClose(retry); },
        (e: unknown) => {
          this.log.warn('sync link failed', { to: `${host}:${port}`, code: (e as { code?: string }).code ?? 'ERR_SYNC', reason: (e as Error).message });
          retry();
        },
      );
    });
  }

  private onLink(link: SyncLink, from: string): void {
    if (this.stopping) {
      link.close('node stopping');
      return;
    }
    if (this.link !== undefined && !this.link.closed) {
      this.log.warn('a new sync link replaces the current one', { from });
      this.link.close('replaced by a new connection from the peer');
    }
    this.link = link;
    const session = new PeerSession(link, this.cfg.sync.timeoutMs);
    this.session = session;
    this.log.info('peer connected', { peer: link.peerName, from });
    link.onClose((reason) => {
      if (this.session === session) { this.session = undefined; this.link = undefined; }
      this.log.warn('peer disconnected', { peer: link.peerName, reason });
      this.cluster.onLinkDown();
      for (const r of this.replicas.values()) r.detach(reason);
    });
    for (const r of this.replicas.values()) r.attach(session);
    // roles change only by the cluster's activate/deactivate, which refresh the exports themselves
    link.start((m) => dispatchPeerMessage(this.dispatchContext, session, m));
    // the configurations first: a pool the peer lacks must not be offered to its machine
    this.sendConfig();
    this.cluster.onLinkUp();
  }


  /** Operator promote/demote act on the volume's pool: the cluster keeps one owner per pool. */
  async poolCommand(volume: string, command: (pool: string) => Command): Promise<void> {
    this.need(volume);
    const pool = this.cluster.poolOf(volume);
    if (pool === undefined) throw Object.assign(new Error(`volume ${volume} is in no pool`), { code: 'ERR_UNKNOWN_POOL' });
    const r = await this.cluster.command(command(pool.name));
    if (!r.ok) throw Object.assign(new Error(r.message), { code: 'ERR_REFUSED' });
  }

  async promote(name: string, force: boolean): Promise<void> {
    await this.poolCommand(name, (pool) => ({ kind: 'promote', pool, force }));
  }

  async demote(name: string): Promise<void> {
    await this.poolCommand(name, (pool) => ({ kind: 'demote', pool }));
  }

  /**
   * Fault injection: the clients' next I/O within `ms` blocks the main thread until `ms` have
   * passed, as a hung disk would. Armed after this turn of the event loop, so the API answers first.
   */
  stallDisk(ms: number): void {
    const stall = this.diskStall;
    if (stall === undefined) throw Object.assign(new Error('fault injection is not enabled on this node'), { code: 'ERR_FAULTS_DISABLED' });
    this.log.warn('disk stall injected', { ms });
    setImmediate(() => stall.arm(ms));
  }

  need(name: string): Replica {
    const r = this.replicas.get(name);
    if (r === undefined) throw Object.assign(new Error(`no volume named ${JSON.stringify(name)} on ${this.nodeName}`), { code: 'ERR_UNKNOWN_VOLUME' });
    return r;
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.dialTimer !== undefined) clearTimeout(this.dialTimer);
    // the pools go first, while the heartbeats still say this node is alive: the peer must not take
    // them over (probe the addresses, fence this node) while they are being released, and the
    // cluster must still answer the writes a release makes (a checkpoint, a filesystem's last commit)
    await this.pools.releaseAll();
    await this.cluster.stop();
    if (this.ticker !== undefined) clearInterval(this.ticker);
    await this.exports.stopAll();
    this.floatingIps.close();
    for (const r of this.replicas.values()) {
      try {
        await r.close();
      } catch (e) {
        this.log.error('closing a volume failed', { volume: r.name, error: String(e) });
      }
    }
    this.link?.close('node stopping');
    this.syncServer?.close();
    await this.api?.close();
    // the last entries (the pools' release) reach the hooks, within reason
    await Promise.race([this.notifier.idle(), new Promise((r) => setTimeout(r, 5000).unref())]);
  }
}
