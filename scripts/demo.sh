#!/usr/bin/env bash
#
# The whole job on this machine, for a fixed short time: a Kafka broker, the event generator at
# a fixed rate into a 6-partition topic, ktransform, and the group's lag with its verdict every
# few seconds. Then everything started here is stopped cleanly (SIGTERM: drain, commit, exit).
#
# The group's live view (`ktransform lag --serve`) is served on 127.0.0.1:DEMO_VIEW_PORT while the
# demo runs.
#
# Env: DEMO_SECONDS (30), DEMO_RATE records/s (20000), DEMO_PARTITIONS (6), DEMO_INSTANCES (1),
# DEMO_VIEW_PORT (8080).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly SECONDS_TO_RUN=${DEMO_SECONDS:-30}
readonly RATE=${DEMO_RATE:-20000}
readonly PARTITIONS=${DEMO_PARTITIONS:-6}
readonly INSTANCES=${DEMO_INSTANCES:-1}
readonly VIEW_ADDR=127.0.0.1:${DEMO_VIEW_PORT:-8080}
# The broker scripts/kafka.sh starts (KAFKA_PORT moves it, as it moves the script's).
readonly BROKERS=127.0.0.1:${KAFKA_PORT:-9092}
readonly RUN_ID=$(date +%s)
readonly SOURCE=demo_names_$RUN_ID
readonly DESTINATION=${SOURCE}_transformed
readonly GROUP=demo_$RUN_ID

pids=()
broker_was_up=0
bash scripts/kafka.sh status >/dev/null 2>&1 && broker_was_up=1

cleanup() {
  local code=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$broker_was_up" = 0 ] && [ -z "${DEMO_KEEP_BROKER:-}" ]; then
    bash scripts/kafka.sh down
  fi
  exit "$code"
}
trap cleanup EXIT INT TERM

echo "== building (release)"
cargo build --release --quiet --bin ktransform --example generate
bin=target/release/ktransform
gen=target/release/examples/generate

echo "== broker"
bash scripts/kafka.sh up

echo "== generator: $RATE records/s into $SOURCE ($PARTITIONS partitions)"
"$gen" --brokers "$BROKERS" --topic "$SOURCE" --partitions "$PARTITIONS" --rate "$RATE" 2> >(sed -u 's/^/[generator] /' >&2) &
pids+=($!)

echo "== ktransform x$INSTANCES: $SOURCE -> $DESTINATION (group $GROUP)"
for i in $(seq 1 "$INSTANCES"); do
  RUST_LOG=${RUST_LOG:-info} "$bin" run --brokers "$BROKERS" --source "$SOURCE" --destination "$DESTINATION" --group "$GROUP" \
    --progress-interval 5s --metrics-addr "127.0.0.1:$((9463 + i))" \
    2> >(sed -u "s/^/[ktransform-$i] /" >&2) &
  pids+=($!)
done

# The generator creates the topic; `lag` refuses a topic that does not exist yet.
for _ in $(seq 1 30); do
  "$bin" lag --brokers "$BROKERS" --group "$GROUP" --topic "$SOURCE" --interval 100ms >/dev/null 2>&1 && break
  sleep 1
done

# KEDA's count next to ktransform's with deploy/kubernetes's lagThreshold.
"$bin" lag --brokers "$BROKERS" --group "$GROUP" --topic "$SOURCE" --serve "$VIEW_ADDR" --interval 2s --lag-threshold 300000 \
  2> >(sed -u 's/^/[live view] /' >&2) &
pids+=($!)
echo "== live view of group $GROUP: http://$VIEW_ADDR/ (its data: http://$VIEW_ADDR/lag.json), until the demo stops"

echo "== lag of group $GROUP, every 5 s for ${SECONDS_TO_RUN}s"
"$bin" lag --brokers "$BROKERS" --group "$GROUP" --topic "$SOURCE" --watch --interval 5s --duration "${SECONDS_TO_RUN}s" \
  | sed -u 's/^/[lag] /'

echo "== stopping (SIGTERM: the transformer drains, commits and exits)"
