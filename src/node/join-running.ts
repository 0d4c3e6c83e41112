// The join exchange (docs/cluster-setup.md) as a node that has its peer answers it. A join
// that this node took may have lost its answer on the way back: `tandem cluster join` then
// asks again, and this node proves, signed with the cluster secret as the waiting node would
// have, that it names the asking node as its peer already, so the joiner can write its file.
// Any other join is refused: a cluster has two nodes. No token is needed (the joiner has
// none for this node yet) and none is given: the answer says only what the MAC already proves
// the asker knows.
import { ConfigError } from '../util/config-fields';
import { ApiError } from './api-http';
import type { NodeConfig } from './config';
import { acceptMac, joinAuthLimits, joinKey, macMatches, NonceStore, requestMac } from './join-auth';
import { parseJoinRequest } from './join';
import { formatHostPort } from './join-token';

export class RunningJoin {
  private readonly nonces: NonceStore;

  constructor(private readonly cfg: () => NodeConfig, now: () => number = Date.now) {
    this.nonces = new NonceStore(now);
  }

  nonce(): { cluster: string; node: string; nonce: string; expiresInMs: number } {
    const c = this.cfg();
    return { cluster: c.cluster.name, node: c.node.name, ...this.nonces.issue() };
  }

  answer(body: Record<string, unknown>): Record<string, unknown> {
    const c = this.cfg();
    let r;
    try {
      r = parseJoinRequest(body);
    } catch (e) {
      if (e instanceof ConfigError || (e as { code?: unknown }).code === 'ERR_BAD_REQUEST') throw new ApiError(400, 'ERR_BAD_REQUEST', (e as Error).message);
      throw e;
    }
    if (!this.nonces.consume(r.nonce)) {
      throw new ApiError(401, 'ERR_NONCE', `the nonce is unknown, used already or older than ${joinAuthLimits.nonceTtlMs / 1000} s: ask for a new one for each request`);
    }
    const clusterId = c.cluster.id.toString('hex');
    if (r.clusterId !== clusterId) throw new ApiError(403, 'ERR_OTHER_CLUSTER', `a node from another cluster cannot join: node ${c.node.name} is of cluster ${c.cluster.name}`);
    const key = joinKey(c.cluster.id, c.cluster.secret);
    const mac = requestMac(key, r);
    if (!macMatches(mac, r.mac)) throw new ApiError(401, 'ERR_BAD_MAC', `the join request is not signed with the secret of cluster ${c.cluster.name}`);
    if (r.node !== c.peer.name || r.syncAddress !== formatHostPort(c.peer.syncAddress)) {
      throw new ApiError(409, 'ERR_NOT_WAITING', `node ${c.node.name} does not wait for a join: it has a peer already (${c.peer.name}), and a cluster has two nodes`);
    }
    const answer = acceptMac(key, { clusterId, nonce: r.nonce, requestMac: r.mac, node: c.node.name, peer: r.node });
    return { ok: true, already: true, cluster: c.cluster.name, node: c.node.name, peer: r.node, mac: answer.toString('hex') };
  }
}
