// Starts `tandem witness` as a real child process serving one test cluster.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Cluster } from './cluster';
import { tandemBin } from './serve-process';

export interface WitnessProcess {
  readonly child: ChildProcess;
  /** "host:port" it listens on */
  readonly address: string;
  /** everything it wrote to stdout and stderr so far */
  output(): string;
  /** SIGKILL (if it still runs) and wait for the exit. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Writes the witness's config (its state file in dir) for the cluster, starts
 * it on host:port and waits for its "listening on" line.
 */
export async function startWitness(
  dir: string, host: string, port: number, cluster: Pick<Cluster, 'clusterId' | 'secret'>, timeoutMs = 10_000,
): Promise<WitnessProcess> {
  const config = path.join(dir, 'witness.json');
  fs.writeFileSync(config, JSON.stringify({ stateFile: path.join(dir, 'witness-state.json'), clusters: [{ id: cluster.clusterId, secret: cluster.secret }] }));
  const address = `${host}:${port}`;
  const child = spawn(process.execPath, [tandemBin, 'witness', '--listen', address, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((resolve) => {
    child.once('error', (e) => { out += `spawn error: ${e.message}\n`; resolve(); });
    child.once('exit', () => resolve());
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGKILL');
    await exited;
  };
  let timer: NodeJS.Timeout | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(`listening on ${address}`)) resolve();
    });
    child.stderr?.on('data', (d: Buffer) => { out += d.toString(); });
    void exited.then(() => reject(new Error(`the witness exited at start:\n${out}`)));
    timer = setTimeout(() => reject(new Error(`the witness did not listen on ${address} within ${timeoutMs} ms:\n${out}`)), timeoutMs);
  });
  try {
    await ready;
  } catch (e) {
    await stop();
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return { child, address, output: () => out, stop };
}
