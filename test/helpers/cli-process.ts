/**
 * Runs the `tidemark` CLI (and `npm start`) as child processes for end-to-end tests: one-shot
 * commands with their output and exit code, and long-running ones started in their own process
 * group, so stopping them stops every child (npm → sh → node).
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The bin shim, as `npm i -g` or `npx tidemark` run it. */
export const TIDEMARK_BIN = fileURLToPath(new URL("../../cli/tidemark.js", import.meta.url));

/** This process's environment without any Tidemark, origin or npm setting: "no service variables". */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(TIDEMARK_|ENABLE_|EVENT_STORE_|PROCESSED_EVENT_|npm_|NODE_OPTIONS$|VITEST|NODE_ENV$)/.test(k)) continue;
    out[k] = v;
  }
  return { ...out, ...extra };
}

/**
 * `env` for a client command that must not load any client of the store's services (PostgreSQL,
 * PGlite, S3, Kafka): the process fails if it does (test/helpers/no-store-clients.mjs).
 */
export function withoutStoreClients(env: Record<string, string>): Record<string, string> {
  return { ...env, NODE_OPTIONS: `--import ${fileURLToPath(new URL("./no-store-clients.mjs", import.meta.url))}` };
}

/**
 * `env` for a command that must not load any client at all — the store's services or gRPC (help
 * and usage errors): test/helpers/no-clients.mjs.
 */
export function withoutClients(env: Record<string, string>): Record<string, string> {
  return { ...env, NODE_OPTIONS: `--import ${fileURLToPath(new URL("./no-clients.mjs", import.meta.url))}` };
}

/** The outcome of a finished command. */
export interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `tidemark ARGS` to the end (`bin`: another copy of the bin shim, default {@link TIDEMARK_BIN}). */
export function tidemark(args: readonly string[], env: Record<string, string>, options: { cwd?: string; timeoutMs?: number; bin?: string } = {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [options.bin ?? TIDEMARK_BIN, ...args], { cwd: options.cwd ?? ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`tidemark ${args.join(" ")} did not finish within ${options.timeoutMs ?? 60_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A long-running child in its own process group. */
export interface Background {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when stderr or stdout matches. */
  waitFor(pattern: RegExp, what: string, timeoutMs?: number): Promise<RegExpMatchArray>;
  /**
   * Sends `signal` to the whole group and waits for the exit; SIGKILL after `graceMs`. Resolves
   * with the exit code, or the signal's name when the leader died of a signal.
   */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | NodeJS.Signals | null>;
}

/** Starts `command args` detached (own process group) with piped output. */
export function background(command: string, args: readonly string[], env: Record<string, string>, cwd = ROOT): Background {
  const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let out = "";
  let err = "";
  const listeners = new Set<() => void>();
  const notify = () => listeners.forEach((l) => l());
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    notify();
  });
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
    notify();
  });
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal)));
  let exitCode: number | NodeJS.Signals | null | undefined;
  void exited.then((c) => {
    exitCode = c;
    notify();
  });
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {}
  };
  const groupAlive = () => {
    try {
      process.kill(-child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitFor(pattern, what, timeoutMs = 90_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(err) ?? pattern.exec(out);
          if (match !== null) return done(() => resolve(match));
          if (exitCode !== undefined) done(() => reject(new Error(`exited (${exitCode}) before ${what}\nstderr: ${err}\nstdout: ${out.slice(-3000)}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${what}\nstderr: ${err}\nstdout: ${out.slice(-3000)}`))), timeoutMs);
        const done = (f: () => void) => {
          clearTimeout(timer);
          listeners.delete(check);
          f();
        };
        listeners.add(check);
        check();
      });
    },
    async stop(signal = "SIGTERM", graceMs = 30_000) {
      if (exitCode !== undefined) return exitCode;
      killGroup(signal);
      const timer = setTimeout(() => killGroup("SIGKILL"), graceMs);
      const code = await exited;
      // npm (or sh) may exit before its child finished shutting down: wait for the whole group,
      // then make sure nothing of it survives.
      while (groupAlive()) await new Promise((r) => setTimeout(r, 50));
      clearTimeout(timer);
      killGroup("SIGKILL");
      return code;
    },
  };
}

/** A TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
