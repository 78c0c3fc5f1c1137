//! Record batch sizes as the broker counts them against a topic's `max.message.bytes`, so that
//! the sink caps its batches below the limit and the dead-letter path refuses locally a record
//! the broker would refuse after its input is gone.

use rdkafka::message::Headers;

/// Bytes of a v2 record batch's header (baseOffset .. recordCount), counted by the broker
/// against the topic's `max.message.bytes` with the records.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes of a v2 record batch holding one record with these key, value and header lengths
/// (`None`: null), as the broker measures it against `max.message.bytes`.
pub fn single_record_batch_size(
    key: Option<usize>,
    value: Option<usize>,
    headers: &[(usize, Option<usize>)],
) -> usize {
    let field = |len: Option<usize>| match len {
        Some(n) => varint_len(n as i64) + n,
        None => varint_len(-1),
    };
    let headers_bytes: usize = headers
        .iter()
        .map(|(k, v)| varint_len(*k as i64) + k + field(*v))
        .sum();
    // attributes, timestampDelta 0, offsetDelta 0, key, value, header count, headers.
    let body =
        1 + 1 + 1 + field(key) + field(value) + varint_len(headers.len() as i64) + headers_bytes;
    BATCH_HEADER_BYTES + varint_len(body as i64) + body
}

/// The (key, value) lengths of `headers`, in order, as [`single_record_batch_size`] takes them.
pub fn header_lengths<H: Headers>(headers: &H) -> Vec<(usize, Option<usize>)> {
    headers
        .iter()
        .map(|h| (h.key.len(), h.value.map(<[u8]>::len)))
        .collect()
}

/// Length of the zig-zag varint encoding of `n`, as Kafka's record format uses.
fn varint_len(n: i64) -> usize {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut len = 1;
    while z >= 0x80 {
        z >>= 7;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(-1), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(8191), 2);
        assert_eq!(varint_len(8192), 3);
    }

    #[test]
    fn batch_of_one_record() {
        // Key "k", 10-byte value, no headers: body 1+1+1+(1+1)+(1+10)+1 = 17, length 1, header 61.
        assert_eq!(single_record_batch_size(Some(1), Some(10), &[]), 79);
        // A null key costs one byte; a header "h" = "vv" costs 1+1+1+2.
        assert_eq!(single_record_batch_size(None, Some(10), &[]), 78);
        assert_eq!(
            single_record_batch_size(Some(1), Some(10), &[(1, Some(2))]),
            84
        );
    }
}
