// Runs an external tool and returns its output; throws with stderr on failure.
import { execFile } from 'node:child_process';

export interface RunResult { stdout: string; stderr: string; code: number }

export function run(cmd: string, args: string[], opts: { timeoutMs?: number; allowFail?: boolean; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? (err as unknown as { code: number }).code : 1;
      if (err !== null && opts.allowFail !== true) {
        reject(new Error(`${cmd} ${args.join(' ')} failed (${err.message}):\n${stderr}`));
        return;
      }
      resolve({ stdout, stderr, code });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}
