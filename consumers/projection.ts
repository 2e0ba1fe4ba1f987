/**
 * The instances projection (docs/CONTRACT.md C6): applies instance events to the `instances` read model
 * with the same pure fold the server uses (core/domain/instance.ts evolveInstance), so a read from
 * the model and a strong read cannot disagree. Rows only move forward in version: an event at or
 * below a row's version is already reflected (a redelivery, or a rebuild got there first).
 */
import { sql, type Kysely, type Transaction } from "kysely";
import { evolveInstance, INSTANCE_AGGREGATE_TYPE, INITIAL_INSTANCE_STATE, type InstanceEvent, type InstanceState } from "../core/domain/instance.js";
import { PoisonError } from "./failures.js";
import { defineHandler, type ConsumedEvent, type Handler } from "./handler.js";
import type { ConsumerDatabase, ConsumerTables, InstanceRow } from "./schema.js";

/** Registry name of the instances projection. */
export const INSTANCES_PROJECTION_HANDLER = "projection:instances";
/** Name of the projection in `projection_positions` and `projection_rebuilds`. */
export const INSTANCES_PROJECTION = "instances";
/** The live read-model table. */
export const INSTANCES_TABLE = "instances";

/** An instance event with its aggregate id, as the projection applies it. */
export interface InstanceProjectionEvent extends InstanceEvent {
  readonly aggregateId: string;
}

/** The address parts of an instance aggregate id `{database}/{class_name}/{instance_id}`. */
export function parseInstanceAggregateId(aggregateId: string): { database: string; className: string; instanceId: string } {
  const parts = aggregateId.split("/");
  if (parts.length !== 3 || parts.some((p) => p.length === 0)) {
    throw new PoisonError(`instance aggregate id ${JSON.stringify(aggregateId)} is not {database}/{class_name}/{instance_id}`);
  }
  return { database: parts[0]!, className: parts[1]!, instanceId: parts[2]! };
}

/**
 * Applies events (any aggregates, each aggregate's events in seq order) to `table` inside `tx`:
 * locks the affected rows, folds with evolveInstance, skips events at or below a row's version,
 * and upserts. Returns the number of rows written.
 */
export async function projectInstanceEvents(tx: Transaction<any> | Kysely<any>, table: string, events: readonly InstanceProjectionEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  const byAggregate = new Map<string, InstanceProjectionEvent[]>();
  for (const event of events) {
    const list = byAggregate.get(event.aggregateId);
    if (list === undefined) byAggregate.set(event.aggregateId, [event]);
    else list.push(event);
  }
  const addresses = [...byAggregate.keys()].map((id) => ({ id, ...parseInstanceAggregateId(id) }));
  const { rows } = await sql<InstanceRow>`
    select database, class_name, instance_id, properties, version, deleted, created_at, updated_at, global_position
    from ${sql.id(table)}
    where (database, class_name, instance_id) in (${sql.join(addresses.map((a) => sql`(${a.database}, ${a.className}, ${a.instanceId})`))})
    for update`.execute(tx);
  const current = new Map(rows.map((r) => [`${r.database}/${r.class_name}/${r.instance_id}`, r]));

  const writes: Array<{ address: (typeof addresses)[number]; state: Extract<InstanceState, { exists: true }> }> = [];
  for (const address of addresses) {
    const row = current.get(address.id);
    let state: InstanceState = row === undefined ? INITIAL_INSTANCE_STATE : toState(row);
    const from = row === undefined ? 0 : Number(row.version);
    for (const event of byAggregate.get(address.id)!) {
      if (event.seq <= from || (state.exists && event.seq <= state.version)) continue;
      state = evolveInstance(state, event);
    }
    if (state.exists && state.version > from) writes.push({ address, state });
  }
  if (writes.length === 0) return 0;
  await sql`
    insert into ${sql.id(table)} as t (database, class_name, instance_id, properties, version, deleted, created_at, updated_at, global_position)
    values ${sql.join(
      writes.map(
        ({ address, state }) =>
          sql`(${address.database}, ${address.className}, ${address.instanceId}, ${JSON.stringify(state.properties)}::jsonb,
            ${state.version}::bigint, ${state.deleted}, ${state.createdAt}::timestamptz, ${state.updatedAt}::timestamptz, ${state.globalPosition}::bigint)`,
      ),
    )}
    on conflict (database, class_name, instance_id) do update set
      properties = excluded.properties, version = excluded.version, deleted = excluded.deleted,
      created_at = excluded.created_at, updated_at = excluded.updated_at, global_position = excluded.global_position
    where t.version < excluded.version`.execute(tx);
  return writes.length;
}

function toState(row: InstanceRow): InstanceState {
  return {
    exists: true,
    deleted: row.deleted,
    properties: row.properties,
    version: Number(row.version),
    globalPosition: Number(row.global_position),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/**
 * The live projection handler: each instance event is applied to `instances` in the registry's
 * transaction, so the row and "done" commit together (C1) behind the ordering guard (C2); events
 * that arrive together are applied as a group in one such transaction.
 */
export function instancesProjection(): Handler<ConsumerTables> {
  return defineHandler<ConsumerTables>({
    name: INSTANCES_PROJECTION_HANDLER,
    aggregateTypes: [INSTANCE_AGGREGATE_TYPE],
    async handle(event, tx) {
      await projectInstanceEvents(tx, INSTANCES_TABLE, [projectionEvent(event)]);
    },
    // A group is one locking read and one upsert, whatever its size.
    async handleBatch(events, tx) {
      await projectInstanceEvents(tx, INSTANCES_TABLE, events.map(projectionEvent));
    },
  });
}

function projectionEvent(event: ConsumedEvent): InstanceProjectionEvent {
  return {
    aggregateId: event.aggregateId,
    eventType: event.eventType,
    seq: event.seq,
    globalPosition: event.globalPosition,
    occurredAt: event.occurredAt,
    data: event.data,
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
