/**
 * A handler that outlives its lease (docs/CONTRACT.md C1): the runtime rolls its transaction back
 * and the connection returns to the pool, so a statement the handler sends afterwards would run on
 * its own and commit — an effect the registry never records as done, applied again by the next
 * holder. Kysely refuses statements once its rollback finished, but one sent while the rollback is
 * on its way runs after it, outside the transaction. Through the fenced transaction every statement
 * after the lease is lost fails, whenever it is sent. On PGlite, the embedded database.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { sql, type Kysely, type Transaction } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEmbeddedDatabase, type EmbeddedDatabase } from "../../core/db/embedded-database.js";
import { LeaseLostError } from "../../consumers/failures.js";
import { fencedTransaction } from "../../consumers/fenced-transaction.js";

interface Effects {
  effects: { n: number };
}

let dir: string;
let database: EmbeddedDatabase<Effects>;
let db: Kysely<Effects>;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-fence-"));
  database = await createEmbeddedDatabase<Effects>(path.join(dir, "pg"), "fence");
  db = database.db;
  await sql`create schema if not exists fence`.execute(db);
  await sql`create table if not exists fence.effects (n int not null)`.execute(db);
});

afterAll(async () => {
  await database?.close();
  await rm(dir, { recursive: true, force: true });
});

/**
 * Runs a "handler" that writes `first`, waits until the lease is lost (`at` "abort": at once, before
 * the runtime rolls back; "rollback": after the rollback), then writes `second` through what `wrap`
 * made of the transaction. Resolves with what the handler's second write threw.
 */
async function outliveLease(wrap: (tx: Transaction<Effects>, lease: AbortSignal) => Transaction<Effects>, first: number, second: number, at: "abort" | "rollback"): Promise<unknown> {
  const lease = new AbortController();
  let rolledBack!: () => void;
  const afterRollback = new Promise<void>((resolve) => (rolledBack = resolve));
  let handler!: Promise<void>;
  await expect(
    db.transaction().execute(async (tx) => {
      const handlerTx = wrap(tx, lease.signal);
      handler = (async () => {
        await handlerTx.insertInto("effects").values({ n: first }).execute();
        if (at === "rollback") await afterRollback;
        else await new Promise((resolve) => lease.signal.addEventListener("abort", resolve, { once: true }));
        await handlerTx.insertInto("effects").values({ n: second }).execute();
      })();
      // The runtime's side: the first write is in, then the lease runs out and it stops waiting.
      await expect.poll(async () => (await sql<{ c: number }>`select count(*)::int as c from fence.effects where n = ${first}`.execute(tx)).rows[0]!.c).toBe(1);
      lease.abort(new Error("lease lost"));
      throw lease.signal.reason;
    }),
  ).rejects.toThrow("lease lost");
  rolledBack();
  return handler.then(
    () => undefined,
    (e: unknown) => e,
  );
}

const count = async (n: number) => (await sql<{ c: number }>`select count(*)::int as c from fence.effects where n = ${n}`.execute(db)).rows[0]!.c;

describe("fenced handler transaction", () => {
  it("refuses a statement the handler sends once its lease is lost, before the rollback", async () => {
    const error = await outliveLease((tx, lease) => fencedTransaction(tx, lease), 1, 2, "abort");
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(await count(1)).toBe(0);
    expect(await count(2)).toBe(0);
  });

  it("refuses a statement the handler sends after the rollback", async () => {
    const error = await outliveLease((tx, lease) => fencedTransaction(tx, lease), 3, 4, "rollback");
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(await count(3)).toBe(0);
    expect(await count(4)).toBe(0);
  });
});
