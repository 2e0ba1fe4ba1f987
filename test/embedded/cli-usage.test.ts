/**
 * The `tidemark` CLI's usage and refusals, as separate processes through the bin shim: help,
 * unknown commands and options, `stack` delegation, configuration errors that name the variable
 * (and flag), and guarantee switches refused in every process before the data directory is
 * touched. Apart from cli.test.ts (the embedded deployment) so the two run side by side.
 */
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanEnv, freePort, tidemark, withoutClients, withoutStoreClients } from "../helpers/cli-process.js";
import { ORIGIN_ENV } from "../helpers/origin-env.js";

let dir: string;
let env: Record<string, string>;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-cli-usage-"));
  env = cleanEnv({ TIDEMARK_DATA_DIR: dir, TIDEMARK_GRPC_ADDR: `127.0.0.1:${await freePort()}`, TIDEMARK_LOG_LEVEL: "warn", ...ORIGIN_ENV });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("help and usage", () => {
  it("lists every command, and each command's options with their variables", async () => {
    const main = await tidemark(["--help"], env);
    expect(main.code).toBe(0);
    for (const name of ["start", "server", "relay", "consumer", "migrate", "rebuild", "stream", "tail", "status", "stack"]) expect(main.stdout).toMatch(new RegExp(`^  ${name}\\b`, "m"));
    const stream = await tidemark(["stream", "--help"], env);
    expect(stream.code).toBe(0);
    expect(stream.stdout).toMatch(/Usage: tidemark stream <aggregate_type> <aggregate_id>/);
    expect(stream.stdout).toMatch(/--addr HOST:PORT.*\n?.*\[TIDEMARK_GRPC_ADDR\]/);
    const start = await tidemark(["start", "-h"], env);
    expect(start.stdout).toMatch(/--data-dir DIR[\s\S]*\[TIDEMARK_DATA_DIR\]/);
  });

  it("answers help and usage errors without loading a client of PostgreSQL, S3, Kafka or gRPC", async () => {
    // Most of a second of module loading that `tidemark --help` has no use for.
    const bare = withoutClients(env);
    for (const [args, code] of [[["--help"], 0], [["stream", "--help"], 0], [["launch"], 2], [["tail", "--follow"], 2]] as const) {
      const run = await tidemark(args, bare);
      expect(run.stderr).not.toMatch(/loaded at run time/);
      expect(run.code, `tidemark ${args.join(" ")}: ${run.stderr}`).toBe(code);
    }
    // The hook refuses what a command does load.
    const status = await tidemark(["status", "some-id", "--addr", "127.0.0.1:1"], bare);
    expect(status.stderr).toMatch(/@grpc\/grpc-js loaded at run time/);
  });

  it("runs the client commands without loading a client of PostgreSQL, S3 or Kafka", async () => {
    // They need gRPC only (a server answering them is in cli.test.ts and all-in-one.test.ts); here
    // each gets as far as its call to an address where no server listens.
    const lean = withoutStoreClients(env);
    for (const args of [["status", "some-id"], ["stream", "Order", "o-1"], ["tail", "--limit", "1"], ["dead-letters", "list"]]) {
      const run = await tidemark([...args, "--addr", "127.0.0.1:1"], lean);
      expect(run.stderr, `tidemark ${args.join(" ")}`).not.toMatch(/loaded at run time/);
      expect(run.stderr, `tidemark ${args.join(" ")}`).toMatch(/no server answers at 127\.0\.0\.1:1 \(UNAVAILABLE\)/);
      expect(run.code).toBe(1);
    }
  });

  it("refuses unknown commands, missing arguments and unknown options with exit code 2", async () => {
    expect((await tidemark(["launch"], env)).code).toBe(2);
    const missing = await tidemark(["status"], env);
    expect(missing).toMatchObject({ code: 2 });
    expect(missing.stderr).toMatch(/missing <id>/);
    const unknown = await tidemark(["tail", "--follow"], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Unknown option '--follow'/);
  });

  it("delegates `stack` to scripts/stack.sh with its exit code", async () => {
    expect((await tidemark(["stack"], env)).code).toBe(2);
    const status = await tidemark(["stack", "status"], env);
    expect([0, 3]).toContain(status.code);
    expect(status.stdout).toMatch(/^postgres\s/m);
  });

  it("names the variable, and the flag that set it, in configuration errors", async () => {
    const bad = await tidemark(["start", "--grpc-addr", "nowhere"], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/TIDEMARK_GRPC_ADDR \(--grpc-addr\): must be host:port/);
    const half = await tidemark(["server"], { ...env, TIDEMARK_PG_URL: "postgres://u:p@127.0.0.1:1/db" });
    expect(half.code).toBe(2);
    expect(half.stderr).toMatch(/TIDEMARK_S3_ENDPOINT, TIDEMARK_S3_ACCESS_KEY, TIDEMARK_S3_SECRET_KEY must be set too/);
    const relay = await tidemark(["relay"], env);
    expect(relay.code).toBe(2);
    expect(relay.stderr).toMatch(/the relay publishes to Kafka.*TIDEMARK_KAFKA_BROKERS/s);
  });
});

describe("settings that would switch a guarantee off", () => {
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [["start"], { ENABLE_PROCESSED_EVENT_REGISTRY: "false" }, /ENABLE_PROCESSED_EVENT_REGISTRY: .*exactly-once/],
    [["consumer", "projection"], { ENABLE_PROCESSED_EVENT_REGISTRY: "off" }, /ENABLE_PROCESSED_EVENT_REGISTRY: .*exactly-once/],
    [["server"], { EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: "memory" }, /EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: must be one of postgres.*optimistic concurrency/],
    [["start"], { ENABLE_EVENT_SOURCING: "false" }, /ENABLE_EVENT_SOURCING: Tidemark does not allow switching off event sourcing: /],
    [["relay"], { ENABLE_EVENT_SOURCING: "0" }, /ENABLE_EVENT_SOURCING: Tidemark does not allow switching off event sourcing/],
    [["migrate"], { EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: "in_memory" }, /EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: must be one of postgres/],
  ];
  it.each(cases)("tidemark %j with %j is refused, saying why", async (args, extra, message) => {
    const result = await tidemark(args, { ...env, ...extra });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(existsSync(path.join(dir, "LOCK"))).toBe(false);
  });
});
