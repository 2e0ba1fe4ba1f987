/**
 * Opens the storage a process works on: PostgreSQL and an S3 API server when they are configured,
 * or the embedded pair (PGlite and the local file system under a data directory) when neither is.
 * An embedded data directory is locked to one process: PGlite is one session in one process, and
 * two processes on the same files would corrupt them.
 */
import { mkdir, open, readFile, rm } from "node:fs/promises";
import path from "node:path";
import type { ListenConnector } from "./commit-listener.js";
import { createDatabase, type Database } from "./db/database.js";
import { FsObjectStore } from "./fs-object-store.js";
import type { ObjectStore } from "./object-store.js";
import { S3ObjectStore } from "./s3-object-store.js";
import { ConfigError } from "./settings.js";

/** What {@link openBackends} needs to know. */
export interface BackendSettings {
  readonly pgUrl?: string | undefined;
  readonly pgSchema: string;
  readonly pgPoolSize: number;
  readonly s3Endpoint?: string | undefined;
  readonly s3Bucket: string;
  readonly s3Region: string;
  readonly s3AccessKey?: string | undefined;
  readonly s3SecretKey?: string | undefined;
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

/** Which mode the settings select; throws ConfigError for a half-configured set. */
export function backendMode(settings: Pick<BackendSettings, "pgUrl" | "s3Endpoint" | "s3AccessKey" | "s3SecretKey">): "services" | "embedded" {
  const has = (v: string | undefined) => v !== undefined && v !== "";
  if (!has(settings.pgUrl) && !has(settings.s3Endpoint)) return "embedded";
  const missing = [
    ["TIDEMARK_PG_URL", settings.pgUrl],
    ["TIDEMARK_S3_ENDPOINT", settings.s3Endpoint],
    ["TIDEMARK_S3_ACCESS_KEY", settings.s3AccessKey],
    ["TIDEMARK_S3_SECRET_KEY", settings.s3SecretKey],
  ].filter(([, v]) => !has(v)).map(([name]) => name);
  if (missing.length > 0) {
    throw new ConfigError(
      `invalid configuration:\n  ${missing.join(", ")} must be set too: with external services Tidemark needs PostgreSQL and an S3 API server (leave all unset for the embedded mode)`,
    );
  }
  return "services";
}

/** Opens the configured backends (see {@link backendMode}). */
export async function openBackends(settings: BackendSettings): Promise<Backends> {
  if (backendMode(settings) === "services") {
    const database = createDatabase<any>({ url: settings.pgUrl!, schema: settings.pgSchema, poolSize: settings.pgPoolSize });
    const objects = new S3ObjectStore({
      endpoint: settings.s3Endpoint!,
      bucket: settings.s3Bucket,
      region: settings.s3Region,
      accessKeyId: settings.s3AccessKey!,
      secretAccessKey: settings.s3SecretKey!,
      requestTimeoutMs: settings.s3RequestTimeoutMs,
    });
    const pg = new URL(settings.pgUrl!);
    return {
      mode: "services",
      database,
      objects,
      listen: settings.pgUrl!,
      where: `PostgreSQL ${pg.host}${pg.pathname} (schema ${settings.pgSchema}), S3 ${settings.s3Endpoint}/${settings.s3Bucket}`,
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
