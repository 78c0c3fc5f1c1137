"""Markdown and PNG charts for bench/run.py results (bench/scale.py has bench/scale_report.py)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401

import harness  # noqa: E402

COLORS = {"raw": "#7f7f7f", "ktransform": "#d62728", "python": "#1f77b4", "kstreams": "#2ca02c"}


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}{suffix}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    return f"{v:,}{suffix}"


def kilo(x):
    return f"{x / 1000:.0f}" if x >= 10_000 else f"{x / 1000:.2g}"


def machine_section(r):
    m = r["machine"]
    return [
        "## Machine",
        "",
        f"- {harness.describe_machine(m)}",
        f"- CPU MHz {m.get('cpu_mhz')}; {m.get('rustc')}; {m.get('java')}; Python {m.get('python')}, "
        f"confluent-kafka {m.get('confluent_kafka')} (librdkafka {m.get('librdkafka_python')})",
        f"- {m['broker']}",
        f"- ktransform tree: `{m.get('git')}`",
        "- The machine is shared: other work (and the broker itself) competes for the same 2 "
        "cores, so single runs vary; compare ratios within one run rather than absolute numbers "
        "across runs.",
        "",
    ]


def throughput_chart(r, path):
    rows = [c for c in r["contenders"] if c.get("status") == "ok"]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.8))
    labels = [c["label"] for c in rows][::-1]
    values = [c["records_per_s"] for c in rows][::-1]
    colors = [COLORS[c["kind"]] for c in rows][::-1]
    bars = ax.barh(labels, values, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("records/s (log scale; spawn to exit, incl. start-up and final commit)")
    right = max(values) * 15
    ax.set_xlim(min(values) / 3, right)
    for bar, c in zip(bars, rows[::-1]):
        ratio = c.get("ratio_to_raw")
        text = f" {c['records_per_s']:,.0f}/s"
        if ratio is not None:
            text += f"  ({ratio:.2f}× raw)" if ratio >= 0.01 else f"  ({ratio:.4f}× raw)"
        if c["kind"] == "python":
            text += f"  [{c['limited_by']}]"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text, va="center",
                fontsize=9)
    missing = [c["label"] + f" ({c['status']})" for c in r["contenders"] if c.get("status") != "ok"]
    title = (f"Drain of {r['source']['records']:,} records, {r['source']['partitions']} partitions "
             f"({r['name']})")
    if missing:
        title += "\nnot shown: " + ", ".join(missing)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def latency_chart(r, path):
    rows = [x for x in r["latency"] if x.get("status") == "ok" and x.get("cdf")]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for x in rows:
        xs = [max(p[0], 0.5) for p in x["cdf"]]
        ys = [p[1] for p in x["cdf"]]
        ax.step(xs, ys, where="post",
                label=f"{x['label']}: p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms")
    ax.set_xscale("log")
    ax.set_xlabel("ms from the record's CreateTime (generator) to its append to the destination")
    ax.set_ylabel("fraction of records")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title(f"End-to-end latency at {rows[0]['rate']:,.0f} records/s for "
                 f"{rows[0]['seconds']:g} s ({r['name']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def stored_as(by_codec):
    """The codecs of the stored batches: one name, or each codec's share of the batches."""
    if not by_codec:
        return "–"
    if len(by_codec) == 1:
        return next(iter(by_codec))
    total = sum(by_codec.values())
    return ", ".join(f"{codec} {n / total:.0%}"
                     for codec, n in sorted(by_codec.items(), key=lambda kv: -kv[1]))


def compression_section(r):
    rows = [c for c in r["contenders"] if c.get("compression")]
    if not rows:
        return []
    default = next((c for c in r["contenders"] if c["name"] == "ktransform-alo"), None)
    if default and default.get("status") != "not available":
        rows.append({**default, "compression": "binary's default (ktransform at-least-once)"})
    lines = [
        "## Output compression",
        "",
        "ktransform at-least-once drains the same backlog once per output codec: the same "
        "command plus `-X producer.compression.type=<codec>` (last, so that it wins). *binary's "
        "default* is the *ktransform at-least-once* contender above, which sets no codec. "
        "**disk B/record** = the summed size of the destination's log segment files "
        "(`<log.dirs>/<topic>-<partition>/*.log`, `log.dirs` read from the broker: "
        f"{', '.join(f'`{d}`' for d in r.get('broker_log_dirs') or []) or 'not on this machine'}"
        ") / records. The destination topic keeps the broker's default "
        "`compression.type=producer`, so the broker stores each batch as the producer sent "
        "it: the bytes on disk are the record batches the producer put on the wire (without "
        "the produce requests' own framing). *stored as* is read from every stored batch's "
        "header, which confirms it (librdkafka sends a batch uncompressed when compression "
        "would not make it smaller). A codec compresses each batch as a whole, so fuller "
        "batches (*records/batch*) compress better: these drains of a backlog fill them, "
        "while a live stream at a lower rate sends smaller ones (`linger.ms=5`), so its "
        "ratio is worse than the one here.",
        "",
        "**CPU s/M** is ktransform's whole process, librdkafka's compression included; "
        "**broker CPU s/M** includes the broker's decompression of each compressed batch to "
        "validate its records. ktransform and the broker share the same 2 cores here, so a "
        "codec's CPU also takes from the broker's: weigh *CPU × none* more than *records/s*. "
        "× none is the ratio to the `none` row.",
        "",
        "| codec | records/s | × none | CPU s/M | × none | broker CPU s/M | disk B/record "
        "| × none | records/batch | stored as | all runs, B/record | status |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|---|",
    ]
    for c in rows:
        if c.get("status") != "ok":
            lines.append(f"| {c['compression']} | | | | | | | | | | | "
                         f"{c['status']}: {'; '.join(c.get('problems', []))} |")
            continue
        lines.append(
            f"| {c['compression']} | {fmt(c['records_per_s'])} | {fmt(c.get('ratio_to_none'), 2)} "
            f"| {fmt(c['cpu_s_per_million'], 2)} | {fmt(c.get('cpu_ratio_to_none'), 2)} "
            f"| {fmt(c['broker_cpu_s_per_million'], 2)} "
            f"| {fmt(c.get('disk_bytes_per_record'), 1)} | {fmt(c.get('disk_ratio_to_none'), 2)} "
            f"| {fmt(c.get('disk_records_per_batch'), 0)} "
            f"| {stored_as(c.get('disk_batches_by_codec'))} "
            f"| {', '.join(fmt(x, 1) for x in c.get('runs_disk_bytes_per_record', []))} | ok |")
    return lines + [""]


def per_core_section(r):
    """Records and MB per second of one core of the contender's own CPU (its process tree, not
    the broker's): what a user pays for, and what published figures can be set against."""
    ok = [c for c in r["contenders"] if c.get("status") == "ok" and c.get("cpu_s_per_million")]
    if not ok:
        return []
    size = r["source"]["value_bytes_mean"]
    lines = ["## Per core", "",
             f"Per CPU-second of the contender's own process tree (user + sys; the broker's CPU "
             f"not included), for {size:.0f}-byte values: *records/s per core* = 1,000,000 / "
             "CPU s/M, *MB/s per core* = that × the mean input value size. A contender that "
             "waits on the broker uses less than a core, so these are what one core could do "
             "at this work, not its wall rate.", "",
             "| contender | CPU s/M | records/s per core | MB/s per core |",
             "|---|--:|--:|--:|"]
    for c in ok:
        per_core = 1e6 / c["cpu_s_per_million"]
        lines.append(f"| {c['label']} | {fmt(c['cpu_s_per_million'], 2)} | {fmt(per_core)} "
                     f"| {fmt(per_core * size / 1e6, 1)} |")
    return lines + [""]


def write_bench(r):
    name = r["name"]
    s = r["settings"]
    lines = [
        f"# ktransform benchmark {name}",
        "",
        f"Generated by `bench/run.py` on {r['date']} in {r.get('wall_minutes', 0):.1f} min. "
        "Command:",
        "",
        "```sh",
        r["command"],
        "```",
        "",
        *machine_section(r),
        "## Setup",
        "",
        f"- Source: {r['source']['records']:,} seed-format records "
        f"(`{{\"first_name\":…,\"last_name\":…}}`"
        + (f" with a `\"padding\"` member of names, `--record-bytes {s['record_bytes']}`"
           if s.get("record_bytes") else "")
        + f", {r['source']['value_bytes_mean']:.1f} bytes "
        f"on average, a `gen.seq` header, no key) in {r['source']['partitions']} partitions, "
        "written by `examples/generate` before the first contender starts.",
        "- Each contender: a fresh consumer group and a fresh destination topic (same partition "
        "count, `message.timestamp.type=LogAppendTime`), one after another, nothing else of the "
        "benchmark running.",
        "- **records/s** = records produced / wall time from spawn to exit (start-up, group join, "
        "final flush and commit included). **active records/s** = records / (last − first "
        "append time in the destination): the steady rate without start-up. **MB/s** = input "
        "value bytes per wall second.",
        "- **CPU s/M** = user+sys CPU seconds per million records of the contender's whole "
        "process tree (`os.wait4` rusage: the process and every child it waited for). "
        "**broker CPU s/M**: the broker's CPU over the same interval, per million records. "
        "**peak RSS** = largest single process (its VmHWM) / peak of the tree's summed RSS "
        "(both sampled from /proc every 0.25 s).",
        f"- Python baselines: each stops after {s['python_seconds']:g} s from its first record "
        f"or {s['python_records']:,} records, whichever comes first (column *limited by*); "
        "their rates are over that smaller amount of work. They keep auto-commit on, as the "
        "originals did.",
        f"- Drain contenders ran {s['repeats']} time(s) each, interleaved in rounds; the table "
        "shows the run with the median records/s (*all runs* lists every run; a failed run "
        "fails the contender). *load* is the 1-minute load average just before the run.",
        "- Kafka Streams: `-Xmx1g`; stops itself after it has forwarded the whole backlog, then "
        "`close()` (flush + commit). *its defaults*: nothing set (one stream thread, the "
        "producer's 100 ms linger and 16 KB batches, no compression; commits every 30 s "
        "at_least_once, 100 ms exactly_once_v2). *tuned*: "
        + ", ".join(f"`{x}`" for x in (s.get("kstreams_tuned") or "").split(",") if x)
        + (r.get("kstreams_tuned_note") or "") + ".",
        "- Every output is read back (read_committed) and checked: the record count must equal "
        "what the contender processed, the high watermarks must agree (except transactional "
        "topics, whose commit markers take offsets), and for byte-splicing contenders the md5 "
        "in each record must be the md5 of the record without it. Python's `json.dumps` output "
        "cannot give the input bytes back, so there only the hash's form is checked.",
        "",
        "## Throughput",
        "",
        "| contender | limited by | records | wall s | records/s | × raw | MB/s | active rec/s "
        "| CPU s/M | CPU × raw | peak RSS MB (tree) | broker CPU s/M | load | all runs, k rec/s "
        "| all runs, CPU s/M | status |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|---|",
    ]
    for c in r["contenders"]:
        if c.get("status") == "not available":
            lines.append(f"| {c['label']} | | | | | | | | | | | | | | | not available: {c['note']} |")
            continue
        status = "ok" if c["status"] == "ok" else "FAILED: " + "; ".join(c["problems"])
        ratio = c.get("ratio_to_raw")
        cpu_ratio = c.get("cpu_ratio_to_raw")
        lines.append(
            f"| {c['label']} | {c['limited_by']} | {c['processed']:,} | {c['wall_s']:.1f} "
            f"| {fmt(c['records_per_s'])} | {fmt(ratio, 3) if ratio is not None else '–'} "
            f"| {fmt(c['mb_per_s'], 2)} | {fmt(c['active_records_per_s'])} "
            f"| {fmt(c['cpu_s_per_million'], 1)} | {fmt(cpu_ratio, 2) if cpu_ratio else '–'} "
            f"| {c['max_rss_mb']:.0f} ({c['tree_rss_mb']:.0f}) "
            f"| {fmt(c['broker_cpu_s_per_million'], 1)} | {c['loadavg_before']:.1f} "
            f"| {', '.join(kilo(x) for x in c.get('runs_records_per_s', []))} "
            f"| {', '.join(fmt(x, 2) for x in c.get('runs_cpu_s_per_million', []) if x is not None)} "
            f"| {status} |"
        )
    lines += ["", f"![throughput]({name}-throughput.png)", ""]
    lines += per_core_section(r)
    lines += compression_section(r)
    lines += ["## End-to-end latency", ""]
    if not r["latency"]:
        lines += ["Not measured in this run.", ""]
    else:
        ok = [x for x in r["latency"] if x.get("status") == "ok"]
        if ok:
            x0 = ok[0]
            lines += [
                f"ktransform consumes a fresh topic while `examples/generate --rate "
                f"{x0['rate']:.0f}` writes {x0['records']:,} records into it "
                f"({x0['seconds']:g} s; the rate is half of ktransform at-least-once's drain "
                "rate above unless `--latency-rate` was given). Latency = the destination "
                "record's LogAppendTime − the source record's CreateTime (set by the "
                "generator's producer when it queued the record, so its `linger.ms=5` "
                "batching is included), joined on the `gen.seq` header; 1 ms resolution. "
                "*raw copy (reference)* is `examples/raw_copy --count N` in the same setting, "
                "with ktransform's consumer settings (fetch wait, fetch sizes, queues): what "
                "the generator, the broker and one consume → produce hop cost at this rate on "
                "this machine, before any transform or bookkeeping.",
                "",
            ]
        # Older results have no steady-state figures: their columns show "–".
        warmup = next((x["warmup_s"] for x in r["latency"] if x.get("warmup_s")), "N")
        lines += ["*committed after input end* = seconds from the generator's exit until the "
                  "group had committed every record (about the 1 s commit interval when "
                  "ktransform keeps up; the backlog it built when it does not).", "",
                  f"*after {warmup} s* = the same over the records written after the first "
                  f"{warmup} seconds: "
                  "the steady state, without the start-up of the process and of the fresh "
                  "topics.", "",
                  "| contender | rate/s | records | p50 ms | p90 ms | p99 ms | p99.9 ms "
                  f"| max ms | p99 ms after {warmup} s | max ms after {warmup} s "
                  "| committed after input end, s | CPU s/M | status |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        for x in r["latency"]:
            if x.get("status") == "not available":
                lines.append(f"| {x['label']} | | | | | | | | | | | | not available |")
                continue
            status = "ok" if x["status"] == "ok" else "FAILED: " + "; ".join(x["problems"])
            lines.append(
                f"| {x.get('label', x['name'])} | {fmt(x.get('rate'))} | {fmt(x.get('measured'))} "
                f"| {fmt(x.get('p50_ms'))} | {fmt(x.get('p90_ms'))} | {fmt(x.get('p99_ms'))} "
                f"| {fmt(x.get('p999_ms'))} | {fmt(x.get('max_ms'))} "
                f"| {fmt(x.get('p99_steady_ms'))} | {fmt(x.get('max_steady_ms'))} "
                f"| {fmt(x.get('catch_up_s'), 1)} "
                f"| {fmt(x.get('cpu_s_per_million'), 1)} | {status} |")
        lines += ["", f"![latency]({name}-latency-cdf.png)", ""]
    lines += [
        "## Commands",
        "",
        "Each contender's exact command line (topics and groups are unique to the run, "
        "`" + r["run_id"] + "-…`; logs were in `bench/results/tmp/" + r["run_id"] + "/logs`):",
        "",
    ]
    for c in r["contenders"] + r["latency"]:
        if c.get("command"):
            lines.append(f"- {c.get('label', c['name'])}: `{c['command']}`")
    lines.append("")
    (harness.RESULTS / f"{name}.md").write_text("\n".join(lines))
    throughput_chart(r, harness.RESULTS / f"{name}-throughput.png")
    latency_chart(r, harness.RESULTS / f"{name}-latency-cdf.png")
