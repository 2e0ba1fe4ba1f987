/**
 * The commands of the `tidemark` CLI: their help (options, settings, examples). The behaviour is in
 * run-*.ts; main.ts dispatches.
 */
import type { CommandSpec, OptionSpec } from "./args.js";

const dataDir: OptionSpec = { type: "string", env: "TIDEMARK_DATA_DIR", value: "DIR", description: "Embedded data directory, used when no PostgreSQL/S3 is configured (default ./.tidemark)." };
const grpcAddr: OptionSpec = { type: "string", env: "TIDEMARK_GRPC_ADDR", value: "HOST:PORT", description: "Address the gRPC server listens on (default 127.0.0.1:50051; port 0 picks one)." };
const metricsAddr: OptionSpec = { type: "string", env: "TIDEMARK_METRICS_ADDR", value: "HOST:PORT", description: "Serve Prometheus metrics of the whole process at http://HOST:PORT/metrics (default off)." };
const logLevel: OptionSpec = { type: "string", env: "TIDEMARK_LOG_LEVEL", value: "LEVEL", description: "JSON log level on stdout: trace, debug, info, warn, error, fatal, silent (default info)." };
const addr: OptionSpec = { type: "string", env: "TIDEMARK_GRPC_ADDR", value: "HOST:PORT", description: "The server to talk to (default 127.0.0.1:50051)." };
const tlsCa: OptionSpec = { type: "string", env: "TIDEMARK_TLS_CA", value: "FILE", description: "Talk TLS, trusting the server certificate this PEM CA signed (default: plain text)." };
const tlsCert: OptionSpec = { type: "string", env: "TIDEMARK_TLS_CERT", value: "FILE", description: "PEM client certificate, for a server that requires one (mTLS); implies TLS." };
const tlsKey: OptionSpec = { type: "string", env: "TIDEMARK_TLS_KEY", value: "FILE", description: "PEM private key of --tls-cert." };
const token: OptionSpec = { type: "string", env: "TIDEMARK_TOKEN", value: "TOKEN", description: "Bearer token sent with every call (`tidemark token create`); prefer the variable, which stays out of the process list." };
const clientOptions = { "tls-ca": tlsCa, "tls-cert": tlsCert, "tls-key": tlsKey, token };
const json: OptionSpec = { type: "boolean", description: "One JSON document per line (events as the envelope's protobuf JSON, proto field names)." };
const consumer: OptionSpec = { type: "string", multiple: true, value: "MODULE", description: "Also run the handlers a module exports (default export, or `handlers`), beside the projection." };

const STORAGE = ["TIDEMARK_PG_URL", "TIDEMARK_PG_SCHEMA", "TIDEMARK_S3_ENDPOINT", "TIDEMARK_S3_BUCKET", "TIDEMARK_S3_ACCESS_KEY", "TIDEMARK_S3_SECRET_KEY"];
const CONSUMERS = ["TIDEMARK_CONSUMER_LEASE_SECONDS", "TIDEMARK_CONSUMER_HEARTBEAT_SECONDS", "TIDEMARK_CONSUMER_MAX_ATTEMPTS", "TIDEMARK_CONSUMER_CONCURRENCY", "TIDEMARK_CONSUMER_GROUP_PREFIX", "TIDEMARK_CONSUMER_TOPICS"];
const ORIGIN = ["ENABLE_EVENT_SOURCING", "ENABLE_PROCESSED_EVENT_REGISTRY", "EVENT_STORE_SEQUENCE_ALLOCATOR_MODE (refused when they would switch a guarantee off)"];

/** Every command, in help order. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: "start",
    summary: "server, relay and projection in one process (what `npm start` runs)",
    description:
      "Runs the gRPC server, the relay and the instances projection in one process. With no service variables set (the embedded mode) everything lives in TIDEMARK_DATA_DIR: a PGlite database and the event files; the relay's role is played in process, feeding the consumers the commit log with the same registry, ordering guard, retries and dead letters as with Kafka. With TIDEMARK_PG_URL, TIDEMARK_S3_* and TIDEMARK_KAFKA_BROKERS set, the same three parts run against the real services; with PostgreSQL and S3 but no Kafka, the server runs alone and the banner says that the relay and the projection need TIDEMARK_KAFKA_BROKERS.\n\nAn embedded data directory is opened by one process only: use the client commands (stream, tail, status) against the running server.",
    positionals: [],
    options: { "data-dir": dataDir, "grpc-addr": grpcAddr, "metrics-addr": metricsAddr, "log-level": logLevel, consumer },
    settings: [...STORAGE, "TIDEMARK_KAFKA_BROKERS", ...CONSUMERS, ...ORIGIN],
    examples: ["tidemark start", "tidemark start --grpc-addr 0.0.0.0:50051 --metrics-addr 127.0.0.1:9464", "tidemark start --consumer ./audit-handler.ts"],
  },
  {
    name: "server",
    summary: "the gRPC server alone (scale out: several behind a load balancer)",
    description:
      "Runs the gRPC server only. In the services mode run as many as you need against the same PostgreSQL and S3; the relay and the consumers run as their own processes. In the embedded mode the projection does not run (EVENTUAL and AT_LEAST_POSITION reads wait for it): prefer `tidemark start`.",
    positionals: [],
    options: { "data-dir": dataDir, "grpc-addr": grpcAddr, "metrics-addr": metricsAddr, "log-level": logLevel },
    settings: [...STORAGE, "TIDEMARK_WRITE_DEADLINE_MS", "TIDEMARK_SHUTDOWN_GRACE_MS", ...ORIGIN],
    examples: ["tidemark server --grpc-addr 0.0.0.0:50051"],
  },
  {
    name: "relay",
    summary: "the commit log → Kafka relay (needs PostgreSQL, S3 and Kafka)",
    description:
      "Publishes every committed event to Kafka, at least once, in per-aggregate order (docs/RELAY.md). Run two with the same TIDEMARK_RELAY_NAME on different hosts: one publishes, the other takes over within the lease.",
    positionals: [],
    options: { name: { type: "string", env: "TIDEMARK_RELAY_NAME", value: "NAME", description: "Relays with one name share a lease and a checkpoint (default `default`)." }, "metrics-addr": metricsAddr, "log-level": logLevel },
    settings: [...STORAGE, "TIDEMARK_KAFKA_BROKERS", "TIDEMARK_RELAY_TOPIC", "TIDEMARK_RELAY_ROUTES", "TIDEMARK_RELAY_PARTITIONS", "TIDEMARK_RELAY_REPLICATION", "TIDEMARK_RELAY_LEASE_MS", ...ORIGIN],
    examples: ["tidemark relay --name default --metrics-addr 0.0.0.0:9465"],
  },
  {
    name: "consumer",
    summary: "the instances projection and/or your handler modules",
    description:
      "Runs consumers: `projection` (the instances read model) and/or modules exporting handlers (a default export or `handlers`: one handler or a list, see docs/CONSUMERS.md). In the services mode they consume Kafka; in the embedded mode this process opens the data directory itself and reads the commit log, so no other process may hold it (to run handlers beside the server, use `tidemark start --consumer MODULE`).",
    positionals: [{ name: "name", description: "`projection`, or the path of a handler module (.ts or .js); several may be given.", rest: true }],
    options: { "data-dir": dataDir, "metrics-addr": metricsAddr, "log-level": logLevel },
    settings: [...STORAGE, "TIDEMARK_KAFKA_BROKERS", ...CONSUMERS, ...ORIGIN],
    examples: ["tidemark consumer projection", "tidemark consumer ./audit-handler.ts", "tidemark consumer projection ./audit-handler.ts"],
  },
  {
    name: "migrate",
    summary: "create or upgrade the database schema (and the bucket)",
    description:
      "Runs every pending migration in TIDEMARK_PG_SCHEMA and creates the bucket (or, embedded, the data directory). Every process also migrates at start; run this before rolling out a new version to many servers. Idempotent.\n\nThe first run on a store also creates its bootstrap admin token (principal `admin`, every database, every scope) and prints it once on stdout — never in a log; keep it in a secret store, create narrower tokens with `tidemark token create`, and revoke it when done (docs/SECURITY.md).",
    positionals: [],
    options: { "data-dir": dataDir },
    settings: [...STORAGE],
    examples: ["tidemark migrate"],
  },
  {
    name: "rebuild",
    summary: "replay the store into a fresh read model and swap it in (resumable), or retake the instance snapshots",
    description:
      "Rebuilds a projection from the store — the commit log in global order and the event objects, not Kafka — into a fresh table, then swaps it in atomically (docs/CONSUMERS.md). Progress is stored with every batch: stop it (Ctrl-C) and run it again to resume. With the real services it runs beside the live projection; an embedded data directory must not be open in another process, so stop `tidemark start` first. Shows a progress bar on a terminal, progress lines otherwise.\n\n`tidemark rebuild snapshots` drops every instance snapshot (corrupt ones, those of an older fold version) and takes a fresh one of every instance stream of at least TIDEMARK_SNAPSHOT_EVERY events, folded from its first event (docs/STORAGE.md, Snapshots). Snapshots are derived data, so it is safe beside running servers and to run again after a stop.",
    positionals: [{ name: "projection", description: "`instances` (also accepted: `projection:instances`), or `snapshots`." }],
    options: { "data-dir": dataDir, "batch-size": { type: "string", value: "N", description: "Commit-log entries (or, for snapshots, instance streams) per batch (default 500)." } },
    settings: [...STORAGE, "TIDEMARK_SNAPSHOT_EVERY"],
    examples: ["tidemark rebuild instances", "tidemark rebuild snapshots"],
  },
  {
    name: "prune",
    summary: "one housekeeping pass: delete done registry rows past the retention",
    description:
      "Deletes `done` rows of the processed-event registry older than TIDEMARK_CONSUMER_RETENTION_HOURS, in batches of TIDEMARK_CONSUMER_PRUNE_BATCH_SIZE (docs/CONTRACT.md C7); the ordering watermarks stay, so order remains safe. Consumer processes run the same pass every TIDEMARK_CONSUMER_PRUNE_INTERVAL_SECONDS; this command is for a one-off pass (e.g. from cron with the housekeeping of consumers turned elsewhere). Prints how many rows it deleted.",
    positionals: [],
    options: { "data-dir": dataDir },
    settings: [...STORAGE, "TIDEMARK_CONSUMER_RETENTION_HOURS", "TIDEMARK_CONSUMER_PRUNE_BATCH_SIZE"],
    examples: ["tidemark prune", "TIDEMARK_CONSUMER_RETENTION_HOURS=24 tidemark prune"],
  },
  {
    name: "token",
    summary: "bearer tokens: create | list | revoke ID (docs/SECURITY.md)",
    description:
      "Manages the bearer tokens clients send as `authorization: Bearer <token>` when TIDEMARK_AUTH=tokens (the services mode's default). Like `migrate`, it opens the storage itself (the PostgreSQL credentials are the stronger secret). `create` prints the new token once on stdout — it is stored only as a hash and cannot be shown again; `list` shows ids, principals, grants, expiry and revocation, never secrets; `revoke ID` takes effect on the next call to any server, and ends open Subscribe streams within TIDEMARK_AUTH_RECHECK_MS.\n\nScopes: read (ReadStream, GetStreamHead, GetInstance, ListInstances, GetProcessingStatus, the dead-letter listings, GetSubjectKey, the InspectionService views but the relay's), write (AppendEvents, AppendToStreams and the instance commands), subscribe (Subscribe, `tidemark tail`), admin (replaying and discarding dead letters, ForgetSubject, the relay's status; with the database `*`: every database and the aggregates of none).",
    positionals: [
      { name: "action", description: "create, list or revoke" },
      { name: "id", description: "The token id to revoke (the 16 hex digits after `tm_`, as `list` shows).", optional: true },
    ],
    options: {
      "data-dir": dataDir,
      principal: { type: "string", value: "NAME", description: "create: who the token is for; recorded as the actor of its writes." },
      database: { type: "string", multiple: true, value: "DB", description: "create: a database the token may touch (`*`: every database, needs the admin scope)." },
      scope: { type: "string", value: "SCOPES", description: "create: comma-separated read, write, subscribe, admin." },
      "type-prefix": { type: "string", value: "PREFIX", description: "create: only aggregate types starting with this (default every type)." },
      expires: { type: "string", value: "WHEN", description: "create: a duration (30d, 12h, 90m) or an ISO date (default: never)." },
      json,
    },
    settings: [...STORAGE],
    examples: ["tidemark token create --principal billing --database acme --scope read,write --expires 30d", "tidemark token list", "tidemark token revoke 3f9c2a1b7d4e5f60"],
  },
  {
    name: "keys",
    summary: "data subjects' keys: rotate (rewrap them under the current master key)",
    description:
      "Erasure by crypto-shredding (docs/SECURITY.md \"Erasure\"): the data of events naming a subject is sealed with the subject's key, stored wrapped by a master key from TIDEMARK_MASTER_KEY_FILE. `rotate` rewraps every live subject key that another master key wrapped under the file's first (current) key; the events are not touched. Rotation: put a new key on the file's first line and keep the old ones below, restart the servers, run `tidemark keys rotate`, then remove the old keys from the file (docs/OPERATIONS.md). Prints how many keys it rewrapped. Like `migrate`, it opens the storage itself.",
    positionals: [{ name: "action", description: "rotate" }],
    options: { "data-dir": dataDir },
    settings: [...STORAGE, "TIDEMARK_MASTER_KEY_FILE"],
    examples: ["tidemark keys rotate"],
  },
  {
    name: "recover",
    summary: "rebuild the commit log from the segments in S3 alone (resumable)",
    description:
      "Rebuilds every table the servers and the relay need — stream heads, the commit log, segment numbers, the counters — from the segments in the bucket, after the schema was dropped or restored from an older backup (docs/OPERATIONS.md, \"Recovering from S3 alone\"). Migrates the schema when it is missing. Refuses while a server serves the schema (servers hold a shared advisory lock; recover takes it exclusively, and servers do not start during a recovery). Progress is stored with every segment: stop it (Ctrl-C) and run it again to resume; a run after a finished one settles only the segments the bucket gained. Events the log did not hold get new global positions, after the ones it kept: the relay publishes them again, and consumers skip what their registry has. Progress on stderr (segments done/total, events, rate), a summary on stdout. Exit 0 done, 1 refused or a clash between the bucket and committed slots.",
    positionals: [],
    options: {},
    settings: [...STORAGE],
    examples: ["tidemark recover", "tidemark recover && tidemark verify"],
  },
  {
    name: "verify",
    summary: "read-only audit: the commit log and the segments in S3 agree (exit 0 clean, 1 anomalies)",
    description:
      "Checks, without writing anything, that every committed event is in its segment at the bytes the log says, that its content hashes to its content_hash, that each stream's hash chain (previous_hash, docs/STORAGE.md) links every event to its predecessor, that every event of every segment is in the log and every void segment's number void in the log, and that streams are contiguous (void slots explained by a void segment or a reservation that was never written). Prints a report (--json: one JSON document); progress on stderr on long runs. Exit 0 clean, 1 anomalies found, 2 usage.",
    positionals: [],
    options: { json: { type: "boolean", description: "The report as one JSON document." }, "max-anomalies": { type: "string", value: "N", description: "List at most N anomalies in the report (default 100; all are counted)." } },
    settings: [...STORAGE],
    examples: ["tidemark verify", "tidemark verify --json > report.json"],
  },
  {
    name: "stream",
    summary: "print an aggregate's events (gRPC ReadStream)",
    description: "Prints the committed events of one aggregate in sequence order, from a running server.",
    positionals: [
      { name: "aggregate_type", description: "e.g. Instance" },
      { name: "aggregate_id", description: "e.g. demo/Person/ada" },
    ],
    options: {
      addr,
      from: { type: "string", value: "SEQ", description: "First sequence number (default 1)." },
      max: { type: "string", value: "N", description: "At most N events (default all)." },
      json,
      ...clientOptions,
    },
    examples: ["tidemark stream Instance demo/Person/ada", "tidemark stream Order o-1 --json"],
  },
  {
    name: "tail",
    summary: "follow the global log (gRPC Subscribe)",
    description:
      "Prints committed events of the whole store in global order as they commit. By default it starts at the end (only new events); --after 0 replays everything first. Stops on Ctrl-C, after --limit events, or with --stop-at-caught-up once it has printed everything up to the head. The filters combine (every one must match) and run in the server, which skips what they leave out without reading it; the position printed on stderr at the end resumes with --after.",
    positionals: [],
    options: {
      addr,
      after: { type: "string", value: "POSITION", description: "Start after this global position (0 = from the beginning); default: the end." },
      type: { type: "string", multiple: true, value: "AGGREGATE_TYPE", description: "Only events of this aggregate type." },
      prefix: { type: "string", value: "EVENT_TYPE_PREFIX", description: "Only event types starting with this." },
      limit: { type: "string", value: "N", description: "Exit after N events." },
      database: { type: "string", multiple: true, value: "DATABASE", description: "Only events of aggregates in this database (the part of the id before its first `/`); default: every database the token may read." },
      "type-prefix": { type: "string", value: "AGGREGATE_TYPE_PREFIX", description: "Only aggregate types starting with this." },
      "event-type": { type: "string", multiple: true, value: "EVENT_TYPE", description: "Only events of this exact event type." },
      kind: { type: "string", multiple: true, value: "domain|command", description: "Only events of this kind." },
      "stop-at-caught-up": { type: "boolean", description: "Exit (0) once everything up to the head is printed, instead of following new commits." },
      json,
      ...clientOptions,
    },
    examples: ["tidemark tail", "tidemark tail --after 0 --type Instance --limit 10", "tidemark tail --after 0 --type-prefix Order. --event-type OrderPlaced --kind domain --stop-at-caught-up"],
  },
  {
    name: "status",
    summary: "what each consumer did with an event or a command (ProcessingService)",
    description:
      "Shows, per handler, the processing state of an event (by event_id) or of the events a command produced (by command_id): done, processing, retry scheduled, dead-lettered, skipped as stale, pending or pruned. Without --event or --command, the id is tried as an event id, then as a command id.",
    positionals: [{ name: "id", description: "An event_id or a command_id." }],
    options: {
      addr,
      event: { type: "boolean", description: "The id is an event_id." },
      command: { type: "boolean", description: "The id is a command_id." },
      json,
      ...clientOptions,
    },
    examples: ["tidemark status cmd-1", "tidemark status --event 6f3c…"],
  },
  {
    name: "dead-letters",
    summary: "dead-lettered and parked events: list | show | replay | discard (ProcessingService)",
    description:
      "Lists a handler's dead-lettered events and the later events of their aggregates parked behind them (docs/CONSUMERS.md), shows one with its message, replays them after a fix — one event, an aggregate's sequence in order (--type/--aggregate) or all of the handler's (--all) — or discards them (resolved without being applied; --reason is required and recorded with the token's principal). A replay marks the events and returns; the handler's running consumer applies them through the same claim, lease and ordering guard as any delivery; --wait watches them until each has an outcome (exit 1 when one failed again). list and show need the read scope, replay and discard the admin scope.",
    positionals: [
      { name: "action", description: "list, show, replay or discard" },
      { name: "handler", description: "The handler's name (list: optional, default every handler).", optional: true },
      { name: "event_id", description: "show, replay, discard: one event.", optional: true },
    ],
    options: {
      addr,
      type: { type: "string", value: "AGGREGATE_TYPE", description: "With --aggregate: one aggregate's events (list, replay, discard)." },
      aggregate: { type: "string", value: "AGGREGATE_ID", description: "With --type: one aggregate's events." },
      all: { type: "boolean", description: "replay, discard: every dead-lettered and parked event of the handler." },
      reason: { type: "string", value: "TEXT", description: "discard: why (required; recorded with who)." },
      wait: { type: "boolean", description: "replay: wait until the consumer recorded an outcome for each event." },
      replaying: { type: "boolean", description: "list: also events whose replay is requested or under way." },
      json,
      ...clientOptions,
    },
    examples: [
      "tidemark dead-letters list",
      "tidemark dead-letters show projection:instances 6f3c…",
      "tidemark dead-letters replay audit --type Order --aggregate acme/o-7 --wait",
      "tidemark dead-letters discard audit 6f3c… --reason \"duplicate of a corrected order\"",
    ],
  },
  {
    name: "stack",
    summary: "the local real services: up | down | status | env [--secure] (scripts/stack.sh)",
    description:
      "Runs scripts/stack.sh: `up` installs what is missing and starts PostgreSQL 15, Kafka 4 and S3Proxy 4 (no Docker), each with a secure face beside the plain one (TLS, SASL_SSL, HTTPS), `down` stops them, `status` shows them, `env` prints the export lines for their settings (`eval \"$(tidemark stack env)\"`), `env --secure` those for the secure faces. Other script commands pass through (docs/STACK.md).",
    positionals: [{ name: "action", description: "up, down, status or env (others: docs/STACK.md)", rest: true }],
    options: { secure: { type: "boolean", description: "With env: the settings of the secure faces (PostgreSQL over TLS, S3Proxy over HTTPS, Kafka SASL_SSL with SCRAM-SHA-256) and their CA files." } },
    examples: ["tidemark stack up", "eval \"$(tidemark stack env)\" && tidemark start"],
  },
];
