/**
 * The one Kafka client factory: every kafkajs client of a process (the relay's producer and admin,
 * the consumers' groups, producer and admin) is made here, with kafkajs's logs routed into our
 * JSON logs. Retries and timeouts are the caller's: the relay keeps kafkajs's retries short and
 * retries identical batches itself; consumers let kafkajs wait out an outage.
 */
import net from "node:net";
import tls from "node:tls";
import { Kafka, logLevel, type ISocketFactory, type LogEntry, type RetryOptions } from "kafkajs";
import type { Logger } from "./log.js";

/**
 * The sockets of one kafkajs client, so that a start being given up can cut them: kafkajs's
 * disconnect waits for every request in flight, and a group join stays in flight until Kafka
 * drops a dead member (its session timeout). Pass it as {@link KafkaClientSettings.sockets}.
 */
export class KafkaSockets {
  private readonly open = new Set<net.Socket>();

  /** kafkajs's own socket factory (keep-alive 60 s, TLS when asked), remembering each socket. */
  readonly factory: ISocketFactory = ({ host, port, ssl, onConnect }) => {
    const socket = ssl ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...ssl }, onConnect) : net.connect({ host, port }, onConnect);
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
