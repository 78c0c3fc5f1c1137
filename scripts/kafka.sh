#!/usr/bin/env bash
#
# A real Apache Kafka broker for local development and tests: one KRaft node (broker and
# controller in one JVM) on 127.0.0.1, run from the jars Maven Central serves, so that
# neither Docker nor a Kafka tarball is needed -- only java and (once) mvn. Linux only.
# With KAFKA_NODES=3, a three-node cluster instead (replication 3, min.insync.replicas 2)
# for broker-failure tests, on other ports and in another state directory.
#
# Usage: scripts/kafka.sh up | down | status | logs [-f] | fetch | libs
#                       | kill-node N | stop-node N | start-node N   (see usage below)
#
# Every per-node step takes the node's directory and ports as arguments, so that the
# single node and the cluster's nodes share them.

set -euo pipefail

# The newest Apache Kafka that Maven Central serves: the consumer group protocol (KIP-848) is
# tried where it is most mature. KAFKA_VERSION picks another (4.0.0 or later: KRaft only, and
# the consumer group protocol on by default); each version's jars are cached apart.
readonly DEFAULT_KAFKA_VERSION=4.4.0
readonly KAFKA_VERSION=${KAFKA_VERSION:-$DEFAULT_KAFKA_VERSION}
readonly HOST=127.0.0.1

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly POM=$SCRIPT_DIR/kafka/pom.xml
readonly LOG4J_CONFIG=$SCRIPT_DIR/kafka/log4j2.properties

# Outside the repository, so that jars survive `git clean` and runs after the first are offline.
readonly CACHE_DIR=${KTRANSFORM_CACHE:-$HOME/.cache/ktransform}
readonly LIBS_DIR=$CACHE_DIR/kafka-$KAFKA_VERSION/libs
readonly NODES=${KAFKA_NODES:-1}
if [[ $NODES == 1 ]]; then
  readonly STATE_DIR=${KAFKA_STATE_DIR:-$HOME/.cache/ktransform/broker}
else
  readonly STATE_DIR=${KAFKA_STATE_DIR:-$HOME/.cache/ktransform/cluster}
fi
readonly CLIENT_PORT=${KAFKA_PORT:-9092}
readonly CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
# Cluster mode: node N's client port; its controller port is the next one.
read -r -a CLUSTER_PORTS <<<"${KAFKA_CLUSTER_PORTS:-19092 29092 39092}"
readonly CLUSTER_PORTS
readonly READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-90}
# Consumer-protocol groups' session timeout (see write_properties).
readonly CONSUMER_SESSION_MS=${KAFKA_CONSUMER_SESSION_MS:-6000}
readonly STOP_TIMEOUT=30
# The JVM options of Kafka's own bin/kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS) and its GC
# log; G1's default 200 ms pause goal let young collections stall the broker for 20-60 ms every
# ~2 s under load, which showed as the latency benchmark's tail.
readonly KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS-"-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true"}
# Cluster mode: a node that stops heartbeating is fenced after this long (Kafka's default
# is 9 s with heartbeats every 2 s). Not much lower: on a busy 2-core machine a live node
# that misses its heartbeats would be fenced too.
readonly CLUSTER_BROKER_SESSION_MS=6000
readonly CLUSTER_BROKER_HEARTBEAT_MS=1000

usage() {
  cat <<EOF
Usage: scripts/kafka.sh COMMAND
       KAFKA_NODES=3 scripts/kafka.sh COMMAND

  up            start a single-node Kafka $KAFKA_VERSION on $HOST:$CLIENT_PORT with fresh, empty
                storage and wait until it serves clients (does nothing if it already runs,
                whatever its version; the first run of a version downloads its jars with mvn)
  down          stop it (SIGTERM, then SIGKILL after ${STOP_TIMEOUT}s)
  status        exit 0 if it runs and serves clients, 1 otherwise
  logs [-f]     print the end of the broker log; -f follows it
  fetch         only download the jars
  version       print the Kafka version 'up' starts (KAFKA_VERSION, default $DEFAULT_KAFKA_VERSION)
  libs          print the jars' directory (after downloading them if needed): the Java
                client's classpath for tests that write and read with Kafka's own client

  For failure tests (N is 1 for the single node, 1-3 in a cluster):
  kill-node N   SIGKILL node N (a crash); its data stays
  stop-node N   stop node N cleanly (SIGTERM); its data stays
  start-node N  start node N again on the data it has, with the Kafka version it was
                formatted with, and wait until it serves

With KAFKA_NODES=3 the same commands manage a three-node cluster: nodes 1-3 on client
ports ${CLUSTER_PORTS[*]} (controller port: client port + 1), each broker and controller,
one cluster id, replication factor 3 and min.insync.replicas 2 for every topic including
the internal ones, and a ${CLUSTER_BROKER_SESSION_MS} ms broker session so that a killed node is
fenced (and its partitions move) quickly. 'up' starts missing nodes of a partly running
cluster on their data; with no node running it formats fresh storage for all three.

Environment:
  KAFKA_VERSION          the Apache Kafka release to run, 4.0.0 or later (now: $KAFKA_VERSION);
                         its jars are cached in kafka-<version>/libs under the cache root
  KTRANSFORM_CACHE       jar cache root (now: $CACHE_DIR)
  KAFKA_NODES            1 (default) or 3 (now: $NODES)
  KAFKA_STATE_DIR        data, logs, pid files (now: $STATE_DIR)
  KAFKA_PORT             single node: client port (now: $CLIENT_PORT)
  KAFKA_CONTROLLER_PORT  single node: KRaft controller port (now: $CONTROLLER_PORT)
  KAFKA_CLUSTER_PORTS    cluster: the three client ports (now: ${CLUSTER_PORTS[*]})
  KAFKA_READY_TIMEOUT    seconds 'up' and 'start-node' wait for a broker (now: $READY_TIMEOUT)
  KAFKA_JVM_OPTS         the broker JVM's options besides the 512 MB heap (default: those of
                         Kafka's kafka-run-class.sh; GC log in the node's logs/gc.log)
  KAFKA_AUTO_CREATE_TOPICS  false: the broker does not create topics on first use
  KAFKA_CONSUMER_SESSION_MS  the session timeout of consumer-protocol (KIP-848) groups, which
                         the broker owns (now: $CONSUMER_SESSION_MS; Kafka's default is 45000)
  KAFKA_SASL_PORT        single node, for auth tests: also a SASL_PLAINTEXT (PLAIN) listener
                         on this port, where user alice (password alice-secret) may do
                         nothing; ANONYMOUS on the other listeners is a super user

  Single node, for TLS tests: each port set adds a listener. Certificates are made at 'up'
  with openssl and keytool into the node's tls/ directory (see make_tls_material):
  ca.pem signs the broker's certificates (SAN 127.0.0.1 and localhost) and client.pem
  (CN=ktransform-client, key client.key encrypted with the password client-key-secret);
  other-ca.pem is an unrelated CA that signed other-client.pem / other-client.key.
  KAFKA_SSL_PORT         SSL
  KAFKA_SASL_SSL_PORT    SASL_SSL with SCRAM-SHA-512: user ktransform, password scram-secret
  KAFKA_MTLS_PORT        SSL that requires a client certificate signed by ca.pem
  KAFKA_SSL_EXPIRED_PORT SSL with a certificate (signed by ca.pem) that expired yesterday
  KAFKA_SSL_WRONG_HOST_PORT  SSL with a certificate (signed by ca.pem) for wrong-host.example only

  Single node, for tests that cut a client off through a proxy:
  KAFKA_PROXIED_PORT     a PLAINTEXT listener on this port that advertises itself at
                         KAFKA_PROXIED_ADVERTISED_PORT, where the test's proxy listens: a
                         client bootstrapped at the proxy reaches the broker only through it
EOF
}

say() { printf '%s\n' "$*"; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

require_command() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"
}

# --- Jars ---------------------------------------------------------------------------

pom_checksum() { sha256sum "$POM" | cut -d' ' -f1; }

# The jars' directory of Kafka version $1.
libs_dir_of() { printf '%s/kafka-%s/libs' "$CACHE_DIR" "$1"; }

# Written last by fetch_jars into the jars' directory $1. It holds the pom's checksum, so
# editing the pom refetches.
jars_fetched() {
  [[ -f $1/.complete && $(<"$1/.complete") == "$(pom_checksum)" ]]
}

# Put the runtime jars of Kafka version $1 (default KAFKA_VERSION) in its cache directory.
# Only the first run of a version starts Maven (and needs it); afterwards the stamp makes
# this an offline no-op.
fetch_jars() {
  local version=${1:-$KAFKA_VERSION} libs
  [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "KAFKA_VERSION must be a release such as $DEFAULT_KAFKA_VERSION, not '$version'"
  libs=$(libs_dir_of "$version")
  if jars_fetched "$libs"; then
    return 0
  fi
  require_command mvn "it is needed once per Kafka version, to download its jars from Maven Central"
  say "fetching the Kafka $version jars into $libs (first run only, takes a while)"
  # Resolve into a scratch dir and swap it in, so an interrupted download never looks complete.
  local partial=$libs.partial log=$libs.fetch.log
  rm -rf "$partial"
  mkdir -p "$partial"
  # The dependency plugin is pinned: Maven 3.8's default one is a 2013 release. Its
  # output goes to a file and is shown only on failure: even with -B -q, Debian's
  # Maven 3.8.7 prints stray colour escape codes.
  # -Dkafka.version wins over the pom's own kafka.version (4.1.1, the version pinned before
  # KAFKA_VERSION), which is left alone: the pom's checksum is the stamp of every cache.
  if ! mvn -B -q -f "$POM" -Dkafka.version="$version" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$partial" >"$log" 2>&1; then
    cat "$log" >&2
    rm -rf "$partial"
    die "mvn could not fetch the Kafka $version jars (output above, also in $log); is Maven Central reachable, and does it serve org.apache.kafka:kafka_2.13:$version?"
  fi
  rm -rf "$libs"
  mv "$partial" "$libs"
  pom_checksum >"$libs/.complete"
}

# --- Processes and ports --------------------------------------------------------------

# True if HOST:$1 accepts TCP connections.
port_answers() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# "name (pid N)" of the process listening on port $1, or nothing if ss cannot tell
# (missing, or not allowed to see other users' processes).
port_listener() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null |
    sed -nE 's/.*users:\(\("([^"]*)",pid=([0-9]+).*/\1 (pid \2)/p' | head -n 1
}

# Fail unless port $1 is free; $2 names the variable that moves it.
require_port_free() {
  local port=$1 variable=$2 owner
  port_answers "$port" || return 0
  owner=$(port_listener "$port")
  die "port $port on $HOST is already in use${owner:+ by $owner};" \
      "stop that process, or pick another port with $variable=<port>"
}

# Make concurrent 'up's and 'down's take turns (e.g. parallel test runs that each call
# 'up'), so that two of them never format and start the same node. The lock is held
# until this script exits.
lock_state_dir() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  if ! flock -n 9; then
    say "waiting for another scripts/kafka.sh to finish"
    flock 9
  fi
}

# --- One node -------------------------------------------------------------------------
# A node lives in its own directory: server.properties, kafka.pid, data/, logs/.

node_dir() { printf '%s/node-%s' "$STATE_DIR" "$1"; }

# The pid recorded in node dir $1, or nothing.
node_pid() {
  if [[ -f $1/kafka.pid ]]; then
    cat "$1/kafka.pid"
  fi
}

# True if pid $1 is alive and is the broker of node dir $2. Matching the command line
# guards against a stale pid file whose pid now belongs to another process, and treats
# an exited but unreaped (zombie) broker as gone.
is_node_process() {
  local pid=$1 dir=$2 args
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  args=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
  [[ $args == *"kafka.Kafka $dir/server.properties"* ]]
}

# Run a Kafka command-line class with the cached jars, logging into node dir $1.
# The classpath wildcard is quoted so that the JVM, not the shell, expands it.
kafka_tool() {
  local dir=$1
  shift
  java -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$dir/logs" \
    -cp "$LIBS_DIR/*" "$@"
}

# Write the broker config of node $2 into dir $1, listening on client port $3 and
# controller port $4. $5: a cluster's controller.quorum.voters; none for a single node.
write_properties() {
  local dir=$1 id=$2 client_port=$3 controller_port=$4 voters=${5:-}
  local listeners="PLAINTEXT://$HOST:$client_port,CONTROLLER://$HOST:$controller_port"
  local protocols=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
  local entry name protocol variable
  if [[ -z $voters ]]; then
    # A single node's extra listeners, each if its port is set.
    for entry in SASL_PLAINTEXT:SASL_PLAINTEXT:KAFKA_SASL_PORT $(tls_listeners); do
      IFS=: read -r name protocol variable <<<"$entry"
      if [[ -n ${!variable:-} ]]; then
        listeners+=",$name://$HOST:${!variable}"
        protocols+=",$name:$protocol"
      fi
    done
  fi
  local advertised=$listeners
  if [[ -z $voters && -n ${KAFKA_PROXIED_PORT:-} ]]; then
    [[ -n ${KAFKA_PROXIED_ADVERTISED_PORT:-} ]] \
      || die "KAFKA_PROXIED_PORT needs KAFKA_PROXIED_ADVERTISED_PORT (the proxy's port)"
    listeners+=",PROXIED://$HOST:$KAFKA_PROXIED_PORT"
    advertised+=",PROXIED://$HOST:$KAFKA_PROXIED_ADVERTISED_PORT"
    protocols+=",PROXIED:PLAINTEXT"
  fi
  {
    cat <<EOF
# Written by scripts/kafka.sh on each 'up'; edit the script, not this file.
process.roles=broker,controller
node.id=$id
# 127.0.0.1 rather than localhost, so that clients (librdkafka) do not try ::1 first.
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
EOF
    if [[ -z $voters && -n ${KAFKA_SASL_PORT:-} ]]; then
      # Auth tests: on the SASL port one user, alice (password alice-secret), who may do
      # nothing (no ACLs, and no ACL means deny); the PLAINTEXT and controller listeners'
      # ANONYMOUS principal is a super user, so that the broker and the tests' setup work,
      # and so are the TLS listeners' users.
      cat <<EOF
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$TLS_SCRAM_USER;User:CN=$TLS_CLIENT_CN
allow.everyone.if.no.acl.found=false
EOF
    fi
    if [[ -z $voters ]] && tls_wanted; then
      tls_properties "$dir/tls"
    fi
    if [[ -z $voters ]]; then
      cat <<EOF
controller.quorum.bootstrap.servers=$HOST:$controller_port

# One replica of everything: the internal topics default to 3 replicas (and transactions
# to 2 in-sync ones), with which groups and transactions never get a coordinator here.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
    else
      cat <<EOF
controller.quorum.voters=$voters

# Three replicas of everything, internal topics included, and two in sync for a write to
# succeed (producers with acks=all): any one node can die without losing an acknowledged
# record or stopping writes.
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
# A killed node leads its partitions until the controller fences it: see
# CLUSTER_BROKER_SESSION_MS in scripts/kafka.sh.
broker.session.timeout.ms=$CLUSTER_BROKER_SESSION_MS
broker.heartbeat.interval.ms=$CLUSTER_BROKER_HEARTBEAT_MS
EOF
    fi
    cat <<EOF

# Fast tests: no delay before the first rebalance, and fewer internal partitions to
# create (and elect leaders for) on the first group join and the first transaction.
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
# Let tests use short consumer session timeouts to detect a dead consumer quickly.
group.min.session.timeout.ms=1000
# The consumer group protocol (KIP-848) takes the session and heartbeat from the broker,
# never the client: by default the short session the classic protocol's fault tests ask for,
# so that a killed member's partitions move as soon under both protocols, with a heartbeat a
# second (heartbeats also carry each step of a rebalance). Kafka's defaults: 45 s and 5 s.
group.consumer.min.session.timeout.ms=1000
group.consumer.session.timeout.ms=$CONSUMER_SESSION_MS
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
auto.create.topics.enable=${KAFKA_AUTO_CREATE_TOPICS:-true}

# Never delete records by age: tests may write records with old timestamps, and the
# storage is thrown away on the next 'up' anyway.
log.retention.ms=-1
EOF
  } >"$dir/server.properties"
}

# --- TLS listeners (single node, for tests) ----------------------------------------------

readonly TLS_SCRAM_USER=ktransform
readonly TLS_SCRAM_PASSWORD=scram-secret
readonly TLS_CLIENT_CN=ktransform-client
readonly TLS_CLIENT_KEY_PASSWORD=client-key-secret
# The password of the broker's own keystores, which only the broker reads.
readonly TLS_STORE_PASSWORD=broker-store-secret

# name:security protocol:port variable of each TLS listener.
tls_listeners() {
  say SSL:SSL:KAFKA_SSL_PORT SASL_SSL:SASL_SSL:KAFKA_SASL_SSL_PORT MTLS:SSL:KAFKA_MTLS_PORT \
    EXPIRED:SSL:KAFKA_SSL_EXPIRED_PORT WRONG_HOST:SSL:KAFKA_SSL_WRONG_HOST_PORT
}

# True if a TLS listener is asked for.
tls_wanted() {
  local entry variable
  for entry in $(tls_listeners); do
    variable=${entry##*:}
    if [[ -n ${!variable:-} ]]; then return 0; fi
  done
  return 1
}

# The TLS part of server.properties, the material in dir $1. Every listener presents
# server.p12 unless it says otherwise; only MTLS asks for (and checks) client certificates.
tls_properties() {
  local tls=$1
  cat <<EOF
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/server.p12
ssl.keystore.password=$TLS_STORE_PASSWORD
ssl.key.password=$TLS_STORE_PASSWORD
listener.name.mtls.ssl.client.auth=required
listener.name.mtls.ssl.truststore.type=PEM
listener.name.mtls.ssl.truststore.location=$tls/ca.pem
listener.name.expired.ssl.keystore.location=$tls/expired.p12
listener.name.wrong_host.ssl.keystore.location=$tls/wrong-host.p12
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
}

# Certificates and keys for the TLS listeners and their clients, made afresh in dir $1: a CA,
# the broker's certificates it signs (a good one, one that expired yesterday, one for another
# host) and a client certificate it signs; an unrelated CA and a client certificate it signs.
# EC P-256 keys, made in milliseconds; nothing is downloaded.
make_tls_material() {
  local tls=$1
  require_command openssl "it makes the TLS listeners' certificates (apt-get install openssl)"
  require_command keytool "it makes the expired certificate (it comes with the JDK)"
  rm -rf "$tls"
  mkdir -p "$tls"
  (
    set -e
    cd "$tls"
    cat >ext.cnf <<EOF
[ca]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
[server]
subjectAltName=IP:$HOST,DNS:localhost
extendedKeyUsage=serverAuth
[wrong_host]
subjectAltName=DNS:wrong-host.example
extendedKeyUsage=serverAuth
[client]
extendedKeyUsage=clientAuth
EOF
    # request NAME SUBJECT: a key NAME.key and a signing request NAME.csr.
    request() {
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
        -subj "/CN=$2" -out "$1.csr" 2>/dev/null
    }
    # sign NAME CA EXTENSIONS: NAME.pem from NAME.csr, signed by CA.pem for 30 days.
    sign() {
      openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
        -days 30 -extfile ext.cnf -extensions "$3" -out "$1.pem" 2>/dev/null
    }
    local ca key
    for ca in ca other-ca; do
      request "$ca" "ktransform test $ca"
      openssl x509 -req -in "$ca.csr" -key "$ca.key" -days 30 -extfile ext.cnf \
        -extensions ca -out "$ca.pem" 2>/dev/null
    done
    request server localhost
    sign server ca server
    request wrong-host wrong-host.example
    sign wrong-host ca wrong_host
    request client "$TLS_CLIENT_CN"
    sign client ca client
    request other-client "$TLS_CLIENT_CN"
    sign other-client other-ca client
    # openssl 3.0's x509 cannot date a certificate in the past; keytool can: valid for a day
    # from two days ago, signed with the CA from a PKCS12 store.
    openssl pkcs12 -export -in ca.pem -inkey ca.key -name ca -out ca.p12 \
      -passout "pass:$TLS_STORE_PASSWORD"
    keytool -gencert -rfc -alias ca -keystore ca.p12 -storetype PKCS12 \
      -storepass "$TLS_STORE_PASSWORD" -infile server.csr -outfile expired.pem \
      -startdate -2d -validity 1 -ext "san=ip:$HOST,dns:localhost" 2>/dev/null
    cp server.key expired.key
    for key in server wrong-host expired; do
      openssl pkcs12 -export -in "$key.pem" -inkey "$key.key" -certfile ca.pem -name broker \
        -out "$key.p12" -passout "pass:$TLS_STORE_PASSWORD"
    done
    # The client's key encrypted, as ssl.key.password expects.
    openssl pkcs8 -topk8 -in client.key -out client.key.enc \
      -passout "pass:$TLS_CLIENT_KEY_PASSWORD"
    mv client.key.enc client.key
    rm -f ./*.csr ./*.srl ca.p12 ext.cnf
  ) || die "making the TLS certificates in $tls failed"
}

# Empty node dir $1's data and logs. Data is throw-away, and starting empty gives every
# run the same known state.
reset_node_dir() {
  local dir=$1
  rm -rf "$dir/data" "$dir/logs"
  mkdir -p "$dir/data" "$dir/logs"
}

# Format node dir $1's storage for cluster id $2; further arguments go to
# 'StorageTool format' (a lone controller needs --standalone). The broker refuses to
# start on unformatted storage.
format_storage() {
  local dir=$1 cluster_id=$2
  shift 2
  if ! kafka_tool "$dir" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/server.properties" "$@" >"$dir/logs/format.log" 2>&1; then
    cat "$dir/logs/format.log" >&2
    die "formatting $dir/data failed (output above)"
  fi
  say "$KAFKA_VERSION" >"$dir/kafka.version"
}

# The Kafka version node dir $1 was formatted with ('up' records it), or KAFKA_VERSION for a
# node formatted before versions were recorded.
node_version() {
  if [[ -f $1/kafka.version ]]; then
    cat "$1/kafka.version"
  else
    say "$KAFKA_VERSION"
  fi
}

# Start the broker of node dir $1 in the background, with the Kafka version its storage was
# formatted with, and record its pid.
start_node() {
  local dir=$1 libs
  libs=$(libs_dir_of "$(node_version "$dir")")
  # setsid puts the JVM in its own session: Ctrl-C in, or closing, the terminal that ran
  # 'up' must not stop the broker. This script runs without job control, so setsid execs
  # in place and $! is the JVM's pid. The JVM must not inherit the lock (fd 9).
  local jvm_opts
  read -r -a jvm_opts <<<"$KAFKA_JVM_OPTS"
  setsid java -Xms512m -Xmx512m "${jvm_opts[@]}" \
    -Xlog:gc*:file="$dir/logs/gc.log":time,tags:filecount=2,filesize=20M \
    -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$dir/logs" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$dir/logs/stdout.log" 2>&1 9>&- &
  echo $! >"$dir/kafka.pid"
  # The broker outlives this script: bash must not report its death as a job's.
  disown $!
}

# Print the end of node dir $1's logs: server.log, and stdout.log for what the JVM says
# before logging starts (bad options, missing classes, out of memory).
print_log_tail() {
  local dir=$1 file
  for file in "$dir/logs/server.log" "$dir/logs/stdout.log"; do
    if [[ -s $file ]]; then
      printf -- '--- last 40 lines of %s ---\n' "$file" >&2
      tail -n 40 "$file" >&2
    fi
  done
}

# Wait until the broker of node dir $1 (pid $2) serves clients on port $3. The broker
# binds its client port only once it is ready to serve; the controller port opens
# earlier and proves nothing. Give up at once if the JVM dies (bad config, port clash),
# and stop it if it is not ready in time, so no half-started broker is left behind.
wait_until_serving() {
  local dir=$1 pid=$2 port=$3
  local deadline=$((SECONDS + READY_TIMEOUT))
  until port_answers "$port"; do
    if ! is_node_process "$pid" "$dir"; then
      print_log_tail "$dir"
      die "the broker exited during startup (logs above)"
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail "$dir"
      stop_node "$dir"
      die "the broker did not serve on $HOST:$port within ${READY_TIMEOUT}s (logs above)"
    fi
    sleep 0.5
  done
}

# Stop the broker of node dir $1 (named $2 in messages, "kafka" by default). SIGTERM
# makes it shut down cleanly; SIGKILL only if that takes longer than STOP_TIMEOUT.
# Nothing to stop is not an error.
stop_node() {
  local dir=$1 name=${2:-kafka} pid
  pid=$(node_pid "$dir")
  if [[ -z $pid ]] || ! is_node_process "$pid" "$dir"; then
    rm -f "$dir/kafka.pid"
    say "$name is not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  await_stop "$dir" "$name" "$pid"
}

# Wait until broker $3 of node dir $1 (named $2), sent SIGTERM, is gone; SIGKILL it if that
# takes longer than STOP_TIMEOUT.
await_stop() {
  local dir=$1 name=$2 pid=$3
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while is_node_process "$pid" "$dir"; do
    if ((SECONDS >= deadline)); then
      say "$name (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
  rm -f "$dir/kafka.pid"
  say "$name stopped (pid $pid)"
}

# --- Nodes of a cluster, and node commands ----------------------------------------------
# Cluster mode is KAFKA_NODES=3; kill-node, stop-node and start-node work in both modes.

node_ids() { seq 1 "$NODES"; }

node_name() {
  if ((NODES == 1)); then say "kafka"; else say "node $1"; fi
}

# Node $1's client port, and its controller port.
client_port_of() {
  if ((NODES == 1)); then say "$CLIENT_PORT"; else say "${CLUSTER_PORTS[$1 - 1]}"; fi
}
controller_port_of() {
  if ((NODES == 1)); then say "$CONTROLLER_PORT"; else say $((CLUSTER_PORTS[$1 - 1] + 1)); fi
}

# The cluster's controller.quorum.voters: every node is a controller.
quorum_voters() {
  local n voters=()
  for n in $(node_ids); do
    voters+=("$n@$HOST:$(controller_port_of "$n")")
  done
  local IFS=,
  say "${voters[*]}"
}

# The client port in node dir $1's server.properties: a node restarts on the ports it was
# formatted with, whatever the environment says now.
configured_client_port() {
  sed -nE 's|^listeners=PLAINTEXT://[^:]+:([0-9]+),.*|\1|p' "$1/server.properties"
}

# True if node $1 has a live broker process.
node_running() {
  local dir pid
  dir=$(node_dir "$1")
  pid=$(node_pid "$dir")
  [[ -n $pid ]] && is_node_process "$pid" "$dir"
}

# Fail unless $1 names a node of this mode.
require_node_id() {
  if ! [[ ${1:-} =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > NODES)); then
    die "no node '${1:-}': the nodes are 1-$NODES (KAFKA_NODES=$NODES)"
  fi
}

cmd_cluster_up() {
  require_command java "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
  lock_state_dir
  local n dir pid port cluster_id running=0
  for n in $(node_ids); do
    if node_running "$n"; then running=$((running + 1)); fi
  done
  if ((running == 0)); then
    for n in $(node_ids); do
      require_port_free "$(client_port_of "$n")" KAFKA_CLUSTER_PORTS
      require_port_free "$(controller_port_of "$n")" KAFKA_CLUSTER_PORTS
    done
    fetch_jars
    for n in $(node_ids); do
      reset_node_dir "$(node_dir "$n")"
    done
    cluster_id=$(kafka_tool "$(node_dir 1)" kafka.tools.StorageTool random-uuid)
    for n in $(node_ids); do
      dir=$(node_dir "$n")
      write_properties "$dir" "$n" "$(client_port_of "$n")" "$(controller_port_of "$n")" \
        "$(quorum_voters)"
      # Static voters: every node formatted with the one cluster id, none --standalone.
      format_storage "$dir" "$cluster_id"
    done
  elif ((running < NODES)); then
    say "$running of $NODES nodes running; starting the others on their data"
  fi
  # Every node starts before any is waited for: a broker serves only once a majority of
  # the controllers has elected a leader.
  for n in $(node_ids); do
    dir=$(node_dir "$n")
    if ! node_running "$n"; then
      [[ -f $dir/data/meta.properties ]] ||
        die "node $n has no formatted storage in $dir; stop the cluster ('down') and run 'up' again"
      require_port_free "$(configured_client_port "$dir")" KAFKA_CLUSTER_PORTS
      start_node "$dir"
    fi
  done
  for n in $(node_ids); do
    dir=$(node_dir "$n")
    pid=$(node_pid "$dir")
    port=$(configured_client_port "$dir")
    wait_until_serving "$dir" "$pid" "$port"
    say "node $n up on $HOST:$port (pid $pid, logs: $dir/logs/server.log)"
  done
}

# SIGTERM to every node first, then wait for each: a node shutting down waits for the
# controller quorum, which the others stopping one after another would break first.
cmd_cluster_down() {
  lock_state_dir
  local n dir pid pids=()
  for n in $(node_ids); do
    dir=$(node_dir "$n")
    pid=$(node_pid "$dir")
    if [[ -n $pid ]] && is_node_process "$pid" "$dir"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids[n]=$pid
    else
      rm -f "$dir/kafka.pid"
      say "node $n is not running"
    fi
  done
  for n in "${!pids[@]}"; do
    await_stop "$(node_dir "$n")" "node $n" "${pids[n]}"
  done
}

cmd_cluster_status() {
  local n dir pid port serving=0
  for n in $(node_ids); do
    dir=$(node_dir "$n")
    pid=$(node_pid "$dir")
    port=$(client_port_of "$n")
    if [[ -z $pid ]] || ! is_node_process "$pid" "$dir"; then
      say "node $n is not running"
    elif ! port_answers "$port"; then
      say "node $n (pid $pid) is running but not serving on $HOST:$port"
    else
      say "node $n running on $HOST:$port (pid $pid)"
      serving=$((serving + 1))
    fi
  done
  ((serving == NODES))
}

cmd_cluster_logs() {
  local n log logs=()
  for n in $(node_ids); do
    log=$(node_dir "$n")/logs/server.log
    if [[ -f $log ]]; then logs+=("$log"); fi
  done
  ((${#logs[@]})) ||
    die "no broker logs in $STATE_DIR yet; start the cluster with: KAFKA_NODES=$NODES scripts/kafka.sh up"
  case ${1:-} in
    "") tail -n 50 "${logs[@]}" ;;
    -f | --follow) exec tail -n 50 -F "${logs[@]}" ;;
    *) die "usage: scripts/kafka.sh logs [-f]" ;;
  esac
}

# SIGKILL node $1, as a crash would; its data stays for start-node.
cmd_kill_node() {
  require_node_id "${1:-}"
  lock_state_dir
  local n=$1 dir pid
  dir=$(node_dir "$n")
  pid=$(node_pid "$dir")
  if [[ -z $pid ]] || ! is_node_process "$pid" "$dir"; then
    die "$(node_name "$n") is not running"
  fi
  kill -KILL "$pid"
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while is_node_process "$pid" "$dir"; do
    ((SECONDS < deadline)) || die "$(node_name "$n") (pid $pid) still alive ${STOP_TIMEOUT}s after SIGKILL"
    sleep 0.1
  done
  rm -f "$dir/kafka.pid"
  say "$(node_name "$n") killed (pid $pid); its data is kept"
}

cmd_stop_node() {
  require_node_id "${1:-}"
  lock_state_dir
  stop_node "$(node_dir "$1")" "$(node_name "$1")"
}

# Start node $1 again on the storage it has (unlike 'up', which formats fresh storage
# when nothing runs), and wait until it serves.
cmd_start_node() {
  require_node_id "${1:-}"
  require_command java "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
  lock_state_dir
  local n=$1 dir pid port
  dir=$(node_dir "$n")
  [[ -f $dir/server.properties && -f $dir/data/meta.properties ]] ||
    die "$(node_name "$n") has no formatted storage in $dir; start with: scripts/kafka.sh up"
  port=$(configured_client_port "$dir")
  if node_running "$n"; then
    pid=$(node_pid "$dir")
    port_answers "$port" || wait_until_serving "$dir" "$pid" "$port"
    say "$(node_name "$n") already running on $HOST:$port (pid $pid)"
    return 0
  fi
  require_port_free "$port" KAFKA_PORT
  fetch_jars "$(node_version "$dir")"
  start_node "$dir"
  pid=$(node_pid "$dir")
  wait_until_serving "$dir" "$pid" "$port"
  say "$(node_name "$n") up on $HOST:$port (pid $pid, logs: $dir/logs/server.log)"
}

# --- Commands -------------------------------------------------------------------------

cmd_up() {
  require_command java "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
  lock_state_dir
  local dir pid
  dir=$(node_dir 1)
  pid=$(node_pid "$dir")
  if [[ -n $pid ]] && is_node_process "$pid" "$dir"; then
    if ! port_answers "$CLIENT_PORT"; then
      # An earlier 'up' started it but was interrupted (Ctrl-C) before it served; the
      # broker survives that, so finish that 'up's job.
      say "kafka (pid $pid) is starting; waiting until it serves"
      wait_until_serving "$dir" "$pid" "$CLIENT_PORT"
    fi
    say "kafka $(node_version "$dir") already running on $HOST:$CLIENT_PORT (pid $pid, logs: $dir/logs/server.log)"
    if [[ $(node_version "$dir") != "$KAFKA_VERSION" ]]; then
      say "note: not the Kafka $KAFKA_VERSION asked for; 'down', then 'up', to change it"
    fi
    return 0
  fi
  require_port_free "$CLIENT_PORT" KAFKA_PORT
  require_port_free "$CONTROLLER_PORT" KAFKA_CONTROLLER_PORT
  fetch_jars

  reset_node_dir "$dir"
  local entry variable scram=()
  for entry in ::KAFKA_SASL_PORT ::KAFKA_PROXIED_PORT $(tls_listeners); do
    variable=${entry##*:}
    if [[ -n ${!variable:-} ]]; then
      require_port_free "${!variable}" "$variable"
    fi
  done
  if tls_wanted; then
    make_tls_material "$dir/tls"
    # KRaft keeps SCRAM credentials in the metadata log: the user is added at format time.
    scram=(--add-scram "SCRAM-SHA-512=[name=$TLS_SCRAM_USER,password=$TLS_SCRAM_PASSWORD]")
  fi
  write_properties "$dir" 1 "$CLIENT_PORT" "$CONTROLLER_PORT"
  local cluster_id
  cluster_id=$(kafka_tool "$dir" kafka.tools.StorageTool random-uuid)
  format_storage "$dir" "$cluster_id" --standalone "${scram[@]}"
  start_node "$dir"
  pid=$(node_pid "$dir")
  wait_until_serving "$dir" "$pid" "$CLIENT_PORT"
  say "kafka $KAFKA_VERSION up on $HOST:$CLIENT_PORT (pid $pid, logs: $dir/logs/server.log)"
}

cmd_status() {
  local dir pid
  dir=$(node_dir 1)
  pid=$(node_pid "$dir")
  if [[ -z $pid ]] || ! is_node_process "$pid" "$dir"; then
    say "kafka is not running"
    return 1
  fi
  if ! port_answers "$CLIENT_PORT"; then
    say "kafka (pid $pid) is running but not serving on $HOST:$CLIENT_PORT (starting, or stuck)"
    return 1
  fi
  say "kafka running on $HOST:$CLIENT_PORT (pid $pid, logs: $dir/logs/server.log)"
}

cmd_logs() {
  local log
  log=$(node_dir 1)/logs/server.log
  [[ -f $log ]] || die "no broker log at $log yet; start the broker with: scripts/kafka.sh up"
  case ${1:-} in
    "") tail -n 50 "$log" ;;
    # -F, not -f: follow across the log being recreated by the next 'up'.
    -f | --follow) exec tail -n 50 -F "$log" ;;
    *) die "usage: scripts/kafka.sh logs [-f]" ;;
  esac
}

main() {
  local command=${1:-}
  if (($#)); then
    shift
  fi
  case $NODES in
    1) ;;
    3)
      if ((${#CLUSTER_PORTS[@]} != 3)) || ! [[ "${CLUSTER_PORTS[*]}" =~ ^[0-9\ ]+$ ]]; then
        die "KAFKA_CLUSTER_PORTS must be three client ports, not '${CLUSTER_PORTS[*]}'"
      fi
      case $command in
        up) cmd_cluster_up; return ;;
        down) cmd_cluster_down; return ;;
        status) cmd_cluster_status; return ;;
        logs) cmd_cluster_logs "$@"; return ;;
      esac
      ;;
    *) die "KAFKA_NODES must be 1 or 3, not '$NODES'" ;;
  esac
  case $command in
    up) cmd_up ;;
    down)
      lock_state_dir
      stop_node "$(node_dir 1)"
      ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    kill-node) cmd_kill_node "$@" ;;
    stop-node) cmd_stop_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    fetch)
      fetch_jars
      say "Kafka $KAFKA_VERSION jars in $LIBS_DIR"
      ;;
    version) say "$KAFKA_VERSION" ;;
    libs)
      fetch_jars >&2
      say "$LIBS_DIR"
      ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
