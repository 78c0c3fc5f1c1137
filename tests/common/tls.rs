//! A broker of a test's own with TLS listeners (`scripts/kafka.sh` with `KAFKA_SSL_PORT` and the
//! others): their addresses, the certificates the script made, the secrets it set (which no output
//! may show), a `--config` file writer, and the `ktransform` binary with both its outputs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::blocking;
use super::nodes::{free_port, Brokers};

/// The SCRAM-SHA-512 user scripts/kafka.sh adds for the SASL_SSL listener, and its password.
pub const SCRAM_USER: &str = "ktransform";
pub const SCRAM_PASSWORD: &str = "scram-secret";
/// The password of client.key, the client's (encrypted) key.
pub const CLIENT_KEY_PASSWORD: &str = "client-key-secret";
/// The password of the broker's own keystores.
pub const STORE_PASSWORD: &str = "broker-store-secret";

/// A single-node broker with every TLS listener of scripts/kafka.sh, besides its PLAINTEXT one.
pub struct TlsBroker {
    /// PLAINTEXT, for the tests' own set-up and checks.
    pub plain: String,
    /// SSL with a certificate for 127.0.0.1 signed by ca.pem.
    pub ssl: String,
    /// SASL_SSL, SCRAM-SHA-512 ([`SCRAM_USER`]).
    pub sasl_ssl: String,
    /// SSL requiring a client certificate signed by ca.pem.
    pub mtls: String,
    /// SSL with a certificate that expired yesterday.
    pub expired: String,
    /// SSL with a certificate for wrong-host.example only.
    pub wrong_host: String,
    tls: PathBuf,
    _brokers: Brokers,
}

impl TlsBroker {
    /// Starts it (blocking: call through `spawn_blocking`); stopped and deleted when dropped.
    pub fn start() -> Self {
        let ports: Vec<String> = (0..5).map(|_| free_port().to_string()).collect();
        let brokers = Brokers::single_with(
            "tls",
            &[
                ("KAFKA_SSL_PORT", &ports[0]),
                ("KAFKA_SASL_SSL_PORT", &ports[1]),
                ("KAFKA_MTLS_PORT", &ports[2]),
                ("KAFKA_SSL_EXPIRED_PORT", &ports[3]),
                ("KAFKA_SSL_WRONG_HOST_PORT", &ports[4]),
            ],
        );
        let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
        TlsBroker {
            plain: brokers.bootstrap.clone(),
            ssl: address(0),
            sasl_ssl: address(1),
            mtls: address(2),
            expired: address(3),
            wrong_host: address(4),
            tls: brokers
                .state_dir()
                .expect("a scratch broker")
                .join("node-1/tls"),
            _brokers: brokers,
        }
    }

    /// The path of one of the script's TLS files (`ca.pem`, `client.key`, …).
    pub fn file(&self, name: &str) -> String {
        self.tls.join(name).display().to_string()
    }
}

/// Writes a `--config` file: `settings` as top-level string keys, `rdkafka` in `[rdkafka]`.
pub fn write_config(path: &Path, settings: &[(&str, &str)], rdkafka: &[(&str, &str)]) {
    let mut text = String::new();
    for (key, value) in settings {
        text.push_str(&format!("{key} = {value:?}\n"));
    }
    text.push_str("\n[rdkafka]\n");
    for (key, value) in rdkafka {
        text.push_str(&format!("{key} = {value:?}\n"));
    }
    std::fs::write(path, text).expect("write the config file");
}

/// How the binary ended.
#[derive(Debug)]
pub struct Output {
    /// None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `ktransform` binary with `args` (no `KTRANSFORM_*` variable of the caller, so the
/// settings are the flags' and the `--config` file's; `RUST_LOG=info`) to its exit; past `cap`
/// kills it and fails the test with its output.
pub async fn ktransform(args: Vec<String>, cap: Duration) -> Output {
    blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ktransform"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KTRANSFORM_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the ktransform binary");
        let read = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = read(Box::new(child.stdout.take().unwrap()));
        let stderr = read(Box::new(child.stderr.take().unwrap()));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the child") {
                break Some(status);
            }
            if started.elapsed() >= cap {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = Output {
            code: status.and_then(|s| s.code()),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        assert!(
            status.is_some(),
            "ktransform {args:?} did not exit within {cap:?} and was killed: {output:?}"
        );
        output
    })
    .await
}
