/**
 * The instances projection (docs/CONTRACT.md C6): applies instance events to the `instances` read model
 * with the same pure fold the server uses (core/domain/instance.ts evolveInstance), so a read from
 * the model and a strong read cannot disagree. Rows only move forward in version: an event at or
 * below a row's version is already reflected (a redelivery, or a rebuild got there first).
 */
import { sql, type Kysely, type Transaction } from "kysely";
import {
  type ConsumerTables,
  evolveInstance,
  INITIAL_INSTANCE_STATE,
  INSTANCE_AGGREGATE_TYPE,
  type InstanceEvent,
  type InstanceRow,
  INSTANCES_PROJECTION_HANDLER,
  INSTANCES_TABLE,
  type InstanceState,
} from "../core/index.js";
import { PoisonError } from "./failures.js";
import { defineHandler, type ConsumedEvent, type Handler } from "./handler.js";

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

