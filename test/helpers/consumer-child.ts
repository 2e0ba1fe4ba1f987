/**
 * A consumer process for kill -9 tests: consumers/app.ts's start-up with the test handler (one row
 * in `effects` per application, in the registry's transaction) and a stop at one named crash point
 * (TIDEMARK_TEST_CRASH_POINT = after-claim | before-side-effect | after-side-effect | before-done |
 * before-offset-commit) for the event TIDEMARK_TEST_CRASH_EVENT (TIDEMARK_TEST_GROUPED=1: the
 * handler applies groups, so the points are those of the group path). At the point it prints one line
 * `{"crashPoint": …}` and waits forever, so the test can SIGKILL it exactly there.
 */
import { createDatabase } from "../../core/db/database.js";
import { type CrashPoint, loadConsumerConfig, startConsumer } from "../../consumers/index.js";
import { effectHandler, grouped } from "./consumer-effects.js";
import type { ConsumerDatabase } from "../../core/index.js";

const crashPoint = process.env["TIDEMARK_TEST_CRASH_POINT"] as CrashPoint | undefined;
const crashEvent = process.env["TIDEMARK_TEST_CRASH_EVENT"];
const handlerName = process.env["TIDEMARK_TEST_HANDLER"] ?? "crash";
// "1": the handler has handleBatch, so the crash points are reached on the runtime's group path.
const handler = process.env["TIDEMARK_TEST_GROUPED"] === "1" ? grouped(effectHandler(handlerName)) : effectHandler(handlerName);

const config = loadConsumerConfig();
const database = createDatabase<ConsumerDatabase>({ url: config.pgUrl, schema: config.pgSchema, poolSize: 6 });
await startConsumer(config, handler, {
  database,
  housekeeping: false,
  async crashPoint(point, info) {
    if (point !== crashPoint) return;
    if (point !== "before-offset-commit" && info.eventId !== crashEvent) return;
    process.stdout.write(`${JSON.stringify({ crashPoint: point, ...info })}\n`);
    await new Promise(() => {});
  },
});
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
