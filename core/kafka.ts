/**
 * The one Kafka client factory: every kafkajs client of a process (the relay's producer and admin,
 * the consumers' groups, producer and admin) is made here, with kafkajs's logs routed into our
 * JSON logs. Retries and timeouts are the caller's: the relay keeps kafkajs's retries short and
 * retries identical batches itself; consumers let kafkajs wait out an outage.
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { Kafka, logLevel, type ISocketFactory, type LogEntry, type RetryOptions, type SASLOptions } from "kafkajs";
import type { Logger } from "./log.js";
import { ConfigError, parse, type Setting } from "./settings.js";

/**
 * How the relay and the consumers reach Kafka (docs/SECURITY.md): TLS (with a custom CA) and
 * SASL (SCRAM-SHA-256/512 or PLAIN). Both tables include these.
 */
export const KAFKA_SECURITY_SETTINGS = {
  kafkaTls: { env: "TIDEMARK_KAFKA_TLS", default: false, parse: parse.bool, description: "Talk TLS to the Kafka brokers (implied by TIDEMARK_KAFKA_CA)." },
  kafkaCa: { env: "TIDEMARK_KAFKA_CA", default: "", defaultLabel: "unset (the system's roots)", parse: parse.string, description: "PEM CA file that signed the brokers' certificates; turns TLS on." },
  kafkaSaslMechanism: { env: "TIDEMARK_KAFKA_SASL_MECHANISM", default: "", defaultLabel: "unset (no SASL)", parse: (raw: string) => (raw === "" ? raw : parse.oneOf("scram-sha-256", "scram-sha-512", "plain")(raw)), description: "SASL mechanism: scram-sha-256, scram-sha-512 or plain (use plain only over TLS)." },
  kafkaSaslUsername: { env: "TIDEMARK_KAFKA_SASL_USERNAME", default: "", defaultLabel: "unset", parse: parse.string, description: "SASL user name." },
  kafkaSaslPassword: { env: "TIDEMARK_KAFKA_SASL_PASSWORD", default: "", defaultLabel: "unset", parse: parse.string, description: "SASL password.", secret: true },
} satisfies Record<string, Setting<unknown>>;

/** kafkajs's `ssl` and `sasl` options. */
export interface KafkaSecurity {
  readonly ssl?: tls.ConnectionOptions | true;
  readonly sasl?: SASLOptions;
}

/** The TLS and SASL options from the settings (reads the CA file); ConfigError naming the variable. */
export function kafkaSecurity(config: { kafkaTls: boolean; kafkaCa: string; kafkaSaslMechanism: string; kafkaSaslUsername: string; kafkaSaslPassword: string }): KafkaSecurity {
  let ssl: KafkaSecurity["ssl"];
  if (config.kafkaCa !== "") {
    try {
      ssl = { ca: readFileSync(config.kafkaCa) };
    } catch (e) {
      throw new ConfigError(`invalid configuration:\n  TIDEMARK_KAFKA_CA: cannot read ${config.kafkaCa}: ${(e as Error).message}`);
    }
  } else if (config.kafkaTls) ssl = true;
  if (config.kafkaSaslMechanism === "") return ssl === undefined ? {} : { ssl };
  if (config.kafkaSaslUsername === "" || config.kafkaSaslPassword === "") {
    throw new ConfigError("invalid configuration:\n  TIDEMARK_KAFKA_SASL_USERNAME, TIDEMARK_KAFKA_SASL_PASSWORD: required with TIDEMARK_KAFKA_SASL_MECHANISM");
  }
  const sasl = { mechanism: config.kafkaSaslMechanism, username: config.kafkaSaslUsername, password: config.kafkaSaslPassword } as SASLOptions;
  return ssl === undefined ? { sasl } : { ssl, sasl };
}

/**
 * The sockets of one kafkajs client, so that a start being given up can cut them: kafkajs's
 * disconnect waits for every request in flight, and a group join stays in flight until Kafka
 * drops a dead member (its session timeout). Pass it as {@link KafkaClientSettings.sockets}.
 */
export class KafkaSockets {
  private readonly open = new Set<net.Socket>();

  /** kafkajs's own socket factory (keep-alive 60 s, TLS when asked), remembering each socket. */
  readonly factory: ISocketFactory = ({ host, port, ssl, onConnect }) => {
    const socket = ssl ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...(typeof ssl === "object" ? ssl : {}) }, onConnect) : net.connect({ host, port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    this.open.add(socket);
    socket.once("close", () => this.open.delete(socket));
    return socket;
  };

  /** Destroys every open socket with `reason`: the requests in flight on them fail at once. */
  destroyAll(reason: Error): void {
    for (const socket of this.open) socket.destroy(reason);
  }
}

/** How a client connects and retries. */
export interface KafkaClientSettings {
  readonly brokers: readonly string[];
  readonly clientId: string;
  /** Client-side timeout of one request (kafkajs's default when unset). */
  readonly requestTimeoutMs?: number;
  /** Timeout of a TCP connection (default 3 000). */
  readonly connectionTimeoutMs?: number;
  /** Fail a request that outlives its timeout even while kafkajs would still wait for it. */
  readonly enforceRequestTimeout?: boolean;
  /** kafkajs's retries of one operation (default: 10, from 250 ms up to 5 s). */
  readonly retry?: RetryOptions;
  /** Sees every connection the client opens (see {@link KafkaSockets}). */
  readonly sockets?: KafkaSockets;
  /** TLS and SASL ({@link kafkaSecurity}); default plain text. */
  readonly security?: KafkaSecurity;
}

const DEFAULT_RETRY: RetryOptions = { initialRetryTime: 250, maxRetryTime: 5_000, retries: 10 };

/** A kafkajs client for `settings`, logging through `log`. */
export function createKafka(settings: KafkaClientSettings, log: Logger): Kafka {
  return new Kafka({
    clientId: settings.clientId,
    brokers: [...settings.brokers],
    connectionTimeout: settings.connectionTimeoutMs ?? 3_000,
    ...(settings.requestTimeoutMs === undefined ? {} : { requestTimeout: settings.requestTimeoutMs }),
    ...(settings.enforceRequestTimeout === undefined ? {} : { enforceRequestTimeout: settings.enforceRequestTimeout }),
    retry: settings.retry ?? DEFAULT_RETRY,
    logLevel: logLevel.INFO,
    logCreator: () => (entry: LogEntry) => forwardLog(log, entry),
    ...(settings.sockets === undefined ? {} : { socketFactory: settings.sockets.factory }),
    ...(settings.security?.ssl === undefined ? {} : { ssl: settings.security.ssl }),
    ...(settings.security?.sasl === undefined ? {} : { sasl: settings.security.sasl }),
  });
}

function forwardLog(log: Logger, { namespace, level, log: entry }: LogEntry): void {
  const { message, timestamp: _timestamp, logger: _logger, ...extra } = entry as LogEntry["log"] & { logger?: string };
  const fields = { kafkajs: namespace, ...extra };
  // The relay limits kafkajs's retries on purpose and retries the identical batch itself (or
  // replaces the producer), which keeps the idempotence kafkajs warns about here.
  if (message.startsWith("Limiting retries for the idempotent producer")) log.debug(fields, message);
  // kafkajs reports every failed request as ERROR; our callers retry and decide what is an error.
  else if (level === logLevel.ERROR || level === logLevel.WARN) log.warn(fields, message);
  else if (level === logLevel.INFO) log.debug(fields, message);
  else log.trace(fields, message);
}

/**
 * Connects to `brokers` once, without kafkajs's retries, and disconnects: throws within a few
 * seconds when Kafka does not answer, where a client of {@link createKafka} may keep trying for half
 * a minute — for a caller that retries on its own terms (and may be told to stop meanwhile).
 */
export async function probeKafka(brokers: readonly string[], clientId: string): Promise<void> {
  const kafka = new Kafka({ clientId, brokers: [...brokers], logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 3_000, requestTimeout: 5_000 });
  const admin = kafka.admin();
  try {
    await admin.connect();
  } finally {
    await admin.disconnect();
  }
}
