/**
 * CPU time of a process from /proc/PID/stat (user + system), in milliseconds. CPU per event is far
 * steadier than wall-clock rates on a shared machine, so the bench reports it beside each P1 row.
 */
import { readdirSync, readFileSync } from "node:fs";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** User + system CPU time of `pid` so far, in ms; undefined when it cannot be read. */
export function readCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return ((utime + stime) * 1000) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** Which service a process of the stack is, by its command line (undefined: not one of them). */
function serviceOf(cmdline: string): "postgres" | "s3proxy" | "kafka" | undefined {
  if (cmdline.startsWith("postgres") || cmdline.includes("/postgres")) return "postgres";
  if (cmdline.includes("s3proxy")) return "s3proxy";
  if (cmdline.includes("kafka.Kafka")) return "kafka";
  return undefined;
}

/** CPU time so far (ms) of this process, of `pids` by name, and of each local stack service (all its processes). */
export function cpuSnapshot(pids: Readonly<Record<string, number | undefined>> = {}): Record<string, number> {
  const own = process.cpuUsage();
  const out: Record<string, number> = { bench: (own.user + own.system) / 1000 };
  for (const [name, pid] of Object.entries(pids)) {
    const ms = pid === undefined ? undefined : readCpuMs(pid);
    if (ms !== undefined) out[name] = ms;
  }
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\u0000", " ");
    } catch {
      continue; // exited meanwhile
    }
    const service = serviceOf(cmdline);
    const ms = service === undefined ? undefined : readCpuMs(Number(entry));
    if (service !== undefined && ms !== undefined) out[service] = (out[service] ?? 0) + ms;
  }
  return out;
}

/** CPU time (ms) each process used since `before` (a {@link cpuSnapshot} of the same `pids`). */
export function cpuUsedSince(before: Readonly<Record<string, number>>, pids: Readonly<Record<string, number | undefined>> = {}): Record<string, number> {
  const after = cpuSnapshot(pids);
  return Object.fromEntries(Object.entries(after).map(([name, ms]) => [name, ms - (before[name] ?? 0)]));
}

/** CPU per unit (ms) by process; processes that used none are left out. */
export function cpuPerUnit(used: Readonly<Record<string, number>>, units: number): Record<string, number> {
  const out: Record<string, number> = {};
  if (units <= 0) return out;
  for (const [name, ms] of Object.entries(used)) if (ms > 0) out[name] = ms / units;
  return out;
}
