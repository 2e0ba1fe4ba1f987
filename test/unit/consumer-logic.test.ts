/**
 * The consumers' pure logic: backoff, offset bookkeeping, failure classification along the cause
 * chain, message decoding, configuration rules and the handler API. No I/O.
 */
import { describe, expect, it } from "vitest";
import { encodeEnvelope } from "../../core/envelope.js";
import { ValidationError } from "../../core/errors.js";
import { ConfigError } from "../../core/settings.js";
import { backoffDelay } from "../../consumers/backoff.js";
import { loadConsumerConfig } from "../../consumers/config.js";
import { decodeMessage, poisonEventId } from "../../consumers/decode.js";
import { classifyFailure, describeFailure, InfrastructureError, PoisonError } from "../../consumers/failures.js";
import { defineHandler, wants } from "../../consumers/handler.js";
import { OffsetWindow } from "../../consumers/offset-window.js";
import { parseInstanceAggregateId } from "../../consumers/projection.js";
import { create } from "@bufbuild/protobuf";
import { EventEnvelopeSchema } from "../../gen/tidemark/v1/envelope_pb.js";

describe("backoffDelay", () => {
  const policy = { baseMs: 100, maxMs: 5000, jitter: 0 };
  it("doubles per attempt from the base and stops at the maximum", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 50].map((n) => backoffDelay(n, policy))).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000]);
  });
  it("spreads retries by at most half the jitter either way, never past the maximum", () => {
    const jittered = { baseMs: 1000, maxMs: 1500, jitter: 0.2 };
    expect(backoffDelay(1, jittered, () => 0)).toBe(900);
    expect(backoffDelay(1, jittered, () => 1)).toBe(1100);
    expect(backoffDelay(2, jittered, () => 1)).toBe(1500);
  });
});

describe("OffsetWindow", () => {
  it("commits only over the finished contiguous prefix", () => {
    const w = new OffsetWindow();
    for (const o of [10n, 11n, 12n, 13n]) expect(w.dispatch(o)).toBe(true);
    w.finish(12n);
    w.finish(13n);
    expect(w.commitCandidate(undefined)).toBeUndefined();
    expect(w.inFlight).toBe(2);
    w.finish(10n);
    expect(w.commitCandidate(undefined)).toBe(11n);
    w.finish(11n);
    expect(w.commitCandidate(11n)).toBe(14n);
    expect(w.commitCandidate(14n)).toBeUndefined();
    expect(w.size).toBe(0);
  });
  it("refuses offsets it already dispatched (a refetch), and tolerates gaps (compaction, transaction markers)", () => {
    const w = new OffsetWindow();
    w.dispatch(5n);
    expect(w.dispatch(5n)).toBe(false);
    expect(w.dispatch(4n)).toBe(false);
    expect(w.dispatch(9n)).toBe(true);
    w.finish(9n);
    w.finish(5n);
    expect(w.commitCandidate(undefined)).toBe(10n);
    expect(w.lastDispatched).toBe(9n);
  });
});

describe("classifyFailure", () => {
  it("finds poison anywhere in the cause chain", () => {
    expect(classifyFailure(new PoisonError("bad"))).toBe("poison");
    expect(classifyFailure(new Error("wrapped", { cause: new ValidationError([{ field: "x", description: "is required" }]) }))).toBe("poison");
    expect(classifyFailure(new Error("outer", { cause: new Error("middle", { cause: new PoisonError("root") }) }))).toBe("poison");
    expect(classifyFailure(new AggregateError([new Error("a"), new PoisonError("b")]))).toBe("poison");
  });
  it("recognises a lost database connection as infrastructure, and nothing else", () => {
    expect(classifyFailure(Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }))).toBe("infrastructure");
    expect(classifyFailure(new Error("query failed", { cause: Object.assign(new Error("connection failure"), { code: "08006" }) }))).toBe("infrastructure");
    expect(classifyFailure(new Error("Connection terminated unexpectedly"))).toBe("infrastructure");
    expect(classifyFailure(new InfrastructureError("claim"))).toBe("infrastructure");
    // A handler's own HTTP call failing is retried and eventually dead-lettered, not waited on forever.
    expect(classifyFailure(Object.assign(new Error("connect ECONNREFUSED 10.0.0.1:443"), { code: "ECONNREFUSED" }))).toBe("retriable");
    expect(classifyFailure(Object.assign(new Error("duplicate key"), { code: "23505" }))).toBe("retriable");
    expect(classifyFailure(new TypeError("x is undefined"))).toBe("retriable");
  });
  it("describes the whole chain, bounded", () => {
    expect(describeFailure(new Error("outer", { cause: new TypeError("inner") }))).toBe("Error: outer <- caused by TypeError: inner");
    expect(describeFailure(new Error("x".repeat(5000)), 100)).toHaveLength(100);
  });
});

describe("decodeMessage", () => {
  const raw = (value: string | null, headers: Record<string, string> = {}) => ({ topic: "t", partition: 2, offset: "7", value: value === null ? null : Buffer.from(value), headers });
  const envelope = create(EventEnvelopeSchema, { eventId: "e-1", eventType: "Noted", aggregateType: "Task", aggregateId: "a/b", sequenceNumber: 3n, globalPosition: 42n, metadata: { command_id: "c" }, data: { x: 1 } });

  it("decodes the relay's protobuf JSON", () => {
    const event = decodeMessage(raw(encodeEnvelope(envelope)));
    expect(event).toMatchObject({ eventId: "e-1", aggregateType: "Task", aggregateId: "a/b", seq: 3, globalPosition: 42, data: { x: 1 }, metadata: { command_id: "c" }, topic: "t", partition: 2, offset: "7" });
  });
  it("treats undecodable or invalid envelopes as poison, naming the problem", () => {
    expect(() => decodeMessage(raw("{nope"))).toThrow(PoisonError);
    expect(() => decodeMessage(raw(null))).toThrow(/no value/);
    expect(() => decodeMessage(raw(JSON.stringify({ event_id: "e", event_type: "T", aggregate_type: "A", aggregate_id: "x" })))).toThrow(/sequence_number/);
    expect(() => decodeMessage(raw(JSON.stringify({ event_id: "bad id!", event_type: "T", aggregate_type: "A", aggregate_id: "x", sequence_number: "1" })))).toThrow(/event_id/);
  });
  it("keys a poison message by its event_id header, else by its Kafka coordinates", () => {
    expect(poisonEventId(raw("x", { event_id: "e-9" }))).toBe("e-9");
    expect(poisonEventId(raw("x", { event_id: "not valid!" }))).toBe("kafka:t:2:7");
  });
});

describe("consumer configuration", () => {
  const base = { TIDEMARK_PG_URL: "postgres://u:p@127.0.0.1:5432/db", TIDEMARK_KAFKA_BROKERS: "127.0.0.1:9092" };
  it("defaults to a 30 s lease with a 10 s heartbeat", () => {
    expect(loadConsumerConfig(base)).toMatchObject({ leaseMs: 30_000, heartbeatMs: 10_000, deadLetterTopic: "tidemark.dead-letter", topics: ["tidemark.events"], retentionMs: 7 * 24 * 3_600_000 });
  });
  it("accepts the origin's variable names", () => {
    expect(loadConsumerConfig({ ...base, PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS: "2", PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS: "0.5", ENABLE_PROCESSED_EVENT_REGISTRY: "true" })).toMatchObject({ leaseMs: 2000, heartbeatMs: 500 });
  });
  it("groups up to 64 events for 2 s by default; size 1 turns groups off; nonsense is refused by name", () => {
    expect(loadConsumerConfig(base)).toMatchObject({ maxGroupSize: 64, groupTimeoutMs: 2000 });
    expect(loadConsumerConfig({ ...base, TIDEMARK_CONSUMER_GROUP_SIZE: "1", TIDEMARK_CONSUMER_GROUP_TIMEOUT_MS: "250" })).toMatchObject({ maxGroupSize: 1, groupTimeoutMs: 250 });
    expect(() => loadConsumerConfig({ ...base, TIDEMARK_CONSUMER_GROUP_SIZE: "0" })).toThrow(/TIDEMARK_CONSUMER_GROUP_SIZE/);
  });
  it("refuses a heartbeat that is not below the lease", () => {
    expect(() => loadConsumerConfig({ ...base, PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS: "10", PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS: "10" })).toThrow(ConfigError);
  });
  it("refuses to switch the registry off, and says why", () => {
    let error: unknown;
    try {
      loadConsumerConfig({ ...base, ENABLE_PROCESSED_EVENT_REGISTRY: "false" });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(/ENABLE_PROCESSED_EVENT_REGISTRY.*exactly-once/s);
  });
});

describe("handler API", () => {
  it("checks names and filters by aggregate and event type", () => {
    expect(() => defineHandler({ name: "bad name", handle: async () => {} })).toThrow(/must match/);
    const h = defineHandler({ name: "audit:v1", aggregateTypes: ["Order"], eventTypes: ["OrderPlaced"], handle: async () => {} });
    expect(wants(h, "Order", "OrderPlaced")).toBe(true);
    expect(wants(h, "Order", "OrderShipped")).toBe(false);
    expect(wants(h, "Instance", "OrderPlaced")).toBe(false);
  });
  it("splits instance aggregate ids and refuses malformed ones as poison", () => {
    expect(parseInstanceAggregateId("acme/Person/p-1")).toEqual({ database: "acme", className: "Person", instanceId: "p-1" });
    expect(() => parseInstanceAggregateId("acme/Person")).toThrow(PoisonError);
    expect(() => parseInstanceAggregateId("acme//x")).toThrow(PoisonError);
  });
});
