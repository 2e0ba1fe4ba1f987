/**
 * `tidemark keys rotate` (docs/OPERATIONS.md "Rotating the master key"): rewraps every live data
 * subject's key under the current (first) key of TIDEMARK_MASTER_KEY_FILE; events are not touched.
 */
import type { Kysely } from "kysely";
import { migrateToLatest, openBackends, type PrivacyTables, rewrapSubjectKeys } from "../core/index.js";
import { loadMasterKeyring, loadServerConfig, MASTER_KEY_SETTING } from "../server/index.js";
import { UsageError, type ParsedCommand } from "./args.js";
import type { Io } from "./io.js";

/** `tidemark keys …`. */
export async function runKeys(cmd: ParsedCommand, io: Io): Promise<number> {
  const [action] = cmd.positionals as [string];
  if (action !== "rotate") throw new UsageError(`unknown action ${JSON.stringify(action)}: rotate`);
  const config = loadServerConfig(cmd.env);
  const keyring = loadMasterKeyring(config.masterKeyFile);
  if (keyring === undefined) throw new UsageError(`${MASTER_KEY_SETTING} is required: the file of master keys, the new one first`);
  const backends = await openBackends(config);
  try {
    await migrateToLatest(backends.database.db, backends.database.schema);
    const count = await rewrapSubjectKeys(backends.database.db as unknown as Kysely<PrivacyTables>, keyring);
    io.out(`rewrapped ${count} subject key${count === 1 ? "" : "s"} under master key ${keyring.currentId}\n`);
    return 0;
  } finally {
    await backends.close();
  }
}
