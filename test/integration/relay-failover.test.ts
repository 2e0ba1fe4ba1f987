/**
 * One active relay (docs/CONTRACT.md R5) with real processes: a standby takes over within the lease
 * when the active relay is killed, and a relay that was frozen past its lease (SIGSTOP, like a long
 * GC pause) cannot move the checkpoint and stops producing when it wakes up.
 */
import { sql, type Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { acquireLease, advanceCheckpoint, readCheckpoint, readLease } from "../../relay/relay-repository.js";
import { writeSideView, type RelayTables } from "../../core/db/schema.js";
import { copiesByEvent, deleteTopics, orderViolations, startCollector } from "../helpers/relay-kafka.js";
import { killAllRelays, spawnRelay, type RelayProcess } from "../helpers/relay-process.js";
import { relayEnv, relayTopics } from "../helpers/relay-test.js";
import { startTestServer, stackBrokers, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const LEASE_MS = 3000;
const topics: string[] = [];

let t: TestServer;
let db: Kysely<RelayTables>;

beforeAll(async () => {
  t = await startTestServer();
  db = t.server.database.db as unknown as Kysely<RelayTables>;
  // Test-only audit of every checkpoint write, to prove which lease token wrote what.
  await sql`create table checkpoint_audit (name text, position bigint, fencing_token bigint, at timestamptz default clock_timestamp())`.execute(db);
  await sql`
    create function audit_checkpoint() returns trigger language plpgsql as $$
    begin
      insert into checkpoint_audit (name, position, fencing_token) values (new.name, new.position, new.fencing_token);
      return new;
    end $$`.execute(db);
});

afterAll(async () => {
  await killAllRelays();
  await deleteTopics(stackBrokers(), topics);
  await t?.close();
});

/** Appends events one at a time (each waits for the previous OK) until stopped; returns the ids written. */
function backgroundWriter(prefix: string) {
  const ids: string[] = [];
  let stopped = false;
  const done = (async () => {
    for (let i = 0; !stopped; i++) {
      const id = `${prefix}-${i}`;
      await t.events.appendEvents({ aggregateType: "Fail", aggregateId: `a${i % 5}`, expectation: { case: "any", value: {} }, events: [{ eventId: id, eventType: "Noted", data: { i } as never }] });
      ids.push(id);
    }
  })();
  return {
    ids,
    async stop() {
      stopped = true;
      await done;
      return ids;
    },
  };
}

async function holderPid(name: string): Promise<number | undefined> {
  const lease = await readLease(db, name);
  if (lease === undefined || lease.expired) return undefined;
  return Number(lease.holder.split(":")[1]);
}

/** Every committed event id of the schema (a relay starting at checkpoint 0 publishes all of them). */
async function committedIds(): Promise<string[]> {
  const rows = await writeSideView(db).selectFrom("event_log").select("event_id").where("state", "=", "committed").execute();
  return rows.map((r) => r.event_id);
}

async function head(): Promise<number> {
  return (await writeSideView(db).selectFrom("global_counter").select("position").executeTakeFirstOrThrow()).position;
}

function setup(name: string) {
  const names = relayTopics("rf");
  topics.push(names.topic, names.deadLetter);
  const env = relayEnv(t.config, { TIDEMARK_RELAY_NAME: name, TIDEMARK_RELAY_TOPIC: names.topic, TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter, TIDEMARK_RELAY_LEASE_MS: String(LEASE_MS), TIDEMARK_LOG_LEVEL: "info" });
  return { names, env };
}

describe("R5 one active relay", () => {
  it("lets the standby take over within the lease after the active relay is killed, losing nothing", { timeout: 120_000 }, async () => {
    const { names, env } = setup("pair");
    const relays = [spawnRelay(env), spawnRelay(env)];
    const activePid = await waitFor(() => holderPid("pair"), { what: "one relay to hold the lease" });
    const active = relays.find((r) => r.pid === activePid)!;
    const standby = relays.find((r) => r.pid !== activePid)!;
    await active.waitForLine((l) => l["msg"] === "relay publishing from the checkpoint", "the active relay to publish");
    const kafka = await startCollector(stackBrokers(), [names.topic]);
    const writer = backgroundWriter("pair");
    try {
      await kafka.waitUntil((m) => m.length >= 20, "the active relay's first messages");
      const standbyLines = standby.lines.length;
      expect(standby.lines.some((l) => l["msg"] === "relay publishing from the checkpoint")).toBe(false);

      active.signal("SIGKILL");
      const killedAt = Date.now();
      await active.exited;
      await waitFor(() => holderPid("pair").then((pid) => pid === standby.pid), { timeoutMs: 3 * LEASE_MS, intervalMs: 20, what: "the standby to take the lease" });
      const takeoverMs = Date.now() - killedAt;
      // Within the lease (plus one acquisition attempt interval and scheduling slack).
      expect(takeoverMs).toBeLessThan(LEASE_MS + LEASE_MS / 8 + 1000);
      await standby.waitForLine((l) => l["msg"] === "relay publishing from the checkpoint", "the standby to publish");
      expect(standby.lines.length).toBeGreaterThan(standbyLines);

      const written = await writer.stop();
      const end = await head();
      await waitFor(async () => (await readCheckpoint(db, "pair")).position === end, { timeoutMs: 60_000, what: "the new active relay to catch up" });
      const committed = await committedIds();
      expect(committed).toEqual(expect.arrayContaining(written));
      await kafka.waitForEvents(committed);
      const copies = copiesByEvent(kafka.messages);
      expect(copies.size).toBe(committed.length);
      expect(orderViolations(kafka.messages)).toEqual([]);
    } finally {
      await writer.stop();
      await kafka.close();
    }
  });

  it("fences a relay frozen past its lease: it cannot move the checkpoint and stops producing", { timeout: 120_000 }, async () => {
    const { names, env } = setup("zombie");
    const a: RelayProcess = spawnRelay(env);
    await waitFor(() => holderPid("zombie").then((pid) => pid === a.pid), { what: "relay A to hold the lease" });
    const tokenA = Number((await a.waitForLine((l) => l["msg"] === "relay publishing from the checkpoint", "relay A to publish"))["token"]);
    const b = spawnRelay(env);
    // B must be standing by before A freezes: its start-up (seconds on a loaded machine) is not part of the take-over.
    await b.waitForLine((l) => l["msg"] === "relay readiness" && l["readiness"] === "standby", "relay B to stand by");
    await sql`create trigger audit after insert or update on relay_checkpoints for each row execute function audit_checkpoint()`.execute(db);
    const kafka = await startCollector(stackBrokers(), [names.topic]);
    const writer = backgroundWriter("zombie");
    try {
      await kafka.waitUntil((m) => m.length >= 10, "relay A's first messages");
      a.signal("SIGSTOP");
      await waitFor(() => holderPid("zombie").then((pid) => pid === b.pid), { timeoutMs: 3 * LEASE_MS, intervalMs: 20, what: "relay B to take over from the frozen relay" });
      const tokenB = (await readLease(db, "zombie"))!.token;
      expect(tokenB).toBeGreaterThan(tokenA);
      await waitFor(async () => (await readCheckpoint(db, "zombie")).fencingToken === tokenB, { timeoutMs: 60_000, what: "relay B to checkpoint" });

      const resumedAt = new Date();
      a.signal("SIGCONT");
      await a.waitForLine((l) => l["msg"] === "relay lost the lease; standing by", "relay A to step down");
      const written = await writer.stop();
      const end = await head();
      await waitFor(async () => (await readCheckpoint(db, "zombie")).position === end, { timeoutMs: 60_000, what: "relay B to catch up" });
      const committed = await committedIds();
      expect(committed).toEqual(expect.arrayContaining(written));
      await kafka.waitForEvents(committed);

      // No checkpoint write under A's token after it woke up; B's token owns the checkpoint.
      const lateWrites = await sql<{ n: string }>`
        select count(*) as n from checkpoint_audit where name = 'zombie' and fencing_token = ${tokenA} and at >= ${resumedAt}`.execute(db);
      expect(Number(lateWrites.rows[0]!.n)).toBe(0);
      const positions = await sql<{ position: string }>`select position from checkpoint_audit where name = 'zombie' order by at`.execute(db);
      const seq = positions.rows.map((r) => Number(r.position));
      expect(seq).toEqual([...seq].sort((x, y) => x - y));
      const holder = (await readLease(db, "zombie"))!;
      expect(holder.holder.split(":")[1] === String(b.pid) || holder.token > tokenB).toBe(true);
      // A stood by: once woken it never published again under an old term. (On a loaded machine a
      // relay can miss a renewal: A may have re-won the lease before it was frozen, and may win a
      // later one after B — each time with a new token, and after waking only with one above B's.)
      const terms = a.lines.filter((l) => l["msg"] === "relay publishing from the checkpoint");
      const tokens = terms.map((l) => Number(l["token"]));
      expect(tokens[0]).toBe(tokenA);
      expect(tokens).toEqual([...new Set(tokens)].sort((x, y) => x - y));
      for (const line of terms) {
        if (Date.parse(String(line["time"])) >= resumedAt.getTime()) expect(Number(line["token"])).toBeGreaterThan(tokenB);
      }
      expect(copiesByEvent(kafka.messages).size).toBe(committed.length);
      expect(orderViolations(kafka.messages)).toEqual([]);
    } finally {
      await writer.stop();
      await kafka.close();
      await sql`drop trigger if exists audit on relay_checkpoints`.execute(db);
    }
  });

  it("refuses a checkpoint write under a superseded or expired token, by the database's clock", async () => {
    const name = "tokens";
    const first = (await acquireLease(db, name, "host:1:a", 60_000))!;
    expect(await advanceCheckpoint(db, name, first.token, 5)).toBe(true);
    // A second holder cannot take a running lease.
    expect(await acquireLease(db, name, "host:2:b", 60_000)).toBeUndefined();
    // Once it expires (database clock), the next holder gets a higher token …
    await sql`update relay_leases set expires_at = now() - interval '1 second' where name = ${name}`.execute(db);
    expect(await advanceCheckpoint(db, name, first.token, 6)).toBe(false);
    const second = (await acquireLease(db, name, "host:2:b", 60_000))!;
    expect(second.token).toBe(first.token + 1);
    // … and the old holder can no longer move the checkpoint, not even forward.
    expect(await advanceCheckpoint(db, name, first.token, 100)).toBe(false);
    expect(await readCheckpoint(db, name)).toEqual({ position: 5, fencingToken: first.token });
    expect(await advanceCheckpoint(db, name, second.token, 7)).toBe(true);
    expect(await readCheckpoint(db, name)).toEqual({ position: 7, fencingToken: second.token });
  });
});
