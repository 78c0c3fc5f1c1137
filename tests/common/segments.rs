//! The local broker's log segments, read and (for corruption tests) written directly: which
//! codec each record batch of a partition was stored with, and a batch damaged on disk. The
//! broker serves fetches from these files as they are, so what is written here is what
//! consumers get.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use super::{brokers, config_on, REQUEST};

/// A record batch's place in its segment and the header fields the tests look at.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Byte position of the batch in the segment file.
    pub position: u64,
    pub base_offset: i64,
    /// Bytes after the length field.
    pub length: u32,
    pub attributes: i16,
}

/// Bytes of a v2 record batch header: base offset (8), length (4), leader epoch (4), magic (1),
/// crc (4), attributes (2), last offset delta (4), two timestamps (16), producer id (8),
/// producer epoch (2), base sequence (4), record count (4).
pub const HEADER: u64 = 61;

impl Batch {
    /// Kafka's codec name for the batch's compression attribute.
    pub fn codec(&self) -> &'static str {
        match self.attributes & 0x7 {
            0 => "none",
            1 => "gzip",
            2 => "snappy",
            3 => "lz4",
            4 => "zstd",
            _ => "unknown",
        }
    }

    /// A transaction marker (commit or abort), not data.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// The broker's first log directory (`log.dirs`), which must be on this machine.
pub async fn log_dir() -> PathBuf {
    let admin: AdminClient<DefaultClientContext> =
        config_on(&brokers(), &[]).create().expect("admin client");
    let options = AdminOptions::new().request_timeout(Some(REQUEST));
    let config = admin
        .describe_configs([&ResourceSpecifier::Broker(1)], &options)
        .await
        .expect("describe broker 1")
        .into_iter()
        .next()
        .unwrap()
        .expect("broker 1's configuration");
    let dirs = config
        .get("log.dirs")
        .and_then(|e| e.value.clone())
        .expect("log.dirs");
    let dir = PathBuf::from(dirs.split(',').next().unwrap());
    assert!(
        dir.is_dir(),
        "the broker's log dir {} is not on this machine: these tests need the local broker (make up)",
        dir.display()
    );
    dir
}

fn segment(dir: &std::path::Path, topic: &str, partition: i32) -> PathBuf {
    dir.join(format!("{topic}-{partition}"))
        .join("00000000000000000000.log")
}

/// Every record batch in the first segment of `topic`/`partition`.
pub async fn batches(topic: &str, partition: i32) -> Vec<Batch> {
    let mut bytes = Vec::new();
    File::open(segment(&log_dir().await, topic, partition))
        .expect("the partition's first segment")
        .read_to_end(&mut bytes)
        .unwrap();
    let int = |at: usize, width: usize| -> i64 {
        bytes[at..at + width]
            .iter()
            .fold(0i64, |n, &b| n << 8 | i64::from(b))
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + HEADER as usize <= bytes.len() {
        let length = int(at + 8, 4) as u32;
        out.push(Batch {
            position: at as u64,
            base_offset: int(at, 8),
            length,
            attributes: int(at + 21, 2) as i16,
        });
        at += 12 + length as usize;
    }
    out
}

/// Overwrites `bytes` at `position` of the first segment of `topic`/`partition`.
pub async fn overwrite(topic: &str, partition: i32, position: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .write(true)
        .open(segment(&log_dir().await, topic, partition))
        .expect("open the segment for writing");
    file.seek(SeekFrom::Start(position)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}
