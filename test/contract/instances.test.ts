/**
 * InstanceService end to end against the real stack: decisions in the server, optimistic
 * concurrency on the version reads show, command_id retries, and the error table of docs/CONTRACT.md.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcurrencyConflictSchema, IdempotencyConflictSchema } from "../../gen/tidemark/v1/errors_pb.js";
import { ConcurrencyError } from "../../core/index.js";
import type { EventStore } from "../../server/event-store.js";
import { InstanceCommands, type InstanceCommandInput } from "../../server/instances/instance-commands.js";
import { badFields, collect, expectStatus, findDetail, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

const addr = (instanceId: string) => ({ database: "acme", className: "Person", instanceId });

describe("instance lifecycle", () => {
  it("creates, updates with a merge patch, and deletes, with versions equal to stream seqs", async () => {
    const created = await t.instances.createInstance({ ...addr("p1"), properties: { name: "Ada", address: { city: "London", zip: "N1" } }, commandId: "c-p1-1" });
    expect(created.result).toMatchObject({ sequenceNumber: 1n, replayed: false });

    const got = await t.instances.getInstance(addr("p1"));
    expect(got.instance).toMatchObject({ version: 1n, deleted: false, properties: { name: "Ada", address: { city: "London", zip: "N1" } } });

    const updated = await t.instances.updateInstance({ ...addr("p1"), properties: { address: { zip: null }, born: 1815 }, expectedSeq: 1n, commandId: "c-p1-2" });
    expect(updated.result?.sequenceNumber).toBe(2n);
    expect((await t.instances.getInstance(addr("p1"))).instance).toMatchObject({
      version: 2n,
      properties: { name: "Ada", address: { city: "London" }, born: 1815 },
    });

    const deleted = await t.instances.deleteInstance({ ...addr("p1"), expectedSeq: 2n, commandId: "c-p1-3" });
    expect(deleted.result?.sequenceNumber).toBe(3n);
    expect((await t.instances.getInstance(addr("p1"))).instance).toMatchObject({ version: 3n, deleted: true });

    // The stream holds exactly one domain event per command: no command envelopes, no double seqs.
    const stream = await collect(t.events.readStream({ aggregateType: "Instance", aggregateId: "acme/Person/p1" }));
    expect(stream.map((r) => [r.event!.sequenceNumber, r.event!.eventType, r.event!.metadata["command_id"]])).toEqual([
      [1n, "InstanceCreated", "c-p1-1"],
      [2n, "InstanceUpdated", "c-p1-2"],
      [3n, "InstanceDeleted", "c-p1-3"],
    ]);
  });

  it("answers ABORTED with the actual version for a stale expected_seq, and writes nothing", async () => {
    await t.instances.createInstance({ ...addr("p2"), properties: { n: 1 }, commandId: "c-p2-1" });
    await t.instances.updateInstance({ ...addr("p2"), properties: { n: 2 }, expectedSeq: 1n, commandId: "c-p2-2" });
    const error = await expectStatus(
      t.instances.updateInstance({ ...addr("p2"), properties: { n: 99 }, expectedSeq: 1n, commandId: "c-p2-3" }),
      grpc.status.ABORTED,
    );
    expect(findDetail(error, ConcurrencyConflictSchema)).toMatchObject({ aggregateType: "Instance", aggregateId: "acme/Person/p2", expectedSeq: 1n, actualSeq: 2n });
    expect((await t.instances.getInstance(addr("p2"))).instance).toMatchObject({ version: 2n, properties: { n: 2 } });
  });

  it("answers ABORTED when creating an instance that exists", async () => {
    await t.instances.createInstance({ ...addr("p3"), properties: {}, commandId: "c-p3-1" });
    const error = await expectStatus(t.instances.createInstance({ ...addr("p3"), properties: {}, commandId: "c-p3-other" }), grpc.status.ABORTED);
    expect(findDetail(error, ConcurrencyConflictSchema)).toMatchObject({ expectedSeq: 0n, actualSeq: 1n });
  });

  it("returns the original result for a retried command_id, even after the instance moved on", async () => {
    const first = await t.instances.createInstance({ ...addr("p4"), properties: { a: 1 }, commandId: "c-p4-1" });
    const update = await t.instances.updateInstance({ ...addr("p4"), properties: { a: 2 }, expectedSeq: 1n, commandId: "c-p4-2" });
    await t.instances.updateInstance({ ...addr("p4"), properties: { a: 3 }, expectedSeq: 2n, commandId: "c-p4-3" });

    const retryCreate = await t.instances.createInstance({ ...addr("p4"), properties: { a: 1 }, commandId: "c-p4-1" });
    expect(retryCreate.result).toEqual({ ...first.result, replayed: true });
    const retryUpdate = await t.instances.updateInstance({ ...addr("p4"), properties: { a: 2 }, expectedSeq: 1n, commandId: "c-p4-2" });
    expect(retryUpdate.result).toEqual({ ...update.result, replayed: true });
    expect((await t.instances.getInstance(addr("p4"))).instance?.version).toBe(3n);

    const error = await expectStatus(
      t.instances.updateInstance({ ...addr("p4"), properties: { a: "different" }, expectedSeq: 1n, commandId: "c-p4-2" }),
      grpc.status.ALREADY_EXISTS,
    );
    expect(findDetail(error, IdempotencyConflictSchema)?.eventId).toBe(update.result?.eventId);
  });

  it("maps missing and deleted instances to NOT_FOUND and FAILED_PRECONDITION", async () => {
    await expectStatus(t.instances.getInstance(addr("ghost")), grpc.status.NOT_FOUND);
    await expectStatus(t.instances.updateInstance({ ...addr("ghost"), properties: {}, expectedSeq: 0n, commandId: "c-ghost" }), grpc.status.NOT_FOUND);
    await t.instances.createInstance({ ...addr("p5"), properties: {}, commandId: "c-p5-1" });
    await t.instances.deleteInstance({ ...addr("p5"), expectedSeq: 1n, commandId: "c-p5-2" });
    await expectStatus(t.instances.updateInstance({ ...addr("p5"), properties: { x: 1 }, expectedSeq: 2n, commandId: "c-p5-3" }), grpc.status.FAILED_PRECONDITION);
    await expectStatus(t.instances.deleteInstance({ ...addr("p5"), expectedSeq: 2n, commandId: "c-p5-4" }), grpc.status.FAILED_PRECONDITION);
  });

  it("names the field of a malformed command and writes nothing", async () => {
    const missing = await expectStatus(t.instances.updateInstance({ ...addr("p6"), properties: {}, commandId: "c-p6" }), grpc.status.INVALID_ARGUMENT);
    expect(badFields(missing)).toEqual(["expected_seq"]);
    const bad = await expectStatus(
      t.instances.createInstance({ database: "a/b", className: "", instanceId: "x/y", properties: {}, commandId: "" }),
      grpc.status.INVALID_ARGUMENT,
    );
    expect(badFields(bad).sort()).toEqual(["class_name", "command_id", "database", "instance_id"]);
    await expectStatus(t.instances.getInstance(addr("p6")), grpc.status.NOT_FOUND);
  });
});

/** Every listed instance id of a class (STRONG), a page of `pageSize` at a time. */
async function listedIds(database: string, className: string, pageSize: number): Promise<string[]> {
  const seen: string[] = [];
  let pageToken = "";
  do {
    const page = await t.instances.listInstances({ database, className, pageSize, pageToken });
    seen.push(...page.instances.map((i) => i.instanceId));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return seen;
}

describe("ListInstances", () => {
  it("pages through one class, leaving out deleted ones unless asked", async () => {
    for (let i = 0; i < 5; i++) {
      await t.instances.createInstance({ database: "list", className: "Item", instanceId: `i${i}`, properties: { i }, commandId: `c-list-${i}` });
    }
    await t.instances.createInstance({ database: "list", className: "Other", instanceId: "o", properties: {}, commandId: "c-list-o" });
    await t.instances.deleteInstance({ database: "list", className: "Item", instanceId: "i2", expectedSeq: 1n, commandId: "c-list-del" });

    expect(await listedIds("list", "Item", 2)).toEqual(["i0", "i1", "i3", "i4"]);
    const all = await t.instances.listInstances({ database: "list", className: "Item", includeDeleted: true });
    expect(all.instances.map((i) => [i.instanceId, i.deleted])).toEqual([["i0", false], ["i1", false], ["i2", true], ["i3", false], ["i4", false]]);
  });
});

describe("ListInstances order", () => {
  it("lists ids in code-point order, whatever the database's collation", async () => {
    // Upper case before lower, a fullwidth letter (U+FF21) before an emoji (U+1F600): code points,
    // not a locale's order, nor JavaScript's UTF-16 order (which puts the emoji's surrogates first).
    const ids = ["b", "\u{1F600}", "B", "\uFF21", "a", "é", "~"];
    for (const [i, instanceId] of ids.entries()) {
      await t.instances.createInstance({ database: "order", className: "Item", instanceId, properties: { i }, commandId: `c-order-${i}` });
    }
    expect(await listedIds("order", "Item", 3)).toEqual(["B", "a", "b", "~", "é", "\uFF21", "\u{1F600}"]);
  });
});

describe("a create racing another create (W3)", () => {
  // The deciding command's fold reads head, snapshot and slots in one statement, then loads the
  // events; the racing create commits in between (after the statement, before the append). The
  // instance exists by then and the deciding create must be refused by the append's expectation:
  // the chaos harness once saw a second InstanceCreated at seq 2 when the events and the head were
  // read by two queries in the wrong order.
  it("refuses the second create when the first commits after the fold's read", async () => {
    const instanceId = "race";
    const aggregateId = `acme/Person/${instanceId}`;
    const create = (commandId: string): InstanceCommandInput => ({
      address: addr(instanceId),
      command: { type: "create", properties: { by: commandId } },
      expectedSeq: 0,
      commandId,
      actor: "race-test",
      metadata: {},
    });
    const store = t.server.store;
    const first = new InstanceCommands(store, t.server.database.db);
    let raced = false;
    const racing: EventStore = Object.create(store, {
      loadAll: {
        value: async (rows: Parameters<EventStore["loadAll"]>[0]) => {
          if (!raced) {
            raced = true;
            await first.execute(create(`c-${instanceId}-first`));
          }
          return store.loadAll(rows);
        },
      },
    });
    const second = new InstanceCommands(racing, t.server.database.db);

    const refused = await second.execute(create(`c-${instanceId}-second`)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(raced).toBe(true);
    expect(refused).toBeInstanceOf(ConcurrencyError);
    expect(refused).toMatchObject({ expectedSeq: 0, actualSeq: 1 });
    const stream = await collect(t.events.readStream({ aggregateType: "Instance", aggregateId }));
    expect(stream.map((r) => [r.event!.sequenceNumber, r.event!.eventType, r.event!.metadata["command_id"]])).toEqual([[1n, "InstanceCreated", `c-${instanceId}-first`]]);
  });
});
