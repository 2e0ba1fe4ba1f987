/**
 * Opens the storage a process works on: PostgreSQL and an S3 API server when they are configured,
 * or the embedded pair (PGlite and the local file system under a data directory) when neither is.
 * An embedded data directory is locked to one process: PGlite is one session in one process, and
 * two processes on the same files would corrupt them.
 */
import { readFileSync } from "node:fs";
import { mkdir, open, readFile, rm } from "node:fs/promises";
import path from "node:path";
import type { ListenConnector } from "./commit-listener.js";
import { createDatabase, type Database } from "./db/database.js";
import { FsObjectStore } from "./fs-object-store.js";
import { newRequestCounts, type ObjectStore } from "./object-store.js";
import { S3ObjectStore } from "./s3-object-store.js";
import { ConfigError, parse, parseSettings, type Setting } from "./settings.js";

/**
 * The storage settings, one table for every process (spread into the server's, the relay's and
 * the consumers' tables): PostgreSQL and S3 when they are set (the services mode), or the embedded
 * data directory when neither is. Which mode they select is {@link backendMode}'s to say.
 */
export const STORAGE_SETTINGS = {
  dataDir: { env: "TIDEMARK_DATA_DIR", default: ".tidemark", parse: parse.string, description: "Where the embedded mode keeps its database and objects (used when no PostgreSQL/S3 is configured)." },
  pgUrl: { env: "TIDEMARK_PG_URL", default: "", defaultLabel: "unset (embedded mode)", parse: parse.url, description: "PostgreSQL connection URL (postgres://user:password@host:port/database). With the S3 settings, selects the services mode.", secret: true },
  pgSslCa: {
    env: "TIDEMARK_PG_SSL_CA",
    default: "",
    defaultLabel: "unset (what TIDEMARK_PG_URL says)",
    parse: parse.string,
    description: "PEM CA file that signed PostgreSQL's certificate: every connection then uses TLS and verifies the server (`sslmode=verify-full` unless the URL sets another `sslmode`; the URL's own `sslrootcert` works too). docs/SECURITY.md.",
  },
  pgSchema: { env: "TIDEMARK_PG_SCHEMA", aliases: ["EVENT_STORE_SEQUENCE_SCHEMA"], default: "tidemark", parse: parse.string, description: "PostgreSQL schema holding Tidemark's tables." },
  s3Endpoint: { env: "TIDEMARK_S3_ENDPOINT", default: "", defaultLabel: "unset (embedded mode)", parse: parse.url, description: "S3 API endpoint (path-style), e.g. http://127.0.0.1:9000." },
  s3Bucket: { env: "TIDEMARK_S3_BUCKET", aliases: ["EVENT_STORE_BUCKET"], default: "tidemark-events", parse: parse.string, description: "Bucket holding the events; created on first start." },
  s3Region: { env: "TIDEMARK_S3_REGION", default: "us-east-1", parse: parse.string, description: "Region used to sign S3 requests." },
  s3AccessKey: { env: "TIDEMARK_S3_ACCESS_KEY", default: "", defaultLabel: "unset", parse: parse.string, description: "S3 access key id.", secret: true },
  s3SecretKey: { env: "TIDEMARK_S3_SECRET_KEY", default: "", defaultLabel: "unset", parse: parse.string, description: "S3 secret access key.", secret: true },
  s3Ca: { env: "TIDEMARK_S3_CA", default: "", defaultLabel: "unset (the system's roots)", parse: parse.string, description: "PEM CA file that signed the certificate of an `https://` TIDEMARK_S3_ENDPOINT (a private S3 API server); the certificate is always verified." },
  s3RequestTimeoutMs: { env: "TIDEMARK_S3_REQUEST_TIMEOUT_MS", default: 5000, parse: parse.int(100, 600_000), description: "Timeout of one S3 request; a LIST page gets ten times as long (some S3 servers read a whole prefix to answer one)." },
} satisfies Record<string, Setting<unknown>>;

/** The parsed storage settings. */
export type StorageConfig = ReturnType<typeof loadStorageConfig>;

/** Parses the storage settings; throws ConfigError naming every bad variable. */
export function loadStorageConfig(env: Readonly<Record<string, string | undefined>>) {
  return parseSettings(STORAGE_SETTINGS, env);
}

/**
 * The URL every PostgreSQL connection of a process uses: TIDEMARK_PG_URL with TIDEMARK_PG_SSL_CA
 * applied (`sslrootcert`, and `sslmode=verify-full` when the URL names no mode).
 */
export function pgConnectionUrl(settings: { readonly pgUrl?: string | undefined; readonly pgSslCa?: string | undefined }): string {
  const raw = settings.pgUrl ?? "";
  if (raw === "" || (settings.pgSslCa ?? "") === "") return raw;
  const url = new URL(raw);
  if (!url.searchParams.has("sslmode")) url.searchParams.set("sslmode", "verify-full");
  url.searchParams.set("sslrootcert", settings.pgSslCa!);
  return url.toString();
}

function readS3Ca(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new ConfigError(`invalid configuration:\n  TIDEMARK_S3_CA: cannot read ${file}: ${(e as Error).message}`);
  }
}

/** What {@link openBackends} needs to know. */
export interface BackendSettings {
  readonly pgUrl?: string | undefined;
  readonly pgSslCa?: string | undefined;
  readonly pgSchema: string;
  readonly pgPoolSize: number;
  readonly s3Endpoint?: string | undefined;
  readonly s3Bucket: string;
  readonly s3Region: string;
  readonly s3AccessKey?: string | undefined;
  readonly s3SecretKey?: string | undefined;
  readonly s3Ca?: string | undefined;
  readonly s3RequestTimeoutMs: number;
  readonly dataDir: string;
}

/** Open storage. `listen` is what a CommitListener needs for this database. */
export interface Backends {
  readonly mode: "services" | "embedded";
  readonly database: Database<any>;
  readonly objects: ObjectStore;
  readonly listen: string | ListenConnector;
  /** Human-readable description for the start-up banner. */
  readonly where: string;
  /** The embedded data directory (absolute), when embedded. */
  readonly dataDir?: string;
  close(): Promise<void>;
}

/** Thrown when another live process holds an embedded data directory. */
export class DataDirInUseError extends Error {
  override name = "DataDirInUseError";
  constructor(
    readonly dataDir: string,
    readonly pid: number,
  ) {
    super(
      `the data directory ${dataDir} is in use by process ${pid}: an embedded data directory can be opened by one process only. ` +
        "Talk to the running process over gRPC (tidemark stream, tail, status --addr HOST:PORT), or stop it first.",
    );
  }
}

/** Name of the lock file in an embedded data directory; it holds the owner's pid. */
export const DATA_DIR_LOCK = "LOCK";

/**
 * Takes the data directory's lock file (created exclusively, holding our pid). A lock left by a
 * process that no longer runs (kill -9, power loss) is taken over. Returns the release function.
 */
async function lockDataDir(root: string): Promise<() => Promise<void>> {
  await mkdir(root, { recursive: true });
  const file = path.join(root, DATA_DIR_LOCK);
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(file, "wx");
      try {
        await handle.writeFile(`${process.pid}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      return async () => {
        // Only our own lock: a process that took over a lock we lost must keep it.
        if ((await readFile(file, "utf8").catch(() => "")).trim() === String(process.pid)) await rm(file, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || attempt >= 3) throw e;
      const pid = Number((await readFile(file, "utf8").catch(() => "")).trim());
      // Our own pid means this process already opened it: a second PGlite on the same files.
      if (Number.isSafeInteger(pid) && pid > 0 && (pid === process.pid || isAlive(pid))) throw new DataDirInUseError(root, pid);
      await rm(file, { force: true });
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Which mode the settings select; throws ConfigError for a half-configured set, naming what is
 * missing. `objects: false` is for a process that needs only PostgreSQL of the services (a
 * consumer process: its events come from Kafka).
 */
export function backendMode(
  settings: Pick<BackendSettings, "pgUrl" | "s3Endpoint" | "s3AccessKey" | "s3SecretKey">,
  needs: { readonly objects: boolean } = { objects: true },
): "services" | "embedded" {
  const has = (v: string | undefined) => v !== undefined && v !== "";
  if (!has(settings.pgUrl) && !has(settings.s3Endpoint)) return "embedded";
  const wanted: Array<[string, string | undefined]> = [["TIDEMARK_PG_URL", settings.pgUrl]];
  if (needs.objects || has(settings.s3Endpoint)) {
    wanted.push(["TIDEMARK_S3_ENDPOINT", settings.s3Endpoint], ["TIDEMARK_S3_ACCESS_KEY", settings.s3AccessKey], ["TIDEMARK_S3_SECRET_KEY", settings.s3SecretKey]);
  }
  const missing = wanted.filter(([, v]) => !has(v)).map(([name]) => name);
  if (missing.length > 0) {
    throw new ConfigError(
      `invalid configuration:\n  ${missing.join(", ")} must be set too: with external services Tidemark needs PostgreSQL and an S3 API server (leave all unset for the embedded mode)`,
    );
  }
  return "services";
}

/** Where the services-mode storage is, for banners and logs (no credentials). */
export function describeServices(settings: Pick<BackendSettings, "pgUrl" | "pgSchema" | "s3Endpoint" | "s3Bucket">): string {
  const pg = new URL(settings.pgUrl!);
  const s3 = settings.s3Endpoint !== undefined && settings.s3Endpoint !== "" ? `, S3 ${settings.s3Endpoint}/${settings.s3Bucket}` : "";
  return `PostgreSQL ${pg.host}${pg.pathname} (schema ${settings.pgSchema})${s3}`;
}

/** An object store for a process that was not given one: every use says which settings are missing. */
class MissingObjectStore implements ObjectStore {
  readonly requests = newRequestCounts();
  private fail(): never {
    throw new ConfigError("invalid configuration:\n  this needs the object store: set TIDEMARK_S3_ENDPOINT, TIDEMARK_S3_ACCESS_KEY and TIDEMARK_S3_SECRET_KEY");
  }
  createIfAbsent(): Promise<never> {
    return Promise.reject(this.fail());
  }
  get(): Promise<never> {
    return Promise.reject(this.fail());
  }
  read(): Promise<never> {
    return Promise.reject(this.fail());
  }
  list(): Promise<never> {
    return Promise.reject(this.fail());
  }
  ensureReady(): Promise<never> {
    return Promise.reject(this.fail());
  }
  close(): void {}
}

/**
 * Opens the configured storage — every part of every process gets its storage here (see
 * {@link backendMode}). `objects: false`: a services-mode process that reads only PostgreSQL (a
 * consumer process) may run without the S3 settings; its object store then refuses every use.
 */
export async function openBackends(settings: BackendSettings, needs: { readonly objects: boolean } = { objects: true }): Promise<Backends> {
  if (backendMode(settings, needs) === "services") {
    const database = createDatabase<any>({ url: pgConnectionUrl(settings), schema: settings.pgSchema, poolSize: settings.pgPoolSize });
    const s3 = settings.s3Endpoint !== undefined && settings.s3Endpoint !== "";
    const objects: ObjectStore = s3
      ? new S3ObjectStore({
          endpoint: settings.s3Endpoint!,
          bucket: settings.s3Bucket,
          region: settings.s3Region,
          accessKeyId: settings.s3AccessKey!,
          secretAccessKey: settings.s3SecretKey!,
          requestTimeoutMs: settings.s3RequestTimeoutMs,
          ...(settings.s3Ca === undefined || settings.s3Ca === "" ? {} : { ca: readS3Ca(settings.s3Ca) }),
        })
      : new MissingObjectStore();
    return {
      mode: "services",
      database,
      objects,
      listen: pgConnectionUrl(settings),
      where: describeServices(settings),
      async close() {
        objects.close();
        await database.close();
      },
    };
  }
  const root = path.resolve(settings.dataDir);
  const unlock = await lockDataDir(root);
  let database;
  try {
    // Loaded here: PGlite's module costs a services-mode process a few hundred ms of its start.
    const { createEmbeddedDatabase } = await import("./db/embedded-database.js");
    database = await createEmbeddedDatabase<any>(path.join(root, "pg"), settings.pgSchema);
  } catch (e) {
    await unlock();
    throw e;
  }
  const objects = new FsObjectStore(path.join(root, "objects", settings.s3Bucket));
  return {
    mode: "embedded",
    database,
    objects,
    listen: database.listen,
    where: `embedded: PGlite in ${path.join(root, "pg")}, objects in ${path.join(root, "objects", settings.s3Bucket)}`,
    dataDir: root,
    async close() {
      try {
        await database.close();
      } finally {
        await unlock();
      }
    },
  };
}
