// The `tandem` command line.
import os from 'node:os';
import path from 'node:path';
import { VolumeError } from '../storage/volume-store';
import { ApiCallError, adminUsage, runAdmin } from './admin';
import { ConfigError } from '../node/config';
import { runDemo } from './demo';
import { UsageError } from './errors';
import { nodeUsage, runNode } from './node';
import { parseServeArgs, runServe, serveUsage } from './serve';
import { runWitness, witnessUsage } from './witness';

const usage = `usage: tandem COMMAND [OPTIONS]

commands:
  demo      serve a demo volume on this machine and print what to try next
  node      run a node: tandem node start --config FILE
  status    show a node's volumes: state, role, disk states, resync progress
  verify    compare a volume's two copies block by block (--resync repairs)
  resolve   after a split brain, discard one node's changes
  promote, demote, connect, disconnect   per-volume operator commands
  swap      hand a pool over to the peer (planned switchover)
  pool move POOL --node NODE   migrate a pool to a node
  maintenance on|off   nothing moves automatically while on
  serve     serve volumes over NBD without a cluster (tandem serve --help)
  witness   run the tiebreaker of two-node clusters (tandem witness --help)
  version   print the version
  help      this text`;

function version(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkg = require(path.join(__dirname, '..', '..', '..', 'package.json')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        if (rest.includes('--help') || rest.includes('-h')) { process.stdout.write(serveUsage + '\n'); return 0; }
        return await runServe(parseServeArgs(rest));
      case 'node':
        return await runNode(rest);
      case 'witness':
        if (rest.includes('--help') || rest.includes('-h')) { process.stdout.write(witnessUsage + '\n'); return 0; }
        return await runWitness(rest);
      case 'status':
      case 'verify':
      case 'resolve':
      case 'promote':
      case 'swap':
      case 'pool':
      case 'maintenance':
      case 'demote':
      case 'connect':
      case 'disconnect':
        return await runAdmin(command, rest);
      case 'demo':
        return await runDemo(rest, path.join(os.tmpdir(), 'tandem-demo'));
      case 'version':
      case '--version':
        process.stdout.write(`tandem ${version()}\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(usage + '\n');
        return 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      const help = command === 'serve' ? serveUsage : command === 'node' ? nodeUsage : command === 'witness' ? witnessUsage
        : ['status', 'verify', 'resolve', 'promote', 'demote', 'connect', 'disconnect', 'swap', 'pool', 'maintenance'].includes(command ?? '') ? adminUsage : usage;
      process.stderr.write(`tandem: ${e.message}\n${help}\n`);
      return 2;
    }
    // operating errors (a refused volume, an address that cannot be bound, a file
    // that cannot be written) are reported plainly; anything else is a bug and crashes
    const code = (e as NodeJS.ErrnoException).code;
    if (e instanceof ApiCallError || e instanceof ConfigError) {
      process.stderr.write(`tandem: error: ${e.message}\n`);
      return 1;
    }
    if (e instanceof VolumeError || (typeof code === 'string' && /^E[A-Z]+$/.test(code))) {
      process.stderr.write(`tandem: error: ${(e as Error).message}\n`);
      return 1;
    }
    throw e;
  }
}
