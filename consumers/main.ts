/**
 * Entry point of a consumer process: `node --import tsx consumers/main.ts <name>` where name is
 * `projection` (the instances read model), `rebuild` (replay the store into a fresh read model and
 * swap it in; resumable) or `prune` (one housekeeping pass). Load config → start → on SIGTERM or
 * SIGINT disconnect from Kafka, then close the database.
 */
import { createDatabase } from "../core/db/database.js";
import { createLogger } from "../core/log.js";
import { S3ObjectStore } from "../core/s3-object-store.js";
import { ConfigError } from "../core/settings.js";
import { startProjection } from "./app.js";
import { loadConsumerConfig, requireServices, type ConsumerConfig } from "./config.js";
import { rebuildInstances } from "./rebuild.js";
import { pruneDone } from "./registry.js";
import type { ConsumerDatabase } from "./schema.js";
import { untilShutdownSignal } from "../core/shutdown.js";

const COMMANDS = ["projection", "rebuild", "prune"] as const;

async function main(): Promise<void> {
  const name = process.argv[2];
  if (name === undefined || !(COMMANDS as readonly string[]).includes(name)) {
    process.stderr.write(`usage: node --import tsx consumers/main.ts <${COMMANDS.join("|")}>\n`);
    process.exit(2);
  }
  let config: ConsumerConfig;
  try {
    config = loadConsumerConfig();
    requireServices(config, { database: true, kafka: name === "projection" });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tidemark-consumer: ${e.message}\n\nRun \`npm run stack -- up\` and \`eval "$(npm run -s stack -- env)"\` to use the local stack.\n`);
      process.exit(2);
    }
    throw e;
  }
  if (name === "projection") return runProjection(config);
  if (name === "rebuild") return runRebuild(config);
  return runPrune(config);
}

async function runProjection(config: ConsumerConfig): Promise<void> {
  const handle = await startProjection(config);
  process.exit(await untilShutdownSignal("tidemark-consumer", () => handle.stop()));
}

async function runRebuild(config: ConsumerConfig): Promise<void> {
  if (config.s3Endpoint === "" || config.s3AccessKey === "" || config.s3SecretKey === "") {
    throw new ConfigError("rebuild reads the store: TIDEMARK_S3_ENDPOINT, TIDEMARK_S3_ACCESS_KEY and TIDEMARK_S3_SECRET_KEY are required");
  }
  const log = createLogger("tidemark-rebuild", config.logLevel);
  const database = createDatabase<ConsumerDatabase>({ url: config.pgUrl, schema: config.pgSchema, poolSize: 2 });
  const objects = new S3ObjectStore({
    endpoint: config.s3Endpoint,
    bucket: config.s3Bucket,
    region: config.s3Region,
    accessKeyId: config.s3AccessKey,
    secretAccessKey: config.s3SecretKey,
  });
  const stop = new AbortController();
  process.on("SIGTERM", () => stop.abort());
  process.on("SIGINT", () => stop.abort());
  try {
    const result = await rebuildInstances({
      db: database.db,
      objects,
      log,
      signal: stop.signal,
      onProgress: (p) => {
        const pct = p.target === 0 ? 100 : Math.min(100, Math.floor((p.position / p.target) * 100));
        process.stderr.write(`\r${p.phase.padEnd(6)} ${String(pct).padStart(3)}%  position ${p.position}/${p.target}  events ${p.events}`);
      },
    });
    process.stderr.write(`\nrebuilt: ${result.instances} instances up to position ${result.position}\n`);
  } catch (e) {
    if (stop.signal.aborted) process.stderr.write("\nrebuild stopped; run it again to resume\n");
    throw e;
  } finally {
    objects.close();
    await database.close();
  }
}

async function runPrune(config: ConsumerConfig): Promise<void> {
  const database = createDatabase<ConsumerDatabase>({ url: config.pgUrl, schema: config.pgSchema, poolSize: 1 });
  try {
    const deleted = await pruneDone(database.db, { retentionMs: config.retentionMs, batchSize: config.pruneBatchSize });
    process.stdout.write(`pruned ${deleted} done rows older than ${config.retentionMs / 3_600_000} h\n`);
  } finally {
    await database.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`tidemark-consumer: failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
