//! How the librdkafka clients are configured, for every subcommand ([`KafkaArgs`]): `--brokers`,
//! `--config`, and the pass-through properties, `-X key=value` flags and the `[rdkafka]` tables
//! of the config file.
//!
//! Both clients get a property unless it is given for one side (`-X consumer.key=value`,
//! `[rdkafka.consumer]`). File properties are applied first and `-X` last, so a flag wins. The
//! few properties that the delivery contract depends on are refused from either place, with the
//! reason. Values of secret properties ([`crate::config::redact`]) are masked in every `Debug` output and
//! error here.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use rdkafka::config::{FromClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::redact;
use crate::config::{invalid, ConfigError, DEFAULT_BROKERS};

/// librdkafka properties that ktransform sets itself because its guarantees depend on them.
pub const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "use --brokers"),
    ("group.id", "use --group"),
    (
        "group.protocol",
        "use --group-protocol, which also decides which other group properties apply",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only after delivery; that is the at-least-once contract",
    ),
    (
        "enable.partition.eof",
        "partition ends come from the high watermarks: librdkafka's end-of-partition events \
         move a batch reader's position past the end (librdkafka #4844), and a rebalance then \
         rewinds the partition",
    ),
    (
        "enable.idempotence",
        "the idempotent producer keeps retries from duplicating or reordering output",
    ),
];

/// Connection settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// TOML file with the same settings as the flags (keys in snake_case, e.g.
    /// `shutdown_timeout = "10s"`) and `[rdkafka]`, `[rdkafka.consumer]`, `[rdkafka.producer]`
    /// tables of librdkafka properties. Flags and env vars win over it.
    #[arg(long, env = "KTRANSFORM_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "KTRANSFORM_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,

    /// librdkafka property, repeatable: `-X key=value` for both clients, `-X consumer.key=value`
    /// or `-X producer.key=value` for one. Values may contain commas (`-X debug=cgrp,topic`).
    /// Wins over the config file's `[rdkafka]` tables.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub rdkafka: Vec<Property>,

    /// The `[rdkafka]` tables of the `--config` file, applied before `-X`.
    #[arg(skip)]
    pub file_rdkafka: Vec<Override>,
}

impl KafkaArgs {
    /// The librdkafka properties in the order they apply: the file's, then `-X` (last wins).
    pub fn overrides(&self) -> Result<Vec<Override>, ConfigError> {
        let mut out = Vec::with_capacity(self.file_rdkafka.len() + self.rdkafka.len());
        for o in &self.file_rdkafka {
            o.check_not_owned()?;
            out.push(o.clone().resolved()?);
        }
        for raw in &self.rdkafka {
            out.push(Override::parse_flag(raw)?.resolved()?);
        }
        Ok(out)
    }

    /// A base client config for `side`: brokers, `defaults`, then the matching file and `-X`
    /// properties, so that both override ktransform's defaults.
    pub fn client_config(
        &self,
        side: Side,
        defaults: &[(&str, &str)],
    ) -> Result<ClientConfig, ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("--brokers", "is empty; give host:port[,host:port]"));
        }
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for o in self.overrides()? {
            if o.applies_to(side) {
                config.set(o.key, o.value);
            }
        }
        // rust-rdkafka sets the client's log level after creating it, from the `log` crate's
        // filter (error here, since logs go through tracing), which would silence `-X debug=...`.
        if config.get("debug").is_some_and(|d| !d.trim().is_empty()) {
            config.set_log_level(RDKafkaLogLevel::Debug);
        }
        Ok(config)
    }

    /// Creates a client, so that librdkafka judges the properties now: a refusal names the
    /// property (`-X key` or the file and table it came from) with secret values masked, since
    /// librdkafka quotes the value it refuses.
    pub fn create<T: FromClientConfig>(
        &self,
        config: &ClientConfig,
        what: &str,
    ) -> Result<T, ConfigError> {
        self.judged(config, what, config.create::<T>())
    }

    /// [`KafkaArgs::create`] with a context of the caller's.
    pub fn create_with<C: ClientContext, T: FromClientConfigAndContext<C>>(
        &self,
        config: &ClientConfig,
        context: C,
        what: &str,
    ) -> Result<T, ConfigError> {
        self.judged(config, what, config.create_with_context::<C, T>(context))
    }

    /// A client's creation, its refusal named as [`KafkaArgs::create`] says.
    fn judged<T>(
        &self,
        config: &ClientConfig,
        what: &str,
        created: Result<T, KafkaError>,
    ) -> Result<T, ConfigError> {
        created.map_err(|e| {
            let message = redact::text(&format!("{what}: {e}"), config);
            // rust-rdkafka names the refused property (and appends its value, masked above).
            let refused = match &e {
                KafkaError::ClientConfig(_, _, key, _) => Some(key.as_str()),
                _ => None,
            };
            let culprit = self
                .overrides()
                .unwrap_or_default()
                .into_iter()
                .rev()
                .find(|o| refused == Some(o.key.as_str()));
            invalid(
                culprit.map_or_else(|| "-X".to_string(), |o| o.name()),
                message,
            )
        })
    }
}

/// Which client a property is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Consumer,
    Producer,
}

/// One `-X` argument exactly as given. It is only split and checked by [`Override::parse_flag`]
/// (at start-up, with the other configuration checks, so that every mistake exits 2 naming the
/// flag); `Debug` masks the value of a secret property.
#[derive(Clone, PartialEq, Eq)]
pub struct Property(pub String);

impl FromStr for Property {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Property(s.to_string()))
    }
}

impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact::key_value(&self.0))
    }
}

/// Where a property was set, to name it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    File(PathBuf),
}

/// One librdkafka property for one side (or both, `side: None`).
#[derive(Clone, PartialEq, Eq)]
pub struct Override {
    pub side: Option<Side>,
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

impl fmt::Debug for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {:?}",
            self.name(),
            redact::value(&self.key, &self.value)
        )
    }
}

impl Override {
    /// Splits one `-X` argument: `key=value`, `consumer.key=value` or `producer.key=value`.
    pub fn parse_flag(raw: &Property) -> Result<Override, ConfigError> {
        let raw = &raw.0;
        let (key, value) = raw.split_once('=').ok_or_else(|| ConfigError {
            flag: "-X".into(),
            message: format!("`{raw}` is not key=value"),
        })?;
        let key = key.trim();
        let (side, key) = if let Some(k) = key.strip_prefix("consumer.") {
            (Some(Side::Consumer), k)
        } else if let Some(k) = key.strip_prefix("producer.") {
            (Some(Side::Producer), k)
        } else {
            (None, key)
        };
        if key.is_empty() {
            return Err(ConfigError {
                flag: "-X".into(),
                message: format!("`{}` has an empty key", redact::key_value(raw)),
            });
        }
        let parsed = Override {
            side,
            key: key.to_string(),
            value: value.to_string(),
            origin: Origin::Flag,
        };
        parsed.check_not_owned()?;
        Ok(parsed)
    }

    /// How to name this property in an error: `-X linger.ms`, or
    /// `[rdkafka.producer] linger.ms in ktransform.toml`.
    pub fn name(&self) -> String {
        match &self.origin {
            Origin::Flag => format!("-X {}", self.key),
            Origin::File(path) => {
                let table = match self.side {
                    None => "[rdkafka]",
                    Some(Side::Consumer) => "[rdkafka.consumer]",
                    Some(Side::Producer) => "[rdkafka.producer]",
                };
                format!("{table} {} in {}", self.key, path.display())
            }
        }
    }

    /// Whether this property applies to the client of `side`.
    pub fn applies_to(&self, side: Side) -> bool {
        self.side.map_or(true, |s| s == side)
    }

    /// The value read from the environment when it is a reference, `${env:NAME}` (the whole
    /// value): a secret given that way stays out of the command line (`ps`, a pod's args) and
    /// out of the config file. A reference to a variable that is not set, or not valid UTF-8,
    /// fails at start naming the property.
    pub fn resolved(mut self) -> Result<Override, ConfigError> {
        let Some(name) = env_reference(&self.value) else {
            return Ok(self);
        };
        match std::env::var(name) {
            Ok(value) => {
                self.value = value;
                Ok(self)
            }
            Err(e) => Err(ConfigError {
                flag: self.name(),
                message: format!(
                    "refers to the environment variable {name}, which is {}",
                    match e {
                        std::env::VarError::NotPresent => "not set",
                        std::env::VarError::NotUnicode(_) => "not valid UTF-8",
                    }
                ),
            }),
        }
    }

    /// Refuses the properties ktransform owns.
    pub fn check_not_owned(&self) -> Result<(), ConfigError> {
        match OWNED_PROPERTIES.iter().find(|(k, _)| *k == self.key) {
            Some((_, why)) => Err(ConfigError {
                flag: self.name(),
                message: format!("set by ktransform: {why}"),
            }),
            None => Ok(()),
        }
    }
}

/// The variable's name when `value` is a whole `${env:NAME}` reference.
fn env_reference(value: &str) -> Option<&str> {
    let name = value.trim().strip_prefix("${env:")?.strip_suffix('}')?;
    (!name.is_empty() && !name.contains(['$', '{', '}'])).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    #[test]
    fn a_value_can_come_from_the_environment() {
        assert_eq!(
            env_reference("${env:KAFKA_PASSWORD}"),
            Some("KAFKA_PASSWORD")
        );
        assert_eq!(env_reference(" ${env:A} "), Some("A"));
        for not_a_reference in ["plain", "${env:}", "x${env:A}", "${env:A}x", "$(A)", "${A}"] {
            assert_eq!(env_reference(not_a_reference), None, "{not_a_reference}");
        }
        // A variable only this test sets.
        std::env::set_var("KTRANSFORM_TEST_SASL_SECRET", "s3cret");
        let c = parse(&[
            "-X",
            "producer.sasl.password=${env:KTRANSFORM_TEST_SASL_SECRET}",
        ]);
        let o = c.kafka.overrides().unwrap();
        assert_eq!(o[0].value, "s3cret");
        assert_eq!(o[0].side, Some(Side::Producer));
        let e = error(&["-X", "sasl.password=${env:KTRANSFORM_TEST_UNSET_VARIABLE}"]);
        assert!(
            e.contains("-X sasl.password")
                && e.contains("KTRANSFORM_TEST_UNSET_VARIABLE, which is not set"),
            "{e}"
        );
    }

    fn parse(args: &[&str]) -> RunConfig {
        RunConfig::from_args(args).unwrap()
    }

    fn error(args: &[&str]) -> String {
        parse(args).validate().unwrap_err().to_string()
    }

    /// librdkafka refuses `security.protocol=sasl_ssl`, SCRAM and `ssl.ca.location` unless it was
    /// built with OpenSSL: creating the clients (which `validate` does) proves the features are
    /// compiled in. No TLS broker needed; nothing connects.
    #[test]
    fn sasl_ssl_clients_can_be_created() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-ca.pem");
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let c = parse(&[
                "-X",
                "security.protocol=sasl_ssl",
                "-X",
                &format!("sasl.mechanisms={mechanism}"),
                "-X",
                "sasl.username=ktransform",
                "-X",
                "sasl.password=hunter2",
                "-X",
                &format!("ssl.ca.location={ca}"),
            ]);
            c.validate().unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        }
        // And a missing CA file is refused at start, naming the property, not the password.
        let e = error(&[
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=ktransform",
            "-X",
            "sasl.password=hunter2",
            "-X",
            "ssl.ca.location=/nonexistent/ca.pem",
        ]);
        assert!(
            e.starts_with("invalid -X") && e.contains("ssl.ca.location"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn debug_masks_secret_properties() {
        let c = parse(&[
            "-X",
            "sasl.password=hunter2",
            "-X",
            "consumer.ssl.key.pem=PEM",
        ]);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("PEM\""),
            "{shown}"
        );
        assert!(shown.contains("sasl.password=***"), "{shown}");
    }

    fn flag(raw: &str) -> Result<Override, ConfigError> {
        Override::parse_flag(&Property(raw.to_string()))
    }

    #[test]
    fn debug_contexts_raise_the_client_log_level() {
        // Without `debug`, rust-rdkafka derives the level from the `log` crate's filter.
        let c = parse(&["-X", "producer.debug=eos"]);
        let level = c.producer_config().unwrap().log_level;
        assert!(matches!(level, RDKafkaLogLevel::Debug), "{level:?}");
    }

    #[test]
    fn flags_split_by_side() {
        let o = flag("consumer.fetch.min.bytes=7").unwrap();
        assert_eq!(o.side, Some(Side::Consumer));
        assert_eq!(o.key, "fetch.min.bytes");
        assert!(o.applies_to(Side::Consumer) && !o.applies_to(Side::Producer));
        let o = flag("debug=cgrp,topic").unwrap();
        assert_eq!((o.side, o.value.as_str()), (None, "cgrp,topic"));
        assert!(flag("=1").is_err());
        assert!(flag("producer.enable.idempotence=false")
            .unwrap_err()
            .to_string()
            .starts_with("invalid -X enable.idempotence"));
        // End-of-partition events would move a batch reader's position past the end (#4844).
        let refused = flag("consumer.enable.partition.eof=true").unwrap_err();
        assert!(refused.to_string().contains("#4844"), "{refused}");
    }

    #[test]
    fn debug_masks_secrets() {
        let shown = format!(
            "{:?} {:?}",
            Property("sasl.password=hunter2".into()),
            flag("producer.ssl.key.password=hunter2").unwrap()
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
        let file = Override {
            side: Some(Side::Producer),
            key: "linger.ms".into(),
            value: "5".into(),
            origin: Origin::File("kt.toml".into()),
        };
        assert_eq!(file.name(), "[rdkafka.producer] linger.ms in kt.toml");
    }
}
