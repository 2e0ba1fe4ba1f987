/**
 * The port through which a consumer runtime receives events: ordered partitions of messages with
 * offsets, a commit of "everything before this offset is recorded", and pause/resume for
 * back-pressure and outages. The kafkajs consumer group implements it (consumers/kafka-source.ts); in
 * the embedded mode the relay serves the commit log through it in process (relay/embedded-relay.ts).
 * It lives in core/ so that neither of the two imports the other.
 * The runtime's guarantees (registry, ordering guard, retries, dead letters, C5 offsets) sit on
 * top of this port and are the same whichever source feeds them.
 */
/** Header values as sources deliver them (kafkajs's shape: a string, bytes, or a list). */
export type MessageHeaders = Readonly<Record<string, Buffer | string | ReadonlyArray<Buffer | string> | undefined>>;

/** One message of a partition. `value` is the envelope's JSON bytes (docs/CONTRACT.md R3). */
export interface SourceMessage {
  /** Position in the partition, as a decimal string; ascending within a partition. */
  readonly offset: string;
  readonly value: Buffer | null;
  readonly headers?: MessageHeaders | undefined;
}

/** A batch of one partition, handed to the runtime one at a time per partition. */
export interface SourceBatch {
  readonly topic: string;
  readonly partition: number;
  readonly messages: readonly SourceMessage[];
  /**
   * The runtime took the message: the fetch position moves past it. Messages not resolved when
   * the batch returns (the partition paused mid-batch) are delivered again after resume.
   */
  resolveOffset(offset: string): void;
  /** False once the source is stopping. */
  isRunning(): boolean;
  /** True once the partition was reassigned (the batch belongs to an old generation). */
  isStale(): boolean;
}

/** What a source calls back. */
export interface SourceEvents {
  /** Delivers a batch; the source waits for it before fetching that partition again. */
  onBatch(batch: SourceBatch): Promise<void>;
  /**
   * Partitions were (re)assigned, e.g. a consumer-group rebalance: work of the previous
   * assignment may finish through the registry (fenced) but must not commit offsets.
   */
  onAssignment(): void;
  /**
   * The source delivers (true: joined its consumer group, or serves the log) or cannot (false: the
   * group membership was lost, until it rejoins). Health reporting only; delivery needs no call.
   */
  onRunning(running: boolean): void;
}

/** Who asks for a source: one per handler. */
export interface SourceRequest {
  /** Consumer group: `{groupPrefix}{handler name}`; each group has its own offsets. */
  readonly groupId: string;
  readonly topics: readonly string[];
  /** A group with no committed offset starts at the beginning (else at the end). */
  readonly fromBeginning: boolean;
}

/** A source of ordered messages for one consumer group. */
export interface MessageSource {
  /** Human-readable, for logs (e.g. "kafka group tidemark.projection:instances"). */
  readonly description: string;
  /** Starts delivering; resolves once the source runs (joined its group, read its offsets). */
  start(events: SourceEvents): Promise<void>;
  /**
   * Durably records that every message of the partition before `offset` has its outcome in the
   * registry (Kafka's "next offset to read"). Throws when it cannot; the runtime retries.
   */
  commit(topic: string, partition: number, offset: string): Promise<void>;
  /** Stops fetching the partition (may throw while the source is restarting). */
  pause(topic: string, partition: number): void;
  /** Fetches the partition again from its last resolved offset. */
  resume(topic: string, partition: number): void;
  /** Stops delivering and releases connections; the runtime has committed what it could. */
  stop(): Promise<void>;
}
