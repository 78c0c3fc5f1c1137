//! A partition's own fetch queue, read a batch at a time.
//!
//! rust-rdkafka's split partition queues hand out one message per poll: every record costs a
//! `rd_kafka_queue_poll` (a queue lock and three clock reads inside librdkafka), an event and a
//! stream poll. Here the queue is read with `rd_kafka_consume_batch_queue`, which takes every
//! record already there in one call, and the wake-up is the same one rust-rdkafka uses (the
//! queue's non-empty event callback, waking a task).
//!
//! # Contract
//! - [`PartitionQueue::split`] detaches the partition's fetch queue from the consumer's queue, as
//!   `split_partition_queue` does; it must happen before the partition fetches anything (in
//!   `pre_rebalance(Assign)`), or records already forwarded to the consumer's queue are not here.
//! - [`PartitionQueue::next_batch`] never returns an empty batch and never loses records: it
//!   takes records only in the poll that returns them, so a cancelled call takes nothing.
//! - A [`Record`] is one `rd_kafka_message_t`, destroyed when dropped; it borrows its queue, which
//!   holds the consumer, so no record outlives the client it came from.
//! - Every handle of one partition shares librdkafka's one fetch queue and so its one wake-up
//!   callback. [`Wakeups`] records which handle set it last; only that handle switches it off
//!   when dropped, so a stale handle dropped late (a worker aborted at a deadline while its
//!   partition was assigned again) never silences its successor. [`Wakeups::rearm`] sets the
//!   callback again for that handle and wakes its reader (the stall watchdog's first step).
//! - The consumer must never return librdkafka's end-of-partition events through this queue
//!   (`enable.partition.eof` stays off): a batch read moves the partition's position to the
//!   event's offset + 1, one past the end (librdkafka #4844, fixed after 2.12.1), and the next
//!   rebalance's pause and resume would fetch from there, out of range.

mod pause;

use std::any::Any;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::future::poll_fn;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use futures::task::AtomicWaker;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedHeaders, Message, Timestamp};

pub use pause::Pauser;

/// Which [`PartitionQueue`] owns each partition's wake-up callback: the waker the callback was
/// last set with, and that handle's queue. One per consumer.
#[derive(Default)]
pub struct Wakeups(Mutex<HashMap<i32, Owner>>);

/// The handle that set a partition's callback last. Its queue pointer stays valid while it is
/// registered: the handle leaves the registry, under its lock, before it destroys the queue.
struct Owner {
    waker: Weak<AtomicWaker>,
    queue: NonNull<rdsys::rd_kafka_queue_t>,
}

// Only used under the registry's lock, on a queue that librdkafka locks itself.
unsafe impl Send for Owner {}

impl Owner {
    fn is(&self, waker: &Arc<AtomicWaker>) -> bool {
        std::ptr::eq(self.waker.as_ptr(), Arc::as_ptr(waker))
    }
}

impl Wakeups {
    /// Sets `partition`'s wake-up callback again, to the waker of the handle that owns it, and
    /// wakes that handle's reader, as if records had just arrived: a callback lost since
    /// (switched off, or replaced by a handle that is gone) is back, and the reader reads its
    /// queue now. False when no live handle of the partition owns it.
    pub fn rearm(&self, partition: i32) -> bool {
        let owners = self.0.lock().unwrap();
        let Some(owner) = owners.get(&partition) else {
            return false;
        };
        let Some(waker) = owner.waker.upgrade() else {
            return false;
        };
        // The owner keeps its waker alive as long as it is registered, and switches the
        // callback off (under this lock) before it lets go of it.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(
                owner.queue.as_ptr(),
                Some(queue_nonempty),
                Arc::as_ptr(&waker) as *mut c_void,
            );
        }
        waker.wake();
        true
    }
}

/// One partition's fetch queue, detached from the consumer's queue.
pub struct PartitionQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// Woken by librdkafka when the queue receives something. Boxed in an `Arc` whose address is
    /// the callback's opaque: it lives until the callback is disabled or set by a successor.
    waker: Arc<AtomicWaker>,
    wakeups: Arc<Wakeups>,
    topic: CString,
    partition: i32,
    rk: NonNull<rdsys::rd_kafka_t>,
    /// Keeps `rk` alive.
    _consumer: Arc<dyn Any + Send + Sync>,
}

// The queue handle is reference counted and locked inside librdkafka; the waker is thread safe.
unsafe impl Send for PartitionQueue {}
unsafe impl Sync for PartitionQueue {}

unsafe extern "C" fn queue_nonempty(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // Called with the queue's lock held, on a librdkafka thread.
    let waker = unsafe { &*(opaque as *const AtomicWaker) };
    waker.wake();
}

impl PartitionQueue {
    /// The fetch queue of `topic`/`partition`, no longer forwarded to the consumer's queue.
    /// None if the partition is unknown to the consumer.
    pub fn split<C: ConsumerContext + 'static>(
        consumer: &Arc<StreamConsumer<C>>,
        wakeups: &Arc<Wakeups>,
        topic: &str,
        partition: i32,
    ) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        let rk = NonNull::new(consumer.client().native_ptr())?;
        let queue = NonNull::new(unsafe {
            rdsys::rd_kafka_queue_get_partition(rk.as_ptr(), topic.as_ptr(), partition)
        })?;
        let waker = Arc::new(AtomicWaker::new());
        {
            let mut owners = wakeups.0.lock().unwrap();
            unsafe {
                rdsys::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut());
                rdsys::rd_kafka_queue_cb_event_enable(
                    queue.as_ptr(),
                    Some(queue_nonempty),
                    Arc::as_ptr(&waker) as *mut c_void,
                );
            }
            let owner = Owner {
                waker: Arc::downgrade(&waker),
                queue,
            };
            owners.insert(partition, owner);
        }
        Some(PartitionQueue {
            queue,
            waker,
            wakeups: wakeups.clone(),
            topic,
            partition,
            rk,
            _consumer: consumer.clone(),
        })
    }

    /// The partition's position: the offset after the last record or transaction marker the
    /// application was handed (markers are read past inside librdkafka). None before the first.
    pub fn position(&self) -> Option<i64> {
        unsafe {
            let list = rdsys::rd_kafka_topic_partition_list_new(1);
            rdsys::rd_kafka_topic_partition_list_add(list, self.topic.as_ptr(), self.partition);
            let err = rdsys::rd_kafka_position(self.rk.as_ptr(), list);
            let elem = &*(*list).elems;
            let ok = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
            let offset = (err == ok && elem.err == ok && elem.offset >= 0).then_some(elem.offset);
            rdsys::rd_kafka_topic_partition_list_destroy(list);
            offset
        }
    }

    /// What the queue holds now: records, errors or librdkafka's own ops.
    pub fn len(&self) -> usize {
        unsafe { rdsys::rd_kafka_queue_length(self.queue.as_ptr()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the partition's position has reached the high watermark of its last fetch
    /// response (librdkafka's cached one, no request): nothing was left to fetch then.
    pub fn caught_up(&self) -> bool {
        let (mut low, mut high) = (-1i64, -1i64);
        let err = unsafe {
            rdsys::rd_kafka_get_watermark_offsets(
                self.rk.as_ptr(),
                self.topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        let ok = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
        err == ok && high >= 0 && self.position().is_some_and(|p| p >= high)
    }

    /// A handle that pauses and resumes this partition's fetching ([`Pauser`]).
    pub fn pauser(&self) -> Pauser {
        Pauser {
            topic: self.topic.clone(),
            partition: self.partition,
            rk: self.rk,
            _consumer: self._consumer.clone(),
        }
    }

    /// Appends to `records` up to `max` of what is in the queue now (records, or errors, see
    /// [`Record::error`]), without waiting; `records` must be empty with room for `max`.
    /// Returns how many.
    fn fill<'q>(&'q self, records: &mut Vec<Record<'q>>, max: usize) -> usize {
        debug_assert!(records.is_empty() && records.capacity() >= max);
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                // `Record` is a transparent non-null message pointer.
                records.as_mut_ptr() as *mut *mut rdsys::rd_kafka_message_t,
                max,
            )
        };
        let n = n.max(0) as usize;
        // librdkafka filled the first n slots with messages it hands over.
        unsafe { records.set_len(n) };
        n
    }

    /// Waits for the queue to hold something and returns up to `max` of it (never empty).
    ///
    /// Cancel-safe: records are taken only by the poll that returns them.
    pub async fn next_batch(&self, max: usize) -> Vec<Record<'_>> {
        // One buffer per batch, however many polls the wait takes.
        let mut records = Vec::with_capacity(max);
        poll_fn(|cx| {
            if self.fill(&mut records, max) == 0 {
                self.waker.register(cx.waker());
                // Something may have arrived between the empty read and the registration;
                // that enqueue's callback found no waker.
                if self.fill(&mut records, max) == 0 {
                    return Poll::Pending;
                }
            }
            Poll::Ready(std::mem::take(&mut records))
        })
        .await
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        let mut owners = self.wakeups.0.lock().unwrap();
        if owners
            .get(&self.partition)
            .is_some_and(|o| o.is(&self.waker))
        {
            owners.remove(&self.partition);
            // Takes the queue's lock, so no callback is running or will run with the opaque.
            unsafe {
                rdsys::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, ptr::null_mut())
            };
        }
        // Otherwise a successor set the callback with its own opaque (under the queue's lock,
        // so librdkafka no longer calls it with ours) and keeps it.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// One consumed message (or a consumer error or end-of-partition signal) from a
/// [`PartitionQueue`].
#[repr(transparent)]
pub struct Record<'q> {
    ptr: NonNull<rdsys::rd_kafka_message_t>,
    _queue: PhantomData<&'q PartitionQueue>,
}

// As rust-rdkafka's BorrowedMessage: a consumed message may be read and destroyed on any thread.
unsafe impl Send for Record<'_> {}
unsafe impl Sync for Record<'_> {}

impl Record<'_> {
    fn raw(&self) -> &rdsys::rd_kafka_message_t {
        unsafe { self.ptr.as_ref() }
    }

    /// None for a record; the error code for a consumer error, `PartitionEOF` included.
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        let err = self.raw().err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err.into())
    }

    /// For a consumer error that says the record batch at its offset cannot be decoded, what
    /// a person needs to know; None for records and other errors.
    pub fn undecodable(&self) -> Option<Undecodable> {
        use RDKafkaErrorCode::*;
        let code = self.error()?;
        let cause = match code {
            NotImplemented => UndecodableCause::Unsupported,
            BadCompression | BadMessage | InvalidMessage | InvalidRecord => {
                UndecodableCause::Corrupt
            }
            _ => return None,
        };
        // A consumer error's payload is librdkafka's description of it.
        let reason = match self.payload() {
            Some(text) if !text.is_empty() => String::from_utf8_lossy(text).into_owned(),
            _ => code.to_string(),
        };
        Some(Undecodable {
            topic: self.topic().to_string(),
            partition: self.partition(),
            offset: self.offset(),
            reason,
            cause,
        })
    }

    pub fn payload_len(&self) -> usize {
        if self.raw().payload.is_null() {
            0
        } else {
            self.raw().len
        }
    }

    /// Moves the record's headers, parsed, out of it for a producer to take over, instead of
    /// copying them (`rd_kafka_message_detach_headers`). None if it has none. `&mut`: no
    /// [`Message::headers`] view of the moved list may be alive. A later `headers()` parses them
    /// again from the record's bytes.
    pub fn take_headers(&mut self) -> Option<NativeHeaders> {
        let mut headers = ptr::null_mut();
        let err =
            unsafe { rdsys::rd_kafka_message_detach_headers(self.ptr.as_ptr(), &mut headers) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        NonNull::new(headers).map(NativeHeaders)
    }
}

/// A record batch the consumer cannot decode: the worker stops there, committing nothing past it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{topic}/{partition}: the record batch at offset {offset} cannot be decoded ({reason}); \
         stopped without committing past it. {cause}"
)]
pub struct Undecodable {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// librdkafka's description.
    pub reason: String,
    pub cause: UndecodableCause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UndecodableCause {
    #[error(
        "This build of librdkafka does not support the batch's compression codec (ktransform is \
             built with gzip, snappy, lz4 and zstd): check the producer's compression.type."
    )]
    Unsupported,
    #[error("The batch is corrupt (damaged on the broker's disk, or written by a faulty producer). \
             Read it with another client to confirm (kafka-console-consumer --partition P --offset O); \
             to skip it, stop every instance and move the group past the batch with \
             kafka-consumer-groups --reset-offsets --to-offset <the batch's last offset + 1> --execute \
             (its records are lost).")]
    Corrupt,
}

/// A header list owned here, destroyed when dropped unless handed to the producer.
pub struct NativeHeaders(NonNull<rdsys::rd_kafka_headers_t>);

// An rd_kafka_headers_t belongs to no thread; this one has a single owner.
unsafe impl Send for NativeHeaders {}

impl NativeHeaders {
    pub fn as_ptr(&self) -> *mut rdsys::rd_kafka_headers_t {
        self.0.as_ptr()
    }

    /// The producer accepted the list with its record and owns it now.
    pub fn handed_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for NativeHeaders {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_headers_destroy(self.0.as_ptr()) }
    }
}

unsafe fn opt_slice<'a>(ptr: *const c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
    }
}

impl Message for Record<'_> {
    type Headers = BorrowedHeaders;

    fn key(&self) -> Option<&[u8]> {
        unsafe { opt_slice(self.raw().key, self.raw().key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        unsafe { opt_slice(self.raw().payload, self.raw().len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let raw = self.raw();
        if raw.payload.is_null() {
            None
        } else {
            Some(unsafe { std::slice::from_raw_parts_mut(raw.payload as *mut u8, raw.len) })
        }
    }

    fn topic(&self) -> &str {
        unsafe { std::ffi::CStr::from_ptr(rdsys::rd_kafka_topic_name(self.raw().rkt)) }
            .to_str()
            .expect("topic names are ASCII")
    }

    fn partition(&self) -> i32 {
        self.raw().partition
    }

    fn offset(&self) -> i64 {
        self.raw().offset
    }

    fn timestamp(&self) -> Timestamp {
        use rdsys::rd_kafka_timestamp_type_t as T;
        let mut kind = T::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        let ts = unsafe { rdsys::rd_kafka_message_timestamp(self.ptr.as_ptr(), &mut kind) };
        match kind {
            _ if ts == -1 => Timestamp::NotAvailable,
            T::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
            T::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ts),
            T::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ts),
        }
    }

    fn headers(&self) -> Option<&BorrowedHeaders> {
        let mut headers = ptr::null_mut();
        let err = unsafe { rdsys::rd_kafka_message_headers(self.ptr.as_ptr(), &mut headers) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return None;
        }
        // BorrowedHeaders is rust-rdkafka's zero-sized view of an rd_kafka_headers_t, made the
        // same way by its own BorrowedMessage; the headers live as long as the message.
        Some(unsafe { &*(headers as *const BorrowedHeaders) })
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_message_destroy(self.ptr.as_ptr()) }
    }
}
