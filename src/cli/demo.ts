// `tandem demo`: two nodes on this machine (loopback addresses 127.0.0.2 and
// 127.0.0.3) and a witness (127.0.0.4); one pool whose mirrored volume the
// owner exports over NBD on the pool's own address (127.0.0.10). Each node is
// a real `tandem node start` process, so it can be killed and restarted: the
// other takes the pool over.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseSize } from '../util/size';
import { UsageError } from './errors';

interface DemoNode { readonly name: string; readonly ip: string; readonly config: string; readonly logFile: string }

function writeConfigs(dir: string, size: string): DemoNode[] {
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
      volumes: [{ name: 'vol0', size, cacheMode: 'write-back' }],
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
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(ready)) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}; see ${logFile}`)));
  });
}

function startNode(bin: string, n: DemoNode): Promise<ChildProcess> {
  return startChild(bin, ['node', 'start', '--config', n.config], `node ${n.name}`, n.logFile, 'ready');
}

export async function runDemo(args: string[], defaultDir: string): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, strict: true, options: {
      dir: { type: 'string', default: defaultDir },
      size: { type: 'string', default: '1G' },
    } }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (typeof parseSize(values.size) === 'string') throw new UsageError(`--size: ${String(parseSize(values.size))}`);
  fs.mkdirSync(values.dir, { recursive: true });
  const nodes = writeConfigs(values.dir, values.size);
  const bin = path.join(__dirname, '..', '..', '..', 'bin', 'tandem.js');
  const children: ChildProcess[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(children.map((c) => new Promise<void>((r) => {
      if (c.exitCode !== null || c.signalCode !== null) { r(); return; }
      c.once('exit', () => r());
      c.kill('SIGTERM');
    })));
  };
  let w: ChildProcess;
  try {
    w = await startChild(bin, ['witness', '--listen', WITNESS, '--config', writeWitnessConfig(values.dir)], 'the witness', path.join(values.dir, 'witness.log'), 'listening');
    children.push(w);
    for (const n of nodes) children.push(await startNode(bin, n));
  } catch (e) {
    await stopAll();
    throw e;
  }
  const [a, b] = children.slice(1) as [ChildProcess, ChildProcess];
  const url = `nbd://${POOL_VIP.split('/')[0] as string}:10809/vol0`;
  process.stdout.write(`tandem demo: two nodes and a witness, one pool with a mirrored volume (files and logs in ${values.dir})
  alpha    127.0.0.2  pid ${a.pid ?? '?'}  owns pool0: vol0 PRIMARY, exported on ${url}
  beta     127.0.0.3  pid ${b.pid ?? '?'}  vol0 SECONDARY: receives every write
  witness  ${WITNESS}  pid ${w.pid ?? '?'}  breaks the tie when the nodes lose each other

Try, in another terminal:
  npx tandem status --api 127.0.0.2:7780          # PRIM / SECOND, resync progress (first: the initial sync)
  qemu-io -f raw -c 'write -P 0xab 0 1M' ${url}    # a write lands on both nodes before it is acknowledged
  kill -9 ${a.pid ?? 'ALPHA_PID'}                                      # alpha dies: beta takes pool0 over in about a second
  qemu-io -f raw -c 'read -P 0xab 0 1M' ${url}     # same address, now served by beta, with every write
  npx tandem node start --config ${nodes[0]?.config}   # alpha returns as SECONDARY: only what changed is resynced
  npx tandem swap pool0 --api 127.0.0.3:7780        # planned switchover back to alpha
Stop with Ctrl-C.

`);
  await new Promise<void>((resolve) => {
    const stop = (): void => { process.off('SIGINT', stop); process.off('SIGTERM', stop); resolve(); };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await stopAll();
  return 0;
}
