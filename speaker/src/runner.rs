//! Applies a NodeAnnouncement on this node — layer 2, the fast failover path
//! and BGP together — and says what it did. Used in a cluster and with
//! `--from-file` alike.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::NodeAnnouncementSpec;
use ferrolb_api::nodeannouncement::{FailoverPhase, FailoverState, L2Phase, L2State, NodeProblem};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use crate::bgp::Bgp;
use crate::failover::Failover;
use crate::failover::tracker::Reach;
use crate::node::{Layer2, Wanted};
use ferrolb_api::prefixset::SharedPrefixes;

/// How long a planned stop waits for standbys to acknowledge a hand-off.
const HANDOFF_WAIT: Duration = Duration::from_millis(500);

/// Everything a speaker runs on its node.
pub struct Runner {
    /// ARP and NDP.
    pub layer2: Layer2,
    /// BGP sessions.
    pub bgp: Bgp,
    /// The PrefixSets seen: prefixes shared by many nodes.
    pub shared: SharedPrefixes,
    failover: Option<Arc<Failover>>,
    /// Until when active IPs are held back after the fast path starts.
    hold_until: Option<Instant>,
    spec: NodeAnnouncementSpec,
    /// What the spec asks.
    pub wanted: Wanted,
    /// What is done: the spec with takeovers and yields applied.
    pub effective: Wanted,
    /// Interfaces that failed, with why.
    pub failed: BTreeMap<Option<String>, String>,
    /// Active IPs held back while starting.
    held: BTreeSet<IpAddr>,
    /// What on the node breaks announcements (the kernel answering ARP).
    pub problems: Vec<NodeProblem>,
    /// 1 while the kernel answers ARP for Service IPs (a gauge for /metrics).
    pub kernel_answers_arp: prometheus_client::metrics::gauge::Gauge,
}

impl Runner {
    /// Nothing applied yet.
    pub fn new(layer2: Layer2, bgp: Bgp) -> Runner {
        Runner {
            layer2,
            bgp,
            shared: SharedPrefixes::default(),
            failover: None,
            hold_until: None,
            spec: NodeAnnouncementSpec::default(),
            wanted: Wanted::default(),
            effective: Wanted::default(),
            failed: BTreeMap::new(),
            held: BTreeSet::new(),
            problems: Vec::new(),
            kernel_answers_arp: Default::default(),
        }
    }

    /// Looks at what the node's kernel does with ARP for Service IPs;
    /// returns whether the problems changed.
    pub fn check_node(&mut self) -> bool {
        let problems: Vec<NodeProblem> = match self.layer2.kernel_view() {
            Ok(view) => crate::l2::kernel::problem(&view).into_iter().collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the kernel's ARP settings");
                Vec::new()
            }
        };
        self.kernel_answers_arp.set(i64::from(!problems.is_empty()));
        if problems == self.problems {
            return false;
        }
        for problem in &problems {
            tracing::warn!(reason = %problem.reason, "{}", problem.message);
        }
        self.problems = problems;
        true
    }

    /// The fast path towards each active node this node stands by for;
    /// `previous` keeps `since` when a state did not change.
    pub fn failover_states(&self, previous: &[FailoverState]) -> Vec<FailoverState> {
        let Some(failover) = &self.failover else {
            return Vec::new();
        };
        let now = Time(Timestamp::now());
        failover
            .towards()
            .into_iter()
            .map(|towards| {
                let (state, reason, message) = match &towards.reach {
                    Reach::Armed | Reach::Silent => (FailoverPhase::Armed, None, None),
                    Reach::Waiting => (FailoverPhase::Pending, None, None),
                    Reach::Unavailable(why) => (
                        FailoverPhase::Unavailable,
                        Some(why.reason().to_string()),
                        Some(why.message(&towards.node, failover.node(), towards.address.port())),
                    ),
                };
                let since = previous
                    .iter()
                    .find(|p| p.node == towards.node && p.state == state && p.reason == reason)
                    .and_then(|p| p.since.clone())
                    .unwrap_or_else(|| now.clone());
                FailoverState {
                    node: towards.node,
                    state,
                    reason,
                    message,
                    since: Some(since),
                }
            })
            .collect()
    }

    /// Turns the fast path on. Active IPs are held back for `grace` first, so a
    /// standby that took them over while this speaker was away can say so
    /// before this one answers again.
    pub fn set_failover(&mut self, failover: Arc<Failover>, grace: Duration) {
        self.failover = Some(failover);
        self.hold_until = Some(Instant::now() + grace);
    }

    /// The fast path, once on.
    pub fn failover(&self) -> Option<&Arc<Failover>> {
        self.failover.as_ref()
    }

    /// When the hold-back ends, if it has not yet.
    pub fn holding_until(&self) -> Option<Instant> {
        self.hold_until.filter(|at| Instant::now() < *at)
    }

    /// Applies a new spec.
    pub fn apply(&mut self, spec: &NodeAnnouncementSpec) {
        self.spec = spec.clone();
        self.bgp.apply(&self.shared.resolve(&spec.bgp));
        self.reapply();
    }

    /// Applies the BGP part again after the shared prefixes changed.
    pub fn reapply_bgp(&mut self) {
        self.bgp.apply(&self.shared.resolve(&self.spec.bgp));
    }

    /// Applies the last spec again with the fast path's current view.
    pub fn reapply(&mut self) {
        self.wanted = Wanted::from_spec(&self.spec);
        // While starting, hold back the active IPs not answered for yet (an IP
        // this speaker took over itself stays answered when it becomes official).
        let answering = self.effective.active_ips();
        self.held = if self.holding_until().is_some() {
            self.wanted
                .active_ips()
                .difference(&answering)
                .copied()
                .collect()
        } else {
            BTreeSet::new()
        };
        self.effective = match &self.failover {
            Some(failover) => {
                for (ip, mac) in self.layer2.claims.take() {
                    failover.claimed_on_wire(ip, &mac.to_string());
                }
                failover.set_targets(&self.wanted.targets());
                failover.set_standbys(&self.wanted.standbys);
                self.wanted
                    .effective(&failover.taken(), &failover.yielded(), &self.held)
            }
            None => self.wanted.clone(),
        };
        self.failed = self.layer2.apply(&self.effective);
        if let Some(failover) = &self.failover {
            failover.set_answering(&self.effective.active_ips(), &self.wanted.active_ips());
        }
    }

    /// A planned stop: hands active IPs to their standbys, goes silent, ends
    /// the BGP sessions.
    pub async fn stop(&mut self) {
        if let Some(failover) = &self.failover {
            let ips = self.effective.active_ips();
            if !ips.is_empty() {
                let handed = failover
                    .handoff(&ips, &self.wanted.handoff, HANDOFF_WAIT)
                    .await;
                tracing::info!(handed = ?handed, of = ips.len(), "handed IPs to their standbys");
            }
        }
        self.layer2.apply(&Wanted::default());
        self.bgp.shutdown().await;
    }

    /// The layer 2 state for the status, IPs grouped by state; `previous`
    /// keeps a group's `since` while it is there.
    pub fn l2_states(&self, previous: &[L2State]) -> Vec<L2State> {
        let taken = self
            .failover
            .as_ref()
            .map(|f| f.taken())
            .unwrap_or_default();
        let yielded = self
            .failover
            .as_ref()
            .map(|f| f.yielded())
            .unwrap_or_default();
        let mut rows: BTreeMap<IpAddr, Row> = BTreeMap::new();
        for ip in self.effective.active_ips() {
            let interfaces = self.layer2.interfaces_for(ip);
            let row = if interfaces.is_empty() {
                let why = self.failed.values().cloned().collect::<Vec<_>>().join("; ");
                Row::new(L2Phase::Failed, interfaces, Some(why), None)
            } else if let Some(t) = taken.get(&ip) {
                Row::new(
                    L2Phase::TakenOver,
                    interfaces,
                    Some(t.why.clone()),
                    Some(t.from.clone()),
                )
            } else {
                Row::new(L2Phase::Announcing, interfaces, None, None)
            };
            rows.insert(ip, row);
        }
        // A standby IP is in the spec already: the status names one only
        // when something stands in its way, so a node's status does not
        // repeat its spec.
        for (ip, standby) in &self.effective.standby {
            if standby.probe.is_some() {
                continue;
            }
            let message = format!(
                "no probe address for node {} yet: the fast path waits for it",
                standby.active
            );
            rows.entry(*ip)
                .or_insert_with(|| Row::new(L2Phase::Standby, Vec::new(), Some(message), None));
        }
        let spec_active = self.wanted.active_ips();
        for (ip, by) in &yielded {
            if !spec_active.contains(ip) {
                continue;
            }
            // A claim heard in a probe names the node; one seen on the wire
            // (a gratuitous ARP) names its MAC.
            let message = if by.starts_with("the node at ") {
                format!(
                    "{by} announced this IP (a takeover this speaker's fast failover did not hear); not answering while it claims it (or until the operator moves it)"
                )
            } else {
                format!(
                    "node {by} took this IP over while this speaker was away; not answering while it claims it (or until the operator moves it)"
                )
            };
            rows.entry(*ip)
                .or_insert_with(|| Row::new(L2Phase::Standby, Vec::new(), Some(message), None));
        }
        for ip in self.held.iter().copied() {
            rows.entry(ip).or_insert_with(|| {
                Row::new(
                    L2Phase::Standby,
                    Vec::new(),
                    Some("starting: listening for standbys before answering".into()),
                    None,
                )
            });
        }
        grouped(rows, previous, Time(Timestamp::now()))
    }

    /// The IPs taken over or yielded, for logs.
    pub fn failover_view(&self) -> (Vec<IpAddr>, Vec<IpAddr>) {
        match &self.failover {
            Some(f) => (
                f.taken().keys().copied().collect(),
                f.yielded().keys().copied().collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }
}

/// One IP's layer 2 state, before grouping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    state: L2Phase,
    interfaces: Vec<String>,
    message: Option<String>,
    taken_from: Option<String>,
}

impl Row {
    fn new(
        state: L2Phase,
        interfaces: Vec<String>,
        message: Option<String>,
        taken_from: Option<String>,
    ) -> Row {
        Row {
            state,
            interfaces,
            message,
            taken_from,
        }
    }
}

/// The status groups of per-IP states: one per state, interfaces, message
/// and node taken from; a group keeps the `since` of the same group in
/// `previous`.
fn grouped(rows: BTreeMap<IpAddr, Row>, previous: &[L2State], now: Time) -> Vec<L2State> {
    let mut groups: BTreeMap<Row, Vec<IpAddr>> = BTreeMap::new();
    for (ip, row) in rows {
        groups.entry(row).or_default().push(ip);
    }
    groups
        .into_iter()
        .map(|(row, ips)| {
            let since = previous
                .iter()
                .find(|p| {
                    p.state == row.state
                        && p.interfaces == row.interfaces
                        && p.message == row.message
                        && p.taken_from == row.taken_from
                })
                .and_then(|p| p.since.clone())
                .unwrap_or_else(|| now.clone());
            L2State {
                state: row.state,
                ips: ips.into_iter().collect(),
                interfaces: row.interfaces,
                since: Some(since),
                message: row.message,
                taken_from: row.taken_from,
            }
        })
        .collect()
}

#[cfg(test)]
mod grouping {
    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + second).unwrap())
    }

    #[test]
    fn ips_in_the_same_state_are_one_group_that_keeps_its_since() {
        let ip = |last: u8| IpAddr::from([192, 168, 1, last]);
        let eth0 = || vec!["eth0".to_string()];
        let mut rows = BTreeMap::new();
        for last in 10..=19 {
            rows.insert(ip(last), Row::new(L2Phase::Announcing, eth0(), None, None));
        }
        rows.insert(
            ip(30),
            Row::new(
                L2Phase::TakenOver,
                eth0(),
                Some("silent".into()),
                Some("node-b".into()),
            ),
        );
        rows.insert(ip(31), Row::new(L2Phase::Standby, Vec::new(), None, None));
        let first = grouped(rows.clone(), &[], at(0));
        assert_eq!(first.len(), 3);
        assert_eq!(
            serde_json::to_value(&first[0]).unwrap(),
            serde_json::json!({"state": "Announcing", "ips": ["192.168.1.10-192.168.1.19"],
                "interfaces": ["eth0"], "since": "2027-01-15T08:00:00Z"})
        );
        assert_eq!(first[2].taken_from.as_deref(), Some("node-b"));
        // One more IP answered later: the group grows and keeps its since;
        // a new group gets the time it appeared.
        rows.insert(ip(20), Row::new(L2Phase::Announcing, eth0(), None, None));
        rows.insert(
            ip(40),
            Row::new(L2Phase::Failed, Vec::new(), Some("no eth9".into()), None),
        );
        let later = grouped(rows, &first, at(60));
        let announcing = later
            .iter()
            .find(|g| g.state == L2Phase::Announcing)
            .unwrap();
        assert_eq!(announcing.ips.len(), 11);
        assert_eq!(announcing.since, Some(at(0)));
        let failed = later.iter().find(|g| g.state == L2Phase::Failed).unwrap();
        assert_eq!(failed.since, Some(at(60)));
    }
}
