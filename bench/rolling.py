#!/usr/bin/env python3
"""`make rolling-bench`: a rolling restart of N instances, with and without `--instance-id`.

For each group protocol (classic = cooperative-sticky, the default; kip848 = `--group-protocol
consumer`) and each identity (dynamic: no id; static: `--instance-id rolling-<i>`), on fresh
topics and a fresh group: N instances run (`--log-format json`), the generator produces at a
fixed rate, and after --warmup seconds each instance in turn is SIGTERMed and, as soon as it
has exited, started again with the same flags (as a StatefulSet restarts a pod under its own
name); the next restart waits until the restarted one has its partitions and --settle seconds
have passed. Then the generator stops, the group catches up, every instance gets SIGTERM and
`ktransform verify` audits the run (at-least-once unless --guarantee says otherwise). Per
restart:

- rebalances of the others: the increase of `ktransform_rebalances_total` (one per rebalance
  callback, an assignment or a revocation, empty ones included) summed over the instances that
  were not restarted, scraped from their /metrics before the SIGTERM and after the settle.
- partitions moved to the others: partitions the other instances logged as assigned meanwhile.
- down: SIGTERM to the restarted instance's first assignment (its partitions' hand-off time).
- replayed: outputs of a source record already delivered whose append falls in this restart's
  window (from its SIGTERM to the next one's); they add up to verify's duplicate count.
- gap: the longest time between two consecutive outputs of one source partition in the window.

The classic protocol's session is the client's `session.timeout.ms` (ktransform leaves it at
librdkafka's 45 s); KIP-848's is the broker's `group.consumer.session.timeout.ms` (6 s on
scripts/kafka.sh's broker), and a restart must come back within it. Writes
bench/results/<date>-rolling.md and .json.

    python3 bench/rolling.py [--brokers 127.0.0.1:9092] [--instances 3] [--partitions 12]
        [--rate 5000] [--protocols classic,kip848] [--identities dynamic,static]
        [--guarantee at-least-once|exactly-once]
"""

import argparse
import datetime
import json
import shlex
import signal
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import ROOT, say  # noqa: E402
from rebalance import group_consumer_settings  # noqa: E402
from rebalance_analysis import KEYS, read_outputs, read_source  # noqa: E402

PROTOCOLS = {"classic": ("classic (cooperative-sticky)", []),
             "kip848": ("KIP-848 (consumer protocol)", ["--group-protocol", "consumer"])}
IDENTITIES = {"dynamic": "without ids", "static": "with --instance-id"}
# librdkafka's default, which ktransform keeps (src/config/mod.rs DEFAULT_SESSION_TIMEOUT_MS).
CLASSIC_SESSION_MS = 45_000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--instances", type=int, default=3)
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--rate", type=float, default=5_000, help="records/s produced, fixed")
    p.add_argument("--warmup", type=float, default=15, help="seconds before the first restart")
    p.add_argument("--settle", type=float, default=12,
                   help="seconds after a restarted instance has its partitions before the next "
                        "restart (and before the others' metrics are read)")
    p.add_argument("--protocols", default="classic,kip848", help=f"of {','.join(PROTOCOLS)}")
    p.add_argument("--identities", default="dynamic,static", help=f"of {','.join(IDENTITIES)}")
    p.add_argument("--guarantee", default="at-least-once", choices=["at-least-once", "exactly-once"],
                   help="of the instances, and the one verify checks")
    p.add_argument("--name", help="results file stem (default <date>-rolling)")
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    args.name = args.name or f"{datetime.date.today().isoformat()}-rolling"
    for what, known in (("protocols", PROTOCOLS), ("identities", IDENTITIES)):
        unknown = set(getattr(args, what).split(",")) - set(known)
        if unknown:
            p.error(f"--{what}: unknown {sorted(unknown)}")
    return args


# --- One instance, through its JSON log and its /metrics ---------------------------------------


class Instance:
    def __init__(self, slot, generation, cmd, logs):
        self.slot, self.generation = slot, generation
        self.log = logs / f"instance-{slot}-{generation}.log"
        self.proc = harness.Started(cmd, self.log, timeout=3600)
        self.started = time.time()
        self.signalled = None
        self.measured = None

    def lines(self):
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written, or not ours: the test suite checks the format
        return out

    def metrics_addr(self):
        for o in self.lines():
            if o.get("message", "").startswith("serving /metrics"):
                return o["addr"]
        return None

    def assignments(self):
        """(wall time, [partitions]) of every assignment the instance logged."""
        out = []
        for o in self.lines():
            if o.get("message") == "partitions assigned":
                t = datetime.datetime.fromisoformat(o["timestamp"].replace("Z", "+00:00"))
                parts = [int(p) for p in o["partitions"].strip("[]").split(",") if p.strip()]
                out.append((t.timestamp(), parts))
        return out

    def rebalances(self):
        addr = self.metrics_addr()
        if addr is None:
            return None
        try:
            text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("ktransform_rebalances_total "):
                return int(float(line.split()[1]))
        return None

    def wait_assigned(self, timeout, nonempty=True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [a for a in self.assignments() if a[1] or not nonempty]
            if got:
                return got[0][0]
            if not self.proc.running():
                return None
            time.sleep(0.05)
        return None


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    say(f"gave up waiting for {what} after {timeout} s")
    return False


# --- One run: a protocol and an identity --------------------------------------------------------


def run_one(protocol, identity, ctx):
    args, kafka, bins = ctx["args"], ctx["kafka"], ctx["bins"]
    stem = f"{ctx['run_id']}-{protocol}-{identity}"
    src, dest = f"{stem}-src", f"{stem}-out"
    group, dlq = dest, f"{dest}.dlq"
    logs = ctx["scratch"] / "logs" / f"{protocol}-{identity}"
    logs.mkdir(parents=True, exist_ok=True)
    kafka.create(src, args.partitions)
    kafka.create(dest, args.partitions, log_append_time=True)
    kafka.create(dlq, 1)
    label = f"{PROTOCOLS[protocol][0]}, {IDENTITIES[identity]}"

    def cmd(slot):
        c = [bins.ktransform, "run", "--brokers", args.brokers, "--source", src,
             "--destination", dest, "--group", group, "--dlq", dlq, "--log-format", "json",
             "--metrics-addr", "127.0.0.1:0", "--guarantee", args.guarantee,
             *PROTOCOLS[protocol][1]]
        return c + (["--instance-id", f"rolling-{slot}"] if identity == "static" else [])

    live = [Instance(slot, 0, cmd(slot), logs) for slot in range(args.instances)]
    everyone = list(live)
    problems = []
    if not wait_for("every instance's first partitions",
                    lambda: all(i.wait_assigned(0.01) for i in live), 90):
        problems.append("an instance had no partition within 90 s")
    time.sleep(3)  # the cooperative protocols' second round
    seconds = args.warmup + args.instances * (args.settle + 15) + 10
    count = int(args.rate * seconds)
    say(f"{label}: {count:,} records at {args.rate:,.0f}/s, {args.instances} restarts")
    gen = harness.Started([bins.generate, "--brokers", args.brokers, "--topic", src,
                           "--count", str(count), "--rate", str(args.rate),
                           "--keyed", "--keys", str(KEYS)],
                          logs / "generate.log", timeout=seconds * 3 + 120)
    t0 = time.time()
    time.sleep(args.warmup)
    steps = []
    for slot in range(args.instances):
        old = live[slot]
        others = [i for i in live if i is not old]
        before = {i.slot: i.rebalances() for i in others}
        t_term = time.time()
        old.signalled = t_term
        old.proc.kill(signal.SIGTERM)
        old.measured = old.proc.finish()
        t_exit = time.time()
        new = Instance(slot, old.generation + 1, cmd(slot), logs)
        everyone.append(new)
        live[slot] = new
        assigned_at = new.wait_assigned(90)
        if assigned_at is None:
            problems.append(f"restart {slot}: no partition within 90 s: "
                            f"{harness.tail(new.log, 3)}")
        time.sleep(args.settle)
        after = {i.slot: i.rebalances() for i in others}
        if None in before.values() or None in after.values():
            problems.append(f"restart {slot}: a /metrics scrape failed")
        moved = sorted({p for i in others for t, parts in i.assignments()
                        if t >= t_term for p in parts})
        steps.append({
            "slot": slot, "t": t_term, "at_s": t_term - t0, "stop_s": t_exit - t_term,
            "down_s": assigned_at - t_term if assigned_at else None,
            "rebalances_of_others": sum((after[s] or 0) - (before[s] or 0) for s in after),
            "rebalances_by_instance": {s: [before[s], after[s]] for s in after},
            "moved_to_others": moved,
            "restarted_rc": old.measured.rc,
        })
        say(f"{label}: restart {slot}: down {steps[-1]['down_s'] or 0:.2f} s, others' "
            f"rebalances +{steps[-1]['rebalances_of_others']}, moved to others {moved}")
    while gen.running():
        time.sleep(0.1)
    g = gen.finish()
    wait_for("the group to commit everything",
             lambda: kafka.committed(group, src) >= count, 180)
    final_stop = time.time()
    for inst in live:
        inst.proc.kill(signal.SIGTERM)
    for inst in live:
        inst.measured = inst.proc.finish()
    for inst in everyone:
        if inst.measured.rc != 0:
            problems.append(f"instance {inst.slot}.{inst.generation} exited {inst.measured.rc}: "
                            f"{harness.tail(inst.log, 2)}")
    if g.rc != 0:
        problems.append(f"generator exited {g.rc}")
    say(f"{label}: ktransform verify, then reading {src} and {dest}")
    audit = verify(bins.ktransform, args, src, dest, dlq, logs / "verify.log")
    per_step, duplicates, missing = replays(args, read_source(args.brokers, src, count),
                                            read_outputs(args.brokers, dest), steps, final_stop)
    if audit is None:
        problems.append(f"verify gave no report: {harness.tail(logs / 'verify.log', 5)}")
    else:
        if audit["lost"] or not audit.get("passed"):
            problems.append(f"verify: lost {audit['lost']}, failed {audit.get('failed_rules')}")
        if audit["duplicates"] != duplicates:
            problems.append(f"verify counts {audit['duplicates']} duplicates, the read-back "
                            f"{duplicates}")
    if missing:
        problems.append(f"{missing} source records without an output")
    for step, extra in zip(steps, per_step):
        step.update(extra)
    kafka.delete_created()
    return {"protocol": protocol, "identity": identity, "label": label,
            "status": "ok" if not problems else "failed", "problems": problems,
            "records": count, "command": " ".join(shlex.quote(str(c).replace(str(ROOT) + "/", ""))
                                                  for c in cmd(0)),
            "verify": {k: v for k, v in (audit or {}).items() if k != "findings"},
            "duplicates": duplicates, "steps": steps}


def verify(binary, args, src, dest, dlq, log):
    """`ktransform verify --json` of the run, or None. The destination stamps each output with
    its append time (LogAppendTime), so outputs cannot keep their input's timestamp."""
    import subprocess

    cmd = [str(binary), "verify", "--brokers", args.brokers, "--source", src, "--destination",
           dest, "--dlq", dlq, "--guarantee", args.guarantee, "--timestamp", "now", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(p.stderr)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def replays(args, source, outputs, steps, final_stop):
    """Per restart: replayed outputs appended in its window and the longest gap of a partition."""
    import numpy as np

    part = np.frombuffer(source["part"], dtype=np.int32)
    order = np.argsort(np.frombuffer(outputs["ts"], dtype=np.int64), kind="stable")
    seq = np.frombuffer(outputs["seq"], dtype=np.int64)[order]
    ts = np.frombuffer(outputs["ts"], dtype=np.int64)[order]
    uniq, first = np.unique(seq, return_index=True)
    replay = np.ones(len(seq), dtype=bool)
    replay[first] = False
    missing = int(len(part) - len(uniq))
    bounds = [s["t"] for s in steps] + [final_stop]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        window = (ts >= lo * 1000) & (ts < hi * 1000)
        gap = 0.0
        for p in range(args.partitions):
            t = ts[window & (part[seq] == p)]
            if len(t) > 1:
                gap = max(gap, float(np.diff(t).max()) / 1000)
        out.append({"replayed": int((replay & window).sum()), "gap_s": gap})
    return out, int(replay.sum()), missing


# --- Report -------------------------------------------------------------------------------------


def down(step):
    return f"{step['down_s']:.1f}" if step["down_s"] is not None else "-"


def write_report(results):
    r = results
    lines = [
        f"# Rolling restart of {r['settings']['instances']} instances, with and without "
        f"--instance-id ({r['date'][:10]})", "",
        f"`{r['command']}` on {harness.describe_machine(r['machine'])}; "
        f"{r['machine']['broker']}, git {r['machine']['git']}.", "",
        f"{r['settings']['guarantee']}; "
        f"{r['settings']['partitions']} partitions, the generator at "
        f"{r['settings']['rate']:,.0f} records/s throughout; each instance in turn SIGTERMed "
        f"and started again as soon as it exited, the next one {r['settings']['settle']:.0f} s "
        "after the restarted one had its partitions. Session timeouts: classic "
        f"{CLASSIC_SESSION_MS / 1000:.0f} s (librdkafka's `session.timeout.ms`, which ktransform "
        "keeps), KIP-848 "
        + (f"{r['broker_group_consumer']['session_ms'] / 1000:.0f} s (the broker's "
           "`group.consumer.session.timeout.ms`)" if r.get("broker_group_consumer")
           else "unknown") + ".", "",
        "| protocol | ids | rebalances of the others (per restart) | partitions moved to the "
        "others | down (s, per restart) | replayed (verify) | longest gap (s) | status |",
        "|---|---|--:|--:|---|--:|--:|---|",
    ]
    for run in r["runs"]:
        steps = run.get("steps", [])
        lines.append(
            f"| {PROTOCOLS[run['protocol']][0]} | {IDENTITIES[run['identity']]} | "
            f"{sum(s['rebalances_of_others'] for s in steps)} "
            f"({', '.join(str(s['rebalances_of_others']) for s in steps)}) | "
            f"{sum(len(s['moved_to_others']) for s in steps)} | "
            f"{', '.join(down(s) for s in steps)} | "
            f"{run['verify'].get('duplicates', '?')} | "
            f"{max((s['gap_s'] for s in steps), default=0):.1f} | {run['status']} |")
    lines += ["", "Rebalances are `ktransform_rebalances_total` (one per rebalance callback, "
              "empty ones included) of the instances not being restarted, read before the "
              "SIGTERM and after the settle; replayed is `ktransform verify`'s duplicate count "
              "(the read-back of the destination agrees per restart). Down is from the SIGTERM "
              "to the restarted instance's first assignment.", ""]
    for run in r["runs"]:
        if run["problems"]:
            lines.append(f"- {run['label']}: " + "; ".join(run["problems"]))
    path = harness.RESULTS / f"{r['name']}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main():
    harness.bootstrap()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    started = time.monotonic()
    run_id = f"rolling-{time.strftime('%Y%m%d-%H%M%S')}"
    scratch = harness.run_dir(run_id)
    bins = harness.build(scratch, skip=args.no_build)
    harness.ensure_broker(args.brokers)
    kafka = harness.Kafka(args.brokers)
    machine = harness.machine()
    results = {
        "name": args.name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python3 bench/rolling.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": machine, "broker_group_consumer": group_consumer_settings(args.brokers),
        "settings": vars(args), "run_id": run_id, "runs": [],
    }
    out_json = harness.RESULTS / f"{args.name}.json"
    ctx = {"args": args, "kafka": kafka, "bins": bins, "scratch": scratch, "run_id": run_id}
    try:
        for protocol in args.protocols.split(","):
            for identity in args.identities.split(","):
                run = run_one(protocol, identity, ctx)
                results["runs"].append(run)
                harness.write_json(out_json, results)
                say(f"{run['label']}: {run['status']} {run['problems'] or ''}")
        results["wall_minutes"] = (time.monotonic() - started) / 60
        harness.write_json(out_json, results)
        path = write_report(results)
        say(f"wrote {path.relative_to(ROOT)} and .json in {results['wall_minutes']:.1f} min")
        if any(r["status"] == "failed" for r in results["runs"]):
            sys.exit(1)
    finally:
        harness.kill_all()
        kafka.delete_created()


if __name__ == "__main__":
    main()
