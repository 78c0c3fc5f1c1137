"""CPU budgets for `make scale-test`: each ktransform instance in its own CPU cgroup with a quota,
emulating one small machine each on one host.

cgroup v1's `cpu` controller (`/sys/fs/cgroup/cpu`, writable as root): a group with
`cpu.cfs_quota_us / cpu.cfs_period_us = q` may use at most q cores. A process is put in its group
before it starts work (``wrap()``: `sh -c 'echo $$ > .../cgroup.procs; exec CMD'`), so every
thread it creates inherits the group. The broker and the generator go in one group with high
`cpu.shares` and no quota, so that on a shared machine the quotas, not the neighbours, limit the
instances. Where cgroups are not writable, ``Budgets.open()`` returns None and the caller runs
everything in the shared mode.

Per-instance CPU comes from ``/proc/<pid>/stat`` (the process with all its threads) and each
group's throttling from its `cpu.stat`.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
INFRA_SHARES = 8192
INSTANCE_SHARES = 4096


def writable_reason():
    """None when CPU cgroups can be created here, else why not (said in the report)."""
    if not (CPU_ROOT / "cpu.cfs_quota_us").exists():
        return f"{CPU_ROOT} has no cgroup v1 cpu controller"
    probe = CPU_ROOT / f"ktransform-probe-{os.getpid()}"
    try:
        probe.mkdir()
        (probe / "cpu.cfs_quota_us").write_text("10000")
        probe.rmdir()
    except OSError as e:
        return f"cannot create a CPU cgroup under {CPU_ROOT}: {e.strerror}"
    return None


@dataclass
class Throttling:
    periods: int
    throttled: int
    throttled_s: float

    def minus(self, other):
        return Throttling(self.periods - other.periods, self.throttled - other.throttled,
                          self.throttled_s - other.throttled_s)


class Group:
    """One CPU cgroup: created on construction, removed by ``remove()``."""

    def __init__(self, name, quota_cores=None, shares=1024):
        self.path = CPU_ROOT / name
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.shares").write_text(str(shares))
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        quota = -1 if quota_cores is None else max(1000, round(quota_cores * PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def wrap(self, cmd):
        """``cmd`` started inside this group (the same pid: `sh` execs it)."""
        quoted = " ".join("'" + str(c).replace("'", "'\\''") + "'" for c in cmd)
        return ["sh", "-c", f"echo $$ > {self.path}/cgroup.procs && exec {quoted}"]

    def add(self, pid):
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttling(self):
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return Throttling(int(stat["nr_periods"]), int(stat["nr_throttled"]),
                          int(stat["throttled_time"]) / 1e9)

    def pids(self):
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self, move_to=None):
        """Moves what is left in the group to ``move_to`` (the root by default) and removes it."""
        target = (move_to or CPU_ROOT) / "cgroup.procs"
        for pid in self.pids():
            try:
                target.write_text(str(pid))
            except OSError:
                pass
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # the last exiting threads leave the group asynchronously


class Budgets:
    """The run's groups: one for the broker and the generator, one per instance."""

    def __init__(self, run_id, quota_cores):
        self.run_id = run_id
        self.quota = quota_cores
        self.infra = Group(f"{run_id}-infra", None, INFRA_SHARES)
        self.instances = []
        self.moved = []  # pids moved into infra from elsewhere, moved back on close

    @classmethod
    def open(cls, run_id, quota_cores):
        return None if writable_reason() else cls(run_id, quota_cores)

    def adopt(self, pid):
        """Moves a running process (the broker) into the infra group until ``close()``."""
        self.infra.add(pid)
        self.moved.append(pid)

    def instance_group(self, label):
        g = Group(f"{self.run_id}-{label}", self.quota, INSTANCE_SHARES)
        self.instances.append(g)
        return g

    def release(self, group):
        group.remove()
        if group in self.instances:
            self.instances.remove(group)

    def close(self):
        for g in list(self.instances):
            self.release(g)
        for pid in self.moved:
            try:
                (CPU_ROOT / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass
        self.infra.remove()
