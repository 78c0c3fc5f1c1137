#!/usr/bin/env python3
"""A/B drains: several builds or settings side by side on one backlog, interleaved.

The tool for measuring one optimisation before keeping it (`make bench` is the full report).
Each contender is a command template; {brokers}, {source}, {dest} and {group} are filled in,
and every run gets a fresh destination topic and consumer group. Rounds interleave the
contenders (A, B, C, A, B, C, ...) so that the machine's noise falls on all of them alike.
Every run's output is read back and its count and hashes checked (the count only for a
contender whose name starts with `raw`).

    python3 bench/ab.py --records 1000000 --rounds 3 \\
        --contender 'raw=target/release/examples/raw_copy --brokers {brokers} --source {source} --destination {dest} --group {group}' \\
        --contender 'new=target/release/ktransform run --brokers {brokers} --source {source} --destination {dest} --group {group} --until-end --metrics-addr none'

Prints one line per run and a median table (records/s, ratio to the first contender, CPU s per
million records, peak RSS).
"""

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import say  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--contender", action="append", required=True, metavar="NAME=COMMAND")
    p.add_argument("--check", default="splice", help="output check for harness.scan "
                   "(splice: every record must carry the right hash; none: count only)")
    args = p.parse_args()
    harness.bootstrap()
    contenders = []
    for c in args.contender:
        name, _, template = c.partition("=")
        if not template:
            sys.exit(f"--contender {c!r}: expected NAME=COMMAND")
        contenders.append((name, template))

    harness.ensure_broker(args.brokers)
    root = harness.ROOT
    generate = root / "target" / "release" / "examples" / "generate"
    if not generate.exists():
        sys.exit("build first: cargo build --release --examples")
    kafka = harness.Kafka(args.brokers)
    run_id = f"ab-{int(time.time())}"
    scratch = harness.run_dir(run_id)
    results = {name: [] for name, _ in contenders}
    try:
        source = f"{run_id}-src"
        say(f"source {source}: {args.records} records into {args.partitions} partitions")
        gen = harness.measure([str(generate), "--brokers", args.brokers, "--topic", source,
                               "--partitions", str(args.partitions), "--count", str(args.records)],
                              scratch / "logs" / "generate.log", timeout=1200)
        kafka.created.append(source)
        if gen.rc != 0:
            sys.exit(f"the generator failed:\n{harness.tail(scratch / 'logs' / 'generate.log')}")
        for rnd in range(args.rounds):
            for name, template in contenders:
                dest = f"{run_id}-{name}-{rnd}"
                kafka.create(dest, args.partitions)
                cmd = shlex.split(template.format(brokers=args.brokers, source=source,
                                                  dest=dest, group=dest))
                m = harness.measure(cmd, scratch / "logs" / f"{name}-{rnd}.log", timeout=1200)
                # raw copy's output has no hash: count only.
                check = None if args.check == "none" or name.startswith("raw") else args.check
                out = harness.scan(args.brokers, dest, check=check)
                ok = m.rc == 0 and out.records == args.records and not out.hash_bad
                rate = out.records / m.wall_s if m.wall_s else 0
                cpu = m.cpu_s / max(out.records, 1) * 1e6
                bcpu = (m.broker_cpu_s / max(out.records, 1) * 1e6
                        if m.broker_cpu_s is not None else float("nan"))
                results[name].append((rate, cpu, m.max_rss_mb, ok, bcpu))
                say(f"round {rnd + 1} {name}: {'ok' if ok else 'FAILED'} rc={m.rc} "
                    f"{out.records} records, {rate:,.0f}/s, {cpu:.2f} CPU-s/M (broker {bcpu:.2f}), "
                    f"peak RSS {m.max_rss_mb:.0f} MB, load {m.loadavg_before:.1f}")
                if not ok:
                    say(harness.tail(scratch / "logs" / f"{name}-{rnd}.log"))
        base = statistics.median(r[0] for r in results[contenders[0][0]])
        print(f"\n{'contender':<16} {'records/s':>10} {'ratio':>6} {'CPU-s/M':>8} {'broker':>7} {'RSS MB':>7}")
        for name, _ in contenders:
            runs = results[name]
            rate = statistics.median(r[0] for r in runs)
            print(f"{name:<16} {rate:>10,.0f} {rate / base:>6.2f} "
                  f"{statistics.median(r[1] for r in runs):>8.2f} "
                  f"{statistics.median(r[4] for r in runs):>7.2f} "
                  f"{max(r[2] for r in runs):>7.0f}"
                  + ("" if all(r[3] for r in runs) else "  (a run FAILED)"))
    finally:
        kafka.delete_created()


if __name__ == "__main__":
    main()
