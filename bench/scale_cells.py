"""The pieces of `make scale-test` (bench/scale.py) that run and judge one configuration.

- ``Backlog``: one source topic per partition count, topped up before each cell to what that
  cell can read in its settle time and window, and reused by every cell of that count.
- ``Instances``: N `ktransform run` processes, each in its own CPU budget when there is one.
- ``steady_window()``: the drain rate as the destination's growth over a window that starts after
  the group settled, sampled every second, with the broker's and each instance's CPU over it.
- ``check_content()``: after a graceful stop, each destination partition must hold exactly what
  the group committed on the source partition of the same number (keyless records keep their
  partition), and a sample from every partition's tail must carry correct hashes.
"""

import signal
import time
from pathlib import Path

import harness
from harness import ROOT, say


class Backlog:
    def __init__(self, ctx, partitions):
        self.ctx = ctx
        self.partitions = partitions
        self.topic = f"{ctx['run_id']}-src-p{partitions}"
        self.records = 0
        self.generate_s = 0.0

    def ensure(self, records):
        """At least ``records`` in the topic (created on first use), written as fast as the
        generator goes, outside the instances' budgets."""
        records = min(records, self.ctx["args"].max_backlog)
        if records <= self.records:
            return
        add = records - self.records
        ctx = self.ctx
        say(f"P={self.partitions}: backlog {self.records:,} -> {records:,}")
        cmd = [ctx["bins"].generate, "--brokers", ctx["args"].brokers, "--topic", self.topic,
               "--partitions", str(self.partitions), "--count", str(add)]
        if ctx["budgets"]:
            cmd = ctx["budgets"].infra.wrap(cmd)
        gen = harness.measure(cmd, ctx["scratch"] / "logs" / f"generate-p{self.partitions}.log",
                              timeout=900)
        if gen.rc != 0:
            raise RuntimeError(f"generator failed for P={self.partitions}: see {gen.log}")
        if self.topic not in ctx["kafka"].created:
            ctx["kafka"].created.append(self.topic)
        self.records = sum(ctx["kafka"].high_watermarks(self.topic).values())
        self.generate_s += gen.wall_s

    def drop(self):
        kafka = self.ctx["kafka"]
        if self.topic in kafka.created:
            futures = kafka.admin.delete_topics([self.topic], operation_timeout=60)
            for f in futures.values():
                try:
                    f.result()
                except Exception as e:  # noqa: BLE001: cleanup goes on
                    say(f"could not delete {self.topic}: {e}")
            kafka.created.remove(self.topic)


class Instances:
    """N `ktransform run` in one group, each in its own budget group when budgets exist."""

    def __init__(self, ctx, source, dest, label, extra=()):
        self.ctx, self.source, self.dest, self.label = ctx, source, dest, label
        self.extra = list(extra)
        self.procs, self.groups = [], []

    def start_one(self):
        ctx = self.ctx
        i = len(self.procs)
        cmd = [ctx["bins"].ktransform, "run", "--brokers", ctx["args"].brokers,
               "--source", self.source, "--destination", self.dest, "--group", self.dest,
               "--dlq", f"{self.dest}.dlq", *harness.ktransform_flags(ctx["bins"].ktransform),
               *self.extra]
        group = ctx["budgets"].instance_group(f"{self.label}-i{i}") if ctx["budgets"] else None
        self.groups.append(group)
        self.procs.append(harness.Started(group.wrap(cmd) if group else cmd,
                                          ctx["scratch"] / "logs" / f"{self.label}-{i}.log",
                                          timeout=1800))
        self.command = " ".join(str(c).replace(str(ROOT) + "/", "") for c in cmd)

    def start(self, n):
        for _ in range(n):
            self.start_one()

    def cpu(self):
        return [harness.cpu_seconds_of(p.proc.pid) or 0.0 for p in self.procs]

    def throttling(self):
        return [g.throttling() if g else None for g in self.groups]

    def stop(self):
        """SIGTERM to all (a graceful drain and commit), then their exit codes."""
        for p in self.procs:
            p.kill(signal.SIGTERM)
        results = [p.finish() for p in self.procs]
        self.peak_rss_mb = [round(m.max_rss_mb) for m in results]
        for g in self.groups:
            if g:
                self.ctx["budgets"].release(g)
        return [m.rc for m in results]


def steady_window(ctx, inst, dest, seconds):
    """Destination growth over ``seconds``, sampled every second, with the CPU spent meanwhile."""
    ends = harness.EndOffsets(ctx["args"].brokers, dest)
    broker = harness.broker_pid()
    try:
        b0 = harness.cpu_seconds_of(broker) if broker else None
        c0, th0 = inst.cpu(), inst.throttling()
        t0, e0 = time.monotonic(), ends.total()
        samples = [(0.0, e0)]
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            e = ends.total()
            if e >= 0:
                samples.append((time.monotonic() - t0, e))
        wall = time.monotonic() - t0
        c1, th1 = inst.cpu(), inst.throttling()
        b1 = harness.cpu_seconds_of(broker) if broker else None
    finally:
        ends.close()
    (ts0, first), (ts1, last) = samples[0], samples[-1]
    rate = (last - first) / (ts1 - ts0) if ts1 > ts0 else 0.0
    mid = min(samples, key=lambda s: abs(s[0] - ts1 / 2))
    halves = [(mid[1] - first) / mid[0] if mid[0] else None,
              (last - mid[1]) / (ts1 - mid[0]) if ts1 > mid[0] else None]
    throttled = [b.minus(a) if a else None for a, b in zip(th0, th1)]
    return {
        "records_per_s": rate,
        "halves_per_s": halves,
        "window_s": round(wall, 2),
        "dest_at_end": last,
        "instance_cores": [round((b - a) / wall, 3) for a, b in zip(c0, c1)],
        "throttled_share": [round(t.throttled / t.periods, 2) if t and t.periods else None
                            for t in throttled],
        "broker_cores": round((b1 - b0) / wall, 3) if b0 is not None and b1 is not None else None,
    }


def check_content(ctx, source, dest, group, sample=20_000):
    """Problems found after a graceful stop (an empty list when the content is right)."""
    kafka = ctx["kafka"]
    committed = committed_by_partition(ctx["args"].brokers, group, source)
    ends = kafka.high_watermarks(dest)
    problems = []
    lost = sum(max(0, committed.get(p, 0) - ends.get(p, 0)) for p in committed)
    extra = sum(max(0, ends.get(p, 0) - committed.get(p, 0)) for p in ends)
    if lost:
        problems.append(f"{lost} committed source records have no output (lost)")
    if extra:
        problems.append(f"{extra} outputs more than committed inputs (replayed)")
    bad, checked = sample_hashes(ctx["args"].brokers, dest, ends, sample)
    if bad:
        problems.append(f"{bad} of {checked} sampled outputs have a wrong hash")
    return problems, {"committed": sum(committed.values()), "outputs": sum(ends.values()),
                      "hash_checked": checked}


def committed_by_partition(brokers, group, topic):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        tps = c.committed([TopicPartition(topic, p) for p in md.partitions], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in tps}
    finally:
        c.close()


def sample_hashes(brokers, topic, ends, sample):
    """Checks the hash of the last ``sample / partitions`` records of every partition."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    per = max(1, sample // max(1, len(ends)))
    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-sample",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    result = harness.Scan()
    try:
        starts = [TopicPartition(topic, p, max(0, end - per)) for p, end in ends.items() if end]
        if not starts:
            return 0, 0
        c.assign(starts)
        pending = {tp.partition for tp in starts}
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise RuntimeError(f"sample of {topic}: {m.error()}")
                harness._check(result, "splice", m.value())
        if pending:
            raise RuntimeError(f"sample of {topic}: partitions {sorted(pending)} not read")
    finally:
        c.close()
    return result.hash_bad, result.hash_checked


def wait_assigned(logs, count, timeout):
    """Until ``count`` of the logs say "partitions assigned" (False at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sum(1 for log in logs if "partitions assigned" in _read(log))
        if n >= count:
            return True
        time.sleep(0.2)
    return False


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
