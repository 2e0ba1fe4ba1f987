/**
 * `npm run build` and the compiled CLI: the build (tsc into a directory of its own, so the other
 * files' `tidemark` runs are not disturbed) runs as plain JavaScript — a hook refuses any
 * TypeScript module and tsx — through the `tidemark` bin (`--help`, `--version`) and as
 * `node dist/cli/main.js start`, which migrates with the SQL functions copied beside the compiled
 * code and serves an append and a read over gRPC; the compiled server finds the console's front-end
 * in the package, as the CLI finds package.json and scripts/stack.sh.
 */
import { spawnSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../../server/grpc/client.js";
import { background, cleanEnv, freePort, ROOT, tidemark, type Background } from "../helpers/cli-process.js";

const NO_TYPESCRIPT = path.join(ROOT, "test/helpers/no-typescript.mjs");

let build: string;
let dataDir: string;
let server: Background | undefined;

beforeAll(async () => {
  build = await mkdtemp(path.join(ROOT, ".build-"));
  dataDir = await mkdtemp(path.join(os.tmpdir(), "tidemark-build-"));
  const out = spawnSync(process.execPath, ["--import", "tsx", "scripts/build.ts", "--out", path.join(build, "dist")], { cwd: ROOT, encoding: "utf8" });
  expect(out.status, `${out.stdout}\n${out.stderr}`).toBe(0);
  // The bin beside the build, as in the package: cli/tidemark.js next to dist/.
  await mkdir(path.join(build, "cli"));
  await copyFile(path.join(ROOT, "cli/tidemark.js"), path.join(build, "cli/tidemark.js"));
}, 900_000);

afterAll(async () => {
  await server?.stop("SIGKILL");
  await rm(build, { recursive: true, force: true });
  await rm(dataDir, { recursive: true, force: true });
});

describe("the compiled CLI", () => {
  it("holds the SQL functions beside the compiled database code", async () => {
    for (const name of ["reserve_slots.sql", "reserve_segment.sql", "commit_slots.sql", "allocate_segment.sql"]) {
      expect(await readFile(path.join(build, "dist/core/db/functions", name), "utf8")).toBe(await readFile(path.join(ROOT, "core/db/functions", name), "utf8"));
    }
  });

  it("finds the package's own files from the compiled code: the console's front-end is the checkout's console/", () => {
    const assets = pathToFileURL(path.join(build, "dist/server/console/console-assets.js")).href;
    const out = spawnSync(process.execPath, ["--import", NO_TYPESCRIPT, "--input-type=module", "-e", `process.stdout.write((await import(${JSON.stringify(assets)})).CONSOLE_DIR)`], { cwd: ROOT, encoding: "utf8" });
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toBe(path.join(ROOT, "console"));
  });

  it("answers `tidemark --help` and `--version` through the bin, with no TypeScript loaded", async () => {
    const env = cleanEnv({ NODE_OPTIONS: `--import ${NO_TYPESCRIPT}` });
    const bin = path.join(build, "cli/tidemark.js");
    const help = await tidemark(["--help"], env, { bin });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: tidemark <command> \[options\]/m);
    for (const name of ["start", "server", "relay", "consumer", "migrate"]) expect(help.stdout).toMatch(new RegExp(`^  ${name}\\b`, "m"));
    const version = await tidemark(["--version"], env, { bin });
    const { version: expected } = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8")) as { version: string };
    expect(version.stdout.trim()).toBe(`tidemark ${expected}`);
  });

  it("runs `node dist/cli/main.js start`: an append and a read over gRPC", async () => {
    const addr = `127.0.0.1:${await freePort()}`;
    const env = cleanEnv({ TIDEMARK_DATA_DIR: dataDir, TIDEMARK_GRPC_ADDR: addr, TIDEMARK_LOG_LEVEL: "warn" });
    server = background(process.execPath, ["--import", NO_TYPESCRIPT, path.join(build, "dist/cli/main.js"), "start"], env);
    await server.waitFor(/gRPC\s+127\.0\.0\.1:\d+/, "the banner", 300_000);
    const client = createClient(EventStoreService, addr);
    try {
      const appended = await client.appendEvents({
        aggregateType: "Built",
        aggregateId: "b-1",
        expectation: { case: "noStream", value: {} },
        events: [{ eventId: "built-1", eventType: "Compiled", data: { by: "tsc" } }],
      });
      expect(appended.events.map((e) => e.sequenceNumber)).toEqual([1n]);
      const read = [];
      for await (const message of client.readStream({ aggregateType: "Built", aggregateId: "b-1" })) read.push(message.event);
      expect(read).toMatchObject([{ eventId: "built-1", eventType: "Compiled", sequenceNumber: 1n, data: { by: "tsc" } }]);
    } finally {
      client.close();
    }
    expect(await server.stop("SIGTERM")).toBe(0);
    expect(server.stderr()).not.toMatch(/TypeScript loaded at run time/);
    server = undefined;
  }, 600_000);
});
