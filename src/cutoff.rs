//! One of the instance's two clients cut off from the brokers while the other is answered:
//! found, and the process stopped so that a restart brings new clients.
//!
//! # Why
//! librdkafka 2.12.1 (the bundled version) can lose every broker for good: a broker that is
//! starting up may answer a Metadata request with no broker in it (a KRaft broker is fenced
//! until it has caught up), and since librdkafka 2.10 the brokers missing from a Metadata
//! response are decommissioned with their threads; with all of them gone and the re-bootstrap
//! stopped, the client never connects again ([librdkafka#5301], open; a fix proposed in
//! [librdkafka#5303], not merged). Soaks with 60 s broker outages met it three times: an
//! instance whose consumer never came back while its producer and the other member were fine
//! (`bench/results/2026-12-07-soak-long-outages.md`), then an instance whose producer never
//! came back (18,000 records in flight for good, its partitions held and read no further) and
//! the generator, a third client, with no socket left (`2026-12-07-soak-outages-cutoff.md`).
//! No setting avoids it; a client made anew does not have it.
//!
//! # What "cut off" is
//! The consumer and the producer are separate librdkafka clients of the same brokers. At every
//! check (one per [`Settings::every`]) each is asked for its topic's metadata. One of them not
//! answered within [`Settings::probe_timeout`] while the other is, at every check for
//! [`Settings::bound`] (and at least [`MIN_CHECKS`] checks in a row), is cut off. Neither
//! answered is a broker outage: waited out, however long (`/healthz`'s business, and a restart
//! would find the brokers away as well). A client reconnecting after an outage is answered
//! again within librdkafka's reconnect backoff (at most 10 s), far inside the bound. Each check
//! costs two metadata requests.
//!
//! # What is done about it
//! A WARN line at the first failed check, and when the bound passes an error, [`CutOff`]: the
//! run stops (exit 1) the usual way, with every step bounded by the shutdown deadline: what can
//! be committed is, the rest is consumed again after the restart (at-least-once), or aborted
//! (exactly-once). A restart gets new clients; the brokers answer, so it does not loop.
//! Recreating a client in the process would do the same with more to get wrong (every holder
//! of the old one), and instances run under something that restarts them (Kubernetes,
//! systemd's `Restart=on-failure`); `docs/operations.md` says so.
//!
//! [librdkafka#5301]: https://github.com/confluentinc/librdkafka/issues/5301
//! [librdkafka#5303]: https://github.com/confluentinc/librdkafka/pull/5303

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fewest failed checks in a row that make a client cut off, however short the bound.
pub const MIN_CHECKS: u32 = 3;

/// What the watch asks of the running instance: its clients, probed (each call may block up to
/// its timeout).
pub trait Probe: Send + Sync {
    /// Whether the consumer's client gets the source topic's metadata within `timeout`.
    fn consumer_answers(&self, timeout: Duration) -> bool;

    /// Whether the producer's client gets the destination topic's metadata within `timeout`.
    fn producer_answers(&self, timeout: Duration) -> bool;
}

/// One of the instance's librdkafka clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Consumer,
    Producer,
}

impl Client {
    pub fn other(self) -> Client {
        match self {
            Client::Consumer => Client::Producer,
            Client::Producer => Client::Consumer,
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Client::Consumer => "consumer",
            Client::Producer => "producer",
        })
    }
}

/// How often to check, and for how long a client must be cut off.
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

/// `client` was cut off from the brokers for `lasted` while the other client was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutOff {
    pub client: Client,
    pub lasted: Duration,
    pub checks: u32,
}

/// What one check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Both clients were answered.
    Answered,
    /// Neither was: the brokers are away.
    BrokersAway,
    /// This client was not answered, and the other was.
    Silent(Client),
}

/// The decisions, without I/O.
#[derive(Debug, Default)]
pub struct Judge {
    streak: Option<(Client, Instant)>,
    checks: u32,
}

/// What the judge concluded from a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// The first failed check of a streak: worth a WARN line.
    Suspected(Client),
    /// Failed again, not for long enough yet.
    Suspect,
    CutOff(CutOff),
    /// A streak ended: both answered, or neither, or the other client is the silent one now.
    Ended {
        lasted: Duration,
    },
}

impl Judge {
    pub fn observe(&mut self, now: Instant, seen: Seen, bound: Duration) -> Verdict {
        match (seen, self.streak) {
            (Seen::Silent(client), Some((same, since))) if client == same => {
                self.checks += 1;
                let lasted = now.saturating_duration_since(since);
                if lasted >= bound && self.checks >= MIN_CHECKS {
                    Verdict::CutOff(CutOff {
                        client,
                        lasted,
                        checks: self.checks,
                    })
                } else {
                    Verdict::Suspect
                }
            }
            // Evidence must be continuous: anything else ends a streak (and a silence of the
            // other client starts one of its own at the next check).
            (_, Some((_, since))) => {
                self.streak = None;
                self.checks = 0;
                Verdict::Ended {
                    lasted: now.saturating_duration_since(since),
                }
            }
            (Seen::Silent(client), None) => {
                self.streak = Some((client, now));
                self.checks = 1;
                Verdict::Suspected(client)
            }
            (_, None) => Verdict::Fine,
        }
    }
}

/// One check: both clients asked.
pub fn check(probe: &dyn Probe, timeout: Duration) -> Seen {
    match (
        probe.consumer_answers(timeout),
        probe.producer_answers(timeout),
    ) {
        (true, true) => Seen::Answered,
        (false, false) => Seen::BrokersAway,
        (false, true) => Seen::Silent(Client::Consumer),
        (true, false) => Seen::Silent(Client::Producer),
    }
}

/// Checks every `settings.every` until a client is cut off.
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
            .unwrap_or(Seen::Answered);
        match judge.observe(Instant::now(), seen, settings.bound) {
            Verdict::Fine | Verdict::Suspect => {}
            Verdict::Suspected(client) => tracing::warn!(
                %client,
                bound = ?settings.bound,
                "the {client} gets no answer from the brokers while the {} does: cut off \
                 (librdkafka#5301)? stopping if it lasts",
                client.other()
            ),
            Verdict::Ended { lasted } => {
                tracing::info!(?lasted, "both clients answered again, or neither")
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
    const CONSUMER: Seen = Seen::Silent(Client::Consumer);
    const PRODUCER: Seen = Seen::Silent(Client::Producer);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn cut_off_after_the_bound_and_enough_checks() {
        for (seen, client) in [(CONSUMER, Client::Consumer), (PRODUCER, Client::Producer)] {
            let start = Instant::now();
            let mut judge = Judge::default();
            assert_eq!(
                judge.observe(at(start, 0), seen, BOUND),
                Verdict::Suspected(client)
            );
            assert_eq!(judge.observe(at(start, 4), seen, BOUND), Verdict::Suspect);
            assert_eq!(
                judge.observe(at(start, 8), seen, BOUND),
                Verdict::CutOff(CutOff {
                    client,
                    lasted: BOUND,
                    checks: 3
                })
            );
        }
    }

    #[test]
    fn a_long_bound_is_not_enough_without_three_checks() {
        let start = Instant::now();
        let mut judge = Judge::default();
        judge.observe(at(start, 0), CONSUMER, BOUND);
        // One late check past the bound (a slow probe, a paused process) is not a streak.
        assert_eq!(
            judge.observe(at(start, 60), CONSUMER, BOUND),
            Verdict::Suspect
        );
        assert!(matches!(
            judge.observe(at(start, 61), CONSUMER, BOUND),
            Verdict::CutOff(_)
        ));
    }

    #[test]
    fn an_outage_an_answer_or_the_other_client_starts_the_streak_again() {
        for interruption in [Seen::BrokersAway, Seen::Answered, PRODUCER] {
            let start = Instant::now();
            let mut judge = Judge::default();
            judge.observe(at(start, 0), CONSUMER, BOUND);
            judge.observe(at(start, 4), CONSUMER, BOUND);
            assert_eq!(
                judge.observe(at(start, 6), interruption, BOUND),
                Verdict::Ended {
                    lasted: Duration::from_secs(6)
                }
            );
            assert_eq!(
                judge.observe(at(start, 8), CONSUMER, BOUND),
                Verdict::Suspected(Client::Consumer)
            );
            assert_eq!(
                judge.observe(at(start, 12), CONSUMER, BOUND),
                Verdict::Suspect
            );
            assert!(matches!(
                judge.observe(at(start, 16), CONSUMER, BOUND),
                Verdict::CutOff(_)
            ));
        }
    }

    #[test]
    fn brokers_away_and_both_answered_are_fine() {
        let start = Instant::now();
        let mut judge = Judge::default();
        for s in 0..100 {
            let seen = if s % 2 == 0 {
                Seen::BrokersAway
            } else {
                Seen::Answered
            };
            assert_eq!(judge.observe(at(start, s), seen, BOUND), Verdict::Fine);
        }
    }

    struct Fake {
        consumer: AtomicBool,
        producer: AtomicBool,
    }

    impl Probe for Fake {
        fn consumer_answers(&self, _: Duration) -> bool {
            self.consumer.load(Relaxed)
        }
        fn producer_answers(&self, _: Duration) -> bool {
            self.producer.load(Relaxed)
        }
    }

    fn fake(consumer: bool, producer: bool) -> Fake {
        Fake {
            consumer: AtomicBool::new(consumer),
            producer: AtomicBool::new(producer),
        }
    }

    #[test]
    fn check_names_the_client_that_alone_gets_no_answer() {
        let t = Duration::from_secs(1);
        assert_eq!(check(&fake(true, true), t), Seen::Answered);
        assert_eq!(check(&fake(false, true), t), CONSUMER);
        assert_eq!(check(&fake(true, false), t), PRODUCER);
        assert_eq!(check(&fake(false, false), t), Seen::BrokersAway);
    }

    #[tokio::test]
    async fn watch_resolves_for_a_client_cut_off() {
        let probe = Arc::new(fake(true, false));
        let settings = Settings {
            every: Duration::from_millis(10),
            bound: Duration::from_millis(30),
            probe_timeout: Duration::from_millis(10),
        };
        let cut = watch(probe, settings).await;
        assert_eq!(cut.client, Client::Producer);
        assert!(cut.lasted >= settings.bound);
        assert!(cut.checks >= MIN_CHECKS);
    }
}
