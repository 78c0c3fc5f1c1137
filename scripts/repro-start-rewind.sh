#!/usr/bin/env bash
#
# Reproduces librdkafka 2.12.1 moving a partition under its reader on a group's first start
# (src/consumer/start.rs says why): a new group on a 128-partition topic, the default 16 fetch
# turns, a stream of 40,000 records a second from the start. Each run prints how many times the
# instance logged "the partition was rewound under its worker". Before the start offsets were
# looked up ahead of the assignment, 7 first starts of 14 logged it; with them, 0 of 9.
#
#   scripts/repro-start-rewind.sh [RUNS] [KTRANSFORM-BINARY] [-- extra ktransform flags]
#
# KTRANSFORM_BROKERS (default 127.0.0.1:9092) names the broker (`make up` starts one). Add
# `-- -X consumer.debug=topic,fetch` to see librdkafka's side ("timed offset query ... in state
# active" is the stale lookup firing); the logs stay in a scratch directory, whose path is
# printed.

set -euo pipefail

runs=${1:-4}
bin=${2:-target/release/ktransform}
shift $(( $# < 2 ? $# : 2 ))
[[ ${1:-} == -- ]] && shift
brokers=${KTRANSFORM_BROKERS:-127.0.0.1:9092}
generate=$(dirname "$bin")/examples/generate
[[ -x $generate ]] || generate=target/release/examples/generate
scratch=$(mktemp -d)
echo "logs in $scratch"

for run in $(seq 1 "$runs"); do
  tag="rewind-$(date +%s)-$run"
  "$generate" --brokers "$brokers" --topic "$tag-src" --partitions 128 --count 1 >/dev/null 2>&1
  "$bin" run --brokers "$brokers" --source "$tag-src" --destination "$tag-dst" --group "$tag" \
    --metrics-addr none "$@" >"$scratch/$tag.log" 2>&1 &
  instance=$!
  "$generate" --brokers "$brokers" --topic "$tag-src" --rate 40000 --count 200000 >/dev/null 2>&1
  sleep 2
  kill -TERM "$instance"
  wait "$instance" || true
  echo "run $run: rewound under its worker $(grep -c 'rewound under its worker' "$scratch/$tag.log" || true) times"
done
