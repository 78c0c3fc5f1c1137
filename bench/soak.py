#!/usr/bin/env python3
"""`make soak`: ktransform for half an hour under a steady load, with a fault every few minutes.

Two instances ("a" and "b", each in a CPU cgroup capped at --cpu of a core: small machines,
and a run that the other load on this host cannot speed up or starve beyond its cap) consume a
keyed source topic. First the rate: a backlog of --drain-records is drained by the two, and the
destination's growth over a steady window is their drain rate; the soak produces at --fraction
of it (half by default), or at --rate. Then, after --first-event seconds and every --every
seconds, the next event of the cycle:

- kill: SIGKILL instance b, and start it again at once (its partitions wait for the session
  timeout, then b's new process takes them);
- broker: `scripts/kafka.sh stop-node 1` and `start-node 1` (a clean stop and a start on the
  data it has: the broker is the one the environment's KAFKA_PORT / KAFKA_STATE_DIR name);
- out: instance c joins; in: instance c leaves (SIGTERM).

Every --sample seconds: each instance's and the broker's RSS and CPU (/proc), each instance's
/metrics (stalled partitions, stall and other errors, rewinds, rebalances, drain-deadline
replays), and the topics' end offsets and the group's committed offsets. Every minute: the
topics' bytes on disk (the run stops producing if they pass --max-gb). At the end the group
catches up, the instances get SIGTERM, `ktransform verify` audits the run at-least-once, and the
destination is read back to count the replays (second and later outputs of a generator
sequence number) and place each after the event it followed, by its append time (from the
sampled end offsets). Writes bench/results/<date>-soak.md, .json and -soak.png; deletes its
topics.

    python3 bench/soak.py [--minutes 30] [--rate R | --fraction 0.5] [--cpu 0.05]
        [--every 180] [--brokers 127.0.0.1:9092]
"""

import argparse
import datetime
import json
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import ROOT, say  # noqa: E402
from soak_report import count_replays, write_report  # noqa: E402
from soak_sample import CGROUP_ROOT, Cgroup, Sampler  # noqa: E402

CYCLE = ("kill", "broker", "out", "in")
KEYS = 1000  # as bench/rebalance.py: verify checks per-key order
METRICS_ADDR = re.compile(r"serving /metrics.*addr=(\S+)")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--minutes", type=float, default=30, help="length of the production")
    p.add_argument("--rate", type=float, help="records/s (default: --fraction of the drain rate "
                   "measured at the start)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="of the measured drain rate, when no --rate")
    p.add_argument("--cpu", type=float, default=0.05,
                   help="cores each instance may use (a cgroup v1 CFS quota); 0: no cap")
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--drain-records", type=int, default=4_000_000,
                   help="the backlog whose drain measures the rate")
    p.add_argument("--first-event", type=float, default=120, help="seconds before the first event")
    p.add_argument("--every", type=float, default=180, help="seconds between events")
    p.add_argument("--events", default=",".join(CYCLE),
                   help=f"the cycle of events, of {','.join(CYCLE)}")
    p.add_argument("--broker-down", type=float, default=0,
                   help="seconds a broker event keeps the broker stopped before starting it "
                        "(default 0: as long as the stop and the start take)")
    p.add_argument("--sample", type=float, default=5, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=5,
                   help="minutes of a process's life left out of the flatness figure")
    p.add_argument("--window", type=float, default=10,
                   help="minutes of the flatness figure's first and last windows")
    p.add_argument("--max-gb", type=float, default=15,
                   help="the topics' bytes on disk at most; refuses to start if the projection "
                        "is larger, stops producing if passed")
    p.add_argument("--ktransform-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `ktransform run` (repeatable)")
    p.add_argument("--name", help="results file stem (default <date>-soak)")
    p.add_argument("--report-from", type=Path, metavar="JSON",
                   help="only write the report and chart again from a results file")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--keep-topics", action="store_true")
    args = p.parse_args()
    args.name = args.name or f"{datetime.date.today().isoformat()}-soak"
    args.cycle = args.events.split(",")
    if set(args.cycle) - set(CYCLE):
        p.error(f"--events: unknown {sorted(set(args.cycle) - set(CYCLE))}")
    return args


# --- Instances ------------------------------------------------------------------------------------


class Instance:
    """One process of a slot ("a", "b", "c"); a slot's processes are its lineage."""

    def __init__(self, slot, generation, cmd, logs, cgroup):
        self.slot, self.generation = slot, generation
        self.label = f"{slot}{generation}"
        self.log = logs / f"instance-{self.label}.log"
        self.proc = harness.Started(cgroup.wrap(cmd) if cgroup else cmd, self.log,
                                    timeout=6 * 3600)
        self.pid = self.proc.proc.pid
        self.started = time.time()
        self.signalled = None  # (signal name, wall time)
        self.exited = None
        self.rc = None
        self.metrics_url = None

    def url(self):
        if self.metrics_url is None:
            try:
                m = METRICS_ADDR.search(self.log.read_text(errors="replace"))
            except OSError:
                m = None
            if m:
                self.metrics_url = f"http://{m.group(1)}/metrics"
        return self.metrics_url

    def signal(self, sig):
        self.signalled = (sig.name, time.time())
        self.proc.kill(sig)

    def poll(self):
        if self.exited is None and not self.proc.running():
            self.finish()
        return self.exited is None

    def finish(self):
        self.rc = self.proc.finish().rc
        if self.exited is None:
            self.exited = time.time()

    def record(self):
        return {"label": self.label, "slot": self.slot, "pid": self.pid,
                "started": self.started, "exited": self.exited, "rc": self.rc,
                "signalled": self.signalled, "log": str(self.log.relative_to(ROOT))}


class Group:
    def __init__(self, cmd, logs, cgroups):
        self.cmd, self.logs, self.cgroups = cmd, logs, cgroups
        self.all, self.live = [], {}
        self.lock = threading.Lock()

    def start(self, slot):
        generation = sum(1 for i in self.all if i.slot == slot) + 1
        inst = Instance(slot, generation, self.cmd, self.logs, self.cgroups.get(slot))
        with self.lock:
            self.all.append(inst)
            self.live[slot] = inst
        return inst

    def stop(self, slot, sig):
        with self.lock:
            inst = self.live.pop(slot)
        inst.signal(sig)
        return inst

    def snapshot(self):
        with self.lock:
            return [i for i in self.all if i.exited is None]

    def restart_exited(self):
        """As a supervisor would (Kubernetes, systemd's Restart=on-failure): a live slot whose
        process exited by itself gets a new one; the restart events."""
        events = []
        for slot, inst in list(self.live.items()):
            if inst.signalled is None and not inst.poll():
                with self.lock:
                    self.live.pop(slot, None)
                cause = harness.tail(inst.log, 1).strip()[-300:]
                new = self.start(slot)
                events.append({"kind": "restart", "t": time.time(), "rc": inst.rc,
                               "instances": [inst.label, new.label], "cause": cause,
                               "cut_off": "cut off from group" in cause})
                say(f"event restart: {inst.label} exited {inst.rc} by itself; {new.label} started")
        return events

    def poll(self):
        for inst in self.snapshot():
            inst.poll()


# --- The run ---------------------------------------------------------------------------------------


def ktransform_cmd(binary, args, src, dest):
    return [binary, "run", "--brokers", args.brokers, "--source", src, "--destination", dest,
            "--group", dest, "--dlq", f"{dest}.dlq", "--metrics-addr", "127.0.0.1:0",
            *args.ktransform_arg]


def create_topics(kafka, args, src, dest):
    kafka.create(src, args.partitions)
    kafka.create(dest, args.partitions)
    kafka.create(f"{dest}.dlq", 1)


def measure_drain(args, ctx):
    """The records/s that instances a and b drain from a backlog, from the destination's growth
    between 10 s after both have partitions and 30 s later (or 90% of the backlog)."""
    kafka, bins, logs = ctx["kafka"], ctx["bins"], ctx["scratch"] / "logs" / "drain"
    logs.mkdir(parents=True, exist_ok=True)
    src, dest = f"{ctx['run_id']}-drain-src", f"{ctx['run_id']}-drain-out"
    create_topics(kafka, args, src, dest)
    say(f"drain: producing a backlog of {args.drain_records:,} records")
    gen = harness.measure([bins.generate, "--brokers", args.brokers, "--topic", src,
                           "--count", str(args.drain_records), "--keyed", "--keys", str(KEYS)],
                          logs / "generate.log", timeout=1800)
    if gen.rc:
        sys.exit(f"the backlog's generator exited {gen.rc}: {harness.tail(gen.log, 5)}")
    group = Group(ktransform_cmd(bins.ktransform, args, src, dest), logs, ctx["cgroups"])
    ends = harness.EndOffsets(args.brokers, dest)
    try:
        a, b = group.start("a"), group.start("b")
        for inst in (a, b):
            if not harness.wait_for_line(inst.log, r"partitions assigned", 90):
                sys.exit(f"drain: {inst.label} had no partitions after 90 s: "
                         f"{harness.tail(inst.log, 5)}")
        time.sleep(10)
        t0, n0 = time.time(), ends.total()
        t1, n1 = t0, n0
        while time.time() - t0 < 30 and n1 < 0.9 * args.drain_records:
            time.sleep(1)
            n = ends.total()
            if n >= 0:
                t1, n1 = time.time(), n
        if t1 - t0 < 5 or n0 < 0:
            sys.exit("drain: the window was too short; raise --drain-records")
        rate = (n1 - n0) / (t1 - t0)
        on_disk = harness.topics_bytes(kafka.log_dirs(), [src, dest])
        records = args.drain_records + n1
        for inst in (a, b):
            group.stop(inst.slot, signal.SIGTERM)
            inst.finish()
    finally:
        ends.close()
        for inst in group.snapshot():
            inst.proc.kill(signal.SIGKILL)
            inst.finish()
    kafka.delete_created()
    say(f"drain: {rate:,.0f} records/s over {t1 - t0:.1f} s ({n1 - n0:,} records)")
    return {"rate": rate, "window_s": t1 - t0, "records_in_window": n1 - n0,
            "backlog": args.drain_records, "bytes_per_record": on_disk / records if records else None}


def broker_restart(down=0.0):
    """Stops the broker cleanly, keeps it stopped `down` seconds more, and starts it on its
    data; (stopped, served) wall times."""
    t = {"t_stop": time.time(), "down_s": down}
    for step in ("stop-node", "start-node"):
        if step == "start-node" and down:
            time.sleep(down)
        p = subprocess.run(["bash", str(harness.KAFKA_SH), step, "1"], capture_output=True,
                           text=True)
        t[f"t_{step.split('-')[0]}_done"] = time.time()
        t[f"{step}_output"] = (p.stdout + p.stderr).strip()[-500:]
        if p.returncode:
            t["failed"] = f"{step} exited {p.returncode}: {t[f'{step}_output']}"
            break
    return t


def do_event(kind, group, broker_down=0.0):
    event = {"kind": kind, "t": time.time()}
    if kind == "kill":
        old = group.stop("b", signal.SIGKILL)
        old.finish()
        event["instances"] = [old.label, group.start("b").label]
    elif kind == "broker":
        event.update(broker_restart(broker_down))
    elif kind == "out":
        event["instances"] = [group.start("c").label]
    elif kind == "in":
        if "c" in group.live:
            event["instances"] = [group.stop("c", signal.SIGTERM).label]
        else:
            event["skipped"] = "no instance c"
    say(f"event {kind}: {({k: v for k, v in event.items() if not k.endswith('output')})}")
    return event


def soak(args, ctx, rate):
    kafka, bins = ctx["kafka"], ctx["bins"]
    logs = ctx["scratch"] / "logs" / "soak"
    logs.mkdir(parents=True, exist_ok=True)
    src, dest = f"{ctx['run_id']}-src", f"{ctx['run_id']}-out"
    create_topics(kafka, args, src, dest)
    seconds = args.minutes * 60
    count = int(rate * seconds)
    cmd = ktransform_cmd(bins.ktransform, args, src, dest)
    group = Group(cmd, logs, ctx["cgroups"])
    for slot in ("a", "b"):
        inst = group.start(slot)
        if not harness.wait_for_line(inst.log, r"serving /metrics", 60):
            sys.exit(f"{inst.label} did not start: {harness.tail(inst.log, 5)}")
    sampler = Sampler(args, group, kafka, src, dest, dest, ctx["cgroups"])
    say(f"soak: {count:,} records at {rate:,.0f}/s over {args.minutes:g} min")
    gen = harness.Started([bins.generate, "--brokers", args.brokers, "--topic", src,
                           "--count", str(count), "--rate", str(rate), "--keyed",
                           "--keys", str(KEYS)], logs / "generate.log",
                          timeout=seconds * 2 + 600)
    t0 = time.time()
    events, problems, i = [], [], 0
    while gen.running():
        group.poll()
        events.extend(group.restart_exited())
        due = t0 + args.first_event + i * args.every
        if time.time() >= due and due < t0 + seconds - 60:
            events.append(do_event(args.cycle[i % len(args.cycle)], group, args.broker_down))
            if events[-1].get("failed"):
                problems.append(f"event {i + 1}: {events[-1]['failed']}")
            i += 1
        if sampler.over_disk.is_set():
            problems.append(f"the topics passed {args.max_gb} GB on disk: production stopped "
                            f"{(time.time() - t0) / 60:.1f} min in")
            gen.kill(signal.SIGTERM)
            break
        time.sleep(0.2)
    g = gen.finish()
    t_end = time.time()
    produced = harness.EndOffsets(args.brokers, src)
    expected = produced.total()
    produced.close()
    if g.rc and not sampler.over_disk.is_set():
        problems.append(f"generator exited {g.rc}: {harness.tail(g.log, 3)}")
    say(f"soak: production done ({expected:,} records); waiting for the group to catch up")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and kafka.committed(dest, src) < expected:
        group.poll()
        events.extend(group.restart_exited())
        time.sleep(1)
    caught_up = kafka.committed(dest, src)
    if caught_up < expected:
        problems.append(f"the group committed {caught_up:,} of {expected:,} after 10 min")
    t_caught_up = time.time()
    for slot in list(group.live):
        group.stop(slot, signal.SIGTERM)
    for inst in group.all:
        if inst.exited is None:
            inst.finish()
    sampler.close()
    for inst in group.all:
        killed = inst.signalled and inst.signalled[0] == "SIGKILL"
        cut_off = any(e["kind"] == "restart" and e["cut_off"] and e["instances"][0] == inst.label
                      for e in events)
        if cut_off:
            continue  # ktransform's own heal (exit 1, restarted): shown among the events
        if (inst.rc != -signal.SIGKILL) if killed else (inst.rc != 0):
            problems.append(f"instance {inst.label} exited {inst.rc}: "
                            f"{harness.tail(inst.log, 3)}")

    say("soak: ktransform verify")
    audit = verify(bins.ktransform, args.brokers, src, dest, logs / "verify.log")
    if audit is None:
        problems.append(f"verify gave no report: {harness.tail(logs / 'verify.log', 5)}")
    elif not audit.get("passed"):
        problems.append(f"verify failed: {audit.get('failed_rules')}")
    say("soak: reading the destination back for the replays")
    replays = count_replays(args.brokers, dest, count, sampler.offsets)
    if audit is not None and audit.get("duplicates") != replays["replays"]:
        problems.append(f"verify counts {audit.get('duplicates')} duplicates, the read-back "
                        f"{replays['replays']}")
    disk_end = harness.topics_bytes(sampler.log_dirs, sampler.topics) if sampler.log_dirs else None
    return {
        "command": " ".join(shlex.quote(str(c).replace(str(ROOT) + "/", "")) for c in cmd),
        "t0": t0, "t_end": t_end, "t_caught_up": t_caught_up, "rate": rate,
        "records": expected, "planned_records": count,
        "generator_achieved_rate": expected / g.wall_s if g.wall_s else None,
        "events": events, "instances": [i.record() for i in group.all],
        "samples": sampler.procs, "offsets": sampler.offsets, "disk": sampler.disk,
        "disk_end": disk_end, "throttling": sampler.throttling,
        "verify": {k: v for k, v in audit.items() if k != "findings"} if audit else None,
        "verify_findings": (audit or {}).get("findings", [])[:20],
        "replays": replays, "problems": problems,
    }


def verify(binary, brokers, src, dest, log):
    cmd = [str(binary), "verify", "--brokers", brokers, "--source", src, "--destination", dest,
           "--dlq", f"{dest}.dlq", "--guarantee", "at-least-once", "--json"]
    started = time.monotonic()
    proc = harness.Started(cmd, log)
    m = proc.finish()
    try:
        out = json.loads(m.stdout)
    except ValueError:
        return None
    out["wall_s"], out["max_rss_mb"] = m.wall_s, m.max_rss_mb
    out["elapsed_s"] = time.monotonic() - started
    return out


# --- Main -------------------------------------------------------------------------------------------


def main():
    harness.bootstrap()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    if args.report_from:
        write_report(json.loads(args.report_from.read_text()))
        return
    started = time.monotonic()
    run_id = f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    scratch = harness.run_dir(run_id)
    bins = harness.build(scratch, skip=args.no_build)
    harness.ensure_broker(args.brokers)
    kafka = harness.Kafka(args.brokers)
    cgroups = {}
    if args.cpu > 0:
        if not CGROUP_ROOT.is_dir():
            sys.exit(f"{CGROUP_ROOT} is missing: run with --cpu 0 (no cap)")
        try:
            cgroups = {slot: Cgroup(f"{run_id}-{slot}", args.cpu) for slot in ("a", "b", "c")}
        except OSError as e:
            sys.exit(f"cannot set a CPU quota under {CGROUP_ROOT} ({e}): run as root, or --cpu 0")
    results = {
        "name": args.name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 bench/soak.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": harness.machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "report_from"},
        "run_id": run_id,
    }
    out_json = harness.RESULTS / f"{args.name}.json"
    ctx = {"kafka": kafka, "bins": bins, "scratch": scratch, "run_id": run_id,
           "cgroups": cgroups}
    try:
        results["drain"] = measure_drain(args, ctx)
        rate = args.rate or round(results["drain"]["rate"] * args.fraction)
        per_record = results["drain"]["bytes_per_record"]
        if per_record:
            projected = per_record * rate * args.minutes * 60
            results["projected_bytes"] = projected
            say(f"projected on disk: {projected / 1e9:.1f} GB ({per_record:.0f} B per record, "
                "source and destination)")
            if projected > args.max_gb * 1e9:
                sys.exit(f"{projected / 1e9:.1f} GB projected > --max-gb {args.max_gb}: "
                         "lower --cpu, --fraction or --minutes")
        results["soak"] = soak(args, ctx, rate)
        results["wall_minutes"] = (time.monotonic() - started) / 60
        harness.write_json(out_json, results)
        write_report(results)
        say(f"wrote {harness.RESULTS.relative_to(ROOT)}/{args.name}.md, .json and .png in "
            f"{results['wall_minutes']:.1f} min")
        if results["soak"]["problems"]:
            say("PROBLEMS: " + "; ".join(results["soak"]["problems"]))
            sys.exit(1)
    finally:
        harness.kill_all()
        if not args.keep_topics:
            kafka.delete_created()
        for cg in cgroups.values():
            cg.remove()


if __name__ == "__main__":
    main()
