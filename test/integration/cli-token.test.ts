// `tandem token create|list|revoke` against two real nodes, and how every command finds its
// token: each success and refusal with its exit code (0 done, 1 refused, 2 usage error).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { withCluster, sleep, type Cluster } from '../helpers/cluster';
import { apiOf, describeRun, tandem, type CliResult, type RunOptions } from '../helpers/tandem-cli';

// addresses no other test uses
const HOSTS = { alpha: '127.0.0.62', beta: '127.0.0.63' } as const;

async function run(args: string[], code: number, pattern?: RegExp, o: RunOptions = {}): Promise<CliResult> {
  const r = await tandem(args, { timeoutMs: 60_000, ...o });
  assert.equal(r.code, code, describeRun(args, r));
  if (pattern !== undefined) assert.match(r.stdout + r.stderr, pattern, describeRun(args, r));
  return r;
}

async function maintenanceOf(c: Cluster): Promise<boolean | undefined> {
  return (await c.alpha.status()).clusterState?.maintenance;
}

test('tandem token: create, list, revoke, with their refusals and exit codes; every command takes its token from --token, $TANDEM_TOKEN, a file', { timeout: 180_000 }, async (t) => {
  await withCluster({ size: '16M', hosts: HOSTS, prefix: 'tandem-cli-token-' }, async (c) => {
    const alpha = apiOf(c.alpha);
    const beta = apiOf(c.beta);
    // every call below without a token option uses the node's own (DATA_DIR/api-token), as root on that node would

    // create: the token alone on stdout, what it is on stderr
    const made = await run(['token', 'create', 'ci', '--role', 'read', '--api', alpha], 0);
    const ci = made.stdout.trim();
    assert.match(ci, /^tdm_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/, describeRun(['token', 'create'], made));
    assert.equal(made.stdout, `${ci}\n`);
    assert.match(made.stderr, /token ci \(id [0-9a-f]{16}, role read\) created: it is shown this once/);
    const ops = (await run(['token', 'create', 'ops', '--api', alpha], 0)).stdout.trim();
    const json = JSON.parse((await run(['token', 'create', 'script', '--json', '--api', alpha], 0)).stdout) as { token: string; role: string; name: string };
    assert.equal(json.role, 'admin', 'admin unless --role says otherwise');
    assert.equal(json.name, 'script');

    // list: names, ids, roles, dates; never a token or a hash
    const list = await run(['token', 'list', '--api', alpha], 0);
    assert.match(list.stdout, /^NAME +ID +ROLE +CREATED$/m);
    assert.match(list.stdout, /^ci +[0-9a-f]{16} +read +\d{4}-\d\d-\d\dT/m);
    assert.match(list.stdout, /^ops +[0-9a-f]{16} +admin /m);
    assert.match(list.stdout, /alpha's own admin token, valid on alpha only: id [0-9a-f]{16}, in .*api-token/);
    const listed = JSON.parse((await run(['token', 'list', '--json', '--api', alpha], 0)).stdout) as { tokens: Array<Record<string, unknown>> };
    assert.deepEqual(listed.tokens.map((x) => Object.keys(x).sort()), [0, 1, 2].map(() => ['createdAt', 'id', 'name', 'role']));
    for (const text of [list.stdout, JSON.stringify(listed)]) assert.doesNotMatch(text, /tdm_|sha256/);

    // refusals by the node: exit 1, nothing changes
    await run(['token', 'create', 'ci', '--api', alpha], 1, /a token named ci exists already.*\(ERR_TOKEN_EXISTS\)/);
    await run(['token', 'revoke', 'nosuch', '--api', alpha], 1, /no token with the id or name "nosuch" \(tokens: ci, ops, script\) \(ERR_UNKNOWN_TOKEN\)/);
    // usage errors: exit 2, nothing asked
    await run(['token', 'create', 'ci2', '--role', 'root', '--api', alpha], 2, /--role: "root" is not admin or read/);
    await run(['token', 'create', 'bad name', '--api', alpha], 2, /"bad name" is not a token name/);
    await run(['token', 'create', '0123456789abcdef', '--api', alpha], 2, /looks like a token id/);
    await run(['token', 'create', 'x'.repeat(64), '--api', alpha], 2, /at most 63 characters/);
    await run(['token', '--api', alpha], 2, /token needs a subcommand: create, list, revoke/);
    await run(['token', 'frob', '--api', alpha], 2, /unknown token subcommand "frob"/);
    await run(['token', 'create', '--api', alpha], 2, /token create needs exactly one NAME/);
    await run(['token', 'revoke', '--api', alpha], 2, /token revoke needs exactly one NAME or ID/);
    await run(['token', 'list', 'extra', '--api', alpha], 2, /token list takes no arguments/);
    await run(['token', 'list', '--role', 'read', '--api', alpha], 2, /token list does not take --role/);
    await run(['token', 'list', '--force', '--api', alpha], 2, /token does not take --force/);
    assert.equal(((await run(['token', 'list', '--json', '--api', alpha], 0)).stdout.match(/"name"/g) ?? []).length, 3);

    // the token's sources, in order; a read token reads and is refused commands
    await run(['status', '--api', alpha, '--token', ci], 0, /cluster test as seen by alpha/);
    await run(['maintenance', 'on', '--api', alpha, '--token', ci], 1, /token ci has the read role: POST \/api\/v1\/maintenance needs an admin token \(ERR_FORBIDDEN\)/);
    await run(['maintenance', 'on', '--api', alpha], 1, /ERR_FORBIDDEN/, { env: { TANDEM_TOKEN: ci } });
    const file = path.join(c.dir, 'ci-token');
    fs.writeFileSync(file, `${ci}\n`, { mode: 0o600 });
    await run(['maintenance', 'on', '--api', alpha, '--token-file', file], 1, /ERR_FORBIDDEN/);
    await run(['maintenance', 'on', '--api', alpha], 1, /ERR_FORBIDDEN/, { env: { TANDEM_TOKEN_FILE: file } });
    // --token wins over $TANDEM_TOKEN, which wins over --token-file, which wins over $TANDEM_TOKEN_FILE
    const opsFile = path.join(c.dir, 'ops-token');
    fs.writeFileSync(opsFile, `${ops}\n`, { mode: 0o600 });
    await run(['maintenance', 'on', '--api', alpha, '--token', ci], 1, /ERR_FORBIDDEN/, { env: { TANDEM_TOKEN: ops } });
    await run(['maintenance', 'on', '--api', alpha, '--token-file', opsFile], 1, /ERR_FORBIDDEN/, { env: { TANDEM_TOKEN: ci } });
    await run(['maintenance', 'on', '--api', alpha, '--token-file', file], 1, /ERR_FORBIDDEN/, { env: { TANDEM_TOKEN_FILE: '/nonexistent' } });
    assert.equal(await maintenanceOf(c), false);

    // no token at all: 401, exit 1, and how to give one
    const none = await run(['maintenance', 'on', '--api', alpha], 1, undefined, { token: 'none' });
    assert.match(none.stderr, /tandem: error: alpha's API needs a token.*No token was given: give one with --token TOKEN, \$TANDEM_TOKEN, --token-file FILE or \$TANDEM_TOKEN_FILE.*tandem token create NAME.*\(ERR_UNAUTHORIZED\)/s);
    await run(['status', '--api', alpha], 1, /ERR_UNAUTHORIZED/, { token: 'none' });
    // a token the node does not take: 401, naming where it came from
    await run(['status', '--api', alpha], 1, /not valid on alpha.*\(the token from \$TANDEM_TOKEN\) \(ERR_UNAUTHORIZED\)/, { env: { TANDEM_TOKEN: c.beta.token } });
    // a token or file that is not one: a usage error, nothing asked
    await run(['status', '--api', alpha, '--token', 'garbage'], 2, /--token: not a Tandem API token/);
    await run(['status', '--api', alpha, '--token-file', path.join(c.dir, 'missing')], 2, /--token-file .*missing: cannot read it: no such file/);
    await run(['status', '--api', alpha, '--ca', file], 2, /--ca trusts the certificate of an API served over HTTPS/);
    assert.equal(await maintenanceOf(c), false, 'no refused command changed anything');

    // an admin token made on alpha works on beta; revoked by name, it works on neither
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await tandem(['maintenance', 'on', '--api', beta, '--token', ops]);
      if (r.code === 0) break;
      if (Date.now() > deadline) assert.fail(`beta never took alpha's token: ${describeRun(['maintenance'], r)}`);
      await sleep(200);
    }
    await run(['maintenance', 'off', '--api', beta, '--token', ops], 0);
    await run(['token', 'revoke', 'ops', '--api', beta], 0, /token ops \(id [0-9a-f]{16}\) revoked on beta; alpha refuses it too once the two nodes have met/);
    await run(['token', 'revoke', ci.slice(4, 20), '--api', alpha], 0, /token ci \(id [0-9a-f]{16}\) revoked/);
    await run(['status', '--api', beta, '--token', ops], 1, /ERR_UNAUTHORIZED/);
    const gone = Date.now() + 20_000;
    while ((await tandem(['status', '--api', alpha, '--token', ops])).code !== 1) {
      if (Date.now() > gone) assert.fail('alpha still takes the token revoked on beta');
      await sleep(200);
    }
    const after = await run(['token', 'list', '--api', alpha], 0);
    assert.doesNotMatch(after.stdout, /^(ci|ops) /m);
    assert.match(after.stdout, /^script /m);
    t.diagnostic('create/list/revoke with exit codes 0, 1 and 2; --token, $TANDEM_TOKEN, --token-file, $TANDEM_TOKEN_FILE; 401 and 403 exit 1');
  });
});
