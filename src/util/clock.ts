// One monotonic clock for every thread of a node: process.hrtime reads
// CLOCK_MONOTONIC, which the heartbeat worker and the main thread share
// (performance.now() does not: each thread has its own time origin).
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}
