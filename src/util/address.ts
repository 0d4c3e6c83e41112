/** Parses HOST:PORT ([v6]:PORT for IPv6); returns the reason when malformed. */
export function parseHostPort(text: string): { host: string; port: number } | string {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (m === null) return `${JSON.stringify(text)} is not HOST:PORT`;
  const port = Number(m[3]);
  if (port > 65535) return `port ${port} is out of range`;
  return { host: (m[1] ?? m[2]) as string, port };
}
