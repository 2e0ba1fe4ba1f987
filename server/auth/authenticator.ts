/**
 * Bearer-token authentication of gRPC calls (docs/SECURITY.md): `authorization: Bearer <token>`
 * checked against `api_tokens` on every call, so a revocation applies to the next call on every
 * server. Failures are counted in `tidemark_auth_failures_total` and logged with the token's public
 * id at most, never the token.
 */
import type { Kysely } from "kysely";
import { type AuthTables, Counter, type Logger, parseToken, type Principal, type Registry, UnauthenticatedError, verifyToken } from "../../core/index.js";

/** Counts refused calls: UNAUTHENTICATED and PERMISSION_DENIED, by method and reason. */
export interface AuthFailures {
  count(method: string, code: "UNAUTHENTICATED" | "PERMISSION_DENIED", reason: string): void;
}

/** Registers `tidemark_auth_failures_total` in `registry`. */
export function authFailureCounter(registry: Registry, log: Logger): AuthFailures {
  const counter = new Counter({
    name: "tidemark_auth_failures_total",
    help: "Calls refused by authentication (UNAUTHENTICATED) or authorization (PERMISSION_DENIED), by method and reason",
    labelNames: ["method", "code", "reason"],
    registers: [registry],
  });
  return {
    count(method, code, reason) {
      counter.inc({ method, code, reason });
      log.warn({ method, code, reason }, "call refused");
    },
  };
}

const BEARER = /^Bearer[ ]+(\S+)$/i;

/** Authenticates calls against the token table. */
export class TokenAuthenticator {
  constructor(
    private readonly db: Kysely<AuthTables>,
    private readonly failures: AuthFailures,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** The principal of a call's metadata; throws UnauthenticatedError (counted and logged) otherwise. */
  readonly authenticate = async (metadata: Readonly<Record<string, string>>, path: string): Promise<Principal> => {
    const header = metadata["authorization"];
    if (header === undefined || header === "") throw this.refuse(path, "missing", "no token: send `authorization: Bearer <token>`");
    const match = BEARER.exec(header.trim());
    if (match === null) throw this.refuse(path, "malformed", "the authorization header is not `Bearer <token>`");
    return this.verify(match[1]!, path);
  };

  /** Verifies a token again (open Subscribe streams): the principal, or UnauthenticatedError. */
  async verify(token: string, path: string): Promise<Principal> {
    const result = await verifyToken(this.db, token, this.now());
    if (typeof result !== "string") return result;
    const id = parseToken(token)?.id;
    const messages = {
      malformed: "the token is malformed",
      unknown: "the token is not valid",
      expired: "the token has expired",
      revoked: "the token was revoked",
    } as const;
    throw this.refuse(path, result, messages[result], id);
  }

  private refuse(path: string, reason: UnauthenticatedError["reason"], message: string, tokenId?: string): UnauthenticatedError {
    this.failures.count(path, "UNAUTHENTICATED", reason);
    // The public id only when the token was well formed and known to be ours; never the secret.
    if (tokenId !== undefined && reason !== "unknown") this.log.info({ tokenId, reason, path }, "token refused");
    return new UnauthenticatedError(message, reason);
  }
}
