#!/usr/bin/env python3
"""`make scale-test`: does adding an instance add its capacity? And does `ktransform lag`'s advice
hold when followed?

Each instance runs in its own CPU cgroup with a quota (default 0.1 core, `--cpu`), emulating one
small machine each; the broker and the generator run outside the quotas, in a group with high
`cpu.shares` (bench/cpu_budget.py). Where cgroups are not writable the script says so and runs
everything on the shared cores instead, labelled *shared* in the report.

1. Matrix: for P partitions (default 1 2 4 8 12 24) and N instances (1 2 3 4 6, and 8 where
   P >= 8), N `ktransform run` start together in a fresh group on a backlog; after the group
   settles (`--settle`), the drain rate is the destination's growth over `--window` seconds.
   Then SIGTERM: every instance must exit 0, each destination partition must hold exactly what
   the group committed on its source partition, and a sample of every partition's tail must carry
   correct hashes (bench/scale_cells.py).
2. Advice: on 12 partitions, the generator writes at 1.5x, 2.5x and 4x one instance's measured
   rate (`--advice`); with one instance, `ktransform lag --json` gives a verdict and the instances
   it needs (k); then instances are added one at a time, with a verdict at each count, until the
   group keeps up and k is reached: predicted k against the smallest count that kept up.

Writes bench/results/<date>-scale.md, .json and <date>-scale-*.png (bench/scale_report.py).

    python3 bench/scale.py [--quick] [--cpu 0.1] [--partitions 1,2,4,8,12,24] [--instances 1,2,3,4,6,8]
"""

import argparse
import datetime
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_budget  # noqa: E402
import harness  # noqa: E402
from harness import ROOT, say  # noqa: E402
from scale_cells import Backlog, Instances, check_content, steady_window, wait_assigned  # noqa: E402


def ints(text):
    return [int(x) for x in text.split(",") if x]


def floats(text):
    return [float(x) for x in text.split(",") if x]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--cpu", type=float, default=0.1, help="cores per instance (default 0.1)")
    p.add_argument("--shared", action="store_true", help="no budgets even where cgroups work")
    p.add_argument("--partitions", type=ints, default=[1, 2, 4, 8, 12, 24])
    p.add_argument("--instances", type=ints, default=[1, 2, 3, 4, 6, 8],
                   help="instance counts; 8 and more only where the partitions are at least as many")
    p.add_argument("--settle", type=float, default=12, help="seconds for the group to settle")
    p.add_argument("--window", type=float, default=15, help="seconds of the measured window")
    p.add_argument("--max-backlog", type=int,
                   help="records per source topic at most (default 15M; 30M in the shared mode, "
                        "where one instance alone drains several hundred thousand a second)")
    p.add_argument("--advice", type=floats, default=[1.5, 2.5, 4.0],
                   help="generator rates as multiples of one instance's rate (empty: skip)")
    p.add_argument("--advice-partitions", type=int, default=12)
    p.add_argument("--advice-capacity", type=float,
                   help="one instance's records/s for the advice check (default: measured in "
                        "the matrix at --advice-partitions, else measured first)")
    p.add_argument("--lag-interval", default="10s", help="`ktransform lag --interval`")
    p.add_argument("--quick", action="store_true",
                   help="partitions 1,4,12 x instances 1,2,4; advice at 2.5x; <date>-quick-scale")
    p.add_argument("--name", help="results file stem (default <date>-scale)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--keep-topics", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.partitions, args.instances, args.advice = [1, 4, 12], [1, 2, 4], [2.5]
    today = datetime.date.today().isoformat()
    args.name = args.name or (f"{today}-quick-scale" if args.quick else f"{today}-scale")
    return args


STOPPED = re.compile(r"stopped consumed=(\d+) produced=(\d+)")


def produced_per_instance(inst):
    out = []
    for p in inst.procs:
        found = STOPPED.findall(Path(p.log_path).read_text(errors="replace"))
        out.append(int(found[-1][1]) if found else None)
    return out


def start_group(ctx, source, dest, n, label):
    """N instances on a fresh destination; returns once one of them has partitions."""
    ctx["kafka"].create(dest, ctx["partitions_of"][source])
    inst = Instances(ctx, source, dest, label)
    inst.start(n)
    if not wait_assigned([p.log_path for p in inst.procs], 1, 90):
        say(f"{label}: no instance got partitions within 90 s")
    return inst


def drop_topics(ctx, *topics):
    kafka = ctx["kafka"]
    existing = set(kafka.admin.list_topics(timeout=10).topics)
    gone = [t for t in topics if t in existing]
    if gone:
        for f in kafka.admin.delete_topics(gone, operation_timeout=60).values():
            try:
                f.result()
            except Exception as e:  # noqa: BLE001: cleanup goes on
                say(f"could not delete a topic: {e}")
    kafka.created[:] = [t for t in kafka.created if t not in topics]


def cell(ctx, backlog, N):
    args, P = ctx["args"], backlog.partitions
    dest = f"{ctx['run_id']}-p{P}-n{N}"
    say(f"P={P} N={N}: start")
    inst = start_group(ctx, backlog.topic, dest, N, f"p{P}-n{N}")
    time.sleep(args.settle)
    w = steady_window(ctx, inst, dest, args.window)
    rcs = inst.stop()
    problems = [f"instance {i} exited {rc}" for i, rc in enumerate(rcs) if rc != 0]
    content, counts = check_content(ctx, backlog.topic, dest, dest)
    problems += content
    # Not a failure, but the rate is only a lower bound: the group ran out of work.
    exhausted = w["dest_at_end"] >= 0.98 * backlog.records
    drop_topics(ctx, dest, f"{dest}.dlq")
    c = {"partitions": P, "instances": N, **w, **counts, "backlog": backlog.records,
         "produced_per_instance": produced_per_instance(inst), "exhausted": exhausted,
         "peak_rss_mb": inst.peak_rss_mb,
         "status": "failed" if problems else "lower bound" if exhausted else "ok",
         "problems": problems,
         "loadavg": round(__import__("os").getloadavg()[0], 2)}
    ctx["command"] = inst.command
    say(f"P={P} N={N}: {w['records_per_s']:,.0f} records/s (halves "
        f"{', '.join(f'{h:,.0f}' for h in w['halves_per_s'] if h is not None)}), instance cores "
        f"{w['instance_cores']}, broker {w['broker_cores']} cores"
        + (f"; PROBLEMS {problems}" if problems else "")
        + (f"; the backlog ({backlog.records:,}) ran out: a lower bound" if exhausted else ""))
    return c


def matrix(ctx, results, out_json):
    args = ctx["args"]
    guess = 60_000 * args.cpu / 0.1 if ctx["budgets"] else 600_000
    for P in args.partitions:
        backlog = Backlog(ctx, P)
        ctx["partitions_of"][backlog.topic] = P
        rate1 = None
        try:
            for N in args.instances:
                if N >= 8 and N > P:
                    continue
                expected = (rate1 or guess) * min(N, P) * 1.2
                backlog.ensure(int(expected * (args.settle + args.window + 10)))
                c = cell(ctx, backlog, N)
                results["cells"].append(c)
                if N == 1 and c["status"] == "ok":
                    rate1 = c["records_per_s"]
                harness.write_json(out_json, results)
        finally:
            if not args.keep_topics:
                backlog.drop()


# --- The advice check ---------------------------------------------------------------------


def lag_json(ctx, source, group):
    cmd = [ctx["bins"].ktransform, "lag", "--brokers", ctx["args"].brokers, "--group", group,
           "--topic", source, "--interval", ctx["args"].lag_interval, "--json"]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    ctx["lag_command"] = " ".join(str(c).replace(str(ROOT) + "/", "") for c in cmd)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"verdict": f"(none; exit {p.returncode}: {p.stderr.strip()[-200:]})"}


KEPT_UP = ("keeping_up", "catching_up", "caught_up")


def advice_run(ctx, capacity, multiple):
    args, P = ctx["args"], ctx["args"].advice_partitions
    rate = capacity * multiple
    base = f"{ctx['run_id']}-adv{multiple:g}".replace(".", "_")
    source, dest = f"{base}-src", f"{base}-out"
    ctx["kafka"].create(source, P)
    ctx["partitions_of"][source] = P
    limit = 10 * 60
    gen_cmd = [ctx["bins"].generate, "--brokers", args.brokers, "--topic", source,
               "--rate", f"{rate:.0f}", "--count", str(int(rate * limit))]
    if ctx["budgets"]:
        gen_cmd = ctx["budgets"].infra.wrap(gen_cmd)
    gen = harness.Started(gen_cmd, ctx["scratch"] / "logs" / f"{base}-generate.log",
                          timeout=limit + 60)
    say(f"advice {multiple:g}x: the generator at {rate:,.0f} records/s, 1 instance")
    inst = start_group(ctx, source, dest, 1, f"{base}")
    steps, predicted, smallest = [], None, None
    try:
        n = 1
        while True:
            time.sleep(args.settle)
            report = lag_json(ctx, source, dest)
            step = {"instances": n, "verdict": report.get("verdict"),
                    "instances_needed": report.get("instances_needed"),
                    "members": report.get("members"),
                    "produce_per_s": report.get("produce_per_sec"),
                    "consume_per_s": report.get("consume_per_sec"),
                    "lag": (report.get("total") or {}).get("lag"),
                    "instance_cores": None}
            steps.append(step)
            say(f"advice {multiple:g}x: {n} instance(s): {step['verdict']}, "
                f"needed {step['instances_needed']}, produce {step['produce_per_s'] or 0:,.0f}/s, "
                f"consume {step['consume_per_s'] or 0:,.0f}/s")
            if n == 1:
                predicted = step["instances_needed"] if step["verdict"] == "falling_behind" else 1
            if smallest is None and step["verdict"] in KEPT_UP:
                smallest = n
            if (smallest is not None and n >= (predicted or 1)) or n >= P or not gen.running():
                break
            inst.start_one()
            n += 1
    finally:
        gen.kill(signal.SIGTERM)
        g = gen.finish()
        rcs = inst.stop()
    problems = [f"instance {i} exited {rc}" for i, rc in enumerate(rcs) if rc != 0]
    content, counts = check_content(ctx, source, dest, dest)
    problems += content
    drop_topics(ctx, source, dest, f"{dest}.dlq")
    at_predicted = next((s["verdict"] for s in steps if s["instances"] == predicted), None)
    return {"multiple": multiple, "rate": rate, "capacity": capacity, "partitions": P,
            "steps": steps, "predicted": predicted, "smallest_kept_up": smallest,
            "verdict_at_predicted": at_predicted, "generator_rc": g.rc, **counts,
            "status": "ok" if not problems else "failed", "problems": problems}


def advice(ctx, results, out_json):
    args = ctx["args"]
    capacity = args.advice_capacity
    if not capacity:
        ones = [c for c in results["cells"] if c["instances"] == 1 and c["status"] == "ok"
                and c["partitions"] == args.advice_partitions]
        if not ones:
            backlog = Backlog(ctx, args.advice_partitions)
            ctx["partitions_of"][backlog.topic] = backlog.partitions
            backlog.ensure(int(60_000 * args.cpu / 0.1 * (args.settle + args.window + 10) * 1.5))
            ones = [cell(ctx, backlog, 1)]
            results["cells"].append(ones[0])
            backlog.drop()
        capacity = ones[0]["records_per_s"]
    results["advice_capacity"] = capacity
    for multiple in args.advice:
        results["advice"].append(advice_run(ctx, capacity, multiple))
        harness.write_json(out_json, results)


def main():
    harness.bootstrap()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    started = time.monotonic()
    run_id = f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
    scratch = harness.run_dir(run_id)
    bins = harness.build(scratch, skip=args.no_build)
    harness.ensure_broker(args.brokers)
    kafka = harness.Kafka(args.brokers)
    reason = "--shared given" if args.shared else cpu_budget.writable_reason()
    budgets = None if reason else cpu_budget.Budgets(f"ktransform-{run_id}", args.cpu)
    args.max_backlog = args.max_backlog or (15_000_000 if budgets else 30_000_000)
    if budgets:
        broker = harness.broker_pid()
        if broker:
            budgets.adopt(broker)
        say(f"budget mode: {args.cpu:g} core per instance; broker pid {broker} "
            f"{'in the infra group' if broker else 'not found (KAFKA_STATE_DIR?): not measured'}")
    else:
        say(f"SHARED MODE (no CPU budgets): {reason}")
    ctx = {"args": args, "kafka": kafka, "bins": bins, "scratch": scratch, "run_id": run_id,
           "budgets": budgets, "partitions_of": {}}
    results = {
        "name": args.name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 bench/scale.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": harness.machine(), "settings": dict(vars(args)), "run_id": run_id,
        "mode": "budget" if budgets else "shared", "shared_reason": reason,
        "cells": [], "advice": [],
    }
    out_json = harness.RESULTS / f"{args.name}.json"
    try:
        matrix(ctx, results, out_json)
        if args.advice:
            advice(ctx, results, out_json)
        results["run_command"] = ctx.get("command")
        results["lag_command"] = ctx.get("lag_command")
        results["wall_minutes"] = (time.monotonic() - started) / 60
        harness.write_json(out_json, results)
        import scale_report

        scale_report.write(results)
        say(f"wrote {harness.RESULTS.relative_to(ROOT)}/{args.name}.md and charts in "
            f"{results['wall_minutes']:.1f} min")
        failed = [f"P={c['partitions']} N={c['instances']}" for c in results["cells"]
                  if c["status"] == "failed"]
        failed += [f"advice {a['multiple']:g}x" for a in results["advice"] if a["status"] != "ok"]
        if failed:
            say(f"FAILED: {', '.join(failed)} (see the report)")
            sys.exit(1)
    finally:
        harness.kill_all()
        if budgets:
            budgets.close()
        if not args.keep_topics:
            kafka.delete_created()


if __name__ == "__main__":
    main()
