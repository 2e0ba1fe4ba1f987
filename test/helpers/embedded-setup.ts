/**
 * The embedded project's global setup: one fresh PGlite cluster, made once per run, that each
 * contract test server's new data directory starts from (a copy), instead of every server running
 * PGlite's initdb (several seconds of WebAssembly each). The server still migrates its own schema in
 * it. The embedded process tests (test/embedded/) start from empty directories, as a user does.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    pgliteTemplate: string | undefined;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const root = await mkdtemp(path.join(os.tmpdir(), "tidemark-pglite-template-"));
  const template = path.join(root, "pg");
  const pglite = await PGlite.create(template);
  await pglite.close();
  project.provide("pgliteTemplate", template);
  return () => rm(root, { recursive: true, force: true });
}
