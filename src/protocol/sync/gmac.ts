// GMAC (AES-256-GCM with an empty plaintext) through the native addon
// (src/native/tandem_native.c), which calls the OpenSSL that Node.js links.
// Node's createCipheriv builds a cipher object and an OpenSSL context for
// every MAC, which costs more than hashing a 4 KiB frame; a Gmac sets up its
// key once and each mac() only sets the IV. Pure computation, like node:crypto.
import { SyncProtocolError } from './errors';

export const GMAC_KEY_BYTES = 32;
export const GMAC_TAG_BYTES = 16;
const SEQ_MAX = 0xffffffffffffffffn;

interface NativeGmac {
  mac(seq: bigint, pieces: readonly Uint8Array[], out: Uint8Array): Uint8Array;
  free(): void;
}

interface GmacAddon {
  readonly Gmac: new (key: Uint8Array) => NativeGmac;
}

// dist/src/protocol/sync → the repository root is four levels up; node-gyp puts the addon in build/.
// The same file src/storage/native.ts loads: require() hands both the one loaded module.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require('../../../../build/Release/tandem_native.node') as GmacAddon;

function argument(message: string): SyncProtocolError {
  return new SyncProtocolError('ERR_SYNC_ARGUMENT', message);
}

/**
 * One AES-256-GCM key, kept expanded in an OpenSSL context for as long as
 * this object lives (or until free()). mac() gives the same tag as
 * createCipheriv('aes-256-gcm', key, iv) with the pieces passed to setAAD()
 * in order and an empty plaintext, where iv = 4 zero bytes || seq (u64 BE).
 *
 * The caller owns IV uniqueness: never MAC two different messages under one
 * key with the same seq.
 */
export class Gmac {
  private native: NativeGmac | undefined;

  /** Throws ERR_SYNC_ARGUMENT unless key is a Buffer (or Uint8Array) of 32 bytes. */
  constructor(key: Uint8Array) {
    if (!(key instanceof Uint8Array) || key.length !== GMAC_KEY_BYTES) throw argument(`a GMAC key is ${GMAC_KEY_BYTES} bytes`);
    this.native = new addon.Gmac(key);
  }

  /**
   * The 16-byte tag over the pieces in order (never concatenated: bulk data
   * is hashed in place; empty pieces change nothing), written to out when
   * given (16 bytes), else to a new Buffer. Throws ERR_SYNC_ARGUMENT for a
   * seq outside [0, 2^64), a piece that is not a Buffer, a wrong-sized out,
   * or after free().
   */
  mac(seq: bigint, pieces: readonly Uint8Array[], out?: Buffer): Buffer {
    if (this.native === undefined) throw argument('this GMAC key was freed');
    if (typeof seq !== 'bigint' || seq < 0n || seq > SEQ_MAX) throw argument(`GMAC sequence number ${String(seq)} is not a u64`);
    if (!Array.isArray(pieces)) throw argument('the GMAC pieces are not an array');
    for (const p of pieces) if (!(p instanceof Uint8Array)) throw argument('a GMAC piece is not a Buffer');
    if (out !== undefined && (!Buffer.isBuffer(out) || out.length !== GMAC_TAG_BYTES)) throw argument(`a GMAC tag is ${GMAC_TAG_BYTES} bytes`);
    const tag = out ?? Buffer.allocUnsafe(GMAC_TAG_BYTES);
    this.native.mac(seq, pieces, tag);
    return tag;
  }

  /** Releases the OpenSSL context (and its copy of the key schedule) now instead of at garbage collection. */
  free(): void {
    this.native?.free();
    this.native = undefined;
  }
}
