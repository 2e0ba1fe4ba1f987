/**
 * The server's side of erasure by crypto-shredding (docs/SECURITY.md "Erasure", docs/CONTRACT.md
 * T5): sealing the data of appended events that name a subject before anything is written (one
 * transform step of the write path, {@link SubjectKeys.seal}), opening served events again
 * (ReadStream, Subscribe) or putting the erasure marker in place once the subject is forgotten, and
 * the data keys behind both, unwrapped with the master key and kept in memory only briefly.
 */
import { readFileSync } from "node:fs";
import type { Kysely } from "kysely";
import {
  cachedSubjectKeys,
  contentHash,
  databaseOf,
  ensureSubjectKey,
  type EventEnvelope,
  findSubjectKey,
  forgetSubjectKey,
  MasterKeyring,
  openEnvelope,
  PreconditionError,
  type PrivacyTables,
  sealData,
  type SubjectKeyCache,
} from "../core/index.js";
import { PrivacyService } from "../gen/tidemark/v1/privacy_pb.js";
import type { AppendInput, ProposedEventInput } from "./event-store.js";
import { type ClientOptions, createClient } from "./grpc/client.js";

/** The setting an operator sets to store events that name a subject. */
export const MASTER_KEY_SETTING = "TIDEMARK_MASTER_KEY_FILE";

/** Reads the master keyring from `path` ("" = none configured); throws naming the setting. */
export function loadMasterKeyring(path: string): MasterKeyring | undefined {
  if (path === "") return undefined;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new Error(`${MASTER_KEY_SETTING}: cannot read ${path}: ${(e as Error).message}`);
  }
  return MasterKeyring.parse(text, `${MASTER_KEY_SETTING} (${path})`);
}

/** Options of {@link SubjectKeys}. */
export interface SubjectKeysOptions {
  /**
   * How long an unwrapped data key (or its absence) is kept in memory. After ForgetSubject on
   * another server, this server serves the data at most this much longer; this server forgets at once.
   */
  readonly cacheMs: number;
}

/** The events of one stream, as {@link SubjectKeys.seal} seals them. */
type SealedStream = Pick<AppendInput, "aggregateType" | "aggregateId" | "events">;

/** Data keys of subjects, for one server process. */
export class SubjectKeys {
  private readonly cache: SubjectKeyCache;

  constructor(
    private readonly db: Kysely<PrivacyTables>,
    private readonly keyring: MasterKeyring | undefined,
    options: SubjectKeysOptions,
  ) {
    this.cache = cachedSubjectKeys(async (database, subject) => {
      const found = await findSubjectKey(db, keyring, database, subject);
      return found?.state === "live" ? found.dataKey : null;
    }, options.cacheMs);
  }

  /** The subject's data key, or null when it was forgotten or never named. */
  key(database: string, subject: string): Promise<Uint8Array | null> {
    return this.cache.key(database, subject);
  }

  /** Whether the subject is known here: live, forgotten, or never named. */
  async state(database: string, subject: string): Promise<"live" | "forgotten" | "unknown"> {
    const found = await findSubjectKey(this.db, this.keyring, database, subject);
    return found?.state ?? "unknown";
  }

  /**
   * The write path's sealing step: each event that names a subject gets its data sealed with the
   * subject's key (created on first use) and its content hash computed over the sealed bytes. Runs
   * before the reservation, so a refusal writes nothing: FAILED_PRECONDITION without a master key
   * (naming the setting) or for a subject that was forgotten (naming `{at}[i].subject`). One
   * stream's events: an AppendEvents call, or one stream of an AppendToStreams call.
   */
  async seal<S extends SealedStream>(input: S, at = "events"): Promise<S> {
    if (!input.events.some((e) => e.subject !== undefined)) return input;
    const keyring = this.keyring;
    if (keyring === undefined) {
      throw new PreconditionError(`events name a data subject, but no master key is configured: set ${MASTER_KEY_SETTING} (docs/OPERATIONS.md "Erasure"); nothing was written`);
    }
    const database = databaseOf(input.aggregateId);
    const events: ProposedEventInput[] = [];
    for (const [i, event] of input.events.entries()) {
      if (event.subject === undefined) {
        events.push(event);
        continue;
      }
      // A cached key is live; otherwise the table decides: create it, or refuse a forgotten subject.
      let dataKey = await this.cache.key(database, event.subject);
      if (dataKey === null) {
        const state = await ensureSubjectKey(this.db, keyring, database, event.subject);
        if (state.state === "forgotten") {
          throw new PreconditionError(`${at}[${i}].subject: subject ${event.subject} of database ${database} was forgotten; its data is not stored again (name the person by a new subject id)`);
        }
        dataKey = state.dataKey;
        this.cache.forget(database, event.subject);
      }
      const sealedData = sealData(dataKey, event.eventId, event.subject, event.dataJson ?? JSON.stringify(event.data));
      const hash = contentHash({
        eventType: event.eventType,
        aggregateType: input.aggregateType,
        aggregateId: input.aggregateId,
        data: {},
        metadata: event.metadata,
        schemaVersion: event.schemaVersion,
        kind: event.kind,
        subject: event.subject,
        sealedData,
      });
      events.push({ ...event, data: {}, dataJson: "{}", sealedData, contentHash: hash });
    }
    return { ...input, events };
  }

  /** A served envelope: its data opened, or the erasure marker once its subject is forgotten. */
  async open(envelope: EventEnvelope): Promise<EventEnvelope> {
    if (envelope.subject === "") return envelope;
    return openEnvelope(envelope, await this.key(databaseOf(envelope.aggregateId), envelope.subject));
  }

  /** Destroys the subject's key; false when no event ever named it. Forgets it here at once. */
  async forget(database: string, subject: string): Promise<boolean> {
    const had = await forgetSubjectKey(this.db, database, subject);
    this.cache.forget(database, subject);
    return had;
  }
}

/**
 * Asks the server at `address` for subjects' keys (PrivacyService.GetSubjectKey), as a consumer
 * process does: it holds no master key. `fetch` answers null for a forgotten subject.
 */
export function subjectKeyClient(address: string, options: ClientOptions = {}): { fetch(database: string, subject: string): Promise<Uint8Array | null>; close(): void } {
  const client = createClient(PrivacyService, address, options);
  return {
    async fetch(database, subject) {
      const answer = await client.getSubjectKey({ database, subject }, { deadlineMs: 10_000 });
      return answer.dataKey.length === 0 ? null : answer.dataKey;
    },
    close: () => client.close(),
  };
}
