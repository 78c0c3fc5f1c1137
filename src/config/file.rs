//! `--config <path>` (env `KTRANSFORM_CONFIG`): a TOML file with the same settings as the flags.
//!
//! A key is the setting's environment variable without `KTRANSFORM_`, in lower case, which is the
//! flag's name in snake_case (`shutdown_timeout = "10s"` for `--shutdown-timeout`), except that
//! `source` is also `ktransform lag`'s `--topic` (both read `KTRANSFORM_SOURCE`), so one file
//! serves `run`, `lag` and `verify`. librdkafka properties go in `[rdkafka]` (both clients),
//! `[rdkafka.consumer]` and `[rdkafka.producer]`; dotted keys need no quotes there
//! (`security.protocol = "SASL_SSL"`).
//!
//! # Precedence: flag > env > file > default
//! clap parses once with errors ignored, only to find the file. Each file value then becomes its
//! argument's clap default, so clap itself lets a flag or an env var win over it and the file
//! win over the built-in default. `[rdkafka]` properties are applied before `-X` ones (the last
//! set wins), and within the file `[rdkafka.consumer]`/`[rdkafka.producer]` after `[rdkafka]`,
//! wherever they stand. A key the file does not know, or a value its flag would refuse, fails at
//! start naming the key and the file. A subcommand ignores the keys it does not have
//! (`destination` for `lag`), but they are checked all the same.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::{Arg, ArgMatches, Command};
use toml::{Table, Value};

use crate::config::properties::{Origin, Override, Side};

const ENV_PREFIX: &str = "KTRANSFORM_";
/// Env-backed arguments that are not settings: the file itself, and an output format.
const NOT_IN_FILE: &[&str] = &["config", "json"];
pub(crate) const RDKAFKA: &str = "rdkafka";

/// Why a config file cannot be used; every message names the file, and the key when there is one.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML (line {line}): {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("config file {path}: unknown key `{key}`; known keys: {known}")]
    UnknownKey {
        path: String,
        key: String,
        known: String,
    },
    #[error("config file {path}: invalid {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// What stops the command line from being parsed: a usage error (clap prints it and exits 2) or
/// a config file error (exit 2 as well).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    File(#[from] FileError),
}

/// A loaded, checked config file.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    /// Settings by key, as clap would read them from the command line.
    pub values: Vec<(String, String)>,
    /// `[rdkafka]` properties in the order they apply: both-sided, then one-sided, each in file
    /// order.
    pub rdkafka: Vec<Override>,
}

/// Parses `argv` with `cmd`, the `--config` file (if the flag or env var names one) applied as
/// defaults under flags and env vars. Returns the matches and the file.
pub fn matches(
    cmd: Command,
    argv: Vec<OsString>,
) -> Result<(ArgMatches, Option<FileConfig>), CliError> {
    let probe = cmd.clone().ignore_errors(true).try_get_matches_from(&argv);
    let Some((path, leaf)) = probe.ok().and_then(|m| config_path(&m, Vec::new())) else {
        return Ok((cmd.try_get_matches_from(argv)?, None));
    };
    let file = FileConfig::load(&path, &cmd)?;
    let cmd = at_path(cmd, &leaf, &|c| apply(c, &file));
    Ok((cmd.try_get_matches_from(argv)?, Some(file)))
}

/// The `--config` value of the innermost subcommand matched, and that subcommand's path.
fn config_path(m: &ArgMatches, mut path: Vec<String>) -> Option<(PathBuf, Vec<String>)> {
    if let Some((name, sub)) = m.subcommand() {
        path.push(name.to_string());
        return config_path(sub, path);
    }
    let file = m.try_get_one::<PathBuf>("config").ok().flatten()?;
    Some((file.clone(), path))
}

fn at_path(cmd: Command, path: &[String], f: &dyn Fn(Command) -> Command) -> Command {
    match path.split_first() {
        None => f(cmd),
        Some((head, rest)) => cmd.mut_subcommand(head, |sub| at_path(sub, rest, f)),
    }
}

/// The file key of an argument, if it has one.
fn key_of(arg: &Arg) -> Option<String> {
    let env = arg.get_env()?.to_str()?;
    let key = env.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
    (!NOT_IN_FILE.contains(&key.as_str())).then_some(key)
}

/// Every file key of `cmd` and its subcommands, with the first argument that reads it.
fn keys(cmd: &Command, out: &mut Vec<(String, Arg)>) {
    for arg in cmd.get_arguments() {
        if let Some(key) = key_of(arg) {
            if !out.iter().any(|(k, _)| *k == key) {
                out.push((key, arg.clone()));
            }
        }
    }
    for sub in cmd.get_subcommands() {
        keys(sub, out);
    }
}

/// Makes the file's values the defaults of `cmd`'s arguments.
fn apply(cmd: Command, file: &FileConfig) -> Command {
    let ids: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| Some((a.get_id().to_string(), key_of(a)?)))
        .collect();
    ids.into_iter().fold(cmd, |cmd, (id, key)| {
        match file.values.iter().find(|(k, _)| *k == key) {
            // A default satisfies a required argument (verify's --source) as a flag would.
            Some((_, value)) => cmd.mut_arg(id, |a| a.default_value(value.clone()).required(false)),
            None => cmd,
        }
    })
}

impl FileConfig {
    /// Reads and checks `path` against the settings of `cmd` (and its subcommands).
    pub fn load(path: &Path, cmd: &Command) -> Result<FileConfig, FileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, path, cmd)
    }

    pub fn parse(text: &str, path: &Path, cmd: &Command) -> Result<FileConfig, FileError> {
        let shown = path.display().to_string();
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| FileError::Syntax {
                path: shown.clone(),
                // Not the error's Display: it quotes the offending line, which may hold a secret.
                line: e
                    .span()
                    .map_or(0, |s| text[..s.start].matches('\n').count() + 1),
                message: e.message().trim().to_string(),
            })?;
        let invalid = |key: &str, message: String| FileError::Invalid {
            path: shown.clone(),
            key: key.to_string(),
            message,
        };
        let mut known = Vec::new();
        keys(cmd, &mut known);
        let mut file = FileConfig::default();
        for (key, value) in &table {
            if key == RDKAFKA {
                let Value::Table(t) = value else {
                    return Err(invalid(
                        key,
                        "must be a table of librdkafka properties".into(),
                    ));
                };
                rdkafka_table(t, None, path, &mut file.rdkafka)?;
                continue;
            }
            let Some((_, arg)) = known.iter().find(|(k, _)| k == key) else {
                let mut names: Vec<&str> = known.iter().map(|(k, _)| k.as_str()).collect();
                names.push(RDKAFKA);
                return Err(FileError::UnknownKey {
                    path: shown.clone(),
                    key: key.clone(),
                    known: names.join(", "),
                });
            };
            let value = setting(arg, value).map_err(|m| invalid(key, m))?;
            check(key, arg, &value).map_err(|m| invalid(key, m))?;
            file.values.push((key.clone(), value));
        }
        // One-sided properties win over both-sided ones, whichever table came first.
        file.rdkafka.sort_by_key(|o| o.side.is_some());
        Ok(file)
    }
}

/// A setting's value as clap reads it from the command line.
fn setting(arg: &Arg, value: &Value) -> Result<String, String> {
    let is_flag = !arg.get_action().takes_values();
    match value {
        Value::Boolean(b) if is_flag => Ok(b.to_string()),
        _ if is_flag => Err("must be true or false".into()),
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        _ => Err("must be a string or a number".into()),
    }
}

/// Runs the argument's own value parser on a file value, so a bad one fails now naming the key
/// (clap would only name the flag, and only once the default is used).
fn check(key: &str, arg: &Arg, value: &str) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        return Ok(());
    }
    let probe = Command::new(key.to_string()).no_binary_name(true).arg(
        Arg::new("value")
            .required(true)
            .allow_hyphen_values(true)
            .value_parser(arg.get_value_parser().clone()),
    );
    probe.try_get_matches_from([value]).map(drop).map_err(|e| {
        let why = match (
            std::error::Error::source(&e),
            e.get(ContextKind::ValidValue),
        ) {
            (Some(source), _) => source.to_string(),
            (None, Some(ContextValue::Strings(valid))) => {
                format!("possible values: {}", valid.join(", "))
            }
            (None, _) => e.kind().to_string(),
        };
        format!("`{value}`: {why}")
    })
}

/// Flattens an `[rdkafka]` table: nested tables are dotted names, except `consumer` and
/// `producer` at the top, which are the one-sided tables.
fn rdkafka_table(
    table: &Table,
    side: Option<Side>,
    path: &Path,
    out: &mut Vec<Override>,
) -> Result<(), FileError> {
    let mut pending: Vec<(String, &Value)> = table.iter().map(|(k, v)| (k.clone(), v)).collect();
    pending.reverse();
    while let Some((key, value)) = pending.pop() {
        let name = |side: Option<Side>| match side {
            None => format!("[rdkafka] {key}"),
            Some(Side::Consumer) => format!("[rdkafka.consumer] {key}"),
            Some(Side::Producer) => format!("[rdkafka.producer] {key}"),
        };
        let sided = match key.as_str() {
            "consumer" if side.is_none() => Some(Side::Consumer),
            "producer" if side.is_none() => Some(Side::Producer),
            _ => None,
        };
        let value = match (value, sided) {
            (Value::Table(t), Some(s)) => {
                rdkafka_table(t, Some(s), path, out)?;
                continue;
            }
            (Value::Table(t), None) => {
                // Keep file order: the nested keys go next.
                for (k, v) in t.iter().rev() {
                    pending.push((format!("{key}.{k}"), v));
                }
                continue;
            }
            (Value::String(s), _) => s.clone(),
            (Value::Integer(i), _) => i.to_string(),
            (Value::Float(f), _) => f.to_string(),
            (Value::Boolean(b), _) => b.to_string(),
            _ => {
                return Err(FileError::Invalid {
                    path: path.display().to_string(),
                    key: name(side),
                    message: "must be a string, a number or a boolean".into(),
                })
            }
        };
        out.push(Override {
            side,
            key,
            value,
            origin: Origin::File(path.to_path_buf()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::time::Duration;

    use super::*;
    use crate::config::print::render;
    use crate::config::RunConfig;

    /// Writes `text` to a file of its own and returns the path.
    fn file(text: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ktransform-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn parse(text: &str, flags: &[&str]) -> Result<RunConfig, String> {
        let path = file(text);
        let args = ["--config", path.to_str().unwrap()]
            .into_iter()
            .chain(flags.iter().copied());
        let config = RunConfig::from_args(args).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn error(text: &str) -> (String, String) {
        let path = file(text);
        let config = RunConfig::from_args(["--config", path.to_str().unwrap()]);
        let e = match config {
            Err(e) => e.to_string(),
            Ok(c) => c.validate().unwrap_err().to_string(),
        };
        (e, path.display().to_string())
    }

    // Env vars are covered by tests/operability.rs, in a child process: setting them here would
    // leak into the other tests of this binary, which run in parallel.
    #[test]
    fn flag_over_file_over_default() {
        let text = r#"
            source = "from_file"
            batch_size = 7
            shutdown_timeout = "3s"
            until_end = true
            guarantee = "exactly-once"
            group_protocol = "consumer"
            [rdkafka]
            linger.ms = 42
            "fetch.min.bytes" = 3
            [rdkafka.consumer]
            fetch.min.bytes = 9
            [rdkafka.producer]
            linger.ms = 43
        "#;
        let c = parse(text, &["--batch-size", "8", "-X", "producer.linger.ms=44"]).unwrap();
        assert_eq!(c.pipeline.source, "from_file", "file over default");
        assert_eq!(c.batch_size, 8, "flag over file");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(3));
        assert!(c.until_end);
        assert_eq!(c.pipeline.guarantee, crate::config::Guarantee::ExactlyOnce);
        assert_eq!(c.group_protocol, crate::config::GroupProtocol::Consumer);
        assert_eq!(c.pipeline.destination, "name_stream_transformed", "default");
        let (consumer, producer) = (c.consumer_config().unwrap(), c.producer_config().unwrap());
        assert_eq!(consumer.get("linger.ms"), Some("42"));
        assert_eq!(
            consumer.get("fetch.min.bytes"),
            Some("9"),
            "[rdkafka.consumer] after [rdkafka]"
        );
        assert_eq!(producer.get("fetch.min.bytes"), Some("3"));
        assert_eq!(producer.get("linger.ms"), Some("44"), "-X over the file");
        // A one-sided table wins even when it comes first.
        let text = "[rdkafka.consumer]\nlinger.ms = 1\n[rdkafka]\nlinger.ms = 2\n";
        let c = parse(text, &[]).unwrap();
        assert_eq!(c.consumer_config().unwrap().get("linger.ms"), Some("1"));
        assert_eq!(c.producer_config().unwrap().get("linger.ms"), Some("2"));
    }

    #[test]
    fn file_errors_name_the_key_and_the_file() {
        let cases = [
            ("shutdown_timout = \"1s\"", "unknown key `shutdown_timout`"),
            (
                "shutdown_timeout = \"soon\"",
                "invalid shutdown_timeout: `soon`",
            ),
            (
                "guarantee = \"exact\"",
                "possible values: at-least-once, exactly-once",
            ),
            (
                "group_protocol = \"kip848\"",
                "possible values: classic, consumer",
            ),
            (
                "until_end = \"yes\"",
                "invalid until_end: must be true or false",
            ),
            ("batch_size = \"many\"", "invalid batch_size: `many`"),
            ("metrics_addr = \"here\"", "invalid metrics_addr"),
            ("rdkafka = 1", "invalid rdkafka"),
            ("[rdkafka]\nlinger.ms = [1]", "invalid [rdkafka] linger.ms"),
            (
                "[rdkafka]\ngroup.id = \"g\"",
                "invalid [rdkafka] group.id in",
            ),
            (
                "[rdkafka.producer]\nlinger.ms = \"x\"",
                "invalid [rdkafka.producer] linger.ms in",
            ),
            ("batch_size = 0", "invalid --batch-size"),
        ];
        for (text, needle) in cases {
            let (e, path) = error(text);
            assert!(e.contains(needle), "{text:?}: {e}");
            if !needle.starts_with("invalid --") {
                assert!(e.contains(&path), "{text:?} does not name the file: {e}");
            }
        }
        let missing = RunConfig::from_args(["--config", "/nonexistent/kt.toml"]).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/kt.toml"),
            "{missing}"
        );
    }

    #[test]
    fn secrets_stay_out_of_errors_and_output() {
        // A syntax error on the line of a secret: TOML's own message would quote the line.
        let (e, _) = error("[rdkafka]\nsasl.password = \"hunter2\nx = 1");
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
        let text = "[rdkafka.producer]\n\"ssl.key.password\" = \"hunter3\"\n";
        let c = parse(text, &["-X", "sasl.password=hunter2"]).unwrap();
        let shown = format!("{c:?}\n{}", render(&c).unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(shown.contains("\"sasl.password\" = \"***\""), "{shown}");
    }

    #[test]
    fn example_file_is_valid() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/config/ktransform.toml"
        );
        // Its CA path is an example: -X points it at the test CA (and shows -X winning).
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-ca.pem");
        let ca = format!("ssl.ca.location={ca}");
        let c = RunConfig::from_args(["--config", example, "-X", &ca]).unwrap();
        c.validate().unwrap();
        let producer = c.producer_config().unwrap();
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(producer.get("compression.type"), Some("lz4"));
        assert_eq!(c.consumer_config().unwrap().get("compression.type"), None);
    }

    #[test]
    fn print_config_has_every_key_and_reads_back() {
        let c = parse("group = \"g\"", &["--batch-size", "9"]).unwrap();
        let text = render(&c).unwrap();
        let mut table: Table = text.parse().unwrap();
        let mut known = Vec::new();
        let run = <RunConfig as clap::Args>::augment_args(clap::Command::new("run"));
        keys(&run, &mut known);
        // Printed only when given: read back, the default's fallback to a free port would be lost.
        known.retain(|(key, _)| key != "metrics_addr");
        for (key, _) in &known {
            // Only set when given.
            if key != "transactional_id" && key != "instance_id" {
                assert!(
                    table.contains_key(key),
                    "--print-config lacks {key}:\n{text}"
                );
            }
        }
        assert_eq!(table["rdkafka"]["consumer"]["group.id"].as_str(), Some("g"));
        // The settings part is a valid config file that gives the same configuration.
        table.remove(RDKAFKA);
        let again = parse(&toml::to_string(&table).unwrap(), &[]).unwrap();
        assert_eq!(render(&again).unwrap(), text);
    }
}
