/** The public face of relay/: start a relay, its configuration, and the pieces tests and tools use. */
export { startRelay, type RelayHandle, type RelayOverrides, type RelayReadiness, type RelayStatus } from "./app.js";
export { loadRelayConfig, RELAY_OWN_SETTINGS, RELAY_SETTINGS, type RelayConfig } from "./config.js";
export { AckTracker, type BatchRange } from "./ack-tracker.js";
export { EMBEDDED_CHECKPOINT_PREFIX, EmbeddedRelay, type EmbeddedRelayOptions } from "./embedded-relay.js";
export { createRelayKafka, ensureTopics, type KafkaSettings, type TopicSpec } from "./kafka-publisher.js";
export type { ReadBatch, RelayHooks, TermOutcome } from "./relay-pump.js";
export { advanceCheckpoint, advanceGroupCheckpoint, readCheckpoint, readLease, relayLag, type Checkpoint, type LeaseRow, type RelayLag } from "./relay-repository.js";
export type { RelayTables } from "../core/index.js";
export { toKafkaMessage, type EventMessage } from "./to-kafka-message.js";
export { parseRoutes, TopicRouter, type Route } from "./topic-router.js";
