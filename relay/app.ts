/**
 * Builds and runs a relay: database (migrated), object store, commit listener, Kafka publisher,
 * lease and metrics. Every instance competes for one lease per relay name: the holder publishes,
 * the others stand by and take over within the lease when it dies (docs/CONTRACT.md R5).
 */
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import { randomBytes } from "node:crypto";
import {
  CommitListener,
  kafkaSecurity,
  pgConnectionUrl,
  CommitLogTailer,
  commitLogOf,
  createLogger,
  type Database,
  Lifecycle,
  type ListenConnector,
  type Logger,
  type MetricsServer,
  migrateToLatest,
  type ObjectStore,
  openBackends,
  type Registry,
  type RelayTables,
  sleep,
  startMetricsServer,
  writeSideView,
} from "../core/index.js";
import type { RelayConfig } from "./config.js";
import { EventReader } from "./event-reader.js";
import { createRelayKafka, ensureTopics, KafkaPublisher, type TopicSpec } from "./kafka-publisher.js";
import { RelayLease } from "./relay-lease.js";
import { RelayMetrics } from "./relay-metrics.js";
import { RelayPump, type RelayHooks, type TermOutcome } from "./relay-pump.js";
import { readCheckpoint, relayLag, type RelayLag } from "./relay-repository.js";
import { TopicRouter } from "./topic-router.js";

/** Parts a caller (tests) may supply instead of the configured ones. */
export interface RelayOverrides {
  readonly log?: Logger;
  readonly objects?: ObjectStore;
  readonly database?: Database<RelayTables>;
  /** How to LISTEN for commits on `database` (a URL or a connector); default: what opened it. */
  readonly listen?: string | ListenConnector;
  /** Crash injection at named steps: after read, after produce (before checkpoint), after checkpoint. */
  readonly hooks?: RelayHooks;
  /** Identity of this instance in the lease row (default host:pid:random). */
  readonly holder?: string;
  /** Registry for the relay's metrics (default: a fresh one, with process metrics when served). */
  readonly registry?: Registry;
  /** Called whenever {@link RelayStatus.readiness} changes (a process's health entry follows it). */
  readonly onReadiness?: (readiness: RelayReadiness) => void;
}

/**
 * Whether a relay instance does its job: `publishing` (it holds the lease and its topics exist, so
 * Kafka answered), `standby` (the database says another instance holds the lease), `waiting` (it
 * cannot tell, or cannot publish yet: the database or Kafka unreachable, a term just ended).
 */
export type RelayReadiness = "waiting" | "standby" | "publishing";

/** What a running relay reports about itself. */
export interface RelayStatus {
  /** True while this instance holds the lease. */
  readonly active: boolean;
  readonly token: number | undefined;
  /** Events this instance got acknowledged by Kafka since it started. */
  readonly published: number;
  /** The checkpoint: as written by this instance while active, as last read (every second) otherwise. */
  readonly checkpoint: number;
  /** Position publication is blocked at (an unreadable event), if any. */
  readonly blockedAt: number | undefined;
  /** True once this instance created (or found) every topic. */
  readonly topicsReady: boolean;
  /** How the latest lease term ended. */
  readonly lastTerm: TermOutcome | "error" | undefined;
  /** Whether this instance does its job now: publishing, standing by, or waiting (see {@link RelayReadiness}). */
  readonly readiness: RelayReadiness;
}

/** A running relay. */
export interface RelayHandle {
  readonly name: string;
  readonly holder: string;
  readonly metrics: RelayMetrics;
  /** `host:port` of the /metrics endpoint when TIDEMARK_METRICS_ADDR is set. */
  readonly metricsAddress: string | undefined;
  readonly database: Database<RelayTables>;
  /** The object store it reads events from. */
  readonly objects: ObjectStore;
  readonly topics: TopicSpec;
  status(): RelayStatus;
  /** Stops the loop (the batch in flight is finished and checkpointed), disconnects, releases the lease. */
  stop(): Promise<void>;
}

/** How often the lag metrics are refreshed. */
const LAG_REFRESH_MS = 1000;

/** Starts a relay described by `config`; it publishes once it holds the lease. */
export async function startRelay(config: RelayConfig, overrides: RelayOverrides = {}): Promise<RelayHandle> {
  const log = overrides.log ?? createLogger("tidemark-relay", config.logLevel);
  const holder = overrides.holder ?? `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  const lifecycle = new Lifecycle(log);
  // What the caller did not supply comes from the one storage opener and is closed on stop.
  const opened = overrides.database === undefined || overrides.objects === undefined ? await openBackends(config) : undefined;
  if (opened !== undefined) lifecycle.defer("storage", () => opened.close());
  const database: Database<RelayTables> = overrides.database ?? opened!.database;
  const objects = overrides.objects ?? opened!.objects;

  const metrics = overrides.registry === undefined ? new RelayMetrics(config.metricsAddr !== "") : new RelayMetrics(false, overrides.registry);
  let metricsServer: MetricsServer | undefined;
  try {
    const applied = await migrateWithRetry(database, log);
    if (applied.length > 0) log.info({ migrations: applied, schema: database.schema }, "database migrated");
    if (config.metricsAddr !== "") {
      const server = await startMetricsServer(config.metricsAddr, [metrics.registry]);
      lifecycle.defer("metrics", () => server.close());
      metricsServer = server;
    }
  } catch (e) {
    await lifecycle.close();
    throw e;
  }

  // Request timeouts follow the lease, so that one produce call settles well within it (R5).
  const kafkaSettings = {
    brokers: config.kafkaBrokers,
    clientId: config.kafkaClientId,
    requestTimeoutMs: clamp(Math.round(config.leaseMs / 10), 250, 30_000),
    connectionTimeoutMs: clamp(Math.round(config.leaseMs / 20), 250, 10_000),
    security: kafkaSecurity(config),
  };
  const kafka = createRelayKafka(kafkaSettings, log);
  const publisher = new KafkaPublisher(kafka, kafkaSettings, log);
  const router = new TopicRouter(config.routes, config.topic);
  const topics: TopicSpec = {
    topics: [...new Set([...router.topics(), config.deadLetterTopic])],
    partitions: config.partitions,
    replication: config.replication,
    retentionMs: config.retentionMs,
  };
  let topicsReady = false;
  let readiness: RelayReadiness = "waiting";
  const setReadiness = (next: RelayReadiness) => {
    if (next === readiness) return;
    readiness = next;
    log.info({ relay: config.name, readiness: next }, "relay readiness");
    overrides.onReadiness?.(next);
  };

  const listener = new CommitListener(overrides.listen ?? opened?.listen ?? pgConnectionUrl(config), database.schema, log);
  lifecycle.defer("commit listener", () => listener.close());
  await listener.start();
  const lease = new RelayLease(database.db, config.name, holder, config.leaseMs, log);
  const pump = new RelayPump({
    db: database.db,
    name: config.name,
    reader: new EventReader(new CommitLogTailer(commitLogOf(writeSideView(database.db)), listener, config.pollMs), objects, config.batchSize, config.readConcurrency),
    publisher,
    router,
    lease,
    metrics,
    log,
    hooks: overrides.hooks ?? {},
    readAhead: config.readAheadBatches,
    ensureTopics: async () => {
      if (topicsReady) return;
      await ensureTopics(kafka, topics, log);
      topicsReady = true;
      if (lease.token !== undefined) setReadiness("publishing");
    },
  });

  const stopping = new AbortController();
  // Renewals come often enough that a publish (bounded by publisher.maxSendMs) always fits.
  const renewEveryMs = Math.max(100, Math.round(config.leaseMs / 8));
  let lastTerm: RelayStatus["lastTerm"];

  const keepLease = async (term: AbortController, stall: AbortController): Promise<void> => {
    // The local deadline passing ends the term even when a renewal hangs on the network; a step
    // that hangs (a client call that never settles) ends it too, and the lease is left to expire.
    const watchdog = setInterval(() => {
      if (lease.remainingMs() <= 0) term.abort();
      const step = pump.oldestPending();
      const pendingMs = step === undefined ? 0 : Math.round(performance.now() - step.since);
      if (step !== undefined && !term.signal.aborted && pendingMs > config.stallMs) {
        log.error({ relay: config.name, step: step.what, pendingMs, stallMs: config.stallMs }, "relay term stalled: a step has not settled; the lease is left to expire and the term given up");
        metrics.stalls.inc();
        lease.drop();
        stall.abort();
        term.abort();
      }
    }, 50);
    try {
      while (!term.signal.aborted) {
        await sleep(renewEveryMs, term.signal);
        if (term.signal.aborted) break;
        if ((await lease.renew()) === "lost") term.abort();
      }
    } finally {
      clearInterval(watchdog);
    }
  };

  const supervise = async (): Promise<void> => {
    while (!stopping.signal.aborted) {
      let acquired = false;
      try {
        acquired = await lease.acquire();
      } catch (e) {
        log.warn({ err: e }, "could not reach the database for the relay lease; retrying");
        setReadiness("waiting");
        await sleep(renewEveryMs, stopping.signal);
        continue;
      }
      if (!acquired) {
        setReadiness("standby");
        await sleep(renewEveryMs, stopping.signal);
        continue;
      }
      // Publishing only once Kafka has answered in some term: until then the term is still waiting.
      setReadiness(topicsReady ? "publishing" : "waiting");
      metrics.leaseAcquired.inc();
      metrics.active.set(1);
      const term = new AbortController();
      const stall = new AbortController();
      const keeper = keepLease(term, stall);
      let outcome: RelayStatus["lastTerm"];
      try {
        // A stalled term is left behind: its hung step may settle later, and every step it takes
        // after that checks the ended term (and the checkpoint is fenced by the new token).
        const givenUp = new Promise<"stalled">((resolve) => stall.signal.addEventListener("abort", () => resolve("stalled"), { once: true }));
        outcome = await Promise.race([pump.run(stopping.signal, term.signal), givenUp]);
      } catch (e) {
        log.error({ err: e }, "relay term failed");
        outcome = "error";
      }
      lastTerm = outcome;
      term.abort();
      setReadiness("waiting");
      // A new term gets a new producer (a new producer id): a stepped-down relay sends nothing more.
      await publisher.reset();
      metrics.active.set(0);
      if (stopping.signal.aborted || outcome === "error") {
        await lease.release();
      } else {
        metrics.leaseLost.inc();
        lease.drop();
        log.warn({ relay: config.name, outcome }, "relay lost the lease; standing by");
      }
      // Not awaited before: a hung renewal must not hold the term open (the watchdog ended it).
      void keeper;
      if (outcome === "error") await sleep(1000, stopping.signal);
    }
  };

  let lagPosition = 0;
  let lastLag: RelayLag | undefined;
  const refreshLag = async (): Promise<void> => {
    try {
      lagPosition = (await readCheckpoint(database.db, config.name)).position;
      const lag = await relayLag(database.db, lagPosition);
      lastLag = lag;
      metrics.lagSeconds.set(lag.oldestAgeMs / 1000);
      metrics.lagPositions.set(lag.positions);
      metrics.headPosition.set(lag.head);
      if (lease.token === undefined) metrics.checkpoint.set(lagPosition);
    } catch (e) {
      log.debug({ err: e }, "lag refresh failed");
    }
  };
  await refreshLag();
  const lagTimer = setInterval(() => void refreshLag(), LAG_REFRESH_MS);
  let publishedAtLastLog = 0;
  const logTimer = setInterval(() => {
    const published = pump.progress.published;
    log.info(
      {
        relay: config.name,
        active: lease.token !== undefined,
        token: lease.token,
        checkpoint: lagPosition,
        publishedSinceLastLog: published - publishedAtLastLog,
        head: lastLag?.head,
        lagPositions: lastLag?.positions,
        lagSeconds: lastLag === undefined ? undefined : lastLag.oldestAgeMs / 1000,
        blockedAt: pump.progress.blockedAt,
      },
      "relay progress",
    );
    publishedAtLastLog = published;
  }, config.logIntervalMs);
  lagTimer.unref();
  logTimer.unref();

  const running = supervise();
  log.info({ relay: config.name, holder, schema: database.schema, topics: topics.topics, metrics: metricsServer?.address }, "tidemark relay started");

  let stopped: Promise<void> | undefined;
  return {
    name: config.name,
    holder,
    metrics,
    metricsAddress: metricsServer?.address,
    database,
    objects,
    topics,
    status: () => ({
      active: lease.token !== undefined,
      token: lease.token,
      published: pump.progress.published,
      checkpoint: lease.token !== undefined ? pump.progress.checkpoint : lagPosition,
      blockedAt: pump.progress.blockedAt,
      topicsReady,
      lastTerm,
      readiness,
    }),
    stop() {
      stopped ??= (async () => {
        stopping.abort();
        await running;
        clearInterval(lagTimer);
        clearInterval(logTimer);
        await publisher.reset();
        await lifecycle.close();
        log.info({ relay: config.name }, "tidemark relay stopped");
      })();
      return stopped;
    },
  };
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

/**
 * Kysely's Migrator introspects every table of the database before it takes its lock, so DDL in
 * another schema at that moment (a projection swapping tables) can fail it spuriously: try again.
 */
async function migrateWithRetry(database: Database<RelayTables>, log: Logger): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await migrateToLatest(database.db, database.schema);
    } catch (e) {
      if (attempt >= 5) throw e;
      log.warn({ err: e, attempt }, "database migration failed; retrying");
      await sleep(200 * attempt);
    }
  }
}
