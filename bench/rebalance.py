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
from rebalance_analysis import (  # noqa: E402
    KEYS, analyse, assignments, read_outputs, read_source, write_report,
)

PROTOCOLS = {
    "eager": ("eager (range)", ["-X", "consumer.partition.assignment.strategy=range"]),
    "cooperative": ("cooperative-sticky", []),
    "kip848": ("KIP-848 (consumer protocol)", ["--group-protocol", "consumer"]),
}
EVENT = re.compile(r"^([+k-])(\d+)$")
KINDS = {"+": "join", "-": "leave", "k": "kill"}


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
    p.add_argument("--broker-label", metavar="TEXT",
                   help="what the report says the broker is (default: the local broker of "
                        "scripts/kafka.sh as bench/harness.py describes it)")
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


# --- Main ---------------------------------------------------------------------------------------


def machine(args):
    m = harness.machine()
    if args.broker_label:
        m["broker"] = args.broker_label
    return m


def group_consumer_settings(brokers):
    """The broker's heartbeat interval and session timeout for KIP-848 groups, or None."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": brokers})
    try:
        node = next(iter(admin.list_topics(timeout=10).brokers))
        resource = ConfigResource("broker", str(node))
        config = admin.describe_configs([resource])[resource].result()
        return {"heartbeat_ms": int(config["group.consumer.heartbeat.interval.ms"].value),
                "session_ms": int(config["group.consumer.session.timeout.ms"].value)}
    except Exception:  # noqa: BLE001: a broker without the consumer protocol's settings
        return None


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
        "machine": machine(args),
        "broker_group_consumer": group_consumer_settings(args.brokers),
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


if __name__ == "__main__":
    main()
