//! The `ktransform` binary: parse flags, set up logging and signals, call the library.

use ktransform::cli::{Cli, Command};
use ktransform::config::file::CliError;
use ktransform::config::LogFormat;
use ktransform::error::exit;
use tracing_subscriber::EnvFilter;

#[cfg(all(feature = "jemalloc", unix, not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (the `MALLOC_CONF` environment variable still overrides them).
/// One arena: librdkafka's threads allocate every record and the workers free them, and with
/// jemalloc's default of 4 arenas per core each arena kept its own freed pages (a fifth more
/// peak memory, for about 5% less CPU per record).
#[cfg(all(feature = "jemalloc", unix, not(target_env = "msvc")))]
#[export_name = "malloc_conf"]
pub static MALLOC_CONF: &[u8; 10] = b"narenas:1\0";

fn main() {
    let cli = match Cli::try_parse_with_file(std::env::args_os()) {
        Ok(cli) => cli,
        Err(CliError::Clap(e)) => e.exit(),
        Err(CliError::File(e)) => {
            eprintln!("error: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    if let Command::Run(config) = &cli.command {
        if config.print_config {
            // Before logging and the runtime: nothing connects, only the TOML is printed.
            match ktransform::config::print::render(config) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(exit::CONFIG);
                }
            }
            std::process::exit(exit::OK);
        }
    }
    let log_format = match &cli.command {
        Command::Run(config) => config.orchestrator.log_format,
        Command::Lag(_) | Command::Verify(_) => LogFormat::Text,
    };
    init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(exit::FATAL);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(config) => ktransform::run(config, shutdown_signal()).await.map(drop),
            Command::Lag(config) if config.serve.is_some() => {
                ktransform::lag::serve::run(config, shutdown_signal()).await
            }
            Command::Lag(config) => {
                tokio::task::spawn_blocking(move || ktransform::lag::print(&config))
                    .await
                    .unwrap_or_else(|e| Err(ktransform::Error::Fatal(e.to_string())))
            }
            Command::Verify(config) => {
                tokio::task::spawn_blocking(move || ktransform::verify::print(&config))
                    .await
                    .unwrap_or_else(|e| Err(ktransform::Error::Fatal(e.to_string())))
            }
        }
    });
    let code = match result {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = e.exit_code();
            match log_format {
                LogFormat::Text => eprintln!("error: {e}"),
                // A log pipeline gets the run's last word as a line like the others.
                LogFormat::Json => tracing::error!(exit_code = code, "{e}"),
            }
            code
        }
    };
    std::process::exit(code);
}

/// The log subscriber: lines on stderr, `RUST_LOG` filtering (INFO by default), as text for
/// people or, with `--log-format json`, one JSON object per line with `timestamp`, `level`,
/// `target`, `message` and the event's fields at the top level (where Loki, Elasticsearch and
/// Cloud Logging look for them). librdkafka's lines are events like the others.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Installs the SIGINT and SIGTERM handlers at once, so that a signal during start-up stops the
/// run cleanly instead of killing the process; resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}
