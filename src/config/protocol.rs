//! `--group-protocol`: how the consumer group assigns partitions, and what that leaves to the
//! brokers.
//!
//! - `classic`: the JoinGroup/SyncGroup protocol; the members' `cooperative-sticky` assignor
//!   (incremental rebalances), with `session.timeout.ms` and `heartbeat.interval.ms` the client's.
//! - `consumer` (KIP-848, Apache Kafka 4.0+ brokers): the group coordinator assigns, with
//!   `group.remote.assignor` (`uniform` or `range`, the broker's choice when unset) instead of
//!   an assignment strategy; the session and heartbeat are broker settings
//!   (`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`), and
//!   librdkafka refuses to create a consumer that sets the client's. Every rebalance is
//!   incremental: an Assign or a Revoke names only the partitions that move, as under
//!   cooperative-sticky. Under exactly-once the member epoch stands where the generation was
//!   in the group metadata sent with a transaction's offsets (librdkafka fills it in).
//!
//! The flag owns `group.protocol`: `-X group.protocol` is refused (see
//! [`crate::config::OWNED_PROPERTIES`]) so that one setting says which rules apply, here and in
//! the start-up checks.

use crate::config::properties::{Override, Side};
use crate::config::ConfigError;

/// The consumer group protocol (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup with the members' `cooperative-sticky` assignor; works on every
    /// broker (Redpanda included).
    #[default]
    Classic,
    /// KIP-848: the broker assigns and owns the session; Apache Kafka 4.0+.
    Consumer,
}

/// Consumer properties that do not apply under `--group-protocol consumer`, each with what
/// replaces it. librdkafka refuses to create such a consumer.
pub const BROKER_SIDE: &[(&str, &str)] = &[
    (
        "partition.assignment.strategy",
        "the broker assigns partitions; choose its assignor with -X consumer.group.remote.assignor=uniform|range",
    ),
    (
        "session.timeout.ms",
        "the session timeout is the broker's group.consumer.session.timeout.ms (45 s by default)",
    ),
    (
        "heartbeat.interval.ms",
        "the heartbeat interval is the broker's group.consumer.heartbeat.interval.ms (5 s by default)",
    ),
    (
        "group.protocol.type",
        "it only names the classic protocol's embedded protocol",
    ),
];

/// Consumer properties that only apply under `--group-protocol consumer`.
const CONSUMER_ONLY: &[(&str, &str)] = &[(
    "group.remote.assignor",
    "it only applies with --group-protocol consumer; the classic protocol's assignor is partition.assignment.strategy",
)];

impl GroupProtocol {
    /// The value of librdkafka's `group.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }

    /// Refuses the consumer properties that do not apply under this protocol, naming the
    /// property (and the file it came from) and what replaces it.
    pub fn check(self, overrides: &[Override]) -> Result<(), ConfigError> {
        let refused = match self {
            GroupProtocol::Classic => CONSUMER_ONLY,
            GroupProtocol::Consumer => BROKER_SIDE,
        };
        for o in overrides.iter().filter(|o| o.applies_to(Side::Consumer)) {
            if let Some((_, why)) = refused.iter().find(|(k, _)| *k == o.key) {
                return Err(ConfigError {
                    flag: o.name(),
                    message: format!("not used with --group-protocol {}: {why}", self.as_str()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RunConfig;

    fn error(args: &[&str]) -> String {
        RunConfig::from_args(args)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn consumer_refuses_what_the_broker_owns() {
        for key in super::BROKER_SIDE.iter().map(|(k, _)| k) {
            for raw in [format!("consumer.{key}=1"), format!("{key}=1")] {
                let e = error(&["--group-protocol", "consumer", "-X", &raw]);
                assert!(
                    e.starts_with(&format!(
                        "invalid -X {key}: not used with --group-protocol consumer"
                    )),
                    "{e}"
                );
            }
        }
        let e = error(&[
            "--group-protocol",
            "consumer",
            "-X",
            "consumer.session.timeout.ms=6000",
        ]);
        assert!(e.contains("group.consumer.session.timeout.ms"), "{e}");
    }

    /// A blocking revocation does not stop the heartbeats under the consumer protocol: the
    /// drain is bounded by the rebalance timeout, `max.poll.interval.ms`, not by a session.
    #[test]
    fn consumer_drains_within_the_rebalance_timeout() {
        let parse = |args: &[&str]| {
            let mut all = vec!["--group-protocol", "consumer"];
            all.extend_from_slice(args);
            RunConfig::from_args(all).unwrap().validate()
        };
        parse(&["--drain-timeout", "50s"]).unwrap();
        let e = parse(&[
            "--drain-timeout",
            "30s",
            "-X",
            "consumer.max.poll.interval.ms=20000",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("invalid --drain-timeout") && e.contains("max.poll.interval.ms"),
            "{e}"
        );
        // Classic: the session timeout, as before.
        assert!(error(&["--drain-timeout", "50s"]).starts_with("invalid --drain-timeout"));
    }

    #[test]
    fn classic_refuses_the_remote_assignor() {
        let e = error(&["-X", "consumer.group.remote.assignor=range"]);
        assert!(
            e.starts_with(
                "invalid -X group.remote.assignor: not used with --group-protocol classic"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_flag_owns_group_protocol() {
        for raw in ["group.protocol=consumer", "consumer.group.protocol=classic"] {
            let e = error(&["--group-protocol", "consumer", "-X", raw]);
            assert!(
                e.starts_with("invalid -X group.protocol: set by ktransform: use --group-protocol"),
                "{e}"
            );
        }
    }

    #[test]
    fn consumer_clients_are_created() {
        let c = RunConfig::from_args([
            "--group-protocol",
            "consumer",
            "-X",
            "consumer.group.remote.assignor=range",
        ])
        .unwrap();
        c.validate().unwrap();
        let consumer = c.consumer_config().unwrap();
        assert_eq!(consumer.get("group.protocol"), Some("consumer"));
        assert_eq!(consumer.get("group.remote.assignor"), Some("range"));
        assert_eq!(consumer.get("partition.assignment.strategy"), None);
        // The producer has no group.
        assert_eq!(c.producer_config().unwrap().get("group.protocol"), None);
        // Classic: the properties of before this flag, librdkafka's default protocol.
        let classic = RunConfig::from_args::<[&str; 0], &str>([]).unwrap();
        let consumer = classic.consumer_config().unwrap();
        assert_eq!(consumer.get("group.protocol"), None);
        assert_eq!(
            consumer.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
    }
}
