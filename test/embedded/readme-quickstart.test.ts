/**
 * The README's quick start, exactly: in a fresh copy of the repository (node_modules linked, as
 * `npm install` would leave them), with no service variables, `npm start` runs Tidemark embedded,
 * and the README's grpcurl session works against it. Ctrl-C stops it cleanly; a second `npm start`
 * finds the data again. The one difference from the README: the ports (gRPC and the web console),
 * picked free so that the test does not collide with a server someone else runs on 50051 and 50052.
 * The copy has no console bundle (console/dist is not committed): the server builds it at start.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { background, cleanEnv, freePort, ROOT, type Background } from "../helpers/cli-process.js";
import { findTool } from "../helpers/tools.js";
import { waitFor } from "../helpers/wait-for.js";

let copy: string;
let port: number;
let consolePort: number;
let grpcurl: string;
let npmStart: Background | undefined;

/** Runs grpcurl as the README does (plaintext, reflection); returns stdout, or the error output. */
function call(args: string[]): { ok: boolean; out: string } {
  try {
    return { ok: true, out: execFileSync(grpcurl, ["-plaintext", ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }) };
  } catch (e) {
    const error = e as { stdout?: string; stderr?: string };
    return { ok: false, out: `${error.stdout ?? ""}${error.stderr ?? ""}` };
  }
}

async function startNpm(): Promise<Background> {
  // A test that failed half-way must not leave its process holding the data directory.
  await npmStart?.stop("SIGKILL");
  npmStart = background("npm", ["start"], cleanEnv({ TIDEMARK_GRPC_ADDR: `127.0.0.1:${port}`, TIDEMARK_CONSOLE_ADDR: `127.0.0.1:${consolePort}` }), copy);
  return npmStart;
}

beforeAll(async () => {
  grpcurl = findTool("grpcurl");
  port = await freePort();
  consolePort = await freePort();
  copy = await mkdtemp(path.join(os.tmpdir(), "tidemark-readme-"));
  // The working tree as a clone would have it: tracked and untracked-but-not-ignored files.
  const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT, encoding: "utf8" }).split("\0").filter((f) => f !== "");
  for (const file of files) {
    if (!existsSync(path.join(ROOT, file))) continue;
    await mkdir(path.dirname(path.join(copy, file)), { recursive: true });
    await copyFile(path.join(ROOT, file), path.join(copy, file));
  }
  await symlink(path.join(ROOT, "node_modules"), path.join(copy, "node_modules"), "dir");
});

afterAll(async () => {
  await npmStart?.stop("SIGKILL");
  await rm(copy, { recursive: true, force: true });
});

describe("README quick start", () => {
  it("npm start runs everything embedded and answers the README's grpcurl session", async () => {
    await startNpm();
    const address = `127.0.0.1:${port}`;
    await npmStart!.waitFor(new RegExp(`gRPC\\s+${address.replaceAll(".", "\\.")}`), "the start-up banner", 120_000);
    const banner = npmStart!.stderr();
    expect(banner).toMatch(/embedded mode/);
    expect(banner).toContain(`data      ${path.join(copy, ".tidemark")}`);
    expect(banner).toMatch(/running {3}server, relay \(in process: commit log → consumers\), projection:instances/);
    expect(banner).toContain(`console   http://127.0.0.1:${consolePort}/`);
    await npmStart!.waitFor(/"msg":"tidemark started"/, "the JSON start-up log line");
    const page = await fetch(`http://127.0.0.1:${consolePort}/`);
    expect(await page.text()).toContain("Tidemark console");
    // The server builds the missing bundle beside serving: the script is there once it did.
    await waitFor(async () => (await fetch(`http://127.0.0.1:${consolePort}/console.js`)).status === 200 || undefined, { what: "the console's bundle served", timeoutMs: 60_000 });

    expect(call([address, "list"]).out.split("\n")).toEqual(expect.arrayContaining(["grpc.health.v1.Health", "tidemark.v1.EventStoreService", "tidemark.v1.InstanceService", "tidemark.v1.ProcessingService"]));

    const created = call([
      "-d", '{"database":"demo","class_name":"Person","instance_id":"ada","properties":{"name":"Ada Lovelace","born":1815},"command_id":"cmd-1"}',
      address, "tidemark.v1.InstanceService/CreateInstance",
    ]);
    expect(created.ok, created.out).toBe(true);
    expect(JSON.parse(created.out)).toMatchObject({ result: { sequenceNumber: "1", globalPosition: "1" } });

    const updated = call([
      "-d", '{"database":"demo","class_name":"Person","instance_id":"ada","properties":{"title":"Countess"},"expected_seq":1,"command_id":"cmd-2"}',
      address, "tidemark.v1.InstanceService/UpdateInstance",
    ]);
    expect(JSON.parse(updated.out)).toMatchObject({ result: { sequenceNumber: "2", globalPosition: "2" } });

    const stale = call([
      "-d", '{"database":"demo","class_name":"Person","instance_id":"ada","properties":{"title":"Lady"},"expected_seq":1,"command_id":"cmd-3"}',
      address, "tidemark.v1.InstanceService/UpdateInstance",
    ]);
    expect(stale.ok).toBe(false);
    expect(stale.out).toMatch(/Code: Aborted/);
    expect(stale.out).toMatch(/tidemark\.v1\.ConcurrencyConflict",\s+"actualSeq": "2"/);

    const read = call([
      "-d", '{"database":"demo","class_name":"Person","instance_id":"ada","consistency":"READ_CONSISTENCY_AT_LEAST_POSITION","min_position":2}',
      address, "tidemark.v1.InstanceService/GetInstance",
    ]);
    expect(JSON.parse(read.out)).toMatchObject({ instance: { version: "2", properties: { name: "Ada Lovelace", born: 1815, title: "Countess" } } });

    const stream = call(["-d", '{"aggregate_type":"Instance","aggregate_id":"demo/Person/ada"}', address, "tidemark.v1.EventStoreService/ReadStream"]);
    expect(stream.out).toMatch(/"eventType": "InstanceCreated"[\s\S]*"eventType": "InstanceUpdated"/);

    const status = call(["-d", '{"command_id":"cmd-2"}', address, "tidemark.v1.ProcessingService/GetProcessingStatus"]);
    expect(status.out).toMatch(/"handler": "projection:instances",\s+"state": "PROCESSING_STATE_DONE"/);

    const append = call([
      "-d", '{"aggregate_type":"Order","aggregate_id":"o-1","no_stream":{},"events":[{"event_id":"o-1-placed","event_type":"OrderPlaced","data":{"total":42}}]}',
      address, "tidemark.v1.EventStoreService/AppendEvents",
    ]);
    expect(JSON.parse(append.out)).toMatchObject({ events: [{ eventId: "o-1-placed", sequenceNumber: "1", globalPosition: "3" }] });

    const multi = call([
      "-d", '{"streams":[{"aggregate_type":"Order","aggregate_id":"o-2","no_stream":{},"events":[{"event_id":"o-2-placed","event_type":"OrderPlaced","data":{"total":7}}]},{"aggregate_type":"Stock","aggregate_id":"sku-9","any":{},"events":[{"event_id":"o-2-reserved","event_type":"StockReserved","data":{"qty":1}}]}],"consistency_checks":[{"aggregate_type":"Order","aggregate_id":"o-1","expected_seq":1}]}',
      address, "tidemark.v1.EventStoreService/AppendToStreams",
    ]);
    expect(JSON.parse(multi.out)).toMatchObject({
      streams: [
        { aggregateType: "Order", aggregateId: "o-2", events: [{ eventId: "o-2-placed", sequenceNumber: "1", globalPosition: "4" }] },
        { aggregateType: "Stock", aggregateId: "sku-9", events: [{ eventId: "o-2-reserved", sequenceNumber: "1", globalPosition: "5" }] },
      ],
    });
    const refused = call([
      "-d", '{"streams":[{"aggregate_type":"Order","aggregate_id":"o-2","no_stream":{},"events":[{"event_id":"o-2-placed-again","event_type":"OrderPlaced","data":{"total":8}}]}],"consistency_checks":[{"aggregate_type":"Order","aggregate_id":"o-1","expected_seq":2}]}',
      address, "tidemark.v1.EventStoreService/AppendToStreams",
    ]);
    expect(refused.ok).toBe(false);
    expect(refused.out).toMatch(/Code: Aborted/);
    expect(refused.out).toContain("Message: streams[0] Order/o-2: expected sequence 0, but the head is 1; consistency_checks[0] Order/o-1: expected sequence 2, but the head is 1");
    expect(refused.out).toMatch(/tidemark\.v1\.ConsistencyConflict",\s+"conflicts": \[\s+\{\s+"field": "streams\[0\]",\s+"aggregateType": "Order",\s+"aggregateId": "o-2",\s+"actualSeq": "1"\s+\},\s+\{\s+"field": "consistency_checks\[0\]",\s+"aggregateType": "Order",\s+"aggregateId": "o-1",\s+"expectedSeq": "2",\s+"actualSeq": "1"\s+\}/);

    // Ctrl-C in a terminal signals the whole foreground group: npm and node. npm waits for its
    // child, then ends itself by the same signal.
    expect(await npmStart!.stop("SIGINT")).toBe("SIGINT");
    expect(npmStart!.stderr()).toMatch(/SIGINT received, shutting down[\s\S]*tidemark: stopped/);
    expect(npmStart!.stderr()).not.toMatch(/exiting now/);
    npmStart = undefined;
    expect(existsSync(path.join(copy, ".tidemark", "pg"))).toBe(true);
  });

  it("finds the data again after a restart", async () => {
    await startNpm();
    const address = `127.0.0.1:${port}`;
    await npmStart!.waitFor(new RegExp(`gRPC\\s+${address.replaceAll(".", "\\.")}`), "the start-up banner", 120_000);
    const read = call(["-d", '{"database":"demo","class_name":"Person","instance_id":"ada","consistency":"READ_CONSISTENCY_EVENTUAL"}', address, "tidemark.v1.InstanceService/GetInstance"]);
    expect(JSON.parse(read.out)).toMatchObject({ instance: { version: "2", properties: { title: "Countess" } } });
    const head = call(["-d", '{"aggregate_type":"Order","aggregate_id":"o-1"}', address, "tidemark.v1.EventStoreService/GetStreamHead"]);
    expect(JSON.parse(head.out)).toMatchObject({ head: "1", globalPosition: "3" });
    expect(await npmStart!.stop("SIGTERM")).toBe("SIGTERM");
    expect(npmStart!.stderr()).toMatch(/SIGTERM received, shutting down[\s\S]*tidemark: stopped/);
    npmStart = undefined;
  });
});
