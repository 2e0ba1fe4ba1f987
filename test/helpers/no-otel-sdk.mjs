// `node --import ./test/helpers/no-otel-sdk.mjs …`: fails the process when anything loads the
// OpenTelemetry SDK or one of its instrumentations, so a test can show a process started without
// the `OTEL_*` variables loads none of it (docs/CONTRACT.md A4; only @opentelemetry/api is allowed).
import { register } from "node:module";
import { URL } from "node:url";

register(new URL("./no-otel-sdk-hooks.mjs", import.meta.url));
