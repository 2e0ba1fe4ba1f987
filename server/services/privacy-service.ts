/**
 * gRPC handlers of tidemark.v1.PrivacyService (docs/SECURITY.md "Erasure"): ForgetSubject destroys
 * a subject's data key and records the erasure as an event; GetSubjectKey hands a consumer process
 * the data key it needs to open the events it handles.
 */
import { v5 as uuidv5 } from "uuid";
import {
  checkInstancePart,
  checkSubject,
  contentHash,
  EventKind,
  SUBJECT_AGGREGATE_TYPE,
  SUBJECT_FORGOTTEN,
  Violations,
} from "../../core/index.js";
import type { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import type { EventStore } from "../event-store.js";
import type { HandlersOf } from "../grpc/bridge.js";
import type { SubjectKeys } from "../privacy.js";

/** Namespace of the erasure events' ids (UUIDv5 of database and subject): a repeated erasure is the same append. */
const ERASURE_EVENT_NAMESPACE = "5b0c3a6e-6f7e-4c59-9b8e-2f1d7e0a9c41";

function checkRequest(request: { database: string; subject: string }): void {
  const v = new Violations();
  v.add("database", request.database === "" ? "is required" : checkInstancePart(request.database));
  v.add("subject", checkSubject(request.subject));
  v.throwIfAny();
}

/** gRPC handlers of tidemark.v1.PrivacyService. */
export function privacyHandlers(store: EventStore, keys: SubjectKeys): HandlersOf<typeof PrivacyService> {
  return {
    async forgetSubject(request) {
      checkRequest(request);
      const { database, subject } = request;
      // The key goes first: a crash before the event leaves the subject forgotten, and a retry
      // (which finds it so) still records the event, once (its id is derived, W4).
      if (!(await keys.forget(database, subject))) return { forgotten: false };
      const aggregateId = `${database}/${subject}`;
      const eventId = uuidv5(`${SUBJECT_FORGOTTEN}\n${aggregateId}`, ERASURE_EVENT_NAMESPACE);
      const data = { database, subject };
      const metadata = { kind: "domain" };
      const out = await store.append({
        aggregateType: SUBJECT_AGGREGATE_TYPE,
        aggregateId,
        expectation: { type: "any" },
        actor: request.actor,
        events: [
          {
            eventId,
            eventType: SUBJECT_FORGOTTEN,
            data,
            metadata,
            schemaVersion: 1,
            kind: EventKind.DOMAIN,
            contentHash: contentHash({ eventType: SUBJECT_FORGOTTEN, aggregateType: SUBJECT_AGGREGATE_TYPE, aggregateId, data, metadata, schemaVersion: 1, kind: EventKind.DOMAIN }),
          },
        ],
      });
      return { forgotten: true, eventId, globalPosition: BigInt(out.events[0]!.position) };
    },

    async getSubjectKey(request) {
      checkRequest(request);
      const key = await keys.key(request.database, request.subject);
      if (key !== null) return { dataKey: key, forgotten: false };
      return { forgotten: (await keys.state(request.database, request.subject)) === "forgotten" };
    },
  };
}
