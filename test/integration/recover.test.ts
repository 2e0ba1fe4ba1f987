/**
 * `tidemark recover` against the real PostgreSQL and S3Proxy (docs/OPERATIONS.md "Recovering from
 * S3 alone"): writers append through a server; the schema is dropped while they do; `recover`
 * refuses while the server runs, then — the server stopped — rebuilds the log from the segments,
 * with progress on stderr, and a second run finds nothing to do. A new server reads back every
 * acknowledged event at its seq, in order, and appends continue at the recovered heads.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase } from "../../core/db/database.js";
import { collect } from "../helpers/grpc-errors.js";
import { cleanEnv, tidemark } from "../helpers/cli-process.js";
import { stackEnv, startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const config = testServerConfig();
const STREAMS = 6;
let t: TestServer | undefined;
let env: Record<string, string>;
/** Acknowledged appends: per stream, the event ids by seq. */
const acked = new Map<string, Map<number, string>>();
let ackCount = 0;

const dropSchema = async () => {
  const database = createDatabase({ url: config.pgUrl, schema: config.pgSchema, poolSize: 1 });
  await sql`drop schema if exists ${sql.id(config.pgSchema)} cascade`.execute(database.db);
  await database.close();
};

/** Appends to its stream until stopped, each with the exact expectation; records what was acknowledged. */
async function writer(server: TestServer, stream: string, stop: AbortSignal): Promise<void> {
  const mine = new Map<number, string>();
  acked.set(stream, mine);
  let head = 0;
  for (let i = 0; !stop.aborted; i++) {
    const eventId = `${stream}-e${i}`;
    try {
      const out = await server.events.appendEvents({
        aggregateType: "Ledger",
        aggregateId: stream,
        expectation: { case: "expectedSeq", value: BigInt(head) },
        events: [{ eventId, eventType: "Posted", data: { i } as never }, { eventId: `${eventId}b`, eventType: "Posted", data: { i, b: true } as never }],
      });
      for (const e of out.events) mine.set(Number(e.sequenceNumber), e.eventId);
      head = Number(out.events[out.events.length - 1]!.sequenceNumber);
      ackCount += out.events.length;
    } catch {
      // After the drop every append fails; the writer keeps trying until it is stopped.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

beforeAll(async () => {
  env = cleanEnv({ ...stackEnv(), TIDEMARK_PG_SCHEMA: config.pgSchema, TIDEMARK_S3_BUCKET: config.s3Bucket, TIDEMARK_LOG_LEVEL: "warn" });
  t = await startTestServer(config);
});

afterAll(async () => {
  await t?.close();
});

describe("tidemark recover", () => {
  it("refuses while a server serves, then rebuilds the log from S3 after the schema was dropped mid-run", { timeout: 120_000 }, async () => {
    const stop = new AbortController();
    const writers = Array.from({ length: STREAMS }, (_, i) => writer(t!, `acct-${i}`, stop.signal));
    await waitFor(() => ackCount >= 120, { timeoutMs: 30_000, what: "acknowledged appends before the drop" });
    await dropSchema();
    const atDrop = ackCount;

    const refused = await tidemark(["recover"], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/refused: a server is serving schema/);

    stop.abort();
    await Promise.all(writers);
    await t!.stop();
    t = undefined;
    expect(ackCount).toBeGreaterThanOrEqual(atDrop);

    const first = await tidemark(["recover"], env, { timeoutMs: 90_000 });
    expect(first.stderr).toMatch(/recover segments +segments (\d+)\/\1 +events \d+/);
    expect(first.stderr).toMatch(/events\/s/);
    expect(first.stdout).toMatch(/recovered \d+ events from \d+ segments/);
    expect(first.code, first.stderr).toBe(0);

    const second = await tidemark(["recover"], env);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/nothing to recover/);

    // The rebuilt log and the bucket agree, hash chains included.
    const verified = await tidemark(["verify"], env);
    expect(verified.code, verified.stdout).toBe(0);

    t = await startTestServer(config);
    let total = 0;
    for (const [stream, bySeq] of acked) {
      const read = await collect(t.events.readStream({ aggregateType: "Ledger", aggregateId: stream }));
      const seqs = read.map((r) => Number(r.event!.sequenceNumber));
      // In order and contiguous: no acknowledged event lost, none twice.
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
      const positions = read.map((r) => r.event!.globalPosition);
      expect([...positions].sort((a, b) => (a < b ? -1 : 1))).toEqual(positions);
      for (const [seq, eventId] of bySeq) {
        expect(read[seq - 1]?.event?.eventId, `${stream} seq ${seq}`).toBe(eventId);
        total += 1;
      }
      const head = await t.events.getStreamHead({ aggregateType: "Ledger", aggregateId: stream });
      expect(Number(head.head)).toBe(read.length);
      const next = await t.events.appendEvents({
        aggregateType: "Ledger",
        aggregateId: stream,
        expectation: { case: "expectedSeq", value: BigInt(read.length) },
        events: [{ eventId: `${stream}-after`, eventType: "Posted", data: {} as never }],
      });
      expect(Number(next.events[0]!.sequenceNumber)).toBe(read.length + 1);
    }
    expect(total).toBe(ackCount);
    // The appends after the recovery continue each stream's hash chain.
    const after = await tidemark(["verify", "--json"], env);
    expect(JSON.parse(after.stdout)).toMatchObject({ clean: true, unverifiedLinks: 0 });
  });

  it("lists itself in the help", async () => {
    const help = await tidemark(["--help"], env);
    expect(help.stdout).toMatch(/^ {2}recover\b/m);
    expect(help.stdout).toMatch(/^ {2}verify\b/m);
  });
});
