/** Where the CLI writes: stdout for results, stderr for banners, progress and errors. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** True when stderr is a terminal (progress bars instead of lines). */
  readonly errIsTTY: boolean;
}

/** The process's own streams. */
export const processIo: Io = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  errIsTTY: process.stderr.isTTY === true,
};
