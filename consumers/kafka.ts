/**
 * The Kafka client of a consumer process: kafkajs with its logs routed into our JSON logs and
 * retries tuned so an outage is survived by waiting, not by crashing the process.
 */
import net from "node:net";
import tls from "node:tls";
import { Kafka, logLevel, type ISocketFactory, type LogEntry } from "kafkajs";
import type { Logger } from "../core/index.js";

/**
 * The sockets of one kafkajs client, so that a start being given up can cut them: kafkajs's
 * disconnect waits for every request in flight, and a group join stays in flight until Kafka
 * drops a dead member (its session timeout). Pass `factory` as the client's socket factory.
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

/**
 * A kafkajs client for `brokers`, logging through `log` (kafkajs info noise goes to debug);
 * `sockets`, when given, sees every connection it opens.
 */
export function createKafka(brokers: readonly string[], clientId: string, log: Logger, sockets?: KafkaSockets): Kafka {
  const kafkaLog = log.child({ component: "kafkajs" });
  return new Kafka({
    clientId,
    brokers: [...brokers],
    logLevel: logLevel.INFO,
    logCreator:
      () =>
      ({ namespace, level, log: entry }: LogEntry) => {
        const { message, timestamp: _timestamp, logger: _logger, ...extra } = entry as unknown as Record<string, unknown>;
        const fields = { namespace, ...extra };
        if (level === logLevel.ERROR) kafkaLog.warn(fields, String(message));
        else if (level === logLevel.WARN) kafkaLog.warn(fields, String(message));
        else kafkaLog.debug(fields, String(message));
      },
    retry: { initialRetryTime: 250, maxRetryTime: 5_000, retries: 10 },
    connectionTimeout: 3_000,
    ...(sockets === undefined ? {} : { socketFactory: sockets.factory }),
  });
}

/**
 * Connects to `brokers` once, without kafkajs's retries, and disconnects: throws within a few
 * seconds when Kafka does not answer, where a client of {@link createKafka} keeps trying for half
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
