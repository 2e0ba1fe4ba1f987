/**
 * The Kafka implementation of {@link MessageSource}: a kafkajs consumer group with manual offset
 * commits (docs/CONTRACT.md C5), so offsets move only when the runtime says the registry recorded the
 * outcome. kafkajs restarts the consumer after repeated failures; offsets are safe either way.
 */
import type { Consumer, Kafka } from "kafkajs";
import type { Logger, MessageSource, SourceEvents, SourceRequest } from "../core/index.js";

/** What a Kafka source needs besides the group. */
export interface KafkaSourceOptions extends SourceRequest {
  readonly kafka: Kafka;
  readonly sessionTimeoutMs: number;
  readonly partitionsConsumedConcurrently: number;
  readonly log: Logger;
}

/** One kafkajs consumer in group `groupId`, subscribed to `topics`. */
export class KafkaSource implements MessageSource {
  readonly description: string;
  private readonly consumer: Consumer;
  private stopping = false;

  constructor(private readonly options: KafkaSourceOptions) {
    this.description = `kafka group ${options.groupId} on ${options.topics.join(", ")}`;
    this.consumer = options.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      heartbeatInterval: Math.max(500, Math.floor(options.sessionTimeoutMs / 10)),
      rebalanceTimeout: Math.max(options.sessionTimeoutMs, 20_000),
      maxWaitTimeInMs: 500,
      allowAutoTopicCreation: false,
      // kafkajs gives up after its retries and restarts the consumer; offsets are safe either way.
      retry: { initialRetryTime: 250, maxRetryTime: 5000, retries: 10, restartOnFailure: async () => !this.stopping },
    });
  }

  async start(events: SourceEvents): Promise<void> {
    const { consumer, options } = this;
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      options.log.info({ assignment: event.payload.memberAssignment }, "joined consumer group");
      events.onAssignment();
      events.onRunning(true);
    });
    consumer.on(consumer.events.CRASH, (event) => {
      options.log.warn({ err: event.payload.error, restart: event.payload.restart }, "kafka consumer crashed");
      // kafkajs rejoins after a restart (GROUP_JOIN again); until then nothing is delivered.
      events.onRunning(false);
    });
    await consumer.connect();
    await consumer.subscribe({ topics: [...options.topics], fromBeginning: options.fromBeginning });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: options.partitionsConsumedConcurrently,
      eachBatch: ({ batch, resolveOffset, isRunning, isStale }) =>
        events.onBatch({
          topic: batch.topic,
          partition: batch.partition,
          messages: batch.messages,
          resolveOffset,
          isRunning,
          isStale,
        }),
    });
  }

  async commit(topic: string, partition: number, offset: string): Promise<void> {
    await this.consumer.commitOffsets([{ topic, partition, offset }]);
  }

  pause(topic: string, partition: number): void {
    this.consumer.pause([{ topic, partitions: [partition] }]);
  }

  resume(topic: string, partition: number): void {
    this.consumer.resume([{ topic, partitions: [partition] }]);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.consumer.disconnect();
  }
}
