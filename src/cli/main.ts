// The `tandem` command line.
import os from 'node:os';
import path from 'node:path';
import { VolumeError } from '../storage/volume-store';
import { adminUsage, runAdmin } from './admin';
import { clusterUsage, runCluster } from './cluster';
import { ApiCallError, ApiUnreachableError } from './api-client';
import { ConfigError } from '../node/config';
import { runDemo } from './demo';
import { UsageError, exitCodes } from './errors';
import { nodeUsage, runNode } from './node';
import { parseServeArgs, runServe, serveUsage } from './serve';
import { runWitness, witnessUsage } from './witness';
import { packageVersion } from '../util/package-files';

const usage = `usage: tandem COMMAND [OPTIONS]

commands:
  demo      serve a demo volume on this machine and print what to try next
  cluster   form a two-node cluster: tandem cluster create on the first node prints a
            join token (it holds the cluster secret), tandem cluster join TOKEN on the second
  node      run a node: tandem node start --config FILE (tandem node check: the file only);
            tandem node offline|online, node remove|add NAME: a node leaves the cluster and comes back
  status    a node's view: nodes and links, pools, volumes and resync progress (--json: as sent)
  wait-sync VOLUME   wait until a volume's two copies are in sync, with progress
  verify    compare a volume's two copies block by block (--resync repairs, --wait waits for sync first)
  resolve   after a split brain, discard one node's changes
  promote, demote, connect, disconnect   per-volume operator commands
  swap      hand a pool over to the peer (planned switchover)
  pool move POOL --node NODE   migrate a pool to a node
  pool create|remove|export|import|unmanage|manage|reattach POOL   the pool lifecycle
  config show|push   the cluster configuration document both nodes share
  maintenance on|off   nothing moves automatically while on
  activity  a node's activity log: cluster decisions, pool steps with outcome and duration
  token create|list|revoke   the API tokens both nodes take (tandem token --help)
  serve     serve volumes over NBD without a cluster (tandem serve --help)
  witness   run the tiebreaker of two-node clusters (tandem witness --help)
  version   print the version
  help      this text
The commands that ask a node take --api HOST:PORT or https://HOST:PORT (default
$TANDEM_API, then 127.0.0.1:7780) and send an API token: --token TOKEN, $TANDEM_TOKEN,
--token-file FILE, $TANDEM_TOKEN_FILE, or /var/lib/tandem/api-token (the node's own,
for root); --ca FILE or $TANDEM_CA trusts a self-signed certificate. tandem status
--help lists their options.

exit status:
  0  done
  1  refused or failed: the node answered with an error (no valid token, a read
     token asking for a command), a volume is in split brain or will not
     reconnect, verify found differences, --timeout ran out;
     a node or witness that cannot start (a bad configuration, an address in use)
  2  usage error: unknown command or option, missing or extra argument
  3  the node's API cannot be reached (nothing listens, no route, no answer in
     time, its certificate is not trusted, or something that is not the Tandem
     API answered)
  70 an internal error: a bug, with its stack trace on stderr`;

const ADMIN_COMMANDS = ['status', 'wait-sync', 'verify', 'resolve', 'promote', 'swap', 'pool', 'config', 'maintenance', 'demote', 'connect', 'disconnect', 'activity', 'token'];


/** `tandem status | head -3` closes the pipe early: that is the reader's choice, not an error of ours */
function quietOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.listenerCount('error') > 0) continue;
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(exitCodes.ok);
      throw e;
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  quietOnClosedPipe();
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        if (rest.includes('--help') || rest.includes('-h')) { process.stdout.write(serveUsage + '\n'); return 0; }
        return await runServe(parseServeArgs(rest));
      case 'node':
        return await runNode(rest);
      case 'cluster':
        return await runCluster(rest);
      case 'witness':
        if (rest.includes('--help') || rest.includes('-h')) { process.stdout.write(witnessUsage + '\n'); return 0; }
        return await runWitness(rest);
      case 'status':
      case 'wait-sync':
      case 'verify':
      case 'resolve':
      case 'promote':
      case 'swap':
      case 'pool':
      case 'maintenance':
      case 'demote':
      case 'connect':
      case 'disconnect':
      case 'activity':
      case 'config':
      case 'token':
        return await runAdmin(command, rest);
      case 'demo':
        return await runDemo(rest, path.join(os.tmpdir(), 'tandem-demo'));
      case 'version':
      case '--version':
        process.stdout.write(`tandem ${packageVersion()}\n`);
        return exitCodes.ok;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(usage + '\n');
        return exitCodes.ok;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      const help = command === 'serve' ? serveUsage : command === 'node' ? nodeUsage : command === 'witness' ? witnessUsage
        : command === 'cluster' ? clusterUsage
        : ADMIN_COMMANDS.includes(command ?? '') ? adminUsage : usage;
      process.stderr.write(`tandem: ${e.message}\n${help}\n`);
      return exitCodes.usage;
    }
    if (e instanceof ApiUnreachableError) {
      process.stderr.write(`tandem: unreachable: ${e.message}\n`);
      return exitCodes.unreachable;
    }
    if (e instanceof ApiCallError) {
      process.stderr.write(`tandem: error: ${e.message} (${e.code})\n`);
      return exitCodes.failed;
    }
    // operating errors (a refused volume, an address that cannot be bound, a file
    // that cannot be written) are reported plainly; anything else is a bug and crashes
    const code = (e as NodeJS.ErrnoException).code;
    if (e instanceof ConfigError || e instanceof VolumeError || (typeof code === 'string' && /^E[A-Z]+$/.test(code))) {
      process.stderr.write(`tandem: error: ${(e as Error).message}\n`);
      return exitCodes.failed;
    }
    throw e;
  }
}
