//! How often a large object the operator rewrites is written while it keeps
//! changing: a node's NodeAnnouncement, and a PrefixSet shard.
//!
//! A layer 2 NodeAnnouncement lists its node's IPs, so on few nodes with many
//! Services it is large (about 200 KB for 13,000 IPs), and in a burst of
//! creates every pass rewrote it: at 3 nodes and 15,000 Services the
//! revisions filled etcd's 2 GiB quota before the apiserver compacted them
//! ("mvcc: database space exceeded", measured with `ferrolb-load`). So after
//! writing a node's object of B bytes, the next write of it waits B ÷ rate
//! (at most [`LONGEST`]): a small object — and any lone change — is written
//! at once; a large one that changes continuously is written a few times a
//! second, with every change since folded in. And whatever its size, an
//! object is written at most every [`BURST_EVERY`] while it keeps changing:
//! with no wait between passes, a burst of creates rewrote a node's object
//! or a PrefixSet shard (read by every speaker) at nearly every create — at
//! 10 nodes × 1,000 Services in layer 2, 1,641 NodeAnnouncement writes
//! instead of 329, and the creates took three times as long. A lone change,
//! to an object quiet for that long, is written at once. Pure: time is an
//! input.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// The rate the operator paces each node's object at: 256 KiB a second, so
/// an object under ~2.5 KB (any node's, on a cluster of a few dozen nodes with
/// a thousand Services) is never held back more than 10 ms.
pub const RATE: u64 = 256 * 1024;

/// The longest a write is held back.
pub const LONGEST: Duration = Duration::from_secs(2);

/// The shortest spacing of two writes of one NodeAnnouncement or PrefixSet
/// while it keeps changing.
pub const BURST_EVERY: Duration = Duration::from_millis(250);

/// How often the counters in a pool's and a BGPPeer's status are written
/// while they keep changing (every allocation changes a pool's): a lone
/// change at once, a burst once a second, with its last value.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The pacing of one kind's writes, per object.
#[derive(Debug, Default)]
pub struct Pacing {
    /// Bytes a second per object; none: no pacing.
    rate: Option<u64>,
    /// A fixed spacing instead, whatever the size.
    every: Option<Duration>,
    /// Per object, when its next write may go.
    next: HashMap<String, Timestamp>,
    /// Objects with a write held back, and when it is due.
    pub(super) held: BTreeMap<String, Timestamp>,
}

impl Pacing {
    /// Pacing at `bytes_per_second` per object, and at least
    /// [`BURST_EVERY`] between two writes of one.
    pub fn new(bytes_per_second: u64) -> Pacing {
        Pacing {
            rate: Some(bytes_per_second.max(1)),
            every: Some(BURST_EVERY),
            ..Pacing::default()
        }
    }

    /// Pacing at one write per `every` per object.
    pub fn every(every: Duration) -> Pacing {
        Pacing {
            every: Some(every),
            ..Pacing::default()
        }
    }

    /// Whether object `name`'s new spec (`spec`, serialised for its size)
    /// may be written at `now`; when it may, the next write of it is paced
    /// by this one's size, and when not, it is remembered as due.
    pub fn may_write(&mut self, name: &str, spec: &impl serde::Serialize, now: Timestamp) -> bool {
        if self.rate.is_none() && self.every.is_none() {
            return true;
        }
        if let Some(due) = self.next.get(name)
            && *due > now
        {
            self.held.insert(name.to_string(), *due);
            return false;
        }
        self.held.remove(name);
        let by_size = self.rate.map_or(Duration::ZERO, |rate| {
            let bytes = serde_json::to_vec(spec)
                .map(|b| b.len() as u64)
                .unwrap_or(0);
            Duration::from_secs_f64(bytes as f64 / rate as f64).min(LONGEST)
        });
        let wait = by_size.max(self.every.unwrap_or_default());
        self.next.insert(name.to_string(), now + wait);
        true
    }

    /// The object is gone.
    pub fn forget(&mut self, name: &str) {
        self.next.remove(name);
        self.held.remove(name);
    }

    /// When the first held-back write is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.held.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_api::NodeAnnouncementSpec;
    use ferrolb_api::nodeannouncement::{L2Group, L2Role};

    fn spec(ips: u32) -> NodeAnnouncementSpec {
        NodeAnnouncementSpec {
            node: Some("node-a".into()),
            l2: vec![L2Group {
                role: L2Role::Active,
                standby_for: None,
                standby: None,
                probe: None,
                interfaces: Vec::new(),
                arming: false,
                // Every other address: no ranges, about 16 bytes each.
                ips: (0..ips)
                    .map(|i| std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i)))
                    .collect(),
            }],
            bgp: Vec::new(),
        }
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_small_object_is_written_at_once_when_quiet_and_every_250_ms_in_a_burst() {
        let mut pacing = Pacing::new(256 * 1024);
        for ms in (0..2_500).step_by(250) {
            assert!(pacing.may_write("node-a", &spec(10), at(ms)));
        }
        assert_eq!(pacing.next_due(), None);
        assert!(!pacing.may_write("node-a", &spec(11), at(2_260)));
        assert_eq!(pacing.next_due(), Some(at(2_500)));
    }

    #[test]
    fn a_large_object_changing_continuously_is_written_a_few_times_a_second() {
        let mut pacing = Pacing::new(256 * 1024);
        let big = spec(10_000);
        assert!(pacing.may_write("node-a", &big, at(0)));
        // Changes every 50 ms: held back, and due once its time came.
        assert!(!pacing.may_write("node-a", &big, at(50)));
        let due = pacing.next_due().expect("due");
        assert!(due > at(50) && due <= at(2_000), "{due}");
        assert!(!pacing.may_write("node-a", &big, at(100)));
        assert!(pacing.may_write("node-a", &big, due));
        assert_eq!(pacing.next_due(), None);
        // Another node is not held back by this one.
        assert!(pacing.may_write("node-b", &big, at(60)));
    }

    #[test]
    fn a_status_in_a_burst_is_written_once_a_second_and_a_lone_change_at_once() {
        let mut pacing = Pacing::every(STATUS_EVERY);
        assert!(pacing.may_write("pool", &"used 1", at(0)));
        assert!(!pacing.may_write("pool", &"used 2", at(20)));
        assert!(!pacing.may_write("pool", &"used 3", at(900)));
        assert_eq!(pacing.next_due(), Some(at(1_000)));
        assert!(pacing.may_write("pool", &"used 3", at(1_000)));
        assert_eq!(pacing.next_due(), None);
        assert!(pacing.may_write("other", &"used 1", at(1_001)));
        // Quiet for a while: the next change goes at once.
        assert!(pacing.may_write("pool", &"used 4", at(5_000)));
    }

    #[test]
    fn no_pacing_unless_asked() {
        let mut pacing = Pacing::default();
        let big = spec(10_000);
        assert!(pacing.may_write("node-a", &big, at(0)));
        assert!(pacing.may_write("node-a", &big, at(1)));
    }
}
