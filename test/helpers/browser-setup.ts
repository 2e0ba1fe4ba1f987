/**
 * Global setup of the browser tests: installs Debian's chromium when it is missing
 * (scripts/chromium.sh, idempotent) and bundles the web console (npm run build:console), then hands
 * the browser's path to the tests.
 */
import { execFileSync } from "node:child_process";
import type { TestProject } from "vitest/node";
import { buildConsole } from "../../server/console/console-assets.js";

declare module "vitest" {
  export interface ProvidedContext {
    chromium: string;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const script = new URL("../../scripts/chromium.sh", import.meta.url).pathname;
  const chromium = execFileSync("bash", [script], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  await buildConsole();
  project.provide("chromium", chromium);
}
