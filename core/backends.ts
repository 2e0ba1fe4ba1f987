/**
 * Opens the storage a process works on: PostgreSQL and an S3 API server when they are configured,
 * or the embedded pair (PGlite and the local file system under a data directory) when neither is.
 */
import path from "node:path";
import type { ListenConnector } from "./commit-listener.js";
import { createDatabase, type Database } from "./db/database.js";
import { createEmbeddedDatabase } from "./db/embedded-database.js";
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
  close(): Promise<void>;
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
  const database = await createEmbeddedDatabase<any>(path.join(root, "pg"), settings.pgSchema);
  const objects = new FsObjectStore(path.join(root, "objects", settings.s3Bucket));
  return {
    mode: "embedded",
    database,
    objects,
    listen: database.listen,
    where: `embedded: PGlite in ${path.join(root, "pg")}, objects in ${path.join(root, "objects", settings.s3Bucket)}`,
    async close() {
      await database.close();
    },
  };
}
