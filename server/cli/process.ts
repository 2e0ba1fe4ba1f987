/**
 * Builds one Tidemark process from the environment: any of the server, the relay and consumers.
 * In the embedded mode every part shares the one PGlite database and the one object store, and the
 * relay's role is played in process (relay/embedded-relay.ts feeds the consumers the commit log);
 * in the services mode each part opens its own pool to PostgreSQL and the relay publishes to Kafka.
 * Either way the process has one logger and one metrics registry served on one endpoint.
 */
import { openBackends, type Backends } from "../../core/backends.js";
import { CommitListener } from "../../core/commit-listener.js";
import { migrateToLatest } from "../../core/db/database.js";
import { createLogger, type Logger } from "../../core/log.js";
import { createRegistry, startMetricsServer, type MetricsServer, type Registry } from "../../core/metrics.js";
import { ConfigError } from "../../core/settings.js";
import {
  loadConsumerConfig,
  requireServices,
  startConsumer,
  startProjection,
  storeDeadLetters,
  type ConsumerHandle,
  type Handler,
} from "../../consumers/index.js";
import { EmbeddedRelay, loadRelayConfig, startRelay, type RelayHandle } from "../../relay/index.js";
import { startServer, type ServerHandle } from "../app.js";
import { loadServerConfig, type ServerConfig } from "../config.js";

/** Which parts a process runs. */
export interface ProcessParts {
  /** The gRPC server. */
  readonly server: boolean;
  /**
   * The relay: with Kafka configured, the Kafka relay; in the embedded mode its in-process role
   * runs whenever consumers do. `"if-kafka"`: run it when TIDEMARK_KAFKA_BROKERS is set, else warn.
   */
  readonly relay: boolean | "if-kafka";
  /** The instances projection. */
  readonly projection: boolean;
  /** User handlers, run beside the projection in the same consumer process. */
  readonly handlers: readonly Handler[];
}

/** Parts a caller (tests) may supply. */
export interface ProcessOverrides {
  readonly log?: Logger;
}

/** A running process. */
export interface TidemarkProcess {
  readonly mode: "embedded" | "services";
  /** Where the data is, human-readable. */
  readonly where: string;
  /** The embedded data directory (absolute), when embedded. */
  readonly dataDir: string | undefined;
  /** `host:port` of the gRPC server, when it runs. */
  readonly grpcAddress: string | undefined;
  /** `host:port` of the Prometheus endpoint, when TIDEMARK_METRICS_ADDR is set. */
  readonly metricsAddress: string | undefined;
  /** What runs, e.g. ["server", "relay (in process)", "projection:instances"]. */
  readonly components: readonly string[];
  /** Things the operator should know (a part that could not run, a setting without effect). */
  readonly warnings: readonly string[];
  readonly server: ServerHandle | undefined;
  readonly consumers: ConsumerHandle | undefined;
  readonly relay: RelayHandle | EmbeddedRelay | undefined;
  readonly registry: Registry;
  readonly log: Logger;
  /** Stops in reverse order: metrics, server (graceful), consumers, relay, storage. */
  stop(): Promise<void>;
}

/**
 * Starts the parts described by `parts` with the settings in `env`. Throws ConfigError (naming the
 * variables) when the configuration is invalid or a part cannot run in the selected mode.
 */
export async function startProcess(env: Readonly<Record<string, string | undefined>>, parts: ProcessParts, overrides: ProcessOverrides = {}): Promise<TidemarkProcess> {
  const serverConfig = loadServerConfig(env);
  const mode = serverConfig.pgUrl === "" ? "embedded" : "services";
  const consuming = parts.projection || parts.handlers.length > 0;
  const consumerConfig = consuming ? loadConsumerConfig(env) : undefined;
  const kafka = (env["TIDEMARK_KAFKA_BROKERS"] ?? "") !== "";
  const warnings: string[] = [];
  if (serverConfig.sequenceHandlerPrefix !== "") {
    warnings.push("EVENT_STORE_SEQUENCE_HANDLER_PREFIX is accepted for the origin and has no effect: Tidemark's write side has its own tables.");
  }

  let runRelay = false;
  let runConsumers = consuming;
  if (mode === "embedded") {
    if (kafka && consuming) warnings.push("TIDEMARK_KAFKA_BROKERS is set but the storage is embedded: Kafka is not used, the relay's role runs in process.");
    if (parts.relay === true) {
      throw new ConfigError(
        "invalid configuration:\n  the relay publishes to Kafka and needs TIDEMARK_PG_URL, TIDEMARK_S3_* and TIDEMARK_KAFKA_BROKERS; " +
          "with no services set, `tidemark start` plays the relay's role in process",
      );
    }
  } else if (parts.relay === true) {
    runRelay = true;
  } else if (parts.relay === "if-kafka") {
    runRelay = kafka;
    if (!kafka) {
      runConsumers = false;
      warnings.push(
        "relay and projection are NOT running: with PostgreSQL and S3 they need Kafka (set TIDEMARK_KAFKA_BROKERS), " +
          "or run `tidemark relay` and `tidemark consumer projection` elsewhere. Until then EVENTUAL and AT_LEAST_POSITION reads wait for a projection.",
      );
    }
  }
  if (mode === "services" && runConsumers) requireServices(consumerConfig!, { database: true, kafka: true });
  const relayConfig = runRelay ? loadRelayConfig(env) : undefined;
  if (mode === "embedded" && parts.server && !consuming) {
    warnings.push("the projection is not running in this process: EVENTUAL and AT_LEAST_POSITION reads wait for it; `tidemark start` runs it here.");
  }

  const log = overrides.log ?? createLogger("tidemark", serverConfig.logLevel);
  // One registry for every part: one endpoint, process metrics once.
  const registry = createRegistry(true);
  const components: string[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const cleanup of cleanups.splice(0)) {
      try {
        await cleanup();
      } catch (e) {
        log.warn({ err: e }, "shutdown step failed");
      }
    }
  };
  // Parts get no metrics address of their own: the process serves one endpoint.
  const quiet = { metricsAddr: "" } as const;

  let server: ServerHandle | undefined;
  let consumers: ConsumerHandle | undefined;
  let relay: RelayHandle | EmbeddedRelay | undefined;
  let backends: Backends | undefined;
  let where: string;
  try {
    if (mode === "embedded") {
      backends = await openBackends(serverConfig);
      const opened = backends;
      cleanups.unshift(() => opened.close());
      where = backends.where;
      const database = backends.database;
      await migrateToLatest(database.db, database.schema);
      await backends.objects.ensureReady();
      if (runConsumers) {
        const listener = new CommitListener(backends.listen, database.schema, log.child({ component: "relay" }));
        await listener.start();
        cleanups.unshift(() => listener.close());
        const embedded = new EmbeddedRelay({ db: database.db, objects: backends.objects, wake: listener, log: log.child({ component: "relay" }), registry });
        cleanups.unshift(() => embedded.stop());
        relay = embedded;
        components.push("relay (in process: commit log → consumers)");
        consumers = await startConsumers(consumerConfig!, parts, {
          log: log.child({ component: "consumers" }),
          database,
          metricsRegistry: registry,
          source: embedded.source,
          deadLetters: storeDeadLetters(backends.objects),
        });
      }
      if (parts.server) {
        server = await startServer({ ...serverConfig, ...quiet }, { log: log.child({ component: "server" }), registry, database, objects: backends.objects, listen: backends.listen });
      }
    } else {
      where = describeServices(serverConfig);
      if (runRelay) {
        const handle = await startRelay({ ...relayConfig!, ...quiet }, { log: log.child({ component: "relay" }), registry });
        relay = handle;
        cleanups.unshift(() => handle.stop());
        components.push(`relay (${relayConfig!.name} → Kafka ${relayConfig!.kafkaBrokers.join(",")})`);
      }
      if (runConsumers) {
        consumers = await startConsumers(consumerConfig!, parts, { log: log.child({ component: "consumers" }), metricsRegistry: registry });
      }
      if (parts.server) server = await startServer({ ...serverConfig, ...quiet }, { log: log.child({ component: "server" }), registry });
    }
    if (consumers !== undefined) {
      const handle = consumers;
      cleanups.unshift(() => handle.stop());
      components.push(...handle.handlers);
    }
    if (server !== undefined) {
      const handle = server;
      cleanups.unshift(() => handle.stop());
      components.unshift("server");
    }
    let metrics: MetricsServer | undefined;
    if (serverConfig.metricsAddr !== "") {
      metrics = await startMetricsServer(serverConfig.metricsAddr, [registry]);
      const m = metrics;
      cleanups.unshift(() => m.close());
    }
    const result: TidemarkProcess = {
      mode,
      where,
      dataDir: backends?.dataDir,
      grpcAddress: server?.address,
      metricsAddress: metrics?.address,
      components,
      warnings,
      server,
      consumers,
      relay,
      registry,
      log,
      stop: async () => {
        await stopAll();
        log.info({ components }, "tidemark stopped");
      },
    };
    log.info(
      { mode, where, dataDir: result.dataDir, grpc: result.grpcAddress, metrics: result.metricsAddress, components, warnings },
      "tidemark started",
    );
    return result;
  } catch (e) {
    await stopAll();
    throw e;
  }
}

async function startConsumers(
  config: ReturnType<typeof loadConsumerConfig>,
  parts: ProcessParts,
  overrides: Parameters<typeof startConsumer>[2],
): Promise<ConsumerHandle> {
  const quietConfig = { ...config, metricsAddr: "" };
  if (parts.projection) return startProjection(quietConfig, overrides, parts.handlers);
  return startConsumer(quietConfig, parts.handlers, overrides);
}

function describeServices(config: ServerConfig): string {
  const pg = new URL(config.pgUrl);
  return `PostgreSQL ${pg.host}${pg.pathname} (schema ${config.pgSchema}), S3 ${config.s3Endpoint}/${config.s3Bucket}`;
}

/** The human-readable start-up banner (stderr): mode, data, addresses, parts, warnings. */
export function banner(command: string, p: TidemarkProcess, version: string): string {
  const lines = [`tidemark ${version} · ${command} · ${p.mode === "embedded" ? "embedded mode (no services configured)" : "services mode"}`];
  const field = (name: string, value: string) => lines.push(`  ${name.padEnd(10)}${value}`);
  if (p.mode === "embedded") field("data", `${p.dataDir} (PGlite database and event files; TIDEMARK_DATA_DIR)`);
  else field("data", p.where);
  if (p.grpcAddress !== undefined) field("gRPC", `${p.grpcAddress}   (try: grpcurl -plaintext ${p.grpcAddress} list)`);
  field("metrics", p.metricsAddress === undefined ? "off (set TIDEMARK_METRICS_ADDR=127.0.0.1:9464 to serve /metrics)" : `http://${p.metricsAddress}/metrics`);
  field("running", p.components.join(", ") || "nothing");
  for (const warning of p.warnings) lines.push(`  warning   ${warning}`);
  lines.push("  stop with Ctrl-C (SIGINT) or SIGTERM; a second signal forces");
  return `${lines.join("\n")}\n`;
}
