//! librdkafka's own errors and log lines, kept quiet: while a broker is down it repeats
//! "connection refused" every second or so, per client. The first of a run of problems is logged
//! at WARN, then at most one summary line per [`INTERVAL`] with how many were suppressed.
//!
//! Errors that no retry can cure ([`fatal_cause`]: credentials refused, an operation the ACLs
//! deny, librdkafka's own fatal error, a consumer's fatal error such as a fenced static member)
//! are raised on [`FatalErrors`] instead, which stops the run with the cause named.
//!
//! Where the lines go, and in which form (`--log-format text|json`), is the subscriber's
//! business, set up by the binary: these are ordinary `tracing` events with the librdkafka
//! facility as the field `fac`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;
use tokio::sync::Notify;

pub const INTERVAL: Duration = Duration::from_secs(30);

/// Why `error` means the client can never work as configured, or `None` for errors that
/// retries (librdkafka's own, or ours) wait out.
pub fn fatal_cause(error: &KafkaError) -> Option<&'static str> {
    use RDKafkaErrorCode::*;
    match error.rdkafka_error_code()? {
        Authentication | SaslAuthenticationFailed => {
            Some("authentication failed: check security.protocol and the sasl.* / ssl.* properties")
        }
        TopicAuthorizationFailed
        | GroupAuthorizationFailed
        | ClusterAuthorizationFailed
        | TransactionalIdAuthorizationFailed => Some(
            "not authorized: the cluster's ACLs deny this principal an operation ktransform needs",
        ),
        Fatal => Some("the Kafka client hit a fatal error"),
        _ => None,
    }
}

/// The first unrecoverable client error of a run, for the coordinator to stop on.
#[derive(Default)]
pub struct FatalErrors {
    first: Mutex<Option<String>>,
    raised: Notify,
}

impl FatalErrors {
    pub fn raise(&self, message: String) {
        let mut first = self.first.lock().unwrap();
        if first.is_none() {
            tracing::error!("{message}");
            *first = Some(message);
            self.raised.notify_one();
        }
    }

    /// The first error raised, if any.
    pub fn get(&self) -> Option<String> {
        self.first.lock().unwrap().clone()
    }

    /// Resolves with the first error raised.
    pub async fn wait(&self) -> String {
        loop {
            if let Some(message) = self.get() {
                return message;
            }
            self.raised.notified().await;
        }
    }
}

/// Rate-limited sink for one client's errors and log lines.
#[derive(Default)]
pub struct ClientLog {
    state: Mutex<State>,
    fatal: Option<Arc<FatalErrors>>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl ClientLog {
    /// A log that raises unrecoverable errors on `fatal`.
    pub fn raising(fatal: Arc<FatalErrors>) -> Self {
        ClientLog {
            state: Mutex::default(),
            fatal: Some(fatal),
        }
    }

    pub fn error(&self, error: &KafkaError, reason: &str) {
        if let (Some(fatal), Some(cause)) = (&self.fatal, fatal_cause(error)) {
            fatal.raise(format!("{cause} ({error}: {reason})"));
            return;
        }
        if let Some(suppressed) = self.admit() {
            tracing::warn!(%error, reason, suppressed, "kafka client error");
        }
    }

    /// A consumer's fatal error, seen in its `FATAL` log line. librdkafka logs every fatal error
    /// so when the client has an error event handler (rust-rdkafka always sets one), and hands a
    /// consumer's fatal error to the consumer queue as a consumer error, not to the error
    /// callback: the log line is where it is sure to be seen. Without this a consumer fenced
    /// for its `group.instance.id` stayed up, a member of nothing, until stopped.
    pub fn consumer_fatal(&self, message: &str) {
        match &self.fatal {
            Some(fatal) => fatal.raise(format!("the Kafka consumer hit a fatal error: {message}")),
            None => tracing::error!("librdkafka: {message}"),
        }
    }

    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error | Warning => {
                if let Some(suppressed) = self.admit() {
                    tracing::warn!(fac, suppressed, "librdkafka: {message}");
                }
            }
            Notice | Info => tracing::debug!(fac, "librdkafka: {message}"),
            // Only emitted when asked for with `-X debug=<contexts>`: show them.
            Debug => tracing::info!(fac, "librdkafka: {message}"),
        }
    }

    /// Whether to log now; if so, how many were suppressed since the last line.
    fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        match state.last {
            Some(last) if now.duration_since(last) < INTERVAL => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

/// The admin client's and start-up probe's context: only the quiet logging.
#[derive(Default)]
pub struct QuietContext {
    log: ClientLog,
}

impl QuietContext {
    pub fn raising(fatal: Arc<FatalErrors>) -> Self {
        QuietContext {
            log: ClientLog::raising(fatal),
        }
    }
}

/// As a producer's context (the start-up probe never sends): no delivery reports to handle.
impl rdkafka::producer::ProducerContext for QuietContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

impl ClientContext for QuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_suppressed_then_counted() {
        let log = ClientLog::default();
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        log.state.lock().unwrap().last = Some(Instant::now() - INTERVAL);
        assert_eq!(log.admit(), Some(2));
    }
}
