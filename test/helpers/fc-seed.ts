// Property tests run from one seed so the suite is deterministic; set
// TANDEM_SEED to explore other cases (a failure prints the seed and path to replay).
import fc from 'fast-check';

const seed = Number(process.env.TANDEM_SEED ?? 20261123);
if (!Number.isSafeInteger(seed)) throw new Error(`TANDEM_SEED must be an integer, not ${process.env.TANDEM_SEED}`);
fc.configureGlobal({ seed });
