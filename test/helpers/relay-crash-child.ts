/**
 * A relay process for kill -9 tests: the relay's start-up (startRelay), plus a pause at one named step of
 * the N-th batch (TIDEMARK_TEST_PAUSE_AT = after-read | after-produce | after-checkpoint,
 * TIDEMARK_TEST_PAUSE_BATCH = N). At the pause it prints one line `{"paused": …}` with the batch's
 * positions and the checkpoint, then waits forever, so the test can SIGKILL it at exactly that step.
 */
import { startRelay } from "../../relay/app.js";
import { loadRelayConfig } from "../../relay/config.js";
import type { ReadBatch } from "../../relay/relay-pump.js";
import { readCheckpoint } from "../../relay/relay-repository.js";

const pauseAt = process.env["TIDEMARK_TEST_PAUSE_AT"];
const pauseBatch = Number(process.env["TIDEMARK_TEST_PAUSE_BATCH"] ?? "1");
const seen = { "after-read": 0, "after-produce": 0, "after-checkpoint": 0 };

const config = loadRelayConfig();
const started: { relay?: Awaited<ReturnType<typeof startRelay>> } = {};

async function step(name: keyof typeof seen, batch: ReadBatch): Promise<void> {
  seen[name] += 1;
  if (name !== pauseAt || seen[name] !== pauseBatch) return;
  while (started.relay === undefined) await new Promise((r) => setTimeout(r, 10));
  const checkpoint = await readCheckpoint(started.relay.database.db, config.name);
  process.stdout.write(`${JSON.stringify({ paused: name, after: batch.after, last: batch.last, events: batch.messages.length, checkpoint: checkpoint.position })}\n`);
  await new Promise(() => {});
}

started.relay = await startRelay(config, {
  hooks: {
    afterRead: (batch) => step("after-read", batch),
    afterProduce: (batch) => step("after-produce", batch),
    afterCheckpoint: (batch) => step("after-checkpoint", batch),
  },
});
