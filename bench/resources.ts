/**
 * Per-benchmark isolation: each benchmark gets its own PostgreSQL schema, S3 bucket, Kafka topics
 * and consumer groups (like test/helpers/test-server.ts), a peer store its own database, and
 * `cleanup` removes all of them.
 */
import { randomBytes } from "node:crypto";
import {
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";
import { Kafka, logLevel } from "kafkajs";
import { sql } from "kysely";
import { createDatabase } from "../core/index.js";
import type { StackEnv } from "./stack-env.js";

/** The names one benchmark owns. */
export interface BenchNames {
  readonly id: string;
  readonly schema: string;
  readonly bucket: string;
  readonly topic: string;
  readonly deadLetterTopic: string;
  /** Prefix of the consumer groups this benchmark creates. */
  readonly groupPrefix: string;
}

/** Hands out unique names and removes what they name at the end. */
export class BenchResources {
  private readonly owned: BenchNames[] = [];
  private readonly groups = new Set<string>();
  private readonly databases: string[] = [];

  constructor(private readonly stack: StackEnv) {}

  /** Fresh names for one benchmark (`label` makes them recognisable, e.g. `append`). */
  allocate(label: string): BenchNames {
    const id = `bench${label.replace(/[^a-z0-9]/g, "")}${randomBytes(4).toString("hex")}`;
    const names: BenchNames = {
      id,
      schema: id,
      bucket: `tm-${id}`,
      topic: `tidemark-${id}`,
      deadLetterTopic: `tidemark-${id}-dlq`,
      groupPrefix: `tidemark-${id}.`,
    };
    this.owned.push(names);
    return names;
  }

  /**
   * Creates a PostgreSQL database of its own on the stack's server (named like the schemas,
   * `bench<label><hex>`) and returns its connection URL; dropped at the end. For a peer store whose
   * tables are not schema-qualified: a database keeps them, and its catalog checks, apart from
   * everything else on the server.
   */
  async newDatabase(label: string): Promise<{ readonly name: string; readonly url: string }> {
    const name = `bench${label.replace(/[^a-z0-9]/g, "")}${randomBytes(4).toString("hex")}`;
    const admin = createDatabase({ url: this.stack.pgUrl, schema: "public", poolSize: 1 });
    try {
      this.databases.push(name);
      await sql`create database ${sql.id(name)}`.execute(admin.db);
    } finally {
      await admin.close();
    }
    const url = new URL(this.stack.pgUrl);
    url.pathname = `/${name}`;
    return { name, url: url.toString() };
  }

  /** Records a consumer group to delete at the end. */
  ownGroup(group: string): void {
    this.groups.add(group);
  }

  /** A Kafka client for the bench's own clients (admin, baseline producer, latency consumer). */
  kafka(clientId: string): Kafka {
    return new Kafka({ clientId, brokers: this.stack.kafkaBrokers.split(","), logLevel: logLevel.NOTHING, retry: { retries: 3 } });
  }

  /** An S3 client with the stack's credentials (cleanup only; the measured paths use core/). */
  s3(): S3Client {
    return new S3Client({
      endpoint: this.stack.s3Endpoint,
      region: this.stack.s3Region,
      forcePathStyle: true,
      credentials: { accessKeyId: this.stack.s3AccessKey, secretAccessKey: this.stack.s3SecretKey },
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  }

  /** Drops every schema and database, empties and deletes every bucket, deletes every topic and group. */
  async cleanup(log: (message: string) => void): Promise<void> {
    const names = this.owned.splice(0);
    const databases = this.databases.splice(0);
    if (names.length === 0 && databases.length === 0) return;
    const database = createDatabase({ url: this.stack.pgUrl, schema: "public", poolSize: 1 });
    try {
      for (const n of names) await sql`drop schema if exists ${sql.id(n.schema)} cascade`.execute(database.db);
      // FORCE: on Ctrl-C the peer's pool may still hold connections to it.
      for (const d of databases) await sql`drop database if exists ${sql.id(d)} with (force)`.execute(database.db);
    } catch (e) {
      log(`cleanup: dropping schemas and databases failed: ${String(e)}`);
    } finally {
      await database.close();
    }
    if (names.length === 0) return;
    const s3 = this.s3();
    for (const n of names) {
      try {
        const removed = await emptyBucket(s3, n.bucket);
        await s3.send(new DeleteBucketCommand({ Bucket: n.bucket }));
        if (removed > 0) log(`cleanup: bucket ${n.bucket} (${removed} objects) deleted`);
      } catch (e) {
        if ((e as { name?: string }).name !== "NoSuchBucket") log(`cleanup: bucket ${n.bucket}: ${String(e)}`);
      }
    }
    s3.destroy();
    const admin = this.kafka("tidemark-bench-cleanup").admin();
    try {
      await admin.connect();
      const existing = new Set(await admin.listTopics());
      const topics = names.flatMap((n) => [n.topic, n.deadLetterTopic]).filter((t) => existing.has(t));
      if (topics.length > 0) await admin.deleteTopics({ topics, timeout: 10_000 });
      const groups = [...this.groups];
      if (groups.length > 0) await admin.deleteGroups(groups).catch(() => {});
    } catch (e) {
      log(`cleanup: kafka: ${String(e)}`);
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }
}

async function emptyBucket(s3: S3Client, bucket: string): Promise<number> {
  let removed = 0;
  for (;;) {
    const out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000 }));
    const keys = (out.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
    if (keys.length === 0) return removed;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
    removed += keys.length;
  }
}
