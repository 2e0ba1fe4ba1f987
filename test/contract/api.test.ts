/**
 * The API surface (docs/CONTRACT.md A1): reflection and a session with real grpcurl, the standard health
 * service, graceful shutdown, and Subscribe (catch-up, caught-up marker, live, resume).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../../gen/grpc/health/v1/health_pb.js";
import { createClient } from "../../server/grpc/client.js";
import { expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { findTool } from "../helpers/tools.js";
import type { SlotRow } from "../../core/event-log.js";
import type { SubscribeResponse } from "../../gen/tidemark/v1/event_store_pb.js";

const run = promisify(execFile);
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

async function grpcurl(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const out = await run(findTool("grpcurl"), ["-plaintext", ...args]);
    return { ...out, code: 0 };
  } catch (e) {
    const err = e as { stdout: string; stderr: string; code: number };
    return { stdout: err.stdout, stderr: err.stderr, code: err.code };
  }
}

describe("grpcurl with reflection only", () => {
  it("lists both services and the standard ones", async () => {
    const { stdout, code } = await grpcurl(t.server.address, "list");
    expect(code).toBe(0);
    const services = stdout.trim().split("\n");
    expect(services).toEqual(expect.arrayContaining(["tidemark.v1.EventStoreService", "tidemark.v1.InstanceService", "grpc.health.v1.Health"]));
  });

  it("describes messages, creates an instance and shows a conflict's actual seq", async () => {
    const described = await grpcurl(t.server.address, "describe", "tidemark.v1.AppendEventsRequest");
    expect(described.stdout).toMatch(/oneof expectation/);

    const create = await grpcurl(
      "-d", JSON.stringify({ database: "demo", class_name: "Person", instance_id: "ada", properties: { name: "Ada" }, command_id: "cli-1" }),
      t.server.address, "tidemark.v1.InstanceService/CreateInstance",
    );
    expect(create.code).toBe(0);
    expect(JSON.parse(create.stdout)).toMatchObject({ result: { sequenceNumber: "1" } });

    const conflict = await grpcurl(
      "-d", JSON.stringify({ database: "demo", class_name: "Person", instance_id: "ada", properties: { name: "Grace" }, expected_seq: 0, command_id: "cli-2" }),
      t.server.address, "tidemark.v1.InstanceService/UpdateInstance",
    );
    expect(conflict.code).not.toBe(0);
    expect(conflict.stderr).toMatch(/Code: Aborted/);
    expect(conflict.stderr).toMatch(/tidemark\.v1\.ConcurrencyConflict/);
    expect(conflict.stderr).toMatch(/"actual_?[sS]eq": "1"/);
  });

  it("answers the standard health check", async () => {
    const { stdout } = await grpcurl(t.server.address, "grpc.health.v1.Health/Check");
    expect(JSON.parse(stdout)).toEqual({ status: "SERVING" });
  });
});

describe("graceful shutdown", () => {
  it("stops taking calls, lets in-flight calls finish, and reports NOT_SERVING", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const atGate = new Promise<void>((r) => (reached = r));
    const other = await startTestServer(testServerConfig(), {
      beforeWrite: async (slot: SlotRow) => {
        if (slot.eventId === "inflight") {
          reached();
          await gate;
        }
      },
    });
    const health = createClient(Health, other.server.address);
    try {
      const inflight = other.events.appendEvents({ aggregateType: "Job", aggregateId: "j", expectation: { case: "noStream", value: {} }, events: [{ eventId: "inflight", eventType: "Started" }] });
      await atGate;
      const stopping = other.server.stop(10_000);
      expect(other.server.health.get("")).toBe(Serving.NOT_SERVING);
      release();
      const done = await inflight;
      expect(done.events[0]!.sequenceNumber).toBe(1n);
      await stopping;
      await expectStatus(health.check({}, { deadlineMs: 2000 }), grpc.status.UNAVAILABLE);
    } finally {
      health.close();
      await other.close();
    }
  });
});

describe("Subscribe", () => {
  async function take(stream: AsyncIterator<SubscribeResponse>, n: number): Promise<SubscribeResponse[]> {
    const out: SubscribeResponse[] = [];
    while (out.length < n) {
      const next = await stream.next();
      if (next.done) throw new Error("stream ended early");
      out.push(next.value);
    }
    return out;
  }
  const append = (aggregateType: string, id: string) =>
    t.events.appendEvents({ aggregateType, aggregateId: id, expectation: { case: "any", value: {} }, events: [{ eventId: id, eventType: "Ticked" }] });

  it("catches up, marks the end of catch-up, goes live, and resumes with no gap and no repeat", async () => {
    for (const id of ["s1", "s2", "s3"]) await append("SubA", id);
    await append("SubB", "b1");

    const controller = new AbortController();
    const stream = t.events.subscribe({ start: { case: "afterPosition", value: 0n }, aggregateTypes: ["SubA"] }, { signal: controller.signal })[Symbol.asyncIterator]();
    const catchUp = await take(stream, 4);
    expect(catchUp.slice(0, 3).map((m) => m.message.case === "event" && m.message.value.eventId)).toEqual(["s1", "s2", "s3"]);
    expect(catchUp[3]!.message.case).toBe("caughtUp");

    await append("SubA", "s4");
    await append("SubB", "b2");
    await append("SubA", "s5");
    const live = await take(stream, 2);
    expect(live.map((m) => m.message.case === "event" && m.message.value.eventId)).toEqual(["s4", "s5"]);
    controller.abort();

    const resume = t.events.subscribe({ start: { case: "afterPosition", value: live[0]!.position } }, {})[Symbol.asyncIterator]();
    const rest = await take(resume, 3);
    expect(rest.map((m) => (m.message.case === "event" ? m.message.value.eventId : m.message.case))).toEqual(["b2", "s5", "caughtUp"]);
    await resume.return?.();
  });

  it("refuses a subscription without a start", async () => {
    const stream = t.events.subscribe({})[Symbol.asyncIterator]();
    await expectStatus(stream.next(), grpc.status.INVALID_ARGUMENT);
  });
});
