import { pino, type Logger } from "pino";

export type { Logger };

/** Structured JSON logs on stdout; `level` is one of pino's (trace … fatal, or silent). */
export function createLogger(name: string, level: string): Logger {
  return pino({ name, level, base: { process: name }, timestamp: pino.stdTimeFunctions.isoTime });
}
