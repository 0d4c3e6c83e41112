// `tandem token create|list|revoke`: the cluster's API tokens (docs/operations.md, "API
// security"). A new token goes to stdout alone, so a script can take it
// (TOKEN=$(tandem token create ci --role read)); what it is goes to stderr.
import { isRole, tokenNameProblem } from '../node/api-token';
import { callApi, type ApiAddress } from './api-client';
import { UsageError, exitCodes } from './errors';
import { table } from './format';

interface TokenView { id: string; name: string; role: string; createdAt: string }

export interface TokenCommandOptions {
  readonly role?: string | undefined;
  readonly json: boolean;
  readonly timeoutMs: number | null;
}

const SUBCOMMANDS = ['create', 'list', 'revoke'];

export async function runToken(api: ApiAddress, positionals: readonly string[], o: TokenCommandOptions): Promise<number> {
  const sub = positionals[0];
  if (sub === undefined || !SUBCOMMANDS.includes(sub)) {
    throw new UsageError(sub === undefined ? `token needs a subcommand: ${SUBCOMMANDS.join(', ')}` : `unknown token subcommand ${JSON.stringify(sub)}`);
  }
  if (o.role !== undefined && sub !== 'create') throw new UsageError(`token ${sub} does not take --role`);
  const timing = o.timeoutMs === null ? {} : { timeoutMs: o.timeoutMs };
  if (sub === 'list') {
    if (positionals.length !== 1) throw new UsageError('token list takes no arguments');
    const r = await callApi(api, 'GET', '/api/v1/tokens', timing);
    const v = r.value as { tokens: TokenView[]; nodeLocal?: { id: string; file: string; node: string } };
    if (o.json) {
      process.stdout.write(r.text);
      return exitCodes.ok;
    }
    const lines = v.tokens.length === 0 ? ['no cluster tokens (tandem token create NAME makes one)']
      : table(['NAME', 'ID', 'ROLE', 'CREATED'], v.tokens.map((t) => [t.name, t.id, t.role, t.createdAt]), '');
    if (v.nodeLocal !== undefined) lines.push(`and ${v.nodeLocal.node}'s own admin token, valid on ${v.nodeLocal.node} only: id ${v.nodeLocal.id}, in ${v.nodeLocal.file}`);
    process.stdout.write(lines.join('\n') + '\n');
    return exitCodes.ok;
  }
  if (positionals.length !== 2) throw new UsageError(sub === 'create' ? 'token create needs exactly one NAME' : 'token revoke needs exactly one NAME or ID');
  const target = positionals[1] as string;
  if (sub === 'create') {
    const problem = tokenNameProblem(target);
    if (problem !== null) throw new UsageError(`token create: ${problem}`);
    const role = o.role ?? 'admin';
    if (!isRole(role)) throw new UsageError(`--role: ${JSON.stringify(role)} is not admin or read`);
    const r = await callApi(api, 'POST', '/api/v1/tokens', { body: { name: target, role }, ...timing });
    const v = r.value as TokenView & { token: string; message: string };
    if (o.json) {
      process.stdout.write(r.text);
      return exitCodes.ok;
    }
    process.stderr.write(`${v.message}\n`);
    process.stdout.write(`${v.token}\n`);
    return exitCodes.ok;
  }
  const r = await callApi(api, 'POST', `/api/v1/tokens/${encodeURIComponent(target)}/revoke`, { body: {}, ...timing });
  process.stdout.write(o.json ? r.text : `${(r.value as { message: string }).message}\n`);
  return exitCodes.ok;
}
