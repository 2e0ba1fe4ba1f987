/**
 * The public face of cli/: the `tidemark` command line and the process it assembles. cli/ is the
 * only folder that puts the parts (server, relay, consumers) together into processes.
 */
export { COMMANDS } from "./commands.js";
export { main, packageVersion, runCli } from "./main.js";
export { banner, startProcess, type ProcessParts, type TidemarkProcess } from "./process.js";
