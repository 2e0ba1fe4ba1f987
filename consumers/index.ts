/** The public face of consumers/: write a handler, run it, run and rebuild the instances projection. */
export { startConsumer, startProjection, type ConsumerHandle, type ConsumerOverrides, type ProjectionHandle } from "./app.js";
export { CONSUMER_OWN_SETTINGS, CONSUMER_SETTINGS, checkTiming, loadConsumerConfig, requireServices, type ConsumerConfig } from "./config.js";
export type { CrashPoint, CrashPointInfo } from "./consumer-runtime.js";
export {
  DEAD_LETTER_HEADERS,
  DEAD_LETTER_PREFIX,
  kafkaDeadLetters,
  storeDeadLetters,
  type DeadLetter,
  type DeadLetterReason,
  type DeadLetterSink,
} from "./dead-letter.js";
export { eventOpener, openSealedEvent, traceIdOf, type SubjectKeySource } from "./decode.js";
/** Keys from a key server, cached briefly (for TIDEMARK_CONSUMER_KEY_SERVER). */
export { cachedSubjectKeys } from "../core/index.js";
export { KafkaSource, type KafkaSourceOptions } from "./kafka-source.js";
export {
  classifyFailure,
  describeFailure,
  InfrastructureError,
  isLeaseLostError,
  isPoisonError,
  LeaseLostError,
  PoisonError,
  type FailureClass,
} from "./failures.js";
export { defineHandler, type BatchContext, type ConsumedEvent, type Handler, type HandlerContext } from "./handler.js";
export { ConsumerMetrics } from "./metrics.js";
export { instancesProjection, parseInstanceAggregateId, projectInstanceEvents, type InstanceProjectionEvent } from "./projection.js";
export { rebuildInstances, type RebuildOptions, type RebuildProgress, type RebuildResult } from "./rebuild.js";
export {
  claimEvent,
  DEFAULT_RETENTION_MS,
  finishClaim,
  lockWatermark,
  markDeadLettered,
  foldRegistryCounts,
  pruneDone,
  renewLease,
  scheduleRetry,
  type Claim,
  type ClaimOutcome,
  type ClaimRequest,
  type PruneOptions,
} from "./registry.js";
