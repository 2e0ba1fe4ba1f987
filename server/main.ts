/**
 * Entry point of the server process: load config → start → on SIGTERM/SIGINT stop gracefully.
 */
import { ConfigError } from "../core/settings.js";
import { startServer } from "./app.js";
import { loadServerConfig } from "./config.js";

async function main(): Promise<void> {
  let config;
  try {
    config = loadServerConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tidemark: ${e.message}\n\nRun \`npm run stack -- up\` and \`eval "$(npm run -s stack -- env)"\` to use the local stack.\n`);
      process.exit(2);
    }
    throw e;
  }
  const server = await startServer(config);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) process.exit(130);
    process.stderr.write(`tidemark: ${signal} received, shutting down (again to force)\n`);
    server.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        process.stderr.write(`tidemark: shutdown failed: ${String(e)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

main().catch((e: unknown) => {
  process.stderr.write(`tidemark: failed to start: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
