// The API over HTTPS (`api.tls` in the node file) with a self-signed certificate made by
// openssl: the CLI works with --ca (or $TANDEM_CA) and fails clearly without it, or when the
// scheme does not match what the node serves; a node whose certificate or key is missing or
// wrong does not start, and node check says which file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, sleep, withCluster } from '../helpers/cluster';
import { run as runTool } from '../helpers/run';
import { describeRun, tandem, type CliResult, type RunOptions } from '../helpers/tandem-cli';

// addresses no other test uses
const HOSTS = { alpha: '127.0.0.64', beta: '127.0.0.65' } as const;

async function run(args: string[], code: number, pattern?: RegExp, o: RunOptions = {}): Promise<CliResult> {
  const r = await tandem(args, { timeoutMs: 60_000, ...o });
  assert.equal(r.code, code, describeRun(args, r));
  if (pattern !== undefined) assert.match(r.stdout + r.stderr, pattern, describeRun(args, r));
  return r;
}

/** A self-signed certificate for both nodes' addresses, its key, and a key of no certificate. */
async function makeCertificate(dir: string): Promise<{ cert: string; key: string; otherKey: string }> {
  const cert = path.join(dir, 'api-cert.pem');
  const key = path.join(dir, 'api-key.pem');
  const otherKey = path.join(dir, 'other-key.pem');
  await runTool('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', '/CN=tandem-test-api', '-addext', `subjectAltName=IP:${HOSTS.alpha},IP:${HOSTS.beta}`]);
  await runTool('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', otherKey]);
  return { cert, key, otherKey };
}

test('the API over HTTPS: the CLI trusts a self-signed certificate with --ca or $TANDEM_CA, and says why it fails without', { timeout: 180_000 }, async (t) => {
  const certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-api-tls-'));
  const plain = http.createServer((_req, res) => res.end('{}'));
  try {
    const files = await makeCertificate(certDir);
    const tls = { api: { tls: { certFile: files.cert, keyFile: files.key } } };
    await withCluster({ size: '16M', hosts: HOSTS, prefix: 'tandem-api-tls-', extraConfig: () => tls }, async (c) => {
      const alpha = `https://${HOSTS.alpha}:${c.alpha.addr.api.port}`;
      const beta = `https://${HOSTS.beta}:${c.beta.addr.api.port}`;
      await run(['status', '--api', alpha, '--ca', files.cert], 0, /cluster test as seen by alpha/);
      await run(['status', '--api', alpha], 0, /cluster test as seen by alpha/, { env: { TANDEM_CA: files.cert } });
      // without the certificate: exit 3, and what to do
      await run(['status', '--api', alpha], 3,
        new RegExp(`unreachable: the certificate of https://${HOSTS.alpha.replace(/\./g, '\\.')}:\\d+ is not trusted \\(DEPTH_ZERO_SELF_SIGNED_CERT: .*\\): give the certificate that signed it with --ca FILE or \\$TANDEM_CA`));
      // plain HTTP to the HTTPS API: exit 3, with the hint
      await run(['status', '--api', `${HOSTS.alpha}:${c.alpha.addr.api.port}`], 3, /broke before an answer \(ECONNRESET\)\. If the node serves its API over HTTPS \(api\.tls\), give the address as https:\/\/HOST:PORT/);
      // HTTPS to something that speaks plain HTTP: exit 3, with the hint
      const plainPort = await freePort(HOSTS.alpha);
      await new Promise<void>((resolve) => plain.listen(plainPort, HOSTS.alpha, resolve));
      await run(['status', '--api', `https://${HOSTS.alpha}:${plainPort}`, '--ca', files.cert], 3, /no TLS answer from https:\/\/.*: if the node serves its API over plain HTTP, leave https:\/\/ out/);
      // certificates that cannot be read: usage errors
      await run(['status', '--api', alpha, '--ca', path.join(certDir, 'missing.pem')], 2, /--ca .*missing\.pem: cannot read it: no such file/);
      await run(['status', '--api', alpha, '--ca', files.key], 2, /not a PEM certificate file/);

      // commands and tokens work as over HTTP: a token made on alpha reaches beta
      const ops = (await run(['token', 'create', 'ops', '--api', alpha, '--ca', files.cert], 0)).stdout.trim();
      const deadline = Date.now() + 20_000;
      while ((await tandem(['maintenance', 'on', '--api', beta, '--ca', files.cert, '--token', ops])).code !== 0) {
        if (Date.now() > deadline) assert.fail('beta never took the token made on alpha');
        await sleep(200);
      }
      await run(['maintenance', 'off', '--api', beta, '--ca', files.cert, '--token', ops], 0);
      await run(['status', '--api', beta, '--ca', files.cert], 1, /needs a token.*ERR_UNAUTHORIZED/, { token: 'none' });

      // a node with a missing, a mismatched or a relative certificate file does not start; node check names the file
      const base = JSON.parse(fs.readFileSync(c.alpha.configPath, 'utf8')) as Record<string, Record<string, unknown>>;
      const apiPort = await freePort(HOSTS.alpha);
      const variant = (name: string, tlsFiles: Record<string, string>): string => {
        const file = path.join(certDir, `${name}.json`);
        const node = { ...base.node, dataDir: path.join(certDir, `${name}-data`), apiListen: `${HOSTS.alpha}:${apiPort}` };
        fs.writeFileSync(file, JSON.stringify({ ...base, node, api: { tls: tlsFiles } }));
        return file;
      };
      const missing = variant('missing', { certFile: path.join(certDir, 'nope.pem'), keyFile: files.key });
      await run(['node', 'check', '--config', missing], 1, /api\.tls\.certFile: cannot read .*nope\.pem: no such file/);
      await run(['node', 'start', '--config', missing], 1, /tandem: error: api\.tls\.certFile: cannot read .*nope\.pem: no such file/);
      const mismatched = variant('mismatched', { certFile: files.cert, keyFile: files.otherKey });
      await run(['node', 'check', '--config', mismatched], 1, /api\.tls: .*api-cert\.pem and .*other-key\.pem are not a usable PEM certificate and its key/);
      await run(['node', 'check', '--config', variant('relative', { certFile: 'api-cert.pem', keyFile: files.key })], 1, /api\.tls\.certFile: "api-cert\.pem" must be an absolute path/);
      await run(['node', 'check', '--config', variant('fine', { certFile: files.cert, keyFile: files.key })], 0, /API https:\/\/127\.0\.0\.64:\d+/);
      t.diagnostic('HTTPS with --ca and $TANDEM_CA; exit 3 for an untrusted certificate and a scheme that does not match; bad certificate files stop the node');
    });
  } finally {
    plain.close();
    fs.rmSync(certDir, { recursive: true, force: true });
  }
});
