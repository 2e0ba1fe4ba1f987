/**
 * Relay test setup: configs that share the test server's schema and bucket, unique topics per test
 * file, a log capture, and a helper to start an in-process relay that is always stopped.
 */
import { Writable } from "node:stream";
import { pino } from "pino";
import { startRelay, type RelayHandle, type RelayOverrides } from "../../relay/app.js";
import { loadRelayConfig, type RelayConfig } from "../../relay/config.js";
import type { ServerConfig } from "../../server/config.js";
import type { Logger } from "../../core/log.js";
import { stackEnv, uniqueId } from "./test-server.js";

/** Topic names unique to one test file (or scenario). */
export function relayTopics(prefix = "rt"): { topic: string; deadLetter: string; id: string } {
  const id = uniqueId(prefix);
  return { topic: `tm.${id}.events`, deadLetter: `tm.${id}.dead-letter`, id };
}

/** Environment of a relay that tails `server`'s schema and bucket. */
export function relayEnv(server: ServerConfig, extra: Record<string, string> = {}): Record<string, string> {
  const topics = relayTopics();
  return {
    ...stackEnv(),
    TIDEMARK_PG_SCHEMA: server.pgSchema,
    TIDEMARK_S3_BUCKET: server.s3Bucket,
    TIDEMARK_RELAY_TOPIC: topics.topic,
    TIDEMARK_DEAD_LETTER_TOPIC: topics.deadLetter,
    TIDEMARK_RELAY_PARTITIONS: "3",
    TIDEMARK_RELAY_LEASE_MS: "4000",
    TIDEMARK_LOG_LEVEL: process.env["TIDEMARK_TEST_LOG_LEVEL"] ?? "warn",
    ...extra,
  };
}

/** Relay config for an in-process relay (see {@link relayEnv}). */
export function relayTestConfig(server: ServerConfig, extra: Record<string, string> = {}): RelayConfig {
  return loadRelayConfig(relayEnv(server, extra));
}

/** A pino logger that also keeps every line, for assertions on alarms. */
export function captureLog(name: string, level = "info"): { log: Logger; lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = [];
  const echo = process.env["TIDEMARK_TEST_LOG_LEVEL"] !== undefined;
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim() === "") continue;
        lines.push(JSON.parse(line) as Record<string, any>);
        if (echo) process.stdout.write(`${line}\n`);
      }
      callback();
    },
  });
  return { log: pino({ name, level, base: { process: name } }, stream), lines };
}

const running = new Set<RelayHandle>();

/** Starts an in-process relay; {@link stopAllRelays} stops whatever a test left running. */
export async function startTestRelay(config: RelayConfig, overrides: RelayOverrides = {}): Promise<RelayHandle> {
  const handle = await startRelay(config, { ...(overrides.log === undefined ? { log: captureLog("test-relay", config.logLevel).log } : {}), ...overrides });
  running.add(handle);
  const stop = handle.stop.bind(handle);
  return {
    ...handle,
    status: handle.status,
    stop: async () => {
      running.delete(handle);
      await stop();
    },
  };
}

/** Stops every in-process relay still running. */
export async function stopAllRelays(): Promise<void> {
  await Promise.all([...running].map((h) => h.stop()));
  running.clear();
}
