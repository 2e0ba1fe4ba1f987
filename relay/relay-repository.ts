/**
 * The relay's SQL: the active-relay lease with its fencing token, the durable checkpoint, and the
 * lag query. Functions take the database (or a transaction) first. Every time comparison uses the
 * database clock (`now()`), never the relay host's, so skewed hosts cannot both hold the lease.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import type { RelayTables } from "../core/index.js";

type Db = Kysely<RelayTables> | Transaction<RelayTables>;

/** A lease this process holds: `token` fences every checkpoint write made under it. */
export interface LeaseGrant {
  readonly token: number;
  /** The database clock when the lease was granted or renewed. */
  readonly dbNow: Date;
  readonly expiresAt: Date;
}

/** The lease row as stored (for status and tests). */
export interface LeaseRow {
  readonly holder: string;
  readonly token: number;
  readonly expiresAt: Date;
  readonly expired: boolean;
}

/**
 * Takes the lease when nobody holds it or it has expired by the database clock; the token goes up
 * by one on every acquisition, also when the same holder comes back. Undefined when another
 * holder's lease is still running.
 */
export async function acquireLease(db: Db, name: string, holder: string, leaseMs: number): Promise<LeaseGrant | undefined> {
  const { rows } = await sql<{ token: number; db_now: Date; expires_at: Date }>`
    insert into relay_leases as l (name, holder, token, expires_at, acquired_at, renewed_at)
    values (${name}, ${holder}, 1, now() + make_interval(secs => ${leaseMs / 1000}), now(), now())
    on conflict (name) do update
       set holder = excluded.holder, token = l.token + 1, expires_at = excluded.expires_at,
           acquired_at = now(), renewed_at = now()
     where l.expires_at <= now()
    returning l.token, now() as db_now, l.expires_at`.execute(db);
  const row = rows[0];
  return row === undefined ? undefined : { token: Number(row.token), dbNow: row.db_now, expiresAt: row.expires_at };
}

/**
 * Extends the lease by `leaseMs` from the database's now, only while `token` is still the current
 * one. Undefined when the lease was taken over (the caller is fenced out).
 */
export async function renewLease(db: Db, name: string, holder: string, token: number, leaseMs: number): Promise<LeaseGrant | undefined> {
  const { rows } = await sql<{ db_now: Date; expires_at: Date }>`
    update relay_leases
       set expires_at = now() + make_interval(secs => ${leaseMs / 1000}), renewed_at = now()
     where name = ${name} and token = ${token} and holder = ${holder}
    returning now() as db_now, expires_at`.execute(db);
  const row = rows[0];
  return row === undefined ? undefined : { token, dbNow: row.db_now, expiresAt: row.expires_at };
}

/** Gives the lease up at once (graceful stop) so a standby need not wait for it to expire. */
export async function releaseLease(db: Db, name: string, token: number): Promise<void> {
  await sql`update relay_leases set expires_at = now() where name = ${name} and token = ${token}`.execute(db);
}

/** The lease row, or undefined when no relay of this name ever ran. */
export async function readLease(db: Db, name: string): Promise<LeaseRow | undefined> {
  const { rows } = await sql<{ holder: string; token: number; expires_at: Date; expired: boolean }>`
    select holder, token, expires_at, expires_at <= now() as expired from relay_leases where name = ${name}`.execute(db);
  const row = rows[0];
  return row === undefined ? undefined : { holder: row.holder, token: Number(row.token), expiresAt: row.expires_at, expired: row.expired };
}

/** The durable checkpoint: every position up to `position` is in Kafka. */
export interface Checkpoint {
  readonly position: number;
  readonly fencingToken: number;
}

/** The checkpoint of relay `name`; position 0 (publish everything) when it never ran. */
export async function readCheckpoint(db: Db, name: string): Promise<Checkpoint> {
  const row = await db
    .selectFrom("relay_checkpoints")
    .select(["position", "fencing_token"])
    .where("name", "=", name)
    .executeTakeFirst();
  return { position: row?.position ?? 0, fencingToken: row?.fencing_token ?? 0 };
}

/**
 * Moves the checkpoint to `position` when, and only when, `token` is still the current, unexpired
 * lease (docs/CONTRACT.md R4, R5). The lease row is share-locked for the statement, so a takeover either
 * commits first (and this write is refused) or waits until this write is visible to the new holder.
 * Returns false when fenced out.
 */
export async function advanceCheckpoint(db: Db, name: string, token: number, position: number): Promise<boolean> {
  const { rows } = await sql<{ position: number }>`
    with lease as (
      select token from relay_leases
       where name = ${name} and token = ${token} and expires_at > now()
       for share
    )
    insert into relay_checkpoints as c (name, position, fencing_token, updated_at)
    select ${name}, ${position}, token, now() from lease
    on conflict (name) do update
       set position = excluded.position, fencing_token = excluded.fencing_token, updated_at = now()
     where c.fencing_token <= excluded.fencing_token
    returning c.position`.execute(db);
  return rows.length === 1;
}

/** How far Kafka is behind the commit log, by the database clock. */
export interface RelayLag {
  /** Highest committed position. */
  readonly head: number;
  /** Committed positions not yet covered by the checkpoint. */
  readonly positions: number;
  /** Age of the oldest committed event above the checkpoint, in ms (0 when none). */
  readonly oldestAgeMs: number;
}

/** The lag of a relay whose acknowledged prefix ends at `position`. */
export async function relayLag(db: Db, position: number): Promise<RelayLag> {
  const { rows } = await sql<{ head: number; oldest_age_ms: number | null }>`
    select (select g.position from global_counter g where g.id = 1) as head,
           (select extract(epoch from (now() - e.committed_at)) * 1000
              from event_log e
             where e.state = 'committed' and e.global_position > ${position}
             order by e.global_position
             limit 1) as oldest_age_ms`.execute(db);
  const row = rows[0]!;
  const head = Number(row.head);
  return { head, positions: Math.max(0, head - position), oldestAgeMs: Math.max(0, Number(row.oldest_age_ms ?? 0)) };
}

/** The database clock, to relate committed_at (database time) to local acknowledgement times. */
export async function databaseNow(db: Db): Promise<Date> {
  const { rows } = await sql<{ now: Date }>`select clock_timestamp() as now`.execute(db);
  return rows[0]!.now;
}

/**
 * Moves the checkpoint `name` forward to `position`, never back, without a lease: for the embedded
 * relay's consumer groups, whose only writer is the one process that holds the embedded data
 * directory (core/backends.ts locks it).
 */
export async function advanceGroupCheckpoint(db: Db, name: string, position: number): Promise<void> {
  await sql`
    insert into relay_checkpoints as c (name, position, fencing_token, updated_at)
    values (${name}, ${position}, 0, now())
    on conflict (name) do update set position = excluded.position, updated_at = now()
     where c.position < excluded.position`.execute(db);
}
