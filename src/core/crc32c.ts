// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and btrfs metadata. Pure
// TypeScript so the change-tracking codecs in core/ need no node:crypto; it
// checksums 4 KiB records, where a table-driven loop is fast enough.

/** reflected form of the Castagnoli polynomial 0x1EDC6F41 */
const POLYNOMIAL_REFLECTED = 0x82f63b78;

const TABLE = ((): Uint32Array => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLYNOMIAL_REFLECTED : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of bytes [start, end) of `data`, as an unsigned 32-bit number. */
export function crc32c(data: Uint8Array, start = 0, end = data.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = (TABLE[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
