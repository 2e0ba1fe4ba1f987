import { describe, expect, it } from "vitest";
import { ConfigError } from "../../core/settings.js";
import { loadServerConfig } from "../../server/config.js";

const minimal = {
  TIDEMARK_PG_URL: "postgres://u:p@127.0.0.1:5432/db",
  TIDEMARK_S3_ENDPOINT: "http://127.0.0.1:9000",
  TIDEMARK_S3_ACCESS_KEY: "k",
  TIDEMARK_S3_SECRET_KEY: "s",
};

describe("server configuration", () => {
  it("applies defaults and freezes the result", () => {
    const config = loadServerConfig(minimal);
    expect(config.grpcAddr).toBe("127.0.0.1:50051");
    expect(config.writeDeadlineMs).toBe(25_000);
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("names the variable in errors", () => {
    expect(() => loadServerConfig({ ...minimal, TIDEMARK_WRITE_DEADLINE_MS: "soon" })).toThrowError(/TIDEMARK_WRITE_DEADLINE_MS: must be an integer/);
    expect(() => loadServerConfig({ TIDEMARK_PG_URL: minimal.TIDEMARK_PG_URL })).toThrowError(/TIDEMARK_S3_ENDPOINT, TIDEMARK_S3_ACCESS_KEY, TIDEMARK_S3_SECRET_KEY must be set too/);
    expect(() => loadServerConfig({ TIDEMARK_S3_ENDPOINT: "nope" })).toThrowError(ConfigError);
  });

  it("selects the embedded mode when no service is configured", () => {
    const config = loadServerConfig({});
    expect(config.pgUrl).toBe("");
    expect(config.dataDir).toBe(".tidemark");
  });

  it("accepts the origin's names as aliases", () => {
    const config = loadServerConfig({ ...minimal, EVENT_STORE_BUCKET: "legacy", EVENT_STORE_SEQUENCE_SCHEMA: "legacy_schema" });
    expect(config.s3Bucket).toBe("legacy");
    expect(config.pgSchema).toBe("legacy_schema");
  });

  it("refuses settings that would switch a guarantee off", () => {
    expect(() => loadServerConfig({ ...minimal, EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: "memory" })).toThrowError(/EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: must be one of postgres/);
    expect(() => loadServerConfig({ ...minimal, ENABLE_EVENT_SOURCING: "false" })).toThrowError(/does not allow switching off/);
  });
});
