/**
 * Builds and runs consumers: database (migrated), message sources (Kafka consumer groups, or the
 * sources an embedding process supplies), dead letters, one runtime per handler, housekeeping and
 * metrics. `startConsumer` runs user handlers; `startProjection` runs the instances projection
 * with its position tracker. Each returns a handle whose `stop` shuts down in reverse order.
 */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { Partitioners, type Kafka } from "kafkajs";
import {
  type ConsumerDatabase,
  createKafka,
  kafkaSecurity,
  createLogger,
  createRegistry,
  type Database,
  KafkaSockets,
  Lifecycle,
  type Logger,
  type MessageSource,
  migrateToLatest,
  openBackends,
  probeKafka,
  type Registry,
  type SourceRequest,
  startMetricsServer,
} from "../core/index.js";
import { startHousekeeping, startPositionTracker, type BackgroundLoop } from "./background.js";
import { checkTiming, requireServices, type ConsumerConfig } from "./config.js";
import { ConsumerRuntime, type CrashPoint, type CrashPointInfo } from "./consumer-runtime.js";
import { ensureTopic, kafkaDeadLetters, type DeadLetterSink } from "./dead-letter.js";
import type { ConsumedEvent, Handler } from "./handler.js";
import { eventOpener, type SubjectKeySource } from "./decode.js";

import { KafkaSource } from "./kafka-source.js";
import { ConsumerMetrics } from "./metrics.js";
import { instancesProjection } from "./projection.js";

/** Parts a caller (tests, an embedding process) may supply instead of the configured ones. */
export interface ConsumerOverrides {
  readonly log?: Logger;
  /** A database to use (not closed on stop); default: a pool from the configuration. */
  readonly database?: Database<ConsumerDatabase>;
  readonly kafka?: Kafka;
  /**
   * Where each handler's messages come from instead of Kafka (the embedded mode: the relay serves
   * the commit log in process). Requires `deadLetters` and `database`; no Kafka is contacted.
   */
  readonly source?: (request: SourceRequest) => MessageSource;
  /** Where dead letters go instead of the Kafka dead-letter topic (required with `source`). */
  readonly deadLetters?: DeadLetterSink;
  /** Registry to register the metrics in; default: a fresh one. */
  readonly metricsRegistry?: Registry;
  /** Worker identity in registry rows; default `host/pid/random`. */
  readonly owner?: string;
  /** Test hook: runs at each named crash point. */
  readonly crashPoint?: (point: CrashPoint, info: CrashPointInfo) => Promise<void>;
  /** Called after each event's outcome is recorded. */
  readonly onRecorded?: (handler: string, event: ConsumedEvent | undefined) => void;
  /** Run registry housekeeping in this process (default true; several processes may). */
  readonly housekeeping?: boolean;
  /**
   * Called when a handler's source starts delivering (joined its consumer group) and when it stops
   * (the group membership was lost until kafkajs rejoins): a process's health entries follow it.
   */
  readonly onRunning?: (handler: string, running: boolean) => void;
  /** Aborts a start still in progress (Kafka unreachable, a group join waiting): it rejects and closes what it opened. */
  readonly signal?: AbortSignal;
  /**
   * Try Kafka once before anything else and fail within seconds when it does not answer, instead
   * of waiting out kafkajs's retries (for a caller that retries the whole start itself).
   */
  readonly failFast?: boolean;
  /**
   * Where handlers' events naming a data subject get their key to be opened (docs/SECURITY.md
   * "Erasure"); without one such an event pauses its partition (an outage) until a source is set.
   */
  readonly subjectKeys?: SubjectKeySource;
}

/** A running consumer process (one or more handlers). */
export interface ConsumerHandle {
  readonly handlers: readonly string[];
  readonly metrics: ConsumerMetrics;
  readonly database: Database<ConsumerDatabase>;
  /** `host:port` of /metrics, when enabled. */
  readonly metricsAddress: string | undefined;
  /** Stops consuming (in-flight events finish), then closes what this handle opened. */
  stop(): Promise<void>;
}

/**
 * Starts one consumer group per handler (`{groupPrefix}{name}`) on the configured topics, with
 * the registry's guarantees: exactly-once effect, per-aggregate order, retries, dead letters.
 * Resolves once every consumer has joined its group.
 */
export async function startConsumer(config: ConsumerConfig, handlers: Handler | readonly Handler[], overrides: ConsumerOverrides = {}): Promise<ConsumerHandle> {
  return launch(config, Array.isArray(handlers) ? handlers : [handlers as Handler], overrides);
}

/** A running projection: a consumer handle plus the projection's applied position. */
export interface ProjectionHandle extends ConsumerHandle {
  /** Moves the stored applied position forward now. */
  nudgePosition(): void;
}

/**
 * Starts the instances projection (handler `projection:instances`) and the tracker that keeps its
 * applied global position current for read-your-writes; `alongside` handlers run in the same
 * consumer process (one metrics registry, one housekeeping loop).
 */
export async function startProjection(config: ConsumerConfig, overrides: ConsumerOverrides = {}, alongside: readonly Handler[] = []): Promise<ProjectionHandle> {
  let tracker: BackgroundLoop | undefined;
  const handle = await launch(config, [instancesProjection(), ...alongside], {
    ...overrides,
    onRecorded: (name, event) => {
      tracker?.nudge();
      overrides.onRecorded?.(name, event);
    },
  }, (database, metrics, log) => {
    tracker = startPositionTracker({ db: database.db, metrics, log });
    return () => tracker!.stop();
  });
  return { ...handle, nudgePosition: () => tracker?.nudge() };
}

async function launch(
  config: ConsumerConfig,
  handlers: readonly Handler[],
  overrides: ConsumerOverrides,
  extra?: (database: Database<ConsumerDatabase>, metrics: ConsumerMetrics, log: Logger) => () => Promise<void>,
): Promise<ConsumerHandle> {
  checkTiming(config);
  if (handlers.length === 0) throw new Error("startConsumer needs at least one handler");
  const names = handlers.map((h) => h.name);
  if (new Set(names).size !== names.length) throw new Error(`handler names must be unique, got ${names.join(", ")}`);
  if (overrides.source !== undefined && overrides.deadLetters === undefined) throw new Error("a message source override needs a dead-letter sink too");
  requireServices(config, { database: overrides.database === undefined, kafka: overrides.source === undefined && overrides.kafka === undefined });
  const log = overrides.log ?? createLogger("tidemark-consumer", config.logLevel);
  const lifecycle = new Lifecycle(log);
  // The events come from Kafka (or the caller's source): the object store is not needed here.
  const opened = overrides.database === undefined ? await openBackends(config, { objects: false }) : undefined;
  if (opened !== undefined) lifecycle.defer("storage", () => opened.close());
  const database: Database<ConsumerDatabase> = overrides.database ?? opened!.database;
  // A connection that dies while its client is checked out (a handler's transaction between two
  // statements) emits 'error' on the client; unheard, that would crash the process. The next
  // query on it fails instead, and the runtime treats that as an outage.
  database.pool.on("connect", (client) => client.on("error", () => {}));
  const signal = overrides.signal;
  // Only a start that can be aborted needs to cut its connections (see the catch below).
  const sockets = signal !== undefined && overrides.kafka === undefined ? new KafkaSockets() : undefined;
  try {
    const applied = await unlessAborted(migrateToLatest(database.db, database.schema), signal);
    if (applied.length > 0) log.info({ migrations: applied, schema: database.schema }, "database migrated");

    let sourceFor: (request: SourceRequest) => MessageSource;
    let deadLetters: DeadLetterSink;
    if (overrides.source !== undefined) {
      sourceFor = overrides.source;
      deadLetters = overrides.deadLetters!;
    } else {
      if (overrides.failFast === true) await unlessAborted(probeKafka(config.kafkaBrokers, config.kafkaClientId), signal);
      const kafka = overrides.kafka ?? createKafka({ brokers: config.kafkaBrokers, clientId: config.kafkaClientId, security: kafkaSecurity(config), ...(sockets === undefined ? {} : { sockets }) }, log.child({ component: "kafkajs" }));
      const admin = kafka.admin();
      try {
        await unlessAborted(admin.connect(), signal);
        await unlessAborted(ensureTopic(admin, config.deadLetterTopic, config.deadLetterPartitions, config.deadLetterReplication), signal);
      } finally {
        await admin.disconnect();
      }
      // Dead letters are at least once (keyed by handler and event id); an idempotent producer would
      // need unbounded retries, and a send must fail during an outage so the partition pauses.
      const producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner });
      lifecycle.defer("dead-letter producer", () => producer.disconnect());
      await unlessAborted(producer.connect(), signal);
      deadLetters = overrides.deadLetters ?? kafkaDeadLetters(producer, config.deadLetterTopic);
      sourceFor = (request) =>
        new KafkaSource({
          ...request,
          kafka,
          sessionTimeoutMs: config.sessionTimeoutMs,
          partitionsConsumedConcurrently: config.partitionsConsumedConcurrently,
          log: log.child({ handler: request.groupId.slice(config.groupPrefix.length) }),
        });
    }

    const registry = overrides.metricsRegistry ?? createRegistry(config.metricsAddr !== "");
    const metrics = new ConsumerMetrics(registry);
    if (extra !== undefined) lifecycle.defer("position tracker", extra(database, metrics, log));
    if (overrides.housekeeping ?? true) {
      const housekeeping = startHousekeeping({
        db: database.db,
        intervalMs: config.pruneIntervalMs,
        retentionMs: config.retentionMs,
        batchSize: config.pruneBatchSize,
        metrics,
        log,
      });
      lifecycle.defer("housekeeping", () => housekeeping.stop());
    }

    const owner = overrides.owner ?? `${hostname()}/${process.pid}/${randomBytes(3).toString("hex")}`;
    const runtimes = handlers.map(
      (handler) =>
        new ConsumerRuntime({
          handler,
          // Handlers see events naming a subject opened, or with the erasure marker (T5).
          open: eventOpener(handler, overrides.subjectKeys),
          db: database.db,
          source: sourceFor({ groupId: `${config.groupPrefix}${handler.name}`, topics: config.topics, fromBeginning: config.fromBeginning }),
          deadLetters,
          leaseMs: config.leaseMs,
          heartbeatMs: config.heartbeatMs,
          maxAttempts: config.maxAttempts,
          backoff: { baseMs: config.retryBaseMs, maxMs: config.retryMaxMs, jitter: 0.2 },
          concurrency: config.concurrency,
          maxInFlight: config.maxInFlight,
          maxGroupSize: config.maxGroupSize,
          groupTimeoutMs: config.groupTimeoutMs,
          replayPollMs: config.replayPollMs,
          metrics,
          log,
          owner,
          ...(overrides.crashPoint === undefined ? {} : { crashPoint: overrides.crashPoint }),
          onRecorded: (event) => overrides.onRecorded?.(handler.name, event),
          onRunning: (running) => overrides.onRunning?.(handler.name, running),
        }),
    );
    lifecycle.defer("runtimes", async () => {
      await Promise.all(runtimes.map((r) => r.stop()));
    });
    // An abort leaves the joins to the cleanups: stopping a source disconnects it, which ends its join.
    await unlessAborted(Promise.all(runtimes.map((r) => r.start())), signal);

    let metricsAddress: string | undefined;
    if (config.metricsAddr !== "") {
      const server = await startMetricsServer(config.metricsAddr, [registry]);
      metricsAddress = server.address;
      lifecycle.defer("metrics", () => server.close());
    }
    log.info({ handlers: names, sources: runtimes.map((r) => r.sourceDescription), deadLetters: deadLetters.where, schema: database.schema, owner }, "tidemark consumers running");

    let stopping: Promise<void> | undefined;
    return {
      handlers: names,
      metrics,
      database,
      metricsAddress,
      stop() {
        stopping ??= lifecycle.close().then(() => log.info({ handlers: names }, "tidemark consumers stopped"));
        return stopping;
      },
    };
  } catch (e) {
    const cleaning = lifecycle.close();
    if (signal?.aborted) {
      // The sources' stop waits for a group join in flight (up to Kafka's session timeout): cut the
      // connections, once the cleanups have marked the sources stopping (so kafkajs does not restart them).
      setImmediate(() => sockets?.destroyAll(new StartAbortedError()));
    }
    await cleaning;
    throw e;
  }
}

/**
 * `step`, or a rejection as soon as `signal` aborts: a start waiting on Kafka (kafkajs retries a
 * connection for half a minute) gives way to a stop at once; the cleanups close what the step opened.
 */
function unlessAborted<T>(step: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return step;
  if (signal.aborted) {
    step.catch(() => {});
    return Promise.reject(new StartAbortedError());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new StartAbortedError());
    signal.addEventListener("abort", onAbort, { once: true });
    step.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** A start given up because its signal aborted (the process is stopping). */
class StartAbortedError extends Error {
  constructor() {
    super("start aborted: the process is stopping");
    this.name = "StartAbortedError";
  }
}
