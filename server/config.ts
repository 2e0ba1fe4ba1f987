/**
 * Configuration of the server, parsed once from the environment, typed and frozen. Every setting
 * is documented in docs/CONFIGURATION.md, generated from this table.
 */
import { backendMode, ORIGIN_SETTINGS, parse, parseSettings, type Setting } from "../core/index.js";
import { DEFAULT_LIMITS } from "./limits.js";

/** The settings the server reads. */
export const SERVER_SETTINGS = {
  grpcAddr: { env: "TIDEMARK_GRPC_ADDR", default: "127.0.0.1:50051", parse: parse.hostPort, description: "Address the gRPC server listens on (port 0 picks a free port)." },
  dataDir: { env: "TIDEMARK_DATA_DIR", default: ".tidemark", parse: parse.string, description: "Where the embedded mode keeps its database and objects (used when no PostgreSQL/S3 is configured)." },
  pgUrl: { env: "TIDEMARK_PG_URL", default: "", defaultLabel: "unset (embedded mode)", parse: parse.url, description: "PostgreSQL connection URL (postgres://user:password@host:port/database). With the S3 settings, selects the services mode.", secret: true },
  pgSchema: { env: "TIDEMARK_PG_SCHEMA", aliases: ["EVENT_STORE_SEQUENCE_SCHEMA"], default: "tidemark", parse: parse.string, description: "PostgreSQL schema holding Tidemark's tables." },
  pgPoolSize: { env: "TIDEMARK_PG_POOL_SIZE", default: 10, parse: parse.int(1, 1000), description: "Maximum PostgreSQL connections of the process." },
  s3Endpoint: { env: "TIDEMARK_S3_ENDPOINT", default: "", defaultLabel: "unset (embedded mode)", parse: parse.url, description: "S3 API endpoint (path-style), e.g. http://127.0.0.1:9000." },
  s3Bucket: { env: "TIDEMARK_S3_BUCKET", aliases: ["EVENT_STORE_BUCKET"], default: "tidemark-events", parse: parse.string, description: "Bucket holding the event streams; created on first start." },
  s3Region: { env: "TIDEMARK_S3_REGION", default: "us-east-1", parse: parse.string, description: "Region used to sign S3 requests." },
  s3AccessKey: { env: "TIDEMARK_S3_ACCESS_KEY", default: "", defaultLabel: "unset", parse: parse.string, description: "S3 access key id.", secret: true },
  s3SecretKey: { env: "TIDEMARK_S3_SECRET_KEY", default: "", defaultLabel: "unset", parse: parse.string, description: "S3 secret access key.", secret: true },
  s3RequestTimeoutMs: { env: "TIDEMARK_S3_REQUEST_TIMEOUT_MS", default: 5000, parse: parse.int(100, 600_000), description: "Timeout of one S3 request." },
  writeDeadlineMs: { env: "TIDEMARK_WRITE_DEADLINE_MS", default: 25_000, parse: parse.int(100, 3_600_000), description: "A reserved sequence slot not written within this time is resolved by the sweeper (found and committed, or voided)." },
  sweepIntervalMs: { env: "TIDEMARK_SWEEP_INTERVAL_MS", default: 2000, parse: parse.int(50, 600_000), description: "How often the sweeper looks for expired reservations." },
  maxMessageBytes: { env: "TIDEMARK_MAX_MESSAGE_BYTES", default: DEFAULT_LIMITS.maxMessageBytes, parse: parse.int(1024, 64 * 1024 * 1024), description: "Largest gRPC request message." },
  maxDataBytes: { env: "TIDEMARK_MAX_DATA_BYTES", default: DEFAULT_LIMITS.maxDataBytes, parse: parse.int(64, 16 * 1024 * 1024), description: "Largest event `data` or instance `properties`, as JSON bytes." },
  maxDataDepth: { env: "TIDEMARK_MAX_DATA_DEPTH", default: DEFAULT_LIMITS.maxDataDepth, parse: parse.int(1, 256), description: "Deepest nesting of objects and arrays in `data`." },
  maxEventsPerAppend: { env: "TIDEMARK_MAX_EVENTS_PER_APPEND", default: DEFAULT_LIMITS.maxEventsPerAppend, parse: parse.int(1, 10_000), description: "Most events in one AppendEvents call." },
  maxMetadataEntries: { env: "TIDEMARK_MAX_METADATA_ENTRIES", default: DEFAULT_LIMITS.maxMetadataEntries, parse: parse.int(0, 1024), description: "Most metadata entries per event." },
  maxMetadataValueLength: { env: "TIDEMARK_MAX_METADATA_VALUE_LENGTH", default: DEFAULT_LIMITS.maxMetadataValueLength, parse: parse.int(1, 65_536), description: "Longest metadata value, in characters." },
  eventCacheSize: { env: "TIDEMARK_EVENT_CACHE_SIZE", default: 10_000, parse: parse.int(0, 10_000_000), description: "Decoded events kept in memory (events are immutable, so the cache is never stale)." },
  shutdownGraceMs: { env: "TIDEMARK_SHUTDOWN_GRACE_MS", default: 10_000, parse: parse.int(0, 600_000), description: "On SIGTERM, in-flight calls get this long before they are cancelled." },
  metricsAddr: { env: "TIDEMARK_METRICS_ADDR", default: "", parse: parse.hostPort, description: "Serve Prometheus metrics at http://ADDR/metrics (host:port); unset means no metrics endpoint." },
  logLevel: { env: "TIDEMARK_LOG_LEVEL", default: "info", parse: parse.oneOf("trace", "debug", "info", "warn", "error", "fatal", "silent"), description: "Log level of the JSON logs on stdout." },
  ...ORIGIN_SETTINGS,
} satisfies Record<string, Setting<unknown>>;

/** The server's parsed configuration. */
export type ServerConfig = ReturnType<typeof loadServerConfig>;

/** Parses the server configuration; throws ConfigError naming every bad variable. */
export function loadServerConfig(env: Readonly<Record<string, string | undefined>> = process.env) {
  const config = parseSettings(SERVER_SETTINGS, env);
  backendMode(config);
  return config;
}
