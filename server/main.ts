/**
 * Entry point of a server process, kept for scripts that run `node --import tsx server/main.ts`:
 * the same as `tidemark server` (server/cli/), with the same configuration checks, banner and
 * graceful shutdown on SIGTERM/SIGINT.
 */
import { runCli } from "./cli/main.js";

runCli(["server", ...process.argv.slice(2)]).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`tidemark: failed to start: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
