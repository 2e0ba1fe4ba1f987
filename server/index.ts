/**
 * The public face of server/: start the gRPC server, its configuration and limits, and the typed
 * gRPC client (for the CLI's client commands, tests and benchmarks). Other folders import server/
 * only through this file; server/ itself imports only core/ (a lint rule holds both).
 */
export { startServer, type ServerHandle, type ServerOverrides } from "./app.js";
export { buildConsole, CONSOLE_DIR, ensureConsoleBundle } from "./console/console-assets.js";
export { authMode, consoleAddress, DEFAULT_CONSOLE_ADDR, loadServerConfig, SERVER_OWN_SETTINGS, SERVER_SETTINGS, type ServerConfig } from "./config.js";
export { type CallOptions, type Client, type ClientOf, type ClientOptions, createClient, findDetail, grpc, statusDetails } from "./client.js";
export { HealthState, ServingStatus } from "./grpc/health.js";
export { DEFAULT_LIMITS, type Limits } from "./limits.js";
export { loadMasterKeyring, MASTER_KEY_SETTING, SubjectKeys, subjectKeyClient } from "./privacy.js";
export type { InstanceReadModel } from "./services/instance-service.js";
export { rebuildSnapshots, type SnapshotRebuildOptions, type SnapshotRebuildResult } from "./instances/snapshot-rebuild.js";
export { recoverFromObjectStore, type RecoverOptions, type RecoverProgress, type RecoverResult } from "./recover.js";
export { type Anomaly, type AnomalyKind, verifyStore, type VerifyProgress, type VerifyReport } from "./verify.js";
