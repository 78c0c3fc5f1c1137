//! `ktransform lag --serve ADDR`: the live view. A thread samples the group every `--interval`
//! into [`Live`] (`lag/live.rs`); a small HTTP server answers `/` (the page), `/page.js`,
//! `/page.css` and `/lag.json` (the page's data, [`super::live::View`]).
//!
//! The page is self-contained: its HTML, script and style are compiled into the binary
//! (`lag/page.*`, `include_str!`), the charts are SVG drawn by that script, and the
//! Content-Security-Policy `default-src 'self'` keeps the browser from loading or sending
//! anything elsewhere. Four GET routes do not need a web framework: as `crate::http` does for
//! `/metrics`, one request per connection, answered and closed.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::live::Live;
use super::{LagConfig, LagReader};
use crate::config::ConfigError;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The shortest `--interval` the view samples at: each sample asks the brokers for metadata,
/// committed offsets, every partition's watermarks and the group's description.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// How long a client may take to send its request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Request heads longer than this are not read further (the page's requests are a few hundred
/// bytes).
const MAX_HEAD_LINES: usize = 100;

/// Serves the live view of `config.group` on `config.serve` until `shutdown` resolves or
/// `--duration` has passed.
pub async fn run(
    config: LagConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::Error> {
    let flag = |message: String| ConfigError {
        flag: "--serve".into(),
        message,
    };
    let Some(addr) = config.serve else {
        return Err(flag("no address given".into()).into());
    };
    if config.interval < MIN_INTERVAL {
        return Err(ConfigError {
            flag: "--interval".into(),
            message: format!(
                "{} is too short for --serve: at least {}",
                humantime::format_duration(config.interval),
                humantime::format_duration(MIN_INTERVAL)
            ),
        }
        .into());
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| flag(format!("cannot listen on {addr}: {e}")))?;
    let reader = LagReader::new(&config)?;
    let local = listener.local_addr()?;
    tracing::info!(
        group = %config.group,
        topic = %config.topic,
        "live view on http://{local}/ (its data: http://{local}/lag.json)"
    );
    let live = Arc::new(Mutex::new(Live::new(&config)));
    let (stop, stopped) = mpsc::channel();
    let sampling = live.clone();
    let interval = config.interval;
    let renew = config.clone();
    // Not joined: a sample in progress while the brokers are away takes up to its request
    // timeouts, and the view has nothing to finish.
    std::thread::Builder::new()
        .name("lag-sampler".into())
        .spawn(move || sample(reader, &renew, &sampling, interval, &stopped))?;
    let expired = async {
        match config.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = expired => {}
        () = serve(listener, live) => {}
    }
    let _ = stop.send(());
    Ok(())
}

/// How long the brokers may go unanswered before the reader's client is replaced: librdkafka
/// can lose every broker for good after a broker restart (librdkafka#5301, see
/// [`crate::cutoff`]), and a view left open for days must come back by itself.
const RENEW_AFTER: Duration = Duration::from_secs(60);

/// Samples every `interval` until told to stop (or the sender is gone).
fn sample(
    mut reader: LagReader,
    config: &LagConfig,
    live: &Mutex<Live>,
    interval: Duration,
    stop: &mpsc::Receiver<()>,
) {
    let mut answered = Instant::now();
    loop {
        let started = Instant::now();
        if started.duration_since(answered) >= RENEW_AFTER {
            if let Ok(fresh) = LagReader::new(config) {
                tracing::info!("no answer for {RENEW_AFTER:?}: reading through a new client");
                reader = fresh;
            }
            answered = started;
        }
        let observed = reader.observe();
        if observed.is_ok() {
            answered = Instant::now();
        }
        {
            let mut live = lock(live);
            match observed {
                Ok(observation) => {
                    if live.failing() {
                        tracing::info!("the brokers answer again");
                    }
                    live.observed(observation);
                }
                Err(e) => {
                    let refusal = reader.refusal();
                    if !live.failing() {
                        match &refusal {
                            Some(refusal) => tracing::error!(
                                "{refusal}; the page says so until the brokers accept this client"
                            ),
                            None => tracing::warn!(
                                error = %e,
                                "cannot read the group's offsets; the page says so until they can be"
                            ),
                        }
                    }
                    live.failed(&e, refusal.map(|r| r.to_string()), SystemTime::now());
                }
            }
        }
        match stop.recv_timeout(interval.saturating_sub(started.elapsed())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The state, also after a panic elsewhere while it was held (it is replaced whole or not at
/// all by each call, so it stays readable).
fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn serve(listener: TcpListener, live: Arc<Mutex<Live>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let live = live.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &live)).await;
        });
    }
}

async fn answer(stream: TcpStream, live: &Mutex<Live>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut request = String::new();
    reader.read_line(&mut request).await?;
    // The rest of the head is read and dropped: closing a socket with unread bytes resets the
    // connection, which can cut off the answer on its way.
    let mut line = String::new();
    for _ in 0..MAX_HEAD_LINES {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", TEXT, "GET only\n".to_string())
    } else {
        respond(path, live)
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nContent-Security-Policy: default-src 'self'\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    write.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        write.write_all(body.as_bytes()).await?;
    }
    write.shutdown().await
}

const TEXT: &str = "text/plain; charset=utf-8";

fn respond(path: &str, live: &Mutex<Live>) -> (&'static str, &'static str, String) {
    match path {
        "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", PAGE.to_string()),
        "/page.js" => (
            "200 OK",
            "text/javascript; charset=utf-8",
            SCRIPT.to_string(),
        ),
        "/page.css" => ("200 OK", "text/css; charset=utf-8", STYLE.to_string()),
        "/lag.json" => {
            let live = lock(live);
            match serde_json::to_string(&live.view(SystemTime::now())) {
                Ok(json) => ("200 OK", "application/json", json),
                Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
            }
        }
        _ => (
            "404 Not Found",
            TEXT,
            "try / (the live view) or /lag.json (its data)\n".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::*;

    fn live() -> Mutex<Live> {
        Mutex::new(Live::new(&config(&["--group", "g"])))
    }

    #[test]
    fn routes() {
        let live = live();
        let (status, kind, body) = respond("/", &live);
        assert_eq!((status, kind), ("200 OK", "text/html; charset=utf-8"));
        assert!(body.contains("page.js") && body.contains("page.css"));
        assert_eq!(respond("/page.js", &live).0, "200 OK");
        let (status, kind, body) = respond("/lag.json", &live);
        assert_eq!((status, kind), ("200 OK", "application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "waiting");
        assert_eq!(v["group"], "g");
        assert_eq!(respond("/nothing", &live).0, "404 Not Found");
    }

    /// Self-contained: the page, its script and its style name no other host (the one URL is
    /// SVG's namespace, which is never fetched) and import nothing.
    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("page.html", PAGE),
            ("page.js", SCRIPT),
            ("page.css", STYLE),
        ] {
            let text = text.replace("\"http://www.w3.org/2000/svg\"", "");
            for needle in ["http:", "https:", "@import", "url(", "import "] {
                assert!(!text.contains(needle), "{name} has {needle}");
            }
        }
        assert!(PAGE.contains("src=\"page.js\"") && PAGE.contains("href=\"page.css\""));
    }
}
