// `tandem demo`: two nodes on this machine (loopback addresses 127.0.0.2 and
// 127.0.0.3) and a witness (127.0.0.4); one pool whose mirrored volume the
// owner exports over NBD on the pool's own address (127.0.0.10). Each node is
// a real `tandem node start` process, so it can be killed and restarted: the
// other takes the pool over. The demo keeps each node's pid in DIR/NAME.pid
// and starts a node again when told so on its standard input (`start beta`).
// It makes one API token of both nodes (DIR/api-token) and prints the
// console's link with it, so the browser and the CLI are signed in at once.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { parseSize } from '../util/size';
import { demoToken } from './demo-token';
import { UsageError } from './errors';

interface DemoNode { readonly name: string; readonly ip: string; readonly config: string; readonly logFile: string }

export const demoUsage = `usage: tandem demo [--dir DIR] [--size SIZE] [--resync-rate SIZE]

  --dir DIR            configs, data, logs and pid files (default: TMPDIR/tandem-demo)
  --size SIZE          vol0's size (default 1G)
  --resync-rate SIZE   per second, to watch a resync in progress (default 0: unlimited)

While it runs, type on its standard input:
  start alpha|beta     start a node again after it was killed
  help                 these lines`;

function writeConfigs(dir: string, size: string, resyncRate: string): DemoNode[] {
  const secretFile = path.join(dir, 'cluster.json');
  let cluster: { id: string; secret: string };
  if (fs.existsSync(secretFile)) cluster = JSON.parse(fs.readFileSync(secretFile, 'utf8')) as typeof cluster;
  else {
    cluster = { id: randomBytes(16).toString('hex'), secret: randomBytes(32).toString('hex') };
    fs.writeFileSync(secretFile, JSON.stringify(cluster) + '\n', { mode: 0o600 });
  }
  const nodes = [{ name: 'alpha', ip: '127.0.0.2' }, { name: 'beta', ip: '127.0.0.3' }];
  return nodes.map((n, i) => {
    const peer = nodes[1 - i] as { name: string; ip: string };
    const config = path.join(dir, `${n.name}.json`);
    fs.writeFileSync(config, JSON.stringify({
      cluster: { name: 'demo', ...cluster },
      node: { name: n.name, dataDir: path.join(dir, n.name), syncListen: `${n.ip}:7788`, apiListen: `${n.ip}:7780`, nbdListen: `${n.ip}:10809` },
      peer: { name: peer.name, syncAddress: `${peer.ip}:7788` },
      sync: { pingIntervalMs: 200, timeoutMs: 1000, reconnectMs: 300 },
      fencing: { policy: 'witness', witness: WITNESS },
      // on one machine the floating IP is a loopback address: what moves is which node listens on it
      floatingIp: { driver: 'loopback' },
      volumes: [{ name: 'vol0', size, cacheMode: 'write-back', resyncRate }],
      pools: [{ name: 'pool0', volumes: ['vol0'], preferredNode: 'alpha', floatingIps: [{ address: POOL_VIP }], nbdPort: 10809 }],
    }, null, 2) + '\n', { mode: 0o600 });
    return { ...n, config, logFile: path.join(dir, `${n.name}.log`) };
  });
}

const WITNESS = '127.0.0.4:7790';
const POOL_VIP = '127.0.0.10/8';

function writeWitnessConfig(dir: string): string {
  const cluster = JSON.parse(fs.readFileSync(path.join(dir, 'cluster.json'), 'utf8')) as { id: string; secret: string };
  const file = path.join(dir, 'witness.json');
  fs.writeFileSync(file, JSON.stringify({ stateFile: path.join(dir, 'witness-state.json'), clusters: [cluster] }, null, 2) + '\n', { mode: 0o600 });
  return file;
}

/** Starts a child and resolves once its stdout shows `ready`. */
function startChild(bin: string, args: string[], what: string, logFile: string, ready: string): Promise<ChildProcess> {
  const log = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', log] });
  fs.closeSync(log);
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes(ready)) {
        // a child blocked on a full pipe would stop: keep reading, and drop what it says
        child.stdout?.off('data', onData);
        child.stdout?.resume();
        resolve(child);
      }
    };
    child.stdout?.on('data', onData);
    child.once('error', (e) => reject(new Error(`${what} did not start: ${e.message}`)));
    child.once('exit', (code, signal) => reject(new Error(`${what} exited with ${signal ?? code}; see ${logFile}`)));
  });
}

function startNode(bin: string, n: DemoNode): Promise<ChildProcess> {
  return startChild(bin, ['node', 'start', '--config', n.config], `node ${n.name}`, n.logFile, 'ready');
}

function running(c: ChildProcess | undefined): c is ChildProcess {
  return c !== undefined && c.exitCode === null && c.signalCode === null;
}

function pidFile(dir: string, name: string): string {
  return path.join(dir, `${name}.pid`);
}

export async function runDemo(args: string[], defaultDir: string): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, strict: true, options: {
      dir: { type: 'string', default: defaultDir },
      size: { type: 'string', default: '1G' },
      'resync-rate': { type: 'string', default: '0' },
      help: { type: 'boolean', short: 'h', default: false },
    } }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n${demoUsage}`);
  }
  if (values.help) {
    process.stdout.write(demoUsage + '\n');
    return 0;
  }
  if (typeof parseSize(values.size) === 'string') throw new UsageError(`--size: ${String(parseSize(values.size))}`);
  if (typeof parseSize(values['resync-rate']) === 'string') throw new UsageError(`--resync-rate: ${String(parseSize(values['resync-rate']))}`);
  const dir = path.resolve(values.dir);
  fs.mkdirSync(dir, { recursive: true });
  const nodes = writeConfigs(dir, values.size, values['resync-rate']);
  const bin = path.join(__dirname, '..', '..', '..', 'bin', 'tandem.js');
  /** the current process of each node and of the witness, by name */
  const children = new Map<string, ChildProcess>();
  let stopping = false;
  const track = (name: string, c: ChildProcess): void => {
    children.set(name, c);
    fs.writeFileSync(pidFile(dir, name), `${c.pid ?? ''}\n`);
    c.once('exit', (code, signal) => {
      if (children.get(name) === c) fs.rmSync(pidFile(dir, name), { force: true });
      if (stopping) return;
      const again = nodes.some((n) => n.name === name) ? `; type "start ${name}" to start it again` : '';
      process.stdout.write(`${name} (pid ${c.pid ?? '?'}) exited with ${signal ?? code}${again}\n`);
    });
  };
  const stopAll = async (): Promise<void> => {
    stopping = true;
    await Promise.all([...children.values()].map((c) => new Promise<void>((r) => {
      if (!running(c)) { r(); return; }
      c.once('exit', () => r());
      c.kill('SIGTERM');
    })));
    for (const name of children.keys()) fs.rmSync(pidFile(dir, name), { force: true });
    fs.rmSync(pidFile(dir, 'demo'), { force: true });
  };
  fs.writeFileSync(pidFile(dir, 'demo'), `${process.pid}\n`);
  let auth: Awaited<ReturnType<typeof demoToken>>;
  try {
    track('witness', await startChild(bin, ['witness', '--listen', WITNESS, '--config', writeWitnessConfig(dir)], 'the witness', path.join(dir, 'witness.log'), 'listening'));
    for (const n of nodes) track(n.name, await startNode(bin, n));
    auth = await demoToken(dir, { host: '127.0.0.2', port: 7780, dataDir: path.join(dir, 'alpha') }, { host: '127.0.0.3', port: 7780 });
  } catch (e) {
    await stopAll();
    throw e;
  }
  const pid = (name: string): string => String(children.get(name)?.pid ?? '?');
  const url = `nbd://${POOL_VIP.split('/')[0] as string}:10809/vol0`;
  const rate = parseSize(values['resync-rate']) as number;
  process.stdout.write(`tandem demo: two nodes and a witness, one pool with a mirrored volume (files, logs and pid files in ${dir})
  alpha    127.0.0.2  pid ${pid('alpha')}  owns pool0: vol0 PRIMARY, exported on ${url}
  beta     127.0.0.3  pid ${pid('beta')}  vol0 SECONDARY: receives every write
  witness  ${WITNESS}  pid ${pid('witness')}  breaks the tie when the nodes lose each other
  console  http://127.0.0.2:7780/#token=${auth.token}
           (beta's API serves it too, at http://127.0.0.3:7780/; the link signs the browser in)
  token    ${auth.file}: an admin token of both nodes${auth.onBoth ? '' : ' (beta did not take it within 30 s: the nodes have not met yet)'}${rate > 0 ? `\n  resync   at most ${values['resync-rate']}/s` : ''}

Try, in another terminal:
  export TANDEM_TOKEN_FILE=${auth.file}   # the CLI's token
  npx tandem status --api 127.0.0.2:7780          # PRIM / SECOND, resync progress (first: the initial sync)
  qemu-io -f raw -c 'write -P 0xab 0 1M' ${url}    # a write lands on both nodes before it is acknowledged
  kill -9 $(cat ${pidFile(dir, 'alpha')})       # alpha dies: beta takes pool0 over in about a second
  qemu-io -f raw -c 'read -P 0xab 0 1M' ${url}     # same address, now served by beta, with every write
  npx tandem swap pool0 --api 127.0.0.3:7780        # once alpha is back: planned switchover back to alpha
Type here:
  start alpha                                       # alpha returns as SECONDARY: only what changed is resynced
Stop with Ctrl-C.

`);
  const startAgain = async (name: string): Promise<void> => {
    const n = nodes.find((x) => x.name === name);
    if (n === undefined) { process.stdout.write(`no node named ${JSON.stringify(name)}: alpha or beta\n`); return; }
    const c = children.get(name);
    if (running(c)) { process.stdout.write(`${name} is running (pid ${c.pid ?? '?'})\n`); return; }
    try {
      const child = await startNode(bin, n);
      if (stopping) { child.kill('SIGTERM'); return; }
      track(name, child);
      process.stdout.write(`${name} started again: pid ${child.pid ?? '?'}\n`);
    } catch (e) {
      process.stdout.write(`${name} did not start: ${(e as Error).message}\n`);
    }
  };
  // commands on standard input; when it ends (a pipe closed, </dev/null) the demo runs on until a signal
  const input = readline.createInterface({ input: process.stdin, terminal: false });
  let queue = Promise.resolve();
  input.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === undefined || cmd === '') return;
    if (cmd === 'start' && arg !== undefined) queue = queue.then(() => startAgain(arg));
    else process.stdout.write(`${cmd === 'help' ? '' : `unknown command ${JSON.stringify(line.trim())}\n`}commands: start alpha, start beta\n`);
  });
  await new Promise<void>((resolve) => {
    const stop = (): void => { process.off('SIGINT', stop); process.off('SIGTERM', stop); resolve(); };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  input.close();
  process.stdin.destroy();
  await queue;
  await stopAll();
  return 0;
}
