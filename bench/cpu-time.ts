/**
 * CPU time of a process from /proc/PID/stat (user + system), in milliseconds. CPU per event is far
 * steadier than wall-clock rates on a shared machine, so the bench reports it beside each P1 row.
 */
import { readdirSync, readFileSync } from "node:fs";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/**
 * User + system CPU time of `pid` so far, in ms, with that of its children it has waited for
 * (cutime, cstime); undefined when it cannot be read. Counting the reaped children keeps a
 * service's total steady when its processes exit: a PostgreSQL backend that ends between two
 * snapshots moves its time into the postmaster's cutime instead of taking it out of the sum.
 */
export function readCpuMs(pid: number): number | undefined {
  try {
    return cpuMsOfStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/** The CPU time (ms) a /proc/PID/stat line gives: utime + stime + cutime + cstime. */
export function cpuMsOfStat(stat: string): number {
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  return (ticks * 1000) / TICKS_PER_SECOND;
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
