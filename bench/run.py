#!/usr/bin/env python3
"""`make bench`: ktransform against the practical limit and against the alternatives.

On the local broker: one source topic with a backlog of seed-format records, then each contender
in turn drains it into a fresh destination topic with a fresh consumer group:

  raw copy (examples/raw_copy.rs), ktransform at-least-once and exactly-once, the three Python
  baselines (bench/python, a time window or a record budget each), Kafka Streams at_least_once
  and exactly_once_v2 (bench/kstreams), and ktransform at-least-once once per output codec
  (producer.compression.type none, gzip, snappy, lz4, zstd).

Each is timed from spawn to exit, with the CPU time and peak RSS of its whole process tree, and
its output is read back and checked (count, and the md5 of every record) so that a broken
contender cannot look fast, and measured on the broker's disk (bytes, batches, codecs). Then the
end-to-end latency of ktransform at a fixed produce rate (half of its measured drain rate).
Writes bench/results/<date>.md, .json and PNG charts.

    python3 bench/run.py [--records 2000000] [--partitions 12] [--python-seconds 60] [--quick] ...
"""

import argparse
import datetime
import json
import shlex
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import ROOT, say  # noqa: E402

PYTHON_DIR = harness.BENCH / "python"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--records", type=int, help="backlog size (default 2,000,000; --quick 200,000)")
    p.add_argument("--partitions", type=int, default=12, help="source partitions")
    p.add_argument("--python-seconds", type=float,
                   help="time window of each Python baseline (default 60; --quick 20)")
    p.add_argument("--python-records", type=int,
                   help="record budget of each Python baseline (default: the whole backlog)")
    p.add_argument("--latency-seconds", type=float,
                   help="length of the fixed-rate latency run (default 30; --quick 15)")
    p.add_argument("--latency-rate", type=float,
                   help="records/s of the latency run (default: half of ktransform "
                        "at-least-once's measured drain rate)")
    p.add_argument("--repeats", type=int,
                   help="runs of each drain contender, interleaved; the median is reported "
                        "(default 5; --quick 1). The Python baselines run once.")
    p.add_argument("--only", help="comma-separated contenders to run (names below)")
    p.add_argument("--skip", default="", help="comma-separated contenders to leave out")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smaller defaults for a first try; results go to <date>-quick.*")
    p.add_argument("--name", help="results file stem (default: the date, or <date>-quick)")
    p.add_argument("--ktransform-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `ktransform run` (repeatable), e.g. "
                        "--ktransform-arg=-X --ktransform-arg=consumer.fetch.queue.backoff.ms=10")
    p.add_argument("--kstreams-tuned", metavar="K=V,...",
                   help="settings of the tuned Kafka Streams variants instead of KSTREAMS_TUNED "
                        "(StreamsConfig keys, producer./consumer. prefixes)")
    p.add_argument("--record-bytes", type=int,
                   help="pad each source object to this many bytes (1 KB, 10 KB records; default: "
                        "the seed format, about 50 B); the default backlog is then 500 MB")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--keep-topics", action="store_true", help="do not delete the run's topics")
    args = p.parse_args()
    if args.record_bytes and not args.records:
        args.records = max(10_000, (50_000_000 if args.quick else 500_000_000) // args.record_bytes)
    args.records = args.records or (200_000 if args.quick else 2_000_000)
    args.kstreams_tuned = args.kstreams_tuned or ",".join(KSTREAMS_TUNED)
    args.python_seconds = args.python_seconds or (20 if args.quick else 60)
    args.python_records = args.python_records or args.records
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.latency_seconds = args.latency_seconds or (15 if args.quick else 30)
    today = datetime.date.today().isoformat()
    args.name = args.name or (f"{today}-quick" if args.quick else today)
    return args


# name, label, kind, output check
CONTENDERS = [
    ("raw-copy", "raw copy (Rust, no transform)", "raw", None),
    ("ktransform-alo", "ktransform at-least-once", "ktransform", "splice"),
    ("ktransform-eos", "ktransform exactly-once", "ktransform", "splice"),
    ("python-serial", "Python serial", "python", "json"),
    ("python-pool", "Python multiprocessing.Pool", "python", "json"),
    ("python-pipeline", "Python 3-stage pipeline", "python", "json"),
    ("kstreams-alo", "Kafka Streams at_least_once, its defaults", "kstreams", "splice"),
    ("kstreams-alo-tuned", "Kafka Streams at_least_once, tuned", "kstreams", "splice"),
    ("kstreams-eos", "Kafka Streams exactly_once_v2, its defaults", "kstreams", "splice"),
    ("kstreams-eos-tuned", "Kafka Streams exactly_once_v2, tuned", "kstreams", "splice"),
]

# Kafka Streams at its best: the tuned variants' settings (`--set` of bench/kstreams), the best
# of those tried in bench/results/2026-12-07-kstreams-tuning.md and -tuning-2.md (2 stream
# threads, linger, batch size, lz4, max.poll.records, fetch sizes); the plain variants keep
# every default (one stream thread, the producer's 100 ms linger and 16 KB batches, no
# compression). `--kstreams-tuned` replaces them, for trying others.
KSTREAMS_TUNED = ["num.stream.threads=2", "producer.linger.ms=20",
                  "producer.batch.size=262144", "producer.compression.type=lz4",
                  "consumer.max.poll.records=5000"]

# The output's compression: ktransform-alo once per codec, so that the report can set the CPU
# a codec costs per record against the bytes it saves on the wire and on the broker's disk.
# ktransform-alo itself keeps the binary's default, whatever that is.
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CODEC_PREFIX = "ktransform-alo-"
CONTENDERS += [(f"{CODEC_PREFIX}{codec}", f"ktransform at-least-once, {codec} output",
                "ktransform", "splice") for codec in CODECS]


def codec_of(name):
    """The output codec a contender sets, or None (the binary's default)."""
    return name.removeprefix(CODEC_PREFIX) if name.startswith(CODEC_PREFIX) else None


def ktransform_supports_eos(binary):
    out = harness.ktransform_run_help(binary)
    return "--guarantee" in out and "exactly-once" in out


def command(name, kind, bins, args, source, dest, group):
    base = ["--source", source, "--destination", dest]
    if kind == "raw":
        return [bins.raw_copy, "--brokers", args.brokers, *base, "--group", group]
    if kind == "ktransform":
        cmd = [bins.ktransform, "run", "--brokers", args.brokers, *base, "--group", group,
               "--dlq", f"{dest}.dlq", "--until-end", *harness.ktransform_flags(bins.ktransform),
               *args.ktransform_arg]
        if name.endswith("eos"):
            cmd += ["--guarantee", "exactly-once"]
        if codec_of(name):
            # Last, so that it wins over a --ktransform-arg that sets the codec too.
            cmd += ["-X", f"producer.compression.type={codec_of(name)}"]
        return cmd
    if kind == "python":
        script = PYTHON_DIR / f"{name.removeprefix('python-')}.py"
        return [sys.executable, script, "--brokers", args.brokers, *base, "--group", group,
                "--count", str(min(args.python_records, args.records)),
                "--seconds", str(args.python_seconds)]
    if kind == "kstreams":
        guarantee = "exactly_once_v2" if "-eos" in name else "at_least_once"
        cmd = ["java", "-Xmx1g", "-cp", bins.kstreams_classpath, "ktransform.bench.KStreamsBench",
               "--brokers", args.brokers, *base, "--application-id", group,
               "--count", str(args.records), "--guarantee", guarantee,
               "--state-dir", f"/tmp/kstreams-bench-{group}"]
        if name.endswith("-tuned"):
            for setting in filter(None, args.kstreams_tuned.split(",")):
                cmd += ["--set", setting]
        return cmd
    raise ValueError(kind)


def shown(cmd):
    """The command line as text, with paths relative to the repository."""
    root = str(ROOT) + "/"
    return " ".join(shlex.quote(str(c).replace(root, "")) for c in cmd)


def run_contender(name, label, kind, check, ctx, rep=0):
    args, kafka, bins, scratch, source = ctx["args"], ctx["kafka"], ctx["bins"], ctx["scratch"], ctx["source"]
    entry = {"name": name, "label": label, "kind": kind}
    if kind == "ktransform" and name.endswith("eos") and not ctx["eos"]:
        entry.update(status="not available",
                     note="`ktransform run --help` has no `--guarantee exactly-once` yet")
        return entry
    dest = f"{ctx['run_id']}-{name}-{rep}"
    group = dest
    kafka.create(dest, args.partitions, log_append_time=True)
    cmd = command(name, kind, bins, args, source["topic"], dest, group)
    entry["command"] = shown(cmd)
    timeout = (args.python_seconds + 300) if kind == "python" else max(600, args.records / 2000)
    say(f"{name}: running" + (f" (run {rep + 1} of {args.repeats})" if kind != "python" else ""))
    log = scratch / "logs" / f"{name}-{rep}.log"
    m = harness.measure(cmd, log, timeout=timeout)
    reported = None
    if kind in ("python", "kstreams"):
        for line in m.stdout.splitlines():
            if line.startswith("{"):
                reported = json.loads(line)
            elif line.startswith("processed="):
                reported = dict(kv.split("=") for kv in line.split())
    say(f"{name}: exited {m.rc} after {m.wall_s:.1f} s; reading {dest} back")
    out = harness.scan(args.brokers, dest, check=check)
    hw = sum(kafka.high_watermarks(dest).values())
    disk = harness.topic_on_disk(ctx["log_dirs"], dest)
    if kind == "python":
        expected = int(reported["processed"]) if reported else None
        limited = ("record budget" if expected is not None and expected >= args.python_records
                   else f"{args.python_seconds:g} s window")
    else:
        expected = source["records"]
        limited = "whole backlog"
    problems = []
    if m.rc != 0:
        problems.append(f"exit code {m.rc}" + (" (timed out)" if m.timed_out else ""))
    if expected is None:
        problems.append("reported nothing")
    elif out.records != expected:
        problems.append(f"{out.records} records in the destination, expected {expected}")
    transactional = "-eos" in name
    if not transactional and hw != out.records:
        problems.append(f"high watermarks sum to {hw}, but {out.records} records were read")
    if out.hash_bad:
        problems.append(f"{out.hash_bad} records with a wrong hash, first: {out.first_bad!r}")
    processed = out.records
    active_s = ((out.max_ts - out.min_ts) / 1000) if out.records > 1 else None
    entry.update(
        status="ok" if not problems else "failed",
        problems=problems,
        limited_by=limited,
        processed=processed,
        expected=expected,
        wall_s=round(m.wall_s, 3),
        records_per_s=processed / m.wall_s if m.wall_s else None,
        active_s=active_s,
        active_records_per_s=(processed / active_s) if active_s else None,
        mb_per_s=processed * source["value_bytes_mean"] / m.wall_s / 1e6,
        cpu_user_s=round(m.user_s, 2),
        cpu_sys_s=round(m.sys_s, 2),
        cpu_s_per_million=m.cpu_s / processed * 1e6 if processed else None,
        max_rss_mb=round(m.max_rss_mb, 1),
        tree_rss_mb=round(m.tree_rss_mb, 1),
        broker_cpu_s_per_million=(m.broker_cpu_s / processed * 1e6
                                  if m.broker_cpu_s is not None and processed else None),
        loadavg_before=m.loadavg_before,
        voluntary_switches=m.voluntary_switches,
        involuntary_switches=m.involuntary_switches,
        high_watermark_sum=hw,
        compression=codec_of(name),
        **disk_fields(disk, processed),
        reported=reported,
        verify=out.as_dict(),
        log=m.log,
    )
    if problems:
        say(f"{name}: FAILED: {'; '.join(problems)}\n{harness.tail(log)}")
    else:
        on_disk = (f", {entry['disk_bytes_per_record']:.1f} B/record on disk"
                   if entry["disk_bytes_per_record"] else "")
        say(f"{name}: {processed} records, {entry['records_per_s']:.0f} records/s, "
            f"{entry['cpu_s_per_million']:.1f} CPU s/M, peak RSS {m.max_rss_mb:.0f} MB{on_disk}")
    return entry


def disk_fields(disk, processed):
    """The entry's fields for what the destination takes on the broker's disk (None each when
    the broker's log directories are not on this machine)."""
    disk = disk or {}
    return {
        "disk_bytes": disk.get("bytes"),
        "disk_bytes_per_record": disk["bytes"] / processed if disk and processed else None,
        "disk_batches": disk.get("batches"),
        "disk_records_per_batch": (disk["records"] / disk["batches"]
                                   if disk.get("batches") else None),
        "disk_batches_by_codec": disk.get("batches_by_codec"),
    }


def median_run(runs):
    """The run with the median rate (the lower middle of an even count), with every run's rate
    and CPU attached. Any failed run makes the contender failed: a median must not hide it."""
    failed = [r for r in runs if r.get("status") == "failed"]
    if failed:
        return failed[0]
    if runs[0].get("status") != "ok":
        return runs[0]  # not available
    ordered = sorted(runs, key=lambda r: r["records_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs_records_per_s"] = [r["records_per_s"] for r in runs]
    chosen["runs_cpu_s_per_million"] = [r["cpu_s_per_million"] for r in runs]
    chosen["runs_disk_bytes_per_record"] = [r["disk_bytes_per_record"] for r in runs]
    return chosen


def compare_codecs(contenders):
    """Each codec contender's rate, CPU and bytes on disk as ratios to the `none` one's; also
    ktransform-alo's, so that the binary's default can be placed among the codecs."""
    none = next((c for c in contenders if c.get("compression") == "none"), None)
    if not none or none.get("status") != "ok":
        return
    for c in contenders:
        if (c.get("compression") or c["name"] == "ktransform-alo") and c.get("status") == "ok":
            c["ratio_to_none"] = c["records_per_s"] / none["records_per_s"]
            c["cpu_ratio_to_none"] = c["cpu_s_per_million"] / none["cpu_s_per_million"]
            if c["disk_bytes_per_record"] and none["disk_bytes_per_record"]:
                c["disk_ratio_to_none"] = (c["disk_bytes_per_record"]
                                           / none["disk_bytes_per_record"])


# The raw copy's latency reference runs with ktransform's consumer settings that shape latency
# and memory (src/config/clients.rs), so that the difference is the work and the bookkeeping.
RAW_LATENCY_SETTINGS = ["fetch.wait.max.ms=5", "fetch.max.bytes=4194304",
                        "max.partition.fetch.bytes=262144", "queued.min.messages=2500",
                        "queued.max.messages.kbytes=4096", "fetch.queue.backoff.ms=10"]


LATENCY_WARMUP_S = 5


def latency_run(name, eos, rate, ctx):
    """ktransform (or, for name "raw", the raw copy) running, the generator at a fixed rate into
    a fresh topic; then the delay of each record from its CreateTime (set by the generator's
    producer) to its append to the destination (LogAppendTime)."""
    args, kafka, bins, scratch = ctx["args"], ctx["kafka"], ctx["bins"], ctx["scratch"]
    src = f"{ctx['run_id']}-lat-{name}-src"
    dest = f"{ctx['run_id']}-lat-{name}"
    group = dest
    kafka.create(src, args.partitions)
    kafka.create(dest, args.partitions, log_append_time=True)
    count = int(rate * args.latency_seconds)
    if name == "raw":
        cmd = [bins.raw_copy, "--brokers", args.brokers, "--source", src, "--destination", dest,
               "--group", group, "--count", str(count)]
        for setting in RAW_LATENCY_SETTINGS:
            cmd += ["-X", f"consumer.{setting}"]
        label = "raw copy (reference)"
    else:
        cmd = [bins.ktransform, "run", "--brokers", args.brokers, "--source", src,
               "--destination", dest, "--group", group, "--dlq", f"{dest}.dlq",
               *harness.ktransform_flags(bins.ktransform), *args.ktransform_arg]
        if eos:
            cmd += ["--guarantee", "exactly-once"]
        label = "ktransform exactly-once" if eos else "ktransform at-least-once"
    log = scratch / "logs" / f"latency-{name}.log"
    say(f"latency {name}: {label} running, then {count} records at {rate:.0f}/s")
    proc = harness.Started(cmd, log, timeout=args.latency_seconds + 600)
    if not harness.wait_for_line(log, r"partitions assigned", 60):
        proc.kill()
        proc.finish()
        return {"name": name, "status": "failed", "problems": ["no assignment within 60 s"]}
    gen = harness.measure([bins.generate, "--brokers", args.brokers, "--topic", src,
                           "--count", str(count), "--rate", str(rate)],
                          scratch / "logs" / f"latency-{name}-generate.log",
                          timeout=args.latency_seconds * 3 + 60)
    # How long after the input ended ktransform had committed all of it: ~1 s (the commit
    # interval) when it keeps up, the backlog it built up when it does not.
    input_ended = time.monotonic()
    deadline = input_ended + 120
    while time.monotonic() < deadline and kafka.committed(group, src) < count:
        time.sleep(0.5)
    catch_up_s = time.monotonic() - input_ended
    if name == "raw":
        # The raw copy exits by itself after its last commit.
        end = time.monotonic() + 30
        while proc.running() and time.monotonic() < end:
            time.sleep(0.1)
    proc.kill(signal.SIGTERM)
    m = proc.finish()
    say(f"latency {name}: reading {src} and {dest}")
    source = harness.scan(args.brokers, src, keep_seq=True)
    out = harness.scan(args.brokers, dest, keep_seq=True)
    lat = sorted(out.by_seq[s] - source.by_seq[s] for s in out.by_seq if s in source.by_seq)
    # The same, without the records of the first LATENCY_WARMUP_S seconds (the generator writes
    # record seq at seq/rate): the steady state, apart from the start-up of the process and of
    # the fresh topics, which the whole-run figures include.
    first = int(rate * LATENCY_WARMUP_S)
    steady = sorted(out.by_seq[s] - source.by_seq[s]
                    for s in out.by_seq if s in source.by_seq and s >= first)
    problems = []
    if gen.rc != 0:
        problems.append(f"generator exited {gen.rc}")
    if m.rc != 0:
        problems.append(f"{'raw copy' if name == 'raw' else 'ktransform'} exited {m.rc}")
    if len(out.by_seq) != count:
        problems.append(f"{len(out.by_seq)} distinct records in the destination, expected {count}")
    # confluent_kafka: TIMESTAMP_LOG_APPEND_TIME == 2
    if out.timestamp_types != {2}:
        problems.append(f"destination timestamps are not LogAppendTime: {out.timestamp_types}")
    cdf = []
    if lat:
        step = max(1, len(lat) // 400)
        cdf = [[lat[i], (i + 1) / len(lat)] for i in range(0, len(lat), step)] + [[lat[-1], 1.0]]
    return {
        "name": name,
        "label": label,
        "status": "ok" if not problems else "failed",
        "problems": problems,
        "rate": rate,
        "seconds": args.latency_seconds,
        "records": count,
        "generator_achieved_rate": count / gen.wall_s if gen.wall_s else None,
        "measured": len(lat),
        "p50_ms": harness.percentile(lat, 50),
        "p90_ms": harness.percentile(lat, 90),
        "p99_ms": harness.percentile(lat, 99),
        "p999_ms": harness.percentile(lat, 99.9),
        "max_ms": lat[-1] if lat else None,
        "warmup_s": LATENCY_WARMUP_S,
        "p99_steady_ms": harness.percentile(steady, 99),
        "max_steady_ms": steady[-1] if steady else None,
        "catch_up_s": round(catch_up_s, 1),
        "cpu_s_per_million": m.cpu_s / count * 1e6 if count else None,
        "cdf": cdf,
        "command": shown(cmd),
    }


def main():
    harness.bootstrap()
    # On SIGTERM, still end the contenders and delete the run's topics (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    started = time.monotonic()
    run_id = f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    scratch = harness.run_dir(run_id)
    names = [c[0] for c in CONTENDERS]
    wanted = set(args.only.split(",")) if args.only else set(names)
    wanted -= set(filter(None, args.skip.split(",")))
    unknown = wanted - set(names)
    if unknown:
        sys.exit(f"unknown contenders {sorted(unknown)}; known: {', '.join(names)}")
    kstreams = any(n.startswith("kstreams") for n in wanted)
    bins = harness.build(scratch, kstreams=kstreams, skip=args.no_build)
    harness.ensure_broker(args.brokers)
    kafka = harness.Kafka(args.brokers)
    results = {
        "name": args.name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": harness.machine(),
        "settings": {k: v for k, v in vars(args).items()},
        "run_id": run_id,
        "contenders": [],
        "runs": {},
        "latency": [],
    }
    out_json = harness.RESULTS / f"{args.name}.json"
    try:
        src = f"{run_id}-src"
        say(f"source {src}: {args.records} records into {args.partitions} partitions")
        padding = ["--record-bytes", str(args.record_bytes)] if args.record_bytes else []
        gen = harness.measure([bins.generate, "--brokers", args.brokers, "--topic", src,
                               "--partitions", str(args.partitions), "--count", str(args.records),
                               *padding],
                              scratch / "logs" / "generate.log", timeout=1200)
        if gen.rc != 0:
            sys.exit(f"the generator failed:\n{harness.tail(scratch / 'logs' / 'generate.log')}")
        kafka.created.append(src)
        scanned = harness.scan(args.brokers, src)
        if scanned.records != args.records:
            sys.exit(f"source has {scanned.records} records, expected {args.records}")
        source = {"topic": src, "records": scanned.records, "partitions": args.partitions,
                  "value_bytes_mean": scanned.value_bytes / scanned.records}
        results["source"] = source
        ctx = {"args": args, "kafka": kafka, "bins": bins, "scratch": scratch, "source": source,
               "run_id": run_id, "eos": ktransform_supports_eos(bins.ktransform),
               "log_dirs": kafka.log_dirs()}
        results["ktransform_eos_available"] = ctx["eos"]
        results["broker_log_dirs"] = ctx["log_dirs"]
        if not ctx["log_dirs"]:
            say("the broker's log.dirs are not on this machine: no bytes on disk measured")
        # Drain contenders in rounds (raw, ktransform, ..., raw, ktransform, ...) so that a
        # noisy minute on the shared machine does not hit all runs of one contender.
        runs = {c[0]: [] for c in CONTENDERS if c[0] in wanted}
        for rep in range(args.repeats):
            for name, label, kind, check in CONTENDERS:
                if name in wanted and (kind != "python" or rep == 0):
                    runs[name].append(run_contender(name, label, kind, check, ctx, rep))
                    results["runs"] = runs
                    harness.write_json(out_json, results)
        results["contenders"] = [median_run(r) for r in runs.values()]
        by_name = {c["name"]: c for c in results["contenders"]}
        raw = by_name.get("raw-copy")
        for c in results["contenders"]:
            if raw and raw.get("status") == "ok" and c.get("status") == "ok":
                c["ratio_to_raw"] = c["records_per_s"] / raw["records_per_s"]
                c["cpu_ratio_to_raw"] = c["cpu_s_per_million"] / raw["cpu_s_per_million"]
        compare_codecs(results["contenders"])
        if not args.no_latency:
            alo = by_name.get("ktransform-alo")
            rate = args.latency_rate or (alo["records_per_s"] / 2
                                         if alo and alo.get("status") == "ok" else None)
            if rate is None:
                say("latency: skipped (no ktransform at-least-once rate; give --latency-rate)")
            else:
                if "raw-copy" in wanted:
                    results["latency"].append(latency_run("raw", False, rate, ctx))
                results["latency"].append(latency_run("alo", False, rate, ctx))
                if ctx["eos"]:
                    results["latency"].append(latency_run("eos", True, rate, ctx))
                else:
                    results["latency"].append({"name": "eos", "label": "ktransform exactly-once",
                                               "status": "not available"})
        results["wall_minutes"] = (time.monotonic() - started) / 60
        harness.write_json(out_json, results)
        import report

        report.write_bench(results)
        say(f"wrote {harness.RESULTS.relative_to(ROOT)}/{args.name}.md, .json and charts "
            f"in {results['wall_minutes']:.1f} min")
        failed = [x["name"] for x in results["contenders"] + results["latency"]
                  if x.get("status") == "failed"]
        if failed:
            say(f"FAILED: {', '.join(failed)} (see the report)")
            sys.exit(1)
    finally:
        harness.kill_all()
        if not args.keep_topics:
            kafka.delete_created()


if __name__ == "__main__":
    main()
