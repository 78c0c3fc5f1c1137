//! ktransform under test: `run` in-process with an injected shutdown, or the binary as a child.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ktransform::cli::{Cli, Command as CliCommand};
use ktransform::{Error, RunConfig, Summary};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{blocking, brokers, CAP};

/// A `run` configuration as the binary would parse it, against `bootstrap`.
fn config(bootstrap: &str, args: &[String]) -> RunConfig {
    let argv = ["ktransform", "run", "--brokers", bootstrap]
        .into_iter()
        .chain(args.iter().map(String::as_str));
    match Cli::try_parse_from(argv).expect("valid flags").command {
        CliCommand::Run(c) => c,
        other => panic!("not a run command: {other:?}"),
    }
}

/// An in-process run: its task, and its shutdown signal (sending on, or dropping, the sender).
pub type Running = (JoinHandle<Result<Summary, Error>>, oneshot::Sender<()>);

/// [`run_in_process_on`] the shared broker.
pub fn run_in_process(args: &[String]) -> Running {
    run_in_process_on(&brokers(), args)
}

/// Starts `ktransform::run` against `bootstrap` on the current (multi-thread) runtime.
pub fn run_in_process_on(bootstrap: &str, args: &[String]) -> Running {
    init_logs();
    let config = config(bootstrap, args);
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(ktransform::run(config, async move {
        let _ = stopped.await;
    }));
    (handle, stop)
}

/// Stops an in-process run and returns its result, failing the test past [`CAP`].
pub async fn stop(run: Running) -> Result<Summary, Error> {
    let (handle, stop) = run;
    let _ = stop.send(());
    finish(handle).await
}

/// Waits for an in-process run to return by itself, failing the test past [`CAP`].
pub async fn finish(handle: JoinHandle<Result<Summary, Error>>) -> Result<Summary, Error> {
    tokio::time::timeout(CAP, handle)
        .await
        .unwrap_or_else(|_| panic!("ktransform::run did not return within {CAP:?}"))
        .expect("ktransform::run panicked")
}

/// Service logs in the test output when `RUST_LOG` is set (captured per test as usual).
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The `ktransform` binary as a child process, with its stderr collected.
pub struct Binary {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
    /// What it has written to stderr so far.
    so_far: Arc<Mutex<Vec<u8>>>,
}

/// How a child process ended.
#[derive(Debug)]
pub struct Exit {
    /// None when killed by a signal.
    pub code: Option<i32>,
    pub stderr: String,
}

impl Binary {
    /// Starts the binary with `args`, the test broker in `KTRANSFORM_BROKERS` (a `--brokers`
    /// flag wins) and `RUST_LOG=info`; other `KTRANSFORM_*` variables of the caller are removed.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(args, true)
    }

    /// [`Binary::spawn`], but with the default `--metrics-addr` unless `args` give one, as an
    /// instance started by hand would have.
    pub fn spawn_serving(args: &[&str]) -> Self {
        Self::spawn_with(args, false)
    }

    fn spawn_with(args: &[&str], metrics_off: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ktransform"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KTRANSFORM_") {
                command.env_remove(name);
            }
        }
        if metrics_off {
            command.env("KTRANSFORM_METRICS_ADDR", "none");
        }
        let mut child = command
            .args(args)
            .env("KTRANSFORM_BROKERS", brokers())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the ktransform binary");
        let mut pipe = child.stderr.take().unwrap();
        let so_far = Arc::new(Mutex::new(Vec::new()));
        let shared = so_far.clone();
        // Read as it comes, so a chatty child never blocks on a full pipe.
        let stderr = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                shared.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&shared.lock().unwrap()).into_owned();
            text
        });
        Binary {
            child,
            stderr,
            so_far,
        }
    }

    /// What the child has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.so_far.lock().unwrap()).into_owned()
    }

    /// `ktransform run` with `args`.
    pub fn run(args: &[String]) -> Self {
        let argv: Vec<&str> = std::iter::once("run")
            .chain(args.iter().map(String::as_str))
            .collect();
        Self::spawn(&argv)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Whether the child has exited (by itself or by a signal).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("poll the child").is_some()
    }

    /// SIGKILLs it if it still runs and reaps it, never failing: for clean-ups.
    pub fn kill_quietly(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the child");
    }

    /// Waits for the exit; past `cap` kills the child and fails the test with its stderr.
    pub async fn wait(self, cap: Duration) -> Exit {
        let Binary {
            mut child, stderr, ..
        } = self;
        blocking(move || {
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
            let stderr = stderr.join().unwrap_or_default();
            let Some(status) = status else {
                panic!("ktransform did not exit within {cap:?} and was killed; stderr:\n{stderr}");
            };
            Exit {
                code: status.code(),
                stderr,
            }
        })
        .await
    }
}

/// Runs the binary to its exit (hard cap [`CAP`]).
pub async fn run_binary(args: &[&str]) -> Exit {
    Binary::spawn(args).wait(CAP).await
}
