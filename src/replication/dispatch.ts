// Where each message from the peer goes: acknowledgements to the session,
// FLUSH to every volume, CLUSTER to the cluster machine, the rest to its volume. Shared by the node daemon
// and anything else that joins replicas to a link (the in-memory tests).
import { SyncMessageType, SyncVolumeRefusal, type SyncMessage } from '../protocol/sync/messages';
import type { Logger } from '../util/log';
import type { PeerSession } from './peer-session';
import type { Replica } from './replica';

const EIO = 5;

export interface DispatchContext {
  readonly nodeName: string;
  readonly log: Logger;
  /** every volume of this node */
  replicas(): Iterable<Replica>;
  /** the volume with this wire id, if this node has it */
  replica(wireId: Buffer): Replica | undefined;
  /** a CLUSTER message for the cluster machine; without one, CLUSTER messages end the link */
  cluster?(json: string): void;
}

export function dispatchPeerMessage(ctx: DispatchContext, session: PeerSession, m: SyncMessage): void {
  switch (m.type) {
    case SyncMessageType.WRITE_ACK:
    case SyncMessageType.FLUSH_ACK:
      if (!session.settle(m.requestId, m.status)) {
        session.link.close(`${m.type === SyncMessageType.WRITE_ACK ? 'WRITE_ACK' : 'FLUSH_ACK'} for no outstanding request ${m.requestId}`);
      }
      return;
    case SyncMessageType.FLUSH: {
      // a barrier: each volume first applies what came before it
      const all = [...ctx.replicas()].map((r) => r.flushForPeer());
      void Promise.all(all).then(() => 0, (e: unknown) => {
        ctx.log.error('flush for the peer failed', { error: String(e) });
        return EIO;
      }).then((status) => session.link.send({ type: SyncMessageType.FLUSH_ACK, requestId: m.requestId, status }));
      return;
    }
    case SyncMessageType.CLUSTER:
      if (ctx.cluster === undefined) session.link.close('unexpected CLUSTER message');
      else ctx.cluster(m.json);
      return;
  }
  if (!('volumeId' in m)) {
    session.link.close(`unexpected ${m.type} message`);
    return;
  }
  const r = ctx.replica(m.volumeId);
  if (r === undefined) {
    if (m.type === SyncMessageType.GENERATIONS) {
      session.link.send({ type: SyncMessageType.VOLUME_REFUSED, volumeId: m.volumeId, code: SyncVolumeRefusal.UNKNOWN_VOLUME, reason: `${ctx.nodeName} has no such volume` });
    } else if (m.type !== SyncMessageType.VOLUME_REFUSED) {
      session.link.close(`message for unknown volume ${m.volumeId.toString('hex')}`);
    }
    return;
  }
  r.receive(m);
}
