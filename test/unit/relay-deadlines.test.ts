/**
 * Deadlines on client calls that can hang: withDeadline itself, the relay's publisher when a
 * producer's connect never settles (kafkajs has hung there after a broker restart), and the relay
 * lease's acquisition against a database that never answers (docs/CONTRACT.md R5). The Kafka client
 * here is a stand-in with scripted connects, the database a socket that accepts and stays silent;
 * the relay's logic around them is what runs.
 */
import net from "node:net";
import type { Kafka, Producer } from "kafkajs";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../core/log.js";
import { DeadlineExceededError, withDeadline } from "../../core/sleep.js";
import type { RelayTables } from "../../core/db/schema.js";
import { KafkaPublisher } from "../../relay/kafka-publisher.js";
import { RelayLease } from "../../relay/relay-lease.js";

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

describe("RelayLease.acquire against a database that never answers", () => {
  it("fails within one lease instead of waiting for good, and holds nothing", async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => sockets.add(socket.on("error", () => {})));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as net.AddressInfo;
    const pool = new pg.Pool({ host: "127.0.0.1", port, user: "u", database: "d" });
    pool.on("error", () => {});
    const lease = new RelayLease(new Kysely<RelayTables>({ dialect: new PostgresDialect({ pool }) }), "r", "h", 300, log);
    try {
      const error = await lease.acquire().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DeadlineExceededError);
      expect(lease.token).toBeUndefined();
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
      await pool.end().catch(() => {});
    }
  });
});
