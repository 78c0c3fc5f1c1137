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
million records, peak RSS). `--partitions 12,128,512` repeats the whole comparison on a backlog
of each partition count (a sweep: peak RSS per cell); `--name NAME` also writes the tables, the
machine and the command to bench/results/NAME.md and .json.
"""

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import say  # noqa: E402


def drain(args, kafka, contenders, generate, run_id, scratch, partitions):
    """Every contender drains one backlog of `partitions` partitions, `--rounds` times
    interleaved; returns each contender's runs."""
    results = {name: [] for name, _ in contenders}
    source = f"{run_id}-p{partitions}-src"
    say(f"source {source}: {args.records} records into {partitions} partitions")
    log = scratch / "logs" / f"generate-p{partitions}.log"
    padding = ["--record-bytes", str(args.record_bytes)] if args.record_bytes else []
    gen = harness.measure([str(generate), "--brokers", args.brokers, "--topic", source,
                           "--partitions", str(partitions), "--count", str(args.records),
                           *padding],
                          log, timeout=1200)
    kafka.created.append(source)
    if gen.rc != 0:
        sys.exit(f"the generator failed:\n{harness.tail(log)}")
    for rnd in range(args.rounds):
        for name, template in contenders:
            dest = f"{run_id}-p{partitions}-{name}-{rnd}"
            kafka.create(dest, partitions)
            cmd = shlex.split(template.format(brokers=args.brokers, source=source,
                                              dest=dest, group=dest))
            log = scratch / "logs" / f"p{partitions}-{name}-{rnd}.log"
            m = harness.measure(cmd, log, timeout=1200)
            # raw copy's output has no hash: count only.
            check = None if args.check == "none" or name.startswith("raw") else args.check
            out = harness.scan(args.brokers, dest, check=check)
            ok = m.rc == 0 and out.records == args.records and not out.hash_bad
            rate = out.records / m.wall_s if m.wall_s else 0
            cpu = m.cpu_s / max(out.records, 1) * 1e6
            bcpu = (m.broker_cpu_s / max(out.records, 1) * 1e6
                    if m.broker_cpu_s is not None else float("nan"))
            results[name].append((rate, cpu, m.max_rss_mb, ok, bcpu))
            say(f"P={partitions} round {rnd + 1} {name}: {'ok' if ok else 'FAILED'} rc={m.rc} "
                f"{out.records} records, {rate:,.0f}/s, {cpu:.2f} CPU-s/M (broker {bcpu:.2f}), "
                f"peak RSS {m.max_rss_mb:.0f} MB, load {m.loadavg_before:.1f}")
            if not ok:
                say(harness.tail(log))
    return results


def table(contenders, results):
    """Medians per contender: records/s, ratio to the first, CPU-s/M, broker CPU-s/M, and the
    peak RSS (the largest of its runs, with the median beside it)."""
    base = statistics.median(r[0] for r in results[contenders[0][0]])
    rows = []
    for name, _ in contenders:
        runs = results[name]
        rate = statistics.median(r[0] for r in runs)
        rows.append({
            "contender": name,
            "records_per_s": rate,
            "ratio": rate / base if base else float("nan"),
            "cpu_s_per_m": statistics.median(r[1] for r in runs),
            "broker_cpu_s_per_m": statistics.median(r[4] for r in runs),
            "peak_rss_mb": max(r[2] for r in runs),
            "median_peak_rss_mb": statistics.median(r[2] for r in runs),
            "ok": all(r[3] for r in runs),
            "runs": [{"records_per_s": r[0], "cpu_s_per_m": r[1], "peak_rss_mb": r[2],
                      "ok": r[3]} for r in runs],
        })
    return rows


def render(rows, markdown):
    if markdown:
        lines = ["| contender | records/s | ratio | CPU-s/M | broker CPU-s/M | peak RSS MB (max) | "
                 "peak RSS MB (median) | status |", "|---|--:|--:|--:|--:|--:|--:|---|"]
        for r in rows:
            lines.append(f"| {r['contender']} | {r['records_per_s']:,.0f} | {r['ratio']:.2f} | "
                         f"{r['cpu_s_per_m']:.2f} | {r['broker_cpu_s_per_m']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['median_peak_rss_mb']:.0f} | "
                         f"{'ok' if r['ok'] else 'FAILED'} |")
        return "\n".join(lines)
    lines = [f"{'contender':<16} {'records/s':>10} {'ratio':>6} {'CPU-s/M':>8} {'broker':>7} "
             f"{'RSS MB':>7}"]
    for r in rows:
        lines.append(f"{r['contender']:<16} {r['records_per_s']:>10,.0f} {r['ratio']:>6.2f} "
                     f"{r['cpu_s_per_m']:>8.2f} {r['broker_cpu_s_per_m']:>7.2f} "
                     f"{r['peak_rss_mb']:>7.0f}" + ("" if r["ok"] else "  (a run FAILED)"))
    return "\n".join(lines)


def write(args, machine, cells, seconds):
    out = harness.RESULTS / f"{args.name}.md"
    command = "python3 bench/ab.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    parts = [f"# A/B {args.name}", "",
             f"Generated by `bench/ab.py` in {seconds / 60:.1f} min. Command:", "",
             "```sh", command, "```", "",
             "## Machine", "", harness.describe_machine(machine), "",
             f"Each cell: a backlog of {args.records:,} seed-format records"
             + (f" padded to {args.record_bytes:,} bytes" if args.record_bytes else "")
             + " in P partitions; the "
             f"contenders drain it {args.rounds} times, interleaved, each into a fresh topic and "
             "group; every output is read back and counted (and its hashes checked). records/s "
             "from spawn to exit, medians; peak RSS is the process's maximum resident set "
             "(wait4), the largest and the median of its runs.", ""]
    for partitions, rows in cells:
        parts += [f"## {partitions} partitions", "", render(rows, markdown=True), ""]
    out.write_text("\n".join(parts))
    out.with_suffix(".json").write_text(json.dumps(
        {"command": command, "machine": machine, "records": args.records,
         "rounds": args.rounds,
         "cells": [{"partitions": p, "contenders": rows} for p, rows in cells]}, indent=2))
    say(f"wrote {out.relative_to(harness.ROOT)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--partitions", default="12",
                   help="partition count of the backlog, or a comma list for a sweep (12,128,512)")
    p.add_argument("--name", help="write bench/results/NAME.md and .json")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--record-bytes", type=int,
                   help="pad each source object to this many bytes (examples/generate "
                        "--record-bytes; default: the seed format)")
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
    started = time.time()
    machine = harness.machine()
    cells = []
    try:
        for partitions in [int(x) for x in args.partitions.split(",")]:
            results = drain(args, kafka, contenders, generate, run_id, scratch, partitions)
            cells.append((partitions, table(contenders, results)))
            print(f"\n{partitions} partitions")
            print(render(cells[-1][1], markdown=False))
        if args.name:
            write(args, machine, cells, time.time() - started)
    finally:
        kafka.delete_created()


if __name__ == "__main__":
    main()
