// Sizes as people type them: 4096, 64K, 1M, 1GiB, 2T (powers of 1024).
const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4, P: 1024 ** 5 };

/** Returns the number of bytes, or a reason the text is not a size. */
export function parseSize(text: string): number | string {
  const m = /^(\d+)\s*([KMGTP]?)(?:i?B)?$/i.exec(text.trim());
  if (m === null) return `${JSON.stringify(text)} is not a size (examples: 4096, 64K, 1G, 2TiB)`;
  const n = Number(m[1]) * (UNITS[(m[2] ?? '').toUpperCase()] as number);
  if (!Number.isSafeInteger(n)) return `${text} is too large`;
  return n;
}

export function formatSize(n: number): string {
  for (const [u, f] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (n >= f) return `${(n / f).toFixed(n % f === 0 ? 0 : 1)} ${u}`;
  }
  return `${n} B`;
}
