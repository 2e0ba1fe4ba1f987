#!/usr/bin/env bash
# Tidemark local stack without Docker: PostgreSQL 15 (Debian), Apache Kafka (one KRaft node),
# S3Proxy (filesystem backend), grpcurl and Jaeger (the traces test's OTLP receiver).  See docs/STACK.md.
# Kafka and S3Proxy always have a secure face beside the plain one (SASL_SSL with SCRAM-SHA-256,
# HTTPS), with certificates of a stack CA; PostgreSQL serves TLS with Debian's snakeoil certificate.
#
#   bash scripts/stack.sh up|down|status|env [--secure]|check-s3
#   bash scripts/stack.sh kafka-stop|kafka-start|kafka-kill|s3-stop|s3-start|s3-kill
#   bash scripts/stack.sh kafka-topics ARGS...   (org.apache.kafka.tools.TopicCommand)
#   bash scripts/stack.sh logs
#   bash scripts/stack.sh jaeger          (builds Jaeger when missing; prints its path)
#
# Progress and diagnostics go to stderr; `env` prints only `export` lines on stdout.
set -Eeuo pipefail
trap 'echo "stack: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# ---------------------------------------------------------------- pinned versions
KAFKA_VERSION=4.1.1              # org.apache.kafka:kafka_2.13
LOG4J_VERSION=2.24.3             # log4j2 binding for Kafka (same as Kafka 4.1 ships)
SLF4J_VERSION=2.0.17             # slf4j-api 2.x (the kafka pom says 1.7.36; the binding needs 2.x)
S3PROXY_VERSION=4.1.1            # org.gaul:s3proxy (latest 4.x on Maven Central when pinned)
GRPCURL_VERSION=v1.9.3           # github.com/fullstorydev/grpcurl
JAEGER_VERSION=v1.76.0           # github.com/jaegertracing/jaeger (Jaeger v2: OTLP in, query API out)
PG_MAJOR=15                      # Debian 12 package postgresql-15
MVN_DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

# ---------------------------------------------------------------- settings
STACK_DIR=${TIDEMARK_STACK_DIR:-$HOME/.cache/tidemark-stack}
PG_PORT=${TIDEMARK_STACK_PG_PORT:-5432}
KAFKA_PORT=${TIDEMARK_STACK_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${TIDEMARK_STACK_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_SASL_PORT=${TIDEMARK_STACK_KAFKA_SASL_PORT:-9094}
S3_PORT=${TIDEMARK_STACK_S3_PORT:-9000}
S3_TLS_PORT=${TIDEMARK_STACK_S3_TLS_PORT:-9443}
KAFKA_HEAP=${TIDEMARK_STACK_KAFKA_HEAP:--Xms256m -Xmx768m}
S3_HEAP=${TIDEMARK_STACK_S3_HEAP:--Xms64m -Xmx512m}

PG_USER=tidemark
PG_PASSWORD=tidemark
PG_DB=tidemark
S3_BUCKET=tidemark-events
S3_ACCESS_KEY=tidemark
S3_SECRET_KEY=tidemark-secret
S3_REGION=us-east-1
KAFKA_SASL_MECHANISM=scram-sha-256
KAFKA_SASL_USER=tidemark
KAFKA_SASL_PASSWORD=tidemark-scram
KEYSTORE_PASSWORD=tidemark-stack   # the PKCS12 keystore Kafka and S3Proxy read (a local file)
PG_SSL_CA=/etc/ssl/certs/ssl-cert-snakeoil.pem

LOG_DIR=$STACK_DIR/logs
RUN_DIR=$STACK_DIR/run
KAFKA_DIR=$STACK_DIR/kafka
S3_DIR=$STACK_DIR/s3proxy
CERT_DIR=$STACK_DIR/certs
CA_PEM=$CERT_DIR/ca.pem
SERVER_P12=$CERT_DIR/server.p12
SETUP_LOG=$LOG_DIR/setup.log

# ---------------------------------------------------------------- helpers
log() { printf '%s\n' "$*" >&2; }
die() { log "stack: error: $*"; exit 1; }
now_ns() { date +%s%N; }
since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.1fs", (b - a) / 1e9 }'; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

ensure_dirs() { mkdir -p "$LOG_DIR" "$RUN_DIR" "$KAFKA_DIR" "$S3_DIR"; }

# Does the TLS server on 127.0.0.1:PORT present a certificate the stack CA signed for 127.0.0.1?
tls_ok() {
  [ -s "$CA_PEM" ] && port_open "$1" || return 1
  timeout 5 openssl s_client -connect "127.0.0.1:$1" -CAfile "$CA_PEM" -verify_ip 127.0.0.1 \
    -verify_return_error </dev/null >/dev/null 2>&1
}

# Serialise state-changing subcommands (two `up`s at once): re-run this script under
# `flock -o`, so the lock is held by flock itself and never inherited by the services we start.
with_lock() { # with_lock ARGS... (the original arguments)
  if [ "${_TIDEMARK_STACK_LOCKED:-}" = "$STACK_DIR" ]; then unset _TIDEMARK_STACK_LOCKED; return 0; fi
  command -v flock >/dev/null 2>&1 || return 0
  ensure_dirs
  _TIDEMARK_STACK_LOCKED=$STACK_DIR exec flock -o "$STACK_DIR/.lock" bash "${BASH_SOURCE[0]}" "$@"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# apt-get install; `apt-get update` only when the lists are empty or the install fails.
apt_install() {
  ensure_dirs
  export DEBIAN_FRONTEND=noninteractive
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    $SUDO apt-get update -q >>"$SETUP_LOG" 2>&1 || true
  fi
  if ! $SUDO apt-get install -y -q --no-install-recommends "$@" >>"$SETUP_LOG" 2>&1; then
    $SUDO apt-get update -q >>"$SETUP_LOG" 2>&1 || true
    $SUDO apt-get install -y -q --no-install-recommends "$@" >>"$SETUP_LOG" 2>&1
  fi
}

ensure_java_maven() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if [ ${#missing[@]} -gt 0 ]; then
    log "stack: installing ${missing[*]} (apt)"
    apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed (see $SETUP_LOG)"
  fi
}

# Is pid alive and its command line contains $2 (guards against pid reuse)?
pid_alive() {
  local pid=$1 pattern=$2
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}
read_pid() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }

# stop_pid NAME PATTERN SIGNAL-FIRST: SIGTERM, wait up to 30 s, then SIGKILL.
stop_service() {
  local name=$1 pattern=$2 first=${3:-TERM} pid t0
  t0=$(now_ns)
  pid=$(read_pid "$name")
  if ! pid_alive "$pid" "$pattern"; then
    rm -f "$RUN_DIR/$name.pid"
    log "$name: already down"
    return 0
  fi
  kill "-$first" "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 300); do
    pid_alive "$pid" "$pattern" || break
    sleep 0.1
  done
  if pid_alive "$pid" "$pattern"; then
    log "$name: still running after 30s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do pid_alive "$pid" "$pattern" || break; sleep 0.1; done
  fi
  rm -f "$RUN_DIR/$name.pid"
  log "$name: stopped ($(since "$t0"))"
}

# Launch a detached background process that writes its own pid file.
# spawn NAME OUTFILE CMD...
spawn() {
  local name=$1 out=$2; shift 2
  [ -f "$out" ] && mv -f "$out" "$out.prev"
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN_DIR/$name.pid" "$@" \
    </dev/null >"$out" 2>&1 &
  local i
  for i in $(seq 1 50); do [ -s "$RUN_DIR/$name.pid" ] && return 0; sleep 0.05; done
  die "$name: no pid file written"
}

# Resolve a runtime classpath with Maven; cached until the generated pom changes or a jar vanishes.
# resolve_classpath DIR  (DIR/pom.xml.new must exist)
resolve_classpath() {
  local dir=$1 cp_file=$1/classpath.txt ok=1
  if [ -f "$dir/pom.xml" ] && cmp -s "$dir/pom.xml" "$dir/pom.xml.new" && [ -s "$cp_file" ]; then
    local jar
    IFS=: read -r -a jars <"$cp_file" || true
    for jar in "${jars[@]}"; do [ -f "$jar" ] || { ok=0; break; }; done
    if [ $ok -eq 1 ]; then rm -f "$dir/pom.xml.new"; return 0; fi
  fi
  mv -f "$dir/pom.xml.new" "$dir/pom.xml"
  log "stack: resolving $(basename "$dir") jars with Maven (first run downloads them)"
  (cd "$dir" && mvn -B -q -f pom.xml "$MVN_DEP_PLUGIN:build-classpath" \
      -Dmdep.outputFile=classpath.tmp -Dmdep.includeScope=runtime >>"$SETUP_LOG" 2>&1) \
    || die "maven could not resolve $dir/pom.xml (see $SETUP_LOG)"
  mv -f "$dir/classpath.tmp" "$cp_file"
}

write_pom() { # write_pom DIR ARTIFACT-ID DEPENDENCIES-XML
  cat >"$1/pom.xml.new" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <!-- generated by scripts/stack.sh; only used to resolve a runtime classpath -->
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.tidemark.stack</groupId>
  <artifactId>$2</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
$3
  </dependencies>
</project>
EOF
}

dep() { printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$1" "$2" "$3"; }

# ---------------------------------------------------------------- certificates
# A stack CA and one server certificate (127.0.0.1 and localhost) for Kafka's SASL_SSL listener
# and S3Proxy's HTTPS endpoint, made once with openssl; made again only when a file is missing or
# the server certificate expires within 30 days.
certs_ensure() {
  if [ -s "$CA_PEM" ] && [ -s "$SERVER_P12" ] && [ -s "$CERT_DIR/server.pem" ] \
    && openssl x509 -checkend 2592000 -noout -in "$CERT_DIR/server.pem" >/dev/null 2>&1; then return 0; fi
  command -v openssl >/dev/null 2>&1 || apt_install openssl || die "apt-get install openssl failed (see $SETUP_LOG)"
  mkdir -p "$CERT_DIR"
  local tmp; tmp=$(mktemp -d "$CERT_DIR/.new-XXXXXX")
  # One && chain: `set -e` does not hold in a subshell whose status is tested.
  (
    cd "$tmp" && umask 077 \
      && openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Tidemark stack CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout ca.key -out ca.pem \
      && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr \
      && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext \
      && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3649 -extfile server.ext -out server.pem \
      && openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name server \
        -passout "pass:$KEYSTORE_PASSWORD" -out server.p12 \
      && chmod 644 ca.pem server.pem && rm -f server.csr server.ext ca.srl
  ) >>"$SETUP_LOG" 2>&1 || { rm -rf "$tmp"; die "openssl could not make the stack certificates (see $SETUP_LOG)"; }
  mv -f "$tmp"/* "$CERT_DIR/"
  rmdir "$tmp"
  log "stack: made the stack CA and server certificate in $CERT_DIR"
}

# ---------------------------------------------------------------- PostgreSQL
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
pg_healthy() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }
pg_login_ok() {
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" \
    -tAc 'select 1' >/dev/null 2>&1
}

pg_up() {
  local t0 restart=0 cur was=""
  t0=$(now_ns)
  if [ ! -x "$PG_BIN/postgres" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "postgres: installing postgresql-$PG_MAJOR (apt)"
    apt_install "postgresql-$PG_MAJOR" || die "apt-get install postgresql-$PG_MAJOR failed (see $SETUP_LOG)"
  fi
  if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_MAJOR" '$1 == v && $2 == "main" { f = 1 } END { exit !f }'; then
    $SUDO pg_createcluster "$PG_MAJOR" main >>"$SETUP_LOG" 2>&1 || die "pg_createcluster failed (see $SETUP_LOG)"
  fi
  # Settings (only rewritten when they differ; a running cluster is restarted then).
  cur=$(pg_conftool -s "$PG_MAJOR" main show port 2>/dev/null || true)
  if [ "$cur" != "$PG_PORT" ]; then $SUDO pg_conftool "$PG_MAJOR" main set port "$PG_PORT"; restart=1; fi
  cur=$(pg_conftool -s "$PG_MAJOR" main show max_connections 2>/dev/null || true)
  if [ "$cur" != "200" ]; then $SUDO pg_conftool "$PG_MAJOR" main set max_connections 200; restart=1; fi

  local status
  status=$(pg_lsclusters -h 2>/dev/null | awk -v v="$PG_MAJOR" '$1 == v && $2 == "main" { print $4 }')
  if [ "$status" = "online" ] && [ $restart -eq 1 ]; then
    $SUDO pg_ctlcluster "$PG_MAJOR" main restart >>"$SETUP_LOG" 2>&1 || die "postgres restart failed (see $SETUP_LOG)"
  elif [ "$status" != "online" ]; then
    $SUDO pg_ctlcluster "$PG_MAJOR" main start >>"$SETUP_LOG" 2>&1 \
      || die "postgres did not start (see $SETUP_LOG and /var/log/postgresql/postgresql-$PG_MAJOR-main.log)"
  else
    was=already
  fi
  local i
  for i in $(seq 1 100); do pg_healthy && break; sleep 0.1; done
  pg_healthy || die "postgres is not accepting connections on 127.0.0.1:$PG_PORT"

  if ! pg_login_ok; then
    as_postgres psql -X -q -p "$PG_PORT" -v ON_ERROR_STOP=1 >>"$SETUP_LOG" 2>&1 <<SQL || die "could not create role/database (see $SETUP_LOG)"
SELECT 'CREATE ROLE $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER')\gexec
ALTER ROLE $PG_USER WITH LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
    pg_login_ok || die "password login as $PG_USER over TCP 127.0.0.1:$PG_PORT fails (check pg_hba.conf)"
  fi
  log "postgres: ${was:+$was }up at 127.0.0.1:$PG_PORT ($(since "$t0"))"
}

pg_down() {
  local t0; t0=$(now_ns)
  if command -v pg_ctlcluster >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | awk -v v="$PG_MAJOR" '$1 == v && $2 == "main" && $4 == "online" { f = 1 } END { exit !f }'; then
    $SUDO pg_ctlcluster "$PG_MAJOR" main stop -m fast >>"$SETUP_LOG" 2>&1 || die "postgres did not stop"
    log "postgres: stopped ($(since "$t0"))"
  else
    log "postgres: already down"
  fi
}

# ---------------------------------------------------------------- Kafka
KAFKA_PATTERN=kafka.Kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOG=$LOG_DIR/kafka.log

kafka_prepare() {
  ensure_java_maven
  certs_ensure
  mkdir -p "$KAFKA_DIR" "$KAFKA_DATA"
  write_pom "$KAFKA_DIR" kafka-runtime "$(
    dep org.apache.kafka kafka_2.13 "$KAFKA_VERSION"
    dep org.slf4j slf4j-api "$SLF4J_VERSION"
    dep org.apache.logging.log4j log4j-slf4j2-impl "$LOG4J_VERSION"
    dep org.apache.logging.log4j log4j-core "$LOG4J_VERSION"
  )"
  resolve_classpath "$KAFKA_DIR"

  cat >"$KAFKA_DIR/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/stack.sh -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="$KAFKA_LOG" filePattern="$KAFKA_LOG.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="INFO"/>
    <Logger name="org.apache.kafka.storage" level="WARN"/>
    <Logger name="kafka.server.KafkaConfig" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
  </Loggers>
</Configuration>
EOF

  cat >"$KAFKA_DIR/server.properties" <<EOF
# generated by scripts/stack.sh: one KRaft node in combined mode
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
# the secure face: SCRAM-SHA-256 over TLS, the user is made at format time and by kafka_scram_ensure
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$SERVER_P12
ssl.keystore.password=$KEYSTORE_PASSWORD
ssl.key.password=$KEYSTORE_PASSWORD
log.dirs=$KAFKA_DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF

  # For Kafka's own tools against the secure face (--command-config), and kafka_scram_login.
  cat >"$KAFKA_DIR/sasl-client.properties" <<EOF
# generated by scripts/stack.sh: a client of the SASL_SSL listener 127.0.0.1:$KAFKA_SASL_PORT
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_SASL_USER" password="$KAFKA_SASL_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$CA_PEM
request.timeout.ms=10000
default.api.timeout.ms=20000
EOF
  cat >"$KAFKA_DIR/log4j2-tools.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/stack.sh: Kafka's command-line tools log warnings to stderr -->
<Configuration status="WARN">
  <Appenders><Console name="err" target="SYSTEM_ERR"><PatternLayout pattern="%p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
EOF

  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    local id
    if [ -s "$KAFKA_DIR/cluster-id" ]; then id=$(cat "$KAFKA_DIR/cluster-id"); else
      id=-
      while [ "${id#-}" != "$id" ]; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
      done
      echo "$id" >"$KAFKA_DIR/cluster-id"
    fi
    java -cp "$(cat "$KAFKA_DIR/classpath.txt")" -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.xml" \
      kafka.tools.StorageTool format --standalone -t "$id" -c "$KAFKA_DIR/server.properties" \
      --add-scram "SCRAM-SHA-256=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]" \
      >>"$SETUP_LOG" 2>&1 || die "kafka storage format failed (see $SETUP_LOG)"
  fi
}

kafka_healthy() { pid_alive "$(read_pid kafka)" "$KAFKA_PATTERN" && port_open "$KAFKA_PORT"; }

# Returns 0 when a start was launched, 1 when it was already up.
kafka_launch() {
  if kafka_healthy; then return 1; fi
  if pid_alive "$(read_pid kafka)" "$KAFKA_PATTERN"; then return 0; fi # starting: just wait
  rm -f "$RUN_DIR/kafka.pid"
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is used by a process this script did not start"
  port_open "$KAFKA_SASL_PORT" && die "port $KAFKA_SASL_PORT is used by a process this script did not start"
  rm -f "$RUN_DIR/kafka.scram"
  [ -f "$KAFKA_LOG" ] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.prev"
  # shellcheck disable=SC2086
  spawn kafka "$LOG_DIR/kafka.out" java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.xml" \
    -cp "$(cat "$KAFKA_DIR/classpath.txt")" kafka.Kafka "$KAFKA_DIR/server.properties"
}

kafka_wait() {
  local t0=$1 i pid
  for i in $(seq 1 1200); do
    pid=$(read_pid kafka)
    if ! pid_alive "$pid" "$KAFKA_PATTERN"; then
      tail -n 30 "$KAFKA_LOG" "$LOG_DIR/kafka.out" >&2 2>/dev/null || true
      die "kafka exited during start (logs: $KAFKA_LOG, $LOG_DIR/kafka.out)"
    fi
    if port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_LOG" 2>/dev/null; then
      log "kafka: up at 127.0.0.1:$KAFKA_PORT ($(since "$t0"))"
      return 0
    fi
    sleep 0.1
  done
  die "kafka did not start within 120s (log: $KAFKA_LOG)"
}

kafka_start() {
  local t0; t0=$(now_ns)
  kafka_prepare
  kafka_restart_outdated
  if kafka_launch; then kafka_wait "$t0"; else log "kafka: already up at 127.0.0.1:$KAFKA_PORT ($(since "$t0"))"; fi
  kafka_scram_ensure
}

# The secure face answers: TLS with the stack CA's certificate on the SASL_SSL port.
kafka_secure_ok() { tls_ok "$KAFKA_SASL_PORT"; }

# A broker that runs without this configuration's SASL_SSL listener (started by an older
# scripts/stack.sh, or before the certificates were made again) is restarted.
kafka_restart_outdated() {
  if kafka_healthy && ! kafka_secure_ok; then
    log "kafka: running without its SASL_SSL listener at 127.0.0.1:$KAFKA_SASL_PORT (an older configuration); restarting it"
    stop_service kafka "$KAFKA_PATTERN"
  fi
}

kafka_tool() { # kafka_tool CLASS ARGS... (a command-line tool from the broker's own jars)
  java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2-tools.xml" \
    -cp "$(cat "$KAFKA_DIR/classpath.txt")" "$@"
}

# Can the stack user log in over SASL_SSL (SCRAM-SHA-256, the stack CA verified)?
kafka_scram_login() {
  kafka_tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_SASL_PORT" \
    --command-config "$KAFKA_DIR/sasl-client.properties" \
    --describe --entity-type users --entity-name "$KAFKA_SASL_USER" >>"$SETUP_LOG" 2>&1
}

# The stack user's SCRAM credential exists and a login works. A data dir formatted before the
# secure face existed has no credential: it is made here through the plain listener. Checked
# once per broker process (run/kafka.scram holds the pid it was checked for).
kafka_scram_ensure() {
  local t0 pid i; t0=$(now_ns); pid=$(read_pid kafka)
  [ "$(cat "$RUN_DIR/kafka.scram" 2>/dev/null || true)" = "$pid $KAFKA_SASL_PORT" ] && return 0
  kafka_secure_ok || die "kafka: no TLS with the stack CA at 127.0.0.1:$KAFKA_SASL_PORT (log: $KAFKA_LOG)"
  if ! kafka_scram_login; then
    log "kafka: creating the SCRAM-SHA-256 user $KAFKA_SASL_USER"
    kafka_tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
      --add-config "SCRAM-SHA-256=[iterations=8192,password=$KAFKA_SASL_PASSWORD]" \
      --entity-type users --entity-name "$KAFKA_SASL_USER" >>"$SETUP_LOG" 2>&1 \
      || die "kafka: could not create the SCRAM user $KAFKA_SASL_USER (see $SETUP_LOG)"
    for i in $(seq 1 30); do kafka_scram_login && break; sleep 1; done
    kafka_scram_login || die "kafka: SCRAM-SHA-256 login as $KAFKA_SASL_USER at 127.0.0.1:$KAFKA_SASL_PORT fails (see $SETUP_LOG)"
  fi
  echo "$pid $KAFKA_SASL_PORT" >"$RUN_DIR/kafka.scram"
  log "kafka: SASL_SSL (SCRAM-SHA-256) login as $KAFKA_SASL_USER works at 127.0.0.1:$KAFKA_SASL_PORT ($(since "$t0"))"
}

kafka_tools_cp() {
  mkdir -p "$STACK_DIR/kafka-tools"
  write_pom "$STACK_DIR/kafka-tools" kafka-tools-runtime "$(
    dep org.apache.kafka kafka-tools "$KAFKA_VERSION"
    dep org.slf4j slf4j-api "$SLF4J_VERSION"
    dep org.apache.logging.log4j log4j-slf4j2-impl "$LOG4J_VERSION"
    dep org.apache.logging.log4j log4j-core "$LOG4J_VERSION"
  )"
  resolve_classpath "$STACK_DIR/kafka-tools"
  cat "$STACK_DIR/kafka-tools/classpath.txt"
}

# ---------------------------------------------------------------- S3Proxy
S3_PATTERN=org.gaul.s3proxy.Main
S3_DATA=$S3_DIR/data

s3_prepare() {
  ensure_java_maven
  certs_ensure
  mkdir -p "$S3_DIR" "$S3_DATA"
  # The jar-with-dependencies published next to the plain jar carries S3Proxy's own resolution of
  # its dependencies (and its logback.xml). Resolving the plain jar's pom transitively does not work:
  # without S3Proxy's dependencyManagement, jackson-annotations 2.18 wins and Jackson 3 fails.
  write_pom "$S3_DIR" s3proxy-runtime "$(
    printf '    <dependency><groupId>org.gaul</groupId><artifactId>s3proxy</artifactId><version>%s</version>\n' "$S3PROXY_VERSION"
    printf '      <classifier>jar-with-dependencies</classifier>\n'
    printf '      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>\n'
    printf '    </dependency>\n'
  )"
  resolve_classpath "$S3_DIR"
  cat >"$S3_DIR/s3proxy.properties" <<EOF
# generated by scripts/stack.sh
s3proxy.endpoint=http://127.0.0.1:$S3_PORT
s3proxy.secure-endpoint=https://127.0.0.1:$S3_TLS_PORT
s3proxy.keystore-path=$SERVER_P12
s3proxy.keystore-password=$KEYSTORE_PASSWORD
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$S3_ACCESS_KEY
s3proxy.credential=$S3_SECRET_KEY
jclouds.provider=filesystem
jclouds.identity=$S3_ACCESS_KEY
jclouds.credential=$S3_SECRET_KEY
jclouds.filesystem.basedir=$S3_DATA
EOF
}

s3_http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" 2>/dev/null || true; }
s3_healthy() {
  pid_alive "$(read_pid s3proxy)" "$S3_PATTERN" || return 1
  local c; c=$(s3_http_code); [ -n "$c" ] && [ "$c" != "000" ]
}

s3_launch() {
  if s3_healthy; then return 1; fi
  if pid_alive "$(read_pid s3proxy)" "$S3_PATTERN"; then return 0; fi
  rm -f "$RUN_DIR/s3proxy.pid"
  port_open "$S3_PORT" && die "port $S3_PORT is used by a process this script did not start"
  port_open "$S3_TLS_PORT" && die "port $S3_TLS_PORT is used by a process this script did not start"
  # shellcheck disable=SC2086
  spawn s3proxy "$LOG_DIR/s3proxy.log" env LOG_LEVEL=info JETTY_LOG_LEVEL=warn java $S3_HEAP -Djava.awt.headless=true \
    -cp "$(cat "$S3_DIR/classpath.txt")" org.gaul.s3proxy.Main --properties "$S3_DIR/s3proxy.properties"
}

# The HTTPS endpoint answers with the stack CA's certificate.
s3_secure_ok() { tls_ok "$S3_TLS_PORT"; }

s3_restart_outdated() { # as kafka_restart_outdated, for the HTTPS endpoint
  if s3_healthy && ! s3_secure_ok; then
    log "s3proxy: running without its HTTPS endpoint at https://127.0.0.1:$S3_TLS_PORT (an older configuration); restarting it"
    stop_service s3proxy "$S3_PATTERN"
  fi
}

s3curl() {
  curl -sS -m 20 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -H "Content-Type: application/octet-stream" "$@"
}

s3_create_bucket() { # 200 created, 409 already owned by us
  local code
  code=$(s3curl -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$S3_PORT/$1") || true
  case "$code" in 200|409) return 0 ;; *) log "s3proxy: create bucket $1 answered $code"; return 1 ;; esac
}

s3_wait() {
  local t0=$1 i
  for i in $(seq 1 1200); do
    if ! pid_alive "$(read_pid s3proxy)" "$S3_PATTERN"; then
      tail -n 30 "$LOG_DIR/s3proxy.log" >&2 2>/dev/null || true
      die "s3proxy exited during start (log: $LOG_DIR/s3proxy.log)"
    fi
    if s3_healthy && s3_secure_ok; then
      s3_create_bucket "$S3_BUCKET" || die "could not create bucket $S3_BUCKET"
      log "s3proxy: up at http://127.0.0.1:$S3_PORT and https://127.0.0.1:$S3_TLS_PORT, bucket $S3_BUCKET ($(since "$t0"))"
      return 0
    fi
    sleep 0.1
  done
  die "s3proxy did not start within 120s (log: $LOG_DIR/s3proxy.log)"
}

s3_start() {
  local t0; t0=$(now_ns)
  s3_prepare
  s3_restart_outdated
  if s3_launch; then s3_wait "$t0"; else
    s3_create_bucket "$S3_BUCKET" || die "could not create bucket $S3_BUCKET"
    log "s3proxy: already up at http://127.0.0.1:$S3_PORT ($(since "$t0"))"
  fi
}

# Conditional create: If-None-Match: * must give 200 then 412, and two concurrent creates of one
# new key must give exactly one 200 and one 412.
check_s3() {
  s3_healthy || die "s3proxy is not running (bash scripts/stack.sh up)"
  local base="http://127.0.0.1:$S3_PORT/tidemark-stack-check" run fail=0 a b r key tmp
  s3_create_bucket tidemark-stack-check || die "could not create bucket tidemark-stack-check"
  run="$(date +%s)-$$"
  key="$base/seq-$run"
  a=$(s3curl -o /dev/null -w '%{http_code}' -X PUT -H 'If-None-Match: *' --data-binary first "$key") || true
  b=$(s3curl -o /dev/null -w '%{http_code}' -X PUT -H 'If-None-Match: *' --data-binary second "$key") || true
  r=$(s3curl "$key") || true
  if [ "$a" = 200 ] && [ "$b" = 412 ] && [ "$r" = first ]; then
    echo "check-s3: sequential If-None-Match: * -> $a then $b, body kept: ok"
  else
    echo "check-s3: sequential If-None-Match: * -> $a then $b, body '$r': FAIL"; fail=1
  fi
  s3curl -o /dev/null -X DELETE "$key" || true
  # Race: two writers with 1 MiB bodies (so the writes overlap), same new key, If-None-Match: *.
  # Expect one 200 and one 412, and the stored object to be the winner's body.
  tmp=$(mktemp -d)
  head -c 1048576 /dev/zero | tr '\0' a >"$tmp/body-a"
  head -c 1048576 /dev/zero | tr '\0' b >"$tmp/body-b"
  local rounds=${CHECK_S3_ROUNDS:-10} i ok=0 ca cb want got
  for i in $(seq 1 "$rounds"); do
    key="$base/race-$run-$i"
    s3curl -o /dev/null -w '%{http_code}' -X PUT -H 'If-None-Match: *' --data-binary "@$tmp/body-a" "$key" >"$tmp/a" 2>/dev/null &
    s3curl -o /dev/null -w '%{http_code}' -X PUT -H 'If-None-Match: *' --data-binary "@$tmp/body-b" "$key" >"$tmp/b" 2>/dev/null &
    wait
    ca=$(cat "$tmp/a"); cb=$(cat "$tmp/b"); want=""
    if [ "$ca" = 200 ] && [ "$cb" = 412 ]; then want=a; elif [ "$ca" = 412 ] && [ "$cb" = 200 ]; then want=b; fi
    got=no
    if [ -n "$want" ] && s3curl -o "$tmp/got" "$key" 2>/dev/null && cmp -s "$tmp/got" "$tmp/body-$want"; then got=yes; fi
    if [ "$got" = yes ]; then ok=$((ok + 1)); else
      echo "check-s3: race round $i answered $ca and $cb (stored body is the winner's: $got)"
    fi
    s3curl -o /dev/null -X DELETE "$key" 2>/dev/null || true
  done
  rm -rf "$tmp"
  if [ "$ok" -eq "$rounds" ]; then
    echo "check-s3: concurrent If-None-Match: * -> one 200 and one 412 in $ok/$rounds rounds: ok"
  else
    echo "check-s3: concurrent If-None-Match: * -> one 200 and one 412 in only $ok/$rounds rounds: FAIL"; fail=1
  fi
  return $fail
}

# ---------------------------------------------------------------- grpcurl
go_bin_dir() {
  local d=""
  if command -v go >/dev/null 2>&1; then
    d=$(go env GOBIN 2>/dev/null || true)
    [ -n "$d" ] || d="$(go env GOPATH 2>/dev/null | cut -d: -f1)/bin"
  fi
  [ -n "$d" ] && [ "$d" != "/bin" ] || d="$HOME/go/bin"
  printf '%s\n' "$d"
}

grpcurl_ensure() {
  local t0 bin; t0=$(now_ns); bin=$(go_bin_dir)
  if command -v grpcurl >/dev/null 2>&1 || [ -x "$bin/grpcurl" ]; then
    log "grpcurl: present ($(since "$t0"))"; return 0
  fi
  if ! command -v go >/dev/null 2>&1; then log "grpcurl: skipped, no Go toolchain"; return 0; fi
  log "grpcurl: go install grpcurl@$GRPCURL_VERSION"
  if go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" >>"$SETUP_LOG" 2>&1; then
    log "grpcurl: installed in $bin ($(since "$t0"))"
  else
    log "grpcurl: go install failed (see $SETUP_LOG); continuing"
  fi
}

# ---------------------------------------------------------------- jaeger
# `go install` refuses Jaeger (its go.mod has replace directives), so it is built in a module of
# our own that requires it as a tool; the binary is kept beside grpcurl. The first build takes
# several minutes (longer on a busy machine); afterwards this is instant.
jaeger_path() { printf '%s/jaeger\n' "$(go_bin_dir)"; }

jaeger_ensure() {
  local t0 bin build; t0=$(now_ns); bin=$(jaeger_path)
  if [ -x "$bin" ]; then log "jaeger: present ($(since "$t0"))"; return 0; fi
  if ! command -v go >/dev/null 2>&1; then log "jaeger: skipped, no Go toolchain"; return 1; fi
  build="$STACK_DIR/jaeger-build"
  rm -rf "$build"; mkdir -p "$build" "$(dirname "$bin")"
  log "jaeger: building jaeger@$JAEGER_VERSION (go get -tool, go build; takes minutes the first time)"
  if (cd "$build" && go mod init tidemark-jaeger-build && GOFLAGS=-buildvcs=false go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" \
      && GOFLAGS=-buildvcs=false go build -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) >>"$SETUP_LOG" 2>&1; then
    mv -f "$bin.tmp" "$bin"
    rm -rf "$build"
    log "jaeger: installed in $bin ($(since "$t0"))"
  else
    rm -f "$bin.tmp"
    log "jaeger: build failed (see $SETUP_LOG); continuing"
    return 1
  fi
}

kcat_ensure() { # nice-to-have: tried once per stack dir
  command -v kcat >/dev/null 2>&1 && return 0
  [ -f "$STACK_DIR/.kcat-tried" ] && return 0
  touch "$STACK_DIR/.kcat-tried"
  if apt_install kcat; then log "kcat: installed"; else log "kcat: not installed (apt failed); continuing"; fi
}

# ---------------------------------------------------------------- subcommands
sq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# cmd_env [--secure]: the plain faces, or with --secure the TLS ones (PostgreSQL by the name
# `localhost` of its snakeoil certificate, S3Proxy's HTTPS endpoint, Kafka's SASL_SSL listener).
cmd_env() {
  local bin path=$PATH secure=0
  case "${1:-}" in --secure) secure=1 ;; "") ;; *) usage; exit 2 ;; esac
  bin=$(go_bin_dir)
  case ":$path:" in *":$bin:"*) ;; *) path="$bin:$path" ;; esac
  if [ $secure -eq 1 ]; then
    echo "export TIDEMARK_PG_URL=$(sq "postgres://$PG_USER:$PG_PASSWORD@localhost:$PG_PORT/$PG_DB")"
    echo "export TIDEMARK_PG_SSL_CA=$(sq "$PG_SSL_CA")"
    echo "export TIDEMARK_S3_ENDPOINT=$(sq "https://127.0.0.1:$S3_TLS_PORT")"
    echo "export TIDEMARK_S3_CA=$(sq "$CA_PEM")"
  else
    echo "export TIDEMARK_PG_URL=$(sq "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB")"
    echo "export TIDEMARK_S3_ENDPOINT=$(sq "http://127.0.0.1:$S3_PORT")"
  fi
  echo "export TIDEMARK_S3_BUCKET=$(sq "$S3_BUCKET")"
  echo "export TIDEMARK_S3_ACCESS_KEY=$(sq "$S3_ACCESS_KEY")"
  echo "export TIDEMARK_S3_SECRET_KEY=$(sq "$S3_SECRET_KEY")"
  echo "export TIDEMARK_S3_REGION=$(sq "$S3_REGION")"
  if [ $secure -eq 1 ]; then
    echo "export TIDEMARK_KAFKA_BROKERS=$(sq "127.0.0.1:$KAFKA_SASL_PORT")"
    echo "export TIDEMARK_KAFKA_CA=$(sq "$CA_PEM")"
    echo "export TIDEMARK_KAFKA_SASL_MECHANISM=$(sq "$KAFKA_SASL_MECHANISM")"
    echo "export TIDEMARK_KAFKA_SASL_USERNAME=$(sq "$KAFKA_SASL_USER")"
    echo "export TIDEMARK_KAFKA_SASL_PASSWORD=$(sq "$KAFKA_SASL_PASSWORD")"
  else
    echo "export TIDEMARK_KAFKA_BROKERS=$(sq "127.0.0.1:$KAFKA_PORT")"
  fi
  echo "export PATH=$(sq "$path")"
}

pg_ssl_on() {
  [ "$(PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" \
    -tAc 'show ssl' 2>/dev/null || true)" = on ]
}

cmd_status() {
  local all=0 pg=0
  if pg_healthy; then echo "postgres  up    127.0.0.1:$PG_PORT"; pg=1; else echo "postgres  down  127.0.0.1:$PG_PORT"; all=3; fi
  if [ $pg -eq 1 ] && pg_ssl_on; then echo "  tls     up    localhost:$PG_PORT (ssl = on; CA $PG_SSL_CA)"; else echo "  tls     down  localhost:$PG_PORT (ssl = on with $PG_SSL_CA)"; all=3; fi
  if kafka_healthy; then echo "kafka     up    127.0.0.1:$KAFKA_PORT (pid $(read_pid kafka))"; else echo "kafka     down  127.0.0.1:$KAFKA_PORT"; all=3; fi
  # The SCRAM login itself is checked by up/kafka-start (a JVM); here the TLS face with the stack CA.
  if kafka_healthy && kafka_secure_ok; then echo "  sasl    up    127.0.0.1:$KAFKA_SASL_PORT (SASL_SSL, SCRAM-SHA-256, user $KAFKA_SASL_USER; CA $CA_PEM)"; else echo "  sasl    down  127.0.0.1:$KAFKA_SASL_PORT (SASL_SSL)"; all=3; fi
  if s3_healthy; then echo "s3proxy   up    http://127.0.0.1:$S3_PORT (pid $(read_pid s3proxy))"; else echo "s3proxy   down  http://127.0.0.1:$S3_PORT"; all=3; fi
  if s3_healthy && s3_secure_ok; then echo "  https   up    https://127.0.0.1:$S3_TLS_PORT (CA $CA_PEM)"; else echo "  https   down  https://127.0.0.1:$S3_TLS_PORT"; all=3; fi
  local g; g=$(command -v grpcurl 2>/dev/null || true)
  [ -n "$g" ] || { [ -x "$(go_bin_dir)/grpcurl" ] && g="$(go_bin_dir)/grpcurl"; } || true
  echo "grpcurl   ${g:-missing}"
  if [ -x "$(jaeger_path)" ]; then echo "jaeger    $(jaeger_path)"; else echo "jaeger    missing"; fi
  echo "state     $STACK_DIR"
  return $all
}

cmd_up() {
  local t0 tk ts kl=1 sl=1; t0=$(now_ns)
  pg_up
  # Resolve jars, then start both JVMs in parallel and wait for each.
  s3_prepare
  kafka_prepare
  s3_restart_outdated
  kafka_restart_outdated
  ts=$(now_ns); s3_launch || sl=0
  tk=$(now_ns); kafka_launch || kl=0
  if [ $sl -eq 1 ]; then s3_wait "$ts"; else
    s3_create_bucket "$S3_BUCKET" || die "could not create bucket $S3_BUCKET"
    log "s3proxy: already up at http://127.0.0.1:$S3_PORT and https://127.0.0.1:$S3_TLS_PORT ($(since "$ts"))"
  fi
  if [ $kl -eq 1 ]; then kafka_wait "$tk"; else log "kafka: already up at 127.0.0.1:$KAFKA_PORT and 127.0.0.1:$KAFKA_SASL_PORT ($(since "$tk"))"; fi
  kafka_scram_ensure
  pg_ssl_on || log "postgres: ssl is off, so the secure env's TIDEMARK_PG_SSL_CA has nothing to verify (Debian's default is ssl = on with $PG_SSL_CA)"
  grpcurl_ensure
  jaeger_ensure || true
  kcat_ensure
  log "stack: up ($(since "$t0")); state in $STACK_DIR; eval \"\$(bash scripts/stack.sh env)\" (or env --secure)"
}

cmd_down() {
  stop_service kafka "$KAFKA_PATTERN"
  stop_service s3proxy "$S3_PATTERN"
  pg_down
}

cmd_logs() {
  echo "setup     $SETUP_LOG"
  echo "kafka     $KAFKA_LOG ($LOG_DIR/kafka.out for stdout/stderr)"
  echo "s3proxy   $LOG_DIR/s3proxy.log"
  echo "certs     $CERT_DIR (ca.pem, server.pem/.key, server.p12; openssl output in the setup log)"
  echo "postgres  /var/log/postgresql/postgresql-$PG_MAJOR-main.log"
}

usage() {
  cat >&2 <<EOF
usage: bash scripts/stack.sh COMMAND
  up            install what is missing and start postgres, kafka, s3proxy (idempotent); kafka
                and s3proxy also serve SASL_SSL / HTTPS with certificates of a stack CA
  down          stop kafka, s3proxy and the postgres cluster
  status        show each service (exit 0 when all are up, 3 otherwise)
  env           print export lines for TIDEMARK_* and PATH (eval "\$(bash scripts/stack.sh env)")
  env --secure  the same for the secure faces: PostgreSQL over TLS, S3Proxy over HTTPS and Kafka's
                SASL_SSL listener (SCRAM-SHA-256), with the CA files (TIDEMARK_*_CA)
  check-s3      verify S3Proxy conditional create (If-None-Match: *), also under a race
  jaeger        build Jaeger (the traces test's OTLP receiver) when missing and print its path
  kafka-stop | kafka-start | kafka-kill      stop (SIGTERM) / start / SIGKILL the broker only
  s3-stop | s3-start | s3-kill               same for S3Proxy
  kafka-topics ARGS...   run Kafka's TopicCommand against the broker (e.g. --list)
  logs          print where the logs are
state: $STACK_DIR
EOF
}

main() {
  local cmd=${1:-}
  case "$cmd" in up|down|jaeger|kafka-start|kafka-stop|kafka-kill|s3-start|s3-stop|s3-kill) with_lock "$@"; ensure_dirs ;; esac
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) local rc=0; cmd_status || rc=$?; exit "$rc" ;;
    env) cmd_env "$@" ;;
    check-s3) local rc=0; check_s3 || rc=$?; exit "$rc" ;;
    jaeger) jaeger_ensure >&2 && jaeger_path ;;
    kafka-start) kafka_start ;;
    kafka-stop) stop_service kafka "$KAFKA_PATTERN" ;;
    kafka-kill) stop_service kafka "$KAFKA_PATTERN" KILL ;;
    s3-start) s3_start ;;
    s3-stop) stop_service s3proxy "$S3_PATTERN" ;;
    s3-kill) stop_service s3proxy "$S3_PATTERN" KILL ;;
    kafka-topics)
      ensure_dirs; ensure_java_maven
      local cp; cp=$(kafka_tools_cp)
      exec java -Xmx256m -cp "$cp" -Dlog4j2.level=WARN org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" "$@" ;;
    logs) cmd_logs ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
