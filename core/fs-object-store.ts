/**
 * An {@link ObjectStore} on the local file system for the embedded mode, with the same
 * conditional-create semantics as S3: the object is written to a temporary file, flushed, and
 * hard-linked into place — `link` fails when the name exists, atomically, so of two concurrent
 * creates exactly one wins and nothing is ever overwritten.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { UnavailableError } from "./errors.js";
import { newRequestCounts, type CreateOutcome, type ObjectStore } from "./object-store.js";

/** Objects as files below `root`; keys map to relative paths. */
export class FsObjectStore implements ObjectStore {
  private readonly tmp: string;
  readonly requests = newRequestCounts();

  constructor(readonly root: string) {
    this.tmp = path.join(root, ".tmp");
  }

  async ensureReady(): Promise<void> {
    await fs.mkdir(this.tmp, { recursive: true });
    // Leftovers of a crash between write and link are garbage: the link never happened.
    for (const name of await fs.readdir(this.tmp)) await fs.rm(path.join(this.tmp, name), { force: true });
  }

  async createIfAbsent(key: string, body: string | Uint8Array): Promise<CreateOutcome> {
    this.requests.put += 1;
    const target = this.pathOf(key);
    const tmp = path.join(this.tmp, `${randomBytes(12).toString("hex")}.part`);
    try {
      await fs.mkdir(path.dirname(target), { recursive: true });
      const handle = await fs.open(tmp, "wx");
      try {
        await handle.writeFile(body);
        await handle.sync();
      } finally {
        await handle.close();
      }
      try {
        await fs.link(tmp, target);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") return "exists";
        throw e;
      }
      await syncDir(path.dirname(target));
      return "created";
    } catch (e) {
      throw new UnavailableError(`object store: put ${key} failed`, { cause: e });
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.read(key))?.toString("utf8");
  }

  async read(key: string, range?: { readonly start: number; readonly length: number }): Promise<Buffer | undefined> {
    if (range === undefined) this.requests.get += 1;
    else this.requests.getRange += 1;
    try {
      if (range === undefined) return await fs.readFile(this.pathOf(key));
      const handle = await fs.open(this.pathOf(key), "r");
      try {
        const out = Buffer.alloc(range.length);
        const { bytesRead } = await handle.read(out, 0, range.length, range.start);
        return out.subarray(0, bytesRead);
      } finally {
        await handle.close();
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new UnavailableError(`object store: get ${key} failed`, { cause: e });
    }
  }

  async list(prefix: string, startAfter?: string): Promise<string[]> {
    this.requests.list += 1;
    // Walk only the directory that holds the prefix, never the whole store.
    const slash = prefix.lastIndexOf("/");
    const dirKey = slash < 0 ? "" : prefix.slice(0, slash);
    const keys: string[] = [];
    const walk = async (dir: string, keyPrefix: string): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
        throw new UnavailableError(`object store: list ${prefix} failed`, { cause: e });
      }
      for (const entry of entries) {
        const key = keyPrefix === "" ? entry.name : `${keyPrefix}/${entry.name}`;
        if (entry.isDirectory()) {
          if (key === ".tmp") continue;
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(path.join(dir, entry.name), key);
        } else if (key.startsWith(prefix)) {
          keys.push(key);
        }
      }
    };
    await walk(dirKey === "" ? this.root : this.pathOf(dirKey), dirKey);
    keys.sort();
    return startAfter === undefined ? keys : keys.filter((k) => k > startAfter);
  }

  close(): void {}

  private pathOf(key: string): string {
    const parts = key.split("/");
    if (key.length === 0 || parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\\") || p.includes("\0"))) {
      throw new UnavailableError(`object store: key ${JSON.stringify(key)} is not a safe path`);
    }
    return path.join(this.root, ...parts);
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
