/**
 * Command-line parsing of the `tidemark` CLI over node's util.parseArgs: each command declares its
 * options, and an option that stands for a setting names its environment variable, so a flag is
 * just another way to set that variable and validation errors name both.
 */
import { parseArgs } from "node:util";

/** One option of a command. */
export interface OptionSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
  /** The environment variable this option sets (flags win over the environment). */
  readonly env?: string;
  /** Placeholder of the value in help, e.g. `DIR`. */
  readonly value?: string;
  readonly description: string;
}

/** A positional argument of a command. */
export interface PositionalSpec {
  readonly name: string;
  readonly description: string;
  readonly optional?: boolean;
  /** Takes every remaining argument. */
  readonly rest?: boolean;
}

/** A command: its help and its options; `run` is attached by the dispatcher. */
export interface CommandSpec {
  readonly name: string;
  /** One line for `tidemark --help`. */
  readonly summary: string;
  /** Paragraphs for `tidemark <command> --help`. */
  readonly description: string;
  readonly positionals: readonly PositionalSpec[];
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Settings read from the environment beyond the options (listed in help). */
  readonly settings?: readonly string[];
  readonly examples?: readonly string[];
}

/** A usage mistake: printed with a hint to `--help`, exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** What a command receives after parsing. */
export interface ParsedCommand {
  readonly values: Readonly<Record<string, string | boolean | string[] | undefined>>;
  readonly positionals: readonly string[];
  /** The process environment with the options that stand for settings applied. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Variable → flag, for error messages (`TIDEMARK_GRPC_ADDR (--grpc-addr)`). */
  readonly flagOf: ReadonlyMap<string, string>;
}

/** The option every command has. */
export const HELP_OPTION: OptionSpec = { type: "boolean", short: "h", description: "Show this help." };

/** Parses `argv` (after the command name) against `spec`; throws UsageError on mistakes. */
export function parseCommand(spec: CommandSpec, argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ParsedCommand {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = { help: { type: "boolean", short: "h" } };
  for (const [name, o] of Object.entries(spec.options)) {
    options[name] = { type: o.type, ...(o.short === undefined ? {} : { short: o.short }), ...(o.multiple === undefined ? {} : { multiple: o.multiple }) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument starting with a '-'.*$/s, ""));
  }
  const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
  const positionals = parsed.positionals;
  if (values["help"] !== true) {
    const required = spec.positionals.filter((p) => p.optional !== true);
    if (positionals.length < required.length) {
      throw new UsageError(`missing ${required.slice(positionals.length).map((p) => `<${p.name}>`).join(" ")}`);
    }
    if (!spec.positionals.some((p) => p.rest === true) && positionals.length > spec.positionals.length) {
      throw new UsageError(`unexpected argument ${JSON.stringify(positionals[spec.positionals.length])}`);
    }
  }
  const merged: Record<string, string | undefined> = { ...env };
  const flagOf = new Map<string, string>();
  for (const [name, o] of Object.entries(spec.options)) {
    const value = values[name];
    if (o.env === undefined || typeof value !== "string") continue;
    merged[o.env] = value;
    flagOf.set(o.env, `--${name}`);
  }
  return { values, positionals, env: merged, flagOf };
}

/** Adds the flag to each variable a configuration error names, when the value came from a flag. */
export function nameFlags(message: string, flagOf: ReadonlyMap<string, string>): string {
  let out = message;
  for (const [variable, flag] of flagOf) out = out.replaceAll(`${variable}:`, `${variable} (${flag}):`);
  return out;
}

/** `tidemark <command> --help`. */
export function commandHelp(spec: CommandSpec): string {
  const args = spec.positionals.map((p) => (p.optional === true ? `[${p.name}${p.rest === true ? "..." : ""}]` : `<${p.name}>${p.rest === true ? "..." : ""}`));
  const lines = [`Usage: tidemark ${spec.name}${args.length > 0 ? ` ${args.join(" ")}` : ""} [options]`, "", wrap(spec.description, 0)];
  if (spec.positionals.length > 0) {
    lines.push("", "Arguments:");
    for (const p of spec.positionals) lines.push(row(`${p.name}`, p.description));
  }
  lines.push("", "Options:");
  for (const [name, o] of Object.entries({ ...spec.options, help: HELP_OPTION })) {
    const flag = `${o.short === undefined ? "    " : `-${o.short}, `}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    const repeat = o.multiple === true ? " Repeatable." : "";
    lines.push(row(flag, `${o.description}${repeat}${o.env === undefined ? "" : ` [${o.env}]`}`));
  }
  if (spec.settings !== undefined && spec.settings.length > 0) {
    lines.push("", "Environment (see docs/CONFIGURATION.md for every setting and its default):", wrap(spec.settings.join(", "), 2));
  }
  if (spec.examples !== undefined && spec.examples.length > 0) {
    lines.push("", "Examples:", ...spec.examples.map((e) => `  ${e}`));
  }
  return `${lines.join("\n")}\n`;
}

const COLUMN = 30;
const WIDTH = 100;

function row(left: string, right: string): string {
  const pad = left.length + 2 < COLUMN ? " ".repeat(COLUMN - left.length - 2) : `\n${" ".repeat(COLUMN)}`;
  return `  ${left}${pad}${wrap(right, COLUMN).trimStart()}`;
}

/** Wraps text at WIDTH columns, indenting every line by `indent`. Paragraphs are kept. */
export function wrap(text: string, indent: number): string {
  return text
    .split("\n\n")
    .map((paragraph) => {
      const out: string[] = [];
      let line = "";
      for (const word of paragraph.split(/\s+/).filter((w) => w !== "")) {
        if (line !== "" && indent + line.length + 1 + word.length > WIDTH) {
          out.push(" ".repeat(indent) + line);
          line = word;
        } else line = line === "" ? word : `${line} ${word}`;
      }
      if (line !== "") out.push(" ".repeat(indent) + line);
      return out.join("\n");
    })
    .join("\n\n");
}
