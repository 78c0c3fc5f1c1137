//! A member cut off from its group while its brokers answer: found, and the process stopped so
//! that a restart brings a fresh client.
//!
//! # Why
//! A soak with four 60 s broker outages (`bench/results/2026-12-07-soak-long-outages.md`) left
//! one instance whose consumer never reconnected after the third: for 20 minutes librdkafka
//! 2.12.1 logged `GroupCoordinator: Timed out 0 in-flight, 0 retry-queued, 1 out-queue` and
//! "2/2 brokers are down", while the other member, in the same group on the same broker, was
//! up and had taken all its partitions, and while the instance's own producer (another client)
//! was connected. Nothing was lost, but the instance did nothing and said only that no broker
//! was up. No upstream report was found, and a defect nobody can reproduce on demand is not
//! fixed by a setting: what the process can do is notice it and get a fresh client.
//!
//! # What "cut off" is
//! All at once, at every check for [`Settings::bound`] (and at least [`MIN_CHECKS`] checks in a
//! row):
//! - the member owns no partition (a member that owns one is the stall watchdog's business, and
//!   a member that holds partitions it cannot fetch loses them within the session timeout);
//! - its consumer gets no answer to a metadata request within [`Settings::probe_timeout`];
//! - its producer, a second client of the same process to the same brokers, gets one.
//!
//! An idle member (more members than partitions) answers the first probe and is fine; a broker
//! outage fails the second probe too and is waited out (that is `/healthz`'s business, and a
//! restart would find the brokers away as well); a member in a long rebalance answers.
//! Checks cost nothing for a member that owns partitions, and one metadata request per check
//! for one that owns none.
//!
//! # What is done about it
//! A WARN line at the first failed check, and when the bound passes an error,
//! [`CutOff`]: the run stops (exit 1) the usual way, draining, flushing and committing what it
//! holds (nothing: it owns no partition), with its consumer's close bounded. A restart gets a
//! new client; the brokers answer, so it does not loop. Recreating the consumer in the process
//! would do the same with more to get wrong (every holder of the old client), and a process
//! left to a supervisor (Kubernetes, systemd's `Restart=on-failure`) is how every instance is
//! run; `docs/operations.md` says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fewest failed checks in a row that make a member cut off, however short the bound.
pub const MIN_CHECKS: u32 = 3;

/// What the watch asks of the running instance: its clients, probed (each call may block up to
/// its timeout).
pub trait Probe: Send + Sync {
    /// Whether the member owns a partition now.
    fn owns_partitions(&self) -> bool;

    /// Whether the consumer's client gets the source topic's metadata within `timeout`.
    fn consumer_answers(&self, timeout: Duration) -> bool;

    /// Whether the producer's client gets the destination topic's metadata within `timeout`.
    fn producer_answers(&self, timeout: Duration) -> bool;
}

/// How often to check, and for how long a member must be cut off.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub every: Duration,
    pub bound: Duration,
    pub probe_timeout: Duration,
}

impl Settings {
    /// From `--stall-timeout`: checked once per timeout, cut off after four of them (2 minutes
    /// by default: well past librdkafka's 10 s reconnect backoff, so a client that is coming
    /// back has come back).
    pub fn from_stall_timeout(timeout: Duration) -> Self {
        Settings {
            every: timeout,
            bound: timeout * 4,
            probe_timeout: timeout.clamp(Duration::from_secs(2), Duration::from_secs(10)),
        }
    }
}

/// The member was cut off from its group for `lasted` while its brokers answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutOff {
    pub lasted: Duration,
    pub checks: u32,
}

/// What one check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The member owns partitions, or its consumer answered.
    InGroup,
    /// Neither client answered: the brokers are away.
    BrokersAway,
    /// The consumer did not answer and the producer did.
    ConsumerAlone,
}

/// The decisions, without I/O.
#[derive(Debug, Default)]
pub struct Judge {
    since: Option<Instant>,
    checks: u32,
}

/// What the judge concluded from a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// The first failed check of a streak: worth a WARN line.
    Suspected,
    /// Failed again, not for long enough yet.
    Suspect,
    CutOff(CutOff),
    /// A streak ended: the consumer answers again, or owns partitions.
    Recovered {
        lasted: Duration,
    },
}

impl Judge {
    pub fn observe(&mut self, now: Instant, seen: Seen, bound: Duration) -> Verdict {
        match (seen, self.since) {
            (Seen::ConsumerAlone, None) => {
                self.since = Some(now);
                self.checks = 1;
                Verdict::Suspected
            }
            (Seen::ConsumerAlone, Some(since)) => {
                self.checks += 1;
                let lasted = now.saturating_duration_since(since);
                if lasted >= bound && self.checks >= MIN_CHECKS {
                    Verdict::CutOff(CutOff {
                        lasted,
                        checks: self.checks,
                    })
                } else {
                    Verdict::Suspect
                }
            }
            // Evidence must be continuous: an outage or an answer starts it again.
            (_, Some(since)) => {
                self.since = None;
                self.checks = 0;
                Verdict::Recovered {
                    lasted: now.saturating_duration_since(since),
                }
            }
            (_, None) => Verdict::Fine,
        }
    }
}

/// One check: the cheap question first, the producer asked only when the consumer is silent.
pub fn check(probe: &dyn Probe, timeout: Duration) -> Seen {
    if probe.owns_partitions() || probe.consumer_answers(timeout) {
        Seen::InGroup
    } else if probe.producer_answers(timeout) {
        Seen::ConsumerAlone
    } else {
        Seen::BrokersAway
    }
}

/// Checks every `settings.every` until the member is cut off.
pub async fn watch<P: Probe + 'static>(probe: Arc<P>, settings: Settings) -> CutOff {
    let mut judge = Judge::default();
    let mut ticks = tokio::time::interval(settings.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let strong = probe.clone();
        let timeout = settings.probe_timeout;
        let seen = tokio::task::spawn_blocking(move || check(&*strong, timeout))
            .await
            .unwrap_or(Seen::InGroup);
        match judge.observe(Instant::now(), seen, settings.bound) {
            Verdict::Fine | Verdict::Suspect => {}
            Verdict::Suspected => tracing::warn!(
                bound = ?settings.bound,
                "this member owns no partition and its consumer gets no answer from the brokers, \
                 while its producer does: cut off from its group? stopping if it lasts"
            ),
            Verdict::Recovered { lasted } => {
                tracing::info!(?lasted, "the consumer answers again (or owns partitions)")
            }
            Verdict::CutOff(cut) => return cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    const BOUND: Duration = Duration::from_secs(8);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn cut_off_after_the_bound_and_enough_checks() {
        let start = Instant::now();
        let mut judge = Judge::default();
        let alone = Seen::ConsumerAlone;
        assert_eq!(
            judge.observe(at(start, 0), alone, BOUND),
            Verdict::Suspected
        );
        assert_eq!(judge.observe(at(start, 4), alone, BOUND), Verdict::Suspect);
        assert_eq!(
            judge.observe(at(start, 8), alone, BOUND),
            Verdict::CutOff(CutOff {
                lasted: BOUND,
                checks: 3
            })
        );
    }

    #[test]
    fn a_long_bound_is_not_enough_without_three_checks() {
        let start = Instant::now();
        let mut judge = Judge::default();
        let alone = Seen::ConsumerAlone;
        judge.observe(at(start, 0), alone, BOUND);
        // One late check past the bound (a slow probe, a paused process) is not a streak.
        assert_eq!(judge.observe(at(start, 60), alone, BOUND), Verdict::Suspect);
        assert!(matches!(
            judge.observe(at(start, 61), alone, BOUND),
            Verdict::CutOff(_)
        ));
    }

    #[test]
    fn an_outage_or_an_answer_starts_the_streak_again() {
        for interruption in [Seen::BrokersAway, Seen::InGroup] {
            let start = Instant::now();
            let mut judge = Judge::default();
            let alone = Seen::ConsumerAlone;
            judge.observe(at(start, 0), alone, BOUND);
            judge.observe(at(start, 4), alone, BOUND);
            assert_eq!(
                judge.observe(at(start, 6), interruption, BOUND),
                Verdict::Recovered {
                    lasted: Duration::from_secs(6)
                }
            );
            assert_eq!(
                judge.observe(at(start, 8), alone, BOUND),
                Verdict::Suspected
            );
            assert_eq!(judge.observe(at(start, 12), alone, BOUND), Verdict::Suspect);
            assert!(matches!(
                judge.observe(at(start, 16), alone, BOUND),
                Verdict::CutOff(_)
            ));
        }
    }

    #[test]
    fn brokers_away_and_in_group_are_fine() {
        let start = Instant::now();
        let mut judge = Judge::default();
        for s in 0..100 {
            let seen = if s % 2 == 0 {
                Seen::BrokersAway
            } else {
                Seen::InGroup
            };
            assert_eq!(judge.observe(at(start, s), seen, BOUND), Verdict::Fine);
        }
    }

    struct Fake {
        owns: AtomicBool,
        consumer: AtomicBool,
        producer: AtomicBool,
        producer_asked: AtomicBool,
    }

    impl Probe for Fake {
        fn owns_partitions(&self) -> bool {
            self.owns.load(Relaxed)
        }
        fn consumer_answers(&self, _: Duration) -> bool {
            self.consumer.load(Relaxed)
        }
        fn producer_answers(&self, _: Duration) -> bool {
            self.producer_asked.store(true, Relaxed);
            self.producer.load(Relaxed)
        }
    }

    fn fake(owns: bool, consumer: bool, producer: bool) -> Fake {
        Fake {
            owns: AtomicBool::new(owns),
            consumer: AtomicBool::new(consumer),
            producer: AtomicBool::new(producer),
            producer_asked: AtomicBool::new(false),
        }
    }

    #[test]
    fn check_asks_the_producer_only_when_the_consumer_is_silent() {
        let t = Duration::from_secs(1);
        let owner = fake(true, false, true);
        assert_eq!(check(&owner, t), Seen::InGroup);
        assert!(!owner.producer_asked.load(Relaxed));
        let idle = fake(false, true, true);
        assert_eq!(check(&idle, t), Seen::InGroup);
        assert!(!idle.producer_asked.load(Relaxed));
        assert_eq!(check(&fake(false, false, true), t), Seen::ConsumerAlone);
        assert_eq!(check(&fake(false, false, false), t), Seen::BrokersAway);
    }

    #[tokio::test]
    async fn watch_resolves_for_a_member_cut_off() {
        let probe = Arc::new(fake(false, false, true));
        let settings = Settings {
            every: Duration::from_millis(10),
            bound: Duration::from_millis(30),
            probe_timeout: Duration::from_millis(10),
        };
        let cut = watch(probe, settings).await;
        assert!(cut.lasted >= settings.bound);
        assert!(cut.checks >= MIN_CHECKS);
    }
}
