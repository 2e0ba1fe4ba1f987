/**
 * The chaos run's own services, so restarting them disturbs nobody: a PostgreSQL 15 cluster made
 * with `initdb` in the run directory, a one-node KRaft Kafka broker and an S3Proxy, each on ports
 * chosen free at run time. The jars are the ones `scripts/stack.sh up` cached; the shared services
 * on the default ports are never touched.
 *
 * The broker has one listener per client process, each advertised at that process's fault proxy,
 * so a partition between one process and Kafka holds for the metadata-directed connections too.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { delay, freePort, killChild, spawnChild, until, type Child } from "./child.js";

const run = promisify(execFile);

/** A Kafka listener for one client process: the broker binds `port` and advertises `advertisedPort`. */
export interface KafkaListener {
  readonly name: string;
  readonly port: number;
  readonly advertisedPort: number;
}

/** The private services of a run. */
export interface PrivateStack {
  readonly pgPort: number;
  readonly s3Port: number;
  /** The broker's own listener (advertised as itself): for the harness and the checker. */
  readonly kafkaPort: number;
  readonly pgUser: string;
  readonly pgDatabase: string;
  readonly s3: { readonly accessKey: string; readonly secretKey: string; readonly region: string; readonly bucket: string };
  /** A connection URL to the cluster through `port` (its own port by default). */
  pgUrl(port?: number): string;
  /** Immediate shutdown (a crash: no checkpoint, clients cut), then start again after `downMs`. */
  restartPostgres(downMs: number): Promise<void>;
  /** SIGKILL of the broker, then start again after `downMs`. */
  restartKafka(downMs: number): Promise<void>;
  close(): Promise<void>;
}

/** Where `scripts/stack.sh` keeps the resolved jars. */
export function stackCacheDir(): string {
  return process.env["TIDEMARK_STACK_DIR"] ?? path.join(os.homedir(), ".cache", "tidemark-stack");
}

function classpath(service: "kafka" | "s3proxy"): string {
  const file = path.join(stackCacheDir(), service, "classpath.txt");
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run \`npm run stack -- up\` once, which resolves the Kafka and S3Proxy jars`);
  return fs.readFileSync(file, "utf8").trim();
}

const PG_BIN = "/usr/lib/postgresql/15/bin";
// initdb and pg_ctl refuse to run as root: run them as the postgres user then.
const asPostgres = process.getuid?.() === 0;

async function pgTool(tool: string, args: readonly string[]): Promise<void> {
  const bin = path.join(PG_BIN, tool);
  if (asPostgres) await run("runuser", ["-u", "postgres", "--", bin, ...args], { timeout: 120_000 });
  else await run(bin, args, { timeout: 120_000 });
}

async function chownToPostgres(dir: string): Promise<void> {
  if (!asPostgres) return;
  await run("chown", ["-R", "postgres:postgres", dir]);
}

const JVM = ["-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"];

/** Starts the three services under `dir` (created if missing); `listeners` are Kafka's per-process ones. */
export async function startPrivateStack(dir: string, listeners: readonly KafkaListener[]): Promise<PrivateStack> {
  fs.mkdirSync(path.join(dir, "logs"), { recursive: true });
  fs.chmodSync(dir, 0o755);
  const [pgPort, s3Port, kafkaPort, controllerPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const pgUser = "tidemark";
  const pgDatabase = "tidemark";
  const s3 = { accessKey: "chaos", secretKey: "chaos-secret", region: "us-east-1", bucket: "tidemark-events" };
  const children: { kafka?: Child; s3proxy?: Child } = {};
  let closed = false;

  // ---- PostgreSQL
  const pgData = path.join(dir, "pg");
  const pgSocket = path.join(dir, "pg-socket");
  const pgLog = path.join(dir, "logs", "postgres.log");
  const pgOptions = [
    `-p ${pgPort}`,
    `-k ${pgSocket}`,
    "-c listen_addresses=127.0.0.1",
    "-c max_connections=300",
    // The nemesis crashes the server process, never the host: the page cache survives, so fsync
    // buys nothing here but CPU on a shared machine.
    "-c fsync=off",
    "-c full_page_writes=off",
  ].join(" ");
  const pgStart = () => pgTool("pg_ctl", ["-D", pgData, "-l", pgLog, "-o", pgOptions, "-w", "-t", "60", "start"]);
  const pgStop = () => pgTool("pg_ctl", ["-D", pgData, "-m", "immediate", "-w", "-t", "60", "stop"]);
  const startPostgres = async () => {
    fs.mkdirSync(pgData, { recursive: true });
    fs.mkdirSync(pgSocket, { recursive: true });
    fs.writeFileSync(pgLog, "");
    await chownToPostgres(pgData);
    await chownToPostgres(pgSocket);
    await chownToPostgres(pgLog);
    await pgTool("initdb", ["-D", pgData, "-U", pgUser, "--auth=trust", "-E", "UTF8", "--no-sync"]);
    await pgStart();
    const client = new pg.Client({ host: "127.0.0.1", port: pgPort, user: pgUser, database: "postgres" });
    await client.connect();
    await client.query(`create database ${pgDatabase}`);
    await client.end();
  };

  // ---- S3Proxy
  const s3Data = path.join(dir, "s3");
  const startS3 = async () => {
    fs.mkdirSync(s3Data, { recursive: true });
    const props = path.join(dir, "s3proxy.properties");
    fs.writeFileSync(
      props,
      [
        `s3proxy.endpoint=http://127.0.0.1:${s3Port}`,
        "s3proxy.authorization=aws-v2-or-v4",
        `s3proxy.identity=${s3.accessKey}`,
        `s3proxy.credential=${s3.secretKey}`,
        "jclouds.provider=filesystem",
        `jclouds.identity=${s3.accessKey}`,
        `jclouds.credential=${s3.secretKey}`,
        `jclouds.filesystem.basedir=${s3Data}`,
        "",
      ].join("\n"),
    );
    children.s3proxy = spawnChild("java", [...JVM, "-Xmx384m", "-cp", classpath("s3proxy"), "org.gaul.s3proxy.Main", "--properties", props], {
      env: { ...process.env, LOG_LEVEL: "warn", JETTY_LOG_LEVEL: "warn" },
      logFile: path.join(dir, "logs", "s3proxy.log"),
    });
    const up = await until(() => httpAnswers(s3Port), 120_000, 200);
    if (!up) throw new Error(`S3Proxy did not start on ${s3Port} (log: ${dir}/logs/s3proxy.log)`);
  };

  // ---- Kafka
  const kafkaDir = path.join(dir, "kafka");
  const kafkaLog = path.join(dir, "logs", "kafka.log");
  const kafkaProps = path.join(kafkaDir, "server.properties");
  const log4j = path.join(kafkaDir, "log4j2.xml");
  const prepareKafka = async () => {
    fs.mkdirSync(path.join(kafkaDir, "data"), { recursive: true });
    const names = listeners.map((l) => l.name);
    fs.writeFileSync(
      kafkaProps,
      [
        "process.roles=broker,controller",
        "node.id=1",
        `controller.quorum.bootstrap.servers=127.0.0.1:${controllerPort}`,
        `listeners=PLAINTEXT://127.0.0.1:${kafkaPort},CONTROLLER://127.0.0.1:${controllerPort}${listeners.map((l) => `,${l.name}://127.0.0.1:${l.port}`).join("")}`,
        `advertised.listeners=PLAINTEXT://127.0.0.1:${kafkaPort}${listeners.map((l) => `,${l.name}://127.0.0.1:${l.advertisedPort}`).join("")}`,
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        `listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${names.map((n) => `,${n}:PLAINTEXT`).join("")}`,
        `log.dirs=${path.join(kafkaDir, "data")}`,
        "num.partitions=1",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        // After a SIGKILL the restarted broker waits for its old incarnation's session to expire
        // (9 s by default) before it serves: keep that short, outages are the nemesis's to decide.
        "broker.heartbeat.interval.ms=500",
        "broker.session.timeout.ms=2500",
        "",
      ].join("\n"),
    );
    fs.writeFileSync(
      log4j,
      `<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="out"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.storage" level="WARN"/>
    <Logger name="kafka.server.KafkaConfig" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
  </Loggers>
</Configuration>
`,
    );
    // A cluster id is 16 random bytes in URL-safe base64; Kafka refuses one that starts with '-'.
    let id = "-";
    while (id.startsWith("-")) id = randomBytes(16).toString("base64url");
    await run("java", [...JVM, "-Xmx256m", "-cp", classpath("kafka"), `-Dlog4j2.configurationFile=${log4j}`, "kafka.tools.StorageTool", "format", "--standalone", "-t", id, "-c", kafkaProps], {
      timeout: 120_000,
    });
  };
  const startKafka = async () => {
    const from = fs.existsSync(kafkaLog) ? fs.statSync(kafkaLog).size : 0;
    children.kafka = spawnChild("java", [...JVM, "-Xmx512m", `-Dlog4j2.configurationFile=${log4j}`, "-cp", classpath("kafka"), "kafka.Kafka", kafkaProps], {
      env: process.env,
      logFile: kafkaLog,
    });
    const started = await until(() => !closed && logSince(kafkaLog, from).includes("Kafka Server started"), 120_000, 200);
    if (!started && !closed) throw new Error(`Kafka did not start (log: ${kafkaLog})`);
  };

  const stack: PrivateStack = {
    pgPort,
    s3Port,
    kafkaPort,
    pgUser,
    pgDatabase,
    s3,
    pgUrl: (port = pgPort) => `postgres://${pgUser}@127.0.0.1:${port}/${pgDatabase}`,
    async restartPostgres(downMs) {
      await pgStop();
      await delay(downMs);
      if (!closed) await pgStart();
    },
    async restartKafka(downMs) {
      if (children.kafka !== undefined) await killChild(children.kafka);
      await delay(downMs);
      if (!closed) await startKafka();
    },
    async close() {
      closed = true;
      await Promise.all([children.kafka, children.s3proxy].map((c) => (c === undefined ? undefined : killChild(c))));
      await pgStop().catch(() => {});
    },
  };
  // Stopped on any exit, even one that skips close() (an uncaught error).
  process.once("exit", () => {
    try {
      const bin = path.join(PG_BIN, "pg_ctl");
      const args = ["-D", pgData, "-m", "immediate", "stop"];
      // Synchronous: an exit handler cannot wait for a promise.
      execFileSync(asPostgres ? "runuser" : bin, asPostgres ? ["-u", "postgres", "--", bin, ...args] : args, { stdio: "ignore" });
    } catch {}
  });
  try {
    await Promise.all([startPostgres(), startS3(), prepareKafka().then(startKafka)]);
  } catch (e) {
    await stack.close();
    throw e;
  }
  return stack;
}

function logSince(file: string, from: number): string {
  try {
    const fd = fs.openSync(file, "r");
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.max(0, size - from));
    fs.readSync(fd, buf, 0, buf.length, from);
    fs.closeSync(fd);
    return buf.toString("utf8");
  } catch {
    return "";
  }
}

function httpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/", timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
  });
}
