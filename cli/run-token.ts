/**
 * `tidemark token create | list | revoke ID` (docs/SECURITY.md): the bearer tokens in the store's
 * `api_tokens` table, opened like `migrate` does. A created token is printed once on stdout and is
 * kept only as a hash.
 */
import type { Kysely } from "kysely";
import { type AuthTables, checkTokenSpec, createToken, listTokens, migrateToLatest, openBackends, parseExpiry, revokeToken, type Scope, type TokenSpec } from "../core/index.js";
import { loadServerConfig } from "../server/index.js";
import { UsageError, type ParsedCommand } from "./args.js";
import type { Io } from "./io.js";

/** The spec `token create` asks for, from its flags; UsageError naming every mistake. */
export function tokenSpecOf(cmd: ParsedCommand, now: Date): TokenSpec {
  const principal = cmd.values["principal"];
  const databases = (cmd.values["database"] as string[] | undefined) ?? [];
  const scopes = typeof cmd.values["scope"] === "string" ? cmd.values["scope"].split(",").map((s) => s.trim()).filter((s) => s !== "") : [];
  const prefix = cmd.values["type-prefix"];
  const problems: string[] = [];
  if (typeof principal !== "string") problems.push("--principal NAME is required");
  if (databases.length === 0) problems.push("--database DB is required (repeat it for several; * for every database)");
  if (scopes.length === 0) problems.push("--scope is required: comma-separated read, write, subscribe, admin");
  let expiresAt: Date | null = null;
  const expires = cmd.values["expires"];
  if (typeof expires === "string") {
    try {
      expiresAt = parseExpiry(expires, now);
    } catch (e) {
      problems.push(`--expires ${(e as Error).message}`);
    }
  }
  const spec: TokenSpec = { principal: typeof principal === "string" ? principal : "", databases, scopes: scopes as Scope[], aggregateTypePrefix: typeof prefix === "string" ? prefix : "", expiresAt };
  if (problems.length === 0) problems.push(...checkTokenSpec(spec));
  if (problems.length > 0) throw new UsageError(problems.join("; "));
  return spec;
}

/** `tidemark token …`. */
export async function runToken(cmd: ParsedCommand, io: Io): Promise<number> {
  const [action, id] = cmd.positionals as [string, string | undefined];
  if (!["create", "list", "revoke"].includes(action)) throw new UsageError(`unknown action ${JSON.stringify(action)}: create, list or revoke`);
  if (action === "revoke" && id === undefined) throw new UsageError("revoke needs the token id (see `tidemark token list`)");
  if (action !== "revoke" && id !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(id)}`);
  const spec = action === "create" ? tokenSpecOf(cmd, new Date()) : undefined;
  const config = loadServerConfig(cmd.env);
  const backends = await openBackends(config);
  try {
    await migrateToLatest(backends.database.db, backends.database.schema);
    const db = backends.database.db as unknown as Kysely<AuthTables>;
    if (spec !== undefined) {
      const made = (await createToken(db, spec))!;
      io.err(`token ${made.id} for ${spec.principal} (${spec.scopes.join(",")} on ${spec.databases.join(",")}${spec.expiresAt ? `, expires ${spec.expiresAt.toISOString()}` : ""}); shown once:\n`);
      io.out(`${made.token}\n`);
      return 0;
    }
    if (action === "revoke") {
      if (await revokeToken(db, id!)) {
        io.out(`revoked ${id}\n`);
        return 0;
      }
      io.err(`tidemark token: no unrevoked token ${JSON.stringify(id)}\n`);
      return 1;
    }
    const tokens = await listTokens(db);
    if (cmd.values["json"] === true) {
      for (const t of tokens) io.out(`${JSON.stringify(t)}\n`);
      return 0;
    }
    if (tokens.length === 0) io.err("no tokens (the first `tidemark migrate` of a store prints its bootstrap token)\n");
    for (const t of tokens) {
      const state = t.revokedAt !== null ? `revoked ${t.revokedAt.toISOString()}` : t.expiresAt !== null && t.expiresAt.getTime() <= Date.now() ? "expired" : "active";
      const parts = [t.id, t.principal.padEnd(16), `databases ${t.databases.join(",")}`, `scopes ${t.scopes.join(",")}`];
      if (t.aggregateTypePrefix !== "") parts.push(`types ${t.aggregateTypePrefix}*`);
      parts.push(t.expiresAt === null ? "no expiry" : `expires ${t.expiresAt.toISOString()}`, state);
      if (t.bootstrap) parts.push("(bootstrap)");
      io.out(`${parts.join("  ")}\n`);
    }
    return 0;
  } finally {
    await backends.close();
  }
}
