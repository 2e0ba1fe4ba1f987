/**
 * `npm run build:console`: bundles the web console (console/src → console/dist/console.js) with
 * esbuild, offline. A server with the console on does the same at start when the bundle is missing
 * or older than its sources; the browser tests' global setup runs it too.
 */
import { buildConsole } from "../server/index.js";

const started = performance.now();
const { bundle, bytes } = await buildConsole();
process.stderr.write(`console bundle: ${bundle} (${Math.round(bytes / 1024)} KiB) in ${Math.round(performance.now() - started)} ms\n`);
