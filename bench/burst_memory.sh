#!/usr/bin/env bash
#
# Peak RSS of one instance when a live stream over many partitions turns into a backlog in all
# of them at once: a stream of 40,000 records a second from the start, and after 8 s 3,000,000
# records as fast as the generator writes them. Prints the peak RSS before the burst and at the
# end (VmHWM), once the group has caught up (its lag on /metrics back to 0).
#
#   bench/burst_memory.sh PARTITIONS [KTRANSFORM-BINARY] [extra ktransform flags...]
#
# KTRANSFORM_BROKERS (default 127.0.0.1:9092) names the broker; port 19899 serves /metrics.

set -euo pipefail

partitions=$1
bin=${2:-target/release/ktransform}
shift $(( $# < 2 ? $# : 2 ))
brokers=${KTRANSFORM_BROKERS:-127.0.0.1:9092}
generate=target/release/examples/generate
tag="burst-$(date +%s)-p$partitions"
metrics=127.0.0.1:19899

"$generate" --brokers "$brokers" --topic "$tag-src" --partitions "$partitions" --count 1 >/dev/null 2>&1
"$bin" run --brokers "$brokers" --source "$tag-src" --destination "$tag-dst" --group "$tag" \
  --metrics-addr "$metrics" "$@" >"/tmp/$tag.log" 2>&1 &
instance=$!
"$generate" --brokers "$brokers" --topic "$tag-src" --rate 40000 --count 1200000 >/dev/null 2>&1 &
stream=$!
sleep 8
before=$(awk '/VmHWM/ {print $2}' "/proc/$instance/status")
"$generate" --brokers "$brokers" --topic "$tag-src" --count 3000000 >/dev/null 2>&1
wait "$stream"
for _ in $(seq 1 90); do
  sleep 1
  lag=$(curl -s "$metrics/metrics" | awk '/^ktransform_consumer_lag_records/ {s += $NF} END {print s + 0}')
  [[ $lag == 0 ]] && break
done
peak=$(awk '/VmHWM/ {print $2}' "/proc/$instance/status")
kill -TERM "$instance"
wait "$instance" || true
echo "$partitions partitions: peak RSS $((before / 1024)) MB before the burst, $((peak / 1024)) MB in all (log: /tmp/$tag.log)"
