//! The plan layer: pure. From a [`Snapshot`] of the cluster and the
//! allocator's memory, one pass decides every Service's IPs and conditions,
//! which node answers for each layer 2 IP, which sessions carry each BGP
//! prefix, and every NodeAnnouncement, PrefixSet, pool and BGPPeer status.
//! No client, no clock (the time is an input), no I/O: what to write comes
//! out as [`Write`]s, and the write layer decides what is already written.

pub mod allocation;
pub mod announce;
pub mod conditions;
pub mod liveness;
pub mod status;

mod memory;
pub use memory::{Memory, pacing};

use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::bgppeer::BGPPeerStatus;
use ferrolb_api::constants::condition;
use ferrolb_api::{IPAddressPoolStatus, NodeAnnouncementSpec, PrefixSetSpec};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::events::{Event, EventType};

use allocation::ServiceKey;
use status::{Desired, Verdict};

/// What the store shows of an object the plan wants written: whether it
/// already says what the plan wants, and its resourceVersion (a store older
/// than our last write of the same value has simply not caught up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The stored object already says it.
    pub up_to_date: bool,
    /// The stored object's resourceVersion.
    pub version: Option<u64>,
}

/// One write the plan wants.
pub enum Write {
    /// Apply a Service's status.
    Service {
        key: ServiceKey,
        service: Arc<Service>,
        desired: Desired,
        seen: Seen,
        /// Events to publish once the status is written.
        events: Vec<Event>,
        /// The allocation outcome to count once written, when it changed.
        allocation: Option<Verdict>,
    },
    /// Take back what we wrote on a Service no longer ours.
    Clear {
        key: ServiceKey,
        service: Arc<Service>,
    },
    /// Apply a node's NodeAnnouncement spec.
    Announcement {
        node: String,
        spec: NodeAnnouncementSpec,
        seen: Seen,
    },
    /// Delete the NodeAnnouncement of a node that is gone.
    Retire { node: String },
    /// Apply one shard of an advertisement's shared prefixes.
    PrefixSet {
        name: String,
        spec: PrefixSetSpec,
        seen: Seen,
    },
    /// Delete a shard no longer wanted.
    DropPrefixSet { name: String },
    /// Apply a pool's status.
    Pool {
        name: String,
        status: IPAddressPoolStatus,
        seen: Seen,
    },
    /// Apply a BGPPeer's status.
    Peer {
        name: String,
        status: BGPPeerStatus,
        seen: Seen,
    },
}

impl Write {
    /// The kind of write, as `ferrolb_api_writes_total` labels it.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::Service { .. } | Write::Clear { .. } => "service_status",
            Write::Announcement { .. } => "node_announcement",
            Write::Retire { .. } => "node_announcement_delete",
            Write::PrefixSet { .. } => "prefix_set",
            Write::DropPrefixSet { .. } => "prefix_set_delete",
            Write::Pool { .. } => "pool_status",
            Write::Peer { .. } => "peer_status",
        }
    }
}

/// What one pass decided.
#[derive(Default)]
pub struct Pass {
    /// Everything that should be so; the writer skips what already is.
    pub writes: Vec<Write>,
    /// Services gone since the last pass (their IPs were released).
    pub released: Vec<ServiceKey>,
}

/// How long a sighting of another controller writing a Service's ingress is
/// reported after the last one: once our write takes the field back their
/// mark is gone from managedFields.
pub const OTHER_WRITER_MEMORY: Duration = Duration::from_secs(600);

/// An Event for a condition that changed reason. `NotYetApplied` gets none:
/// every new Service passes through it for a moment, and people alert on
/// Warning events; a Service stuck there says so in its condition.
pub fn transition(kind: &str, previous: Option<&str>, verdict: &Verdict) -> Option<Event> {
    if previous == Some(verdict.reason.as_str())
        || verdict.reason == condition::reason::NOT_YET_APPLIED
    {
        return None;
    }
    let (ok, bad, action) = if kind == condition::IP_ALLOCATED {
        ("IPAllocated", "AllocationFailed", "Allocate")
    } else {
        ("Announced", "NotAnnounced", "Announce")
    };
    let note = if verdict.is_true() {
        verdict.message.clone()
    } else {
        format!("{}: {}", verdict.reason, verdict.message)
    };
    Some(Event {
        type_: if verdict.is_true() {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: if verdict.is_true() { ok } else { bad }.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    })
}

#[cfg(test)]
mod tests;
