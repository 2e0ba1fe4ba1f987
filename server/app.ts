/**
 * Builds and runs the gRPC server: database (migrated), object store, committer, sweeper, services,
 * reflection and health. `startServer` returns a handle whose `stop` shuts down in reverse order.
 */
import type { Kysely } from "kysely";
import {
  type Backends,
  CommitListener,
  pgConnectionUrl,
  committedAfter,
  committedMatching,
  type AuthTables,
  type ConsumerTables,
  createInstanceReadModel,
  createLogger,
  createRegistry,
  type Database,
  lastPosition,
  Lifecycle,
  type ListenConnector,
  type Logger,
  LogTail,
  type LogTailSettings,
  holdServingLock,
  migrateToLatest,
  type ObjectStore,
  openBackends,
  type PrivacyTables,
  type Registry,
  type SlotRow,
  startMetricsServer,
  trackObjectStore,
  Upcasters,
  type WriteSideTables,
} from "../core/index.js";
import { file_grpc_health_v1_health, Health } from "../gen/grpc/health/v1/health_pb.js";
import { file_google_rpc_error_details } from "../gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status } from "../gen/google/rpc/status_pb.js";
import { file_tidemark_v1_errors } from "../gen/tidemark/v1/errors_pb.js";
import { EventStoreService, file_tidemark_v1_event_store } from "../gen/tidemark/v1/event_store_pb.js";
import { file_tidemark_v1_instance, InstanceService } from "../gen/tidemark/v1/instance_pb.js";
import { file_tidemark_v1_privacy, PrivacyService } from "../gen/tidemark/v1/privacy_pb.js";
import { file_tidemark_v1_inspection, InspectionService } from "../gen/tidemark/v1/inspection_pb.js";
import { file_tidemark_v1_processing, ProcessingService } from "../gen/tidemark/v1/processing_pb.js";
import { loadMasterKeyring, SubjectKeys } from "./privacy.js";
import { privacyHandlers } from "./services/privacy-service.js";
import { processingHandlers } from "./services/processing-service.js";
import { inspectionHandlers } from "./services/inspection-service.js";
import { ensureConsoleBundle } from "./console/console-assets.js";
import { type ConsoleHandle, startConsole } from "./console/console-server.js";
import { Committer } from "./committer.js";
import { authMode, consoleAddress, type ServerConfig } from "./config.js";
import { authFailureCounter, TokenAuthenticator } from "./auth/authenticator.js";
import { guardEventStore, guardInspection, guardInstances, guardPrivacy, guardProcessing, type GuardDeps } from "./auth/guard.js";
import type { Authenticate } from "./grpc/bridge.js";
import { TlsCredentials } from "./grpc/tls.js";
import { EventStore } from "./event-store.js";
import { bindService } from "./grpc/bridge.js";
import { serverMetrics } from "./server-metrics.js";
import { HealthState, ServingStatus } from "./grpc/health.js";
import { addReflection } from "./grpc/reflection.js";
import { listenGrpc } from "./grpc/grpc-server.js";
import { InstanceCommands } from "./instances/instance-commands.js";
import type { Limits } from "./limits.js";
import { eventStoreHandlers } from "./services/event-store-service.js";
import { instanceHandlers, type InstanceReadModel } from "./services/instance-service.js";
import { subscribeHandler } from "./subscribe.js";
import { PlannerStatistics } from "./planner-statistics.js";
import { Sweeper } from "./sweeper.js";

/** Parts a caller (tests, the embedded mode) may supply instead of the configured ones. */
export interface ServerOverrides {
  readonly log?: Logger;
  readonly objects?: ObjectStore;
  readonly database?: Database<WriteSideTables>;
  /** How to LISTEN for commits on `database` (a URL or a connector); default: what opened it. */
  readonly listen?: string | ListenConnector;
  /** Registry for the server's metrics (default: a fresh one with process metrics). */
  readonly registry?: Registry;
  /** Crash injection for tests: runs before each slot object is written. */
  readonly beforeWrite?: (slot: SlotRow) => Promise<void>;
  /** Crash injection for tests: runs after each slot object is created, before commit. */
  readonly afterWrite?: (slot: SlotRow) => Promise<void>;
  /** The read model for EVENTUAL and AT_LEAST_POSITION reads (default: the consumers' `instances` table). */
  readonly readModel?: InstanceReadModel;
  /** Sizes of the Subscribe fan-out (default LOG_TAIL_DEFAULTS; tests shrink the buffers). */
  readonly logTail?: Partial<LogTailSettings>;
  /**
   * The server's upcasters (docs/CONTRACT.md E1, E2): applied by the instance fold, and by ReadStream
   * and Subscribe when the client asks for `latest_schema`. Default none; the CLI loads the module
   * TIDEMARK_UPCASTERS names.
   */
  readonly upcasters?: Upcasters;
}

/** A running server. */
export interface ServerHandle {
  /** `host:port` actually bound. */
  readonly address: string;
  readonly port: number;
  readonly store: EventStore;
  readonly sweeper: Sweeper;
  readonly committer: Committer;
  /** The shared tail of the commit log that serves every Subscribe call. */
  readonly tail: LogTail;
  /** The data subjects' keys (erasure by crypto-shredding): in-process consumers open events with them. */
  readonly subjectKeys: SubjectKeys;
  readonly health: HealthState;
  readonly database: Database<WriteSideTables>;
  readonly objects: ObjectStore;
  readonly registry: Registry;
  /** `tokens` or `off` (TIDEMARK_AUTH, or the mode's default). */
  readonly auth: "tokens" | "off";
  /** True when the port speaks TLS. */
  readonly tls: boolean;
  /** The web console's URL (`http://host:port/`), when it runs (TIDEMARK_CONSOLE_ADDR). */
  readonly consoleUrl: string | undefined;
  /** Why the embedded mode's default console is not running (its port was taken), if so. */
  readonly consoleProblem: string | undefined;
  /**
   * Re-reads the TLS certificate, key and client CA (what SIGHUP does) without closing the port: new
   * handshakes use them. Rejects, keeping the current ones, when the files are invalid; a no-op without TLS.
   */
  reloadTls(): Promise<void>;
  /** Graceful shutdown: stop accepting, let calls finish for `graceMs`, then cancel; close clients. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts the server described by `config`. */
export async function startServer(config: ServerConfig, overrides: ServerOverrides = {}): Promise<ServerHandle> {
  const log = overrides.log ?? createLogger("tidemark-server", config.logLevel);
  // Backends the caller did not supply are opened here and closed on stop.
  const opened = overrides.database === undefined || overrides.objects === undefined ? await openBackends(config) : undefined;
  const lifecycle = new Lifecycle(log);
  if (opened !== undefined) lifecycle.defer("storage", () => opened.close());
  try {
    return await serve(config, overrides, log, lifecycle, opened);
  } catch (e) {
    // A start that fails half way (the address in use, a migration) releases what it opened.
    await lifecycle.close();
    throw e;
  }
}

async function serve(config: ServerConfig, overrides: ServerOverrides, log: Logger, lifecycle: Lifecycle, opened: Backends | undefined): Promise<ServerHandle> {
  const database: Database<WriteSideTables> = overrides.database ?? opened!.database;
  const objects = overrides.objects ?? opened!.objects;
  const listenSource = overrides.listen ?? opened?.listen ?? pgConnectionUrl(config);
  if (opened !== undefined) log.info({ mode: opened.mode, where: opened.where }, "storage");

  const applied = await migrateToLatest(database.db, database.schema);
  if (applied.length > 0) log.info({ migrations: applied, schema: database.schema }, "database migrated");
  await objects.ensureReady();
  if (config.pgUrl !== "") {
    // Held while serving, so `tidemark recover` refuses to run beside a writer (docs/OPERATIONS.md).
    const serving = await holdServingLock(config.pgUrl, database.schema, (e) => log.warn({ err: e }, "serving lock connection lost; taking it again"));
    lifecycle.defer("serving lock", () => serving.release());
  }

  const limits: Limits = {
    maxMessageBytes: config.maxMessageBytes,
    maxDataBytes: config.maxDataBytes,
    maxDataDepth: config.maxDataDepth,
    maxEventsPerAppend: config.maxEventsPerAppend,
    maxStreamsPerCall: config.maxStreamsPerCall,
    maxMetadataEntries: config.maxMetadataEntries,
    maxMetadataValueLength: config.maxMetadataValueLength,
    maxSubscribeFilterEntries: config.maxSubscribeFilterEntries,
  };
  const committer = new Committer(database.db, database.schema, log, { maxWaitMs: config.writeDeadlineMs * 2 + config.sweepIntervalMs * 4 });
  lifecycle.defer("committer", () => committer.close());
  const store = new EventStore({
    db: database.db,
    objects,
    committer,
    log,
    cacheSize: config.eventCacheSize,
    segments: { maxBytes: config.segmentMaxBytes, maxEvents: config.segmentMaxEvents, maxInFlight: config.segmentMaxInFlight, lingerMs: config.segmentLingerMs },
    ...(overrides.beforeWrite === undefined ? {} : { beforeWrite: overrides.beforeWrite }),
    ...(overrides.afterWrite === undefined ? {} : { afterWrite: overrides.afterWrite }),
  });
  lifecycle.defer("segment writer", () => store.close());
  await store.catchUp();
  const sweeper = new Sweeper({
    db: database.db,
    committer,
    store,
    log,
    deadlineMs: config.writeDeadlineMs,
    intervalMs: config.sweepIntervalMs,
  });
  const listener = new CommitListener(listenSource, database.schema, log);
  lifecycle.defer("commit listener", () => listener.close());
  await listener.start();
  const tail = new LogTail(
    {
      committedAfter: (after, limit) => committedAfter(database.db, after, limit),
      committedMatching: (after, upTo, filter, limit) => committedMatching(database.db, after, upTo, filter, limit),
      load: (row) => store.load(row),
      lastPosition: () => lastPosition(database.db),
    },
    listener,
    log,
    { checkpointPositions: config.subscribeCheckpointPositions, checkpointMs: config.subscribeCheckpointMs, ...overrides.logTail },
  );
  const subjectKeys = new SubjectKeys(database.db as unknown as Kysely<PrivacyTables>, loadMasterKeyring(config.masterKeyFile), { cacheMs: config.subjectKeyCacheMs });
  const health = new HealthState();
  const shutdown = new AbortController();

  const registry = overrides.registry ?? createRegistry(true);
  const metrics = serverMetrics(registry);
  const upcasters = overrides.upcasters ?? Upcasters.NONE;
  const commands = new InstanceCommands(store, database.db, { every: config.snapshotEvery, onRejected: (_, reason) => metrics.snapshotRejected(reason) }, log, upcasters);
  trackObjectStore(registry, objects, "server");
  metrics.track(committer, sweeper, tail, store.segmentStats);
  const observe = metrics.observe;
  const auth = authMode(config);
  const host = config.grpcAddr.slice(0, config.grpcAddr.lastIndexOf(":"));
  let authenticate: Authenticate | undefined;
  const failures = authFailureCounter(registry, log.child({ component: "auth" }));
  let reauthenticate: GuardDeps["reauthenticate"] = () => Promise.resolve();
  if (auth === "tokens") {
    const authenticator = new TokenAuthenticator(database.db as unknown as Kysely<AuthTables>, failures, log.child({ component: "auth" }));
    authenticate = authenticator.authenticate;
    // Open streams re-check their token every recheckMs; streams sharing a token share one lookup
    // per interval, so a thousand subscribers of one token cost one query, not a thousand.
    const rechecks = new Map<string, { at: number; result: Promise<unknown> }>();
    reauthenticate = (context) => {
      const key = context.metadata["authorization"] ?? "";
      const now = performance.now();
      const recent = rechecks.get(key);
      if (recent !== undefined && now - recent.at < config.authRecheckMs / 2) return recent.result;
      const result = authenticator.authenticate(context.metadata, context.path);
      rechecks.set(key, { at: now, result });
      // Forget entries of tokens no stream re-checks any more.
      if (rechecks.size > 10_000) for (const [k, v] of rechecks) if (now - v.at > config.authRecheckMs) rechecks.delete(k);
      return result;
    };
  } else if (!isLoopback(host)) {
    log.warn({ address: config.grpcAddr }, "TIDEMARK_AUTH=off on a non-loopback address: any client that reaches the port can read and write every database (docs/SECURITY.md)");
  }
  const guards: GuardDeps = { failures, reauthenticate, recheckMs: config.authRecheckMs, log };
  const tls = config.tlsCert === "" ? undefined : await TlsCredentials.load({ cert: config.tlsCert, key: config.tlsKey, clientCa: config.tlsClientCa });
  const services = {
    events: guardEventStore(eventStoreHandlers(store, limits, subscribeHandler(tail, shutdown.signal, limits, subjectKeys, upcasters), subjectKeys, upcasters), guards),
    instances: guardInstances(instanceHandlers(commands, database.db, limits, overrides.readModel ?? createInstanceReadModel(database.db.withTables<ConsumerTables>())), guards),
    processing: guardProcessing(processingHandlers(database.db.withTables<ConsumerTables>()), guards),
    inspection: guardInspection(inspectionHandlers({ store, keys: subjectKeys, db: database.db.withTables<ConsumerTables>(), bucket: config.s3Bucket }), guards),
    privacy: guardPrivacy(privacyHandlers(store, subjectKeys), guards),
  };
  const server = await listenGrpc(
    config.grpcAddr,
    [
      bindService(EventStoreService, services.events, log, observe, authenticate),
      bindService(InstanceService, services.instances, log, observe, authenticate),
      bindService(ProcessingService, services.processing, log, observe, authenticate),
      bindService(InspectionService, services.inspection, log, observe, authenticate),
      bindService(PrivacyService, services.privacy, log, observe, authenticate),
      // Health stays open (load balancers probe it without a token); it tells nothing about data.
      bindService(Health, health.handlers(), log),
    ],
    {
      maxReceiveBytes: config.maxMessageBytes,
      ...(tls === undefined ? {} : { credentials: tls.credentials }),
      configure: (grpcServer) =>
        addReflection(grpcServer, [
          file_tidemark_v1_event_store,
          file_tidemark_v1_instance,
          file_tidemark_v1_processing,
          file_tidemark_v1_privacy,
          file_tidemark_v1_inspection,
          file_tidemark_v1_errors,
          file_google_rpc_status,
          file_google_rpc_error_details,
          file_grpc_health_v1_health,
        ]),
    },
  );
  // Only for a start that fails after listening; stop() shuts the server down gracefully first.
  lifecycle.defer("gRPC server", () => server.shutdown(0, () => {}));
  const port = server.port;
  const address = `${host}:${port}`;
  sweeper.start();
  lifecycle.defer("sweeper", () => sweeper.stop());
  if (config.pgAnalyzeYoungTables) {
    const statistics = new PlannerStatistics(database.db, log, () => committer.stats.slots);
    metrics.trackPlannerStatistics(statistics);
    statistics.start();
    lifecycle.defer("planner statistics", () => statistics.stop());
  }
  if (config.metricsAddr !== "") {
    const metricsServer = await startMetricsServer(config.metricsAddr, [registry]);
    lifecycle.defer("metrics", () => metricsServer.close());
    log.info({ address: metricsServer.address }, "metrics at /metrics");
  }
  tail.start();
  lifecycle.defer("log tail", () => tail.stop());
  let webConsole: ConsoleHandle | undefined;
  let consoleProblem: string | undefined;
  const consoleAt = consoleAddress(config);
  if (consoleAt !== undefined) {
    try {
      webConsole = await startConsole({
        address: consoleAt.address,
        // The console reads (and redrives dead letters): the write RPCs of the gRPC port are not served here.
        services: [
          { service: EventStoreService, handlers: { readStream: services.events.readStream, getStreamHead: services.events.getStreamHead, subscribe: services.events.subscribe } },
          { service: InstanceService, handlers: { getInstance: services.instances.getInstance, listInstances: services.instances.listInstances } },
          { service: ProcessingService, handlers: services.processing },
          { service: InspectionService, handlers: services.inspection },
        ],
        authenticate,
        observe: observe as (path: string, code: number, seconds: number) => void,
        log: log.child({ component: "console" }),
      });
      lifecycle.defer("console", () => webConsole!.close());
      log.info({ url: webConsole.url }, "console listening");
      // Built beside serving, not before it: the write path's start does not wait for esbuild (until
      // the bundle is there the page answers 503 saying so).
      ensureConsoleBundle().then(
        (built) => built && log.info("console bundle built (console/dist)"),
        (e: unknown) => log.warn({ err: e }, "could not build the console's bundle: run `npm run build:console`"),
      );
    } catch (e) {
      if (consoleAt.explicit) throw e;
      // The embedded default is a convenience: a second process on the machine must still start.
      consoleProblem = `the console's default address ${consoleAt.address} is not available (${(e as Error).message}); set TIDEMARK_CONSOLE_ADDR to another host:port, or off`;
      log.warn({ address: consoleAt.address, err: e }, "console not started");
    }
  }
  for (const name of ["", EventStoreService.typeName, InstanceService.typeName, ProcessingService.typeName, PrivacyService.typeName, InspectionService.typeName]) health.set(name, ServingStatus.SERVING);
  log.info({ address, schema: database.schema, bucket: config.s3Bucket, auth, tls: tls !== undefined, mtls: config.tlsClientCa !== "" }, "tidemark server listening");

  let stopping: Promise<void> | undefined;
  return {
    address,
    port,
    store,
    sweeper,
    committer,
    tail,
    subjectKeys,
    health,
    database,
    objects,
    registry,
    auth,
    tls: tls !== undefined,
    consoleUrl: webConsole?.url,
    consoleProblem,
    async reloadTls() {
      if (tls === undefined) return;
      await tls.reload();
      log.info({ cert: config.tlsCert }, "TLS certificates re-read");
    },
    stop(graceMs = config.shutdownGraceMs) {
      stopping ??= (async () => {
        health.shutdown();
        shutdown.abort();
        await server.shutdown(graceMs, () => log.warn({ graceMs }, "grace period over; cancelling remaining calls"));
        await lifecycle.close();
        log.info("tidemark server stopped");
      })();
      return stopping;
    },
  };
}

/** True for addresses only this host can reach (the embedded mode's default 127.0.0.1). */
function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}
