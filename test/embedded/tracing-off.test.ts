/**
 * Tracing off loads nothing of OpenTelemetry but its API (docs/CONTRACT.md A4, core/tracing.ts):
 * `tidemark start` with none of the `OTEL_*` variables set runs under a module hook that refuses
 * the SDK and every instrumentation, serves an append and stops cleanly; the same hook stops a
 * process that asks for traces, so it does see the SDK when it is loaded.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../../server/grpc/client.js";
import { background, cleanEnv, freePort, ROOT, TIDEMARK_BIN, tidemark, type Background } from "../helpers/cli-process.js";

const NO_SDK = path.join(ROOT, "test/helpers/no-otel-sdk.mjs");
let dataDir: string;
let server: Background | undefined;

/** The CLI's environment under the hook, without any `OTEL_*` variable of this process. */
function untracedEnv(extra: Record<string, string>): Record<string, string> {
  const env = cleanEnv({ NODE_OPTIONS: `--import ${NO_SDK}`, TIDEMARK_DATA_DIR: dataDir, TIDEMARK_CONSOLE_ADDR: "off", TIDEMARK_LOG_LEVEL: "warn", ...extra });
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith("OTEL_") || name in extra));
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), "tidemark-tracing-off-"));
});

afterAll(async () => {
  await server?.stop("SIGKILL");
  await rm(dataDir, { recursive: true, force: true });
});

describe("tracing off", () => {
  it("starts, serves an append and stops with no module of the OpenTelemetry SDK loaded", { timeout: 180_000 }, async () => {
    const addr = `127.0.0.1:${await freePort()}`;
    server = background(process.execPath, [TIDEMARK_BIN, "start"], untracedEnv({ TIDEMARK_GRPC_ADDR: addr }));
    await server.waitFor(/gRPC\s+127\.0\.0\.1:\d+/, "the banner", 150_000);
    const client = createClient(EventStoreService, addr);
    try {
      const appended = await client.appendEvents({
        aggregateType: "Untraced",
        aggregateId: "u-1",
        expectation: { case: "noStream", value: {} },
        events: [{ eventId: "untraced-1", eventType: "Noted", data: {} }],
      });
      expect(appended.events.map((e) => e.sequenceNumber)).toEqual([1n]);
    } finally {
      client.close();
    }
    expect(await server.stop("SIGTERM")).toBe(0);
    expect(server.stderr()).not.toMatch(/OpenTelemetry SDK loaded/);
    server = undefined;
  });

  it("is stopped by the hook when the environment asks for traces", async () => {
    const out = await tidemark(["start"], untracedEnv({ TIDEMARK_GRPC_ADDR: `127.0.0.1:${await freePort()}`, OTEL_TRACES_EXPORTER: "console" }));
    expect(out.code).not.toBe(0);
    expect(out.stderr).toMatch(/OpenTelemetry SDK loaded: @opentelemetry\//);
  });
});
