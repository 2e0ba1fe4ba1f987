/**
 * The transaction a handler writes through, fenced by its lease (docs/CONTRACT.md C1): once the
 * lease is lost the runtime stops waiting for the handler and rolls the transaction back, but the
 * handler may still be running. Its later statements must not reach the database: after the
 * rollback the connection is back in the pool, where a statement would run on its own and commit
 * — an effect with no "done" in the registry, applied again by the next holder. So every
 * statement built through the fenced transaction checks the lease first and fails once it is lost.
 * A statement already sent is ahead of the rollback on the same connection, and is undone with it.
 */
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, Transaction, UnknownRow } from "kysely";
import { LeaseLostError } from "./failures.js";

class LeaseFence implements KyselyPlugin {
  constructor(private readonly signal: AbortSignal) {}

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    // Thrown to the handler: the same error (and failure class) as the runtime's own lease loss.
    if (this.signal.aborted) throw new LeaseLostError("the lease on this event was lost: the transaction was rolled back and takes no more statements");
    return args.node;
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result;
  }
}

/** `tx` as a handler gets it: every statement fails once `lease` is aborted. */
export function fencedTransaction<DB>(tx: Transaction<DB>, lease: AbortSignal): Transaction<DB> {
  return tx.withPlugin(new LeaseFence(lease));
}
