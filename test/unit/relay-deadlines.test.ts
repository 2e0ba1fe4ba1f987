/**
 * Deadlines on client calls that can hang: withDeadline itself, and the relay's publisher when a
 * producer's connect never settles (kafkajs has hung there after a broker restart). The Kafka
 * client here is a stand-in with scripted connects; the publisher's logic around it is what runs.
 */
import type { Kafka, Producer } from "kafkajs";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../core/log.js";
import { DeadlineExceededError, withDeadline } from "../../core/sleep.js";
import { KafkaPublisher } from "../../relay/kafka-publisher.js";

const log = createLogger("test-deadlines", "silent");

describe("withDeadline", () => {
  it("settles as the work does when it is in time", async () => {
    await expect(withDeadline(Promise.resolve(7), 1000, "work")).resolves.toBe(7);
    await expect(withDeadline(Promise.reject(new Error("no")), 1000, "work")).rejects.toThrow("no");
  });

  it("rejects with DeadlineExceededError when the work never settles", async () => {
    const error = await withDeadline(new Promise(() => {}), 20, "a hung call").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeadlineExceededError);
    expect((error as Error).message).toBe("a hung call did not settle within 20 ms");
  });
});

/** A producer whose connect settles only when the test says so. */
class ScriptedProducer {
  connected = false;
  disconnected = false;
  sent: unknown[] = [];
  private release!: () => void;
  readonly connectCalled: Promise<void>;
  private markCalled!: () => void;
  constructor(private readonly hangs: boolean) {
    this.connectCalled = new Promise((resolve) => (this.markCalled = resolve));
  }
  connect(): Promise<void> {
    this.markCalled();
    if (!this.hangs) {
      this.connected = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.release = () => ((this.connected = true), resolve())));
  }
  finishConnect(): void {
    this.release();
  }
  async disconnect(): Promise<void> {
    this.disconnected = true;
  }
  async sendBatch(batch: unknown): Promise<void> {
    this.sent.push(batch);
  }
}

describe("KafkaPublisher with a connect that hangs", () => {
  it("fails the publish at its deadline, uses a new producer next, and never the late one", async () => {
    const producers = [new ScriptedProducer(true), new ScriptedProducer(false)];
    let made = 0;
    const kafka = { producer: () => producers[made++] as unknown as Producer } as unknown as Kafka;
    // maxSendMs = 2 × (10 + 2 × 20) + 300 = 400 ms.
    const publisher = new KafkaPublisher(kafka, { brokers: ["b:9092"], clientId: "t", requestTimeoutMs: 20, connectionTimeoutMs: 10 }, log);
    const batch = { id: "0-1", messages: [{ topic: "t", key: "k", value: "v", headers: {} }] };

    const started = performance.now();
    await expect(publisher.publish(batch)).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(performance.now() - started).toBeGreaterThanOrEqual(publisher.maxSendMs - 5);
    // The hung producer was given up (a reset disconnects it).
    expect(producers[0]!.disconnected).toBe(true);

    await publisher.publish(batch);
    expect(producers[1]!.sent).toHaveLength(1);

    // The first connect settles at last: that producer is closed, and sends nothing.
    producers[0]!.finishConnect();
    await publisher.publish({ id: "1-2", messages: batch.messages });
    expect(producers[0]!.sent).toHaveLength(0);
    expect(producers[1]!.sent).toHaveLength(2);
    expect(made).toBe(2);
  });
});
