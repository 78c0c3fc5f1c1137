//! The command line: `ktransform run | lag | verify`, each command with its own arguments, all
//! with environment and `--config` file fallbacks ([`crate::config::file`]).

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::file::{self, CliError};
use crate::config::{KafkaArgs, RunConfig};

#[derive(Debug, Parser)]
#[command(
    name = "ktransform",
    version,
    about = "Kafka JSON transformer: adds the md5 of each record's raw bytes as \"hash\""
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the source topic, add "hash" to every JSON object, produce to the destination.
    Run(RunConfig),
    /// Show a consumer group's lag, produce and consume rates, and whether it keeps up.
    Lag(crate::lag::LagConfig),
    /// Audit source against destination and dead-letter topic: lost, duplicated, changed,
    /// forged and out-of-order records; exit 5 when the chosen guarantee does not hold.
    Verify(crate::verify::VerifyConfig),
}

impl Cli {
    /// Parses the command line as the binary does: flags, env vars, then the `--config` file.
    pub fn try_parse_with_file<I, T>(args: I) -> Result<Cli, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let (matches, file) = file::matches(Cli::command(), argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let Some(file) = file {
            cli.command.kafka_mut().file_rdkafka = file.rdkafka;
        }
        Ok(cli)
    }
}

impl Command {
    pub fn kafka_mut(&mut self) -> &mut KafkaArgs {
        match self {
            Command::Run(c) => &mut c.kafka,
            Command::Lag(c) => &mut c.kafka,
            Command::Verify(c) => &mut c.kafka,
        }
    }
}
