import type { Migration } from "kysely";
import * as writeSide from "./2026-11-27-01-write-side.js";
import * as relay from "./2026-11-27-02-relay.js";
import * as consumers from "./2026-11-27-03-consumers.js";
import * as appendFunctions from "./2026-11-27-04-append-functions.js";
import * as segments from "./2026-12-01-05-segments.js";
import * as tokens from "./2026-12-02-01-tokens.js";
import * as recoveries from "./2026-12-02-06-recoveries.js";
import * as hashChain from "./2026-12-02-07-hash-chain.js";
import * as deadLetterRedrive from "./2026-12-03-01-dead-letter-redrive.js";
import * as snapshots from "./2026-12-03-01-snapshots.js";
import * as multiStreamCalls from "./2026-12-03-08-multi-stream-calls.js";
import * as subjectKeys from "./2026-12-03-10-subject-keys.js";
import * as watermarksByAggregate from "./2026-12-03-11-watermarks-by-aggregate.js";
import * as listingOrder from "./2026-12-03-12-listing-order.js";
import * as registryCounts from "./2026-12-04-01-registry-counts.js";

/**
 * Every migration, by dated name. Names sort in the order they must run; append new ones with a
 * later date and never reorder.
 */
export const MIGRATIONS: Readonly<Record<string, Migration>> = Object.freeze({
  "2026-11-27-01-write-side": writeSide,
  "2026-11-27-02-relay": relay,
  "2026-11-27-03-consumers": consumers,
  "2026-11-27-04-append-functions": appendFunctions,
  "2026-12-01-05-segments": segments,
  "2026-12-02-01-tokens": tokens,
  "2026-12-02-06-recoveries": recoveries,
  "2026-12-02-07-hash-chain": hashChain,
  "2026-12-03-01-dead-letter-redrive": deadLetterRedrive,
  "2026-12-03-01-snapshots": snapshots,
  "2026-12-03-08-multi-stream-calls": multiStreamCalls,
  "2026-12-03-10-subject-keys": subjectKeys,
  "2026-12-03-11-watermarks-by-aggregate": watermarksByAggregate,
  "2026-12-03-12-listing-order": listingOrder,
  "2026-12-04-01-registry-counts": registryCounts,
});
