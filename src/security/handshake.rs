//! A TLS handshake of ktransform's own with a broker whose certificate librdkafka could not
//! verify: the same trust (`ssl.ca.location`, `ssl.ca.pem`, or the system's CA certificates) and
//! the same hostname check (`ssl.endpoint.identification.algorithm`), with OpenSSL's verdict kept.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::{X509NameRef, X509Ref, X509};

use super::{host_of, Properties};

/// How long the connection, and the handshake, may take each.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(5);

/// OpenSSL's verification results (`X509_V_ERR_*` of `openssl/x509_vfy.h`) that name a cause.
pub(super) mod verify {
    pub const UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
    pub const CERT_NOT_YET_VALID: i32 = 9;
    pub const CERT_HAS_EXPIRED: i32 = 10;
    pub const DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
    pub const SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
    pub const UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
    pub const UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;
    pub const HOSTNAME_MISMATCH: i32 = 62;
    pub const IP_ADDRESS_MISMATCH: i32 = 64;
}

/// The first verification failure of a handshake: OpenSSL's code and the certificate.
pub(super) struct Failure {
    pub code: i32,
    pub reason: String,
    pub certificate: Option<X509>,
}

/// A TLS handshake with `broker`, trusting and checking what the client would; the first
/// verification failure, or None if it verified.
pub(super) fn handshake(broker: &str, config: &Properties) -> Result<Option<Failure>, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    match config.get("ssl.ca.location").filter(|l| *l != "probe") {
        Some(location) if Path::new(location).is_dir() => {
            builder.load_verify_locations(None, Some(Path::new(location)))
        }
        Some(location) => builder.set_ca_file(location),
        None => match config.get("ssl.ca.pem") {
            Some(pem) => X509::stack_from_pem(pem.as_bytes()).and_then(|certs| {
                certs
                    .into_iter()
                    .try_for_each(|c| builder.cert_store_mut().add_cert(c))
            }),
            // librdkafka probes the usual places; the vendored OpenSSL's default paths are in
            // its build directory.
            None => system_ca(&mut builder),
        },
    }
    .map_err(|e| e.to_string())?;
    let failure: Arc<Mutex<Option<Failure>>> = Arc::default();
    let seen = failure.clone();
    builder.set_verify_callback(SslVerifyMode::PEER, move |ok, context| {
        let mut seen = seen.lock().unwrap();
        if !ok && seen.is_none() {
            *seen = Some(Failure {
                code: context.error().as_raw(),
                reason: context.error().error_string().to_string(),
                certificate: context.current_cert().map(X509Ref::to_owned),
            });
        }
        ok
    });
    let mut session = builder.build().configure().map_err(|e| e.to_string())?;
    session.set_verify_hostname(!matches!(
        config.get("ssl.endpoint.identification.algorithm"),
        Some(a) if a.eq_ignore_ascii_case("none")
    ));
    let address = broker
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{broker} resolves to no address"))?;
    let stream =
        TcpStream::connect_timeout(&address, DIAGNOSIS_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(DIAGNOSIS_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(DIAGNOSIS_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let outcome = session.connect(host_of(broker), stream);
    let failure = failure.lock().unwrap().take();
    match (outcome, failure) {
        (_, Some(failure)) => Ok(Some(failure)),
        (Ok(_), None) => Ok(None),
        (Err(e), None) => Err(e.to_string()),
    }
}

/// The CA bundles of the common Linux distributions, and OpenSSL's default paths.
fn system_ca(
    builder: &mut openssl::ssl::SslConnectorBuilder,
) -> Result<(), openssl::error::ErrorStack> {
    builder.set_default_verify_paths()?;
    for bundle in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ] {
        if Path::new(bundle).is_file() {
            return builder.set_ca_file(bundle);
        }
    }
    Ok(())
}

/// A distinguished name as `CN=…,O=…`.
pub(super) fn name(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect();
    parts.join(",")
}

/// The names a certificate is issued for: its subject alternative names, else its CN.
pub(super) fn names(cert: &X509Ref) -> String {
    let Some(alternatives) = cert.subject_alt_names() else {
        return name(cert.subject_name());
    };
    let names: Vec<String> = alternatives
        .iter()
        .filter_map(|n| {
            if let Some(dns) = n.dnsname() {
                Some(format!("DNS:{dns}"))
            } else {
                n.ipaddress().map(|ip| match ip.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]])
                    ),
                    16 => {
                        let octets: [u8; 16] = ip.try_into().unwrap();
                        format!("IP:{}", std::net::Ipv6Addr::from(octets))
                    }
                    _ => "IP:?".to_string(),
                })
            }
        })
        .collect();
    names.join(", ")
}
