/**
 * The access model and the token format (core/tokens.ts, docs/CONTRACT.md T2, T3) and the security
 * settings (server/config.ts): pure, no I/O.
 */
import { describe, expect, it } from "vitest";
import { checkAccess, checkTokenSpec, databaseOf, newToken, parseExpiry, parseToken, type Principal, reachesDatabase, secretMatches, hashSecret, visibleTo } from "../../core/tokens.js";
import { authMode, loadServerConfig } from "../../server/config.js";

const principal = (over: Partial<Principal> = {}): Principal => ({ tokenId: "0123456789abcdef", name: "alice", databases: ["alpha"], scopes: ["read"], aggregateTypePrefix: "", expiresAt: null, ...over });

describe("the database of an aggregate", () => {
  it.each([
    ["alpha/Person/ada", "alpha"],
    ["alpha/o-1", "alpha"],
    ["o-1", ""],
    ["/leading", ""],
    ["a/b/c", "a"],
  ])("%s → %j", (id, db) => expect(databaseOf(id)).toBe(db));
});

describe("checkAccess", () => {
  it("needs the scope first, then the database, then the prefix, naming only what was asked", () => {
    expect(checkAccess(principal(), { scope: "write", database: "alpha" })?.missing).toBe("scope");
    const db = checkAccess(principal(), { scope: "read", database: "beta" });
    expect(db?.missing).toBe("database");
    expect(db?.message).toBe('the token does not grant the database "beta"');
    expect(db?.message).not.toContain("alpha");
    expect(checkAccess(principal({ aggregateTypePrefix: "Ord" }), { scope: "read", database: "alpha", aggregateType: "Invoice" })?.missing).toBe("aggregate_type_prefix");
    expect(checkAccess(principal({ aggregateTypePrefix: "Ord" }), { scope: "read", database: "alpha", aggregateType: "Order" })).toBeUndefined();
  });

  it("an aggregate of no database needs the * database", () => {
    expect(checkAccess(principal(), { scope: "read", database: "", aggregateId: "o-1" })?.message).toMatch(/names no database/);
    expect(reachesDatabase(principal({ databases: ["*"] }), "")).toBe(true);
    expect(reachesDatabase(principal({ databases: ["*"] }), "anything")).toBe(true);
  });

  it("visibleTo filters by database and prefix", () => {
    const visible = visibleTo(principal({ databases: ["alpha", "gamma"], aggregateTypePrefix: "Ord" }));
    expect(visible("Order", "alpha/1")).toBe(true);
    expect(visible("Order", "gamma/1")).toBe(true);
    expect(visible("Order", "beta/1")).toBe(false);
    expect(visible("Invoice", "alpha/1")).toBe(false);
    expect(visible("Order", "alpha")).toBe(false);
  });
});

describe("the token format", () => {
  it("round-trips, and the secret matches only its own hash", () => {
    const t = newToken();
    expect(t.token).toMatch(/^tm_[0-9a-f]{16}_[0-9a-f]{64}$/);
    expect(parseToken(t.token)).toEqual({ id: t.id, secret: t.secret });
    expect(secretMatches(t.secret, hashSecret(t.secret))).toBe(true);
    expect(secretMatches(newToken().secret, hashSecret(t.secret))).toBe(false);
    expect(secretMatches(t.secret, "")).toBe(false);
  });

  it.each(["", "tm_", "tm_0123_abcd", `tm_${"g".repeat(16)}_${"0".repeat(64)}`, `TM_${"0".repeat(16)}_${"0".repeat(64)}`, `tm_${"0".repeat(16)}_${"0".repeat(64)} `])("refuses %j", (raw) => {
    expect(parseToken(raw)).toBeUndefined();
  });
});

describe("token specs and expiry", () => {
  it("checks principal, databases, scopes and * without admin", () => {
    expect(checkTokenSpec({ principal: "ci", databases: ["alpha"], scopes: ["read"] })).toEqual([]);
    expect(checkTokenSpec({ principal: "", databases: [], scopes: [] })).toHaveLength(3);
    expect(checkTokenSpec({ principal: "x", databases: ["a/b"], scopes: ["read"] }).join()).toMatch(/database "a\/b"/);
    expect(checkTokenSpec({ principal: "x", databases: ["*"], scopes: ["read"] }).join()).toMatch(/needs the admin scope/);
    expect(checkTokenSpec({ principal: "x", databases: ["alpha"], scopes: ["root" as never] }).join()).toMatch(/unknown scope "root"/);
  });

  it("parses durations and dates", () => {
    const now = new Date("2026-12-01T00:00:00Z");
    expect(parseExpiry("30d", now).toISOString()).toBe("2026-12-31T00:00:00.000Z");
    expect(parseExpiry("90m", now).toISOString()).toBe("2026-12-01T01:30:00.000Z");
    expect(parseExpiry("2027-01-01", now).toISOString()).toBe("2027-01-01T00:00:00.000Z");
    expect(() => parseExpiry("2020-01-01", now)).toThrow(/future/);
    expect(() => parseExpiry("soon", now)).toThrow(/duration/);
  });
});

describe("security settings", () => {
  const services = { TIDEMARK_PG_URL: "postgres://u:p@h:5432/d", TIDEMARK_S3_ENDPOINT: "http://h:9000", TIDEMARK_S3_ACCESS_KEY: "a", TIDEMARK_S3_SECRET_KEY: "s" };
  it("defaults to tokens in the services mode and off embedded; an explicit value wins", () => {
    expect(authMode(loadServerConfig(services))).toBe("tokens");
    expect(authMode(loadServerConfig({}))).toBe("off");
    expect(authMode(loadServerConfig({ ...services, TIDEMARK_AUTH: "off" }))).toBe("off");
    expect(authMode(loadServerConfig({ TIDEMARK_AUTH: "tokens" }))).toBe("tokens");
    expect(() => loadServerConfig({ TIDEMARK_AUTH: "maybe" })).toThrow(/TIDEMARK_AUTH: must be one of tokens, off/);
  });

  it("TLS needs both the certificate and the key; a client CA needs TLS", () => {
    expect(() => loadServerConfig({ TIDEMARK_TLS_CERT: "c.pem" })).toThrow(/TIDEMARK_TLS_CERT, TIDEMARK_TLS_KEY: set both/);
    expect(() => loadServerConfig({ TIDEMARK_TLS_CLIENT_CA: "ca.pem" })).toThrow(/TIDEMARK_TLS_CLIENT_CA: needs/);
    expect(loadServerConfig({ TIDEMARK_TLS_CERT: "c.pem", TIDEMARK_TLS_KEY: "k.pem" }).tlsCert).toBe("c.pem");
  });
});
