/**
 * The origin's settings that have no setting of their own in Tidemark. Each is accepted with the
 * value that keeps Tidemark's guarantees, so an environment written for the origin still starts;
 * a value that would switch a guarantee off is refused at start, in every process, saying why
 * (docs/CONTRACT.md, weakness 7: no configuration mode may silently switch a guarantee off).
 */
import type { Setting } from "./settings.js";

const FALSE = /^(0|false|no|off)$/i;
const TRUE = /^(1|true|yes|on)$/i;

/** A switch that must stay on; `why` says what switching it off would break. */
const mustStayOn =
  (what: string, why: string) =>
  (raw: string): true => {
    if (FALSE.test(raw)) throw new Error(`Tidemark does not allow switching off ${what}: ${why}`);
    if (!TRUE.test(raw)) throw new Error(`must be true, got ${JSON.stringify(raw)}`);
    return true;
  };

const allocatorMode = (raw: string): "postgres" => {
  if (raw === "postgres") return raw;
  throw new Error(
    `must be one of postgres, got ${JSON.stringify(raw)}: PostgreSQL allocates every sequence number atomically, ` +
      "which is what optimistic concurrency (expected_seq, docs/CONTRACT.md W3) and gap-free streams rest on; " +
      "the origin's other modes switched that off, so Tidemark has none",
  );
};

const handlerPrefix = (raw: string): string => {
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(raw)) throw new Error(`must be 1 to 64 letters, digits or _ . : -, got ${JSON.stringify(raw)}`);
  return raw;
};

/** Settings of the origin accepted by every process (server, relay, consumers). */
export const ORIGIN_SETTINGS = {
  eventSourcing: {
    env: "ENABLE_EVENT_SOURCING",
    default: true,
    parse: mustStayOn(
      "event sourcing",
      "every accepted change is an immutable event in the object store, the source of truth; there is no other storage to fall back to",
    ),
    description: "Accepted for compatibility with the origin; must be true (there is no mode without event sourcing).",
  },
  registryEnabled: {
    env: "ENABLE_PROCESSED_EVENT_REGISTRY",
    default: true,
    parse: mustStayOn(
      "the processed-event registry",
      "it is what makes consumers' side effects " +
        "exactly-once (claim, lease, fencing), keeps per-aggregate order and records retries and dead letters (docs/CONTRACT.md C1-C5)",
    ),
    description: "Accepted for compatibility with the origin; must be true (the registry makes consumers exactly-once in effect).",
  },
  allocatorMode: {
    env: "EVENT_STORE_SEQUENCE_ALLOCATOR_MODE",
    default: "postgres",
    parse: allocatorMode,
    description: "Accepted for compatibility with the origin; only `postgres` exists (optimistic concurrency cannot be switched off).",
  },
  sequenceHandlerPrefix: {
    env: "EVENT_STORE_SEQUENCE_HANDLER_PREFIX",
    default: "",
    defaultLabel: "unset",
    parse: handlerPrefix,
    description:
      "Accepted for compatibility with the origin, where it prefixed the write side's rows in the registry table it shared with consumers. " +
      "Tidemark's write side has its own tables (`stream_heads`, `event_log`), so the value is checked and has no effect.",
  },
} satisfies Record<string, Setting<unknown>>;
