// The `linux` floating-IP driver: `ip addr add/del` with the pool's prefix and
// a label, a duplicate-address probe before adding (arping -D; ndisc6 for IPv6),
// and announcements after adding (arping -U and -A; na6 for an unsolicited NA),
// repeated, so neighbours drop the old owner's MAC at once instead of minutes later.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../util/log';
import { describeIp, type FloatingIp, type FloatingIpDriver } from './floating-ip';

export interface LinuxDriverOptions {
  /** how long the duplicate-address probe waits for an answer */
  readonly probeMs: number;
  /** how many announcements of each kind, one per second */
  readonly announceCount: number;
  readonly log: Logger;
}

export const linuxDriverLimits = { commandTimeoutMs: 10_000, outputBytes: 256 * 1024, announcersMax: 256 } as const;

/** Linux caps interface names (and so labels) at 15 bytes. */
const IFNAMSIZ_MAX = 15;

interface Result { readonly code: number; readonly stdout: string; readonly stderr: string }

function runCommand(cmd: string, args: readonly string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: linuxDriverLimits.commandTimeoutMs, maxBuffer: linuxDriverLimits.outputBytes }, (e, stdout, stderr) => {
      if (e !== null && typeof e.code !== 'number') {
        reject(new Error(`${cmd} ${args.join(' ')}: ${e.message}`));
        return;
      }
      resolve({ code: e === null ? 0 : (e.code as number), stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function failed(what: string, r: Result): Error {
  return new Error(`${what}: ${(r.stderr.trim() || r.stdout.trim() || `exit code ${r.code}`).split('\n')[0] ?? ''}`);
}

/** The label marks our addresses in `ip addr` output: IF:tandem when it fits. IPv4 only. */
function labelFor(iface: string): string | null {
  for (const suffix of [':tandem', ':tdm', ':t']) if (iface.length + suffix.length <= IFNAMSIZ_MAX) return iface + suffix;
  return null;
}

export class LinuxDriver implements FloatingIpDriver {
  readonly name = 'linux' as const;
  private readonly announcers = new Set<ChildProcess>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly o: LinuxDriverOptions) {}

  probe(ip: FloatingIp): Promise<string | null> {
    return ip.family === 4 ? this.probe4(ip) : this.probe6(ip);
  }

  /** arping -D exits at the first answer; silence for probeMs means the address is free. */
  private probe4(ip: FloatingIp): Promise<string | null> {
    return new Promise((resolve, reject) => {
      const child = spawn('arping', ['-D', '-c', '1', '-w', '2', '-I', ip.interface, ip.address], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const take = (d: Buffer): void => { if (out.length < linuxDriverLimits.outputBytes) out += d.toString(); };
      child.stdout.on('data', take);
      child.stderr.on('data', take);
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        child.kill('SIGKILL');
        resolve(null);
      }, this.o.probeMs);
      child.once('error', (e) => {
        clearTimeout(timer);
        if (!settled) { settled = true; reject(new Error(`arping: ${e.message}`)); }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        if (code === 0) resolve(null);
        else if (code === 1 && /reply from/i.test(out)) resolve(/\[([0-9A-Fa-f:]{17})\]/.exec(out)?.[1]?.toLowerCase() ?? 'an unknown host');
        else reject(new Error(`probing ${describeIp(ip)}: arping: ${out.trim().split('\n').at(-1) ?? `exit code ${String(code)}`}`));
      });
    });
  }

  private async probe6(ip: FloatingIp): Promise<string | null> {
    const r = await runCommand('ndisc6', ['-1', '-q', '-n', '-r', '1', '-w', String(this.o.probeMs), ip.address, ip.interface]);
    if (r.code === 0) return r.stdout.trim().toLowerCase() || 'an unknown host';
    // ndisc6 exits 2 when nobody answered (in quiet mode without a word)
    if (r.code === 2) return null;
    throw failed(`probing ${describeIp(ip)}: ndisc6`, r);
  }

  async add(ip: FloatingIp): Promise<void> {
    const args = ['addr', 'add', `${ip.address}/${ip.prefix}`, 'dev', ip.interface];
    const label = labelFor(ip.interface);
    // nodad: the probe above did the duplicate check, and the address must serve at once
    if (ip.family === 4 && label !== null) args.push('label', label);
    if (ip.family === 6) args.push('nodad');
    const r = await runCommand('ip', ip.family === 6 ? ['-6', ...args] : args);
    if (r.code !== 0 && !/file exists/i.test(r.stderr)) throw failed(`adding ${describeIp(ip)}`, r);
  }

  announce(ip: FloatingIp): void {
    const n = String(this.o.announceCount);
    if (ip.family === 4) {
      // -U: an unsolicited request; -A: an unsolicited reply (some neighbours heed only one kind)
      this.spawnAnnouncer('arping', ['-U', '-c', n, '-I', ip.interface, ip.address]);
      this.spawnAnnouncer('arping', ['-A', '-c', n, '-I', ip.interface, ip.address]);
      return;
    }
    for (let i = 0; i < this.o.announceCount; i++) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.spawnAnnouncer('na6', ['-i', ip.interface, '-s', ip.address, '-d', 'ff02::1', '-t', ip.address, '-o', '-e']);
      }, i * 1000);
      this.timers.add(t);
    }
  }

  private spawnAnnouncer(cmd: string, args: string[]): void {
    if (this.announcers.size >= linuxDriverLimits.announcersMax) {
      this.o.log.warn('too many announcements running; one skipped', { cmd, args: args.join(' ') });
      return;
    }
    const child = spawn(cmd, args, { stdio: 'ignore' });
    this.announcers.add(child);
    child.once('error', (e) => { this.announcers.delete(child); this.o.log.warn('announcing a floating IP failed', { cmd, error: e.message }); });
    child.once('exit', (code) => {
      this.announcers.delete(child);
      if (code !== 0 && code !== null) this.o.log.warn('announcing a floating IP failed', { cmd, args: args.join(' '), code });
    });
  }

  async remove(ip: FloatingIp): Promise<void> {
    const r = await runCommand('ip', ['addr', 'del', `${ip.address}/${ip.prefix}`, 'dev', ip.interface]);
    // already gone counts as removed: iproute2 says so in one of two ways, depending on its version
    if (r.code !== 0 && !/cannot assign requested address|address not found/i.test(r.stderr)) throw failed(`removing ${describeIp(ip)}`, r);
  }

  async present(ip: FloatingIp): Promise<boolean> {
    const r = await runCommand('ip', ['-j', 'addr', 'show', 'dev', ip.interface]);
    if (r.code !== 0) throw failed(`listing the addresses of ${ip.interface}`, r);
    const links = JSON.parse(r.stdout) as Array<{ addr_info?: Array<{ local?: string; prefixlen?: number }> }>;
    return links.some((l) => (l.addr_info ?? []).some((a) => a.local === ip.address && a.prefixlen === ip.prefix));
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const c of this.announcers) c.kill('SIGTERM');
    this.announcers.clear();
  }
}
