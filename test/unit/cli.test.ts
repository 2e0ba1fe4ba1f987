/**
 * The CLI's pure parts and the configuration rules every process shares: flags that stand for
 * variables, help, the origin's settings (aliases accepted, guarantee switches refused with the
 * reason), rebuild progress output, and the trace context a consumer sees.
 */
import { describe, expect, it } from "vitest";
import { encodeEnvelope } from "../../core/envelope.js";
import { ConfigError } from "../../core/settings.js";
import { loadConsumerConfig, requireServices } from "../../consumers/config.js";
import { decodeMessage, traceIdOf } from "../../consumers/decode.js";
import { loadRelayConfig } from "../../relay/config.js";
import { commandHelp, nameFlags, parseCommand, UsageError } from "../../cli/args.js";
import { COMMANDS } from "../../cli/commands.js";
import { mainHelp } from "../../cli/main.js";
import { progressReporter } from "../../cli/run-admin.js";
import { tailRequest } from "../../cli/run-client.js";
import { EventKind } from "../../gen/tidemark/v1/envelope_pb.js";
import { loadServerConfig } from "../../server/config.js";
import { testEnvelope } from "../helpers/consumer-env.js";
import { ORIGIN_ENV } from "../helpers/origin-env.js";

const command = (name: string) => COMMANDS.find((c) => c.name === name)!;

const SERVICES = {
  TIDEMARK_PG_URL: "postgres://u:p@127.0.0.1:5432/db",
  TIDEMARK_S3_ENDPOINT: "http://127.0.0.1:9000",
  TIDEMARK_S3_ACCESS_KEY: "k",
  TIDEMARK_S3_SECRET_KEY: "s",
  TIDEMARK_KAFKA_BROKERS: "127.0.0.1:9092",
};

describe("command-line parsing", () => {
  it("turns flags into the variables they stand for; flags win over the environment", () => {
    const parsed = parseCommand(command("start"), ["--grpc-addr", "0.0.0.0:1", "--consumer", "a.ts", "--consumer", "b.ts"], { TIDEMARK_GRPC_ADDR: "127.0.0.1:2", OTHER: "x" });
    expect(parsed.env).toMatchObject({ TIDEMARK_GRPC_ADDR: "0.0.0.0:1", OTHER: "x" });
    expect(parsed.values["consumer"]).toEqual(["a.ts", "b.ts"]);
    expect(parsed.flagOf.get("TIDEMARK_GRPC_ADDR")).toBe("--grpc-addr");
    expect(nameFlags("invalid configuration:\n  TIDEMARK_GRPC_ADDR: must be host:port", parsed.flagOf)).toContain("TIDEMARK_GRPC_ADDR (--grpc-addr): must be host:port");
  });

  it("refuses missing and extra positionals and unknown options", () => {
    expect(() => parseCommand(command("stream"), ["Instance"], {})).toThrow(new UsageError("missing <aggregate_id>"));
    expect(() => parseCommand(command("status"), ["a", "b"], {})).toThrow(/unexpected argument "b"/);
    expect(() => parseCommand(command("tail"), ["--nope"], {})).toThrow(UsageError);
    expect(parseCommand(command("consumer"), ["projection", "./a.ts", "./b.ts"], {}).positionals).toEqual(["projection", "./a.ts", "./b.ts"]);
    expect(parseCommand(command("status"), ["--help"], {}).values["help"]).toBe(true);
  });

  it("tail's filter flags become the Subscribe filter (A3); an unknown kind is a usage error", () => {
    const args = ["--type", "Order", "--type-prefix", "Ord", "--event-type", "OrderPlaced", "--event-type", "OrderShipped", "--kind", "command", "--database", "east", "--prefix", "Order", "--stop-at-caught-up"];
    expect(tailRequest(parseCommand(command("tail"), args, {}))).toEqual({
      aggregateTypes: ["Order"],
      eventTypePrefix: "Order",
      databases: ["east"],
      aggregateTypePrefix: "Ord",
      eventTypes: ["OrderPlaced", "OrderShipped"],
      kinds: [EventKind.COMMAND],
      stopAtCaughtUp: true,
    });
    expect(tailRequest(parseCommand(command("tail"), [], {}))).toMatchObject({ kinds: [], eventTypes: [], aggregateTypePrefix: "", stopAtCaughtUp: false });
    expect(() => tailRequest(parseCommand(command("tail"), ["--kind", "fact"], {}))).toThrow(new UsageError('--kind must be domain or command, got "fact"'));
  });

  it("documents every command and every option with its variable", () => {
    const help = mainHelp();
    for (const spec of COMMANDS) {
      expect(help).toContain(`  ${spec.name}`);
      const text = commandHelp(spec);
      expect(text).toContain(`Usage: tidemark ${spec.name}`);
      for (const [name, option] of Object.entries(spec.options)) {
        expect(text).toContain(`--${name}`);
        if (option.env !== undefined) expect(text).toContain(`[${option.env}]`);
      }
    }
  });
});

describe("the origin's settings, in every process", () => {
  const origin = ORIGIN_ENV;

  it("accepts the seed's production settings, as aliases where they mean the same", () => {
    expect(loadServerConfig({ ...SERVICES, ...origin })).toMatchObject({ s3Bucket: "spice-event-store", pgSchema: "spice_event_registry", sequenceHandlerPrefix: "write_side" });
    expect(loadRelayConfig({ ...SERVICES, ...origin })).toMatchObject({ s3Bucket: "spice-event-store", pgSchema: "spice_event_registry" });
    expect(loadConsumerConfig({ ...SERVICES, ...origin })).toMatchObject({ s3Bucket: "spice-event-store", pgSchema: "spice_event_registry", leaseMs: 900_000, heartbeatMs: 30_000 });
    // The Tidemark name wins when both are set.
    expect(loadServerConfig({ ...SERVICES, EVENT_STORE_BUCKET: "old", TIDEMARK_S3_BUCKET: "new" }).s3Bucket).toBe("new");
  });

  const refusals: Array<[string, string, RegExp]> = [
    ["ENABLE_EVENT_SOURCING", "false", /ENABLE_EVENT_SOURCING: Tidemark does not allow switching off event sourcing: every accepted change is an immutable event/],
    ["ENABLE_PROCESSED_EVENT_REGISTRY", "false", /ENABLE_PROCESSED_EVENT_REGISTRY: Tidemark does not allow switching off the processed-event registry: .*exactly-once/],
    ["EVENT_STORE_SEQUENCE_ALLOCATOR_MODE", "memory", /EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: must be one of postgres, got "memory": .*optimistic concurrency/],
    ["EVENT_STORE_SEQUENCE_ALLOCATOR_MODE", "legacy", /weakness 7|other modes switched that off/],
    ["ENABLE_EVENT_SOURCING", "maybe", /ENABLE_EVENT_SOURCING: must be true, got "maybe"/],
  ];
  it.each(refusals)("refuses %s=%s in the server, the relay and the consumers, saying why", (name, value, message) => {
    for (const load of [loadServerConfig, loadRelayConfig, loadConsumerConfig] as const) {
      let error: unknown;
      try {
        load({ ...SERVICES, [name]: value });
      } catch (e) {
        error = e;
      }
      expect(error, load.name).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(message);
    }
  });

  it("asks a standalone consumer for PostgreSQL and Kafka by name", () => {
    const config = loadConsumerConfig({});
    expect(() => requireServices(config)).toThrow(/TIDEMARK_PG_URL is required[\s\S]*TIDEMARK_KAFKA_BROKERS is required/);
    expect(() => requireServices(config, { database: false, kafka: false })).not.toThrow();
  });
});

describe("rebuild progress", () => {
  it("draws a bar in place on a terminal", () => {
    const out: string[] = [];
    const progress = progressReporter({ out: () => {}, err: (t) => void out.push(t), errIsTTY: true });
    progress.update({ phase: "replay", position: 50, target: 200, events: 50, resumedFrom: 0 });
    progress.end();
    expect(out).toEqual(["\rreplay [########----------------------]  25%  position 50/200  50 events", "\n"]);
  });

  it("prints at most a line a second otherwise, and every phase change", () => {
    const out: string[] = [];
    let now = 0;
    const progress = progressReporter({ out: () => {}, err: (t) => void out.push(t), errIsTTY: false }, () => now);
    progress.update({ phase: "replay", position: 10, target: 100, events: 10, resumedFrom: 5 });
    now = 500;
    progress.update({ phase: "replay", position: 20, target: 100, events: 20, resumedFrom: 5 });
    now = 1200;
    progress.update({ phase: "replay", position: 30, target: 100, events: 30, resumedFrom: 5 });
    progress.update({ phase: "swap", position: 100, target: 100, events: 100, resumedFrom: 5 });
    progress.update({ phase: "done", position: 100, target: 100, events: 100, resumedFrom: 5 });
    expect(out).toEqual([
      "rebuild replay 10% position 10/100 events 10  resumed from 5\n",
      "rebuild replay 30% position 30/100 events 30  resumed from 5\n",
      "rebuild swap 100% position 100/100 events 100  resumed from 5\n",
      "rebuild done 100% position 100/100 events 100  resumed from 5\n",
    ]);
  });
});

describe("trace context of a consumed event", () => {
  const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const raw = (metadata: Record<string, string>, headers: Record<string, string>) => ({
    topic: "t",
    partition: 0,
    offset: "1",
    value: Buffer.from(encodeEnvelope(testEnvelope({ eventId: "e1", aggregateId: "a", seq: 1, metadata }))),
    headers,
  });

  it("comes from the Kafka header (R3), else from the envelope's metadata", () => {
    const other = "00-11111111111111111111111111111111-2222222222222222-01";
    expect(decodeMessage(raw({ traceparent: other }, { traceparent })).traceparent).toBe(traceparent);
    expect(decodeMessage(raw({ traceparent, tracestate: "k=v" }, {}))).toMatchObject({ traceparent, tracestate: "k=v" });
    expect(decodeMessage(raw({}, {})).traceparent).toBeUndefined();
  });

  it("yields the trace id of a well-formed traceparent only", () => {
    expect(traceIdOf(traceparent)).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(traceIdOf("00-00000000000000000000000000000000-00f067aa0ba902b7-01")).toBeUndefined();
    expect(traceIdOf("garbage")).toBeUndefined();
    expect(traceIdOf(undefined)).toBeUndefined();
  });
});
