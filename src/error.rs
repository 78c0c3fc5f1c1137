//! What stops a run, and the exit code each maps to.

use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::config::ConfigError;
use crate::partition::WorkerError;

/// Exit codes of `ktransform run` (documented in docs/delivery.md).
pub mod exit {
    /// Stopped on request, or `--until-end` reached the end; everything committed.
    pub const OK: i32 = 0;
    /// A fatal error while running; nothing was committed past the failure.
    pub const FATAL: i32 = 1;
    /// Invalid flags or configuration (clap's usage errors use 2 as well).
    pub const CONFIG: i32 = 2;
    /// The shutdown deadline passed with records unacknowledged; they will be consumed again.
    pub const SHUTDOWN_TIMEOUT: i32 = 3;
    /// The brokers could not be reached at start.
    pub const UNREACHABLE: i32 = 4;
    /// `ktransform verify`: the audit found records that break the chosen guarantee.
    pub const VERIFY_FAILED: i32 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("broker {brokers} unreachable for {waited:?} ({source}); is it running? `make up` starts the local one")]
    Unreachable {
        brokers: String,
        waited: Duration,
        source: KafkaError,
    },

    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),

    /// The brokers refuse this client's certificates or credentials.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),

    #[error("partition {partition}: {error}")]
    Worker { partition: i32, error: WorkerError },

    #[error("{0}")]
    Fatal(String),

    /// Two members of a group with one `--instance-id`: the group stopped this one.
    #[error("{}", instance_id_taken(.group, .instance_id, *.loss, .cause))]
    InstanceIdTaken {
        group: String,
        instance_id: String,
        loss: InstanceIdLoss,
        cause: String,
    },

    #[error("shutdown deadline of {timeout:?} passed with {uncommitted} records unacknowledged; they were not committed and will be consumed again")]
    ShutdownTimeout {
        timeout: Duration,
        uncommitted: usize,
    },

    #[error("offsets could not be committed within the {timeout:?} shutdown deadline; records after the last committed offset will be consumed again")]
    NotCommitted { timeout: Duration },

    #[error("{0}")]
    Io(#[from] std::io::Error),

    /// `ktransform verify` found records that break the guarantee; lists the broken rules.
    #[error("audit failed: {0}")]
    AuditFailed(String),

    #[error(transparent)]
    Transaction(#[from] crate::transaction::TxnError),

    /// A record reached the consumer's main queue, or a partition's queue could not be split:
    /// continuing could commit past records no worker saw.
    #[error("{topic}/{partition}: {what}; its partition was not split into its own queue")]
    NotSplit {
        topic: String,
        partition: i32,
        what: String,
    },

    /// The stall watchdog could not replace a stalled partition's worker without losing track
    /// of records.
    #[error("{topic}/{partition} stalled and could not be re-split: {what}; stopping so that a restart resumes from the committed offsets")]
    Stalled {
        topic: String,
        partition: i32,
        what: String,
    },

    /// One of the instance's clients got no answer from the brokers while the other did
    /// ([`crate::cutoff`]).
    #[error("the {client} of group {group}'s member got no answer from the brokers for {lasted:?} ({checks} checks) while the {} did: cut off (librdkafka#5301 leaves a client without brokers for good); stopping so that a restart gets new clients", client.other())]
    CutOff {
        group: String,
        client: crate::cutoff::Client,
        lasted: Duration,
        checks: u32,
    },

    #[error("cannot start the hashing pool: {0}")]
    HashPool(#[from] rayon::ThreadPoolBuildError),

    /// A task or thread of the run panicked.
    #[error("the {what} task failed: {source}")]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

/// Which of two members with one `--instance-id` the group stops, and why this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceIdLoss {
    /// Classic: a newer member joined with the id and took this one's place
    /// (`FENCED_INSTANCE_ID`).
    Fenced,
    /// KIP-848: the group still has a member with the id, live or stopped without leaving and
    /// within its session (`UNRELEASED_INSTANCE_ID`).
    Refused,
}

fn instance_id_taken(group: &str, id: &str, loss: InstanceIdLoss, cause: &str) -> String {
    let what = match loss {
        InstanceIdLoss::Fenced => format!(
            "another instance joined group {group} with --instance-id {id} and took this one's place (under --group-protocol classic the newer member wins)"
        ),
        InstanceIdLoss::Refused => format!(
            "group {group} still has a member with --instance-id {id}, live or stopped without leaving and within its session; this one was refused (under --group-protocol consumer the member holding an id keeps it until it leaves or its session expires)"
        ),
    };
    format!("{what}; every live instance needs its own id ({cause})")
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::Unreachable { .. } => exit::UNREACHABLE,
            Error::ShutdownTimeout { .. } | Error::NotCommitted { .. } => exit::SHUTDOWN_TIMEOUT,
            Error::AuditFailed(_) => exit::VERIFY_FAILED,
            Error::Client(_)
            | Error::Security(_)
            | Error::Worker { .. }
            | Error::Fatal(_)
            | Error::InstanceIdTaken { .. }
            | Error::Io(_)
            | Error::Transaction(_)
            | Error::NotSplit { .. }
            | Error::Stalled { .. }
            | Error::CutOff { .. }
            | Error::HashPool(_)
            | Error::Task { .. } => exit::FATAL,
        }
    }
}
