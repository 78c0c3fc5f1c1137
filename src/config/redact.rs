//! Secrets are never shown: not in logs, errors, `Debug` output of the configuration, nor
//! `ktransform run --print-config`.
//!
//! A librdkafka property is secret when its name contains one of [`SECRET_MARKERS`]. That covers
//! librdkafka's own sensitive properties that hold credentials (`sasl.password`,
//! `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`, `ssl_key`,
//! `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`,
//! `sasl.oauthbearer.assertion.private.key.*`) and any future one named the same way. File paths
//! (`ssl.key.location`) and user names stay visible: they are what one checks when TLS or SASL
//! fails.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// What a secret value is shown as.
pub const MASK: &str = "***";

/// Substrings of property names whose values are secret (matched case-insensitively).
pub const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "key.pem",
    "private",
    "ssl_key",
    // `principal=... clientSecret=...` style settings of the unsecured OAUTHBEARER token.
    "oauthbearer.config",
];

/// Whether the value of librdkafka property `key` is a secret. `consumer.`/`producer.` prefixes
/// do not matter: the markers match anywhere in the name.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| key.contains(m))
}

/// `value`, or [`MASK`] when `key` is secret.
pub fn value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        MASK
    } else {
        value
    }
}

/// A raw `key=value` (as given to `-X`) with a secret value masked; text without `=` is shown as
/// is (it has no value to hide).
pub fn key_value(raw: &str) -> String {
    match raw.split_once('=') {
        Some((k, v)) => format!("{k}={}", value(k, v)),
        None => raw.to_string(),
    }
}

/// Every property of `config`, sorted, with secrets masked: the only way a client config is shown.
/// (rust-rdkafka's own `Debug` and `config_map` hide five names only; `ssl.key.pem` is not one.)
pub fn client_config(config: &ClientConfig) -> BTreeMap<String, String> {
    config
        .config_map()
        .into_iter()
        .map(|(k, v)| (k.to_string(), value(k, v).to_string()))
        .collect()
}

/// `text` with every secret value of `config` replaced by [`MASK`]: for messages that may quote a
/// value back, such as librdkafka's "Invalid value \"...\" for configuration property".
pub fn text(text: &str, config: &ClientConfig) -> String {
    let mut out = text.to_string();
    for key in config.config_map().into_keys().filter(|k| is_secret(k)) {
        // `config_map` shows a placeholder for some secrets: take the real value to find it.
        match config.get(key) {
            Some(v) if !v.is_empty() => out = out.replace(v, MASK),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "ssl_key",
            "sasl.oauthbearer.assertion.private.key.pem",
            "consumer.sasl.password",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "sasl.username",
            "ssl.key.location",
            "ssl.ca.location",
            "linger.ms",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }

    #[test]
    fn masks_values_and_text() {
        assert_eq!(key_value("sasl.password=hunter2"), "sasl.password=***");
        assert_eq!(key_value("linger.ms=5"), "linger.ms=5");
        assert_eq!(key_value("nonsense"), "nonsense");
        let mut config = ClientConfig::new();
        config.set("sasl.password", "hunter2").set("linger.ms", "5");
        let shown = client_config(&config);
        assert_eq!(shown["sasl.password"], MASK);
        assert_eq!(shown["linger.ms"], "5");
        assert_eq!(
            text("bad value \"hunter2\" for x", &config),
            "bad value \"***\" for x"
        );
    }
}
