/**
 * The Kafka implementation of {@link MessageSource}: a kafkajs consumer group with manual offset
 * commits (docs/CONTRACT.md C5), so offsets move only when the runtime says the registry recorded the
 * outcome. kafkajs restarts its consumer after a retriable failure; after any other it gives the
 * consumer up, and the source starts a new one (C3: an outage pauses and retries, never stops the
 * handler for good). Offsets are safe either way.
 */
import type { Consumer, Kafka } from "kafkajs";
import type { Logger, MessageSource, SourceEvents, SourceRequest } from "../core/index.js";

/** What a Kafka source needs besides the group. */
export interface KafkaSourceOptions extends SourceRequest {
  readonly kafka: Kafka;
  readonly sessionTimeoutMs: number;
  readonly partitionsConsumedConcurrently: number;
  readonly log: Logger;
  /** First wait before a new consumer replaces one kafkajs gave up (doubling to 5 s; default 250 ms). */
  readonly relaunchDelayMs?: number;
}

const MAX_RELAUNCH_DELAY_MS = 5000;

/** One kafkajs consumer in group `groupId`, subscribed to `topics`; replaced when kafkajs gives it up. */
export class KafkaSource implements MessageSource {
  readonly description: string;
  private consumer: Consumer;
  private stopping = false;
  private relaunchTimer: NodeJS.Timeout | undefined;
  private relaunches = 0;

  constructor(private readonly options: KafkaSourceOptions) {
    this.description = `kafka group ${options.groupId} on ${options.topics.join(", ")}`;
    this.consumer = this.newConsumer();
  }

  async start(events: SourceEvents): Promise<void> {
    await this.launch(this.consumer, events);
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
    if (this.relaunchTimer !== undefined) clearTimeout(this.relaunchTimer);
    await this.consumer.disconnect();
  }

  private newConsumer(): Consumer {
    const { options } = this;
    return options.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      heartbeatInterval: Math.max(500, Math.floor(options.sessionTimeoutMs / 10)),
      rebalanceTimeout: Math.max(options.sessionTimeoutMs, 20_000),
      maxWaitTimeInMs: 500,
      allowAutoTopicCreation: false,
      retry: { initialRetryTime: 250, maxRetryTime: 5000, retries: 10, restartOnFailure: async () => !this.stopping },
    });
  }

  /** Connects `consumer`, subscribes it and runs it, delivering to `events`. */
  private async launch(consumer: Consumer, events: SourceEvents): Promise<void> {
    const { options } = this;
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      if (consumer !== this.consumer) return;
      this.relaunches = 0;
      options.log.info({ assignment: event.payload.memberAssignment }, "joined consumer group");
      events.onAssignment();
      events.onRunning(true);
    });
    consumer.on(consumer.events.CRASH, (event) => {
      if (consumer !== this.consumer) return;
      options.log.warn({ err: event.payload.error, restart: event.payload.restart }, "kafka consumer crashed");
      // After a restart kafkajs rejoins (GROUP_JOIN again); until then nothing is delivered.
      events.onRunning(false);
      // Without a restart kafkajs has disconnected this consumer for good: an error it does not
      // mark retriable — "Broker not connected" while it reconnects to a restarted broker is a
      // plain Error — would otherwise leave the process neither consuming nor exiting (found by
      // the chaos harness, docs/CHAOS.md).
      if (!event.payload.restart) this.relaunchLater(events);
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

  /** Replaces the consumer kafkajs gave up by a new one, after a backoff; again until one runs. */
  private relaunchLater(events: SourceEvents): void {
    if (this.stopping || this.relaunchTimer !== undefined) return;
    const delayMs = Math.min(MAX_RELAUNCH_DELAY_MS, (this.options.relaunchDelayMs ?? 250) * 2 ** this.relaunches++);
    this.options.log.warn({ delayMs }, "kafka consumer given up; starting a new one");
    this.relaunchTimer = setTimeout(() => {
      this.relaunchTimer = undefined;
      if (this.stopping) return;
      const old = this.consumer;
      const next = this.newConsumer();
      this.consumer = next;
      void old
        .disconnect()
        .catch(() => {})
        .then(() => (this.stopping ? undefined : this.launch(next, events)))
        .catch((e: unknown) => {
          this.options.log.warn({ err: e }, "starting a new kafka consumer failed");
          void next.disconnect().catch(() => {});
          this.relaunchLater(events);
        });
    }, delayMs);
  }
}
