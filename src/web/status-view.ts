// The status JSON as the API and the console serve it: the daemon's NodeStatus
// plus what a browser needs to find and judge the peer (docs/console.md).
import net from 'node:net';
import type { HeartbeatLinkStatus, NodeStatus } from '../replication/status';

interface HostPort { readonly host: string; readonly port: number }

/** The parts of the daemon this module reads: kept narrow so it can be tested without one. */
export interface StatusSource {
  status(): NodeStatus;
  readonly cfg: {
    readonly node: { readonly apiListen: HostPort };
    readonly peer: { readonly syncAddress: HostPort; readonly apiAddress?: HostPort };
    readonly heartbeat: { readonly links: ReadonlyArray<{ readonly listen: HostPort; readonly peer: HostPort }> };
  };
  readonly cluster: object;
}

function hostPort(a: HostPort): string {
  return `${net.isIPv6(a.host) ? `[${a.host}]` : a.host}:${a.port}`;
}

/**
 * The peer's API: as the node file says (`peer.apiAddress`, which tandem cluster join writes);
 * otherwise expected on the peer's sync host at this node's API port, which holds when both
 * nodes are configured alike (tandem demo, and the layout docs/mirroring.md shows). The console
 * checks that the answer there names the peer.
 */
export function derivePeerApi(s: StatusSource): { address: string; configured: boolean } {
  const a = s.cfg.peer.apiAddress;
  if (a !== undefined) return { address: hostPort(a), configured: true };
  return { address: hostPort({ host: s.cfg.peer.syncAddress.host, port: s.cfg.node.apiListen.port }), configured: false };
}

/**
 * Per-link state, read from the heartbeat's last report when the cluster driver carries one;
 * otherwise only the count of links up is known, which settles every link when all or none
 * are up.
 */
export function heartbeatLinks(s: StatusSource, counts: { up: number; total: number } | undefined): HeartbeatLinkStatus[] {
  const configured = s.cfg.heartbeat.links;
  let views: ReadonlyArray<{ index: number; up: boolean }> | undefined;
  try {
    // duck-typed on purpose: the driver keeps its heartbeat private, and this view must not break when it changes
    const hb = (s.cluster as { heartbeat?: { snapshot?: () => { links?: { links?: unknown } } } }).heartbeat;
    const list = hb?.snapshot?.().links?.links;
    if (Array.isArray(list)) views = list as Array<{ index: number; up: boolean }>;
  } catch {
    views = undefined;
  }
  return configured.map((l, i) => {
    const v = views?.find((x) => x.index === i);
    let up: boolean | null = null;
    if (v !== undefined && typeof v.up === 'boolean') up = v.up;
    else if (counts !== undefined && counts.up === 0) up = false;
    else if (counts !== undefined && counts.up === counts.total) up = true;
    return { listen: hostPort(l.listen), peer: hostPort(l.peer), up };
  });
}

/** GET /api/v1/status: the daemon's status with `peerApi` and `clusterState.heartbeatLinks`. */
export function nodeStatus(s: StatusSource): NodeStatus {
  const st = s.status();
  const c = st.clusterState;
  return {
    ...st,
    ...(() => { const p = derivePeerApi(s); return { peerApi: p.address, peerApiConfigured: p.configured }; })(),
    ...(c === undefined ? {} : { clusterState: { ...c, heartbeatLinks: heartbeatLinks(s, c.peer.links) } }),
  };
}
