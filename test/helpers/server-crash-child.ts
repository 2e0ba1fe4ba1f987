/**
 * A server process for kill -9 tests of the write path: the server's start-up (startServer), plus a
 * pause at one point of the segment write of one event (TIDEMARK_TEST_PAUSE_AT = before-put |
 * after-put, TIDEMARK_TEST_PAUSE_EVENT = its event id). At the pause it prints one line
 * `{"paused": …, "segment": n}` and waits forever, so the test can SIGKILL it at exactly that step:
 * with the segment number drawn but nothing in S3, or with the segment in S3 but nothing committed.
 */
import { createLogger } from "../../core/log.js";
import type { SlotRow } from "../../core/event-log.js";
import { startServer } from "../../server/app.js";
import { loadServerConfig } from "../../server/config.js";

const pauseAt = process.env["TIDEMARK_TEST_PAUSE_AT"];
const pauseEvent = process.env["TIDEMARK_TEST_PAUSE_EVENT"];

async function step(point: "before-put" | "after-put", slot: SlotRow): Promise<void> {
  if (point !== pauseAt || slot.eventId !== pauseEvent) return;
  process.stdout.write(`${JSON.stringify({ paused: point, segment: slot.segment })}\n`);
  await new Promise(() => {});
}

const config = loadServerConfig();
const server = await startServer(config, {
  log: createLogger("crash-child", config.logLevel),
  beforeWrite: (slot) => step("before-put", slot),
  afterWrite: (slot) => step("after-put", slot),
});
process.stdout.write(`${JSON.stringify({ listening: server.address })}\n`);
