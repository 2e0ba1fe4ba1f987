/**
 * Schema evolution through the embedded all-in-one process (docs/CONTRACT.md E1–E3), with the
 * modules loaded as the CLI loads them: a handler module exporting its handlers and `upcasters`,
 * and the server's TIDEMARK_UPCASTERS module. An old event reaches a handler in the new shape; a
 * handler that cannot bring an event up to date dead-letters it with the reason, the stored event
 * unchanged in the letter; ReadStream with and without `latest_schema`.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ConsumerDatabase } from "../../core/index.js";
import { DEAD_LETTER_PREFIX } from "../../consumers/index.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { loadHandlerModule } from "../../cli/handler-modules.js";
import { startProcess, type TidemarkProcess } from "../../cli/process.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { collect } from "../helpers/grpc-errors.js";
import { registryRow } from "../helpers/consumer-env.js";
import { waitFor } from "../helpers/wait-for.js";

/** OrderPlaced v1 `{ amount }` → v2 `{ total }` → v3 `{ total: { amount, currency } }`, as module source. */
const ORDER_UPCASTERS = `[
  { eventType: "OrderPlaced", fromVersion: 1, upcast: (data) => ({ total: data.amount }) },
  { eventType: "OrderPlaced", fromVersion: 2, upcast: (data) => ({ total: { amount: data.total, currency: "EUR" } }) },
]`;

/**
 * `reader` takes the module's upcasters; `strict` declares only v2 → v3, so it cannot read a v1 event
 * and parks the aggregate's later events behind it (C8's default); `lenient` is `strict` with
 * `onDeadLetter: "skip"`.
 */
const HANDLER_MODULE = `
export const upcasters = ${ORDER_UPCASTERS};
const seen = (globalThis.__upcastingSeen ??= []);
const record = (handler) => async (event) => void seen.push({ handler, eventId: event.eventId, version: event.envelope.schemaVersion, data: event.data });
export const handlers = [
  { name: "reader", aggregateTypes: ["Order"], handle: record("reader") },
  { name: "strict", aggregateTypes: ["Order"], upcasters: [upcasters[1]], handle: record("strict") },
  { name: "lenient", aggregateTypes: ["Order"], upcasters: [upcasters[1]], onDeadLetter: "skip", handle: record("lenient") },
];
`;

interface Seen {
  handler: string;
  eventId: string;
  version: number;
  data: unknown;
}
const seen = (): Seen[] => ((globalThis as { __upcastingSeen?: Seen[] }).__upcastingSeen ??= []);

let dir: string;
let proc: TidemarkProcess;
let events: ClientOf<typeof EventStoreService>;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-upcasting-"));
  await writeFile(path.join(dir, "orders-handlers.mjs"), HANDLER_MODULE);
  await writeFile(path.join(dir, "server-upcasters.mjs"), `export default ${ORDER_UPCASTERS};\n`);
  const handlers = await loadHandlerModule(path.join(dir, "orders-handlers.mjs"));
  const env = {
    TIDEMARK_DATA_DIR: path.join(dir, "data"),
    TIDEMARK_GRPC_ADDR: "127.0.0.1:0",
    TIDEMARK_UPCASTERS: path.join(dir, "server-upcasters.mjs"),
    TIDEMARK_CONSUMER_LEASE_SECONDS: "5",
    TIDEMARK_CONSUMER_HEARTBEAT_SECONDS: "1",
    TIDEMARK_SHUTDOWN_GRACE_MS: "1000",
    TIDEMARK_LOG_LEVEL: "warn",
  };
  proc = await startProcess(env, { server: true, relay: "if-kafka", projection: false, handlers });
  events = createClient(EventStoreService, proc.grpcAddress!);
});

afterAll(async () => {
  events?.close();
  await proc?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("upcasting in the embedded process", () => {
  it("hands a handler an old event in the new shape, and dead-letters one a handler cannot read", async () => {
    await events.appendEvents({
      aggregateType: "Order",
      aggregateId: "o-1",
      expectation: { case: "noStream", value: {} },
      events: [
        { eventId: "order-v1", eventType: "OrderPlaced", schemaVersion: 1, data: { amount: 12 } },
        { eventId: "order-v2", eventType: "OrderPlaced", schemaVersion: 2, data: { total: 13 } },
      ],
    });
    const db = proc.server!.database.db as unknown as Kysely<ConsumerDatabase>;
    const final = (handler: string, eventId: string) => async () => {
      const row = await registryRow(db, handler, eventId);
      return row !== undefined && ["done", "dead_lettered", "parked"].includes(row.state) ? row : undefined;
    };
    expect(await waitFor(final("reader", "order-v1"), { what: "reader done with the v1 event" })).toMatchObject({ state: "done" });
    expect(await waitFor(final("reader", "order-v2"), { what: "reader done with the v2 event" })).toMatchObject({ state: "done" });
    expect(seen().filter((s) => s.handler === "reader")).toEqual([
      { handler: "reader", eventId: "order-v1", version: 3, data: { total: { amount: 12, currency: "EUR" } } },
      { handler: "reader", eventId: "order-v2", version: 3, data: { total: { amount: 13, currency: "EUR" } } },
    ]);

    // `strict` has no upcaster from v1: a clear poison error and a dead letter, never the old shape.
    const dead = await waitFor(final("strict", "order-v1"), { what: "strict's v1 event dead-lettered" });
    expect(dead).toMatchObject({ state: "dead_lettered", attempts: 1, last_error: expect.stringMatching(/no upcaster for \(OrderPlaced, 1\)/) });
    // The unreadable event is a dead letter of its own stream and seq: the next event parks behind it.
    const parked = await waitFor(final("strict", "order-v2"), { what: "strict's v2 event parked" });
    expect([parked.state, Number(parked.seq), Number(dead.seq)]).toEqual(["parked", 2, 1]);
    expect(seen().filter((s) => s.handler === "strict")).toEqual([]);
    expect(await waitFor(final("lenient", "order-v1"), { what: "lenient's v1 event dead-lettered" })).toMatchObject({ state: "dead_lettered" });
    expect(await waitFor(final("lenient", "order-v2"), { what: "lenient done with the v2 event" })).toMatchObject({ state: "done" });
    expect(seen().filter((s) => s.handler === "lenient")).toEqual([{ handler: "lenient", eventId: "order-v2", version: 3, data: { total: { amount: 13, currency: "EUR" } } }]);
    const letters = await proc.server!.objects.list(`${DEAD_LETTER_PREFIX}/strict/`);
    expect(letters).toHaveLength(1);
    const letter = JSON.parse((await proc.server!.objects.get(letters[0]!))!) as { headers: Record<string, string>; value: string };
    expect(letter.headers).toMatchObject({ "dlq-reason": "poison", "dlq-event-id": "order-v1" });
    expect(letter.headers["dlq-cause"]).toMatch(/no upcaster for \(OrderPlaced, 1\)/);
    // The letter holds the event as stored.
    expect(JSON.parse(letter.value)).toMatchObject({ event_id: "order-v1", schema_version: 1, data: { amount: 12 } });
  });

  it("serves ReadStream as stored, and with latest_schema through the TIDEMARK_UPCASTERS module", async () => {
    const read = async (latestSchema: boolean) => (await collect(events.readStream({ aggregateType: "Order", aggregateId: "o-1", latestSchema }))).map((r) => [r.event!.schemaVersion, r.event!.data]);
    expect(await read(false)).toEqual([
      [1, { amount: 12 }],
      [2, { total: 13 }],
    ]);
    expect(await read(true)).toEqual([
      [3, { total: { amount: 12, currency: "EUR" } }],
      [3, { total: { amount: 13, currency: "EUR" } }],
    ]);
  });
});
