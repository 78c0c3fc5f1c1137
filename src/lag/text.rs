//! `ktransform lag`'s report as a person reads it: the table, the verdict, the advice, and KEDA's
//! count next to ktransform's; the live view (`lag/serve.rs`) words its verdict and advice the
//! same way.

use std::fmt::Write as _;

use super::{keda, Report, Sample, Verdict};

/// The verdict as a person reads it: `caught up`, `falling behind by 120 records/s`...
pub fn verdict_text(sample: &Sample, report: &Report) -> String {
    match &report.verdict {
        Verdict::CaughtUp => "caught up".to_string(),
        Verdict::KeepingUp if report.produce_rate > 0.0 => format!(
            "keeping up (lag steady at ~{:.1} s of production)",
            sample.lag() as f64 / report.produce_rate
        ),
        Verdict::KeepingUp => "keeping up (lag steady)".to_string(),
        Verdict::CatchingUp { eta } => format!("catching up: lag zero in ~{}s", eta.as_secs()),
        Verdict::FallingBehind { per_sec } => format!("falling behind by {per_sec:.0} records/s"),
    }
}

/// How many instances a group falling behind needs, and whether its partitions allow them.
pub fn advice_text(sample: &Sample, report: &Report) -> Option<String> {
    let (Some(needed), Verdict::FallingBehind { .. }) = (report.instances_needed, &report.verdict)
    else {
        return None;
    };
    let partitions = sample.partitions.len();
    let mut s = format!("~{needed} instance(s) needed at the observed per-instance rate");
    if needed > partitions {
        let _ = write!(
            s,
            "; {partitions} partitions cap the group at {partitions}: add partitions"
        );
    }
    Some(s)
}

/// The table and verdict as a person reads them; with `keda`, KEDA's count and which to trust.
pub fn render(
    group: &str,
    topic: &str,
    sample: &Sample,
    report: &Report,
    keda: Option<&keda::Comparison>,
) -> String {
    let mut s = String::new();
    let protocol = sample
        .protocol
        .map_or_else(String::new, |p| format!(" ({} protocol)", p.as_str()));
    let _ = writeln!(
        s,
        "group {group}{protocol} on {topic}: {} member(s)",
        sample.members
    );
    let _ = writeln!(
        s,
        "{:>9} {:>12} {:>12} {:>10}",
        "partition", "committed", "end", "lag"
    );
    for p in &sample.partitions {
        let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            s,
            "{:>9} {:>12} {:>12} {:>10}",
            p.partition,
            committed,
            p.end,
            p.lag()
        );
    }
    let _ = writeln!(
        s,
        "total lag {}   produce {:.0}/s   consume {:.0}/s",
        sample.lag(),
        report.produce_rate,
        report.consume_rate
    );
    let _ = writeln!(s, "verdict: {}", verdict_text(sample, report));
    if let Some(advice) = advice_text(sample, report) {
        let _ = writeln!(s, "advice: {advice}");
    }
    if let Some(c) = keda {
        let ktransform = c
            .ktransform
            .map_or("no estimate".to_string(), |n| n.to_string());
        let _ = writeln!(
            s,
            "KEDA (lagThreshold {}, offsetResetPolicy {}): lag {}{} -> {} replica(s); \
             ktransform: {ktransform}",
            c.trigger.lag_threshold,
            c.trigger.offset_reset_policy.as_str(),
            c.keda.total_lag,
            if c.keda.capped {
                format!(", capped at {}", c.keda.metric)
            } else {
                String::new()
            },
            c.keda.replicas,
        );
        let trust = match c.trust {
            keda::Trust::Either => "either",
            keda::Trust::Ktransform => "ktransform",
            keda::Trust::Keda => "KEDA",
        };
        let _ = writeln!(s, "trust: {trust}: {}", c.why);
    }
    s
}
