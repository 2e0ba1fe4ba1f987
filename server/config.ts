/**
 * Configuration of the server, parsed once from the environment, typed and frozen. Every setting
 * is documented in docs/CONFIGURATION.md, generated from this table.
 */
import { backendMode, ConfigError, DEFAULT_SNAPSHOT_EVERY, LOG_TAIL_DEFAULTS, ORIGIN_SETTINGS, parse, parseSettings, PROCESS_SETTINGS, STORAGE_SETTINGS, type Setting } from "../core/index.js";
import { DEFAULT_LIMITS } from "./limits.js";

/** The server's own settings (beside the storage, process and origin settings it shares). */
export const SERVER_OWN_SETTINGS = {
  grpcAddr: { env: "TIDEMARK_GRPC_ADDR", default: "127.0.0.1:50051", parse: parse.hostPort, description: "Address the gRPC server listens on (port 0 picks a free port)." },
  pgAnalyzeYoungTables: { env: "TIDEMARK_PG_ANALYZE_YOUNG_TABLES", default: true, parse: parse.bool, description: "Analyse event_log, stream_heads and segments whenever one has doubled in size since its last analysis, for this process's first million commits, so the SQL functions' cached plans follow a young store's growth before autovacuum's first rounds (docs/OPERATIONS.md \"PostgreSQL\")." },
  pgPoolSize: { env: "TIDEMARK_PG_POOL_SIZE", default: 10, parse: parse.int(1, 1000), description: "Maximum PostgreSQL connections of the server (the relay and the consumers have pools of their own: TIDEMARK_RELAY_PG_POOL_SIZE, TIDEMARK_CONSUMER_PG_POOL_SIZE)." },
  writeDeadlineMs: { env: "TIDEMARK_WRITE_DEADLINE_MS", default: 25_000, parse: parse.int(100, 3_600_000), description: "A write not finished within this time is resolved by the sweeper: its segment is found in S3 and committed, or closed with a void segment." },
  sweepIntervalMs: { env: "TIDEMARK_SWEEP_INTERVAL_MS", default: 2000, parse: parse.int(50, 600_000), description: "How often the sweeper looks for expired reservations." },
  segmentMaxBytes: { env: "TIDEMARK_SEGMENT_MAX_BYTES", default: 4 * 1024 * 1024, parse: parse.int(1024, 256 * 1024 * 1024), description: "Most bytes of events in one segment (one S3 object per group commit; a single larger append still gets a segment of its own)." },
  segmentMaxEvents: { env: "TIDEMARK_SEGMENT_MAX_EVENTS", default: 2000, parse: parse.int(1, 1_000_000), description: "Most events in one segment (a single larger append still gets a segment of its own)." },
  segmentMaxInFlight: { env: "TIDEMARK_SEGMENT_MAX_IN_FLIGHT", default: 2, parse: parse.int(1, 256), description: "Segment PUTs in flight at once (a flush gives its place back once its segment is in S3, before its commit); appends arriving meanwhile queue and go into the next segment together." },
  segmentLingerMs: { env: "TIDEMARK_SEGMENT_LINGER_MS", default: 0, parse: parse.int(0, 10_000), description: "Extra wait before a segment takes what is queued: fewer, larger PUTs for more latency (0: none; at low load an append is one PUT long)." },
  maxMessageBytes: { env: "TIDEMARK_MAX_MESSAGE_BYTES", default: DEFAULT_LIMITS.maxMessageBytes, parse: parse.int(1024, 64 * 1024 * 1024), description: "Largest gRPC request message." },
  maxDataBytes: { env: "TIDEMARK_MAX_DATA_BYTES", default: DEFAULT_LIMITS.maxDataBytes, parse: parse.int(64, 16 * 1024 * 1024), description: "Largest event `data` or instance `properties`, as JSON bytes." },
  maxDataDepth: { env: "TIDEMARK_MAX_DATA_DEPTH", default: DEFAULT_LIMITS.maxDataDepth, parse: parse.int(1, 256), description: "Deepest nesting of objects and arrays in `data`." },
  maxEventsPerAppend: { env: "TIDEMARK_MAX_EVENTS_PER_APPEND", default: DEFAULT_LIMITS.maxEventsPerAppend, parse: parse.int(1, 10_000), description: "Most events in one AppendEvents call, and in one AppendToStreams call over all its streams." },
  maxStreamsPerCall: { env: "TIDEMARK_MAX_STREAMS_PER_CALL", default: DEFAULT_LIMITS.maxStreamsPerCall, parse: parse.int(1, 10_000), description: "Most aggregates one AppendToStreams call names: its written streams and consistency checks together." },
  maxMetadataEntries: { env: "TIDEMARK_MAX_METADATA_ENTRIES", default: DEFAULT_LIMITS.maxMetadataEntries, parse: parse.int(0, 1024), description: "Most metadata entries per event." },
  maxMetadataValueLength: { env: "TIDEMARK_MAX_METADATA_VALUE_LENGTH", default: DEFAULT_LIMITS.maxMetadataValueLength, parse: parse.int(1, 65_536), description: "Longest metadata value, in characters." },
  maxSubscribeFilterEntries: { env: "TIDEMARK_MAX_SUBSCRIBE_FILTER_ENTRIES", default: DEFAULT_LIMITS.maxSubscribeFilterEntries, parse: parse.int(1, 10_000), description: "Most entries in each list of a Subscribe filter (event_types, aggregate_types, databases, kinds)." },
  subscribeCheckpointPositions: { env: "TIDEMARK_SUBSCRIBE_CHECKPOINT_POSITIONS", default: LOG_TAIL_DEFAULTS.checkpointPositions, parse: parse.int(1, 100_000_000), description: "A filtered Subscribe sends a checkpoint once it has passed this many global positions since its last message, so a client resumes without rescanning them." },
  subscribeCheckpointMs: { env: "TIDEMARK_SUBSCRIBE_CHECKPOINT_MS", default: LOG_TAIL_DEFAULTS.checkpointMs, parse: parse.int(10, 3_600_000), description: "A filtered Subscribe that has passed positions but sent nothing for this long sends a checkpoint (checked at each read of the log)." },
  snapshotEvery: { env: "TIDEMARK_SNAPSHOT_EVERY", default: DEFAULT_SNAPSHOT_EVERY, parse: parse.int(0, 1_000_000), description: "An instance fold that applied at least this many events stores a snapshot of its state, so later commands and STRONG reads fold only the events after it (docs/STORAGE.md, Snapshots); 0 turns snapshots off." },
  eventCacheSize: { env: "TIDEMARK_EVENT_CACHE_SIZE", default: 10_000, parse: parse.int(0, 10_000_000), description: "Decoded events kept in memory (events are immutable, so the cache is never stale); the lines of the latest writes kept for their first read are bounded by it too (at most 4 096; 0 keeps none)." },
  auth: { env: "TIDEMARK_AUTH", default: "", defaultLabel: "`tokens` in the services mode, `off` in the embedded mode", parse: (raw: string) => (raw === "" ? raw : parse.oneOf("tokens", "off")(raw)), description: "`tokens`: every call carries `authorization: Bearer <token>` (docs/SECURITY.md); `off`: no authentication (a warning at every start when the gRPC address is not loopback)." },
  authRecheckMs: { env: "TIDEMARK_AUTH_RECHECK_MS", default: 1000, parse: parse.int(50, 60_000), description: "How often an open Subscribe stream re-checks its token; a revoked or expired token ends the stream within this time (every new call checks at once)." },
  tlsCert: { env: "TIDEMARK_TLS_CERT", default: "", defaultLabel: "unset (plain text)", parse: parse.string, description: "PEM certificate chain of the gRPC port; with TIDEMARK_TLS_KEY it turns TLS on. Re-read on SIGHUP without dropping the port." },
  tlsKey: { env: "TIDEMARK_TLS_KEY", default: "", defaultLabel: "unset", parse: parse.string, description: "PEM private key of TIDEMARK_TLS_CERT." },
  tlsClientCa: { env: "TIDEMARK_TLS_CLIENT_CA", default: "", defaultLabel: "unset (no client certificates)", parse: parse.string, description: "PEM CA bundle: every client must present a certificate it signed (mTLS), or the handshake fails." },
  masterKeyFile: { env: "TIDEMARK_MASTER_KEY_FILE", default: "", defaultLabel: "unset (events naming a subject are refused)", parse: parse.string, description: "File of master keys that wrap the data subjects' keys (erasure by crypto-shredding, docs/SECURITY.md): one `{key id} {64 hex digits}` per line, the first wraps new keys, all unwrap. Needed to append events with a `subject`; `tidemark keys rotate` rewraps under the first." },
  subjectKeyCacheMs: { env: "TIDEMARK_SUBJECT_KEY_CACHE_MS", default: 2000, parse: parse.int(0, 600_000), description: "How long a server keeps a subject's unwrapped data key in memory; after ForgetSubject on another server, this one serves the subject's data at most this much longer." },
  upcasters: { env: "TIDEMARK_UPCASTERS", default: "", defaultLabel: "unset (no upcasters)", parse: parse.string, description: "Path of a JavaScript module exporting the server's upcasters (`export const upcasters = [{ eventType, fromVersion, upcast }]`): the instance fold and ReadStream/Subscribe with `latest_schema` read every event type they cover in its latest schema version (docs/CONSUMERS.md, Schema evolution)." },
  consoleAddr: {
    env: "TIDEMARK_CONSOLE_ADDR",
    default: "",
    defaultLabel: "`off` in the services mode, `127.0.0.1:50052` in the embedded mode",
    parse: (raw: string) => (raw === "off" ? raw : parse.hostPort(raw)),
    description: "Address of the web console (docs/CONSOLE.md: the page and its gRPC-Web endpoint, over the same services and token checks as the gRPC port), or `off`. The embedded default is skipped with a warning when its port is taken.",
  },
  shutdownGraceMs: { env: "TIDEMARK_SHUTDOWN_GRACE_MS", default: 10_000, parse: parse.int(0, 600_000), description: "On SIGTERM, in-flight calls get this long before they are cancelled." },
} satisfies Record<string, Setting<unknown>>;

/** Every setting the server reads. */
export const SERVER_SETTINGS = { ...STORAGE_SETTINGS, ...SERVER_OWN_SETTINGS, ...PROCESS_SETTINGS, ...ORIGIN_SETTINGS } satisfies Record<string, Setting<unknown>>;

/** The server's parsed configuration. */
export type ServerConfig = ReturnType<typeof loadServerConfig>;

/** Parses the server configuration; throws ConfigError naming every bad variable. */
export function loadServerConfig(env: Readonly<Record<string, string | undefined>> = process.env) {
  const config = parseSettings(SERVER_SETTINGS, env);
  backendMode(config);
  if ((config.tlsCert === "") !== (config.tlsKey === "")) throw new ConfigError("invalid configuration:\n  TIDEMARK_TLS_CERT, TIDEMARK_TLS_KEY: set both (TLS) or neither (plain text)");
  if (config.tlsClientCa !== "" && config.tlsCert === "") throw new ConfigError("invalid configuration:\n  TIDEMARK_TLS_CLIENT_CA: needs TIDEMARK_TLS_CERT and TIDEMARK_TLS_KEY (client certificates are checked over TLS only)");
  return config;
}

/** The authentication in force: TIDEMARK_AUTH, or by default `tokens` in the services mode and `off` embedded. */
export function authMode(config: Pick<ServerConfig, "auth" | "pgUrl" | "s3Endpoint" | "s3AccessKey" | "s3SecretKey">): "tokens" | "off" {
  if (config.auth === "tokens" || config.auth === "off") return config.auth;
  return backendMode(config) === "services" ? "tokens" : "off";
}

/** The embedded mode's console address when TIDEMARK_CONSOLE_ADDR is unset. */
export const DEFAULT_CONSOLE_ADDR = "127.0.0.1:50052";

/**
 * Where the web console listens: TIDEMARK_CONSOLE_ADDR, or by default off in the services mode and
 * {@link DEFAULT_CONSOLE_ADDR} embedded (`explicit` false: a taken port is a warning, not a failure).
 */
export function consoleAddress(config: Pick<ServerConfig, "consoleAddr" | "pgUrl" | "s3Endpoint" | "s3AccessKey" | "s3SecretKey">): { readonly address: string; readonly explicit: boolean } | undefined {
  if (config.consoleAddr === "off") return undefined;
  if (config.consoleAddr !== "") return { address: config.consoleAddr, explicit: true };
  return backendMode(config) === "embedded" ? { address: DEFAULT_CONSOLE_ADDR, explicit: false } : undefined;
}
