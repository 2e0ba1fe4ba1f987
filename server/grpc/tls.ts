/**
 * TLS of the gRPC port (docs/SECURITY.md): server credentials whose certificate, key and client CA
 * are read from PEM files and can be re-read later (SIGHUP) without closing the port. grpc-js swaps
 * the secure context of the listening server (`setSecureContext`) when a certificate provider
 * announces new material, so new handshakes use the new certificate and open connections keep theirs.
 */
import { readFile } from "node:fs/promises";
import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";

/** Where the PEM files are. */
export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  /** "" = no client certificates; otherwise every client needs one signed by this CA (mTLS). */
  readonly clientCa: string;
}

type Listener<T> = (update: T | null) => void;

/** A grpc-js certificate provider fed by {@link TlsCredentials.reload}. */
class ReloadableProvider<T> {
  private latest: T | null = null;
  private readonly listeners = new Set<Listener<T>>();

  set(update: T): void {
    this.latest = update;
    for (const listener of this.listeners) listener(update);
  }

  add(listener: Listener<T>): void {
    this.listeners.add(listener);
    // After the current call: grpc-js registers its own watcher only once this returns.
    const latest = this.latest;
    if (latest !== null) queueMicrotask(() => this.listeners.has(listener) && listener(latest));
  }

  remove(listener: Listener<T>): void {
    this.listeners.delete(listener);
  }
}

/** Reloadable TLS server credentials for grpc-js. */
export class TlsCredentials {
  private readonly identity = new ReloadableProvider<grpc.experimental.IdentityCertificateUpdate>();
  private readonly ca = new ReloadableProvider<grpc.experimental.CaCertificateUpdate>();
  readonly credentials: grpc.ServerCredentials;

  private constructor(readonly files: TlsFiles) {
    const identity: grpc.experimental.CertificateProvider = {
      addIdentityCertificateListener: (l) => this.identity.add(l),
      removeIdentityCertificateListener: (l) => this.identity.remove(l),
      addCaCertificateListener: () => {},
      removeCaCertificateListener: () => {},
    };
    const ca: grpc.experimental.CertificateProvider = {
      addCaCertificateListener: (l) => this.ca.add(l),
      removeCaCertificateListener: (l) => this.ca.remove(l),
      addIdentityCertificateListener: () => {},
      removeIdentityCertificateListener: () => {},
    };
    // grpc-js 1.14 declares the parameters as (ca, identity, …) but passes them to the constructor
    // as (identity, ca, …): the identity provider goes first.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(identity, files.clientCa === "" ? null : ca, files.clientCa !== "");
  }

  /** Reads the files; fails (naming the file) when they are unreadable or do not form a valid context. */
  static async load(files: TlsFiles): Promise<TlsCredentials> {
    const tls = new TlsCredentials(files);
    await tls.reload();
    return tls;
  }

  /**
   * Re-reads the files and hands the new certificate to the listening server. When they do not form
   * a valid context (a half-written file), it throws and the server keeps the previous certificate.
   */
  async reload(): Promise<void> {
    const read = async (path: string, what: string) => {
      try {
        return await readFile(path);
      } catch (e) {
        throw new Error(`cannot read the TLS ${what} ${path}: ${(e as Error).message}`);
      }
    };
    const cert = await read(this.files.cert, "certificate (TIDEMARK_TLS_CERT)");
    const key = await read(this.files.key, "key (TIDEMARK_TLS_KEY)");
    const ca = this.files.clientCa === "" ? undefined : await read(this.files.clientCa, "client CA (TIDEMARK_TLS_CLIENT_CA)");
    try {
      createSecureContext({ cert, key, ...(ca === undefined ? {} : { ca }) });
    } catch (e) {
      throw new Error(`the TLS files do not form a valid certificate and key: ${(e as Error).message}`);
    }
    if (ca !== undefined) this.ca.set({ caCertificate: ca });
    this.identity.set({ certificate: cert, privateKey: key });
  }
}
