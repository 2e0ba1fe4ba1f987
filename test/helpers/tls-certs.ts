/**
 * Real X.509 material for TLS tests, made with the `openssl` command line: a server CA and a
 * server certificate for 127.0.0.1/localhost, a client CA with a client certificate (mTLS), and an
 * unrelated CA with its own client certificate (must be refused). Files live in a fresh directory.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/** Paths of the PEM files and a reader. */
export interface TestCerts {
  readonly dir: string;
  readonly serverCa: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCa: string;
  readonly clientCert: string;
  readonly clientKey: string;
  readonly strangerCert: string;
  readonly strangerKey: string;
  /** Issues another server certificate (new serial and subject) from the server CA into `cert`/`key`. */
  issueServer(name: string): { cert: string; key: string };
  read(file: string): Buffer;
  remove(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function ca(dir: string, name: string): void {
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.pem`], dir);
}

function leaf(dir: string, caName: string, name: string, ext: string): void {
  writeFileSync(path.join(dir, `${name}.ext`), ext);
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.csr`], dir);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", `${caName}.pem`, "-CAkey", `${caName}.key`, "-CAcreateserial", "-days", "2", "-extfile", `${name}.ext`, "-out", `${name}.pem`], dir);
}

const SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
const CLIENT_EXT = "extendedKeyUsage=clientAuth\n";

/** Generates the whole set (about 100 ms of openssl). */
export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tidemark-tls-"));
  ca(dir, "server-ca");
  leaf(dir, "server-ca", "server", SERVER_EXT);
  ca(dir, "client-ca");
  leaf(dir, "client-ca", "client", CLIENT_EXT);
  ca(dir, "stranger-ca");
  leaf(dir, "stranger-ca", "stranger", CLIENT_EXT);
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    serverCa: p("server-ca.pem"),
    serverCert: p("server.pem"),
    serverKey: p("server.key"),
    clientCa: p("client-ca.pem"),
    clientCert: p("client.pem"),
    clientKey: p("client.key"),
    strangerCert: p("stranger.pem"),
    strangerKey: p("stranger.key"),
    issueServer(name) {
      leaf(dir, "server-ca", name, SERVER_EXT);
      return { cert: p(`${name}.pem`), key: p(`${name}.key`) };
    },
    read: (file) => readFileSync(file),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
