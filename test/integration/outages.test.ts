/**
 * Outages of the real services (docs/CONTRACT.md: S3 / PostgreSQL unreachable → UNAVAILABLE, nothing
 * acknowledged): a TCP forwarder between the server and the service is cut and restored.
 */
import { afterEach, describe, expect, it } from "vitest";
import { collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const DEADLINE_MS = 1500;
const fastSweep = { TIDEMARK_WRITE_DEADLINE_MS: String(DEADLINE_MS), TIDEMARK_SWEEP_INTERVAL_MS: "100" };
const event = (eventId: string) => ({ eventId, eventType: "Noted", data: { n: 1 } });

describe("dependencies unreachable", () => {
  let proxy: TcpProxy | undefined;
  let other: TestServer | undefined;
  afterEach(async () => {
    await other?.close();
    await proxy?.close();
    other = undefined;
    proxy = undefined;
  });

  it("answers UNAVAILABLE when S3 is down, acknowledges nothing, and recovers", async () => {
    const s3 = new URL(testServerConfig().s3Endpoint);
    proxy = await startTcpProxy(s3.hostname, Number(s3.port));
    other = await startTestServer(testServerConfig({ ...fastSweep, TIDEMARK_S3_ENDPOINT: proxy.url(), TIDEMARK_S3_REQUEST_TIMEOUT_MS: "1000" }));
    proxy.down();
    await expectStatus(
      other.events.appendEvents({ aggregateType: "Task", aggregateId: "s3down", expectation: { case: "noStream", value: {} }, events: [event("s3down-1")] }),
      grpc.status.UNAVAILABLE,
    );
    expect(await collect(other.events.readStream({ aggregateType: "Task", aggregateId: "s3down" }))).toEqual([]);
    proxy.up();
    const retry = await waitFor(
      () => other!.events.appendEvents({ aggregateType: "Task", aggregateId: "s3down", expectation: { case: "any", value: {} }, events: [event("s3down-1")] }),
      { what: "the retried append", timeoutMs: DEADLINE_MS + 10_000 },
    );
    const read = await collect(other.events.readStream({ aggregateType: "Task", aggregateId: "s3down" }));
    expect(read.map((r) => [r.event!.eventId, r.event!.sequenceNumber])).toEqual([["s3down-1", retry.events[0]!.sequenceNumber]]);
  });

  it("answers UNAVAILABLE when PostgreSQL is down, and recovers", async () => {
    const pg = new URL(testServerConfig().pgUrl);
    proxy = await startTcpProxy(pg.hostname, Number(pg.port));
    pg.port = String(proxy.port);
    other = await startTestServer(testServerConfig({ TIDEMARK_PG_URL: pg.toString() }));
    proxy.down();
    await expectStatus(
      other.events.appendEvents({ aggregateType: "Task", aggregateId: "pgdown", expectation: { case: "noStream", value: {} }, events: [event("pgdown-1")] }),
      grpc.status.UNAVAILABLE,
    );
    proxy.up();
    const ok = await waitFor(
      () => other!.events.appendEvents({ aggregateType: "Task", aggregateId: "pgdown", expectation: { case: "noStream", value: {} }, events: [event("pgdown-1")] }),
      { what: "the append after recovery" },
    );
    expect(ok.events[0]!.sequenceNumber).toBe(1n);
  });
});
