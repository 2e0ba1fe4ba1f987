/** Routing rules (docs/CONTRACT.md R7) and relay configuration parsing. */
import { describe, expect, it } from "vitest";
import { parseRoutes, TopicRouter } from "../../relay/topic-router.js";
import { loadRelayConfig } from "../../relay/config.js";

const minimal = {
  TIDEMARK_PG_URL: "postgres://u:p@127.0.0.1:5432/db",
  TIDEMARK_S3_ENDPOINT: "http://127.0.0.1:9000",
  TIDEMARK_S3_ACCESS_KEY: "k",
  TIDEMARK_S3_SECRET_KEY: "s",
  TIDEMARK_KAFKA_BROKERS: "127.0.0.1:9092",
};

describe("routing rules", () => {
  it("parses type, kind and combined rules in order", () => {
    expect(parseRoutes("Order=orders, kind:command=commands,Invoice+kind:domain=invoice-facts")).toEqual([
      { aggregateType: "Order", topic: "orders" },
      { kind: "command", topic: "commands" },
      { aggregateType: "Invoice", kind: "domain", topic: "invoice-facts" },
    ]);
    expect(parseRoutes("")).toEqual([]);
  });

  it("lets the first matching rule win and sends everything else to the default topic", () => {
    const router = new TopicRouter(parseRoutes("kind:command=commands,Order=orders,Invoice+kind:domain=invoices"), "tidemark.events");
    expect(router.topicFor("Order", "domain")).toBe("orders");
    expect(router.topicFor("Order", "command")).toBe("commands");
    expect(router.topicFor("Invoice", "domain")).toBe("invoices");
    expect(router.topicFor("Invoice", "command")).toBe("commands");
    expect(router.topicFor("Instance", "domain")).toBe("tidemark.events");
    expect(router.topics()).toEqual(["tidemark.events", "commands", "orders", "invoices"]);
  });

  it("refuses malformed rules, unknown kinds and illegal topic names", () => {
    expect(() => parseRoutes("Order")).toThrow(/must look like match=topic/);
    expect(() => parseRoutes("Order=")).toThrow(/must look like match=topic/);
    expect(() => parseRoutes("kind:event=x")).toThrow(/kind must be domain or command/);
    expect(() => parseRoutes("Order=bad topic")).toThrow(/must match/);
    expect(() => parseRoutes("9Order=x")).toThrow(/not an aggregate type/);
    expect(() => parseRoutes("Order+Invoice=x")).toThrow(/two aggregate types/);
  });
});

describe("relay configuration", () => {
  it("applies the documented defaults", () => {
    const config = loadRelayConfig(minimal);
    expect(config).toMatchObject({
      topic: "tidemark.events",
      deadLetterTopic: "tidemark.dead-letter",
      leaseMs: 10_000,
      batchSize: 500,
      name: "default",
      metricsAddr: "",
      routes: [],
      kafkaBrokers: ["127.0.0.1:9092"],
      pgSchema: "tidemark",
      s3Bucket: "tidemark-events",
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("parses routes and names the bad variable", () => {
    expect(loadRelayConfig({ ...minimal, TIDEMARK_RELAY_ROUTES: "Order=orders,kind:command=commands" }).routes).toHaveLength(2);
    expect(() => loadRelayConfig({ ...minimal, TIDEMARK_RELAY_ROUTES: "Order" })).toThrow(/TIDEMARK_RELAY_ROUTES: route "Order"/);
    expect(() => loadRelayConfig({ ...minimal, TIDEMARK_RELAY_TOPIC: "a/b" })).toThrow(/TIDEMARK_RELAY_TOPIC/);
    expect(() => loadRelayConfig({ ...minimal, TIDEMARK_KAFKA_BROKERS: "localhost" })).toThrow(/TIDEMARK_KAFKA_BROKERS/);
    expect(() => loadRelayConfig({ ...minimal, TIDEMARK_RELAY_LEASE_MS: "10" })).toThrow(/TIDEMARK_RELAY_LEASE_MS/);
    expect(() => loadRelayConfig({ ...minimal, TIDEMARK_KAFKA_BROKERS: "" })).toThrow(/TIDEMARK_KAFKA_BROKERS is required/);
  });
});
