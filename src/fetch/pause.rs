//! Pausing and resuming one partition's fetch ([`Pauser`]), for the fetch turns of
//! `--memory-budget` (`crate::memory::Turns`).

use std::any::Any;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use rdkafka::bindings as rdsys;
use rdkafka::error::RDKafkaErrorCode;

/// Pauses and resumes one partition's fetching (`rd_kafka_pause_partitions`).
///
/// librdkafka starts fetching a resumed partition at the offset after the last record it handed
/// to the application before the pause (or where a seek since put it), and drops whatever was
/// fetched for it, queued or in flight, at the pause. A pause outlives an unassignment: a
/// partition paused when revoked would stay paused if assigned here again, so whoever pauses
/// must resume before letting go.
pub struct Pauser {
    pub(super) topic: CString,
    pub(super) partition: i32,
    pub(super) rk: NonNull<rdsys::rd_kafka_t>,
    /// Keeps `rk` alive.
    pub(super) _consumer: Arc<dyn Any + Send + Sync>,
}

// librdkafka's pause and resume are thread safe.
unsafe impl Send for Pauser {}
unsafe impl Sync for Pauser {}

impl Pauser {
    pub fn pause(&self) -> Result<(), RDKafkaErrorCode> {
        self.set(true)
    }

    pub fn resume(&self) -> Result<(), RDKafkaErrorCode> {
        self.set(false)
    }

    fn set(&self, pause: bool) -> Result<(), RDKafkaErrorCode> {
        let ok = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
        unsafe {
            let list = rdsys::rd_kafka_topic_partition_list_new(1);
            rdsys::rd_kafka_topic_partition_list_add(list, self.topic.as_ptr(), self.partition);
            let mut err = if pause {
                rdsys::rd_kafka_pause_partitions(self.rk.as_ptr(), list)
            } else {
                rdsys::rd_kafka_resume_partitions(self.rk.as_ptr(), list)
            };
            if err == ok {
                err = (*(*list).elems).err;
            }
            rdsys::rd_kafka_topic_partition_list_destroy(list);
            if err == ok {
                Ok(())
            } else {
                Err(err.into())
            }
        }
    }
}
