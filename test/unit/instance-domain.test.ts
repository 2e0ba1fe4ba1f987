import { describe, expect, it } from "vitest";
import { decideInstance, foldInstance, InstanceEventType, type InstanceEvent } from "../../core/domain/instance.js";
import { mergePatch } from "../../core/domain/merge-patch.js";
import { isNotFoundError, isPreconditionError } from "../../core/errors.js";

const at = new Date("2026-01-01T00:00:00Z");
const ev = (seq: number, eventType: string, data: InstanceEvent["data"]): InstanceEvent => ({ eventType, seq, globalPosition: seq * 10, occurredAt: at, data });

describe("instance decisions", () => {
  it("given nothing, when created, then InstanceCreated with the properties", () => {
    expect(decideInstance(foldInstance([]), { type: "create", properties: { a: 1 } })).toEqual({
      eventType: InstanceEventType.created,
      data: { properties: { a: 1 } },
    });
  });

  it("given a created instance, when updated, then the patch merges into the state", () => {
    const given = [ev(1, InstanceEventType.created, { properties: { a: 1, nested: { x: 1, y: 2 } } })];
    const decided = decideInstance(foldInstance(given), { type: "update", patch: { a: null, nested: { y: 3 }, b: true } });
    expect(decided.eventType).toBe(InstanceEventType.updated);
    const state = foldInstance([...given, ev(2, decided.eventType, decided.data)]);
    expect(state).toMatchObject({ exists: true, version: 2, properties: { nested: { x: 1, y: 3 }, b: true }, globalPosition: 20 });
  });

  it("given a deleted instance, when updated or deleted, then FAILED_PRECONDITION", () => {
    const state = foldInstance([ev(1, InstanceEventType.created, { properties: {} }), ev(2, InstanceEventType.deleted, {})]);
    expect(state).toMatchObject({ deleted: true, version: 2 });
    expect(() => decideInstance(state, { type: "update", patch: {} })).toThrowError(expect.objectContaining({ kind: "precondition" }));
    // Captured, then asserted: an assertion inside `catch` passes when nothing throws.
    let error: unknown;
    try {
      decideInstance(state, { type: "delete" });
    } catch (e) {
      error = e;
    }
    expect(isPreconditionError(error)).toBe(true);
  });

  it("given nothing, when updated, then NOT_FOUND", () => {
    let error: unknown;
    try {
      decideInstance(foldInstance([]), { type: "update", patch: {} });
    } catch (e) {
      error = e;
    }
    expect(isNotFoundError(error)).toBe(true);
  });
});

describe("JSON merge patch (RFC 7386)", () => {
  it.each([
    [{ a: "b" }, { a: "c" }, { a: "c" }],
    [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
    [{ a: "b" }, { a: null }, {}],
    [{ a: "b", b: "c" }, { a: null }, { b: "c" }],
    [{ a: ["b"] }, { a: "c" }, { a: "c" }],
    [{ a: "c" }, { a: ["b"] }, { a: ["b"] }],
    [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
    [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ])("%j + %j = %j", (target, patch, result) => {
    expect(mergePatch(target as never, patch as never)).toEqual(result);
  });
});
