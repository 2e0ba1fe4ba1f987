/**
 * Erasure by crypto-shredding (docs/SECURITY.md "Erasure", docs/CONTRACT.md T5): the data of an
 * event that names a data subject is sealed with that subject's data key (AES-256-GCM); data keys
 * are stored only wrapped by a master key, in `subject_keys`; forgetting the subject destroys its
 * data key, so every copy of the sealed data — S3, Kafka, dead letters, backups — stays unreadable.
 * Here: the subject's id rules, the sealed format, the master keyring and the key repository.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";
import type { JsonObject } from "@bufbuild/protobuf";
import { sql, type Kysely } from "kysely";
import type { PrivacyTables } from "./db/schema.js";
import type { EventEnvelope } from "./envelope.js";
import { isJsonObject } from "./json-object.js";

/**
 * What a served event carries as `data` once its subject was forgotten: exactly this object, on an
 * envelope whose `subject` is set. Everything else of the event (ids, type, metadata, hashes) is intact.
 */
export const ERASED_DATA: Readonly<JsonObject> = Object.freeze({ "tidemark.erased": true });

/** True when `event` names a subject and its data is the erasure marker. */
export function isErased(event: { readonly subject?: string; readonly data?: JsonObject | undefined }): boolean {
  return (event.subject ?? "") !== "" && event.data?.["tidemark.erased"] === true && Object.keys(event.data).length === 1;
}

/** The aggregate type of the erasure events; written only by PrivacyService. */
export const SUBJECT_AGGREGATE_TYPE = "DataSubject";
/** The event type recording an erasure. */
export const SUBJECT_FORGOTTEN = "SubjectForgotten";

// An opaque id: no `/` (it is part of the erasure event's aggregate id), no `@` or spaces (an
// e-mail address or a name would be personal data stored in clear).
const SUBJECT = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** Why `subject` is not a valid subject id, or undefined. */
export function checkSubject(subject: string): string | undefined {
  if (subject === "") return "is required";
  if (!SUBJECT.test(subject)) return "must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,127} (an opaque id, stored in clear: never an e-mail address or a name)";
  return undefined;
}

// ------------------------------------------------------------------------------- the sealed format

const SEALED_VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

/**
 * Seals `json` (an event's data as JSON) for the event `eventId` of `subject`:
 * version byte 1 || nonce (12) || AES-256-GCM ciphertext || tag (16), bound to the event id and
 * subject as associated data. The nonce is an HMAC of the key over the event id and the plaintext
 * (a synthetic nonce): the same event retried seals to the same bytes, so its content hash — which
 * covers the sealed bytes — still decides retries (W4), and a nonce repeats only with its plaintext.
 */
export function sealData(dataKey: Uint8Array, eventId: string, subject: string, json: string): Uint8Array {
  const nonce = createHmac("sha256", dataKey).update(`tidemark.nonce.v1\n${eventId}\n${json}`, "utf8").digest().subarray(0, NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", dataKey, nonce);
  cipher.setAAD(associatedData(eventId, subject));
  const body = Buffer.concat([cipher.update(json, "utf8"), cipher.final()]);
  return Buffer.concat([Buffer.from([SEALED_VERSION]), nonce, body, cipher.getAuthTag()]);
}

/** The data sealed by {@link sealData}; throws when the key, event or subject do not match. */
export function openData(dataKey: Uint8Array, eventId: string, subject: string, sealed: Uint8Array): JsonObject {
  const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (bytes.length < 1 + NONCE_BYTES + TAG_BYTES || bytes[0] !== SEALED_VERSION) throw new Error("sealed data of an unknown format");
  const decipher = createDecipheriv("aes-256-gcm", dataKey, bytes.subarray(1, 1 + NONCE_BYTES));
  decipher.setAAD(associatedData(eventId, subject));
  decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
  const json = Buffer.concat([decipher.update(bytes.subarray(1 + NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]).toString("utf8");
  const data: unknown = JSON.parse(json);
  if (!isJsonObject(data)) throw new Error("sealed data is not a JSON object");
  return data;
}

function associatedData(eventId: string, subject: string): Buffer {
  return Buffer.from(`tidemark.sealed.v1\n${eventId}\n${subject}`, "utf8");
}

/**
 * The envelope as served: `data` opened with the subject's key, or {@link ERASED_DATA} when the key
 * is gone (`null`). An envelope without a subject is returned as it is. A shallow copy: stored
 * envelopes are shared (the event cache) and never change.
 */
export function openEnvelope(envelope: EventEnvelope, dataKey: Uint8Array | null): EventEnvelope {
  if (envelope.subject === "") return envelope;
  if (dataKey === null) return { ...envelope, data: { ...ERASED_DATA } };
  return { ...envelope, data: openData(dataKey, envelope.eventId, envelope.subject, envelope.sealedData) };
}

/** Subjects' data keys kept in memory for a while: null for a subject forgotten or never named. */
export interface SubjectKeyCache {
  key(database: string, subject: string): Promise<Uint8Array | null>;
  /** Drops what is kept for the subject (this process just forgot it). */
  forget(database: string, subject: string): void;
}

/**
 * Keys from `fetch`, each answer kept `cacheMs`: after ForgetSubject elsewhere, whoever holds the
 * cache still opens the subject's data for at most that long (servers and consumers alike).
 */
export function cachedSubjectKeys(fetch: (database: string, subject: string) => Promise<Uint8Array | null>, cacheMs: number): SubjectKeyCache {
  const cache = new Map<string, { key: Uint8Array | null; at: number }>();
  const idOf = (database: string, subject: string) => `${database}\u0000${subject}`;
  return {
    async key(database, subject) {
      const id = idOf(database, subject);
      const hit = cache.get(id);
      if (hit !== undefined && performance.now() - hit.at < cacheMs) return hit.key;
      const key = await fetch(database, subject);
      if (cache.size > 10_000) cache.clear();
      cache.set(id, { key, at: performance.now() });
      return key;
    },
    forget: (database, subject) => void cache.delete(idOf(database, subject)),
  };
}

// ------------------------------------------------------------------------------ the master keyring

/** Master keys: the first wraps new data keys, every one unwraps (docs/OPERATIONS.md "Rotating the master key"). */
export class MasterKeyring {
  private constructor(private readonly keys: ReadonlyMap<string, Buffer>, readonly currentId: string) {}

  /**
   * Parses a master key file: one key per line, `{id} {64 hex digits}` (id `[A-Za-z0-9_.-]{1,64}`);
   * blank lines and `#` comments ignored. The first key is the current one. Throws naming the line.
   */
  static parse(text: string, source = "the master key file"): MasterKeyring {
    const keys = new Map<string, Buffer>();
    let current: string | undefined;
    text.split("\n").forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const match = /^([A-Za-z0-9_.-]{1,64})\s+([0-9a-fA-F]{64})$/.exec(line);
      if (match === null) throw new Error(`${source}, line ${i + 1}: expected "{key id} {64 hex digits}" (make one with: echo "k1 $(openssl rand -hex 32)")`);
      if (keys.has(match[1]!)) throw new Error(`${source}, line ${i + 1}: key id ${match[1]} appears twice`);
      keys.set(match[1]!, Buffer.from(match[2]!, "hex"));
      current ??= match[1]!;
    });
    if (current === undefined) throw new Error(`${source} holds no key`);
    return new MasterKeyring(keys, current);
  }

  /** Ids of every key, the current one first. */
  get ids(): string[] {
    return [...this.keys.keys()];
  }

  /** Wraps a data key with the current master key, bound to its subject. */
  wrap(database: string, subject: string, dataKey: Uint8Array): { keyId: string; wrapped: Buffer } {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.keys.get(this.currentId)!, nonce);
    cipher.setAAD(Buffer.from(`tidemark.subject-key.v1\n${database}\n${subject}`, "utf8"));
    const body = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return { keyId: this.currentId, wrapped: Buffer.concat([nonce, body, cipher.getAuthTag()]) };
  }

  /** Unwraps a data key; throws when its master key is not in the ring or the bytes do not match. */
  unwrap(database: string, subject: string, keyId: string, wrapped: Uint8Array): Buffer {
    const master = this.keys.get(keyId);
    if (master === undefined) throw new Error(`the data key of a subject is wrapped by master key ${JSON.stringify(keyId)}, which is not in the master key file`);
    const bytes = Buffer.from(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength);
    const decipher = createDecipheriv("aes-256-gcm", master, bytes.subarray(0, NONCE_BYTES));
    decipher.setAAD(Buffer.from(`tidemark.subject-key.v1\n${database}\n${subject}`, "utf8"));
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    return Buffer.concat([decipher.update(bytes.subarray(NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]);
  }
}

// ------------------------------------------------------------------------------- the key repository

/** A subject's key as stored: live (the data key), forgotten, or never named (undefined). */
export type SubjectKeyState = { readonly state: "live"; readonly dataKey: Buffer } | { readonly state: "forgotten" };

/** The subject's key, unwrapped, or undefined when no event ever named the subject. */
export async function findSubjectKey(db: Kysely<PrivacyTables>, keyring: MasterKeyring | undefined, database: string, subject: string): Promise<SubjectKeyState | undefined> {
  const row = await db
    .selectFrom("subject_keys")
    .select(["master_key_id", "wrapped_key"])
    .where("database", "=", database)
    .where("subject", "=", subject)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  if (row.wrapped_key === null || row.master_key_id === null) return { state: "forgotten" };
  if (keyring === undefined) throw new Error("a subject key cannot be unwrapped: no master key is configured (TIDEMARK_MASTER_KEY_FILE)");
  return { state: "live", dataKey: keyring.unwrap(database, subject, row.master_key_id, row.wrapped_key) };
}

/**
 * The subject's key, created (a fresh random data key, wrapped) when no event named it before.
 * Concurrent creators agree: the first insert wins and everyone reads it back.
 */
export async function ensureSubjectKey(db: Kysely<PrivacyTables>, keyring: MasterKeyring, database: string, subject: string): Promise<SubjectKeyState> {
  const found = await findSubjectKey(db, keyring, database, subject);
  if (found !== undefined) return found;
  const { keyId, wrapped } = keyring.wrap(database, subject, randomBytes(KEY_BYTES));
  await db
    .insertInto("subject_keys")
    .values({ database, subject, master_key_id: keyId, wrapped_key: wrapped })
    .onConflict((oc) => oc.columns(["database", "subject"]).doNothing())
    .execute();
  return (await findSubjectKey(db, keyring, database, subject))!;
}

/**
 * Destroys the subject's key (the row stays, forgotten). Returns false when no event ever named
 * the subject (nothing changes), true when it is forgotten now or was before.
 */
export async function forgetSubjectKey(db: Kysely<PrivacyTables>, database: string, subject: string): Promise<boolean> {
  const row = await db
    .updateTable("subject_keys")
    .set({ wrapped_key: null, master_key_id: null, forgotten_at: sql<Date>`coalesce(forgotten_at, now())` })
    .where("database", "=", database)
    .where("subject", "=", subject)
    .returning("subject")
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Rewraps every live data key not under the keyring's current master key (master key rotation):
 * the events are not touched, only `subject_keys`. Returns how many keys were rewrapped.
 */
export async function rewrapSubjectKeys(db: Kysely<PrivacyTables>, keyring: MasterKeyring, batchSize = 500): Promise<number> {
  let count = 0;
  for (;;) {
    const rows = await db
      .selectFrom("subject_keys")
      .select(["database", "subject", "master_key_id", "wrapped_key"])
      .where("wrapped_key", "is not", null)
      .where("master_key_id", "<>", keyring.currentId)
      .limit(batchSize)
      .execute();
    if (rows.length === 0) return count;
    for (const row of rows) {
      const dataKey = keyring.unwrap(row.database, row.subject, row.master_key_id!, row.wrapped_key!);
      const { keyId, wrapped } = keyring.wrap(row.database, row.subject, dataKey);
      // Only a key still live and still under its old master key: a concurrent ForgetSubject wins.
      await db
        .updateTable("subject_keys")
        .set({ master_key_id: keyId, wrapped_key: wrapped })
        .where("database", "=", row.database)
        .where("subject", "=", row.subject)
        .where("master_key_id", "=", row.master_key_id)
        .where("wrapped_key", "is not", null)
        .execute();
      count += 1;
    }
  }
}
