// POST /api/v1/tokens, GET /api/v1/tokens, POST /api/v1/tokens/{token}/revoke: the cluster's
// API tokens, kept in the cluster configuration document (a change like any other: the next
// epoch, on disk, to the peer). A new token is shown in the answer to its creation only.
import { randomBytes } from 'node:crypto';
import { ApiError } from './api-http';
import type { LocalToken } from './api-local-token';
import { isRole, makeToken, tokenLimits, tokenNameProblem, type Role } from './api-token';
import { addToken, publicRecord, revokeToken } from './api-token-records';
import type { NodeDaemon } from './daemon';

export async function createToken(d: NodeDaemon, body: Record<string, unknown>, now: Date = new Date()): Promise<Record<string, unknown>> {
  for (const k of Object.keys(body)) if (k !== 'name' && k !== 'role') throw new ApiError(400, 'ERR_BAD_REQUEST', `unknown field ${JSON.stringify(k)} (known: name, role)`);
  const problem = tokenNameProblem(body.name);
  if (problem !== null) throw new ApiError(400, 'ERR_BAD_REQUEST', problem);
  const name = body.name as string;
  const role: unknown = body.role ?? 'admin';
  if (!isRole(role)) throw new ApiError(400, 'ERR_BAD_REQUEST', 'role must be admin or read');
  const made = makeToken(randomBytes(tokenLimits.idBytes), randomBytes(tokenLimits.secretBytes));
  const record = { id: made.id, name, role: role as Role, sha256: made.sha256, createdAt: now.toISOString() };
  await d.changeConfig(`token create ${name} (${role})`, (raw) => ({ volumes: raw.volumes, pools: raw.pools, tokens: addToken(raw.tokens, record) }));
  return {
    ok: true,
    message: `token ${name} (id ${record.id}, role ${role}) created: it is shown this once; it works on ${d.cfg.peer.name} too once the two nodes have met`,
    token: made.token,
    ...publicRecord(record),
  };
}

export function listTokens(d: NodeDaemon, local: LocalToken): Record<string, unknown> {
  return {
    tokens: d.clusterConfig.tokens.tokens.map(publicRecord),
    nodeLocal: { id: local.id, file: local.file, node: d.cfg.node.name },
  };
}

export async function revokeTokenRoute(d: NodeDaemon, idOrName: string): Promise<Record<string, unknown>> {
  let name = idOrName;
  let id = idOrName;
  await d.changeConfig(`token revoke ${idOrName}`, (raw) => {
    const r = revokeToken(raw.tokens, idOrName);
    name = r.record.name;
    id = r.record.id;
    return { volumes: raw.volumes, pools: raw.pools, tokens: r.set };
  });
  return { ok: true, message: `token ${name} (id ${id}) revoked on ${d.cfg.node.name}; ${d.cfg.peer.name} refuses it too once the two nodes have met`, id, name };
}
