/**
 * `tidemark verify` against the real PostgreSQL and S3Proxy (docs/OPERATIONS.md "Verifying the
 * store"): clean on a store a server wrote; exit 1 naming the event when a segment is rewritten
 * behind the store's back (an event changed, removed, or two reordered — the hash chain shows the
 * last two even where the content hashes still match), when a segment is deleted, and when a log
 * row points at bytes that are not its event. Each case restores the store before the next.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeSegment, type SegmentEvent } from "../../core/segment.js";
import { cleanEnv, tidemark } from "../helpers/cli-process.js";
import { rawS3 } from "../helpers/relay-s3.js";
import { storedEvent, storedSegments } from "../helpers/stored-events.js";
import { stackEnv, startTestServer, type TestServer } from "../helpers/test-server.js";

let t: TestServer;
let env: Record<string, string>;
let s3: ReturnType<typeof rawS3>;

const ev = (eventId: string, n: number) => ({ eventId, eventType: "Noted", data: { n } as never });

/** The segment holding `stream`'s events (each case appends its stream in one call: one segment). */
async function segmentOf(stream: string) {
  const first = (await storedEvent(t.server.objects, "Doc", stream, 1))!;
  const segment = (await storedSegments(t.server.objects)).find((s) => s.key === first.key)!;
  const original = (await t.server.objects.read(first.key))!;
  return { segment, original, key: first.key };
}

/** Writes `events` as segment `key` behind the store's back, runs verify, puts the original back. */
async function tampered(key: string, original: Buffer, body: Uint8Array): Promise<{ code: number | null; stdout: string; json: { counts: Record<string, number>; anomalies: Array<{ kind: string; eventId?: string }> } }> {
  await s3.put(key, body);
  try {
    const text = await tidemark(["verify"], env);
    const json = await tidemark(["verify", "--json"], env);
    return { code: text.code, stdout: text.stdout, json: JSON.parse(json.stdout) };
  } finally {
    await s3.put(key, original);
  }
}

function rebuilt(segment: { content: { segment: number; type: string }; events: ReadonlyArray<{ eventId: string; aggregateType: string; aggregateId: string; seq: number; json: string }> }, events: readonly SegmentEvent[]): Buffer {
  return encodeSegment(segment.content.segment, new Date(), events).body;
}

beforeAll(async () => {
  t = await startTestServer();
  env = cleanEnv({ ...stackEnv(), TIDEMARK_PG_SCHEMA: t.config.pgSchema, TIDEMARK_S3_BUCKET: t.config.s3Bucket, TIDEMARK_LOG_LEVEL: "warn" });
  s3 = rawS3(t.config.s3Bucket);
  for (const stream of ["chg", "rm", "ro", "del", "ptr"]) {
    await t.events.appendEvents({ aggregateType: "Doc", aggregateId: stream, expectation: { case: "noStream", value: {} }, events: [ev(`${stream}-1`, 1), ev(`${stream}-2`, 2), ev(`${stream}-3`, 3)] });
  }
  // A stream over several segments, so the chain crosses segment boundaries.
  for (let i = 1; i <= 4; i++) await t.events.appendEvents({ aggregateType: "Doc", aggregateId: "long", expectation: { case: "any", value: {} }, events: [ev(`long-${i}`, i)] });
});

afterAll(async () => {
  s3?.close();
  await t?.close();
});

describe("tidemark verify", () => {
  it("finds a store a server wrote clean (exit 0), in text and JSON", async () => {
    const text = await tidemark(["verify"], env);
    expect(text.code, text.stdout + text.stderr).toBe(0);
    expect(text.stdout).toMatch(/verified 19 events in \d+ segments/);
    expect(text.stdout).toMatch(/clean/);
    expect(text.stderr).toMatch(/verify segments (\d+)\/\1/);
    const json = await tidemark(["verify", "--json"], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ clean: true, events: 19, streams: 6, anomalies: [] });
  });

  it("names an event whose bytes in S3 changed (exit 1)", async () => {
    const { segment, original, key } = await segmentOf("chg");
    const events = segment.events.map((e) => ({ ...e, json: e.eventId === "chg-2" ? e.json.replace('"n":2', '"n":20') : e.json }));
    const out = await tampered(key, original, rebuilt(segment, events));
    expect(out.code).toBe(1);
    expect(out.stdout).toMatch(/content-hash-mismatch: event chg-2 /);
    expect(out.json.anomalies).toContainEqual(expect.objectContaining({ kind: "content-hash-mismatch", eventId: "chg-2" }));
  });

  it("names an event removed from its segment, and the chain breaks at its successor (exit 1)", async () => {
    const { segment, original, key } = await segmentOf("rm");
    const out = await tampered(key, original, rebuilt(segment, segment.events.filter((e) => e.eventId !== "rm-2")));
    expect(out.code).toBe(1);
    expect(out.json.anomalies).toContainEqual(expect.objectContaining({ kind: "committed-event-missing", eventId: "rm-2" }));
    expect(out.stdout).toMatch(/committed-event-missing: event rm-2 /);
    expect(out.json.anomalies).toContainEqual(expect.objectContaining({ kind: "chain-broken", eventId: "rm-3" }));
  });

  it("sees two events swapped in their stream through the hash chain, though each content hash still matches (exit 1)", async () => {
    const { segment, original, key } = await segmentOf("ro");
    const [a, b, c] = segment.events;
    // Event 2 moved to seq 1 and event 1 to seq 2: content hashes do not cover the seq.
    const swap = (e: typeof a, seq: number) => ({ ...e!, seq, json: e!.json.replace(`"sequence_number":"${e!.seq}"`, `"sequence_number":"${seq}"`) });
    const out = await tampered(key, original, rebuilt(segment, [swap(b, 1), swap(a, 2), c!]));
    expect(out.code).toBe(1);
    expect(out.json.counts["content-hash-mismatch"]).toBeUndefined();
    expect(out.json.anomalies).toContainEqual(expect.objectContaining({ kind: "chain-broken", eventId: "ro-2" }));
    expect(out.json.anomalies).toContainEqual(expect.objectContaining({ kind: "chain-broken", eventId: "ro-1" }));
  });

  it("reports a deleted segment and each committed event it held (exit 1)", async () => {
    const { original, key } = await segmentOf("del");
    await s3.delete(key);
    try {
      const out = await tidemark(["verify"], env);
      expect(out.code).toBe(1);
      expect(out.stdout).toMatch(/segment-missing: segment \d+ .* not in S3/);
      for (const id of ["del-1", "del-2", "del-3"]) expect(out.stdout).toMatch(new RegExp(`committed-event-missing: event ${id} `));
    } finally {
      await s3.put(key, original);
    }
  });

  it("reports a log row that points at bytes that are not its event (exit 1), and is clean again once restored", async () => {
    const db = t.server.database.db;
    await sql`update event_log set segment_offset = segment_offset + 1 where event_id = 'ptr-2'`.execute(db);
    try {
      const out = await tidemark(["verify"], env);
      expect(out.code).toBe(1);
      expect(out.stdout).toMatch(/log-mismatch: event ptr-2 .*the log holds ptr-2 at segment \d+ bytes/);
    } finally {
      await sql`update event_log set segment_offset = segment_offset - 1 where event_id = 'ptr-2'`.execute(db);
    }
    const again = await tidemark(["verify"], env);
    expect(again.code, again.stdout).toBe(0);
  });

  it("exits 2 on a usage error", async () => {
    expect((await tidemark(["verify", "--max-anomalies", "x"], env)).code).toBe(2);
  });
});
