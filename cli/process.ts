/**
 * Builds one Tidemark process from the environment: any of the server, the relay and consumers.
 * In the embedded mode every part shares the one PGlite database and the one object store, and the
 * relay's role is played in process (relay/embedded-relay.ts feeds the consumers the commit log);
 * in the services mode each part opens its own pool to PostgreSQL and the relay publishes to Kafka.
 * Either way the process has one logger and one metrics registry served on one endpoint.
 */
import {
  backendMode,
  type Backends,
  describeServices,
  CommitListener,
  ConfigError,
  createLogger,
  createRegistry,
  INSTANCES_PROJECTION_HANDLER,
  type Logger,
  type MetricsServer,
  migrateToLatest,
  openBackends,
  ORIGIN_SETTINGS,
  parseSettings,
  parseSettingsTables,
  PROCESS_SETTINGS,
  type Registry,
  startMetricsServer,
  STORAGE_SETTINGS,
  trackObjectStore,
  type Values,
} from "../core/index.js";
import {
  cachedSubjectKeys,
  checkTiming,
  type ConsumerHandle,
  type Handler,
  CONSUMER_OWN_SETTINGS,
  type ConsumerConfig,
  requireServices,
  type SubjectKeySource,
  startConsumer,
  startProjection,
  storeDeadLetters,
} from "../consumers/index.js";
import { EmbeddedRelay, RELAY_OWN_SETTINGS, startRelay, type RelayConfig, type RelayHandle } from "../relay/index.js";
import { readFileSync } from "node:fs";
import { SERVER_OWN_SETTINGS, type ServerConfig, type ServerHandle, ServingStatus, startServer, subjectKeyClient } from "../server/index.js";
import { BackgroundPart, type PartState } from "./background-part.js";
import { loadUpcasterModule } from "./handler-modules.js";

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

/** The health entry (grpc.health.v1 service name) of the relay: the Kafka relay, or the embedded relay's role. */
export const RELAY_HEALTH = "tidemark.relay";

/** The health entry of consumer handler `handler`, e.g. `tidemark.consumer.projection:instances`. */
export function consumerHealth(handler: string): string {
  return `tidemark.consumer.${handler}`;
}

/** One part a process runs beside its server, as the health service reports it. */
export interface PartReport {
  /** As in {@link TidemarkProcess.components}, e.g. "relay (…)" or "projection:instances". */
  readonly component: string;
  /** Its grpc.health.v1 service name ({@link RELAY_HEALTH}, {@link consumerHealth}). */
  readonly health: string;
  /**
   * `starting` until its start succeeded and its health entry was SERVING once (relay: publishing or
   * standing by; consumer: joined its group); then `running`, or `failed` / `stopped`.
   */
  readonly state: PartState;
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
  /** What this process runs, started or still starting, e.g. ["server", "relay (in process: …)", "projection:instances"]. */
  readonly components: readonly string[];
  /** Things the operator should know (a part that could not run, a setting without effect). */
  readonly warnings: readonly string[];
  readonly server: ServerHandle | undefined;
  /** The consumers once they run; undefined while they start in the background. */
  readonly consumers: ConsumerHandle | undefined;
  /** The relay once it runs; undefined while it starts in the background. */
  readonly relay: RelayHandle | EmbeddedRelay | undefined;
  /** The parts beside the server (relay, consumer handlers) and where their start stands now. */
  parts(): readonly PartReport[];
  /** The components still starting now (empty once every part runs). */
  starting(): readonly string[];
  /** Resolves once no part is `starting` any more (each runs, failed or stopped; see {@link parts}); never rejects. */
  readonly ready: Promise<void>;
  readonly registry: Registry;
  readonly log: Logger;
  /** Aborts starts still in progress, then stops in reverse order: metrics, server (graceful), consumers, relay, storage. */
  stop(): Promise<void>;
}

/**
 * Starts the parts described by `parts` with the settings in `env`. Throws ConfigError (naming the
 * variables) when the configuration is invalid or a part cannot run in the selected mode.
 *
 * With a server, the process resolves as soon as the write path serves (database migrated, object
 * store ready, committer and sweeper running); the relay and the consumers start in the background,
 * retried with backoff while Kafka, the relay lease or a consumer group are not ready, and their
 * health entries say when each runs. Without a server, the parts are awaited and a failure throws.
 */
export async function startProcess(env: Readonly<Record<string, string | undefined>>, parts: ProcessParts, overrides: ProcessOverrides = {}): Promise<TidemarkProcess> {
  const consuming = parts.projection || parts.handlers.length > 0;
  // Every variable is parsed once: the storage and process settings for every part, then each
  // part's own table (the relay's below, once it is known to run).
  const tables = parseSettingsTables(
    { storage: STORAGE_SETTINGS, process: { ...PROCESS_SETTINGS, ...ORIGIN_SETTINGS }, server: SERVER_OWN_SETTINGS, consumers: consuming ? CONSUMER_OWN_SETTINGS : {} },
    env,
  );
  const shared = { ...tables.storage, ...tables.process };
  const serverConfig: ServerConfig = { ...shared, ...tables.server };
  // A consumer process alone reads its events from Kafka and needs no object store.
  const mode = backendMode(shared, { objects: parts.server || parts.relay === true });
  const consumerConfig: ConsumerConfig | undefined = consuming ? { ...shared, ...(tables.consumers as Values<typeof CONSUMER_OWN_SETTINGS>) } : undefined;
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
  // Checked here, not in the background: a configuration error must stop the process, not be retried.
  if (runConsumers) checkTiming(consumerConfig!);
  const handlerNames = runConsumers ? [...(parts.projection ? [INSTANCES_PROJECTION_HANDLER] : []), ...parts.handlers.map((h) => h.name)] : [];
  if (new Set(handlerNames).size !== handlerNames.length) throw new ConfigError(`invalid configuration:\n  handler names must be unique, got ${handlerNames.join(", ")}`);
  const relayConfig: RelayConfig | undefined = runRelay ? { ...shared, ...parseSettings(RELAY_OWN_SETTINGS, env) } : undefined;
  if (mode === "embedded" && parts.server && !consuming) {
    warnings.push("the projection is not running in this process: EVENTUAL and AT_LEAST_POSITION reads wait for it; `tidemark start` runs it here.");
  }

  const log = overrides.log ?? createLogger("tidemark", serverConfig.logLevel);
  // The server's upcasters (docs/CONTRACT.md E1, E2), loaded before any storage is opened: a module
  // that does not load is a usage error of this start.
  const upcasters = parts.server && serverConfig.upcasters !== "" ? { upcasters: await loadUpcasterModule(serverConfig.upcasters) } : {};
  // One registry for every part: one endpoint, process metrics once.
  const registry = createRegistry(true);
  // Parts get no metrics address of their own: the process serves one endpoint.
  const quiet = { metricsAddr: "" } as const;

  let server: ServerHandle | undefined;
  let backends: Backends | undefined;
  let metrics: MetricsServer | undefined;
  let relayPart: BackgroundPart<RelayHandle | EmbeddedPart> | undefined;
  let consumersPart: BackgroundPart<ConsumerHandle> | undefined;
  const keyClients: Array<() => void> = [];
  const reports: Array<{ component: string; health: string; part: () => { readonly state: PartState } }> = [];
  // Health entries that were SERVING at least once: a part counts as started only then.
  const everServing = new Set<string>();
  let tracking = false;
  let settle: () => void = () => {};
  const ready = new Promise<void>((resolve) => (settle = resolve));
  const stateOf = (r: (typeof reports)[number]): PartState => {
    const state = r.part().state;
    return state === "running" && !everServing.has(r.health) ? "starting" : state;
  };
  const check = () => {
    if (tracking && reports.every((r) => stateOf(r) !== "starting")) settle();
  };
  const stopAll = async () => {
    // Background starts give way first, so nothing comes up while the server drains.
    consumersPart?.cancel();
    relayPart?.cancel();
    const steps: Array<(() => Promise<void>) | undefined> = [
      metrics === undefined ? undefined : () => metrics!.close(),
      server === undefined ? undefined : () => server!.stop(),
      consumersPart === undefined ? undefined : () => consumersPart!.stop(),
      relayPart === undefined ? undefined : () => relayPart!.stop(),
      backends === undefined ? undefined : () => backends!.close(),
      async () => keyClients.forEach((close) => close()),
    ];
    for (const step of steps) {
      try {
        await step?.();
      } catch (e) {
        log.warn({ err: e }, "shutdown step failed");
      }
    }
    check();
  };


  let where: string;
  try {
    if (mode === "embedded") {
      backends = await openBackends(serverConfig);
      where = backends.where;
      await migrateToLatest(backends.database.db, backends.database.schema);
      await backends.objects.ensureReady();
      if (parts.server) {
        server = await startServer({ ...serverConfig, ...quiet }, { log: log.child({ component: "server" }), registry, database: backends.database, objects: backends.objects, listen: backends.listen, ...upcasters });
      }
    } else {
      where = describeServices(serverConfig);
      if (parts.server) server = await startServer({ ...serverConfig, ...quiet }, { log: log.child({ component: "server" }), registry, ...upcasters });
    }
    if (serverConfig.metricsAddr !== "") metrics = await startMetricsServer(serverConfig.metricsAddr, [registry]);

    const subjectKeys = consumerConfig === undefined ? undefined : consumerKeySource(consumerConfig, server, (close) => keyClients.push(close));
    const health = server?.health;
    const report = (name: string, up: boolean) => {
      health?.set(name, up ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
      if (up) everServing.add(name);
      check();
    };
    // With a server, a part that cannot start yet is retried behind it; without one there is
    // nothing to serve meanwhile, so a failure ends the process as before.
    const background = server !== undefined;
    const relayLog = log.child({ component: "relay" });
    const consumersLog = log.child({ component: "consumers" });
    const partOptions = { registry, retry: background };
    const onRunning = (handler: string, running: boolean) => report(consumerHealth(handler), running);
    for (const name of handlerNames) health?.set(consumerHealth(name), ServingStatus.NOT_SERVING);

    if (mode === "embedded" && runConsumers) {
      const opened = backends!;
      const database = opened.database;
      health?.set(RELAY_HEALTH, ServingStatus.NOT_SERVING);
      relayPart = new BackgroundPart<RelayHandle | EmbeddedPart>({
        ...partOptions,
        log: relayLog,
        name: "relay",
        start: async (_signal, attemptRegistry) => {
          const listener = new CommitListener(opened.listen, database.schema, relayLog);
          await listener.start();
          const relay = new EmbeddedRelay({ db: database.db, objects: opened.objects, wake: listener, log: relayLog, registry: attemptRegistry });
          report(RELAY_HEALTH, true);
          return { kind: "embedded", relay, listener };
        },
        stop: (handle) => stopRelay(handle),
      });
      const relayStarted = relayPart.started;
      consumersPart = new BackgroundPart<ConsumerHandle>({
        ...partOptions,
        log: consumersLog,
        name: "consumers",
        start: async (signal, attemptRegistry) => {
          const relay = await relayStarted;
          if (relay === undefined || !("kind" in relay)) throw new Error("the embedded relay did not start");
          return startConsumers(consumerConfig!, parts, {
            log: consumersLog,
            database,
            metricsRegistry: attemptRegistry,
            source: relay.relay.source,
            deadLetters: storeDeadLetters(opened.objects),
            onRunning,
            signal,
            ...(subjectKeys === undefined ? {} : { subjectKeys }),
          });
        },
        stop: (handle) => handle.stop(),
      });
    } else if (mode === "services") {
      if (runRelay) {
        health?.set(RELAY_HEALTH, ServingStatus.NOT_SERVING);
        relayPart = new BackgroundPart<RelayHandle | EmbeddedPart>({
          ...partOptions,
          log: relayLog,
          name: "relay",
          start: async (_signal, attemptRegistry) => {
            const relay = await startRelay(
              { ...relayConfig!, ...quiet },
              { log: relayLog, registry: attemptRegistry, onReadiness: (r) => report(RELAY_HEALTH, r !== "waiting") },
            );
            trackObjectStore(registry, relay.objects, "relay");
            return relay;
          },
          stop: (handle) => stopRelay(handle),
        });
      }
      if (runConsumers) {
        consumersPart = new BackgroundPart<ConsumerHandle>({
          ...partOptions,
          log: consumersLog,
          name: "consumers",
          // Kafka is tried once per attempt: while it is down the attempts (and their log lines) come
          // at this part's backoff, and a stop never leaves kafkajs retrying behind it.
          start: (signal, attemptRegistry) =>
            startConsumers(consumerConfig!, parts, { log: consumersLog, metricsRegistry: attemptRegistry, onRunning, signal, failFast: background, ...(subjectKeys === undefined ? {} : { subjectKeys }) }),
          stop: (handle) => handle.stop(),
        });
      }
    }

    const components: string[] = [];
    if (server !== undefined) components.push("server");
    if (relayPart !== undefined) {
      const component = mode === "embedded" ? "relay (in process: commit log → consumers)" : `relay (${relayConfig!.name} → Kafka ${relayConfig!.kafkaBrokers.join(",")})`;
      const part = relayPart;
      components.push(component);
      reports.push({ component, health: RELAY_HEALTH, part: () => part });
    }
    if (consumersPart !== undefined) {
      const part = consumersPart;
      components.push(...handlerNames);
      for (const name of handlerNames) reports.push({ component: name, health: consumerHealth(name), part: () => part });
    }
    if (!background) {
      // No server to keep serving meanwhile: wait for the parts, and fail as the process did before.
      for (const part of [relayPart, consumersPart]) {
        if (part !== undefined && (await part.started) === undefined) throw part.failure ?? new Error(`${part.name} did not start`);
      }
    }

    tracking = true;
    for (const part of [relayPart, consumersPart]) void part?.started.then(check);
    check();
    const starting = () => reports.filter((r) => stateOf(r) === "starting").map((r) => r.component);
    void ready.then(() => {
      if (reports.length > 0) log.info({ components, parts: reports.map((r) => ({ component: r.component, state: stateOf(r) })) }, "tidemark parts settled");
    });
    const relayHandle = () => {
      const handle = relayPart?.handle;
      return handle !== undefined && "kind" in handle ? handle.relay : handle;
    };
    const result: TidemarkProcess = {
      mode,
      where,
      dataDir: backends?.dataDir,
      grpcAddress: server?.address,
      metricsAddress: metrics?.address,
      components,
      warnings,
      server,
      get consumers() {
        return consumersPart?.handle;
      },
      get relay() {
        return relayHandle();
      },
      parts: () => reports.map((r) => ({ component: r.component, health: r.health, state: stateOf(r) })),
      starting,
      ready,
      registry,
      log,
      stop: async () => {
        await stopAll();
        log.info({ components }, "tidemark stopped");
      },
    };
    log.info(
      { mode, where, dataDir: result.dataDir, grpc: result.grpcAddress, metrics: result.metricsAddress, components, starting: starting(), warnings },
      "tidemark started",
    );
    return result;
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** The embedded relay's role and the commit listener that wakes it. */
interface EmbeddedPart {
  readonly kind: "embedded";
  readonly relay: EmbeddedRelay;
  readonly listener: CommitListener;
}

async function stopRelay(handle: RelayHandle | EmbeddedPart): Promise<void> {
  if (!("kind" in handle)) return handle.stop();
  await handle.relay.stop();
  await handle.listener.close();
}

async function startConsumers(
  config: ConsumerConfig,
  parts: ProcessParts,
  overrides: Parameters<typeof startConsumer>[2],
): Promise<ConsumerHandle> {
  const quietConfig = { ...config, metricsAddr: "" };
  if (parts.projection) return startProjection(quietConfig, overrides, parts.handlers);
  return startConsumer(quietConfig, parts.handlers, overrides);
}


/**
 * Where this process's consumers get subjects' keys (docs/SECURITY.md "Erasure"): the server in
 * this process, else the server named by TIDEMARK_CONSUMER_KEY_SERVER over gRPC (cached briefly);
 * none when neither (an event naming a subject then pauses its partition, saying what to set).
 */
function consumerKeySource(config: ConsumerConfig, server: ServerHandle | undefined, onClose: (close: () => void) => void): SubjectKeySource | undefined {
  if (server !== undefined) return server.subjectKeys;
  if (config.keyServer === "") return undefined;
  const client = subjectKeyClient(config.keyServer, {
    ...(config.keyServerToken === "" ? {} : { token: config.keyServerToken }),
    ...(config.keyServerCa === "" ? {} : { tls: { ca: readFileSync(config.keyServerCa) } }),
  });
  onClose(() => client.close());
  return cachedSubjectKeys((database, subject) => client.fetch(database, subject), config.subjectKeyCacheMs);
}

/** The human-readable start-up banner (stderr): mode, data, addresses, parts (and which still start), warnings. */
export function banner(command: string, p: TidemarkProcess, version: string): string {
  const lines = [`tidemark ${version} · ${command} · ${p.mode === "embedded" ? "embedded mode (no services configured)" : "services mode"}`];
  const field = (name: string, value: string) => lines.push(`  ${name.padEnd(10)}${value}`);
  if (p.mode === "embedded") field("data", `${p.dataDir} (PGlite database and event files; TIDEMARK_DATA_DIR)`);
  else field("data", p.where);
  if (p.grpcAddress !== undefined) field("gRPC", `${p.grpcAddress}   (try: grpcurl ${p.server?.tls === true ? "-cacert CA.pem" : "-plaintext"} ${p.grpcAddress} list)`);
  if (p.server !== undefined && (p.server.tls || p.server.auth === "tokens")) {
    field("security", `${p.server.tls ? "TLS (SIGHUP re-reads the certificates)" : "plain text"}, ${p.server.auth === "tokens" ? "tokens (authorization: Bearer …; tidemark token create)" : "no authentication (TIDEMARK_AUTH=off)"}`);
  }
  if (p.server !== undefined) {
    field("console", p.server.consoleUrl ?? (p.server.consoleProblem === undefined ? "off (set TIDEMARK_CONSOLE_ADDR=127.0.0.1:50052 to serve the web console)" : "not running (see the warning below)"));
  }
  field("metrics", p.metricsAddress === undefined ? "off (set TIDEMARK_METRICS_ADDR=127.0.0.1:9464 to serve /metrics)" : `http://${p.metricsAddress}/metrics`);
  field("running", p.components.join(", ") || "nothing");
  const starting = p.parts().filter((part) => part.state === "starting");
  if (starting.length > 0) {
    const entries = [...new Set(starting.map((part) => part.health))].join(", ");
    const how = p.grpcAddress === undefined ? "a line follows once up" : `health ${entries} say SERVING once up`;
    field("starting", `${starting.map((part) => part.component).join(", ")} — in the background; ${how}`);
  }
  for (const warning of [...p.warnings, ...(p.server?.consoleProblem === undefined ? [] : [p.server.consoleProblem])]) lines.push(`  warning   ${warning}`);
  lines.push("  stop with Ctrl-C (SIGINT) or SIGTERM; a second signal forces");
  return `${lines.join("\n")}\n`;
}
