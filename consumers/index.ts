/** The public face of consumers/: write a handler, run it, run and rebuild the instances projection. */
export { startConsumer, startProjection, type ConsumerHandle, type ConsumerOverrides, type ProjectionHandle } from "./app.js";
export { CONSUMER_SETTINGS, checkTiming, loadConsumerConfig, requireServices, type ConsumerConfig } from "./config.js";
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
export { traceIdOf } from "./decode.js";
export { KafkaSource, type KafkaSourceOptions } from "./kafka-source.js";
export type { MessageSource, SourceBatch, SourceEvents, SourceMessage, SourceRequest } from "./message-source.js";
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
export { processingHandlers } from "./processing-service.js";
export {
  advancePosition,
  INSTANCES_PROJECTION,
  INSTANCES_PROJECTION_HANDLER,
  instancesProjection,
  reflectsPosition,
} from "./projection.js";
export { createInstanceReadModel, type InstanceReadModelReader, type ReadModelOptions } from "./read-model.js";
export type { ReadModelInstance } from "../core/domain/instance.js";
export { rebuildInstances, type RebuildOptions, type RebuildProgress, type RebuildResult } from "./rebuild.js";
export {
  claimEvent,
  DEFAULT_RETENTION_MS,
  findRecords,
  finishClaim,
  lockWatermark,
  markDeadLettered,
  pruneDone,
  renewLease,
  scheduleRetry,
  type Claim,
  type ClaimOutcome,
  type ClaimRequest,
  type ProcessingRecord,
  type PruneOptions,
  type RegistryDb,
} from "./registry.js";
export type { ConsumerDatabase, ConsumerTables, ProcessingState } from "./schema.js";
