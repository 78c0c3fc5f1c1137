#!/usr/bin/env python3
"""`make rebalance-bench`: what a hand-off costs, per group protocol.

For each protocol (eager = `range`, cooperative-sticky = the default, KIP-848 = `--group-protocol
consumer` when the binary has that flag) on fresh topics and a fresh group: one instance runs,
the generator produces at a fixed rate, and every --spacing seconds the group changes by the
next event of --events (default `+1,+2,-2,-1,+1,k1`: instances 1 -> 2 -> 4 join, 4 -> 2 -> 1
leave with SIGTERM, one joins and is then SIGKILLed; the kill comes last because the group only
notices it after the session timeout). Then the generator stops, the group catches up, the
instances left get SIGTERM, `ktransform verify` audits the run at-least-once, and the source
and destination are read back whole. Per event:

- replayed: outputs of a source record already delivered (its second and later copies), whose
  append to the destination falls after this event and before the next one. A record is
  produced twice only after its partition changed owner, and the new owner replays it within
  seconds, so with events --spacing seconds apart each replay falls after the event that
  caused it. The per-event counts add up to verify's duplicate count (checked).
- gap: the longest time between two consecutive outputs (destination append times) of one
  source partition that was assigned (an instance logged `partitions assigned`) in the window
  after the event.
- p99: end-to-end latency (CreateTime at the generator to first append in the destination) of
  the records produced in the --window seconds around the event.

Writes bench/results/<date>-rebalance.md, .json and .png.

    python3 bench/rebalance.py [--rate 20000] [--partitions 12] [--spacing 30]
        [--events +1,+2,-2,-1,+1,k1] [--protocols eager,cooperative,kip848]
"""

import argparse
import array
import datetime
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import ROOT, say  # noqa: E402

PROTOCOLS = {
    "eager": ("eager (range)", ["-X", "consumer.partition.assignment.strategy=range"]),
    "cooperative": ("cooperative-sticky", []),
    "kip848": ("KIP-848 (consumer protocol)", ["--group-protocol", "consumer"]),
}
EVENT = re.compile(r"^([+k-])(\d+)$")
KINDS = {"+": "join", "-": "leave", "k": "kill"}
# Keyed records: verify checks per-key order, and (key, value) pairs rarely repeat, so verify
# ties every output to its source record by content (the generator's unkeyed name pairs repeat
# every ~50,000 records).
KEYS = 1000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--partitions", type=int, default=12, help="source partitions")
    p.add_argument("--rate", type=float, default=20_000,
                   help="records/s produced, fixed (default 20,000: one instance drains "
                        "hundreds of thousands a second)")
    p.add_argument("--events", default="+1,+2,-2,-1,+1,k1",
                   help="group changes in order: +N N instances join, -N the N newest leave "
                        "(SIGTERM), kN the N newest are SIGKILLed")
    p.add_argument("--spacing", type=float, default=30, help="seconds between events")
    p.add_argument("--warmup", type=float, default=25,
                   help="seconds of production before the first event")
    p.add_argument("--kill-tail", type=float, default=55,
                   help="seconds of production after a final kill (the session timeout, 45 s by "
                        "default in both protocols, runs first)")
    p.add_argument("--window", type=float, default=30,
                   help="the latency window around each event, seconds")
    p.add_argument("--protocols", default="eager,cooperative,kip848",
                   help=f"of {','.join(PROTOCOLS)}")
    p.add_argument("--ktransform-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `ktransform run` (repeatable)")
    p.add_argument("--ktransform", action="append", default=[], metavar="[LABEL=]PATH",
                   help="measure this ktransform binary instead of the tree's release build; "
                        "repeatable: the builds run side by side, each protocol in turn "
                        "(e.g. main=../main/target/release/ktransform)")
    p.add_argument("--name", help="results file stem (default <date>-rebalance)")
    p.add_argument("--report-from", type=Path, metavar="JSON",
                   help="only write the report and chart again from a results file")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--keep-topics", action="store_true")
    args = p.parse_args()
    args.name = args.name or f"{datetime.date.today().isoformat()}-rebalance"
    args.protocol_list = args.protocols.split(",")
    unknown = set(args.protocol_list) - set(PROTOCOLS)
    if unknown:
        p.error(f"--protocols: unknown {sorted(unknown)}")
    args.event_list = []
    size = 1
    for token in args.events.split(","):
        m = EVENT.match(token)
        if not m:
            p.error(f"--events: {token!r} is not +N, -N or kN")
        kind, n = KINDS[m.group(1)], int(m.group(2))
        after = size + n if kind == "join" else size - n
        if n < 1 or after < 1:
            p.error(f"--events: {token!r} leaves no instance running")
        args.event_list.append({"token": token, "kind": kind, "n": n, "before": size,
                                "after": after})
        size = after
    return args


# --- The run of one protocol ------------------------------------------------------------------


class Committed:
    """Samples the group's committed offsets every 0.2 s on its own thread; keeps every step
    backwards (a commit that undoes a later one makes the next owner replay)."""

    def __init__(self, brokers, group, topic, partitions):
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": brokers, "group.id": group,
                                  "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.last = {}
        self.history = []  # (wall time, {partition: offset})
        self.backwards = []  # (wall time, partition, before, after)
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.2):
            try:
                tps = self.consumer.committed(self.tps, timeout=5)
            except Exception:  # noqa: BLE001: a missed sample, not a result
                continue
            now = time.time()
            self.samples += 1
            self.history.append((now, {tp.partition: tp.offset for tp in tps if tp.offset >= 0}))
            for tp in tps:
                if tp.offset < 0:
                    continue
                before = self.last.get(tp.partition)
                if before is not None and tp.offset < before:
                    self.backwards.append((now, tp.partition, before, tp.offset))
                self.last[tp.partition] = tp.offset

    def highest_before(self, partition, when):
        """The highest offset of ``partition`` sampled before ``when``, or None."""
        offsets = [o[partition] for t, o in self.history if t < when and partition in o]
        return max(offsets, default=None)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.consumer.close()


class Instance:
    def __init__(self, index, cmd, log):
        self.index = index
        self.log = log
        self.proc = harness.Started(cmd, log, timeout=3600)
        self.started = time.time()
        self.signalled = None  # (signal name, wall time)
        self.exited = None  # wall time, once seen
        self.measured = None

    def poll(self):
        if self.exited is None and not self.proc.running():
            self.exited = time.time()

    def finish(self):
        self.measured = self.proc.finish()
        if self.exited is None:
            self.exited = time.time()
        return self.measured


def run_protocol(protocol, build, ctx):
    args, kafka, bins, scratch = ctx["args"], ctx["kafka"], ctx["bins"], ctx["scratch"]
    label, flags = PROTOCOLS[protocol]
    stem = f"{ctx['run_id']}-{protocol}-{build['index']}"
    src, dest = f"{stem}-src", f"{stem}-out"
    group, dlq = dest, f"{dest}.dlq"
    logs = scratch / "logs" / f"{protocol}-{build['index']}"
    logs.mkdir(parents=True, exist_ok=True)
    kafka.create(src, args.partitions)
    kafka.create(dest, args.partitions, log_append_time=True)
    kafka.create(dlq, 1)
    tail = args.kill_tail if args.event_list[-1]["kind"] == "kill" else args.spacing
    seconds = args.warmup + (len(args.event_list) - 1) * args.spacing + tail
    count = int(args.rate * seconds)
    cmd = [build["path"], "run", "--brokers", args.brokers, "--source", src,
           "--destination", dest, "--group", group, "--dlq", dlq,
           *harness.ktransform_flags(build["path"]), *flags, *args.ktransform_arg]
    label = f"{label}, {build['label']}" if len(ctx["builds"]) > 1 else label
    say(f"{label}: {count:,} records at {args.rate:,.0f}/s over {seconds:.0f} s, "
        f"events {args.events}")

    instances, live = [], []

    def start():
        inst = Instance(len(instances), cmd, logs / f"instance-{len(instances)}.log")
        instances.append(inst)
        live.append(inst)
        return inst

    first = start()
    if not harness.wait_for_line(first.log, r"partitions assigned", 60):
        first.proc.kill(signal.SIGKILL)
        first.finish()
        return {"protocol": protocol, "build": build["label"], "label": label,
                "status": "failed",
                "problems": ["the first instance had no assignment within 60 s: "
                             + harness.tail(first.log, 5)]}
    committed = Committed(args.brokers, group, src, args.partitions)
    gen = harness.Started([bins.generate, "--brokers", args.brokers, "--topic", src,
                           "--count", str(count), "--rate", str(args.rate),
                           "--keyed", "--keys", str(KEYS)],
                          logs / "generate.log", timeout=seconds * 3 + 120)
    t0 = time.time()
    events = []
    for i, spec in enumerate(args.event_list):
        due = t0 + args.warmup + i * args.spacing
        while time.time() < due:
            for inst in instances:
                inst.poll()
            time.sleep(0.05)
        event = {**spec, "t": time.time(), "instances": []}
        if spec["kind"] == "join":
            for _ in range(spec["n"]):
                event["instances"].append(start().index)
        else:
            sig = signal.SIGTERM if spec["kind"] == "leave" else signal.SIGKILL
            for _ in range(spec["n"]):
                inst = live.pop()
                inst.signalled = (sig.name, time.time())
                inst.proc.kill(sig)
                event["instances"].append(inst.index)
        events.append(event)
        say(f"{label}: event {i + 1} {spec['token']} ({spec['kind']} {spec['before']} -> "
            f"{spec['after']}, instances {event['instances']})")
    while gen.running():
        for inst in instances:
            inst.poll()
        time.sleep(0.05)
    g = gen.finish()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and kafka.committed(group, src) < count:
        time.sleep(0.5)
    final_stop = time.time()
    for inst in live:
        inst.signalled = ("SIGTERM", time.time())
        inst.proc.kill(signal.SIGTERM)
    for inst in instances:
        inst.finish()
    committed.close()

    problems = []
    if g.rc != 0:
        problems.append(f"generator exited {g.rc}")
    for inst in instances:
        rc = inst.measured.rc
        killed = inst.signalled and inst.signalled[0] == "SIGKILL"
        if (rc != -signal.SIGKILL) if killed else (rc != 0):
            problems.append(f"instance {inst.index} exited {rc}: {harness.tail(inst.log, 3)}")

    say(f"{label}: ktransform verify, then reading {src} and {dest}")
    audit = verify(build["path"], args.brokers, src, dest, dlq, logs / "verify.log")
    if audit is None:
        problems.append(f"verify gave no report: {harness.tail(logs / 'verify.log', 5)}")
    source = read_source(args.brokers, src, count)
    outputs = read_outputs(args.brokers, dest)
    assigned = assignments(instances)
    result = analyse(args, source, outputs, events, final_stop, assigned, committed, t0)
    if audit is not None:
        counts = audit
        if counts["lost"]:
            problems.append(f"verify: {counts['lost']} lost")
        if not audit.get("passed"):
            problems.append(f"verify failed: {audit.get('failed_rules')}")
        if counts["duplicates"] != result["duplicates"]:
            problems.append(f"verify counts {counts['duplicates']} duplicates, the read-back "
                            f"{result['duplicates']}")
    if source["records"] != count:
        problems.append(f"{source['records']} source records, expected {count}")
    if result["missing"]:
        problems.append(f"{result['missing']} source records without an output")
    for e, inst_ids in ((e, e["instances"]) for e in result["events"] if e["kind"] == "leave"):
        e["stop_s"] = max((instances[i].exited - instances[i].signalled[1] for i in inst_ids),
                          default=None)
    return {
        "protocol": protocol, "build": build["label"], "label": label,
        "status": "ok" if not problems else "failed", "problems": problems,
        "command": " ".join(shlex.quote(str(c).replace(str(ROOT) + "/", "")) for c in cmd),
        "records": count, "seconds": seconds,
        "generator_achieved_rate": count / g.wall_s if g.wall_s else None,
        "verify": {k: v for k, v in audit.items() if k != "findings"} if audit else None,
        "committed_samples": committed.samples,
        "committed_backwards": committed.backwards,
        **result,
    }


def verify(binary, brokers, src, dest, dlq, log):
    cmd = [str(binary), "verify", "--brokers", brokers, "--source", src, "--destination", dest,
           "--dlq", dlq, "--guarantee", "at-least-once", "--json"]
    # The destination stamps each output with its append time (LogAppendTime, which the
    # latency needs), so no output can keep its input's timestamp: verify counts them only.
    help_text = subprocess.run([str(binary), "verify", "--help"], capture_output=True,
                               text=True).stdout
    if "--timestamp" in help_text:
        cmd += ["--timestamp", "now"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(p.stderr)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


# --- Reading the topics back ------------------------------------------------------------------


def _read(brokers, topic, each):
    """Calls each(message) for every record of ``topic``, from the start to its end."""
    from confluent_kafka import Consumer, KafkaError, OFFSET_BEGINNING, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-rebalance-read",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "fetch.max.bytes": 52428800, "queued.min.messages": 200000})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending, idle = set(parts), time.monotonic()
        while pending:
            batch = c.consume(num_messages=20000, timeout=1.0)
            if not batch:
                if time.monotonic() - idle > 60:
                    raise RuntimeError(f"reading {topic}: no progress for 60 s")
                continue
            idle = time.monotonic()
            for m in batch:
                err = m.error()
                if err is None:
                    each(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                else:
                    raise RuntimeError(f"reading {topic}: {err}")
    finally:
        c.close()


def _seq(m):
    for k, v in m.headers() or ():
        if k == "gen.seq":
            return int(v)
    raise RuntimeError(f"a record without gen.seq at {m.topic()}/{m.partition()}@{m.offset()}")


def read_source(brokers, topic, count):
    """Per generator sequence number: source partition, offset and CreateTime (ms)."""
    part = array.array("i", [-1]) * count
    offset = array.array("q", [-1]) * count
    ts = array.array("q", [0]) * count
    n = 0

    def each(m):
        nonlocal n
        s = _seq(m)
        part[s], offset[s], ts[s] = m.partition(), m.offset(), m.timestamp()[1]
        n += 1

    _read(brokers, topic, each)
    return {"records": n, "part": part, "offset": offset, "ts": ts}


def read_outputs(brokers, topic):
    """Every output's generator sequence number and append time (ms), in the order read."""
    seq, ts = array.array("q"), array.array("q")

    def each(m):
        seq.append(_seq(m))
        ts.append(m.timestamp()[1])

    _read(brokers, topic, each)
    return {"seq": seq, "ts": ts}


ASSIGNED = re.compile(r"^(\S+Z)\s+INFO\s.*partitions assigned.*partitions=\[([\d, ]*)\]")


def assignments(instances):
    """(wall time, partition) for every partition an instance logged as assigned."""
    out = []
    for inst in instances:
        for line in Path(inst.log).read_text(errors="replace").splitlines():
            m = ASSIGNED.match(line)
            if m:
                t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
                out += [(t, int(p)) for p in m.group(2).replace(" ", "").split(",") if p]
    return sorted(out)


# --- Per event ----------------------------------------------------------------------------------


def analyse(args, source, outputs, events, final_stop, assigned, committed, t0):
    import numpy as np

    part = np.frombuffer(source["part"], dtype=np.int32)
    src_off = np.frombuffer(source["offset"], dtype=np.int64)
    src_ts = np.frombuffer(source["ts"], dtype=np.int64)
    order = np.argsort(np.frombuffer(outputs["ts"], dtype=np.int64), kind="stable")
    seq = np.frombuffer(outputs["seq"], dtype=np.int64)[order]
    out_ts = np.frombuffer(outputs["ts"], dtype=np.int64)[order]
    # In append order, the first output of each sequence number is its delivery, the rest
    # are replays.
    uniq, first_idx = np.unique(seq, return_index=True)
    is_replay = np.ones(len(seq), dtype=bool)
    is_replay[first_idx] = False
    replay_ts, replay_seq = out_ts[is_replay], seq[is_replay]
    first = np.full(len(part), -1, dtype=np.int64)
    first[uniq] = out_ts[first_idx]
    delivered = first >= 0
    missing = int((~delivered).sum())
    by_production = np.argsort(src_ts[delivered], kind="stable")
    produced_at = src_ts[delivered][by_production]
    latency = (first[delivered] - src_ts[delivered])[by_production]
    out_part = part[seq]
    per_part = [out_ts[out_part == p] for p in range(args.partitions)]

    def p99_between(lo_ms, hi_ms):
        a, b = np.searchsorted(produced_at, [lo_ms, hi_ms])
        values = np.sort(latency[a:b])
        if not len(values):
            return None, None, 0
        return float(np.percentile(values, 99, method="nearest")), int(values[-1]), int(b - a)

    # p99 of each second of production, for the chart.
    timeline = []
    edges = np.arange(int(t0) * 1000, int(produced_at[-1]) + 1000, 1000) if len(latency) else []
    cuts = np.searchsorted(produced_at, edges)
    for lo_i, hi_i, edge in zip(cuts[:-1], cuts[1:], edges[:-1]):
        if hi_i > lo_i:
            timeline.append([round(edge / 1000 - t0, 1),
                             float(np.percentile(latency[lo_i:hi_i], 99, method="nearest"))])
    bounds = [e["t"] for e in events] + [final_stop, float("inf")]
    out_events = []
    for i, e in enumerate(events):
        lo, hi = bounds[i], bounds[i + 1]
        hi_ms = hi * 1000 if hi != float("inf") else np.iinfo(np.int64).max
        a, b = np.searchsorted(replay_ts, [lo * 1000, hi_ms])
        mine = replay_seq[a:b]
        by_part = {}
        for p in np.unique(part[mine]):
            offs = src_off[mine[part[mine] == p]]
            by_part[int(p)] = [int(offs.min()), int(offs.max())]
        # How far back the replayed records go, in seconds of production before the event.
        reach = float(e["t"] - src_ts[mine].min() / 1000) if len(mine) else None
        # Partitions whose replay starts below an offset the group had committed before the
        # event: a commit undone (or a new owner that did not start from the committed offset).
        below = {}
        for p, (lo_off, _) in by_part.items():
            highest = committed.highest_before(p, e["t"])
            if highest is not None and highest > lo_off:
                below[p] = highest
        window_end = hi if hi != float("inf") else lo + args.spacing
        moved = sorted({p for t, p in assigned if lo <= t < window_end})
        gap, gap_part = 0.0, None
        for p in moved:
            # Gaps that open from 1 s before this event to 1 s before the next one: a kill
            # stops the output at once, and that gap is the next event's.
            ts = per_part[p]
            x, y = np.searchsorted(ts, [(lo - 1) * 1000, (window_end - 1) * 1000])
            diffs = np.diff(ts[x:min(y + 1, len(ts))])
            if len(diffs) and diffs.max() / 1000 > gap:
                gap, gap_part = float(diffs.max()) / 1000, p
        half = args.window / 2
        p99, worst, n = p99_between((e["t"] - half) * 1000, (e["t"] + half) * 1000)
        out_events.append({
            "token": e["token"], "kind": e["kind"], "before": e["before"], "after": e["after"],
            "instances": e["instances"], "t": e["t"], "at_s": e["t"] - t0,
            "replayed": int(len(mine)), "replayed_partitions": by_part,
            "replay_reach_s": reach, "replays_below_committed": below,
            "moved_partitions": moved, "gap_s": gap if moved else None, "gap_partition": gap_part,
            "p99_ms": p99, "max_ms": worst, "latency_records": n,
        })
    before = int((replay_ts < bounds[0] * 1000).sum())
    after_stop = int((replay_ts >= final_stop * 1000).sum())
    warm_lo = t0 + 5
    warm_hi = (events[0]["t"] if events else final_stop) - args.window / 2
    baseline = p99_between(warm_lo * 1000, warm_hi * 1000) if warm_hi > warm_lo else (None,) * 3
    return {
        "events": out_events, "duplicates": int(len(replay_seq)), "missing": missing,
        "replayed_before_first_event": before, "replayed_after_final_stop": after_stop,
        "baseline_p99_ms": baseline[0], "baseline_records": baseline[2],
        "baseline_window_s": [warm_lo - t0, warm_hi - t0], "timeline": timeline,
        "final_stop_s": final_stop - t0,
    }


# --- Main ---------------------------------------------------------------------------------------


def builds_of(args, bins, scratch):
    """The binaries to measure, each copied into the scratch directory."""
    if not args.ktransform:
        return [{"index": 0, "label": "this tree", "path": bins.ktransform}]
    builds = []
    for i, given in enumerate(args.ktransform):
        label, _, path = given.rpartition("=")
        copy = scratch / "bin" / f"ktransform-{i}"
        shutil.copy2(path, copy)
        builds.append({"index": i, "label": label or Path(path).name, "path": copy,
                       "given": path})
    return builds


def main():
    harness.bootstrap()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    if args.report_from:
        write_report(json.loads(args.report_from.read_text()))
        return
    started = time.monotonic()
    run_id = f"rebalance-{time.strftime('%Y%m%d-%H%M%S')}"
    scratch = harness.run_dir(run_id)
    bins = harness.build(scratch, skip=args.no_build)
    builds = builds_of(args, bins, scratch)
    harness.ensure_broker(args.brokers)
    kafka = harness.Kafka(args.brokers)
    settings = {k: v for k, v in vars(args).items() if k not in ("event_list", "protocol_list")}
    results = {
        "name": args.name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 bench/rebalance.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": harness.machine(),
        "settings": settings,
        "builds": [{k: str(v) for k, v in b.items() if k != "path"} for b in builds],
        "run_id": run_id,
        "runs": [],
    }
    out_json = harness.RESULTS / f"{args.name}.json"
    ctx = {"args": args, "kafka": kafka, "bins": bins, "scratch": scratch, "run_id": run_id,
           "builds": builds}
    try:
        for protocol in args.protocol_list:
            for build in builds:
                help_text = harness.ktransform_run_help(build["path"])
                if protocol == "kip848" and "--group-protocol" not in help_text:
                    say(f"KIP-848 ({build['label']}): not available in this build "
                        "(no --group-protocol in `ktransform run --help`)")
                    results["runs"].append({
                        "protocol": protocol, "build": build["label"],
                        "label": PROTOCOLS[protocol][0], "status": "not available in this build"})
                    continue
                run = run_protocol(protocol, build, ctx)
                results["runs"].append(run)
                harness.write_json(out_json, results)
                say(f"{run['label']}: {run['status']} {run.get('problems') or ''}")
                for e in run.get("events", []):
                    say(f"  {e['token']:>3} {e['kind']:5} replayed {e['replayed']:>7,} "
                        f"gap {e['gap_s']} s p99 {e['p99_ms']} ms")
                if not args.keep_topics:
                    kafka.delete_created()
        results["wall_minutes"] = (time.monotonic() - started) / 60
        harness.write_json(out_json, results)
        write_report(results)
        say(f"wrote {harness.RESULTS.relative_to(ROOT)}/{args.name}.md, .json and .png in "
            f"{results['wall_minutes']:.1f} min")
        if any(r["status"] == "failed" for r in results["runs"]):
            say("FAILED runs: see the report")
            sys.exit(1)
    finally:
        harness.kill_all()
        if not args.keep_topics:
            kafka.delete_created()


# --- Report -------------------------------------------------------------------------------------


def graceful(e):
    return e["kind"] in ("join", "leave")


def run_summary(r):
    """One run's figures for the summary table and the targets."""
    events = r.get("events", [])
    grace = [e for e in events if graceful(e)]
    kills = [e for e in events if e["kind"] == "kill"]
    gaps = [e["gap_s"] for e in grace if e["gap_s"] is not None]
    p99s = [e["p99_ms"] for e in grace if e["p99_ms"] is not None]
    return {
        "lost": (r.get("verify") or {}).get("lost"),
        "replayed_graceful": sum(e["replayed"] for e in grace),
        "replayed_kill": sum(e["replayed"] for e in kills),
        "max_gap_graceful_s": max(gaps, default=None),
        "max_gap_kill_s": max((e["gap_s"] for e in kills if e["gap_s"] is not None),
                              default=None),
        "worst_p99_graceful_ms": max(p99s, default=None),
        "graceful_events": len(grace),
    }


def event_name(e):
    what = {"join": "join", "leave": "SIGTERM", "kill": "SIGKILL"}[e["kind"]]
    return f"{e['token']} {what} {e['before']}→{e['after']}"


def write_report(results):
    from report import fmt, machine_section, plt

    s, name = results["settings"], results["name"]
    runs = results["runs"]
    multi = len(results.get("builds", [])) > 1
    lines = [
        f"# What a hand-off costs: {name}",
        "",
        f"Generated by `bench/rebalance.py` on {results['date']} in "
        f"{results.get('wall_minutes', 0):.1f} min. Command:",
        "",
        "```sh",
        results["command"],
        "```",
        "",
        *machine_section(results),
    ]
    if multi:
        lines += ["Builds measured side by side (each protocol in turn, the builds one after "
                  "the other):", ""]
        lines += [f"- {b['label']}: `{b.get('given')}`" for b in results["builds"]]
        lines.append("")
    lines += [
        "## Method",
        "",
        f"For each protocol, on fresh topics ({s['partitions']} partitions) and a fresh group: "
        f"one instance runs, the generator produces {fmt(s['rate'])} records/s (keyed, "
        f"{KEYS} keys; one instance drains hundreds of thousands a second, so the group keeps "
        f"up at any size), and every {s['spacing']:g} s the group changes by the next event of "
        f"`{s['events']}` (`+N` N instances start, `-N` the N newest get SIGTERM, `kN` SIGKILL), "
        f"the first {s['warmup']:g} s after the generator starts. Then the generator stops, "
        "the group catches up, the instances left get SIGTERM and `ktransform verify` audits "
        "the run at-least-once (with `--timestamp now`: the destination keeps append times, "
        "which the latency needs, so outputs cannot keep their input's). The source and the destination (LogAppendTime) are then read "
        "back whole and each output is tied to its input by the generator's `gen.seq` header. "
        "Per event:",
        "",
        "- **replayed**: outputs of a record already delivered (its second and later copies) "
        "whose append falls after this event and before the next. A record is produced twice "
        "only when its partition changes owner before its offset is committed, and the new "
        "owner replays it within seconds of taking the partition; with events "
        f"{s['spacing']:g} s apart (the kill's replay comes after the session timeout, so the "
        "kill is last) every replay falls in the window of the event that caused it. The "
        "per-event counts add up to verify's duplicate count (checked). *From* says how far "
        "before the event the earliest replayed record was produced.",
        "- **gap**: the longest time between two consecutive outputs (append times) of one "
        "source partition among those an instance logged as assigned after the event, from "
        "1 s before the event to 1 s before the next.",
        f"- **p99**: end-to-end latency, CreateTime at the generator to the first append in the "
        f"destination, of the records produced in the {s['window']:g} s around the event; "
        "*before* is the same for seconds 5 to "
        f"{s['warmup'] - s['window'] / 2:g} of production, before any event's window "
        "(none when the first event comes sooner).",
        "- **stop**: how long an instance took from SIGTERM to its exit.",
        "",
        "Eager is `-X consumer.partition.assignment.strategy=range`, cooperative-sticky "
        "ktransform's default, KIP-848 `--group-protocol consumer` (the broker's `uniform` "
        "assignor; heartbeat interval and session timeout are the broker's). Everything else "
        "is at its default: librdkafka's `heartbeat.interval.ms` 3 s and "
        "`session.timeout.ms` 45 s, ktransform's `--drain-timeout` and `--shutdown-timeout` "
        "10 s.",
        "",
        "## Summary",
        "",
        "| protocol | status | lost | replayed, graceful events | replayed, SIGKILL "
        "| longest gap, graceful (s) | longest gap, SIGKILL (s) | worst p99 around a "
        "graceful event (ms) | p99 before (ms) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in runs:
        if r["status"] == "not available in this build":
            lines.append(f"| {r['label']} | not available in this build | | | | | | | |")
            continue
        x = run_summary(r)
        lines.append(
            f"| {r['label']} | {r['status']} | {fmt(x['lost'])} | {fmt(x['replayed_graceful'])} "
            f"| {fmt(x['replayed_kill'])} | {fmt(x['max_gap_graceful_s'], 2)} "
            f"| {fmt(x['max_gap_kill_s'], 1)} | {fmt(x['worst_p99_graceful_ms'])} "
            f"| {fmt(r.get('baseline_p99_ms'))} |")
    lines += ["", "Targets (issue 16):", ""]
    measured = [r for r in runs if r.get("events")]
    lost = [r for r in measured if run_summary(r)["lost"] != 0]
    lines.append(f"- 0 lost everywhere: {'met' if measured and not lost else 'NOT met'}"
                 + (f" ({', '.join(r['label'] for r in lost)})" if lost else "") + ".")
    for protocol, target in (("cooperative", "0 replayed on graceful events"),
                             ("kip848", "0 replayed on graceful events")):
        rs = [r for r in runs if r["protocol"] == protocol]
        for r in rs:
            if not r.get("events"):
                lines.append(f"- {target}, {r['label']}: {r['status']}.")
                continue
            n = run_summary(r)["replayed_graceful"]
            lines.append(f"- {target}, {r['label']}: {'met' if n == 0 else 'NOT met'} "
                         f"({fmt(n)}).")
    for r in [r for r in runs if r["protocol"] == "kip848"]:
        if r.get("events"):
            g = run_summary(r)["max_gap_graceful_s"]
            lines.append(f"- gap per graceful event under 1 s, {r['label']}: "
                         f"{'met' if g is not None and g < 1 else 'NOT met'} ({fmt(g, 2)} s).")
        else:
            lines.append(f"- gap per graceful event under 1 s, {r['label']}: {r['status']}.")
    if s["spacing"] < s["window"]:
        lines += ["", f"Events are {s['spacing']:g} s apart, closer than the {s['window']:g} s "
                  "latency window and than a replay can take to show: the per-event figures "
                  "overlap, and only the run's totals are the events' together."]
    lines += ["", f"![latency over the run, gaps and replays per event]({name}.png)", ""]
    lines += ["## Per event", ""]
    for r in measured:
        lines += [f"### {r['label']}", "",
                  f"{fmt(r['records'])} records over {r['seconds']:.0f} s; generator "
                  f"{fmt(r.get('generator_achieved_rate'))} records/s; committed offsets sampled "
                  f"{fmt(r.get('committed_samples'))} times, "
                  f"{len(r.get('committed_backwards') or [])} steps backwards.", "",
                  "| # | event | at (s) | replayed | from (s before) | partitions with replays "
                  "| partitions assigned | gap (s) | p99 (ms) | max (ms) | stop (s) |",
                  "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for i, e in enumerate(r["events"], 1):
            below = e.get("replays_below_committed") or {}
            lines.append(
                f"| {i} | {event_name(e)} | {e['at_s']:.0f} | {fmt(e['replayed'])} "
                f"| {fmt(e['replay_reach_s'], 1)} | {len(e['replayed_partitions'])}"
                f"{' (' + str(len(below)) + ' below a committed offset)' if below else ''} "
                f"| {len(e['moved_partitions'])} | {fmt(e['gap_s'], 2)} | {fmt(e['p99_ms'])} "
                f"| {fmt(e['max_ms'])} | {fmt(e.get('stop_s'), 2)} |")
        extra = []
        if r.get("replayed_before_first_event"):
            extra.append(f"{fmt(r['replayed_before_first_event'])} replayed before the first event")
        if r.get("replayed_after_final_stop"):
            extra.append(f"{fmt(r['replayed_after_final_stop'])} after the final stop")
        if r.get("problems"):
            extra.append("problems: " + "; ".join(r["problems"]))
        lines += [""] + ([", ".join(extra) + ".", ""] if extra else [])
        lines += [f"Command of each instance: `{r['command']}`", ""]
    (harness.RESULTS / f"{name}.md").write_text("\n".join(lines))
    chart(results, harness.RESULTS / f"{name}.png", plt)


def chart(results, path, plt):
    runs = [r for r in results["runs"] if r.get("events")]
    if not runs:
        return
    colors = {"eager": "#7f7f7f", "cooperative": "#d62728", "kip848": "#1f77b4"}
    styles = ["-", "--", ":", "-."]
    builds = [b["label"] for b in results.get("builds", [])] or ["this tree"]
    fig = plt.figure(figsize=(11, 7.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1])
    top = fig.add_subplot(grid[0, :])
    for r in runs:
        t = [p[0] for p in r["timeline"]]
        v = [max(p[1], 1) for p in r["timeline"]]
        style = styles[builds.index(r["build"]) % len(styles)] if r["build"] in builds else "-"
        top.plot(t, v, style, color=colors[r["protocol"]], linewidth=1, label=r["label"])
    for e in runs[0]["events"]:
        top.axvline(e["at_s"], color="black", linewidth=0.6, alpha=0.4)
        top.text(e["at_s"], 1.02, e["token"], transform=top.get_xaxis_transform(),
                 ha="center", fontsize=8)
    top.set_yscale("log")
    top.set_xlabel("seconds of production")
    top.set_ylabel("p99 latency of each second (ms)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    names = [event_name(e) for e in runs[0]["events"]]
    width = 0.8 / len(runs)
    for col, (key, title) in enumerate((("gap_s", "longest gap in a moved partition (s)"),
                                        ("replayed", "records replayed"))):
        ax = fig.add_subplot(grid[1, col])
        top_value = 0
        for i, r in enumerate(runs):
            xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(names))]
            ys = [e[key] or 0 for e in r["events"]]
            top_value = max(top_value, *ys)
            ax.bar(xs, ys, width, color=colors[r["protocol"]],
                   hatch=["", "//", "..", "xx"][builds.index(r["build"]) % 4]
                   if r["build"] in builds else "", label=r["label"])
            for x, y in zip(xs, ys):
                text = f"{y:.1f}" if key == "gap_s" else f"{y:,.0f}"
                ax.text(x, max(y, 0.011 if key == "gap_s" else 0), text, ha="center",
                        va="bottom", fontsize=6, rotation=90)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        if key == "gap_s":
            ax.set_yscale("log")
            ax.set_ylim(0.01, max(top_value, 1) * 8)
        else:
            ax.set_yscale("symlog", linthresh=10)
            ax.set_ylim(0, max(top_value, 10) * 8)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Hand-offs at {results['settings']['rate']:,.0f} records/s "
                 f"({results['name']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
