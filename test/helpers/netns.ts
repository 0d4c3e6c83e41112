// A small L2 network of network namespaces for tests: one Linux bridge in the
// root namespace (198.18.S.254/24, so the test process reaches every host) and
// one namespace per host, each with eth0 = 198.18.S.(i+1)/24 on a veth whose
// other end is a port of the bridge. Cutting a host's port (portDown) is what a
// switch-port fence does. IPv6 is disabled on everything created here, so the
// only traffic is IPv4 inside 198.18.S.0/24. All names carry this process's pid
// and the subnet; cleanup() removes exactly what createNetns made.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { run, type RunResult } from './run';

export interface NetnsHost {
  /** logical name, e.g. 'a' */
  readonly name: string;
  /** network namespace name */
  readonly ns: string;
  /** 198.18.S.x, on eth0 */
  readonly ip: string;
  readonly iface: 'eth0';
  /** the root-namespace side of the host's veth, a port of the bridge */
  readonly hostVeth: string;
  /** lower-case aa:bb:cc:dd:ee:ff of eth0 in the namespace */
  mac(): Promise<string>;
}

export interface ExecOptions {
  readonly timeoutMs?: number;
  readonly allowFail?: boolean;
}

export interface Capture {
  /** stops tcpdump; resolves with the lines it printed */
  stop(): Promise<string[]>;
}

export interface Netns {
  /** S in 198.18.S.0/24 */
  readonly subnet: number;
  /** bridge name in the root namespace */
  readonly bridge: string;
  /** 198.18.S.254, on the bridge */
  readonly bridgeIp: string;
  readonly hosts: Readonly<Record<string, NetnsHost>>;
  /** runs `ip netns exec NS cmd args` */
  exec(host: string, cmd: string, args: string[], opts?: ExecOptions): Promise<RunResult>;
  /** argv prefix to spawn a long-running process inside a namespace: ['ip', 'netns', 'exec', NS] (ip execs: same pid) */
  prefix(host: string): string[];
  /** cuts the host off the bridge (its root-namespace veth down) */
  portDown(host: string): Promise<void>;
  /** puts it back */
  portUp(host: string): Promise<void>;
  /** the addresses on eth0 in the host's namespace, as CIDRs ('198.18.S.100/24') */
  addresses(host: string): Promise<string[]>;
  /** the host's neighbour-table lladdr for ip (lower case), or undefined when there is none (or it is INCOMPLETE/FAILED) */
  neighbour(host: string, ip: string): Promise<string | undefined>;
  /** tcpdump -l -n -e arp on eth0 in the host's namespace, already listening when this resolves */
  captureArp(host: string): Promise<Capture>;
  /** a shell command that, run from any namespace, takes the host's bridge port down (for a fence command) */
  fenceCommand(host: string): string;
  /** idempotent: stops the captures it started, deletes the veths, the bridge and the namespaces */
  cleanup(): Promise<void>;
}

export interface NetnsOptions {
  /** S in 198.18.S.0/24, 1..254; each test picks its own */
  readonly subnet: number;
  /** logical host names, e.g. ['a', 'b', 'c']; host i gets 198.18.S.(i+1) */
  readonly hosts: readonly string[];
}

/** The names a run with this pid and subnet uses (links ≤ 15 characters). */
export function netnsNames(subnet: number, hosts: readonly string[], pid = process.pid): { base: string; bridge: string; ns: string[]; veth: string[] } {
  const base = `td${pid % 10000}s${subnet}`;
  return {
    base,
    bridge: `${base}br`,
    ns: hosts.map((h) => `${base}-${h}`),
    veth: hosts.map((_, i) => `${base}h${i}`),
  };
}

/** subnets with a live network made by this process: their names are this process's, so a second createNetns must not sweep them as leftovers */
const live = new Set<number>();

const ip = (args: string[], opts: ExecOptions = {}): Promise<RunResult> => run('ip', args, { timeoutMs: 10_000, ...opts });

async function linkExists(name: string): Promise<boolean> {
  return (await ip(['link', 'show', 'dev', name], { allowFail: true })).code === 0;
}

async function nsList(): Promise<string[]> {
  const r = await ip(['netns', 'list'], { allowFail: true });
  // lines look like "NAME" or "NAME (id: 3)"
  return r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n !== '');
}

function disableIpv6(ifname: string): void {
  const p = `/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`;
  if (fs.existsSync(p)) fs.writeFileSync(p, '1');
}

/** Removes the given links and namespaces where they exist; returns what could not be removed. */
async function removeAll(links: readonly string[], namespaces: readonly string[]): Promise<string[]> {
  const left: string[] = [];
  for (const l of links) {
    if (!(await linkExists(l))) continue;
    const r = await ip(['link', 'delete', 'dev', l], { allowFail: true });
    if (r.code !== 0 && (await linkExists(l))) left.push(`link ${l}: ${r.stderr.trim()}`);
  }
  const present = await nsList();
  for (const n of namespaces) {
    if (!present.includes(n)) continue;
    const r = await ip(['netns', 'delete', n], { allowFail: true });
    if (r.code !== 0 && (await nsList()).includes(n)) left.push(`netns ${n}: ${r.stderr.trim()}`);
  }
  return left;
}

export async function createNetns(o: NetnsOptions): Promise<Netns> {
  const { subnet } = o;
  if (!Number.isInteger(subnet) || subnet < 1 || subnet > 254) throw new Error(`subnet must be 1..254, not ${subnet}`);
  if (o.hosts.length < 1 || o.hosts.length > 253) throw new Error('1..253 hosts');
  for (const h of o.hosts) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$/.test(h)) throw new Error(`bad host name ${JSON.stringify(h)}`);
  }
  if (new Set(o.hosts).size !== o.hosts.length) throw new Error(`duplicate host names in ${o.hosts.join(',')}`);

  if (live.has(subnet)) throw new Error(`subnet ${subnet} is already in use by another network of this process`);
  const names = netnsNames(subnet, o.hosts);
  const bridge = names.bridge;
  const bridgeIp = `198.18.${subnet}.254`;
  const hosts: Record<string, NetnsHost> = {};
  o.hosts.forEach((name, i) => {
    const ns = names.ns[i] as string;
    hosts[name] = {
      name, ns, ip: `198.18.${subnet}.${i + 1}`, iface: 'eth0', hostVeth: names.veth[i] as string,
      mac: async () => {
        const r = await ip(['-n', ns, '-j', 'link', 'show', 'dev', 'eth0']);
        const links = JSON.parse(r.stdout) as Array<{ address?: string }>;
        const mac = links[0]?.address;
        if (mac === undefined) throw new Error(`no MAC for eth0 in ${ns}`);
        return mac.toLowerCase();
      },
    };
  });
  const host = (h: string): NetnsHost => {
    const x = hosts[h];
    if (x === undefined) throw new Error(`no host ${JSON.stringify(h)} (hosts: ${o.hosts.join(', ')})`);
    return x;
  };

  const captures = new Set<ChildProcess>();
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> => {
    cleaned ??= (async () => {
      await Promise.all([...captures].map((c) => stopChild(c, 'SIGKILL', 2_000)));
      captures.clear();
      const left = await removeAll([...names.veth, bridge], names.ns);
      live.delete(subnet);
      if (left.length > 0) throw new Error(`netns cleanup left:\n${left.join('\n')}`);
    })();
    return cleaned;
  };

  live.add(subnet);
  try {
    // leftovers of an earlier crashed run with these exact names (same pid % 10000 and subnet)
    const stale = await removeAll([...names.veth, bridge], names.ns);
    if (stale.length > 0) throw new Error(`cannot remove leftovers:\n${stale.join('\n')}`);
    // another network on this subnet (a leftover of another run, or a concurrent test) would make routing ambiguous
    const addrs = JSON.parse((await ip(['-j', '-4', 'addr', 'show'])).stdout) as Array<{ ifname: string; addr_info?: Array<{ local?: string }> }>;
    for (const l of addrs) {
      for (const a of l.addr_info ?? []) {
        if (a.local?.startsWith(`198.18.${subnet}.`) === true) {
          throw new Error(`198.18.${subnet}.0/24 is already in use in the root namespace (${a.local} on ${l.ifname}); pick another subnet or remove that leftover`);
        }
      }
    }
  } catch (e) {
    live.delete(subnet);
    throw e;
  }

  try {
    await ip(['link', 'add', 'name', bridge, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0']);
    disableIpv6(bridge);
    await ip(['addr', 'add', `${bridgeIp}/24`, 'dev', bridge]);
    await ip(['link', 'set', 'dev', bridge, 'up']);
    for (const name of o.hosts) {
      const h = host(name);
      await ip(['netns', 'add', h.ns]);
      // before eth0 arrives, so it is created without IPv6 (no link-local address, no DAD, no MLD)
      await run('ip', ['netns', 'exec', h.ns, 'sh', '-c',
        'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'], { timeoutMs: 10_000 });
      await ip(['link', 'add', 'name', h.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      disableIpv6(h.hostVeth);
      await ip(['link', 'set', 'dev', h.hostVeth, 'master', bridge]);
      await ip(['link', 'set', 'dev', h.hostVeth, 'up']);
      await ip(['-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0']);
      await ip(['-n', h.ns, 'link', 'set', 'dev', 'eth0', 'up']);
      await ip(['-n', h.ns, 'link', 'set', 'dev', 'lo', 'up']);
    }
  } catch (e) {
    await cleanup().catch(() => { /* the creation error is the one to report */ });
    throw e;
  }

  return {
    subnet, bridge, bridgeIp, hosts,
    exec: (h, cmd, args, opts = {}) => run('ip', ['netns', 'exec', host(h).ns, cmd, ...args], opts),
    prefix: (h) => ['ip', 'netns', 'exec', host(h).ns],
    portDown: async (h) => { await ip(['link', 'set', 'dev', host(h).hostVeth, 'down']); },
    portUp: async (h) => { await ip(['link', 'set', 'dev', host(h).hostVeth, 'up']); },
    addresses: async (h) => {
      const r = await ip(['-n', host(h).ns, '-j', 'addr', 'show', 'dev', 'eth0']);
      const links = JSON.parse(r.stdout) as Array<{ addr_info?: Array<{ local?: string; prefixlen?: number }> }>;
      return (links[0]?.addr_info ?? []).filter((a) => a.local !== undefined).map((a) => `${a.local}/${a.prefixlen}`);
    },
    neighbour: async (h, addr) => {
      const r = await ip(['-n', host(h).ns, '-j', 'neigh', 'show', 'to', addr, 'dev', 'eth0']);
      const entries = JSON.parse(r.stdout.trim() === '' ? '[]' : r.stdout) as Array<{ dst?: string; lladdr?: string; state?: string[] }>;
      const e = entries.find((x) => x.dst === addr);
      if (e?.lladdr === undefined || e.state?.some((s) => s === 'FAILED' || s === 'INCOMPLETE') === true) return undefined;
      return e.lladdr.toLowerCase();
    },
    captureArp: async (h) => {
      const argv = ['netns', 'exec', host(h).ns, 'tcpdump', '-l', '-n', '-e', '-i', 'eth0', 'arp'];
      const child = spawn('ip', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      captures.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`tcpdump in ${host(h).ns} did not start listening:\n${stderr}`)), 10_000);
          child.stderr?.on('data', (d: Buffer) => {
            stderr += d.toString();
            if (stderr.includes('listening on')) { clearTimeout(timer); resolve(); }
          });
          child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`tcpdump exited ${code}:\n${stderr}`)); });
          child.once('error', (e) => { clearTimeout(timer); reject(e); });
        });
      } catch (e) {
        await stopChild(child, 'SIGKILL', 2_000);
        captures.delete(child);
        throw e;
      }
      return {
        stop: async () => {
          // SIGINT: tcpdump flushes what it has and exits
          await stopChild(child, 'SIGINT', 3_000);
          captures.delete(child);
          return stdout.split('\n').filter((l) => l.trim() !== '');
        },
      };
    },
    fenceCommand: (h) => `nsenter --net=/proc/${process.pid}/ns/net ip link set dev ${host(h).hostVeth} down`,
    cleanup,
  };
}

/** Creates the network, runs fn, and always cleans up. */
export async function withNetns<T>(o: NetnsOptions, fn: (net: Netns) => Promise<T>): Promise<T> {
  const net = await createNetns(o);
  try {
    return await fn(net);
  } finally {
    await net.cleanup();
  }
}

/** Sends sig to the child (by its pid) and waits for it to exit; SIGKILL after graceMs. */
function stopChild(child: ChildProcess, sig: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    child.kill(sig);
  });
}
