// The authentication handshake of the sync link, for one side, as a pure
// state machine: bytes in, frames out. The caller supplies the nonce (fresh
// random bytes for every connection), the clock and the socket.
//
//   both sides      HELLO {clusterId, nonce, nodeName, versions}       (no MAC)
//   on peer HELLO   AUTH {HMAC-SHA256(secret, label || role || HELLO_i || HELLO_a)}  (no MAC)
//                   -- every later frame from this side carries a MAC under its send key --
//   on peer AUTH    AUTH_OK                                            (MAC: key confirmation)
//   on peer AUTH_OK done
//
// Any failure sends REJECT {code, reason} (MAC'd once this side sent AUTH) and ends the machine.
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { SyncProtocolError, type SyncErrorCode } from './errors';
import { FrameDecoder, FrameEncoder, type Frame } from './frame';
import { syncLimits, type SyncLimits } from './limits';
import {
  SyncMessageType, SyncRejectCode, checkMessage, decodeMessage, syncMessageTypeName, type Hello, type SyncMessage,
} from './messages';

/** The domain label of every MAC and key of protocol version 1. */
export const SYNC_AUTH_LABEL = 'tandem-sync-v1';
/** The protocol versions this implementation speaks. */
export const SYNC_PROTOCOL_VERSIONS: readonly number[] = [1];

/** The initiator opened the connection; the acceptor accepted it. */
export type SyncRole = 'initiator' | 'acceptor';

export interface SyncAuthOptions {
  readonly role: SyncRole;
  readonly clusterId: Buffer;
  /** shared by both nodes; never sent */
  readonly clusterSecret: Buffer;
  readonly nodeName: string;
  /** limits.nonceBytes fresh random bytes, never used for another connection */
  readonly nonce: Buffer;
  /** versions offered, strictly ascending; SYNC_PROTOCOL_VERSIONS by default */
  readonly versions?: readonly number[];
  readonly limits?: SyncLimits;
}

/** One key per direction, from this side's point of view. */
export interface SessionKeys {
  readonly send: Buffer;
  readonly receive: Buffer;
}

export interface AuthDone {
  readonly peerName: string;
  /** the highest version both sides offered */
  readonly version: number;
  readonly sessionKeys: SessionKeys;
  /** the sequence number of this side's next frame (a FrameEncoder's nextSeq) */
  readonly sendSeq: bigint;
  /** the sequence number the peer's next frame must carry (a FrameDecoder's nextSeq) */
  readonly receiveSeq: bigint;
  /** bytes that arrived after the peer's AUTH_OK: push them into the session's decoder first */
  readonly rest: Buffer;
}

export interface AuthFailure {
  readonly code: SyncErrorCode;
  readonly reason: string;
}

/** What one call produced: frames to send (in order, even on failure), and at most one of done and fail. */
export interface AuthStep {
  readonly send: Buffer[];
  readonly done?: AuthDone;
  readonly fail?: AuthFailure;
}

export type SyncAuthState = 'new' | 'hello' | 'auth' | 'confirm' | 'done' | 'failed';

function otherRole(role: SyncRole): SyncRole {
  return role === 'initiator' ? 'acceptor' : 'initiator';
}

/**
 * The AUTH of the side in senderRole: HMAC-SHA256 under the cluster secret
 * over the label, the sender's role and both HELLO frames as sent (the
 * initiator's first). The role stops a peer from reflecting our own AUTH.
 */
export function authMac(clusterSecret: Buffer, senderRole: SyncRole, initiatorHello: Buffer, acceptorHello: Buffer): Buffer {
  return createHmac('sha256', clusterSecret)
    .update(SYNC_AUTH_LABEL, 'ascii')
    .update(senderRole, 'ascii')
    .update(initiatorHello)
    .update(acceptorHello)
    .digest();
}

/**
 * The session keys of `role`: HKDF-SHA256 with the cluster secret as input
 * key, both nonces (the initiator's first) as salt, and one label per direction.
 */
export function deriveSessionKeys(
  clusterSecret: Buffer, initiatorNonce: Buffer, acceptorNonce: Buffer, role: SyncRole, limits: SyncLimits = syncLimits,
): SessionKeys {
  const salt = Buffer.concat([initiatorNonce, acceptorNonce]);
  const key = (from: SyncRole): Buffer => Buffer.from(hkdfSync(
    'sha256', clusterSecret, salt, `${SYNC_AUTH_LABEL} ${from} to ${otherRole(from)}`, limits.sessionKeyBytes,
  ));
  return { send: key(role), receive: key(otherRole(role)) };
}

const REJECT_CODES: Partial<Record<SyncErrorCode, number>> = {
  ERR_SYNC_VERSION: SyncRejectCode.VERSION,
  ERR_SYNC_CLUSTER: SyncRejectCode.CLUSTER,
  ERR_SYNC_NAME: SyncRejectCode.NAME,
  ERR_SYNC_AUTH: SyncRejectCode.AUTH,
};

const REJECT_NAMES = new Map<number, string>(Object.entries(SyncRejectCode).map(([k, v]) => [v, k]));

/** s cut to at most max bytes of UTF-8, at a character boundary. */
function clipUtf8(s: string, max: number): string {
  if (Buffer.byteLength(s, 'utf8') <= max) return s;
  let t = Buffer.from(s, 'utf8').subarray(0, max).toString('utf8');
  while (Buffer.byteLength(t, 'utf8') > max) t = t.slice(0, -1);
  return t;
}

function fail(code: SyncErrorCode, reason: string): SyncProtocolError {
  return new SyncProtocolError(code, reason);
}

/**
 * One side of the handshake. start() returns this side's HELLO; step()
 * takes bytes from the peer as they arrive (split anywhere) and returns the
 * frames to send. The machine ends with exactly one done or one fail; after
 * that step() returns nothing. It keeps no clock: the caller bounds the time.
 */
export class SyncAuth {
  private phase: SyncAuthState = 'new';
  private readonly limits: SyncLimits;
  private readonly role: SyncRole;
  private readonly clusterId: Buffer;
  private readonly secret: Buffer;
  private readonly hello: Hello;
  private readonly encoder: FrameEncoder;
  private readonly decoder: FrameDecoder<SyncMessage | undefined>;
  private ownHello: Buffer = Buffer.alloc(0);
  /** both HELLO frames as sent, the initiator's first */
  private transcript: readonly [Buffer, Buffer] | undefined;
  private keys: SessionKeys | undefined;
  private peerName = '';
  private version = 0;
  /** frames produced by the current call */
  private out: Buffer[] = [];
  private result: AuthDone | undefined;

  constructor(options: SyncAuthOptions) {
    const l = options.limits ?? syncLimits;
    this.limits = l;
    if (options.role !== 'initiator' && options.role !== 'acceptor') {
      throw fail('ERR_SYNC_ARGUMENT', `role must be initiator or acceptor, not ${String(options.role)}`);
    }
    const secret = options.clusterSecret;
    if (!Buffer.isBuffer(secret) || secret.length < l.clusterSecretBytesMin || secret.length > l.clusterSecretBytesMax) {
      throw fail('ERR_SYNC_ARGUMENT', `the cluster secret must be ${l.clusterSecretBytesMin} to ${l.clusterSecretBytesMax} bytes`);
    }
    this.role = options.role;
    this.secret = Buffer.from(secret);
    this.hello = {
      type: SyncMessageType.HELLO,
      clusterId: Buffer.isBuffer(options.clusterId) ? Buffer.from(options.clusterId) : options.clusterId,
      nonce: Buffer.isBuffer(options.nonce) ? Buffer.from(options.nonce) : options.nonce,
      nodeName: options.nodeName,
      versions: [...(options.versions ?? SYNC_PROTOCOL_VERSIONS)],
    };
    const reason = checkMessage(this.hello, l);
    if (reason !== undefined) throw fail('ERR_SYNC_ARGUMENT', reason);
    this.clusterId = this.hello.clusterId;
    this.encoder = new FrameEncoder({ limits: l });
    // HELLO is decoded here, not by the frame decoder: its cluster id is checked before anything else in it
    this.decoder = new FrameDecoder<SyncMessage | undefined>((f) => this.onFrame(f), {
      limits: l,
      decode: (type, payload, limits) => (type === SyncMessageType.HELLO ? undefined : decodeMessage(type, payload, limits)),
    });
  }

  get state(): SyncAuthState { return this.phase; }

  /** This side's HELLO. step() sends it too, first, if start() was not called. */
  start(): AuthStep {
    if (this.phase !== 'new') return { send: [] };
    this.phase = 'hello';
    this.ownHello = this.encoder.encode(this.hello);
    return { send: [this.ownHello] };
  }

  step(input: Buffer): AuthStep {
    if (this.phase === 'done' || this.phase === 'failed') return { send: [] };
    const send = this.phase === 'new' ? this.start().send : [];
    this.out = send;
    try {
      this.decoder.push(input);
    } catch (e) {
      if (!(e instanceof SyncProtocolError)) {
        this.phase = 'failed';
        throw e;
      }
      return this.failWith(e, send);
    }
    return this.result === undefined ? { send } : { send, done: this.result };
  }

  private failWith(e: SyncProtocolError, send: Buffer[]): AuthStep {
    this.phase = 'failed';
    if (e.code !== 'ERR_SYNC_REJECTED') {
      const code = REJECT_CODES[e.code] ?? SyncRejectCode.PROTOCOL;
      send.push(this.encoder.encode({ type: SyncMessageType.REJECT, code, reason: clipUtf8(e.message, this.limits.rejectReasonBytesMax) }));
    }
    return { send, fail: { code: e.code, reason: e.message } };
  }

  private onFrame(f: Frame<SyncMessage | undefined>): void {
    const m = f.message;
    if (m?.type === SyncMessageType.REJECT) {
      const name = REJECT_NAMES.get(m.code) ?? `code ${m.code}`;
      throw fail('ERR_SYNC_REJECTED', `the peer rejected the session (${name}): ${m.reason}`);
    }
    switch (this.phase) {
      case 'hello':
        if (f.type !== SyncMessageType.HELLO) throw this.unexpected(f, 'HELLO');
        this.onHello(f);
        return;
      case 'auth':
        if (m?.type !== SyncMessageType.AUTH) throw this.unexpected(f, 'AUTH');
        this.onAuth(m.mac);
        return;
      case 'confirm':
        if (m?.type !== SyncMessageType.AUTH_OK) throw this.unexpected(f, 'AUTH_OK');
        this.onAuthOk();
        return;
      default:
        throw fail('ERR_SYNC_STATE', `frame in state ${this.phase}`);
    }
  }

  private unexpected(f: Frame<unknown>, wanted: string): SyncProtocolError {
    return fail('ERR_SYNC_STATE', `${syncMessageTypeName(f.type)} during the handshake, expected ${wanted}`);
  }

  private onHello(f: Frame<unknown>): void {
    const l = this.limits;
    const p = f.payload;
    if (p.length < l.clusterIdBytes) throw fail('ERR_SYNC_TRUNCATED', 'HELLO: clusterId is cut short');
    const clusterId = p.subarray(0, l.clusterIdBytes);
    if (!clusterId.equals(this.clusterId)) {
      throw fail('ERR_SYNC_CLUSTER', `the peer belongs to cluster ${clusterId.toString('hex')}, not ${this.clusterId.toString('hex')}`);
    }
    const hello = decodeMessage(SyncMessageType.HELLO, p, l) as Hello;
    if (hello.nodeName === this.hello.nodeName) throw fail('ERR_SYNC_NAME', `the peer is also named ${JSON.stringify(hello.nodeName)}`);
    if (hello.nonce.equals(this.hello.nonce)) throw fail('ERR_SYNC_AUTH', 'the peer sent our own nonce');
    const common = hello.versions.filter((v) => this.hello.versions.includes(v));
    if (common.length === 0) {
      throw fail('ERR_SYNC_VERSION', `no common protocol version: the peer speaks ${hello.versions.join(',')}, this node ${this.hello.versions.join(',')}`);
    }
    this.peerName = hello.nodeName;
    this.version = Math.max(...common);
    const peerHello = Buffer.from(f.bytes);
    const initiator = this.role === 'initiator';
    this.transcript = initiator ? [this.ownHello, peerHello] : [peerHello, this.ownHello];
    this.keys = initiator
      ? deriveSessionKeys(this.secret, this.hello.nonce, hello.nonce, this.role, l)
      : deriveSessionKeys(this.secret, hello.nonce, this.hello.nonce, this.role, l);
    this.out.push(this.encoder.encode({ type: SyncMessageType.AUTH, mac: authMac(this.secret, this.role, ...this.transcript) }));
    this.encoder.authenticate(this.keys.send);
    this.phase = 'auth';
  }

  private onAuth(mac: Buffer): void {
    const transcript = this.transcript as readonly [Buffer, Buffer];
    const keys = this.keys as SessionKeys;
    const expected = authMac(this.secret, otherRole(this.role), ...transcript);
    if (mac.length !== expected.length || !timingSafeEqual(mac, expected)) {
      throw fail('ERR_SYNC_AUTH', 'the peer\'s AUTH does not verify: another cluster secret, or a replayed or altered handshake');
    }
    this.decoder.authenticate(keys.receive);
    this.out.push(this.encoder.encode({ type: SyncMessageType.AUTH_OK }));
    this.phase = 'confirm';
  }

  private onAuthOk(): void {
    this.phase = 'done';
    const rest = this.decoder.detach();
    this.result = {
      peerName: this.peerName,
      version: this.version,
      sessionKeys: this.keys as SessionKeys,
      sendSeq: this.encoder.nextSeq,
      receiveSeq: this.decoder.nextSeq,
      rest,
    };
  }
}
