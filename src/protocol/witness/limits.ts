// Every size and count of the witness protocol, in one place. The fixed
// field sizes are typed as their literal values: they are the wire format.

export interface WitnessLimits {
  /** a lease longer than this is refused as malformed: it would let one node block every takeover for that long */
  readonly leaseMsMax: number;
  /** the cluster secret, as for the sync link */
  readonly secretBytesMin: number;
  readonly secretBytesMax: number;
  /** clusters one witness serves */
  readonly clustersMax: number;
  /** requests one client keeps waiting for a reply; the oldest is given up beyond this */
  readonly clientPendingMax: number;

  // the wire format
  readonly headerBytes: 44;
  readonly clusterIdBytes: 16;
  /** node names are ASCII: 1 to this many bytes */
  readonly nameBytesMax: 63;
  readonly macBytes: 16;
  readonly keyBytes: 32;
  /** header, two length bytes, one-byte sender, no subject, MAC */
  readonly datagramBytesMin: 63;
  /** header, two length bytes, two names of nameBytesMax, MAC */
  readonly datagramBytesMax: 188;
  /** a cluster has two nodes; the witness knows no more than that per cluster */
  readonly nodesPerClusterMax: 2;
}

export const witnessLimits: WitnessLimits = {
  leaseMsMax: 600_000,
  secretBytesMin: 16,
  secretBytesMax: 1024,
  clustersMax: 256,
  clientPendingMax: 16,

  headerBytes: 44,
  clusterIdBytes: 16,
  nameBytesMax: 63,
  macBytes: 16,
  keyBytes: 32,
  datagramBytesMin: 63,
  datagramBytesMax: 188,
  nodesPerClusterMax: 2,
};
