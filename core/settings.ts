/**
 * Declarative configuration: each setting names its environment variable, aliases, default and
 * parser, so a process's config is parsed once, typed and frozen, errors name the variable, and the
 * configuration reference in docs is generated from the same table.
 */

/** One setting read from the environment. */
export interface Setting<T> {
  readonly env: string;
  /** Older names accepted for the same meaning (e.g. the origin's `EVENT_STORE_BUCKET`). */
  readonly aliases?: readonly string[];
  readonly description: string;
  /** The value when unset; omit for a required setting. */
  readonly default?: T;
  /** Shown in docs instead of the default (e.g. "derived from ..."). */
  readonly defaultLabel?: string;
  readonly parse: (raw: string) => T;
  /** Hidden from logs (credentials). */
  readonly secret?: boolean;
}

/** Thrown when configuration is invalid; the message names the variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The parsed values of a settings table. */
export type Values<S> = { readonly [K in keyof S]: S[K] extends Setting<infer T> ? T : never };

/** Parses `spec` from `env`; throws ConfigError naming every bad variable at once. */
export function parseSettings<S extends Record<string, Setting<unknown>>>(
  spec: S,
  env: Readonly<Record<string, string | undefined>>,
): Values<S> {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, setting] of Object.entries(spec)) {
    const names = [setting.env, ...(setting.aliases ?? [])];
    const name = names.find((n) => env[n] !== undefined && env[n] !== "");
    if (name === undefined) {
      if (setting.default === undefined && setting.defaultLabel === undefined) problems.push(`${setting.env} is required: ${setting.description}`);
      out[key] = setting.default;
      continue;
    }
    try {
      out[key] = setting.parse(env[name]!);
    } catch (e) {
      problems.push(`${name}: ${(e as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n  ${problems.join("\n  ")}`);
  return Object.freeze(out) as Values<S>;
}

/**
 * Parses several tables from one environment, each variable once, and throws one ConfigError
 * naming every bad variable of every table (a process of many parts reports all at once).
 */
export function parseSettingsTables<T extends Record<string, Record<string, Setting<unknown>>>>(
  tables: T,
  env: Readonly<Record<string, string | undefined>>,
): { readonly [K in keyof T]: Values<T[K]> } {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, spec] of Object.entries(tables)) {
    try {
      out[name] = parseSettings(spec, env);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.message.split("\n").slice(1).map((line) => line.trim()));
    }
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n  ${[...new Set(problems)].join("\n  ")}`);
  return out as { readonly [K in keyof T]: Values<T[K]> };
}

/** Parsers for common setting types. */
export const parse = {
  string: (raw: string): string => raw,
  int:
    (min: number, max = Number.MAX_SAFE_INTEGER) =>
    (raw: string): number => {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < min || n > max) throw new Error(`must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
      return n;
    },
  bool: (raw: string): boolean => {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new Error(`must be true or false, got ${JSON.stringify(raw)}`);
  },
  oneOf:
    <T extends string>(...values: T[]) =>
    (raw: string): T => {
      if (!(values as string[]).includes(raw)) throw new Error(`must be one of ${values.join(", ")}, got ${JSON.stringify(raw)}`);
      return raw as T;
    },
  hostPort: (raw: string): string => {
    if (!/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(raw)) throw new Error(`must be host:port, got ${JSON.stringify(raw)}`);
    return raw;
  },
  url: (raw: string): string => {
    new URL(raw);
    return raw;
  },
  list: (raw: string): string[] => raw.split(",").map((s) => s.trim()).filter((s) => s.length > 0),
};

/** Renders a settings table as Markdown rows for the configuration reference. */
export function describeSettings(spec: Record<string, Setting<unknown>>): string {
  const rows = Object.values(spec).map((s) => {
    const def = s.defaultLabel ?? (s.default === undefined ? "*required*" : `\`${JSON.stringify(s.default)}\``);
    const aliases = s.aliases?.length ? ` (alias: ${s.aliases.map((a) => `\`${a}\``).join(", ")})` : "";
    return `| \`${s.env}\`${aliases} | ${def} | ${s.description} |`;
  });
  return ["| variable | default | meaning |", "| --- | --- | --- |", ...rows].join("\n");
}

/** Settings every process reads, whatever parts it runs: its one metrics endpoint and its log level. */
export const PROCESS_SETTINGS = {
  metricsAddr: { env: "TIDEMARK_METRICS_ADDR", default: "", defaultLabel: "off", parse: (raw: string) => (raw === "" ? raw : parse.hostPort(raw)), description: "Serve Prometheus metrics of the whole process at http://ADDR/metrics (host:port); unset means no metrics endpoint." },
  logLevel: { env: "TIDEMARK_LOG_LEVEL", default: "info", parse: parse.oneOf("trace", "debug", "info", "warn", "error", "fatal", "silent"), description: "Log level of the JSON logs on stdout." },
} satisfies Record<string, Setting<unknown>>;
