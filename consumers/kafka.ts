/**
 * The Kafka client of a consumer process: kafkajs with its logs routed into our JSON logs and
 * retries tuned so an outage is survived by waiting, not by crashing the process.
 */
import { Kafka, logLevel, type LogEntry } from "kafkajs";
import type { Logger } from "../core/log.js";

/** A kafkajs client for `brokers`, logging through `log` (kafkajs info noise goes to debug). */
export function createKafka(brokers: readonly string[], clientId: string, log: Logger): Kafka {
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
