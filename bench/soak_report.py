"""What bench/soak.py (`make soak`) makes of a finished run: the replays read back from the
destination, RSS and CPU over time per process and their flatness, the stall counter, the
report and the chart."""

import bisect
import statistics

import harness

BIN_S = 10  # the replays' histogram: seconds per bin
FLAT = 10  # % of growth after warm-up that still counts as flat


# --- Replays -----------------------------------------------------------------------------------------


def count_replays(brokers, dest, count, offsets):
    """Reads ``dest`` whole: outputs, replays (outputs of a generator sequence number already
    output) and the replays per BIN_S-second bin of their append time. The append time of the
    output at (partition, offset) is taken as the first sample of the destination's end offsets
    that lies past it (so up to one sample interval late); past the last sample, that sample."""
    times = [o["t"] for o in offsets]
    ends = {}
    for o in offsets:
        for p, end in o["dest_ends"].items():
            ends.setdefault(int(p), []).append(end)
    seen = bytearray(count // 8 + 1)
    out = {"outputs": 0, "replays": 0, "beyond_count": 0, "bins": {}}

    def appended(p, offset):
        k = bisect.bisect_right(ends.get(p, []), offset)
        return times[min(k, len(times) - 1)] if times else 0

    def each(m):
        out["outputs"] += 1
        seq = next((int(v) for k, v in m.headers() or () if k == "gen.seq"), -1)
        if not 0 <= seq < count:
            out["beyond_count"] += 1
            return
        byte, bit = divmod(seq, 8)
        if seen[byte] >> bit & 1:
            out["replays"] += 1
            t = appended(m.partition(), m.offset())
            b = int(t // BIN_S * BIN_S)
            out["bins"][b] = out["bins"].get(b, 0) + 1
        else:
            seen[byte] |= 1 << bit

    harness.read_all(brokers, dest, each, "bench-soak-read")
    return out


def replays_per_event(soak):
    """Replays in the window from each event to the next (the first row: before any event)."""
    bins = {int(k): v for k, v in soak["replays"]["bins"].items()}
    starts = [soak["t0"]] + [e["t"] for e in soak["events"]]
    rows = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else float("inf")
        n = sum(v for b, v in bins.items() if start <= b + BIN_S / 2 < end)
        rows.append(n)
    return rows


# --- Processes -------------------------------------------------------------------------------------


def series(soak):
    """{process label: [(t, rss_mb, cpu_s, metrics)]}, in time order."""
    out = {}
    for s in soak["samples"]:
        out.setdefault(s["label"], []).append((s["t"], s["rss_kb"] / 1024, s["cpu_s"],
                                               s.get("metrics")))
    return out


def cpu_percent(points):
    """[(t, % of one core)] between consecutive samples."""
    return [(t1, 100 * (c1 - c0) / (t1 - t0))
            for (t0, _, c0, _), (t1, _, c1, _) in zip(points, points[1:]) if t1 > t0]


def flatness(points, warmup_s, window_s):
    """Median RSS and CPU in the first window after warm-up and in the last window of a
    process's samples, and the growth between them; None if its life is too short for two
    windows that do not overlap."""
    start, end = points[0][0], points[-1][0]
    if end - start < warmup_s + 2 * window_s:
        return None
    first = [p for p in points if start + warmup_s <= p[0] < start + warmup_s + window_s]
    last = [p for p in points if p[0] >= end - window_s]
    cpu = cpu_percent(points)
    cpu_first = [c for t, c in cpu if start + warmup_s <= t < start + warmup_s + window_s]
    cpu_last = [c for t, c in cpu if t >= end - window_s]
    r0 = statistics.median(p[1] for p in first)
    r1 = statistics.median(p[1] for p in last)
    # Within the last window: its last fifth against its first fifth (a leak keeps climbing;
    # a step, say after a backlog, does not).
    fifth = window_s / 5
    head = statistics.median(p[1] for p in last if p[0] < end - window_s + fifth)
    tail = statistics.median(p[1] for p in last if p[0] >= end - fifth)
    return {"rss_first_mb": r0, "rss_last_mb": r1, "rss_growth_pct": 100 * (r1 - r0) / r0,
            "rss_drift_last_pct": 100 * (tail - head) / head,
            "cpu_first_pct": statistics.median(cpu_first),
            "cpu_last_pct": statistics.median(cpu_last)}


def last_metrics(points):
    for *_, m in reversed(points):
        if m:
            return m
    return {}


def max_metric(points, name):
    return max((m.get(name, 0) for *_, m in points if m), default=0)


# --- Report ----------------------------------------------------------------------------------------


def _min(soak, t):
    return (t - soak["t0"]) / 60


def event_detail(e):
    if e["kind"] == "broker":
        if e.get("failed"):
            return f"FAILED: {e['failed']}"
        down = e.get("t_start_done", e["t_stop"]) - e["t_stop"]
        return f"stop-node + start-node: {down:.0f} s until the broker served again"
    if e.get("skipped"):
        return f"skipped: {e['skipped']}"
    if e["kind"] == "restart":
        old, new = e["instances"]
        why = "cut off from its group" if e.get("cut_off") else f"`{e.get('cause', '')[-160:]}`"
        return f"{old} exited {e['rc']} by itself ({why}); {new} started, as a supervisor would"
    names = e.get("instances", [])
    return {"kill": f"SIGKILL {names[0]}, {names[-1]} started at once",
            "out": f"{names[0]} joins", "in": f"{names[0]} leaves (SIGTERM)"}[e["kind"]]


def max_lag(soak, start, end):
    lags = [o["src_end"] - o["committed"] for o in soak["offsets"]
            if start <= o["t"] < end and o["committed"] is not None and o["src_end"] >= 0]
    return max(lags, default=None)


def recovery(soak, e, end):
    """Seconds from the event until the lag is back within 5 s of production of what it was at
    the event (after its peak), or None if it is not within the window."""
    offs = [o for o in soak["offsets"] if o["committed"] is not None and o["src_end"] >= 0]
    before = [o["src_end"] - o["committed"] for o in offs if o["t"] < e["t"]]
    after = [(o["t"], o["src_end"] - o["committed"]) for o in offs if e["t"] <= o["t"] < end]
    if not before or not after:
        return None
    threshold = before[-1] + 5 * soak["rate"]
    peak = max(range(len(after)), key=lambda i: after[i][1])
    return next((t - e["t"] for t, lag in after[peak:] if lag <= threshold), None)


def lineage_table(soak, procs, minutes=5):
    """Median RSS and CPU per slot (instance lineage, and the broker) per `minutes` bucket."""
    slots = {}
    for label, points in procs.items():
        slot = "broker" if label.startswith("broker") else label.rstrip("0123456789")
        cpu = dict(cpu_percent(points))
        for t, rss, *_ in points:
            k = int(_min(soak, t) // minutes)
            slots.setdefault(slot, {}).setdefault(k, ([], []))[0].append(rss)
            if t in cpu:
                slots[slot][k][1].append(cpu[t])
    names = sorted(slots, key=lambda n: (n == "broker", n))
    buckets = sorted({k for v in slots.values() for k in v})
    L = [f"Median RSS (MB) / CPU (% of a core) per {minutes} minutes, per lineage (slot a, b, c; "
         "the broker across its restarts):", "",
         "| minutes | " + " | ".join(names) + " |", "|---|" + "--:|" * len(names)]
    for k in buckets:
        cells = []
        for n in names:
            rss, cpu = slots[n].get(k, ([], []))
            cells.append(f"{statistics.median(rss):.1f} / {statistics.median(cpu):.1f}%"
                         if rss and cpu else (f"{statistics.median(rss):.1f} / -" if rss else ""))
        L.append(f"| {k * minutes}-{(k + 1) * minutes} | " + " | ".join(cells) + " |")
    return L + [""]


def write_report(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    soak, s = results["soak"], results["settings"]
    drain, v = results["drain"], soak["verify"]
    procs = series(soak)
    warmup_s, window_s = s["warmup"] * 60, s["window"] * 60
    png = harness.RESULTS / f"{results['name']}.png"
    chart(results, procs, png, plt)
    minutes = (soak["t_end"] - soak["t0"]) / 60
    L = [f"# Soak: {minutes:.0f} minutes at {soak['rate']:,.0f} records/s with a fault every "
         f"{s['every'] / 60:g} minutes ({results['date'][:10]})", ""]
    L += [f"`{results['command']}` (`make soak`), {results['wall_minutes']:.0f} min in all. "
          f"Machine: {harness.describe_machine(results['machine'])}. "
          f"Broker: {results['machine']['broker']}; ktransform {results['machine']['git']}.", ""]
    problems = soak["problems"]
    verdict = ("**verify passed**" if v and v.get("passed") else "**verify FAILED**")
    L += ["## Verdict", "",
          f"{verdict}: {v['lost'] if v else '?'} lost, {v['duplicates'] if v else '?':,} "
          f"duplicates of {soak['records']:,} source records "
          f"({v['outputs'] if v else '?':,} outputs, {v['dead_letters'] if v else '?'} dead "
          f"letters); stalls: {sum_metric(procs, 'errors.stalled')} "
          f"(`ktransform_errors_total{{kind=\"stalled\"}}`, all processes). "
          + ("Problems: " + "; ".join(problems) if problems else "No problems."), ""]
    if v:
        L += ["verify's counts: " + ", ".join(f"{k} {v[k]:,}" for k in (
            "source_records", "outputs", "delivered", "lost", "duplicates", "wrong_hash",
            "changed_keys", "changed_fields", "changed_headers", "changed_timestamps",
            "forged", "order_violations") if k in v)
              + f" (rules broken: {v.get('failed_rules') or 'none'}; verify took "
              f"{v['wall_s']:.0f} s and {v['max_rss_mb']:.0f} MB).", ""]
    L += ["## Setup", "",
          f"- Source {s['partitions']} partitions, keyed ({soak['records']:,} records from the "
          f"generator, {soak['generator_achieved_rate'] or 0:,.0f}/s achieved); destination "
          f"{s['partitions']} partitions; one broker; at-least-once.",
          f"- Instances: `{soak['command']}`, each in a cgroup v1 CPU quota of "
          f"{s['cpu']:g} core (0: none). Slots: a (lives the whole run), b (SIGKILLed and "
          "started again at each kill), c (joins at each scale-out, leaves at each scale-in).",
          f"- Rate: {soak['rate']:,.0f} records/s = "
          + (f"{s['fraction']:g} x the drain rate measured at the start: instances a and b "
             f"drained a {drain['backlog']:,}-record backlog at {drain['rate']:,.0f} records/s "
             f"({drain['records_in_window']:,} records in the destination over "
             f"{drain['window_s']:.0f} s, from 10 s after both had partitions)."
             if not s.get("rate") else f"given (--rate); the drain rate measured was "
             f"{drain['rate']:,.0f}/s."),
          f"- Disk: the topics took {max((d for _, d in soak['disk']), default=0) / 1e9:.2f} GB "
          f"at most (sampled every minute; --max-gb {s['max_gb']:g}); deleted at the end.",
          f"- Samples every {s['sample']:g} s: /proc VmRSS and utime+stime of every instance and "
          "the broker, each instance's /metrics, the topics' end offsets and the group's "
          "committed offsets.", ""]
    per_event = replays_per_event(soak)
    L += ["## Events, replays and lag", "",
          "Replays: outputs of a generator sequence number already output (read back from the "
          "destination), placed by append time in the window from the event to the next; their "
          f"sum is {soak['replays']['replays']:,} (verify: {v['duplicates'] if v else '?':,}). "
          "Lag: source end offsets minus the group's committed offsets, at most, in the window.",
          "A kill's replays come when its partitions move, a session timeout (45 s, classic "
          "protocol) after it, and a replayed record is appended when the new owner reaches it: "
          "with events minutes apart they fall in the kill's window. Recovered: seconds from "
          "the event until the lag was back within 5 s of production of its level at the event.",
          "", "| # | at (min) | event | what happened | replays | max lag | recovered |",
          "|--:|--:|---|---|--:|--:|--:|"]
    starts = [soak["t0"]] + [e["t"] for e in soak["events"]]
    L.append(f"| 0 | 0.0 | start | a1, b1 | {per_event[0]:,} | "
             f"{fmt(max_lag(soak, starts[0], starts[1] if len(starts) > 1 else 1e18))} | |")
    for i, e in enumerate(soak["events"], 1):
        end = starts[i + 1] if i + 1 < len(starts) else soak["t_caught_up"] + 1
        back = recovery(soak, e, end)
        L.append(f"| {i} | {_min(soak, e['t']):.1f} | {e['kind']} | {event_detail(e)} | "
                 f"{per_event[i]:,} | {fmt(max_lag(soak, e['t'], end))} | "
                 f"{'-' if back is None else f'{back:.0f} s'} |")
    L += ["", f"Production ended at {_min(soak, soak['t_end']):.1f} min; the group had "
          f"committed everything at {_min(soak, soak['t_caught_up']):.1f} min.", ""]
    L += memory_section(soak, procs, warmup_s, window_s, s)
    L += stall_section(procs)
    L += [f"![RSS, CPU, lag and replays over the soak]({png.name})", ""]
    path = harness.RESULTS / f"{results['name']}.md"
    path.write_text("\n".join(L))


def fmt(n):
    return "-" if n is None else f"{n:,}"


def sum_metric(procs, name):
    return int(sum(last_metrics(points).get(name, 0) for label, points in procs.items()
                   if not label.startswith("broker")))


def memory_section(soak, procs, warmup_s, window_s, s):
    L = ["## RSS and CPU over time", "",
         f"Per process (instance a1, b1, b2, ..., the broker's pid): RSS and CPU (% of one core) "
         f"as medians of the first {s['window']:g} minutes after a {s['warmup']:g}-minute "
         f"warm-up and of the last {s['window']:g} minutes of its life; growth = last / first - 1 "
         f"(flat: at most {FLAT}%); drift = within the last window, the median of its last fifth "
         "against its first fifth (a leak keeps climbing, a step does not). A process too "
         "short-lived for two such windows has none.", "",
         "| process | life (min) | RSS first | RSS last | growth | drift | max RSS | CPU first | "
         "CPU last | verdict |", "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for label, points in procs.items():
        life = f"{_min(soak, points[0][0]):.1f}-{_min(soak, points[-1][0]):.1f}"
        peak = max(p[1] for p in points)
        f = flatness(points, warmup_s, window_s)
        if f is None:
            cpu = [c for _, c in cpu_percent(points)]
            L.append(f"| {label} | {life} | | {points[-1][1]:.1f} MB | | | {peak:.1f} MB | | "
                     f"{statistics.median(cpu) if cpu else 0:.1f}% (median) | too short |")
            continue
        if f["rss_growth_pct"] <= FLAT:
            flat = "flat"
        elif f["rss_drift_last_pct"] <= 1:
            flat = f"**over {FLAT}%**: a step, not climbing in the last window"
        else:
            flat = "**GROWS**"
        L.append(f"| {label} | {life} | {f['rss_first_mb']:.1f} MB | {f['rss_last_mb']:.1f} MB "
                 f"| {f['rss_growth_pct']:+.1f}% | {f['rss_drift_last_pct']:+.1f}% | {peak:.1f} MB "
                 f"| {f['cpu_first_pct']:.1f}% | "
                 f"{f['cpu_last_pct']:.1f}% | {flat} |")
    L += [""] + lineage_table(soak, procs)
    thr = {}
    for t, slot, periods, throttled in soak["throttling"]:
        thr.setdefault(slot, []).append((periods, throttled))
    if thr:
        L += ["", "CFS throttling per slot over the run (periods in which the quota ran out): "
              + ", ".join(f"{slot} {100 * (v[-1][1] - v[0][1]) / max(1, v[-1][0] - v[0][0]):.0f}%"
                          f" of {v[-1][0] - v[0][0]:,}" for slot, v in sorted(thr.items()))
              + "."]
    return L + [""]


STALL_ROWS = [("partition_stalled", "stalled partitions (gauge, max seen)"),
              ("errors.stalled", "`errors_total{kind=\"stalled\"}`"),
              ("stall_heals.rearm", "stall heals: rearm"), ("stall_heals.resplit", "resplit"),
              ("partition_rewinds_total", "rewinds"), ("rebalances_total", "rebalances"),
              ("records_replayed_total", "left uncommitted by a drain deadline")]


def stall_section(procs):
    labels = [lb for lb in procs if not lb.startswith("broker")]
    L = ["## Stall counter and other metrics", "",
         "From each instance's last /metrics sample (a SIGKILLed process: its last sample, at "
         "most one interval before the kill); the stalled gauge is the highest seen.", "",
         "| metric | " + " | ".join(labels) + " |", "|---|" + "--:|" * len(labels)]
    for name, title in STALL_ROWS:
        row = []
        for lb in labels:
            pts = procs[lb]
            row.append(max_metric(pts, name) if name == "partition_stalled"
                       else last_metrics(pts).get(name, 0))
        L.append(f"| {title} | " + " | ".join(f"{x:,.0f}" for x in row) + " |")
    replayed = sum_metric(procs, "records_replayed_total")
    L.insert(4, f"Drain-deadline replays, all processes: {replayed:,} (a revoked partition whose "
             "in-flight records were not acknowledged within `--drain-timeout`; these are "
             "consumed again, so they count among the replays above).")
    L.insert(5, "")
    kinds = sorted({k for lb in labels for k in last_metrics(procs[lb])
                    if k.startswith("errors.") and k != "errors.stalled"})
    for k in kinds:
        L.append(f"| `errors_total{{kind=\"{k[7:]}\"}}` | "
                 + " | ".join(f"{last_metrics(procs[lb]).get(k, 0):,.0f}" for lb in labels) + " |")
    return L + [""]


def chart(results, procs, path, plt):
    soak = results["soak"]
    fig, axes = plt.subplots(5, 1, figsize=(11, 13), sharex=True)
    rss, broker, cpu, lag, rep = axes
    for label, points in procs.items():
        x = [_min(soak, p[0]) for p in points]
        ax = broker if label.startswith("broker") else rss
        ax.plot(x, [p[1] for p in points], label=label, lw=1)
        if not label.startswith("broker"):
            c = cpu_percent(points)
            cpu.plot([_min(soak, t) for t, _ in c], [v for _, v in c], label=label, lw=0.8)
    rss.set_ylabel("instance RSS (MB)")
    broker.set_ylabel("broker RSS (MB)")
    cpu.set_ylabel("instance CPU (% of a core)")
    offs = [o for o in soak["offsets"] if o["committed"] is not None and o["src_end"] >= 0]
    lag.plot([_min(soak, o["t"]) for o in offs], [o["src_end"] - o["committed"] for o in offs],
             lw=1, color="tab:red")
    lag.set_ylabel("group lag (records)")
    bins = sorted((int(k), v) for k, v in soak["replays"]["bins"].items())
    rep.bar([_min(soak, b) for b, _ in bins], [v for _, v in bins], width=BIN_S / 60,
            color="tab:purple")
    rep.set_ylabel(f"replays per {BIN_S} s")
    rep.set_xlabel("minutes since production started")
    for ax in axes:
        for e in soak["events"]:
            ax.axvline(_min(soak, e["t"]), color="grey", lw=0.6, ls="--")
        ax.grid(alpha=0.3)
    for e in soak["events"]:
        rss.annotate(e["kind"], (_min(soak, e["t"]), 1), xycoords=("data", "axes fraction"),
                     fontsize=7, rotation=90, va="top")
    rss.legend(fontsize=7, ncol=4, loc="lower right")
    broker.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"ktransform soak: {soak['rate']:,.0f} records/s, {results['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
