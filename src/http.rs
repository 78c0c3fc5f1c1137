//! `/metrics` (Prometheus text), `/livez`, `/healthz` and `/readyz` on `--metrics-addr`.
//!
//! - `/livez`: 200 unless the process itself is broken: no partition is stalled past the stall
//!   watchdog's health bound (`crate::stall`: its heals in place did not help, a fresh process
//!   would). A runtime too stuck to answer fails it by not answering. It never looks at the
//!   brokers: a liveness probe (Kubernetes restarts the container on it) must not restart every
//!   instance while the brokers are away, since a new process would find them away too.
//! - `/healthz`: `/livez`, and a broker seen up within [`BROKER_WINDOW`] (librdkafka
//!   statistics, every [`STATISTICS_INTERVAL`]), else 503 with the reason: for a person or an
//!   alert asking "is this instance doing its work?", not for a restart.
//! - `/readyz`: 200 when partitions are assigned and the run is not stopping, else 503.
//!
//! Four GET routes do not need a web framework: this reads one request line per connection,
//! answers and closes.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::metrics::Stats;

pub use crate::config::clients::STATISTICS_INTERVAL;
use crate::config::DEFAULT_METRICS_ADDR;
/// `/healthz` fails when no broker was seen up for this long.
pub const BROKER_WINDOW: Duration = Duration::from_secs(30);

/// What the endpoints report on.
pub struct Health {
    pub stats: Arc<Stats>,
    pub stopping: AtomicBool,
}

/// Binds now, so that an address that cannot be had is known at start. A given address
/// (`--metrics-addr`, its env var or file key) must be bound: on an error the caller stops the
/// start. Without one, [`DEFAULT_METRICS_ADDR`] is tried, and when another process holds it
/// (N instances started with the same flags on one host) a free port on the same interface
/// is taken instead and logged: an instance that only lacks its metrics port keeps working.
pub async fn bind(given: Option<SocketAddr>) -> Result<TcpListener, (SocketAddr, io::Error)> {
    if let Some(addr) = given {
        return TcpListener::bind(addr).await.map_err(|e| (addr, e));
    }
    let default: SocketAddr = DEFAULT_METRICS_ADDR
        .parse()
        .expect("DEFAULT_METRICS_ADDR is an address");
    match TcpListener::bind(default).await {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let any = SocketAddr::new(default.ip(), 0);
            let listener = TcpListener::bind(any).await.map_err(|e| (any, e))?;
            if let Ok(addr) = listener.local_addr() {
                tracing::warn!(
                    %default,
                    %addr,
                    "the default metrics address is taken (another instance on this host?); \
                     serving on a free port instead (--metrics-addr chooses one)"
                );
            }
            Ok(listener)
        }
        other => other.map_err(|e| (default, e)),
    }
}

/// The endpoints' task; dropped, it stops serving (a start that fails after binding does not
/// leave the port taken).
pub struct Server(tokio::task::JoinHandle<()>);

impl Server {
    pub fn spawn(listener: TcpListener, health: Arc<Health>) -> Self {
        Server(tokio::spawn(serve(listener, health)))
    }

    pub fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn serve(listener: TcpListener, health: Arc<Health>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            let read = reader.read_line(&mut line);
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = respond(path, &health);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = write.write_all(head.as_bytes()).await;
            let _ = write.write_all(body.as_bytes()).await;
            let _ = write.shutdown().await;
        });
    }
}

fn respond(path: &str, health: &Health) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let check = |ok: bool, why: &str| {
        if ok {
            ("200 OK", TEXT, "ok\n".to_string())
        } else {
            ("503 Service Unavailable", TEXT, format!("{why}\n"))
        }
    };
    match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, health.stats.registry()) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
            }
        }
        "/livez" => match unhealed(health) {
            Some(why) => check(false, &why),
            None => check(true, ""),
        },
        "/healthz" => {
            if !health.stats.broker_seen_within(BROKER_WINDOW) {
                check(false, "no broker seen up recently")
            } else if let Some(why) = unhealed(health) {
                check(false, &why)
            } else {
                check(true, "")
            }
        }
        "/readyz" => {
            let assigned = health.stats.snapshot().assigned_partitions > 0;
            let stopping = health.stopping.load(Relaxed);
            check(
                assigned && !stopping,
                if stopping {
                    "stopping"
                } else {
                    "no partitions assigned"
                },
            )
        }
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /livez, /healthz or /readyz\n".to_string(),
        ),
    }
}

/// Why the process is broken: partitions stalled past the watchdog's health bound.
fn unhealed(health: &Health) -> Option<String> {
    let unhealed = health.stats.unhealed_stalls();
    (!unhealed.is_empty()).then(|| format!("stalled, not healed: {}", unhealed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health {
            stats: Stats::new(),
            stopping: AtomicBool::new(false),
        }
    }

    fn status(path: &str, health: &Health) -> &'static str {
        respond(path, health).0
    }

    #[test]
    fn livez_ignores_the_brokers() {
        // No statistics ever said a broker was up: the brokers are away.
        let health = health();
        assert!(!health.stats.broker_seen_within(BROKER_WINDOW));
        assert_eq!(status("/healthz", &health), "503 Service Unavailable");
        assert_eq!(
            respond("/healthz", &health).2,
            "no broker seen up recently\n"
        );
        assert_eq!(status("/livez", &health), "200 OK");
    }

    #[test]
    fn livez_fails_when_the_stall_watchdog_gives_up() {
        let health = health();
        health.stats.stall_unhealed("in", 3);
        let (code, _, body) = respond("/livez", &health);
        assert_eq!(code, "503 Service Unavailable");
        assert_eq!(body, "stalled, not healed: in/3\n");
        health.stats.stall_ended("in", 3);
        assert_eq!(status("/livez", &health), "200 OK");
    }
}
