//! librdkafka's own errors and log lines, kept quiet: while a broker is down it repeats
//! "connection refused" every second or so, per client. The first of a run of problems is logged
//! at WARN, then at most one summary line per [`INTERVAL`] with how many were suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

pub const INTERVAL: Duration = Duration::from_secs(30);

/// Rate-limited sink for one client's errors and log lines.
#[derive(Default)]
pub struct ClientLog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl ClientLog {
    pub fn error(&self, error: &KafkaError, reason: &str) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(%error, reason, suppressed, "kafka client error");
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
            Debug => tracing::trace!(fac, "librdkafka: {message}"),
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

/// The producer's context: only the quiet logging.
#[derive(Default)]
pub struct QuietContext {
    log: ClientLog,
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
