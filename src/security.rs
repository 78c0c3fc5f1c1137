//! Why the brokers refuse this client, named with the property to fix: a broker certificate
//! that does not verify (its CA, its host name, its dates), a client certificate the broker
//! refuses under mutual TLS, SASL credentials it rejects.
//!
//! Retrying cures none of these, and librdkafka retries them forever. [`Watch`] reads
//! librdkafka's error and log messages for them, so that start-up stops on the first. librdkafka
//! says only "certificate verify failed" whatever the broker certificate's fault, so
//! [`diagnose`] repeats the handshake with the same trust settings (`ssl.ca.location` or
//! `ssl.ca.pem`, `ssl.endpoint.identification.algorithm`) and OpenSSL's own verification, and
//! names the fault it reports. Secrets never appear: messages quote file paths, the user name and
//! librdkafka's text, never a property's value otherwise.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use openssl::x509::X509Ref;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;
use tokio::sync::Notify;

use crate::logging::QuietContext;

mod handshake;

use handshake::{handshake, name, names, verify};

/// The librdkafka properties of the client that saw a refusal (secrets included: never shown).
#[derive(Default)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Properties(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A refusal as librdkafka reports it, before [`diagnose`] names its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The broker's certificate failed verification.
    BrokerCertificate { broker: Option<String> },
    /// The broker ended the connection with a TLS alert about the client's certificate.
    ClientCertificate {
        broker: Option<String>,
        alert: String,
    },
    /// The broker rejected the SASL credentials.
    Credentials {
        broker: Option<String>,
        detail: String,
    },
}

/// The client settings a refusal names, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("TLS: the certificate of broker {broker} is not signed by a CA in {trust} (its issuer: {issuer}): set ssl.ca.location to the CA certificate that signed the brokers' certificates")]
    UnknownIssuer {
        broker: String,
        trust: String,
        issuer: String,
    },

    #[error("TLS: the certificate of broker {broker} is not issued for `{host}` (it names {names}); ssl.endpoint.identification.algorithm=https checks this: connect to the brokers by a name their certificates carry (--brokers, and the brokers' advertised.listeners)")]
    HostMismatch {
        broker: String,
        host: String,
        names: String,
    },

    #[error("TLS: the certificate of broker {broker} expired on {not_after}: the broker's certificate (its ssl.keystore.location) must be renewed; no client setting fixes this")]
    Expired { broker: String, not_after: String },

    #[error("TLS: the certificate of broker {broker} is not valid before {not_before}: check the clocks of this machine and of the broker")]
    NotYetValid { broker: String, not_before: String },

    #[error("TLS: the certificate of broker {broker} failed verification ({reason}): check ssl.ca.location and the broker's certificate")]
    Unverified { broker: String, reason: String },

    #[error("TLS: broker {broker} requires a client certificate (mutual TLS; it answered with the TLS alert `{alert}`) and none is configured: set ssl.certificate.location and ssl.key.location (and ssl.key.password if the key is encrypted)")]
    ClientCertificateMissing { broker: String, alert: String },

    #[error("TLS: broker {broker} refused the client certificate in {certificate} (TLS alert `{alert}`){why}: set ssl.certificate.location and ssl.key.location to a certificate signed by a CA the brokers trust")]
    ClientCertificateRefused {
        broker: String,
        certificate: String,
        alert: String,
        why: &'static str,
    },

    #[error("authentication failed: broker {broker} rejected the SASL credentials of sasl.username `{username}` ({mechanism}): check sasl.password and sasl.username ({detail})")]
    Credentials {
        broker: String,
        username: String,
        mechanism: String,
        detail: String,
    },
}

/// The first refusal seen in a client's errors and log lines.
#[derive(Default)]
pub struct Watch {
    first: Mutex<Option<Refusal>>,
    seen: Notify,
    /// librdkafka found no client certificate issued by a CA the broker named, and sent none.
    unmatched_issuer: AtomicBool,
}

impl Watch {
    /// Reads one of librdkafka's error or log messages.
    pub fn observe(&self, message: &str) {
        if message.contains("No matching issuer found") {
            self.unmatched_issuer.store(true, Ordering::Relaxed);
        }
        if let Some(refusal) = classify(message) {
            let mut first = self.first.lock().unwrap();
            if first.is_none() {
                *first = Some(refusal);
                self.seen.notify_one();
            }
        }
    }

    pub fn get(&self) -> Option<Refusal> {
        self.first.lock().unwrap().clone()
    }

    /// Resolves with the first refusal.
    pub async fn wait(&self) -> Refusal {
        loop {
            if let Some(refusal) = self.get() {
                return refusal;
            }
            self.seen.notified().await;
        }
    }
}

/// The context of the clients that meet the brokers first (`run`'s start-up probe, the
/// consumers of `lag` and `verify`): the quiet logging, and a [`Watch`] whose refusal
/// [`Watched::refusal`] diagnoses, so that a broker that refuses the certificates or the
/// credentials is reported as that, naming the property to fix, and not as a timeout or an
/// unreachable broker.
pub struct Watched {
    quiet: QuietContext,
    watch: Watch,
    properties: Properties,
    brokers: String,
}

impl Watched {
    /// For a client with these librdkafka `properties` (kept to diagnose a refusal; secrets
    /// among them are never shown).
    pub fn new(properties: Properties) -> Self {
        Watched::logging_to(QuietContext::default(), properties)
    }

    /// [`Watched::new`], its errors and log lines also going to `quiet` (which may raise the
    /// unrecoverable ones).
    pub fn logging_to(quiet: QuietContext, properties: Properties) -> Self {
        let brokers = properties
            .get("bootstrap.servers")
            .unwrap_or("")
            .to_string();
        Watched {
            quiet,
            watch: Watch::default(),
            properties,
            brokers,
        }
    }

    /// The refusals seen so far.
    pub fn watch(&self) -> &Watch {
        &self.watch
    }

    /// The cause of the first refusal `consumer` met, if it met one: its queued events are
    /// served first (librdkafka's errors and log lines reach the context only when polled), so
    /// call it only on a consumer with nothing assigned. Blocking for a few seconds at most (a
    /// handshake of its own tells a broker certificate's fault).
    pub fn refusal_of(consumer: &BaseConsumer<Watched>) -> Option<SecurityError> {
        for _ in 0..64 {
            let _ = consumer.poll(Duration::ZERO);
        }
        consumer.context().refusal()
    }

    /// The cause of the first refusal seen so far, if any. Blocking, as
    /// [`Watched::refusal_of`].
    pub fn refusal(&self) -> Option<SecurityError> {
        let refusal = self.watch.get()?;
        Some(diagnose_watched(
            &self.watch,
            &refusal,
            &self.properties,
            &self.brokers,
        ))
    }
}

impl ClientContext for Watched {
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.observe(reason);
        self.quiet.error(error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.watch.observe(message);
        self.quiet.log(level, fac, message);
    }
}

impl rdkafka::consumer::ConsumerContext for Watched {}

/// As a producer's context, for `run`'s start-up probe, which never sends.
impl rdkafka::producer::ProducerContext for Watched {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// The refusal librdkafka's `message` reports, if it is one.
pub fn classify(message: &str) -> Option<Refusal> {
    let broker = broker_in(message);
    if message.contains("certificate verify failed") {
        return Some(Refusal::BrokerCertificate { broker });
    }
    const CLIENT_ALERTS: &[&str] = &[
        "alert bad certificate",
        "alert certificate required",
        "alert unknown ca",
        "alert certificate unknown",
        "alert certificate expired",
        "alert certificate revoked",
        "alert unsupported certificate",
    ];
    if let Some(alert) = CLIENT_ALERTS.iter().find(|a| message.contains(*a)) {
        let alert = alert.trim_start_matches("alert ").to_string();
        return Some(Refusal::ClientCertificate { broker, alert });
    }
    if message.contains("client SSL authentication might be required") {
        let alert = "unexpected message".to_string();
        return Some(Refusal::ClientCertificate { broker, alert });
    }
    // The broker's verdict, not a request that failed on the way ("SaslAuthenticateRequest
    // failed: Local: Broker transport failure" is waited out).
    if let Some((_, detail)) = message.split_once("SASL authentication error: ") {
        if detail.contains("Authentication failed") || detail.contains("invalid credentials") {
            let detail = detail.to_string();
            return Some(Refusal::Credentials { broker, detail });
        }
    }
    None
}

/// `host:port` of the broker a librdkafka message is about (`sasl_ssl://host:port/1: ...`).
fn broker_in(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("://")?;
    let end = rest.find('/')?;
    Some(rest[..end].to_string())
}

/// The cause of `refusal` with the settings to change, from the properties of the client that
/// saw it; for the broker's certificate, after a handshake of its own with `broker` (or the first
/// of `brokers`). Blocking, for at most a few seconds.
pub fn diagnose(refusal: &Refusal, config: &Properties, brokers: &str) -> SecurityError {
    let first = || {
        brokers
            .split(',')
            .next()
            .unwrap_or(brokers)
            .trim()
            .to_string()
    };
    match refusal {
        Refusal::BrokerCertificate { broker } => {
            let broker = broker.clone().unwrap_or_else(first);
            broker_certificate(&broker, config)
        }
        Refusal::ClientCertificate { broker, alert } => {
            let broker = broker.clone().unwrap_or_else(first);
            let alert = alert.clone();
            match client_certificate(config) {
                None => SecurityError::ClientCertificateMissing { broker, alert },
                Some(certificate) => SecurityError::ClientCertificateRefused {
                    broker,
                    certificate,
                    alert,
                    why: "",
                },
            }
        }
        Refusal::Credentials { broker, detail } => SecurityError::Credentials {
            broker: broker.clone().unwrap_or_else(first),
            username: config.get("sasl.username").unwrap_or("").to_string(),
            mechanism: config
                .get("sasl.mechanisms")
                .unwrap_or("GSSAPI")
                .to_string(),
            detail: detail.clone(),
        },
    }
}

/// [`diagnose`] with what `watch` saw besides the refusal.
fn diagnose_watched(
    watch: &Watch,
    refusal: &Refusal,
    config: &Properties,
    brokers: &str,
) -> SecurityError {
    let mut error = diagnose(refusal, config, brokers);
    if let SecurityError::ClientCertificateRefused { why, .. } = &mut error {
        if watch.unmatched_issuer.load(Ordering::Relaxed) {
            *why = ": librdkafka did not even send it, as no CA the broker trusts signed it";
        }
    }
    error
}

/// Where the client certificate comes from, if one is configured.
fn client_certificate(config: &Properties) -> Option<String> {
    for key in ["ssl.certificate.location", "ssl.keystore.location"] {
        if let Some(path) = config.get(key).filter(|p| !p.is_empty()) {
            return Some(format!("{key} ({path})"));
        }
    }
    ["ssl.certificate.pem", "ssl_certificate"]
        .into_iter()
        .find(|key| config.get(key).is_some())
        .map(str::to_string)
}

/// What the trust store is, in a message.
fn trust(config: &Properties) -> String {
    match config.get("ssl.ca.location").filter(|l| *l != "probe") {
        Some(path) => format!("ssl.ca.location ({path})"),
        None if config.get("ssl.ca.pem").is_some() => "ssl.ca.pem".to_string(),
        None => "the system's CA certificates (ssl.ca.location is not set)".to_string(),
    }
}

fn broker_certificate(broker: &str, config: &Properties) -> SecurityError {
    let failure = match handshake(broker, config) {
        Ok(Some(failure)) => failure,
        Ok(None) => {
            return SecurityError::Unverified {
                broker: broker.to_string(),
                reason: "librdkafka's verification failed, but a second handshake succeeded".into(),
            }
        }
        Err(e) => {
            return SecurityError::Unverified {
                broker: broker.to_string(),
                reason: format!("certificate verify failed; a second handshake to tell why: {e}"),
            }
        }
    };
    let broker = broker.to_string();
    let cert = failure.certificate.as_deref();
    let date = |f: fn(&X509Ref) -> String| cert.map_or_else(|| "?".to_string(), f);
    match failure.code {
        verify::CERT_HAS_EXPIRED => SecurityError::Expired {
            broker,
            not_after: date(|c| c.not_after().to_string()),
        },
        verify::CERT_NOT_YET_VALID => SecurityError::NotYetValid {
            broker,
            not_before: date(|c| c.not_before().to_string()),
        },
        verify::HOSTNAME_MISMATCH | verify::IP_ADDRESS_MISMATCH => SecurityError::HostMismatch {
            host: host_of(&broker).to_string(),
            names: cert.map_or_else(|| "?".to_string(), names),
            broker,
        },
        verify::UNABLE_TO_GET_ISSUER_CERT
        | verify::UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | verify::UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | verify::SELF_SIGNED_CERT_IN_CHAIN
        | verify::DEPTH_ZERO_SELF_SIGNED_CERT => SecurityError::UnknownIssuer {
            broker,
            trust: trust(config),
            issuer: cert.map_or_else(|| "?".to_string(), |c| name(c.issuer_name())),
        },
        _ => SecurityError::Unverified {
            broker,
            reason: failure.reason,
        },
    }
}

/// `host` of `host:port` (brackets of an IPv6 address removed).
fn host_of(broker: &str) -> &str {
    let host = broker.rsplit_once(':').map_or(broker, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_messages_are_classified() {
        let verify = "ssl://127.0.0.1:39415/bootstrap: SSL handshake failed: error:0A000086:SSL \
                      routines::certificate verify failed: broker certificate could not be verified";
        assert_eq!(
            classify(verify),
            Some(Refusal::BrokerCertificate {
                broker: Some("127.0.0.1:39415".into())
            })
        );
        let alert = "ssl://127.0.0.1:39413/bootstrap: Receive failed: error:0A000412:SSL \
                     routines::ssl/tls alert bad certificate: SSL alert number 42";
        assert_eq!(
            classify(alert),
            Some(Refusal::ClientCertificate {
                broker: Some("127.0.0.1:39413".into()),
                alert: "bad certificate".into()
            })
        );
        let sasl = "sasl_ssl://kafka-1:9093/1: SASL authentication error: Authentication failed \
                    during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512";
        assert!(matches!(
            classify(sasl),
            Some(Refusal::Credentials { broker: Some(b), .. }) if b == "kafka-1:9093"
        ));
        let plain = "sasl_plaintext://127.0.0.1:9094/1: SASL authentication error: \
                     Authentication failed: Invalid username or password (after 3ms)";
        assert!(matches!(classify(plain), Some(Refusal::Credentials { .. })));
        // An outage is not a refusal: it is waited out.
        let lost = "sasl_ssl://kafka-1:9093/1: SASL authentication error: \
                    SaslAuthenticateRequest failed: Local: Broker transport failure";
        assert_eq!(classify(lost), None);
        let down = "ssl://127.0.0.1:39411/bootstrap: Connect to ipv4#127.0.0.1:39411 failed: \
                    Connection refused";
        assert_eq!(classify(down), None);
    }

    #[test]
    fn a_missing_client_certificate_names_the_properties() {
        let refusal = Refusal::ClientCertificate {
            broker: None,
            alert: "bad certificate".into(),
        };
        let config: Properties = [("ssl.key.password", "hunter2")].into_iter().collect();
        let message = diagnose(&refusal, &config, "kafka-1:9093,kafka-2:9093").to_string();
        assert!(message.contains("kafka-1:9093"), "{message}");
        assert!(message.contains("ssl.certificate.location"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let config: Properties = [
            ("ssl.key.password", "hunter2"),
            ("ssl.certificate.location", "/etc/ktransform/client.pem"),
        ]
        .into_iter()
        .collect();
        let message = diagnose(&refusal, &config, "kafka-1:9093").to_string();
        assert!(message.contains("/etc/ktransform/client.pem"), "{message}");
    }

    #[test]
    fn hosts_of_brokers() {
        assert_eq!(host_of("kafka-1:9093"), "kafka-1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }
}
