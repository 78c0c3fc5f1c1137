//! Running as one of N replicas under an orchestrator (Kubernetes, Nomad, systemd on several
//! hosts): one stable name per replica, `--instance-id`, and the form of the log lines,
//! `--log-format`.
//!
//! # The instance id
//! `--instance-id NAME` (a StatefulSet pod name, a Nomad alloc index) is the consumer's
//! `group.instance.id` (KIP-345 static membership) and, under exactly-once, makes the
//! transactional id `ktransform-<group>-<NAME>`. A static member that stops does not leave the
//! group: when it comes back under the same name within the session timeout it takes its
//! partitions back and the other members see no rebalance; under exactly-once its producer
//! aborts its predecessor's open transaction at once instead of after
//! `transaction.timeout.ms`. The price: a member that stops for good keeps its partitions
//! unread until the session timeout expires.
//!
//! One name, one source: `-X group.instance.id` alone is taken as the instance id (so it also
//! derives the transactional id), and `--transactional-id` or `-X group.instance.id` given
//! together with `--instance-id` must agree with it; otherwise the run is refused at start,
//! naming the flag.
//!
//! Two live instances with the same id: the group fences one of them, fatally, and that one
//! exits 1 saying so. Under `--group-protocol classic` the newer member takes the id and the
//! older is fenced (`FENCED_INSTANCE_ID`: the coordinator cannot tell a live predecessor from a
//! dead one within its session, and a restart must replace the latter at once); under
//! `consumer` the member holding the id keeps it and the newcomer is refused
//! (`UNRELEASED_INSTANCE_ID`) until the holder leaves or its session expires.

use clap::Args;

use crate::config::properties::{Override, Side};
use crate::config::{invalid, ConfigError, Guarantee, RunConfig};

/// librdkafka's consumer property for static membership.
const GROUP_INSTANCE_ID: &str = "group.instance.id";

/// The flags of this module, flattened into `ktransform run`.
#[derive(Debug, Clone, Args)]
pub struct OrchestratorArgs {
    /// A stable name for this instance, unique among the live instances of the group (a pod
    /// name): the consumer's static group membership (`group.instance.id`), and under
    /// exactly-once the transactional id `ktransform-<group>-<NAME>`. A restart under the same
    /// name within the session timeout moves no partition.
    #[arg(long, env = "KTRANSFORM_INSTANCE_ID", value_name = "NAME")]
    pub instance_id: Option<String>,

    /// Log lines on stderr: `text` for people, or `json`, one object per line (timestamp,
    /// level, target, message and the event's fields) for log pipelines.
    #[arg(
        long,
        env = "KTRANSFORM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// The form of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message, `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the fields.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl RunConfig {
    /// The instance's stable name: `--instance-id`, else `-X group.instance.id`.
    pub fn instance_id(&self) -> Result<Option<String>, ConfigError> {
        let given = self.orchestrator.instance_id.clone();
        let property = consumer_instance_id(&self.kafka.overrides()?);
        match (given, property) {
            (Some(id), Some(o)) if o.value != id => Err(invalid(
                o.name(),
                format!(
                    "`{}` conflicts with --instance-id `{id}`, which sets group.instance.id; give only --instance-id",
                    o.value
                ),
            )),
            (Some(id), _) => Ok(Some(id)),
            (None, Some(o)) => Ok(Some(o.value)),
            (None, None) => Ok(None),
        }
    }

    /// The transactional id under exactly-once: `--transactional-id`, else derived from the
    /// instance id, else `None` (a random one per start).
    pub fn stable_transactional_id(&self) -> Result<Option<String>, ConfigError> {
        let derived = self
            .instance_id()?
            .map(|id| format!("ktransform-{}-{id}", self.group));
        match (&self.transactional_id, derived) {
            (Some(given), Some(derived)) if *given != derived => Err(invalid(
                "--transactional-id",
                format!(
                    "`{given}` conflicts with the instance id, which makes the transactional id `{derived}`; give only --instance-id"
                ),
            )),
            (Some(given), _) => Ok(Some(given.clone())),
            (None, derived) => Ok(derived),
        }
    }

    /// The start-up checks of this module's flags.
    pub(crate) fn check_orchestrator(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.orchestrator.instance_id {
            check_instance_id(id)?;
        }
        if let Some(id) = self.instance_id()? {
            if self.orchestrator.instance_id.is_none() {
                check_instance_id(&id)
                    .map_err(|e| invalid(format!("-X {GROUP_INSTANCE_ID}"), e.message))?;
            }
        }
        if self.pipeline.guarantee == Guarantee::ExactlyOnce {
            self.stable_transactional_id()?;
        }
        Ok(())
    }
}

/// The last `group.instance.id` the consumer gets from `-X` or the file, if any.
fn consumer_instance_id(overrides: &[Override]) -> Option<Override> {
    overrides
        .iter()
        .rev()
        .find(|o| o.key == GROUP_INSTANCE_ID && o.applies_to(Side::Consumer))
        .cloned()
}

/// Kafka's rule for a group instance id, 1-249 of `[a-zA-Z0-9._-]` and not `.` or `..` (the
/// Java client's `JoinGroupRequest.validateGroupInstanceId`; also a valid transactional id):
/// one that other clients would refuse is refused here, naming the flag.
fn check_instance_id(id: &str) -> Result<(), ConfigError> {
    if super::is_kafka_name(id) {
        Ok(())
    } else {
        Err(invalid(
            "--instance-id",
            format!(
                "`{id}` is not a group instance id (1-249 of [a-zA-Z0-9._-], as Kafka requires)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RunConfig;

    fn parse(args: &[&str]) -> RunConfig {
        RunConfig::from_args(args).unwrap()
    }

    fn error(args: &[&str]) -> String {
        parse(args).validate().unwrap_err().to_string()
    }

    const EOS: [&str; 2] = ["--guarantee", "exactly-once"];

    #[test]
    fn the_instance_id_is_the_static_member_and_the_transactional_id() {
        let c = parse(&["--instance-id", "pod-1", "--group", "g", EOS[0], EOS[1]]);
        c.validate().unwrap();
        let consumer = c.consumer_config().unwrap();
        assert_eq!(consumer.get("group.instance.id"), Some("pod-1"));
        let producer = c.producer_config().unwrap();
        assert_eq!(producer.get("transactional.id"), Some("ktransform-g-pod-1"));
        // The producer has no group.
        assert_eq!(producer.get("group.instance.id"), None);
        // At-least-once: no transactional id at all.
        let c = parse(&["--instance-id", "pod-1"]);
        c.validate().unwrap();
        assert_eq!(c.producer_config().unwrap().get("transactional.id"), None);
    }

    #[test]
    fn a_property_alone_is_the_instance_id() {
        let c = parse(&[
            "-X",
            "consumer.group.instance.id=pod-2",
            "--group",
            "g",
            EOS[0],
            EOS[1],
        ]);
        c.validate().unwrap();
        assert_eq!(c.instance_id().unwrap().as_deref(), Some("pod-2"));
        assert_eq!(
            c.producer_config().unwrap().get("transactional.id"),
            Some("ktransform-g-pod-2")
        );
    }

    #[test]
    fn agreeing_flags_are_accepted() {
        parse(&[
            "--instance-id",
            "pod-1",
            "-X",
            "group.instance.id=pod-1",
            "--group",
            "g",
            "--transactional-id",
            "ktransform-g-pod-1",
            EOS[0],
            EOS[1],
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn conflicts_are_refused_naming_the_flag() {
        let e = error(&[
            "--instance-id",
            "pod-1",
            "-X",
            "consumer.group.instance.id=pod-9",
        ]);
        assert!(
            e.starts_with(
                "invalid -X group.instance.id: `pod-9` conflicts with --instance-id `pod-1`"
            ),
            "{e}"
        );
        let e = error(&[
            "--instance-id",
            "pod-1",
            "--transactional-id",
            "t-1",
            EOS[0],
            EOS[1],
        ]);
        assert!(
            e.starts_with("invalid --transactional-id: `t-1` conflicts with the instance id")
                && e.contains("ktransform-ktransform-pod-1"),
            "{e}"
        );
        let e = error(&["--instance-id", "pod 1"]);
        assert!(e.starts_with("invalid --instance-id: `pod 1`"), "{e}");
        let e = error(&["--instance-id", ""]);
        assert!(e.starts_with("invalid --instance-id"), "{e}");
        let e = error(&["-X", "group.instance.id=a/b"]);
        assert!(e.starts_with("invalid -X group.instance.id"), "{e}");
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        use super::LogFormat;
        assert_eq!(parse(&[]).orchestrator.log_format, LogFormat::Text);
        assert_eq!(
            parse(&["--log-format", "json"]).orchestrator.log_format,
            LogFormat::Json
        );
        assert!(RunConfig::from_args(["--log-format", "xml"]).is_err());
    }
}
