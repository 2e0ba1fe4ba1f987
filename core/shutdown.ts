/**
 * Graceful shutdown of a process on SIGTERM/SIGINT: the first signal stops it; a second one, a
 * moment later, exits at once. Ctrl-C under `npm start` arrives twice at once (from the terminal,
 * and forwarded by npm), so a second signal within a second of the first does not count.
 */

/**
 * Calls `stop` on the first SIGTERM or SIGINT and resolves with the exit code: 0 once it stopped,
 * 1 when stopping failed. A second signal more than a second later exits with 130 at once.
 * `name` prefixes the lines written to `write` (stderr by default).
 */
export function untilShutdownSignal(name: string, stop: () => Promise<void>, write: (text: string) => void = (text) => process.stderr.write(text)): Promise<number> {
  return new Promise((resolve) => {
    let first: number | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      if (first !== undefined) {
        if (Date.now() - first < 1000) return;
        write(`${name}: ${signal} again: exiting now\n`);
        process.exit(130);
      }
      first = Date.now();
      write(`${name}: ${signal} received, shutting down (again to force)\n`);
      stop().then(
        () => {
          write(`${name}: stopped\n`);
          resolve(0);
        },
        (e: unknown) => {
          write(`${name}: shutdown failed: ${String(e)}\n`);
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
