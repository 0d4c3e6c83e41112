// Floating IPs: an address that follows its pool (docs/pools.md). This file
// holds what every driver shares: the parsed address and the driver's shape.
import net from 'node:net';

export interface FloatingIp {
  /** the address alone, e.g. 198.18.0.100 or 2001:db8::10 */
  readonly address: string;
  readonly prefix: number;
  readonly family: 4 | 6;
  /** the interface it is added to on the owner */
  readonly interface: string;
}

export type FloatingIpDriverName = 'linux' | 'loopback';

export interface FloatingIpDriver {
  readonly name: FloatingIpDriverName;
  /**
   * Is the address answering on the network already (another host, a stale owner)?
   * A description of who answers, or null when nobody does.
   */
  probe(ip: FloatingIp): Promise<string | null>;
  /** adds the address to its interface; already there counts as added */
  add(ip: FloatingIp): Promise<void>;
  /** tells the neighbours the address moved here (gratuitous ARP / unsolicited NA), in the background */
  announce(ip: FloatingIp): void;
  /** removes the address; already gone counts as removed */
  remove(ip: FloatingIp): Promise<void>;
  /** is the address configured on this host now? */
  present(ip: FloatingIp): Promise<boolean>;
  /** stops announcements still running */
  close(): void;
}

/** `ADDR/PREFIX` → address, prefix and family; throws a message naming what is wrong. */
export function parseCidr(text: string): { address: string; prefix: number; family: 4 | 6 } {
  const slash = text.lastIndexOf('/');
  if (slash < 0) throw new Error(`${JSON.stringify(text)} lacks a prefix length: write ADDR/PREFIX, e.g. 198.18.0.100/24`);
  const address = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  const family = net.isIP(address);
  if (family === 0) throw new Error(`${JSON.stringify(address)} is not an IPv4 or IPv6 address`);
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) throw new Error(`prefix ${JSON.stringify(prefixText)} must be 0..${max}`);
  return { address, prefix: Number(prefixText), family: family as 4 | 6 };
}

export function isLoopbackAddress(address: string): boolean {
  return net.isIPv4(address) ? address.startsWith('127.') : address === '::1';
}

export function describeIp(ip: FloatingIp): string {
  return `${ip.address}/${ip.prefix} on ${ip.interface}`;
}

/** How a URL or host:port names the address (IPv6 in brackets). */
export function hostForUrl(address: string): string {
  return net.isIPv6(address) ? `[${address}]` : address;
}
