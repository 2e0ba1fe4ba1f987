/**
 * What bench/ borrows from the test helpers (both drive child processes): reading a child's JSON
 * log lines and picking a free port. Other folders import test/helpers only through this file.
 */
export { freePort } from "./cli-process.js";
export { collectLines, type LogLine } from "./json-lines.js";
