#!/usr/bin/env python3
"""`make scale-test`: how ktransform's drain rate changes with partitions and instances.

For each partition count P (default 1 2 4 8 16 32) a source topic gets a backlog (default
2,000,000 seed-format records); for each instance count N (default 1 2 3) N `ktransform run
--until-end` processes in one fresh group drain it into a fresh destination topic. Every process
must exit 0, and the destination must hold exactly the backlog, each record with a correct hash.

Then one configuration (default P=8, N=2) runs against a live producer at a fixed rate, and
`ktransform lag --interval 5s` says whether the group keeps up.

Writes bench/results/<date>-scale.md, .json and <date>-scale-*.png.

    python3 bench/scale.py [--records 1000000] [--partitions 1,2,4,8,16,32] [--instances 1,2,3]
"""

import argparse
import datetime
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import ROOT, say  # noqa: E402


def ints(text):
    return [int(x) for x in text.split(",") if x]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--records", type=int, help="backlog per cell (default 2,000,000; --quick 300,000)")
    p.add_argument("--partitions", type=ints, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--instances", type=ints, default=[1, 2, 3])
    p.add_argument("--lag-partitions", type=int, default=8)
    p.add_argument("--lag-instances", type=int, default=2)
    p.add_argument("--lag-rate", type=float,
                   help="records/s of the keep-up check (default: half of that cell's measured "
                        "drain rate)")
    p.add_argument("--lag-seconds", type=float, help="length of the keep-up check (default 30)")
    p.add_argument("--stop", choices=["until-end", "lag"], default="until-end",
                   help="until-end (default): each instance runs with --until-end and must exit "
                        "0 by itself. lag: the instances run without it; the drain ends when the "
                        "destination holds the whole backlog, then they get SIGTERM (for when "
                        "--until-end cannot be trusted with several instances)")
    p.add_argument("--no-lag", action="store_true")
    p.add_argument("--quick", action="store_true", help="300k records per cell; <date>-quick-scale.*")
    p.add_argument("--name", help="results file stem (default <date>-scale)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--keep-topics", action="store_true")
    args = p.parse_args()
    args.records = args.records or (300_000 if args.quick else 2_000_000)
    args.lag_seconds = args.lag_seconds or (20 if args.quick else 30)
    today = datetime.date.today().isoformat()
    args.name = args.name or (f"{today}-quick-scale" if args.quick else f"{today}-scale")
    return args


STOPPED = re.compile(r"stopped consumed=(\d+) produced=(\d+)")


def drain_cell(P, N, source, ctx):
    args, kafka, bins, scratch = ctx["args"], ctx["kafka"], ctx["bins"], ctx["scratch"]
    dest = f"{ctx['run_id']}-p{P}-n{N}"
    kafka.create(dest, P, log_append_time=True)
    until_end = args.stop == "until-end"
    cmd = [bins.ktransform, "run", "--brokers", args.brokers, "--source", source,
           "--destination", dest, "--group", dest, "--dlq", f"{dest}.dlq",
           *(["--until-end"] if until_end else []), *harness.ktransform_flags(bins.ktransform)]
    say(f"P={P} N={N}: draining {args.records} records")
    t0 = time.monotonic()
    procs = [harness.Started(cmd, scratch / "logs" / f"p{P}-n{N}-{i}.log", timeout=900)
             for i in range(N)]
    if until_end:
        results = [p.finish() for p in procs]
        wall = time.monotonic() - t0
    else:
        # Done when the destination holds the backlog (polled every 0.1 s), then a clean stop.
        ends = harness.EndOffsets(args.brokers, dest)
        deadline = t0 + 900
        while ends.total() < args.records and time.monotonic() < deadline:
            if not any(p.running() for p in procs):
                break
            time.sleep(0.1)
        wall = time.monotonic() - t0
        ends.close()
        for p in procs:
            p.kill(signal.SIGTERM)
        results = [p.finish() for p in procs]
    out = harness.scan(args.brokers, dest, check="splice")
    per_instance = []
    for m in results:
        found = STOPPED.findall(Path(ROOT / m.log).read_text(errors="replace"))
        per_instance.append(int(found[-1][1]) if found else None)
    problems = [f"instance {i} exited {m.rc}" for i, m in enumerate(results) if m.rc != 0]
    if out.records != args.records:
        problems.append(f"{out.records} records in the destination, expected {args.records}")
    if out.hash_bad:
        problems.append(f"{out.hash_bad} wrong hashes")
    active = (out.max_ts - out.min_ts) / 1000 if out.records > 1 else None
    cpu = sum(m.cpu_s for m in results)
    cell = {
        "partitions": P, "instances": N, "status": "ok" if not problems else "failed",
        "problems": problems, "records": out.records, "wall_s": round(wall, 3),
        "records_per_s": out.records / wall,
        "active_records_per_s": out.records / active if active else None,
        "cpu_s_per_million": cpu / out.records * 1e6 if out.records else None,
        "max_rss_mb": max(m.max_rss_mb for m in results),
        "produced_per_instance": per_instance,
        "loadavg_before": results[0].loadavg_before,
        "command": " ".join(shlex.quote(str(c).replace(str(ROOT) + "/", "")) for c in cmd)
        + f"   (x{N})",
        "stop": args.stop,
    }
    if problems:
        say(f"P={P} N={N}: FAILED: {problems}")
    else:
        say(f"P={P} N={N}: {cell['records_per_s']:.0f} records/s (active "
            f"{cell['active_records_per_s'] or 0:.0f}), {cell['cpu_s_per_million']:.1f} CPU s/M, "
            f"split {per_instance}")
    return cell


VERDICT = re.compile(r"^verdict: (.+)$", re.M)
TOTALS = re.compile(r"^total lag (\d+)\s+produce (\d+)/s\s+consume (\d+)/s", re.M)


def keep_up_check(P, N, rate, ctx):
    args, kafka, bins, scratch = ctx["args"], ctx["kafka"], ctx["bins"], ctx["scratch"]
    src = f"{ctx['run_id']}-lag-src"
    dest = f"{ctx['run_id']}-lag-out"
    kafka.create(src, P)
    kafka.create(dest, P, log_append_time=True)
    count = int(rate * args.lag_seconds)
    cmd = [bins.ktransform, "run", "--brokers", args.brokers, "--source", src,
           "--destination", dest, "--group", dest, "--dlq", f"{dest}.dlq",
           *harness.ktransform_flags(bins.ktransform)]
    say(f"keep-up check: P={P} N={N}, {count} records at {rate:.0f}/s")
    logs = [scratch / "logs" / f"lag-{i}.log" for i in range(N)]
    procs = [harness.Started(cmd, log, timeout=args.lag_seconds + 600) for log in logs]
    for log in logs:
        harness.wait_for_line(log, r"partitions assigned", 60)
    time.sleep(2)  # let the group settle on its final assignment
    gen = harness.Started([bins.generate, "--brokers", args.brokers, "--topic", src,
                           "--count", str(count), "--rate", str(rate)],
                          scratch / "logs" / "lag-generate.log",
                          timeout=args.lag_seconds * 3 + 60)
    samples = []
    time.sleep(min(10, args.lag_seconds / 4))  # past the generator's start
    lag_cmd = [bins.ktransform, "lag", "--brokers", args.brokers, "--group", dest,
               "--topic", src, "--interval", "5s"]
    while gen.running() and len(samples) < 50:
        p = subprocess.run([str(c) for c in lag_cmd], capture_output=True, text=True)
        if not gen.running():
            break  # the window ended inside this sample: the producer stopped, not a verdict
        verdict = VERDICT.search(p.stdout)
        totals = TOTALS.search(p.stdout)
        samples.append({
            "verdict": verdict.group(1) if verdict else f"(none; exit {p.returncode})",
            "lag": int(totals.group(1)) if totals else None,
            "produce_per_s": int(totals.group(2)) if totals else None,
            "consume_per_s": int(totals.group(3)) if totals else None,
        })
        say(f"keep-up check: {samples[-1]}")
    g = gen.finish()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and kafka.committed(dest, src) < count:
        time.sleep(0.5)
    for p in procs:
        p.kill(signal.SIGTERM)
    results = [p.finish() for p in procs]
    out = harness.scan(args.brokers, dest, check="splice")
    problems = [f"instance {i} exited {m.rc}" for i, m in enumerate(results) if m.rc != 0]
    if g.rc != 0:
        problems.append(f"generator exited {g.rc}")
    if out.records < count:
        problems.append(f"{out.records} records in the destination, expected {count}")
    verdicts = [s["verdict"] for s in samples]
    kept_up = bool(samples) and all(v.startswith(("caught up", "keeping up")) for v in verdicts)
    return {
        "partitions": P, "instances": N, "rate": rate, "seconds": args.lag_seconds,
        "records": count, "generator_achieved_rate": count / g.wall_s if g.wall_s else None,
        "samples": samples, "kept_up": kept_up,
        "status": "ok" if not problems else "failed", "problems": problems,
        "duplicates": max(0, out.records - count),
        "command": " ".join(shlex.quote(str(c)) for c in lag_cmd),
    }


def main():
    harness.bootstrap()
    # On SIGTERM, still end the contenders and delete the run's topics (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    started = time.monotonic()
    run_id = f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
    scratch = harness.run_dir(run_id)
    bins = harness.build(scratch, skip=args.no_build)
    harness.ensure_broker(args.brokers)
    kafka = harness.Kafka(args.brokers)
    ctx = {"args": args, "kafka": kafka, "bins": bins, "scratch": scratch, "run_id": run_id}
    results = {
        "name": args.name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 bench/scale.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": harness.machine(),
        "settings": dict(vars(args)),
        "run_id": run_id,
        "cells": [],
        "keep_up": None,
    }
    out_json = harness.RESULTS / f"{args.name}.json"
    try:
        for P in args.partitions:
            source = f"{run_id}-src-p{P}"
            gen = harness.measure([bins.generate, "--brokers", args.brokers, "--topic", source,
                                   "--partitions", str(P), "--count", str(args.records)],
                                  scratch / "logs" / f"generate-p{P}.log", timeout=600)
            kafka.created.append(source)
            if gen.rc != 0:
                sys.exit(f"generator failed for P={P}")
            for N in args.instances:
                results["cells"].append(drain_cell(P, N, source, ctx))
                harness.write_json(out_json, results)
        if not args.no_lag:
            P, N = args.lag_partitions, args.lag_instances
            # That cell's drain rate, else the single instance's at the same P.
            ok = {(c["partitions"], c["instances"]): c for c in results["cells"]
                  if c["status"] == "ok"}
            cell = ok.get((P, N)) or ok.get((P, 1))
            rate = args.lag_rate or (0.5 * cell["records_per_s"] if cell else None)
            if rate:
                results["keep_up"] = keep_up_check(P, N, rate, ctx)
            else:
                say("keep-up check skipped: no measured rate for that cell; give --lag-rate")
        results["wall_minutes"] = (time.monotonic() - started) / 60
        harness.write_json(out_json, results)
        import report

        report.write_scale(results)
        say(f"wrote {harness.RESULTS.relative_to(ROOT)}/{args.name}.md and charts in "
            f"{results['wall_minutes']:.1f} min")
        failed = [f"P={c['partitions']} N={c['instances']}" for c in results["cells"]
                  if c["status"] != "ok"]
        if results["keep_up"] and results["keep_up"]["status"] != "ok":
            failed.append("keep-up check")
        if failed:
            say(f"FAILED: {', '.join(failed)} (see the report)")
            sys.exit(1)
    finally:
        harness.kill_all()
        if not args.keep_topics:
            kafka.delete_created()


if __name__ == "__main__":
    main()
