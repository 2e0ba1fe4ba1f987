/**
 * Tidemark processes as an operator runs them: the `tidemark` CLI (resolved at run time, since the
 * CLI's place in the repository moves), each under a supervisor that restarts it when it exits, as
 * an orchestrator would. The nemesis kills (SIGKILL) and freezes (SIGSTOP/SIGCONT) them through it.
 */
import fs from "node:fs";
import path from "node:path";
import { spawnChild, killChild, type Child } from "./child.js";

/** How to run the CLI: `node <bin shim>`, or `node --import tsx <main.ts>`. */
export function tidemarkCommand(root: string): readonly string[] {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { bin?: string | Record<string, string> };
  const bin = typeof pkg.bin === "string" ? pkg.bin : pkg.bin?.["tidemark"];
  if (bin !== undefined && fs.existsSync(path.join(root, bin))) return [path.join(root, bin)];
  for (const main of ["cli/main.ts", "server/cli/main.ts"]) {
    if (fs.existsSync(path.join(root, main))) return ["--import", "tsx", path.join(root, main)];
  }
  throw new Error(`cannot find the tidemark CLI under ${root} (package.json "bin".tidemark, cli/main.ts, server/cli/main.ts)`);
}

/** The environment of a Tidemark child: this one without Tidemark, npm or test settings, plus `extra`. */
export function childEnv(extra: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(TIDEMARK_|ENABLE_|EVENT_STORE_|PROCESSED_EVENT_|CHAOS_|npm_|NODE_OPTIONS$|VITEST|NODE_ENV$)/.test(k)) continue;
    out[k] = v;
  }
  return { ...out, NODE_ENV: "production", ...extra };
}

/** One supervised Tidemark process. */
export interface TidemarkProcess {
  readonly name: string;
  /** Starts, or after stop() restarts, the process. */
  start(): void;
  /** SIGKILL now; the supervisor starts it again after `downMs`. */
  kill(downMs: number): Promise<void>;
  /** SIGSTOP now, SIGCONT after `ms` (or at heal()). */
  pause(ms: number): Promise<void>;
  /** Ends a pause and a pending restart at once. */
  heal(): void;
  /** SIGKILL (when running) and start again at once: an operator's restart of a stuck process. */
  restart(): Promise<void>;
  /** True while a process runs and is not frozen. */
  readonly healthy: boolean;
  /** Exits the supervisor did not ask for (a process that gave up on a service), per name. */
  readonly unexpectedExits: number;
  /** Stops for good (SIGKILL: shutdown behaviour is not what a chaos run measures). */
  stop(): Promise<void>;
}

/** Supervises `tidemark ARGS` with `env`, output appended to `logFile`. */
export function superviseTidemark(name: string, root: string, args: readonly string[], env: Record<string, string>, logFile: string): TidemarkProcess {
  const command = tidemarkCommand(root);
  let child: Child | undefined;
  let wanted = false;
  let frozen = false;
  let restartTimer: NodeJS.Timeout | undefined;
  let unexpectedExits = 0;
  let expectExit = false;
  let resumeNow: (() => void) | undefined;

  const launch = () => {
    restartTimer = undefined;
    if (!wanted || (child !== undefined && child.running())) return;
    fs.appendFileSync(logFile, `\n=== chaos: start ${name} (${new Date().toISOString()}) ===\n`);
    const c = spawnChild(process.execPath, [...command, ...args], { env, logFile, cwd: root });
    child = c;
    frozen = false;
    void c.exited.then((code) => {
      fs.appendFileSync(logFile, `\n=== chaos: ${name} exited (${String(code)}) ===\n`);
      if (child !== c) return;
      if (!expectExit && wanted) unexpectedExits++;
      expectExit = false;
      // An orchestrator restarts a process that exited; one the nemesis killed waits its down time.
      if (wanted && restartTimer === undefined) restartTimer = setTimeout(launch, 1000);
    });
  };

  return {
    name,
    start() {
      wanted = true;
      launch();
    },
    async kill(downMs) {
      if (child === undefined || !child.running()) return;
      if (restartTimer !== undefined) clearTimeout(restartTimer);
      restartTimer = setTimeout(launch, downMs);
      expectExit = true;
      fs.appendFileSync(logFile, `\n=== chaos: SIGKILL ${name}, down ${downMs} ms ===\n`);
      await killChild(child);
      frozen = false;
    },
    async pause(ms) {
      if (child === undefined || !child.running() || frozen) return;
      fs.appendFileSync(logFile, `\n=== chaos: SIGSTOP ${name} for ${ms} ms ===\n`);
      child.signal("SIGSTOP");
      frozen = true;
      const c = child;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => resumeNow?.(), ms);
        resumeNow = () => {
          clearTimeout(timer);
          resumeNow = undefined;
          if (child === c && frozen) {
            c.signal("SIGCONT");
            frozen = false;
          }
          resolve();
        };
      });
    },
    heal() {
      resumeNow?.();
      if (frozen && child !== undefined) {
        child.signal("SIGCONT");
        frozen = false;
      }
      if (restartTimer !== undefined) {
        clearTimeout(restartTimer);
        launch();
      }
    },
    async restart() {
      if (child !== undefined && child.running()) {
        expectExit = true;
        fs.appendFileSync(logFile, `\n=== chaos: restart ${name} (the pipeline did not converge) ===\n`);
        await killChild(child);
      }
      if (restartTimer !== undefined) clearTimeout(restartTimer);
      frozen = false;
      launch();
    },
    get healthy() {
      return child !== undefined && child.running() && !frozen;
    },
    get unexpectedExits() {
      return unexpectedExits;
    },
    async stop() {
      wanted = false;
      if (restartTimer !== undefined) clearTimeout(restartTimer);
      resumeNow?.();
      if (child !== undefined) {
        expectExit = true;
        await killChild(child);
      }
    },
  };
}
