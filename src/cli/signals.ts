// Foreground commands run until SIGTERM or SIGINT, then stop cleanly.

/** Resolves with the name of the first SIGTERM or SIGINT; the handlers are removed again. */
export function untilStopSignal(): Promise<string> {
  return new Promise((resolve) => {
    const stop = (sig: string): void => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      resolve(sig);
    };
    const onTerm = (): void => stop('SIGTERM');
    const onInt = (): void => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
}
