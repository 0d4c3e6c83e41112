// `tandem node start --config FILE`: run a node in the foreground until SIGTERM or SIGINT.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { parseNodeConfig } from '../node/config';
import { NodeDaemon } from '../node/daemon';
import { createLogger } from '../util/log';
import { UsageError } from './errors';
import { untilStopSignal } from './signals';

export const nodeUsage = `usage: tandem node start --config FILE [--debug]

Runs this node in the foreground: opens (or creates) its copy of each volume,
keeps the sync link to the peer, exports the volumes it is primary for over
NBD and serves the API. Prints "node NAME ready" once the API answers.
SIGTERM or SIGINT stops it cleanly. The file format is in docs/mirroring.md.`;

export async function runNode(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || sub === undefined) {
    if (sub === undefined) throw new UsageError('node needs a subcommand (start)');
    process.stdout.write(nodeUsage + '\n');
    return 0;
  }
  if (sub !== 'start') throw new UsageError(`unknown node subcommand ${JSON.stringify(sub)}`);
  let values;
  try {
    ({ values } = parseArgs({ args: rest, strict: true, options: { config: { type: 'string' }, debug: { type: 'boolean', default: false } } }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.config === undefined) throw new UsageError('--config is required');
  const text = fs.readFileSync(values.config, 'utf8');
  const cfg = parseNodeConfig(text);
  const log = createLogger(`node ${cfg.node.name}`, undefined, values.debug);
  const daemon = new NodeDaemon(cfg, log);
  await daemon.start();
  process.stdout.write(`node ${cfg.node.name} ready\n`);
  log.info('stopping', { signal: await untilStopSignal() });
  await daemon.stop();
  log.info('stopped');
  return 0;
}
