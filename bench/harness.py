"""What bench/run.py (`make bench`) and bench/scale.py (`make scale-test`) share.

- ``bootstrap()``: run under bench/.venv (created and filled from bench/python/requirements.txt
  on first use, or when that file changes), re-executing the calling script there.
- ``build()``: the release binaries (and the Kafka Streams jar), copied into the run's scratch
  directory so that a rebuild by someone else during a run cannot change what is measured.
- ``measure()``: runs one command as its own process group and returns its wall time, the CPU
  time and peak RSS of the whole process tree (``os.wait4`` rusage: the child plus every
  descendant it waited for) and the peak of the tree's summed RSS (sampled from /proc).
- ``scan()``: reads a topic to its end (read_committed) and counts, sums, checks the hash of
  every record, and keeps what a latency computation needs.
- ``topic_on_disk()``: the bytes, batches and compression codecs of a topic's log segments
  on the local broker's disk.
- ``topics_bytes()``: what topics take on the local broker's disk, cheaply (for bounded runs).
- ``proc_sample()``: RSS and CPU seconds of one process, from /proc.
- Topic admin, broker checks, and a description of the machine.
"""

import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
REQUIREMENTS = BENCH / "python" / "requirements.txt"
RESULTS = BENCH / "results"
SCRATCH = RESULTS / "tmp"  # git-ignored
KSTREAMS = BENCH / "kstreams"
KAFKA_SH = ROOT / "scripts" / "kafka.sh"
BROKER_PID_FILE = (
    Path(os.environ.get("KAFKA_STATE_DIR", Path.home() / ".cache/ktransform/broker"))
    / "node-1"
    / "kafka.pid"
)


def say(*parts):
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


# --- Environment --------------------------------------------------------------------------


def bootstrap():
    """Re-exec the calling script under bench/.venv, creating or updating it first."""
    venv_python = VENV / "bin" / "python"
    stamp = VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not venv_python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        say(f"preparing {VENV.relative_to(ROOT)} from {REQUIREMENTS.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "-r", str(REQUIREMENTS)],
            check=True,
        )
        stamp.write_text(wanted)
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])


def run_dir(name):
    path = SCRATCH / name
    (path / "logs").mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Binaries:
    ktransform: Path
    generate: Path
    raw_copy: Path
    kstreams_classpath: str | None = None


def build(scratch, kstreams=False, skip=False):
    """Builds (unless skip) and copies the binaries into scratch/bin."""
    if not skip:
        say("building the release binaries (cargo build --release)")
        subprocess.run(
            ["cargo", "build", "--release", "--bin", "ktransform", "--example", "generate",
             "--example", "raw_copy"],
            cwd=ROOT, check=True,
        )
        if kstreams:
            say("building the Kafka Streams contender (mvn -B -q package)")
            # Output only on failure: even with -B -q, Debian's Maven prints colour codes.
            p = subprocess.run(["mvn", "-B", "-q", "package", "-DskipTests"], cwd=KSTREAMS,
                               capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"mvn package failed in {KSTREAMS}:\n{p.stdout}{p.stderr}")
    bin_dir = scratch / "bin"
    bin_dir.mkdir(exist_ok=True)
    release = ROOT / "target" / "release"
    sources = {
        "ktransform": release / "ktransform",
        "generate": release / "examples" / "generate",
        "raw_copy": release / "examples" / "raw_copy",
    }
    copies = {}
    for name, src in sources.items():
        if not src.exists():
            sys.exit(f"{src} is missing: build it (drop --no-build)")
        copies[name] = bin_dir / name
        shutil.copy2(src, copies[name])
    classpath = None
    if kstreams:
        jar = KSTREAMS / "target" / "kstreams-bench-0.jar"
        if not jar.exists():
            sys.exit(f"{jar} is missing: build it (drop --no-build)")
        jar_dir = scratch / "kstreams"
        if jar_dir.exists():
            shutil.rmtree(jar_dir)
        shutil.copytree(KSTREAMS / "target" / "lib", jar_dir / "lib")
        shutil.copy2(jar, jar_dir)
        classpath = f"{jar_dir / jar.name}:{jar_dir / 'lib'}/*"
    return Binaries(copies["ktransform"], copies["generate"], copies["raw_copy"], classpath)


def ktransform_run_help(binary):
    return subprocess.run([str(binary), "run", "--help"], capture_output=True, text=True).stdout


def ktransform_flags(binary):
    """Flags every measured `ktransform run` gets: an ephemeral port for the metrics endpoint
    (when the binary has one), so that several instances, or another engineer's, never clash
    on the default port. The endpoint stays on: its cost is part of ktransform's."""
    return ["--metrics-addr", "127.0.0.1:0"] if "--metrics-addr" in ktransform_run_help(binary) else []


def ensure_broker(brokers):
    if brokers != "127.0.0.1:9092":
        return  # someone else's broker: only check that it answers (the admin calls will)
    if subprocess.run(["bash", str(KAFKA_SH), "status"], stdout=subprocess.DEVNULL).returncode:
        say("the local broker is not running; starting it (scripts/kafka.sh up)")
        subprocess.run(["bash", str(KAFKA_SH), "up"], check=True)


def broker_pid():
    """The broker's pid: from scripts/kafka.sh's pid file under KAFKA_STATE_DIR (or the default
    state directory), else the one `kafka.Kafka` process running, if there is exactly one (a
    private broker started with another state directory). None when neither says."""
    try:
        pid = int(BROKER_PID_FILE.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in args:
            found.append(int(entry.name))
    return found[0] if len(found) == 1 else None


def cpu_seconds_of(pid):
    """user+sys of one live process (not its children), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine():
    info = {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    info["cpu_model"] = model.group(1).strip() if model else "unknown"
    mhz = re.search(r"^cpu MHz\s*:\s*(.+)$", cpuinfo, re.M)
    info["cpu_mhz"] = float(mhz.group(1)) if mhz else None
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    info["memory_gib"] = round(int(mem.group(1)) / 2**20, 1) if mem else None
    info["loadavg_at_start"] = os.getloadavg()[0]
    for key, cmd in {
        "rustc": ["rustc", "--version"],
        "java": ["java", "-version"],
        "git": ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
    }.items():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            info[key] = (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            info[key] = "unknown"
    import confluent_kafka

    info["confluent_kafka"] = confluent_kafka.__version__
    info["librdkafka_python"] = confluent_kafka.libversion()[0]
    # The version the running broker was started with (scripts/kafka.sh records it; KAFKA_VERSION
    # chooses it).
    state = Path(os.environ.get("KAFKA_STATE_DIR") or Path.home() / ".cache/ktransform/broker")
    recorded = state / "node-1" / "kafka.version"
    version = recorded.read_text().strip() if recorded.exists() else "unknown"
    info["broker"] = f"Apache Kafka {version}, single KRaft node on the same machine (scripts/kafka.sh)"
    return info


def describe_machine(m):
    return (
        f"{m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average {m['loadavg_at_start']:.2f} at start; broker on the same machine"
    )


# --- Running and measuring a process --------------------------------------------------------


@dataclass
class Measured:
    cmd: list
    rc: int
    wall_s: float
    user_s: float
    sys_s: float
    # Largest single process of the tree: the highest VmHWM sampled. Not ru_maxrss: when
    # Python starts the child with vfork, exec folds the parent's (the harness's) high-water
    # mark into the child's ru_maxrss.
    max_rss_mb: float
    tree_rss_mb: float  # peak of the summed RSS of the live tree, sampled every 0.25 s
    timed_out: bool
    broker_cpu_s: float | None
    loadavg_before: float
    # Context switches of the process (voluntary: it waited; involuntary: it was preempted).
    voluntary_switches: int
    involuntary_switches: int
    stdout: str
    log: str

    @property
    def cpu_s(self):
        return self.user_s + self.sys_s


def _children_map():
    children = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_memory_kb(root):
    """(summed VmRSS, largest VmHWM) over the live process tree of ``root``."""
    children = _children_map()
    total, peak, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss = re.search(r"^VmRSS:\s*(\d+)", status, re.M)
        hwm = re.search(r"^VmHWM:\s*(\d+)", status, re.M)
        total += int(rss.group(1)) if rss else 0
        peak = max(peak, int(hwm.group(1)) if hwm else 0)
    return total, peak


LIVE = set()  # Started processes not finished yet: kill_all() ends them if the harness fails


def kill_all():
    for started in list(LIVE):
        started.kill(signal.SIGKILL)


class Started:
    """A process group started by us; ``finish()`` waits for it and measures it."""

    def __init__(self, cmd, log_path, env=None, timeout=None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = log_path
        self.stdout_path = log_path.with_suffix(".out")
        self.loadavg = os.getloadavg()[0]
        self.broker = broker_pid()
        self.broker_cpu0 = cpu_seconds_of(self.broker) if self.broker else None
        self._stdout = open(self.stdout_path, "w")
        self._stderr = open(log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._stdout, stderr=self._stderr, cwd=ROOT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        LIVE.add(self)
        self._exited = None  # (status, rusage, when), once reaped
        self.peak_tree_kb = 0
        self.peak_hwm_kb = 0
        self._done = threading.Event()
        self._timed_out = False
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._timer = None
        if timeout:
            self._timer = threading.Timer(timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _sample(self):
        while not self._done.wait(0.25):
            total, hwm = tree_memory_kb(self.proc.pid)
            self.peak_tree_kb = max(self.peak_tree_kb, total)
            self.peak_hwm_kb = max(self.peak_hwm_kb, hwm)

    def _expire(self):
        self._timed_out = True
        say(f"timeout: killing {self.cmd[0]} (pid {self.proc.pid}) and its group")
        self.kill(signal.SIGKILL)

    def kill(self, sig=signal.SIGTERM):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def running(self):
        """Reaps the process if it has exited (never use self.proc.poll(): it would reap it
        without keeping the rusage)."""
        if self._exited is None:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self._exited = (status, usage, time.monotonic())
        return self._exited is None

    def finish(self):
        if self._exited is None:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self._exited = (status, usage, time.monotonic())
        status, usage, ended = self._exited
        wall = ended - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        LIVE.discard(self)
        self._done.set()
        if self._timer:
            self._timer.cancel()
        self.kill(signal.SIGKILL)  # anything of ours the child left behind
        self._stdout.close()
        self._stderr.close()
        broker_cpu = None
        if self.broker and self.broker_cpu0 is not None:
            now = cpu_seconds_of(self.broker)
            broker_cpu = None if now is None else now - self.broker_cpu0
        return Measured(
            cmd=self.cmd, rc=self.proc.returncode, wall_s=wall,
            user_s=usage.ru_utime, sys_s=usage.ru_stime,
            max_rss_mb=self.peak_hwm_kb / 1024, tree_rss_mb=self.peak_tree_kb / 1024,
            timed_out=self._timed_out, broker_cpu_s=broker_cpu, loadavg_before=self.loadavg,
            voluntary_switches=usage.ru_nvcsw, involuntary_switches=usage.ru_nivcsw,
            stdout=self.stdout_path.read_text(), log=str(self.log_path.relative_to(ROOT)),
        )


def measure(cmd, log_path, env=None, timeout=None):
    return Started(cmd, log_path, env=env, timeout=timeout).finish()


def tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for_line(path, pattern, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if re.search(pattern, Path(path).read_text(errors="replace")):
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


# --- Topics -------------------------------------------------------------------------------


class Kafka:
    def __init__(self, brokers):
        from confluent_kafka.admin import AdminClient

        self.brokers = brokers
        self.admin = AdminClient({"bootstrap.servers": brokers})
        self.created = []

    def create(self, topic, partitions, log_append_time=False):
        from confluent_kafka.admin import NewTopic

        config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
        new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
        for future in self.admin.create_topics([new], operation_timeout=30).values():
            future.result()
        self.created.append(topic)
        # Wait until the metadata shows every partition with a leader.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = self.admin.list_topics(topic, timeout=10).topics.get(topic)
            if md and not md.error and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"topic {topic} not ready after 30 s")

    def delete_created(self):
        if not self.created:
            return
        futures = self.admin.delete_topics(self.created, operation_timeout=60)
        for topic, future in futures.items():
            try:
                future.result()
            except Exception as e:  # noqa: BLE001: cleanup goes on
                say(f"could not delete {topic}: {e}")
        self.created.clear()

    def log_dirs(self):
        """The brokers' data directories (`log.dirs`, else `log.dir`) that exist on this
        machine, where topic_on_disk() looks; empty for a broker elsewhere. Asked of the
        brokers rather than taken from scripts/kafka.sh's layout, so that KAFKA_STATE_DIR or
        another local broker cannot make the harness measure the wrong directory."""
        from confluent_kafka.admin import ConfigResource

        dirs = []
        for broker in self.admin.list_topics(timeout=10).brokers:
            resource = ConfigResource("broker", str(broker))
            config = self.admin.describe_configs([resource])[resource].result()
            entry = config.get("log.dirs") or config.get("log.dir")
            if entry is not None and entry.value:
                dirs += [d for d in entry.value.split(",") if Path(d).is_dir()]
        return dirs

    def high_watermarks(self, topic):
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.brokers, "group.id": "bench-hw",
                      "enable.auto.commit": False})
        try:
            md = c.list_topics(topic, timeout=10).topics[topic]
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in md.partitions}
        finally:
            c.close()

    def committed(self, group, topic):
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.brokers, "group.id": group,
                      "enable.auto.commit": False})
        try:
            md = c.list_topics(topic, timeout=10).topics[topic]
            tps = c.committed([TopicPartition(topic, p) for p in md.partitions], timeout=10)
            return sum(max(tp.offset, 0) for tp in tps)
        finally:
            c.close()


class EndOffsets:
    """Sums a topic's high watermarks, repeatedly, with one client."""

    def __init__(self, brokers, topic):
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": brokers, "group.id": "bench-hw",
                                  "enable.auto.commit": False})
        md = self.consumer.list_topics(topic, timeout=10).topics[topic]
        self.partitions = sorted(md.partitions)

    def total(self):
        """The sum, or -1 if the broker could not say just now (leader moving, timeout)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            return sum(self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                           timeout=10, cached=False)[1]
                       for p in self.partitions)
        except KafkaException:
            return -1

    def per_partition(self):
        """{partition: high watermark}, or None if the broker could not say just now."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                           timeout=10, cached=False)[1]
                    for p in self.partitions}
        except KafkaException:
            return None

    def close(self):
        self.consumer.close()


def topics_bytes(log_dirs, topics):
    """The bytes allocated to every file in the partition directories of ``topics`` (segments,
    indexes; allocated, since the broker preallocates its index files sparse): what the topics
    take on the local broker's disk. Cheap enough to call every minute, unlike topic_on_disk(),
    which walks the batches."""
    pattern = re.compile("(?:" + "|".join(re.escape(t) for t in topics) + r")-\d+")
    total = 0
    for d in log_dirs:
        for part in Path(d).iterdir():
            if pattern.fullmatch(part.name) and part.is_dir():
                for f in part.iterdir():
                    try:
                        total += f.stat().st_blocks * 512
                    except OSError:  # a segment deleted or renamed meanwhile
                        pass
    return total


def proc_sample(pid):
    """(VmRSS in kB, user+sys CPU seconds) of one live process, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = re.search(r"^VmRSS:\s*(\d+)", status, re.M)
    cpu = cpu_seconds_of(pid)
    if rss is None or cpu is None:
        return None
    return int(rss.group(1)), cpu


# Record batch format v2 (magic 2): the fields up to and including the record count.
BATCH_HEADER_BYTES = 61
BATCH_CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def topic_on_disk(log_dirs, topic):
    """What ``topic`` takes in its partitions' log segments (``<log dir>/<topic>-<n>/*.log``):
    bytes, and from a walk over the record batch headers, the batches, the records in them and
    how many batches each compression codec stored. The batch headers say what the broker
    stored, so the report need not assume that it kept the producer's batches as sent. None
    when no partition directory of the topic is on this machine."""
    partition = re.compile(re.escape(topic) + r"-\d+")
    segments = [seg for d in log_dirs for part in Path(d).iterdir()
                if partition.fullmatch(part.name) for seg in part.glob("*.log")]
    if not segments:
        return None
    stats = {"bytes": 0, "batches": 0, "records": 0, "batches_by_codec": {}}
    for seg in segments:
        stats["bytes"] += seg.stat().st_size
        with open(seg, "rb") as f:
            while len(header := f.read(BATCH_HEADER_BYTES)) == BATCH_HEADER_BYTES:
                length = int.from_bytes(header[8:12], "big")  # of the rest, after this field
                attributes = int.from_bytes(header[21:23], "big")
                if not attributes & 0x20:  # not a transaction marker
                    codec = BATCH_CODECS.get(attributes & 0x7, f"codec {attributes & 0x7}")
                    by_codec = stats["batches_by_codec"]
                    by_codec[codec] = by_codec.get(codec, 0) + 1
                    stats["batches"] += 1
                    stats["records"] += int.from_bytes(header[57:61], "big")
                f.seek(12 + length - BATCH_HEADER_BYTES, os.SEEK_CUR)
    return stats


HASH_SPLICE = re.compile(rb',?"hash":"([0-9a-f]{32})"\}\s*$')
HASH_JSON = re.compile(rb'"hash": ?"([0-9a-f]{32})"\}\s*$')


@dataclass
class Scan:
    records: int = 0
    value_bytes: int = 0
    min_ts: int | None = None  # ms, of the records' timestamps
    max_ts: int | None = None
    hash_checked: int = 0
    hash_bad: int = 0
    first_bad: str | None = None
    timestamp_types: set = field(default_factory=set)
    by_seq: dict | None = None  # gen.seq -> timestamp, when asked for

    def as_dict(self):
        d = {k: v for k, v in self.__dict__.items() if k not in ("by_seq", "timestamp_types")}
        d["timestamp_types"] = sorted(self.timestamp_types)
        return d


def scan(brokers, topic, check=None, keep_seq=False):
    """Reads ``topic`` from the beginning to its end (read_committed).

    check: None; "splice": the value must be some input with ``,"hash":"<md5>"`` spliced in,
    and md5(input) must equal <md5>; "json": the value must end with a 32-hex-digit hash member
    (json.dumps output: the original bytes cannot be recovered, so only the form is checked).
    """
    result = Scan(by_seq={} if keep_seq else None)

    def each(m):
        value = m.value()
        result.records += 1
        result.value_bytes += len(value) if value else 0
        ts_type, ts = m.timestamp()
        result.timestamp_types.add(ts_type)
        if result.min_ts is None or ts < result.min_ts:
            result.min_ts = ts
        if result.max_ts is None or ts > result.max_ts:
            result.max_ts = ts
        if check is not None:
            _check(result, check, value)
        if keep_seq:
            for k, v in m.headers() or ():
                if k == "gen.seq":
                    result.by_seq[int(v)] = ts

    read_all(brokers, topic, each, "bench-scan")
    return result


def _check(result, check, value):
    result.hash_checked += 1
    if check == "splice":
        m = HASH_SPLICE.search(value)
        ok = False
        if m:
            original = value[: m.start()] + value[m.end(1) + 1:]
            ok = hashlib.md5(original).hexdigest().encode() == m.group(1)
    else:
        ok = HASH_JSON.search(value) is not None
    if not ok:
        result.hash_bad += 1
        if result.first_bad is None:
            result.first_bad = value[:200].decode(errors="replace")


def read_all(brokers, topic, each, group):
    """Calls each(message) for every record of ``topic``, from the start to its end."""
    from confluent_kafka import Consumer, KafkaError, OFFSET_BEGINNING, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": group,
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": "read_committed",
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


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def write_json(path, data):
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
