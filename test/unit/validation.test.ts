import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { isValidationError, type ValidationError } from "../../core/errors.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { AppendEventsRequestSchema, type AppendEventsRequest } from "../../gen/tidemark/v1/event_store_pb.js";
import { DEFAULT_LIMITS } from "../../server/limits.js";
import { validateAppend } from "../../server/validation.js";
import { validateInstanceCommand } from "../../server/instances/instance-commands.js";

function violations(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (isValidationError(e)) return (e as ValidationError).violations.map((v) => `${v.field}: ${v.description}`);
    throw e;
  }
  return [];
}

const ok = (init: MessageInitShape<typeof AppendEventsRequestSchema> = {}): AppendEventsRequest =>
  create(AppendEventsRequestSchema, {
    aggregateType: "Order",
    aggregateId: "o-1",
    expectation: { case: "expectedSeq", value: 0n },
    events: [{ eventId: "e-1", eventType: "OrderPlaced", data: { a: 1 } }],
    ...(init as object),
  });

describe("AppendEvents validation", () => {
  it("accepts a well-formed request and fills defaults", () => {
    const input = validateAppend(ok(), DEFAULT_LIMITS, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    expect(input.expectation).toEqual({ type: "exact", seq: 0 });
    expect(input.events[0]).toMatchObject({ schemaVersion: 1, metadata: { kind: "domain", traceparent: expect.any(String) } });
  });

  it("requires an explicit expectation", () => {
    expect(violations(() => validateAppend(ok({ expectation: { case: undefined } }), DEFAULT_LIMITS))).toEqual([
      "expectation: is required: set expected_seq, no_stream or any",
    ]);
  });

  it("names every offending field", () => {
    const request = ok({
      aggregateType: "",
      aggregateId: "bad\u0000id",
      events: [
        { eventId: "", eventType: "1bad", data: {} },
        { eventId: "dup", eventType: "T", metadata: { "bad key": "v" } },
        { eventId: "dup", eventType: "T", metadata: { kind: "command" }, kind: 1 },
      ],
    });
    const v = violations(() => validateAppend(request, DEFAULT_LIMITS));
    expect(v).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^aggregate_type: /),
        expect.stringMatching(/^aggregate_id: .*control/),
        expect.stringMatching(/^events\[0\]\.event_id: /),
        expect.stringMatching(/^events\[0\]\.event_type: /),
        expect.stringMatching(/^events\[1\]\.metadata: /),
        expect.stringMatching(/^events\[2\]\.event_id: appears twice/),
        expect.stringMatching(/^events\[2\]\.metadata\.kind: /),
      ]),
    );
  });

  it("enforces data size, depth and batch limits", () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 40; i++) deep = { d: deep };
    expect(violations(() => validateAppend(ok({ events: [{ eventId: "e", eventType: "T", data: deep as never }] }), DEFAULT_LIMITS))).toEqual([
      expect.stringMatching(/^events\[0\]\.data: must nest at most 32/),
    ]);
    const big = { s: "x".repeat(DEFAULT_LIMITS.maxDataBytes) };
    expect(violations(() => validateAppend(ok({ events: [{ eventId: "e", eventType: "T", data: big }] }), DEFAULT_LIMITS))).toEqual([
      expect.stringMatching(/^events\[0\]\.data: must be at most 262144 bytes/),
    ]);
    const many = Array.from({ length: 101 }, (_, i) => ({ eventId: `e${i}`, eventType: "T" }));
    expect(violations(() => validateAppend(ok({ events: many }), DEFAULT_LIMITS))).toEqual([
      expect.stringMatching(/^events: must contain at most 100/),
    ]);
    expect(violations(() => validateAppend(ok({ events: [] }), DEFAULT_LIMITS))).toEqual(["events: must contain at least one event"]);
  });
});

describe("instance command validation", () => {
  const raw = { database: "db", className: "Person", instanceId: "p-1", commandId: "c-1", actor: "", metadata: {} };

  it("requires expected_seq for update and delete, and names it", () => {
    expect(violations(() => validateInstanceCommand("update", raw, DEFAULT_LIMITS))).toEqual([
      "expected_seq: is required for update: the version the command was decided against",
    ]);
    expect(violations(() => validateInstanceCommand("delete", raw, DEFAULT_LIMITS))).toEqual([
      "expected_seq: is required for delete: the version the command was decided against",
    ]);
    expect(violations(() => validateInstanceCommand("update", { ...raw, expectedSeq: 0n }, DEFAULT_LIMITS))).toEqual([]);
  });

  it("refuses '/' in address parts and a missing command_id", () => {
    const v = violations(() => validateInstanceCommand("create", { ...raw, database: "a/b", instanceId: "x/y", commandId: "" }, DEFAULT_LIMITS));
    expect(v).toEqual(
      expect.arrayContaining([expect.stringMatching(/^database: /), expect.stringMatching(/^instance_id: /), expect.stringMatching(/^command_id: /)]),
    );
  });
});
