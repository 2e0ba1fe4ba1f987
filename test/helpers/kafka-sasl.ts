/**
 * A Kafka broker of its own with a SASL_SSL listener (SCRAM-SHA-256 over TLS), for the tests of
 * TIDEMARK_KAFKA_CA / TIDEMARK_KAFKA_SASL_* (docs/SECURITY.md). One KRaft node in combined mode from
 * the jars `npm run stack -- up` resolved (TIDEMARK_STACK_DIR/kafka/classpath.txt), in a fresh
 * directory, with certificates made by openssl and one SCRAM user created at format time. The
 * stack's own broker is not touched.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import os from "node:os";
import path from "node:path";
import { freePort } from "./cli-process.js";

/** A running SASL_SSL broker. */
export interface SaslKafka {
  /** `127.0.0.1:PORT` of the SASL_SSL listener. */
  readonly brokers: string;
  /** PEM of the CA that signed the broker's certificate. */
  readonly caFile: string;
  readonly username: string;
  readonly password: string;
  stop(): Promise<void>;
}

const portOpen = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => {
      socket.end();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });

/** Starts the broker and resolves once it accepts connections and logged its start. */
export async function startSaslKafka(): Promise<SaslKafka> {
  const stackDir = process.env["TIDEMARK_STACK_DIR"] ?? path.join(os.homedir(), ".cache", "tidemark-stack");
  const classpathFile = path.join(stackDir, "kafka", "classpath.txt");
  if (!existsSync(classpathFile)) throw new Error(`no Kafka jars at ${classpathFile}: run \`npm run stack -- up\``);
  const classpath = readFileSync(classpathFile, "utf8").trim();
  const dir = mkdtempSync(path.join(os.tmpdir(), "tidemark-kafka-sasl-"));
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kafka-test-ca", "-keyout", "ca.key", "-out", "ca.pem"]);
  run("openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "broker.key", "-out", "broker.csr"]);
  writeFileSync(path.join(dir, "broker.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  run("openssl", ["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "broker.ext", "-out", "broker.pem"]);
  run("openssl", ["pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem", "-name", "broker", "-passout", "pass:changeit", "-out", "broker.p12"]);
  const [internal, sasl, controller] = [await freePort(), await freePort(), await freePort()];
  const username = "tidemark";
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  writeFileSync(
    path.join(dir, "server.properties"),
    [
      "process.roles=broker,controller",
      "node.id=1",
      `controller.quorum.bootstrap.servers=127.0.0.1:${controller}`,
      `listeners=INTERNAL://127.0.0.1:${internal},SASL_SSL://127.0.0.1:${sasl},CONTROLLER://127.0.0.1:${controller}`,
      `advertised.listeners=INTERNAL://127.0.0.1:${internal},SASL_SSL://127.0.0.1:${sasl}`,
      "controller.listener.names=CONTROLLER",
      "inter.broker.listener.name=INTERNAL",
      "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
      "sasl.enabled.mechanisms=SCRAM-SHA-256",
      "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
      "ssl.keystore.type=PKCS12",
      `ssl.keystore.location=${path.join(dir, "broker.p12")}`,
      "ssl.keystore.password=changeit",
      "ssl.key.password=changeit",
      `log.dirs=${path.join(dir, "data")}`,
      "num.partitions=1",
      "default.replication.factor=1",
      "min.insync.replicas=1",
      "auto.create.topics.enable=false",
      "offsets.topic.replication.factor=1",
      "offsets.topic.num.partitions=3",
      "transaction.state.log.replication.factor=1",
      "transaction.state.log.min.isr=1",
      "transaction.state.log.num.partitions=3",
      "share.coordinator.state.topic.replication.factor=1",
      "share.coordinator.state.topic.min.isr=1",
      "group.initial.rebalance.delay.ms=0",
      "",
    ].join("\n"),
  );
  const log = path.join(dir, "kafka.log");
  writeFileSync(
    path.join(dir, "log4j2.xml"),
    `<?xml version="1.0" encoding="UTF-8"?><Configuration status="WARN"><Appenders><File name="f" fileName="${log}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File></Appenders><Loggers><Root level="INFO"><AppenderRef ref="f"/></Root></Loggers></Configuration>`,
  );
  const java = ["-cp", classpath, `-Dlog4j2.configurationFile=${path.join(dir, "log4j2.xml")}`];
  // A cluster id is 16 random bytes, base64url; one that starts with "-" reads as an option.
  const clusterId = `A${Buffer.from(Array.from({ length: 15 }, () => Math.floor(Math.random() * 256))).toString("base64url").slice(0, 21)}`;
  run("java", [...java, "kafka.tools.StorageTool", "format", "--standalone", "-t", clusterId, "-c", "server.properties", "--add-scram", `SCRAM-SHA-256=[name=${username},password=${password}]`]);
  const child: ChildProcess = spawn("java", ["-Xms128m", "-Xmx384m", "-XX:+UseG1GC", "-Djava.awt.headless=true", ...java, "kafka.Kafka", "server.properties"], { cwd: dir, stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the SASL_SSL broker exited during start (log: ${log})`);
    if ((await portOpen(sasl)) && existsSync(log) && readFileSync(log, "utf8").includes("Kafka Server started")) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the SASL_SSL broker did not start within 120 s (log: ${log})`);
    }
    // Polling a port and a log line: the broker offers no start notification.
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    brokers: `127.0.0.1:${sasl}`,
    caFile: path.join(dir, "ca.pem"),
    username,
    password,
    async stop() {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
