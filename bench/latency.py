#!/usr/bin/env python3
"""`make latency-sweep`: end-to-end latency over load, ktransform against the raw copy.

`make bench` measures latency at one rate, half of ktransform's drain rate. This measures it at
several rates (default 1/8, 1/4, 3/8 and 1/2 of that drain rate), so that the rate where the
tail leaves a latency budget shows, for ktransform and for the raw copy (the practical limit:
consume and produce the same bytes, no work) on the same broker. Each run is `make bench`'s
latency run (bench/run.py `latency_run`): the contender running, the generator at the fixed
rate into fresh topics for --seconds, then every record's delay from its CreateTime to its
append to the destination. Contenders alternate within each rate, and rates go up then repeat,
so that a noisy minute on the shared machine does not fall on one contender or one rate.

Writes bench/results/<name>.md, .json and <name>.png (default name: <date>-latency-sweep).

    python3 bench/latency.py [--max-rate R] [--fractions 0.125,0.25,0.375,0.5] [--repeats 2]
"""

import argparse
import datetime
import json
import shlex
import signal
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import run  # noqa: E402  (make bench's latency run)
from harness import ROOT, say  # noqa: E402

CONTENDERS = {"raw": "raw copy (reference)", "alo": "ktransform at-least-once",
              "eos": "ktransform exactly-once"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--partitions", type=int, default=12, help="source partitions")
    p.add_argument("--max-rate", type=float,
                   help="the drain rate the fractions apply to (default: ktransform "
                        "at-least-once's in the newest bench/results/*.json from make bench)")
    p.add_argument("--fractions", default="0.125,0.25,0.375,0.5",
                   help="rates as fractions of --max-rate, comma-separated")
    p.add_argument("--seconds", type=float, default=15, help="length of each run")
    p.add_argument("--repeats", type=int, default=2, help="runs per rate and contender")
    p.add_argument("--contenders", default="raw,alo", help=f"of {','.join(CONTENDERS)}")
    p.add_argument("--budget-ms", type=float, default=25, help="the p99 target drawn on the chart")
    p.add_argument("--name", help="results file stem (default: <date>-latency-sweep)")
    p.add_argument("--ktransform-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `ktransform run` (repeatable)")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    args = p.parse_args()
    args.name = args.name or f"{datetime.date.today().isoformat()}-latency-sweep"
    unknown = set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown:
        p.error(f"--contenders: unknown {sorted(unknown)}")
    return args


def newest_drain_rate():
    """ktransform at-least-once's drain rate in the newest make bench results, and the file."""
    best = None
    for path in harness.RESULTS.glob("*.json"):
        try:
            r = json.loads(path.read_text())
        except ValueError:
            continue
        alo = next((c for c in r.get("contenders", []) if c.get("name") == "ktransform-alo"
                    and c.get("status") == "ok"), None)
        if alo and (best is None or r.get("date", "") > best[2]):
            best = (alo["records_per_s"], path.name, r.get("date", ""))
    return best


def main():
    harness.bootstrap()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    started = time.monotonic()
    run_id = f"latsweep-{time.strftime('%Y%m%d-%H%M%S')}"
    scratch = harness.run_dir(run_id)
    max_from = "--max-rate"
    if args.max_rate is None:
        newest = newest_drain_rate()
        if newest is None:
            sys.exit("no make bench results with a ktransform at-least-once rate; give --max-rate")
        args.max_rate, max_from, _ = newest
        max_from = f"bench/results/{max_from}"
    fractions = [float(f) for f in args.fractions.split(",")]
    names = args.contenders.split(",")
    bins = harness.build(scratch, skip=args.no_build)
    harness.ensure_broker(args.brokers)
    kafka = harness.Kafka(args.brokers)
    # What run.latency_run reads from make bench's arguments.
    run_args = types.SimpleNamespace(brokers=args.brokers, partitions=args.partitions,
                                     latency_seconds=args.seconds,
                                     ktransform_arg=args.ktransform_arg)
    results = {
        "name": args.name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 bench/latency.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": harness.machine(),
        "settings": {**vars(args), "max_rate_from": max_from},
        "runs": [],
    }
    out_json = harness.RESULTS / f"{args.name}.json"
    try:
        for rep in range(args.repeats):
            for fraction in fractions:
                rate = args.max_rate * fraction
                for name in names:
                    run_name = f"{rep}-{int(rate)}"
                    ctx = {"args": run_args, "kafka": kafka, "bins": bins,
                           "scratch": harness.run_dir(f"{run_id}/{run_name}"),
                           "run_id": f"{run_id}-{run_name}"}
                    x = run.latency_run(name, name == "eos", rate, ctx)
                    x.pop("cdf", None)
                    x.update(fraction=fraction, repeat=rep, label=CONTENDERS[name])
                    results["runs"].append(x)
                    say(f"{name} at {rate:,.0f}/s: p50 {x.get('p50_ms')} p99 {x.get('p99_ms')} "
                        f"steady p99 {x.get('p99_steady_ms')} ms")
                    harness.write_json(out_json, results)
                    # Each run's topics go at once: the broker stays as light as at the start.
                    kafka.delete_created()
        results["wall_minutes"] = (time.monotonic() - started) / 60
        harness.write_json(out_json, results)
        write_report(results)
        say(f"wrote {harness.RESULTS.relative_to(ROOT)}/{args.name}.md, .json and .png in "
            f"{results['wall_minutes']:.1f} min")
        if any(x["status"] != "ok" for x in results["runs"]):
            say("FAILED runs: see the report")
            sys.exit(1)
    finally:
        harness.kill_all()
        kafka.delete_created()


def summary(results):
    """Per contender and rate: the runs, and the median of each figure over them."""
    rows = {}
    for x in results["runs"]:
        if x["status"] == "ok":
            rows.setdefault((x["name"], x["fraction"]), []).append(x)
    out = []
    for (name, fraction), xs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {k: statistics.median(x[k] for x in xs)
               for k in ("rate", "p50_ms", "p99_ms", "p99_steady_ms", "max_steady_ms",
                         "cpu_s_per_million")}
        out.append({"name": name, "label": xs[0]["label"], "fraction": fraction, "runs": xs,
                    **med})
    return out


def write_report(results):
    from report import COLORS, fmt, machine_section, plt

    s = results["settings"]
    name = results["name"]
    rows = summary(results)
    warmup = run.LATENCY_WARMUP_S
    lines = [
        f"# ktransform latency over load {name}",
        "",
        f"Generated by `bench/latency.py` on {results['date']} in "
        f"{results.get('wall_minutes', 0):.1f} min. Command:",
        "",
        "```sh",
        results["command"],
        "```",
        "",
        *machine_section(results),
        "## Method",
        "",
        f"Rates are fractions of {s['max_rate']:,.0f} records/s, ktransform at-least-once's "
        f"drain rate (from {s['max_rate_from']}). Each run: the contender running on fresh "
        f"topics ({s['partitions']} partitions), the generator at the rate for "
        f"{s['seconds']:g} s, then each record's delay from its CreateTime (set by the "
        "generator's producer) to its append to the destination (LogAppendTime): the same run "
        f"as `make bench`'s latency table. *Steady* leaves out the records of the first "
        f"{warmup} s (process and topic start-up). Contenders alternate at each rate; "
        f"{s['repeats']} passes over the rates; the table gives every run, the chart the "
        "median per rate. The generator, the broker and the contender share the machine's "
        "cores.",
        "",
        "## Results",
        "",
        "| rate/s | contender | p50 ms | p99 ms | steady p99 ms | steady max ms | CPU s/M "
        "| runs: steady p99 ms |",
        "|--:|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {fmt(r['rate'])} | {r['label']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} "
            f"| {fmt(r['p99_steady_ms'])} | {fmt(r['max_steady_ms'])} "
            f"| {fmt(r['cpu_s_per_million'], 2)} "
            f"| {', '.join(fmt(x['p99_steady_ms']) for x in r['runs'])} |")
    failed = [x for x in results["runs"] if x["status"] != "ok"]
    for x in failed:
        lines.append(f"\nFAILED: {x['label']} at {fmt(x.get('rate'))}/s: "
                     + "; ".join(x.get("problems", [])))
    lines += ["", f"![steady p99 over rate]({name}.png)", ""]
    (harness.RESULTS / f"{name}.md").write_text("\n".join(lines))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for contender in dict.fromkeys(r["name"] for r in rows):
        pts = [r for r in rows if r["name"] == contender]
        color = {"raw": COLORS["raw"], "alo": COLORS["ktransform"]}.get(contender, "#8c1a1a")
        ax.plot([r["rate"] for r in pts], [r["p99_steady_ms"] for r in pts], marker="o",
                color=color, label=f"{pts[0]['label']}: steady p99")
        ax.plot([r["rate"] for r in pts], [r["p50_ms"] for r in pts], marker=".", color=color,
                linestyle=":", label=f"{pts[0]['label']}: p50")
    ax.axhline(s["budget_ms"], color="grey", linestyle="--", linewidth=1,
               label=f"{s['budget_ms']:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("records/s produced (fixed rate)")
    ax.set_ylabel("ms, CreateTime to append in the destination")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Latency over load, median of {s['repeats']} runs per point ({name})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(harness.RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
