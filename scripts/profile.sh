#!/usr/bin/env bash
#
# Where ktransform's time goes: a backlog of PROFILE_RECORDS (1,000,000) seed-format records on
# PROFILE_PARTITIONS (12) partitions, drained once by ktransform under `perf record` (software
# cpu-clock, so it works without hardware counters), then the hottest symbols with their callers'
# share. Needs the local broker (`make up`) and perf (Debian's linux-perf).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly RECORDS=${PROFILE_RECORDS:-1000000}
readonly PARTITIONS=${PROFILE_PARTITIONS:-12}
readonly TOPIC=profile_$(date +%s)
readonly OUT=${PROFILE_OUT:-target/profile.data}

command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
cargo build --release --quiet --bin ktransform --example generate
target/release/examples/generate --topic "$TOPIC" --partitions "$PARTITIONS" --count "$RECORDS" 2>/dev/null
/usr/bin/time -f "ktransform: wall %e s, user %U s, sys %S s, peak RSS %M KB" \
  perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$OUT" \
  target/release/ktransform run --source "$TOPIC" --destination "${TOPIC}_out" --group "$TOPIC" \
  --until-end --metrics-addr none 2>&1 | grep -E "stopped|ktransform:"
perf report -i "$OUT" --children --sort symbol --stdio 2>/dev/null \
  | grep -E "^ +[0-9]" | grep -vE "tokio::|std::|core::|catch_unwind|clone3|start_thread|\(inlined\)" \
  | head -40 | cut -c1-150
