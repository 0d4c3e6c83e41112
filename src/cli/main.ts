// The `tandem` command line.
import os from 'node:os';
import path from 'node:path';
import { VolumeError } from '../storage/volume-store';
import { runDemo } from './demo';
import { UsageError } from './errors';
import { parseServeArgs, runServe, serveUsage } from './serve';

const usage = `usage: tandem COMMAND [OPTIONS]

commands:
  demo      serve a demo volume on this machine and print what to try next
  serve     serve volumes over NBD without a cluster (tandem serve --help)
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
      process.stderr.write(`tandem: ${e.message}\n${command === 'serve' ? serveUsage : usage}\n`);
      return 2;
    }
    // operating errors (a refused volume, an address that cannot be bound, a file
    // that cannot be written) are reported plainly; anything else is a bug and crashes
    const code = (e as NodeJS.ErrnoException).code;
    if (e instanceof VolumeError || (typeof code === 'string' && /^E[A-Z]+$/.test(code))) {
      process.stderr.write(`tandem: error: ${(e as Error).message}\n`);
      return 1;
    }
    throw e;
  }
}
