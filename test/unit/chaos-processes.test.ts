/**
 * The chaos run configures its Tidemark processes through the environment, as an operator does.
 * Tidemark ignores a variable it does not know, so a renamed setting would silently fall back to
 * its default (a 30 s lease in a round that expects 3 s): every variable the harness sets must be
 * one its process reads, with a value that process accepts.
 */
import { describe, expect, it } from "vitest";
import { CONSUMER_SETTINGS } from "../../consumers/index.js";
import { parseSettings, type Setting } from "../../core/index.js";
import { PROCESSES, processEnv, storageEnv } from "../../chaos/processes.js";
import { RELAY_SETTINGS } from "../../relay/index.js";
import { SERVER_SETTINGS } from "../../server/index.js";

const s3 = { accessKey: "a", secretKey: "s", region: "us-east-1", bucket: "b" };

function tableOf(args: readonly string[]): Record<string, Setting<unknown>> {
  if (args[0] === "server") return SERVER_SETTINGS;
  if (args[0] === "relay") return RELAY_SETTINGS;
  return CONSUMER_SETTINGS;
}

describe("the chaos run's process environments", () => {
  for (const spec of PROCESSES) {
    it(`sets only variables \`tidemark ${spec.args.join(" ")}\` reads, with values it accepts (${spec.name})`, () => {
      const env = { ...storageEnv("postgres://u@127.0.0.1:1/d", 2, s3), ...processEnv(spec, 3, 4, "127.0.0.1:5") };
      const table = tableOf(spec.args);
      const known = new Set(Object.values(table).flatMap((s) => [s.env, ...(s.aliases ?? [])]));
      expect(Object.keys(env).filter((name) => !known.has(name))).toEqual([]);
      expect(() => parseSettings(table, env)).not.toThrow();
    });
  }
});
