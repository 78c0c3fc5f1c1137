"""What bench/rebalance.py (`make rebalance-bench`) makes of a finished run: the source and
destination read back whole and tied by the generator's `gen.seq` header, the figures per event
(replays, the longest gap of a moved partition, p99 around the event), the report and chart.
"""

import array
import datetime
import re
from pathlib import Path

import harness

# Keyed records: verify checks per-key order, and (key, value) pairs rarely repeat, so verify
# ties every output to its source record by content (the generator's unkeyed name pairs repeat
# every ~50,000 records).
KEYS = 1000


# --- Reading the topics back ------------------------------------------------------------------


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

    harness.read_all(brokers, topic, each, "bench-rebalance-read")
    return {"records": n, "part": part, "offset": offset, "ts": ts}


def read_outputs(brokers, topic):
    """Every output's generator sequence number and append time (ms), in the order read."""
    seq, ts = array.array("q"), array.array("q")

    def each(m):
        seq.append(_seq(m))
        ts.append(m.timestamp()[1])

    harness.read_all(brokers, topic, each, "bench-rebalance-read")
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
    kip848 = results.get("broker_group_consumer")
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
        "assignor; heartbeat interval and session timeout are the broker's"
        + (f": `group.consumer.heartbeat.interval.ms` {fmt(kip848['heartbeat_ms'])} ms, "
           f"`group.consumer.session.timeout.ms` {fmt(kip848['session_ms'])} ms"
           if kip848 else "") + "). Everything else is at its default: librdkafka's "
        "`heartbeat.interval.ms` 3 s and `session.timeout.ms` 45 s, ktransform's "
        "`--drain-timeout` and `--shutdown-timeout` 10 s.",
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
