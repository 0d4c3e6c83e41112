// `tandem witness --listen HOST:PORT --config FILE`: the tiebreaker of
// two-node clusters, in the foreground until SIGTERM or SIGINT.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../node/config';
import { parseHostPort } from '../util/address';
import { createLogger } from '../util/log';
import { parseWitnessConfig } from '../witness/config';
import { WitnessServer } from '../witness/server';
import { WitnessStateError } from '../witness/state-file';
import { UsageError } from './errors';
import { untilStopSignal } from './signals';

export const witnessUsage = `usage: tandem witness --listen HOST:PORT --config FILE [--debug]

Runs a witness: it stores no volume data and decides, for each cluster in
its configuration, which node may take over when the two lose each other
(docs/cluster.md). The configuration file (JSON):
  { "name": "witness", "stateFile": "PATH",
    "clusters": [{ "id": "32 hex digits", "secret": "hex, as the nodes' cluster.secret" }] }
"name" is optional; a relative stateFile is relative to the configuration file.
Prints "listening on HOST:PORT" when ready (port 0 picks a free one);
SIGTERM or SIGINT stops it and logs its counters.`;

export async function runWitness(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: { listen: { type: 'string' }, config: { type: 'string' }, debug: { type: 'boolean', default: false } },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.listen === undefined) throw new UsageError('--listen is required');
  if (values.config === undefined) throw new UsageError('--config is required');
  const listen = parseHostPort(values.listen);
  if (typeof listen === 'string') throw new UsageError(`--listen: ${listen}`);
  const cfg = parseWitnessConfig(fs.readFileSync(values.config, 'utf8'), path.dirname(path.resolve(values.config)));
  const log = createLogger(`witness ${cfg.name}`, undefined, values.debug);
  let server: WitnessServer;
  try {
    server = await WitnessServer.start({ config: cfg, listen, log });
  } catch (e) {
    if (e instanceof WitnessStateError) throw new ConfigError('ERR_CONFIG', `stateFile: ${e.message}`);
    throw e;
  }
  const a = server.address;
  for (const c of server.status().clusters) log.info('serving', { cluster: c.id, term: c.term, nodes: c.nodes.length });
  process.stdout.write(`listening on ${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}\n`);
  const signal = await untilStopSignal();
  await server.close();
  const s = server.status();
  log.info('stopped', { signal, received: s.received, granted: s.granted, ...s.refused, persistFailures: s.persistFailures });
  return 0;
}
