//! A consumer group as its coordinator describes it, whichever its protocol.
//!
//! rust-rdkafka's `fetch_group_list` asks only the classic DescribeGroups, to which a group of
//! the consumer protocol (KIP-848) answers `Dead` with no members. librdkafka's
//! `rd_kafka_DescribeConsumerGroups`, which rust-rdkafka does not wrap, asks
//! ConsumerGroupDescribe first and falls back to DescribeGroups for a classic group.

use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

/// Which protocol a group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Classic,
    Consumer,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Classic => "classic",
            Protocol::Consumer => "consumer",
        }
    }
}

/// What the group coordinator says about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// None for a group the coordinator does not know (never joined, or deleted).
    pub protocol: Option<Protocol>,
    /// `Stable`, `PreparingRebalance`, `Reconciling`, `Empty`, `Dead`, ...
    pub state: String,
    pub members: Vec<Member>,
}

/// One member of a group and what it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The coordinator's id for the member (`consumer_id` in librdkafka's terms).
    pub member_id: String,
    /// The member's `client.id`: `ktransform`, `rdkafka`, a Java client's `consumer-<group>-1`...
    pub client_id: String,
    /// Where it connects from, as the coordinator saw it (`/127.0.0.1`).
    pub host: String,
    /// Its `group.instance.id` under static membership.
    pub instance_id: Option<String>,
    /// The partitions assigned to it now, of every topic it reads.
    pub assignment: Vec<(String, i32)>,
}

impl Description {
    /// Partitions currently assigned to each member.
    pub fn assigned(&self) -> Vec<usize> {
        self.members.iter().map(|m| m.assignment.len()).collect()
    }
}

/// Describes `group` through `client`'s connection (any client will do). Blocking, up to
/// `timeout`.
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<Description, KafkaError> {
    let failed = |code: RDKafkaRespErr| KafkaError::AdminOp(code.into());
    let name =
        CString::new(group).map_err(|_| failed(RDKafkaRespErr::RD_KAFKA_RESP_ERR__INVALID_ARG))?;
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = client.native_ptr();
    // SAFETY: every handle made here is destroyed before returning, after the last read of
    // what it owns; the result's descriptions are owned by the event.
    unsafe {
        let queue = rdsys::rd_kafka_queue_new(rk);
        let options = rdsys::rd_kafka_AdminOptions_new(
            rk,
            rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        );
        let mut errstr = [0 as c_char; 256];
        rdsys::rd_kafka_AdminOptions_set_request_timeout(
            options,
            ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let mut groups = [name.as_ptr()];
        rdsys::rd_kafka_DescribeConsumerGroups(rk, groups.as_mut_ptr(), 1, options, queue);
        // The admin request times out by itself; the margin only covers its result's delivery.
        let event = rdsys::rd_kafka_queue_poll(queue, ms.saturating_add(1_000));
        let result = if event.is_null() {
            Err(failed(RDKafkaRespErr::RD_KAFKA_RESP_ERR__TIMED_OUT))
        } else {
            let described = read(event);
            rdsys::rd_kafka_event_destroy(event);
            described
        };
        rdsys::rd_kafka_AdminOptions_destroy(options);
        rdsys::rd_kafka_queue_destroy(queue);
        result
    }
}

/// Reads the one group of a DescribeConsumerGroups result event.
///
/// # Safety
/// `event` is a live DescribeConsumerGroups result event.
unsafe fn read(event: *mut rdsys::rd_kafka_event_t) -> Result<Description, KafkaError> {
    let err = rdsys::rd_kafka_event_error(event);
    if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(KafkaError::AdminOp(err.into()));
    }
    let result = rdsys::rd_kafka_event_DescribeConsumerGroups_result(event);
    let mut count = 0;
    let groups = rdsys::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
    if groups.is_null() || count == 0 {
        return Err(KafkaError::AdminOp(RDKafkaErrorCode::Fail));
    }
    let group = *groups;
    let error = rdsys::rd_kafka_ConsumerGroupDescription_error(group);
    if !error.is_null() {
        let code = rdsys::rd_kafka_error_code(error);
        // A group nobody ever joined: described as no group at all.
        if code == RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND {
            return Ok(Description {
                protocol: None,
                state: "Dead".into(),
                members: Vec::new(),
            });
        }
        return Err(KafkaError::AdminOp(code.into()));
    }
    use rdsys::rd_kafka_consumer_group_state_t::RD_KAFKA_CONSUMER_GROUP_STATE_DEAD;
    use rdsys::rd_kafka_consumer_group_type_t::*;
    let state_code = rdsys::rd_kafka_ConsumerGroupDescription_state(group);
    let state = text(rdsys::rd_kafka_consumer_group_state_name(state_code));
    // DescribeGroups, the fallback, describes a group it does not know as a classic one, dead.
    let protocol = match rdsys::rd_kafka_ConsumerGroupDescription_type(group) {
        _ if state_code == RD_KAFKA_CONSUMER_GROUP_STATE_DEAD => None,
        RD_KAFKA_CONSUMER_GROUP_TYPE_CONSUMER => Some(Protocol::Consumer),
        RD_KAFKA_CONSUMER_GROUP_TYPE_CLASSIC => Some(Protocol::Classic),
        _ => None,
    };
    let members = (0..rdsys::rd_kafka_ConsumerGroupDescription_member_count(group))
        .map(|i| member(rdsys::rd_kafka_ConsumerGroupDescription_member(group, i)))
        .collect();
    Ok(Description {
        protocol,
        state,
        members,
    })
}

/// # Safety
/// `member` is a live member description of a live result event.
unsafe fn member(member: *const rdsys::rd_kafka_MemberDescription_t) -> Member {
    let assignment = rdsys::rd_kafka_MemberDescription_assignment(member);
    let list = if assignment.is_null() {
        std::ptr::null()
    } else {
        rdsys::rd_kafka_MemberAssignment_partitions(assignment)
    };
    let assignment = if list.is_null() || (*list).elems.is_null() {
        Vec::new()
    } else {
        let count = usize::try_from((*list).cnt).unwrap_or(0);
        std::slice::from_raw_parts((*list).elems, count)
            .iter()
            .map(|tp| (text(tp.topic), tp.partition))
            .collect()
    };
    let instance_id = text(rdsys::rd_kafka_MemberDescription_group_instance_id(member));
    Member {
        member_id: text(rdsys::rd_kafka_MemberDescription_consumer_id(member)),
        client_id: text(rdsys::rd_kafka_MemberDescription_client_id(member)),
        host: text(rdsys::rd_kafka_MemberDescription_host(member)),
        instance_id: (!instance_id.is_empty()).then_some(instance_id),
        assignment,
    }
}

/// # Safety
/// `s` is null or a NUL-terminated string that outlives the call.
unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        String::new()
    } else {
        CStr::from_ptr(s).to_string_lossy().into_owned()
    }
}
