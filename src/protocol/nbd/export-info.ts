import {
  NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_CACHE, NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO, NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES,
} from './constants';

/** What a client may learn about an export and what it may ask of it. Plain data. */
export interface ExportInfo {
  readonly name: string;
  readonly description: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canFua: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canCache: boolean;
  readonly canMultiConn: boolean;
  /** base:allocation is offered */
  readonly canExtents: boolean;
  readonly blockSizeMin: number;
  readonly blockSizePreferred: number;
  readonly blockSizeMax: number;
}

/** Looks exports up by name; "" is the default export. */
export interface ExportCatalog {
  list(): readonly ExportInfo[];
  find(name: string): ExportInfo | undefined;
}

/** proto.md: SEND_DF only when structured replies were negotiated (DF means nothing without them). */
export function transmissionFlags(e: ExportInfo, structuredReplies: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS;
  if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
  if (e.readOnly) flags |= NBD_FLAG_READ_ONLY;
  if (e.canFlush) flags |= NBD_FLAG_SEND_FLUSH;
  if (e.canFua) flags |= NBD_FLAG_SEND_FUA;
  if (e.canTrim && !e.readOnly) flags |= NBD_FLAG_SEND_TRIM;
  if (e.canZero && !e.readOnly) flags |= NBD_FLAG_SEND_WRITE_ZEROES;
  if (e.canFastZero && e.canZero && !e.readOnly) flags |= NBD_FLAG_SEND_FAST_ZERO;
  if (e.canCache) flags |= NBD_FLAG_SEND_CACHE;
  if (e.canMultiConn) flags |= NBD_FLAG_CAN_MULTI_CONN;
  return flags;
}

/** A catalog over a fixed list; the first export is the default one when none is named "". */
export function staticCatalog(exports: readonly ExportInfo[]): ExportCatalog {
  const byName = new Map(exports.map((e) => [e.name, e] as const));
  return {
    list: () => exports,
    find: (name) => byName.get(name) ?? (name === '' ? exports[0] : undefined),
  };
}
