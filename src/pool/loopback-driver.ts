// The `loopback` floating-IP driver, for a whole cluster on one machine (the
// demo, tests): every 127.0.0.0/8 address is already local on Linux, so there
// is nothing to add, remove or announce. What moves is who listens on it; a
// port the other node still holds is caught when the export starts.
import type { FloatingIpDriver } from './floating-ip';

export class LoopbackDriver implements FloatingIpDriver {
  readonly name = 'loopback' as const;

  probe(): Promise<string | null> { return Promise.resolve(null); }
  add(): Promise<void> { return Promise.resolve(); }
  announce(): void { /* nobody else shares the loopback network */ }
  remove(): Promise<void> { return Promise.resolve(); }
  /** nothing was added, so nothing is left over to remove */
  present(): Promise<boolean> { return Promise.resolve(false); }
  close(): void { /* nothing runs in the background */ }
}
