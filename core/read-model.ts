/**
 * The instances read model as the server reads it and the projection keeps its position: the rows
 * of the `instances` table for EVENTUAL and AT_LEAST_POSITION reads, and how far the projection has
 * applied the store (read-your-writes). Beside the tables (core/db/schema.ts), so the server reads
 * them without importing consumers/, which writes them (consumers/projection.ts).
 */
import { sql, type Kysely } from "kysely";
import type { ConsumerDatabase, InstanceRow } from "./db/schema.js";
import { INSTANCE_AGGREGATE_TYPE, type ReadModelInstance } from "./domain/instance.js";
import { CODE_POINT_ORDER } from "./event-log.js";

/** Registry name of the instances projection. */
export const INSTANCES_PROJECTION_HANDLER = "projection:instances";
/** Name of the projection in `projection_positions` and `projection_rebuilds`. */
export const INSTANCES_PROJECTION = "instances";
/** The live read-model table. */
export const INSTANCES_TABLE = "instances";

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
  /** Instances of a class after `afterInstanceId` in code-point order of ids, at most `limit`. */
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
        .where(sql`instance_id ${CODE_POINT_ORDER}`, ">", afterInstanceId);
      if (!includeDeleted) query = query.where("deleted", "=", false);
      // The strong listing's order (core/event-log.ts CODE_POINT_ORDER), so their pages mix.
      const rows = await query.orderBy(sql`instance_id ${CODE_POINT_ORDER}`).limit(limit).execute();
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

/**
 * The first global position above `from` (and at most `to`) holding an instance event the
 * projection has not settled (applied, skipped as stale or dead-lettered), or undefined when every
 * one up to `to` is settled. Uses the commit log, so it is exact whatever the Kafka partitioning.
 */
async function firstUnsettled(db: Kysely<ConsumerDatabase>, handler: string, from: number, to: number): Promise<number | undefined> {
  const { rows } = await sql<{ position: number }>`
    select e.global_position as position
    from event_log e
    left join consumer_watermarks w
      on w.handler = ${handler} and w.aggregate_type = e.aggregate_type and w.aggregate_id = e.aggregate_id
    left join processed_events pe on pe.handler = ${handler} and pe.event_id = e.event_id
    where e.state = 'committed' and e.aggregate_type = ${INSTANCE_AGGREGATE_TYPE}
      and e.global_position > ${from}::bigint and e.global_position <= ${to}::bigint
      and coalesce(w.applied_seq, 0) < e.seq
      and (pe.state is null or pe.state not in ('done', 'skipped_stale', 'dead_lettered'))
    order by e.global_position
    limit 1`.execute(db);
  return rows[0] === undefined ? undefined : Number(rows[0].position);
}

/** The projection's stored applied position (0 before the first advance). */
export async function storedPosition(db: Kysely<ConsumerDatabase>, projection = INSTANCES_PROJECTION): Promise<number> {
  const row = await db.selectFrom("projection_positions").select("applied_position").where("projection", "=", projection).executeTakeFirst();
  return row?.applied_position ?? 0;
}

/**
 * True when the read model reflects every instance event up to `position`: the stored position
 * covers it, or the commit log shows every instance event in between settled. False when
 * `position` is not committed yet.
 */
export async function reflectsPosition(db: Kysely<ConsumerDatabase>, position: number, handler = INSTANCES_PROJECTION_HANDLER): Promise<boolean> {
  const stored = await storedPosition(db);
  if (stored >= position) return true;
  const head = await db.selectFrom("global_counter").select("position").where("id", "=", 1).executeTakeFirst();
  if (head === undefined || head.position < position) return false;
  return (await firstUnsettled(db, handler, stored, position)) === undefined;
}

/**
 * Moves the stored applied position forward over the settled prefix of the commit log and
 * returns it. The counter is read first: every position at or below it is committed and visible
 * to the next statement, so nothing can appear behind the new position later.
 */
export async function advancePosition(db: Kysely<ConsumerDatabase>, handler = INSTANCES_PROJECTION_HANDLER, projection = INSTANCES_PROJECTION): Promise<number> {
  const head = await db.selectFrom("global_counter").select("position").where("id", "=", 1).executeTakeFirst();
  const stored = await storedPosition(db, projection);
  if (head === undefined || head.position <= stored) return stored;
  const blocked = await firstUnsettled(db, handler, stored, head.position);
  const next = blocked === undefined ? head.position : blocked - 1;
  if (next <= stored) return stored;
  const row = await db
    .insertInto("projection_positions")
    .values({ projection, applied_position: next })
    .onConflict((oc) =>
      oc.column("projection").doUpdateSet({
        applied_position: sql`greatest(projection_positions.applied_position, excluded.applied_position)`,
        updated_at: sql`now()`,
      }),
    )
    .returning("applied_position")
    .executeTakeFirstOrThrow();
  return row.applied_position;
}
