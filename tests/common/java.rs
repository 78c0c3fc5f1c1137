//! Kafka's own Java client (`tests/clients/JavaClient.java`, run from the broker's jars) as a
//! writer and a reader ktransform did not write: its codecs are Java's, not librdkafka's.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::data::TestRecord;
use super::{blocking, brokers, Received};

/// The broker's jars (`scripts/kafka.sh libs`, which fetches them on first use).
fn libs() -> &'static str {
    static LIBS: OnceLock<String> = OnceLock::new();
    LIBS.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/kafka.sh"))
            .arg("libs")
            .output()
            .expect("run scripts/kafka.sh libs");
        assert!(
            out.status.success(),
            "scripts/kafka.sh libs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn java(args: &[&str]) -> Command {
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg(format!("{}/*", libs()))
        .arg(root().join("tests/clients/JavaClient.java"))
        .args(args);
    command
}

fn field(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "-".to_string(), hex::encode)
}

fn unfield(field: &str) -> Option<Vec<u8>> {
    (field != "-").then(|| hex::decode(field).expect("hex from the Java client"))
}

/// Produces `records` in order with the Java producer and `compression.type=codec`
/// (idempotent, acks=all, batches of up to 256 KiB after 50 ms), each with `timestamp` if given.
pub async fn produce(topic: &str, codec: &str, records: &[TestRecord], timestamp: Option<i64>) {
    let mut input = String::new();
    for r in records {
        let headers = if r.headers.is_empty() {
            "-".to_string()
        } else {
            r.headers
                .iter()
                .map(|(k, v)| format!("{}:{}", hex::encode(k), field(v.as_deref())))
                .collect::<Vec<_>>()
                .join(",")
        };
        input.push_str(&format!(
            "{}\t{}\t{}\t{headers}\n",
            field(Some(&r.key)),
            field(r.value.as_deref()),
            timestamp.unwrap_or(-1)
        ));
    }
    let (topic, codec) = (topic.to_string(), codec.to_string());
    blocking(move || {
        let mut child = java(&["produce", &brokers(), &topic, &codec])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start java");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .expect("records to the Java producer");
        let out = child.wait_with_output().expect("the Java producer");
        assert!(
            out.status.success(),
            "Java producer ({codec}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
}

/// Reads `topic` from the beginning with the Java consumer (read_committed) until at least
/// `count` records are in and nothing more arrives for 3 s.
pub async fn consume(topic: &str, count: usize) -> Vec<Received> {
    let topic = topic.to_string();
    blocking(move || {
        let out = java(&["consume", &brokers(), &topic, &count.to_string()])
            .stderr(Stdio::piped())
            .output()
            .expect("run the Java consumer");
        assert!(
            out.status.success(),
            "Java consumer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("UTF-8 from the Java consumer")
            .lines()
            .map(parse)
            .collect()
    })
    .await
}

fn parse(line: &str) -> Received {
    let f: Vec<&str> = line.split('\t').collect();
    assert_eq!(f.len(), 7, "a record line from the Java consumer: {line}");
    let headers = if f[6] == "-" {
        Vec::new()
    } else {
        f[6].split(',')
            .map(|h| {
                let (k, v) = h.split_once(':').expect("name:value");
                let name = String::from_utf8(unfield(k).unwrap_or_default()).expect("UTF-8 name");
                (name, unfield(v))
            })
            .collect()
    };
    Received {
        partition: f[0].parse().unwrap(),
        offset: f[1].parse().unwrap(),
        key: unfield(f[2]),
        value: unfield(f[3]),
        headers,
        timestamp: f[4].parse().ok().filter(|t: &i64| *t >= 0),
    }
}
