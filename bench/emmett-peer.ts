/**
 * The peer in the same run: Emmett's PostgreSQL event store (`@event-driven-io/emmett-postgresql`),
 * the store a TypeScript user would pick instead of Tidemark. It appends one ~1 KiB event per call
 * (the same data as P1) to many streams — each worker its own stream, with its expected version,
 * as P1's "1 event/call, many aggregates" — to the same PostgreSQL, in a database of its own.
 *
 * Emmett is a library: the store runs inside the bench process, so its CPU is the `bench` entry of
 * the CPU table, where Tidemark's is the server child's. Its pool is Emmett's default (node-postgres,
 * 10 connections), the size of the Tidemark server's.
 */
import type { PostgresEventStore } from "@event-driven-io/emmett-postgresql";
import { sql } from "kysely";
import { createDatabase } from "../core/index.js";
import { closedLoop, type LoadResult } from "./load.js";
import type { BenchResources } from "./resources.js";
import { BENCH_AGGREGATE_TYPE, BENCH_EVENT_TYPE, eventData } from "./workload.js";

/** The package whose store is the peer (a devDependency of the bench). */
export const EMMETT_PACKAGE = "@event-driven-io/emmett-postgresql";

/** An open peer store in its own database. */
export interface EmmettPeer {
  /**
   * A closed loop at concurrency `c`: each worker appends one event per call to its own stream
   * with the stream's exact version; after a failure it starts a fresh stream. Units are events.
   */
  load(c: number, measureMs: number, warmupMs: number, prefix: string): Promise<LoadResult>;
  /** Planner statistics for the peer's tables, as P1 gives its own (analyze.ts). */
  analyze(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Creates the peer's database (dropped by `resources.cleanup`), loads Emmett and creates its
 * schema. Resolves with the reason instead when the package cannot be loaded or the store cannot
 * open, so that a checkout without the devDependency still runs every other benchmark.
 */
export async function openEmmettPeer(resources: BenchResources): Promise<EmmettPeer | { readonly unavailable: string }> {
  let emmett: typeof import("@event-driven-io/emmett-postgresql");
  try {
    // Loaded here, not at the top: only P1 needs it, and a missing install must not stop the run.
    emmett = await import("@event-driven-io/emmett-postgresql");
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return { unavailable: code === "ERR_MODULE_NOT_FOUND" ? `${EMMETT_PACKAGE} is not installed` : `${EMMETT_PACKAGE} did not load: ${String(e).split("\n")[0]}` };
  }
  let database: { readonly url: string };
  let store: PostgresEventStore | undefined;
  try {
    database = await resources.newDatabase("emmett");
    store = emmett.getPostgreSQLEventStore(database.url);
    // Created before the warm-up rather than by the first append (Emmett's default auto-migration).
    await store.schema.migrate();
  } catch (e) {
    await store?.close().catch(() => {});
    return { unavailable: `its store did not open: ${String(e).split("\n")[0]}` };
  }
  const opened = store;
  return {
    load: (c, measureMs, warmupMs, prefix) => appendLoad(opened, c, measureMs, warmupMs, prefix),
    async analyze() {
      const admin = createDatabase({ url: database.url, schema: "public", poolSize: 1 });
      try {
        // The whole database: it holds only Emmett's tables (emt_messages is partitioned).
        await sql`analyze`.execute(admin.db);
      } finally {
        await admin.close();
      }
    },
    close: () => opened.close(),
  };
}

function appendLoad(store: PostgresEventStore, c: number, measureMs: number, warmupMs: number, prefix: string): Promise<LoadResult> {
  const versions = new Array<bigint>(c).fill(0n);
  const generation = new Array<number>(c).fill(0);
  return closedLoop({
    concurrency: c,
    durationMs: measureMs,
    warmupMs,
    op: async (worker, i) => {
      // Emmett takes the stream type from the name's first dash-separated part.
      const stream = `${BENCH_AGGREGATE_TYPE}-${prefix}-w${worker}-g${generation[worker]}`;
      try {
        const out = await store.appendToStream(stream, [{ type: BENCH_EVENT_TYPE, data: eventData(i) }], { expectedStreamVersion: versions[worker]! });
        versions[worker] = out.nextExpectedStreamVersion;
      } catch (e) {
        // Start a fresh stream rather than guess the version after a failure.
        generation[worker]! += 1;
        versions[worker] = 0n;
        throw e;
      }
    },
  });
}
