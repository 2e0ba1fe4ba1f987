/**
 * Entry point of the relay process: load config → start → on SIGTERM/SIGINT stop the loop (the
 * batch in flight is finished and checkpointed), disconnect the producer, release the lease and
 * close the database.
 */
import { ConfigError } from "../core/settings.js";
import { startRelay } from "./app.js";
import { loadRelayConfig } from "./config.js";
import { untilShutdownSignal } from "../core/shutdown.js";

async function main(): Promise<void> {
  let config;
  try {
    config = loadRelayConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tidemark-relay: ${e.message}\n\nRun \`npm run stack -- up\` and \`eval "$(npm run -s stack -- env)"\` to use the local stack.\n`);
      process.exit(2);
    }
    throw e;
  }
  const relay = await startRelay(config);
  process.exit(await untilShutdownSignal("tidemark-relay", () => relay.stop()));
}

main().catch((e: unknown) => {
  process.stderr.write(`tidemark-relay: failed to start: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
