/**
 * Bearer tokens and what they grant (docs/SECURITY.md): the pure access model (a principal, its
 * databases, scopes and aggregate-type prefix, and the checks every RPC makes), the token format
 * and its constant-time verification, and the repository of the `api_tokens` table.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Kysely } from "kysely";
import type { AuthTables } from "./db/schema.js";
import { PermissionDeniedError } from "./errors.js";
import { checkInstancePart } from "./ids.js";

/** What a token may do; scopes are independent (write does not imply read). */
export const SCOPES = ["read", "write", "subscribe", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

/** In a token's databases: every database, and aggregates that belong to none (admin tokens only). */
export const ALL_DATABASES = "*";

/** An authenticated caller: the token's grants, as the server checks them on every call. */
export interface Principal {
  readonly tokenId: string;
  /** The principal name: recorded as the actor of every event it appends (docs/CONTRACT.md T4). */
  readonly name: string;
  readonly databases: readonly string[];
  readonly scopes: readonly Scope[];
  /** "" = every aggregate type. */
  readonly aggregateTypePrefix: string;
  readonly expiresAt: Date | null;
}

/**
 * The database (tenant) an aggregate belongs to: the part of its id before the first `/` (instances:
 * `{database}/{class}/{id}`); "" when the id has no `/` — such aggregates belong to no database and
 * only a `*` token reaches them.
 */
export function databaseOf(aggregateId: string): string {
  const slash = aggregateId.indexOf("/");
  return slash <= 0 ? "" : aggregateId.slice(0, slash);
}

/** True when `principal` may reach `database` ("" = an aggregate of no database). */
export function reachesDatabase(principal: Principal, database: string): boolean {
  return principal.databases.includes(ALL_DATABASES) || (database !== "" && principal.databases.includes(database));
}

/** What one call needs. */
export interface AccessNeed {
  readonly scope: Scope;
  /** The database the call touches ("" = an aggregate of no database); omitted when none applies. */
  readonly database?: string;
  /** The aggregate type the call touches; omitted when none applies. */
  readonly aggregateType?: string;
  /** The aggregate id, only for the message about an id that names no database. */
  readonly aggregateId?: string;
}

/**
 * The refusal for a call `principal` may not make, or undefined. The message names only what the
 * request named (its database, its aggregate type, the scope), never what exists.
 */
export function checkAccess(principal: Principal, need: AccessNeed): PermissionDeniedError | undefined {
  if (!principal.scopes.includes(need.scope)) return new PermissionDeniedError(`the token lacks the scope "${need.scope}"`, "scope", need.scope);
  if (need.database !== undefined && !reachesDatabase(principal, need.database)) {
    return need.database === ""
      ? new PermissionDeniedError(
          `aggregate id ${JSON.stringify(need.aggregateId ?? "")} names no database (no "{database}/" prefix): only a token for every database (*) reaches it`,
          "database",
          "*",
        )
      : new PermissionDeniedError(`the token does not grant the database "${need.database}"`, "database", need.database);
  }
  if (need.aggregateType !== undefined && !need.aggregateType.startsWith(principal.aggregateTypePrefix)) {
    return new PermissionDeniedError(`the token does not grant the aggregate type "${need.aggregateType}" (outside its aggregate-type prefix)`, "aggregate_type_prefix", need.aggregateType);
  }
  return undefined;
}

/** A predicate over events: true when `principal` may see an event of this aggregate. */
export function visibleTo(principal: Principal): (aggregateType: string, aggregateId: string) => boolean {
  const all = principal.databases.includes(ALL_DATABASES);
  const databases = new Set(principal.databases);
  const prefix = principal.aggregateTypePrefix;
  return (aggregateType, aggregateId) => (all || databases.has(databaseOf(aggregateId))) && aggregateType.startsWith(prefix);
}

// ------------------------------------------------------------------------------------ the format

const TOKEN = /^tm_([0-9a-f]{16})_([0-9a-f]{64})$/;

/** A fresh token: `tm_{16 hex id}_{64 hex secret}` (256 random bits of secret). */
export function newToken(): { id: string; secret: string; token: string } {
  const id = randomBytes(8).toString("hex");
  const secret = randomBytes(32).toString("hex");
  return { id, secret, token: `tm_${id}_${secret}` };
}

/** The id and secret of a well-formed token, or undefined. */
export function parseToken(raw: string): { id: string; secret: string } | undefined {
  const match = TOKEN.exec(raw);
  return match === null ? undefined : { id: match[1]!, secret: match[2]! };
}

/**
 * SHA-256 of the secret, hex. A fast hash suffices: the secret is 256 random bits, so there is no
 * dictionary to search (a password hash would only slow every call down).
 */
export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/** Compares the secret's hash with the stored one in constant time. */
export function secretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashSecret(secret), "hex");
  const b = Buffer.from(storedHash, "hex");
  return a.length === b.length && timingSafeEqual(a, b);
}

// --------------------------------------------------------------------------------- the repository

/** What a new token grants. */
export interface TokenSpec {
  readonly principal: string;
  readonly databases: readonly string[];
  readonly scopes: readonly Scope[];
  readonly aggregateTypePrefix?: string;
  readonly expiresAt?: Date | null;
}

/** A stored token as `tidemark token list` shows it (never its secret or hash). */
export interface TokenInfo {
  readonly id: string;
  readonly principal: string;
  readonly databases: readonly string[];
  readonly scopes: readonly Scope[];
  readonly aggregateTypePrefix: string;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  readonly bootstrap: boolean;
  readonly createdAt: Date;
}

const PRINCIPAL = /^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$/;
const TYPE_PREFIX = /^[A-Za-z0-9_.-]{0,64}$/;

/** Reasons `spec` is not a valid token, empty when it is. */
export function checkTokenSpec(spec: TokenSpec): string[] {
  const out: string[] = [];
  if (!PRINCIPAL.test(spec.principal)) out.push(`principal must match ${PRINCIPAL.source}`);
  if (spec.databases.length === 0) out.push("at least one database is required (or * for every database)");
  for (const database of spec.databases) {
    if (database === ALL_DATABASES) continue;
    const reason = checkInstancePart(database);
    if (reason !== undefined) out.push(`database ${JSON.stringify(database)} ${reason}`);
  }
  if (spec.scopes.length === 0) out.push(`at least one scope is required (${SCOPES.join(", ")})`);
  for (const scope of spec.scopes) if (!(SCOPES as readonly string[]).includes(scope)) out.push(`unknown scope ${JSON.stringify(scope)} (one of ${SCOPES.join(", ")})`);
  if (spec.databases.includes(ALL_DATABASES) && !spec.scopes.includes("admin")) out.push("the database * (every database) needs the admin scope");
  if (!TYPE_PREFIX.test(spec.aggregateTypePrefix ?? "")) out.push(`aggregate-type prefix must match ${TYPE_PREFIX.source}`);
  return out;
}

/** Stores a new token and returns it; the token itself exists only in the return value. */
export async function createToken(db: Kysely<AuthTables>, spec: TokenSpec, options: { bootstrap?: boolean } = {}): Promise<{ id: string; token: string } | undefined> {
  const problems = checkTokenSpec(spec);
  if (problems.length > 0) throw new Error(`invalid token: ${problems.join("; ")}`);
  const fresh = newToken();
  const row = await db
    .insertInto("api_tokens")
    .values({
      id: fresh.id,
      secret_hash: hashSecret(fresh.secret),
      principal: spec.principal,
      databases: JSON.stringify([...new Set(spec.databases)]),
      scopes: JSON.stringify([...new Set(spec.scopes)]),
      aggregate_type_prefix: spec.aggregateTypePrefix ?? "",
      expires_at: spec.expiresAt ?? null,
      bootstrap: options.bootstrap === true,
    })
    .onConflict((c) => c.doNothing())
    .returning("id")
    .executeTakeFirst();
  return row === undefined ? undefined : { id: fresh.id, token: fresh.token };
}

/**
 * Creates the store's bootstrap token (principal `admin`, every database, every scope, no expiry)
 * unless the store ever had one; returns it once, or undefined.
 */
export function createBootstrapToken(db: Kysely<AuthTables>): Promise<{ id: string; token: string } | undefined> {
  return createToken(db, { principal: "admin", databases: [ALL_DATABASES], scopes: [...SCOPES] }, { bootstrap: true });
}

/** Every token, newest first (revoked ones included). */
export async function listTokens(db: Kysely<AuthTables>): Promise<TokenInfo[]> {
  const rows = await db.selectFrom("api_tokens").selectAll().orderBy("created_at", "desc").orderBy("id").execute();
  return rows.map((r) => ({
    id: r.id,
    principal: r.principal,
    databases: r.databases,
    scopes: r.scopes as Scope[],
    aggregateTypePrefix: r.aggregate_type_prefix,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    bootstrap: r.bootstrap,
    createdAt: r.created_at,
  }));
}

/** Revokes a token at once (every server checks the table on every call); false when unknown or already revoked. */
export async function revokeToken(db: Kysely<AuthTables>, id: string): Promise<boolean> {
  const result = await db.updateTable("api_tokens").set({ revoked_at: new Date() }).where("id", "=", id).where("revoked_at", "is", null).executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Why a presented token does not authenticate. */
export type TokenFailure = "malformed" | "unknown" | "expired" | "revoked";

/**
 * Verifies a presented token against the table: the principal, or why not. The secret is compared
 * in constant time; an unknown id costs the same hash and comparison as a known one.
 */
export async function verifyToken(db: Kysely<AuthTables>, raw: string, now: Date): Promise<Principal | TokenFailure> {
  const parsed = parseToken(raw);
  if (parsed === undefined) return "malformed";
  const row = await db
    .selectFrom("api_tokens")
    .select(["id", "secret_hash", "principal", "databases", "scopes", "aggregate_type_prefix", "expires_at", "revoked_at"])
    .where("id", "=", parsed.id)
    .executeTakeFirst();
  const matches = secretMatches(parsed.secret, row?.secret_hash ?? "0".repeat(64));
  if (row === undefined || !matches) return "unknown";
  if (row.revoked_at !== null) return "revoked";
  if (row.expires_at !== null && row.expires_at.getTime() <= now.getTime()) return "expired";
  return {
    tokenId: row.id,
    name: row.principal,
    databases: row.databases,
    scopes: row.scopes as Scope[],
    aggregateTypePrefix: row.aggregate_type_prefix,
    expiresAt: row.expires_at,
  };
}

/** Parses `30d`, `12h`, `90m`, `3600s` (or an ISO date) into an expiry after `now`. */
export function parseExpiry(raw: string, now: Date): Date {
  const match = /^(\d{1,6})([smhd])$/.exec(raw);
  if (match !== null) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as "s" | "m" | "h" | "d"];
    return new Date(now.getTime() + Number(match[1]) * unit);
  }
  const date = new Date(raw);
  if (!/^\d{4}-\d{2}-\d{2}/.test(raw) || Number.isNaN(date.getTime())) throw new Error(`must be a duration (30d, 12h, 90m, 3600s) or an ISO date, got ${JSON.stringify(raw)}`);
  if (date.getTime() <= now.getTime()) throw new Error(`must be in the future, got ${JSON.stringify(raw)}`);
  return date;
}
