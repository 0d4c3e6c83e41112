// `tandem demo`: until the cluster exists, one demo volume served over NBD on loopback.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError } from './errors';
import { parseServeArgs, runServe } from './serve';

export async function runDemo(args: string[], defaultDir: string): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, strict: true, options: {
      dir: { type: 'string', default: defaultDir },
      listen: { type: 'string', default: '127.0.0.1:10809' },
      size: { type: 'string', default: '1G' },
    } }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  fs.mkdirSync(values.dir, { recursive: true });
  const file = path.join(values.dir, 'demo.img');
  const url = `nbd://${values.listen}`;
  process.stdout.write(`tandem demo: volume ${file} served on ${url}

Try, in another terminal:
  nbdinfo ${url}                                  # size, block sizes, what the export can do
  qemu-io -f raw -c 'write -P 0xab 0 1M' ${url}    # write a pattern
  qemu-io -f raw -c 'read -P 0xab 0 1M' ${url}     # read it back
  nbdinfo --map ${url}                            # holes and data (base:allocation)
Stop with Ctrl-C; the volume stays in ${values.dir}.

`);
  const serveArgs = ['--file', file, '--listen', values.listen];
  if (!fs.existsSync(file)) serveArgs.push('--size', values.size);
  return runServe(parseServeArgs(serveArgs));
}
