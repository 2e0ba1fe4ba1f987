/**
 * Outages of the real services (docs/CONTRACT.md: S3 / PostgreSQL unreachable → UNAVAILABLE, nothing
 * acknowledged): a TCP forwarder between the server and the service is cut and restored.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { storedEvents } from "../helpers/stored-events.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const DEADLINE_MS = 1500;
const fastSweep = { TIDEMARK_WRITE_DEADLINE_MS: String(DEADLINE_MS), TIDEMARK_SWEEP_INTERVAL_MS: "100" };
const event = (eventId: string) => ({ eventId, eventType: "Noted", data: { n: 1 } });

/**
 * An HTTP front for the stack's S3: each LIST of `segments/` goes to `onList`, which either answers
 * it itself (true), calling `forward` when it wants it sent on after all, or lets it through
 * (false); every other request is forwarded as sent (SigV4 signatures stay valid).
 */
async function s3Front(onList: (res: http.ServerResponse, forward: () => void) => boolean): Promise<{ url: string; close: () => Promise<void> }> {
  const s3 = new URL(testServerConfig().s3Endpoint);
  const server = http.createServer((req, res) => {
    const forward = () => {
      const upstream = http.request({ host: s3.hostname, port: Number(s3.port), method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on("error", () => res.destroy());
      req.pipe(upstream);
    };
    const isList = req.method === "GET" && req.url?.includes("list-type=2") === true && req.url.includes("prefix=segments");
    if (isList && onList(res, forward)) return;
    forward();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * Starts a server whose LISTs of segments/ pass `onList` (see {@link s3Front}), runs `started` on
 * what its start met, and has it take a first append; then stops the server and the front.
 */
async function appendThroughFront(onList: Parameters<typeof s3Front>[0], env: Record<string, string>, aggregateId: string, started: () => void): Promise<void> {
  const front = await s3Front(onList);
  let server: TestServer | undefined;
  try {
    server = await startTestServer(testServerConfig({ TIDEMARK_S3_ENDPOINT: front.url, ...env }));
    started();
    const out = await server.events.appendEvents({ aggregateType: "Task", aggregateId, expectation: { case: "noStream", value: {} }, events: [event(`${aggregateId}-1`)] });
    expect(out.events[0]!.sequenceNumber).toBe(1n);
  } finally {
    await server?.close();
    await front.close();
  }
}

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

  it("fails every append of a segment whose PUT fails, commits none, and closes the number", async () => {
    const s3 = new URL(testServerConfig().s3Endpoint);
    proxy = await startTcpProxy(s3.hostname, Number(s3.port));
    // One flush at a time: appends arriving while it fails queue and share the next segment.
    other = await startTestServer(testServerConfig({ ...fastSweep, TIDEMARK_S3_ENDPOINT: proxy.url(), TIDEMARK_S3_REQUEST_TIMEOUT_MS: "1000", TIDEMARK_SEGMENT_MAX_IN_FLIGHT: "1" }));
    proxy.down();
    const ids = Array.from({ length: 8 }, (_, i) => `seg-down-${i}`);
    const outcomes = await Promise.allSettled(
      ids.map((id) => other!.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [event(`${id}-e`)] })),
    );
    expect(outcomes.map((o) => (o.status === "rejected" ? grpc.status[(o.reason as grpc.ServiceError).code] : "OK"))).toEqual(ids.map(() => "UNAVAILABLE"));
    const db = other.server.database.db;
    const rows = await db.selectFrom("event_log").select(["event_id", "state", "segment"]).where("event_id", "in", ids.map((id) => `${id}-e`)).execute();
    expect(rows.filter((r) => r.state === "committed")).toEqual([]);
    // They shared segments: a failed PUT failed several appends at once.
    const perSegment = new Map<number, number>();
    for (const r of rows) if (r.segment !== null) perSegment.set(r.segment, (perSegment.get(r.segment) ?? 0) + 1);
    expect(Math.max(...perSegment.values())).toBeGreaterThan(1);

    // Once S3 is back each number is settled: closed with a void segment, its slots void.
    proxy.up();
    // A slot no flush took before its call failed has no segment: the sweep closes it on its own.
    await waitFor(
      async () => (await db.selectFrom("segments").select("state").where("segment", "in", [...perSegment.keys()]).execute()).every((r) => r.state === "void"),
      { what: "the failed segments to be closed", timeoutMs: DEADLINE_MS + 10_000 },
    );
    const slots = () => db.selectFrom("event_log").select("state").where("event_id", "in", ids.map((id) => `${id}-e`)).execute();
    await waitFor(async () => (await slots()).every((r) => r.state !== "pending"), { what: "every slot to be settled", timeoutMs: DEADLINE_MS + 10_000 });
    expect(new Set((await slots()).map((r) => r.state))).toEqual(new Set(["void"]));
    expect((await storedEvents(other.server.objects)).filter((e) => e.aggregateId.startsWith("seg-down-"))).toEqual([]);
    for (const id of ids) expect(await collect(other.events.readStream({ aggregateType: "Task", aggregateId: id }))).toEqual([]);
  });

  it("starts through a LIST of the segments that fails at first, instead of exiting", async () => {
    // The first LISTs of segments/ get 503 SlowDown, more than the SDK's own three attempts, so
    // the start's catch-up sees an outage.
    const refuse = 4;
    let refused = 0;
    await appendThroughFront(
      (res) => {
        if (refused >= refuse) return false;
        refused += 1;
        res.writeHead(503, { "content-type": "application/xml" }).end("<Error><Code>SlowDown</Code><Message>slow down</Message></Error>");
        return true;
      },
      {},
      "slowlist",
      () => expect(refused).toBe(refuse),
    );
  });

  it("gives a LIST longer than the request timeout of a PUT or GET", async () => {
    // Every LIST of segments/ answers after twice TIDEMARK_S3_REQUEST_TIMEOUT_MS (a server that
    // reads a whole prefix to answer one, as S3Proxy's file backend does for a large bucket).
    let delayed = 0;
    await appendThroughFront(
      (_res, forward) => {
        delayed += 1;
        setTimeout(forward, 2000);
        return true;
      },
      { TIDEMARK_S3_REQUEST_TIMEOUT_MS: "1000" },
      "longlist",
      () => expect(delayed).toBe(1),
    );
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
