/**
 * Reads of the instances read model for the server's EVENTUAL and AT_LEAST_POSITION reads. It
 * implements the server's read-model port (server/services/instance-service.ts InstanceReadModel)
 * structurally, so neither side imports the other; the row shape both speak is core's
 * ReadModelInstance.
 */
import type { Kysely } from "kysely";
import type { ReadModelInstance } from "../core/domain/instance.js";
import { reflectsPosition } from "./projection.js";
import type { ConsumerDatabase, InstanceRow } from "./schema.js";

/** Options of {@link createInstanceReadModel}. */
export interface ReadModelOptions {
  /** Longest wait for a position, whatever the caller's deadline (default 10 s). */
  readonly maxWaitMs?: number;
  /** First poll interval while waiting; it doubles up to 25 ms (default 5 ms). */
  readonly pollMs?: number;
}

/** The read side of the instances projection. */
export interface InstanceReadModelReader {
  /** One instance (deleted ones included, flagged), or undefined when the model has none. */
  get(database: string, className: string, instanceId: string): Promise<ReadModelInstance | undefined>;
  /** Instances of a class after `afterInstanceId` in id order, at most `limit`. */
  list(database: string, className: string, afterInstanceId: string, limit: number, includeDeleted: boolean): Promise<ReadModelInstance[]>;
  /**
   * Resolves true once the model reflects every event up to `position`; false when `signal`
   * aborts or the maximum wait passes first.
   */
  waitForPosition(position: number, signal: AbortSignal): Promise<boolean>;
}

/** A reader of the `instances` table of `db`'s schema. */
export function createInstanceReadModel(db: Kysely<ConsumerDatabase>, options: ReadModelOptions = {}): InstanceReadModelReader {
  const maxWaitMs = options.maxWaitMs ?? 10_000;
  const firstPollMs = options.pollMs ?? 5;
  const columns = ["database", "class_name", "instance_id", "properties", "version", "deleted", "created_at", "updated_at", "global_position"] as const;
  return {
    async get(database, className, instanceId) {
      const row = await db
        .selectFrom("instances")
        .select(columns)
        .where("database", "=", database)
        .where("class_name", "=", className)
        .where("instance_id", "=", instanceId)
        .executeTakeFirst();
      return row === undefined ? undefined : toInstance(row);
    },
    async list(database, className, afterInstanceId, limit, includeDeleted) {
      let query = db
        .selectFrom("instances")
        .select(columns)
        .where("database", "=", database)
        .where("class_name", "=", className)
        .where("instance_id", ">", afterInstanceId);
      if (!includeDeleted) query = query.where("deleted", "=", false);
      const rows = await query.orderBy("instance_id").limit(limit).execute();
      return rows.map(toInstance);
    },
    async waitForPosition(position, signal) {
      const deadline = Date.now() + maxWaitMs;
      let pollMs = firstPollMs;
      for (;;) {
        if (await reflectsPosition(db, position)) return true;
        if (signal.aborted || Date.now() >= deadline) return false;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            signal.removeEventListener("abort", done);
            resolve();
          };
          const timer = setTimeout(done, Math.min(pollMs, Math.max(0, deadline - Date.now())));
          signal.addEventListener("abort", done, { once: true });
        });
        pollMs = Math.min(25, pollMs * 2);
      }
    },
  };
}

function toInstance(row: InstanceRow): ReadModelInstance {
  return {
    database: row.database,
    className: row.class_name,
    instanceId: row.instance_id,
    properties: row.properties,
    version: Number(row.version),
    deleted: row.deleted,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    globalPosition: Number(row.global_position),
  };
}
