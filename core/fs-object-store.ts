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
import type { CreateOutcome, ObjectStore } from "./object-store.js";

/** Objects as files below `root`; keys map to relative paths. */
export class FsObjectStore implements ObjectStore {
  private readonly tmp: string;

  constructor(readonly root: string) {
    this.tmp = path.join(root, ".tmp");
  }

  async ensureReady(): Promise<void> {
    await fs.mkdir(this.tmp, { recursive: true });
    // Leftovers of a crash between write and link are garbage: the link never happened.
    for (const name of await fs.readdir(this.tmp)) await fs.rm(path.join(this.tmp, name), { force: true });
  }

  async createIfAbsent(key: string, body: string): Promise<CreateOutcome> {
    const target = this.pathOf(key);
    const tmp = path.join(this.tmp, `${randomBytes(12).toString("hex")}.part`);
    try {
      await fs.mkdir(path.dirname(target), { recursive: true });
      const handle = await fs.open(tmp, "wx");
      try {
        await handle.writeFile(body, "utf8");
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
    try {
      return await fs.readFile(this.pathOf(key), "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new UnavailableError(`object store: get ${key} failed`, { cause: e });
    }
  }

  async list(prefix: string): Promise<string[]> {
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
    return keys.sort();
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
