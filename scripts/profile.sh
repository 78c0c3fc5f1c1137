#!/usr/bin/env bash
#
# Where ktransform's time goes, under `perf record` (software cpu-clock, so it works without
# hardware counters). Needs the local broker (`make up`) and perf (Debian's linux-perf).
#
# Drain (default): a backlog of PROFILE_RECORDS (1,000,000) seed-format records on
# PROFILE_PARTITIONS (12) partitions, drained once with --until-end.
# Paced (PROFILE_RATE=R): ktransform follows a fresh topic while the generator writes R records/s
# for PROFILE_SECONDS (12), as in the latency benchmark; then SIGINT.
# PROFILE_TARGET=raw profiles examples/raw_copy instead, with the latency run's consumer settings.
#
# Prints the hottest symbols (self time), then the samples grouped by what they are doing
# (scripts/perf_groups.py).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly RECORDS=${PROFILE_RECORDS:-1000000}
readonly PARTITIONS=${PROFILE_PARTITIONS:-12}
readonly RATE=${PROFILE_RATE:-}
readonly SECONDS_PACED=${PROFILE_SECONDS:-12}
readonly TARGET=${PROFILE_TARGET:-ktransform}
readonly TOPIC=profile_$(date +%s)
readonly OUT=${PROFILE_OUT:-target/profile.data}
readonly PERF=(perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$OUT")

command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
cargo build --release --quiet --bin ktransform --example generate --example raw_copy
gen=target/release/examples/generate
# Both topics exist before the run: with a known destination partition count, ktransform sends a
# keyless record to its input's partition number, as in the benchmarks.
if [[ -z $RATE ]]; then
  "$gen" --topic "$TOPIC" --partitions "$PARTITIONS" --count "$RECORDS" 2>/dev/null
  count=$RECORDS
else
  "$gen" --topic "$TOPIC" --partitions "$PARTITIONS" --count 0 2>/dev/null
  count=$(awk -v r="$RATE" -v s="$SECONDS_PACED" 'BEGIN { printf "%d", r * s }')
fi
"$gen" --topic "${TOPIC}_out" --partitions "$PARTITIONS" --count 0 2>/dev/null

if [[ $TARGET == raw ]]; then
  cmd=(target/release/examples/raw_copy --source "$TOPIC" --destination "${TOPIC}_out"
    --group "$TOPIC" --count "$count")
  for s in fetch.wait.max.ms=5 fetch.max.bytes=4194304 max.partition.fetch.bytes=262144 \
    queued.min.messages=2500 queued.max.messages.kbytes=4096; do
    cmd+=(-X "consumer.$s")
  done
else
  cmd=(target/release/ktransform run --source "$TOPIC" --destination "${TOPIC}_out"
    --group "$TOPIC" --metrics-addr none)
  [[ -z $RATE ]] && cmd+=(--until-end)
fi

if [[ -z $RATE ]]; then
  /usr/bin/time -f "$TARGET: wall %e s, user %U s, sys %S s, peak RSS %M KB" \
    "${PERF[@]}" "${cmd[@]}" 2>&1 | grep -E "stopped|copied|$TARGET:"
else
  "${PERF[@]}" "${cmd[@]}" >"$OUT.log" 2>&1 &
  perf_pid=$!
  sleep 4 # joined the group and assigned (the raw copy waits for its count)
  "$gen" --topic "$TOPIC" --count "$count" --rate "$RATE" 2>&1 | grep "done:" || true
  sleep 2
  [[ $TARGET == raw ]] || pkill -INT -f "ktransform run --source $TOPIC " || true
  wait "$perf_pid" || true
fi

echo "hottest symbols, self time:"
perf report -i "$OUT" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E "^ +[0-9]" | head -25 | cut -c1-110 || true
perf script -i "$OUT" 2>/dev/null | python3 scripts/perf_groups.py
