// The first node of a cluster made by `tandem cluster create`, before the second joins
// (docs/cluster-setup.md): it serves only a small API on its API address (its status says it
// waits; a one-time nonce; the join request), checks a join request against its config file
// and, when it is good, writes the peer into the file and stops serving. The caller then
// starts the node as usual. A refused request changes nothing.
import http from 'node:http';
import type { Logger } from '../util/log';
import { ConfigError } from '../util/config-fields';
import { acceptMac, joinAuthLimits, joinKey, macMatches, NonceStore, requestMac, type JoinRequestFields } from './join-auth';
import {
  configText, isWaitingConfigText, joinedConfigObject, parseWaitingConfig, readConfigText, writeConfigFile, type WaitingConfig,
} from './join-files';
import { canonicalJson } from '../util/canonical-json';
import { checkHostPort, checkSharedSettings, formatHostPort, isNodeName } from './join-token';

export const joinApiLimits = {
  /** a join request with 8 heartbeat addresses and every setting is far below this */
  bodyBytesMax: 16 * 1024,
  requestTimeoutMs: 10_000,
  connectionsMax: 32,
} as const;

export const JOIN_PATHS = { status: '/api/v1/status', nonce: '/api/v1/join/nonce', join: '/api/v1/join' } as const;

export interface JoinOutcome {
  /** the node that joined */
  readonly peer: string;
  readonly peerSyncAddress: string;
}

/** answers that are not a join attempt: not logged */
const QUIET_REFUSALS: ReadonlySet<string> = new Set(['ERR_WAITING_FOR_JOIN', 'ERR_NOT_FOUND', 'ERR_METHOD']);

class JoinRefused extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > joinApiLimits.bodyBytesMax) {
      reject(new JoinRefused(413, 'ERR_TOO_LARGE', `request body over ${joinApiLimits.bodyBytesMax} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let n = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      n += c.length;
      if (n > joinApiLimits.bodyBytesMax) {
        over = true;
        reject(new JoinRefused(413, 'ERR_TOO_LARGE', `request body over ${joinApiLimits.bodyBytesMax} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (over) return;
      try {
        const v: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch (e) {
        reject(new JoinRefused(400, 'ERR_BAD_REQUEST', `request body is not a JSON object: ${(e as Error).message}`));
      }
    });
    req.on('error', reject);
  });
}

const REQUEST_KEYS = ['clusterId', 'node', 'syncAddress', 'apiAddress', 'heartbeat', 'settings', 'nonce', 'mac'];

/** The join request's fields, each checked; anything else is a 400 naming the field. */
export function parseJoinRequest(b: Record<string, unknown>): JoinRequestFields & { mac: string } {
  const bad = (why: string): never => { throw new JoinRefused(400, 'ERR_BAD_REQUEST', why); };
  for (const k of Object.keys(b)) if (!REQUEST_KEYS.includes(k)) bad(`unknown field ${JSON.stringify(k)} (known: ${REQUEST_KEYS.join(', ')})`);
  const hexOf = (k: string, bytes: number): string => {
    const v = b[k];
    if (typeof v !== 'string' || !new RegExp(`^[0-9a-f]{${bytes * 2}}$`).test(v)) bad(`${k} must be ${bytes * 2} lowercase hex digits`);
    return v as string;
  };
  const clusterId = hexOf('clusterId', 16);
  const nonce = hexOf('nonce', 32);
  const mac = hexOf('mac', 32);
  if (typeof b.node !== 'string' || !isNodeName(b.node)) bad('node must be a node name (letters, digits, \'.\', \'_\', \'-\'; at most 63)');
  let syncAddress = '';
  let apiAddress = '';
  let heartbeat: string[] = [];
  let settings;
  try {
    syncAddress = checkHostPort(b.syncAddress, 'syncAddress').text;
    apiAddress = checkHostPort(b.apiAddress, 'apiAddress').text;
    const hb = b.heartbeat ?? [];
    if (!Array.isArray(hb) || hb.length > 8) bad('heartbeat must be a list of at most 8 addresses');
    heartbeat = (hb as unknown[]).map((h, i) => checkHostPort(h, `heartbeat[${i}]`, true).text);
    settings = checkSharedSettings(b.settings ?? {}, 'settings');
  } catch (e) {
    if (e instanceof ConfigError) bad(e.message);
    throw e;
  }
  return { clusterId, node: b.node as string, syncAddress, apiAddress, heartbeat, settings: settings ?? {}, nonce, mac };
}

/** Serves the waiting API of the node whose config is `file` until a join is accepted or close() is called. */
export class JoinWaiter {
  private readonly nonces: NonceStore;
  private state: 'waiting' | 'joined' | 'closed' = 'waiting';
  private resolveJoined!: (o: JoinOutcome) => void;
  /** resolves once a join is written to the file and the waiting API has stopped listening */
  readonly joined: Promise<JoinOutcome>;

  private constructor(
    private readonly file: string,
    private readonly w: WaitingConfig,
    private readonly server: http.Server,
    private readonly log: Logger,
    now: () => number,
  ) {
    this.nonces = new NonceStore(now);
    this.joined = new Promise((resolve) => { this.resolveJoined = resolve; });
  }

  static async start(file: string, w: WaitingConfig, log: Logger, now: () => number = Date.now): Promise<JoinWaiter> {
    const server = http.createServer();
    const waiter = new JoinWaiter(file, w, server, log, now);
    server.on('request', (req, res) => waiter.handle(req, res));
    server.requestTimeout = joinApiLimits.requestTimeoutMs;
    server.headersTimeout = joinApiLimits.requestTimeoutMs;
    server.maxConnections = joinApiLimits.connectionsMax;
    const at = w.cfg.node.apiListen;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: at.host, port: at.port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return waiter;
  }

  /** Stops serving (SIGTERM while waiting); the file stays as it is. */
  async close(): Promise<void> {
    if (this.state === 'waiting') this.state = 'closed';
    await this.stopServer();
  }

  private stopServer(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const reply = (status: number, v: unknown, after?: () => void): void => {
      const text = JSON.stringify(v, null, 2) + '\n';
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' });
      // after the answer went out, or the connection broke: either way the join is taken
      if (after !== undefined) res.once('close', after);
      res.end(text);
    };
    const from = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    this.route(req).then(
      (r) => reply(200, r.body, r.after),
      (e: unknown) => {
        if (e instanceof JoinRefused) {
          if (!QUIET_REFUSALS.has(e.code)) this.log.warn('join refused', { from, code: e.code, reason: e.message });
          reply(e.status, { error: { code: e.code, message: e.message } });
          // a client that sends more than the bound is not read further
          if (e.status === 413) res.once('finish', () => req.destroy());
          return;
        }
        this.log.error('request failed', { url: req.url, error: (e as Error).stack ?? String(e) });
        reply(500, { error: { code: 'ERR_INTERNAL', message: (e as Error).message } });
      },
    );
  }

  private waitingMessage(): string {
    return `node ${this.w.cfg.node.name} is waiting for a peer to join (cluster ${this.w.cfg.cluster.name}): ` +
      'run tandem cluster join with its token on the other node';
  }

  private async route(req: http.IncomingMessage): Promise<{ body: unknown; after?: () => void }> {
    const method = req.method ?? 'GET';
    const url = (req.url ?? '/').split('?')[0] as string;
    const only = (m: string): void => {
      if (method !== m) throw new JoinRefused(405, 'ERR_METHOD', `${url} takes ${m}`);
    };
    if (url === JOIN_PATHS.status) {
      only('GET');
      throw new JoinRefused(503, 'ERR_WAITING_FOR_JOIN', this.waitingMessage());
    }
    if (url === JOIN_PATHS.nonce) {
      only('GET');
      this.notJoined();
      return { body: { cluster: this.w.cfg.cluster.name, node: this.w.cfg.node.name, ...this.nonces.issue() } };
    }
    if (url === JOIN_PATHS.join) {
      only('POST');
      this.notJoined();
      const body = await readBody(req);
      return this.join(parseJoinRequest(body), `${req.socket.remoteAddress ?? '?'}`);
    }
    throw new JoinRefused(404, 'ERR_NOT_FOUND', `no such endpoint: ${method} ${url} (${this.waitingMessage()})`);
  }

  private notJoined(): void {
    if (this.state !== 'waiting') throw new JoinRefused(409, 'ERR_ALREADY_JOINED', `node ${this.w.cfg.node.name} has a peer already: a cluster has two nodes`);
  }

  /** Every check, then the file; synchronous from here on, so two requests cannot both pass. */
  private join(r: JoinRequestFields & { mac: string }, from: string): { body: unknown; after: () => void } {
    this.notJoined();
    if (!this.nonces.consume(r.nonce)) {
      throw new JoinRefused(401, 'ERR_NONCE', `the nonce is unknown, used already or older than ${joinAuthLimits.nonceTtlMs / 1000} s: ask for a new one (GET ${JOIN_PATHS.nonce}) for each request`);
    }
    // the file as it is now: the operator may have edited it while the node waited
    let text: string;
    let w: WaitingConfig;
    try {
      text = readConfigText(this.file);
      if (!isWaitingConfigText(text)) throw new JoinRefused(409, 'ERR_ALREADY_JOINED', `${this.file} names a peer already: a cluster has two nodes`);
      w = parseWaitingConfig(text);
    } catch (e) {
      if (e instanceof JoinRefused) throw e;
      throw new JoinRefused(500, 'ERR_CONFIG', `${this.file} cannot be read as a node waiting for a join: ${(e as Error).message}`);
    }
    const self = w.cfg.node.name;
    const clusterId = w.cfg.cluster.id.toString('hex');
    if (r.clusterId !== clusterId) {
      throw new JoinRefused(403, 'ERR_OTHER_CLUSTER', `a node from another cluster cannot join: the token is of cluster id ${r.clusterId}, node ${self} is of cluster ${w.cfg.cluster.name} (id ${clusterId})`);
    }
    const key = joinKey(w.cfg.cluster.id, w.cfg.cluster.secret);
    const mac = requestMac(key, r);
    if (!macMatches(mac, r.mac)) {
      throw new JoinRefused(401, 'ERR_BAD_MAC', `the join request is not signed with the secret of cluster ${w.cfg.cluster.name}: the token is not this cluster's (or was altered)`);
    }
    if (r.node === self) throw new JoinRefused(409, 'ERR_SAME_NAME', `node names must differ: this node is named ${self} already; choose another --node`);
    if (canonicalJson(r.settings) !== canonicalJson(w.settings)) {
      throw new JoinRefused(409, 'ERR_SETTINGS_CHANGED', `the cluster settings in ${this.file} changed since the token was made: print a new one with tandem cluster token --config ${this.file}`);
    }
    const mine = w.heartbeatListens.length;
    if (r.heartbeat.length !== mine) {
      throw new JoinRefused(409, 'ERR_HEARTBEAT_LINKS', mine === 0
        ? `node ${self} uses the default heartbeat link (beside the sync port): join without --heartbeat`
        : `node ${self} has ${mine} heartbeat link(s): give --heartbeat ${mine} time(s), link i pairs with its link i`);
    }
    const ownSync = formatHostPort(w.cfg.node.syncListen);
    if (r.syncAddress === ownSync) throw new JoinRefused(409, 'ERR_ADDRESS', `${r.syncAddress} is node ${self}'s own sync address`);
    let joined: string;
    try {
      joined = configText(joinedConfigObject(w.raw, { name: r.node, syncAddress: r.syncAddress, apiAddress: r.apiAddress }, r.heartbeat));
    } catch (e) {
      if (e instanceof ConfigError) throw new JoinRefused(409, 'ERR_CONFIG', `with this node as its peer, ${self}'s configuration would be refused: ${e.message}`);
      throw e;
    }
    try {
      writeConfigFile(this.file, joined, true);
    } catch (e) {
      throw new JoinRefused(500, 'ERR_WRITE', `cannot write ${this.file}: ${(e as Error).message}`);
    }
    this.state = 'joined';
    this.log.info('peer joined', { peer: r.node, from, syncAddress: r.syncAddress, heartbeatLinks: r.heartbeat.length });
    const answer = acceptMac(key, { clusterId, nonce: r.nonce, requestMac: r.mac, node: self, peer: r.node });
    return {
      body: { ok: true, cluster: w.cfg.cluster.name, node: self, peer: r.node, mac: answer.toString('hex') },
      // the answer goes out first; then the address is free for the node's own API
      after: () => {
        void this.stopServer().then(() => this.resolveJoined({ peer: r.node, peerSyncAddress: r.syncAddress }));
      },
    };
  }
}
