"""What bench/soak.py (`make soak`) runs its instances in and samples while it runs: the CPU
cgroups, each instance's /metrics, and the processes, topics and group over time."""

import re
import threading
import time
import urllib.request
from pathlib import Path

import harness
from harness import say

CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")


class Cgroup:
    """A cgroup v1 CPU quota (see /work/shared/reference: CFS periods of 100 ms)."""

    def __init__(self, name, cores):
        self.path = CGROUP_ROOT / name
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text("100000")
        (self.path / "cpu.cfs_quota_us").write_text(str(int(cores * 100000)))

    def wrap(self, cmd):
        """cmd, started inside the group (so every thread it creates is in it)."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs; exec "$@"', "sh", *cmd]

    def throttled(self):
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return {k: int(v) for k, v in stat.items()}

    def remove(self):
        try:
            self.path.rmdir()
        except OSError as e:
            say(f"could not remove {self.path}: {e}")


# --- Sampling -----------------------------------------------------------------------------------------


PROM = re.compile(r'^(\w+)(?:\{([^}]*)\})?\s+(\S+)')


def scrape(url):
    """The metrics the soak reports, summed over labels, from one /metrics; None if it failed."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        m = PROM.match(line)
        if not m or line.startswith("#"):
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "ktransform_errors_total":
            kind = re.search(r'kind="([^"]*)"', labels)
            name = f"errors.{kind.group(1) if kind else '?'}"
        elif name == "ktransform_stall_heals_total":
            step = re.search(r'step="([^"]*)"', labels)
            name = f"stall_heals.{step.group(1) if step else '?'}"
        elif name.startswith("ktransform_") and not name.endswith(("_bucket", "_sum", "_count",
                                                                     "_created")):
            name = name[len("ktransform_"):]
        else:
            continue
        out[name] = out.get(name, 0) + value
    return out


class Sampler:
    """Two threads: /proc and /metrics every --sample seconds (never waits on Kafka), and the
    topics' end offsets, the group's committed offsets and the disk (which wait while the broker
    restarts)."""

    def __init__(self, args, group, kafka, src, dest, groupname, cgroups):
        from confluent_kafka import Consumer, TopicPartition

        self.args, self.group, self.kafka = args, group, kafka
        self.cgroups = cgroups
        self.topics = [src, dest, f"{dest}.dlq"]
        self.procs = []  # {t, label, slot, rss_kb, cpu_s, metrics}
        self.offsets = []  # {t, src_end, committed, dest_ends}
        self.disk = []  # (t, bytes)
        self.throttling = []  # (t, slot, nr_periods, nr_throttled)
        self.src = harness.EndOffsets(args.brokers, src)
        self.dest = harness.EndOffsets(args.brokers, dest)
        self.committed = Consumer({"bootstrap.servers": args.brokers, "group.id": groupname,
                                   "enable.auto.commit": False})
        self.tps = [TopicPartition(src, p) for p in range(args.partitions)]
        self.log_dirs = kafka.log_dirs()
        self.stop = threading.Event()
        self.over_disk = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._procs, self._kafka)]
        for t in self.threads:
            t.start()

    def _procs(self):
        while not self.stop.wait(self.args.sample):
            now = time.time()
            targets = [(i.label, i.slot, i.pid, i) for i in self.group.snapshot()]
            broker = harness.broker_pid()
            if broker:
                targets.append((f"broker:{broker}", "broker", broker, None))
            for label, slot, pid, inst in targets:
                s = harness.proc_sample(pid)
                if s is None:
                    continue
                row = {"t": now, "label": label, "slot": slot, "rss_kb": s[0], "cpu_s": s[1]}
                if inst is not None and inst.url():
                    row["metrics"] = scrape(inst.url())
                self.procs.append(row)
            for slot, cg in self.cgroups.items():
                st = cg.throttled()
                self.throttling.append((now, slot, st.get("nr_periods", 0),
                                        st.get("nr_throttled", 0)))

    def _kafka(self):
        last_disk = 0
        while not self.stop.wait(self.args.sample):
            now = time.time()
            dest = self.dest.per_partition()
            src = self.src.total()
            try:
                committed = sum(max(tp.offset, 0) for tp in
                                self.committed.committed(self.tps, timeout=10))
            except Exception:  # noqa: BLE001: a missed sample (the broker restarting)
                committed = None
            if dest is not None:
                self.offsets.append({"t": now, "src_end": src, "committed": committed,
                                     "dest_ends": dest})
            if now - last_disk >= 60 and self.log_dirs:
                last_disk = now
                size = harness.topics_bytes(self.log_dirs, self.topics)
                self.disk.append((now, size))
                if size > self.args.max_gb * 1e9:
                    self.over_disk.set()

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        self.src.close()
        self.dest.close()
        self.committed.close()
