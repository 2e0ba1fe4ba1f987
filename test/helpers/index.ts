/**
 * What bench/ borrows from the test helpers (both drive child processes): reading a child's JSON
 * log lines, picking a free port, and test certificates made with openssl. Other folders import
 * test/helpers only through this file.
 */
export { freePort } from "./cli-process.js";
export { collectLines, type LogLine } from "./json-lines.js";
export { makeTestCerts, type TestCerts } from "./tls-certs.js";
