//! `/metrics` (Prometheus text), `/healthz` and `/readyz` on `--metrics-addr`.
//!
//! - `/healthz`: 200 while a broker was seen up within [`BROKER_WINDOW`] (librdkafka statistics,
//!   every [`STATISTICS_INTERVAL`]) and no partition is stalled past the stall watchdog's health
//!   bound (`crate::stall`: its heals did not help), else 503 with the reason. An orchestrator
//!   restarting on it restarts a process that lost its brokers or a partition, not one that is
//!   busy.
//! - `/readyz`: 200 when partitions are assigned and the run is not stopping, else 503.
//!
//! Three GET routes do not need a web framework: this reads one request line per connection,
//! answers and closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::metrics::Stats;

pub use crate::config::clients::STATISTICS_INTERVAL;
/// `/healthz` fails when no broker was seen up for this long.
pub const BROKER_WINDOW: Duration = Duration::from_secs(30);

/// What the endpoints report on.
pub struct Health {
    pub stats: Arc<Stats>,
    pub stopping: AtomicBool,
}

/// Binds now (so a taken port fails at start) and serves until the task is dropped.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
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
        "/healthz" => {
            let unhealed = health.stats.unhealed_stalls();
            if !health.stats.broker_seen_within(BROKER_WINDOW) {
                check(false, "no broker seen up recently")
            } else if !unhealed.is_empty() {
                let why = format!("stalled, not healed: {}", unhealed.join(", "));
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
            "try /metrics, /healthz or /readyz\n".to_string(),
        ),
    }
}
