//! The fast path's decisions, with no socket and no clock of its own: which
//! active nodes this standby may take IPs over from, when, and what to say
//! about the ones it may not. The socket loops feed it what happened (probes
//! answered, the active node's Lease as the apiserver shows it, the time) and
//! carry out what it returns.
//!
//! The rule is "no takeover without evidence":
//! - a standby arms its takeover for an active node only once it has heard that
//!   node's speaker answer; one that has never heard it (a host firewall on the
//!   probe port, a wrong probe address) leaves the IPs where they are and
//!   reports fast failover as unavailable — the slow path, the active node's
//!   Lease running out at the operator, still moves them if that node dies;
//! - once heard, `misses` unanswered probes in a row are taken as the active
//!   node gone, and its IPs are taken over at once;
//! - unless that node's Lease was seen renewed while it was silent — twice:
//!   a dead node can have one renewal in flight — then it is alive and only
//!   the probe path is cut: its IPs not taken yet stay where they are, and
//!   fast failover is reported as unavailable until an answer is heard again.
//!   IPs already taken are not given back: a node whose control plane works
//!   while its data-plane link is down (a second NIC) must not get them back,
//!   and a mid-way firewall change costs one move, no more.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// Fast-path settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Probe every this long.
    pub interval: Duration,
    /// Take over after this many intervals without an answer.
    pub misses: u32,
}

impl Settings {
    /// How long a silent active node gets before the standby takes over.
    pub fn deadline(&self) -> Duration {
        self.interval * self.misses
    }
}

/// An IP this node took over before the operator made it official.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The node it was taken from.
    pub from: String,
    /// Why, for people.
    pub why: String,
    /// When.
    pub since: SystemTime,
}

/// Why fast failover towards an active node cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Its speaker never answered a probe.
    NeverHeard,
    /// It stopped answering while its Lease kept being renewed.
    SilentWhileAlive,
}

impl Unavailable {
    /// The reason as written in the NodeAnnouncement status.
    pub fn reason(&self) -> &'static str {
        match self {
            Unavailable::NeverHeard => "NoProbeAnswer",
            Unavailable::SilentWhileAlive => "ProbesLostWhileAlive",
        }
    }

    /// A message a person can act on: the two nodes, the port and the fix.
    pub fn message(&self, active: &str, standby: &str, port: u16) -> String {
        match self {
            Unavailable::NeverHeard => format!(
                "fast failover unavailable between {active} and {standby}: no answer on UDP {port} — open it between nodes (failover falls back to the speaker Lease)"
            ),
            Unavailable::SilentWhileAlive => format!(
                "fast failover unavailable between {active} and {standby}: {active} stopped answering on UDP {port} while its Lease is renewed — open it between nodes (failover falls back to the speaker Lease)"
            ),
        }
    }
}

/// How the fast path stands towards one active node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Heard recently: a takeover is armed.
    Armed,
    /// Heard once, silent now, takeover pending or done.
    Silent,
    /// Not trusted: no takeover from this node.
    Unavailable(Unavailable),
    /// Just started following: not yet decided.
    Waiting,
}

/// What the tracker says about one active node, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The active node.
    pub node: String,
    /// How the fast path stands.
    pub reach: Reach,
}

/// What to do after an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// IPs to take over now.
    pub take: BTreeMap<IpAddr, Taken>,
    /// Nodes whose fast path has just become unavailable (for the counter).
    pub became_unavailable: Vec<String>,
}

impl Decision {
    /// Whether anything is to be done.
    pub fn is_empty(&self) -> bool {
        self.take.is_empty() && self.became_unavailable.is_empty()
    }
}

#[derive(Clone, Debug)]
struct Follow {
    ips: BTreeSet<IpAddr>,
    /// When this standby started following the node.
    since: Instant,
    /// The last answer heard, if any.
    heard: Option<Instant>,
    /// The Lease renewal time first seen while the node was silent (the value
    /// as text: compared, never read as a clock, so the nodes' clocks may
    /// differ).
    lease_while_silent: Option<String>,
    /// How many times its Lease changed while it was silent (twice: alive,
    /// probe path cut).
    renewals_while_silent: u8,
    /// Unavailable reported (so the counter counts transitions).
    unavailable: Option<Unavailable>,
}

/// The decisions of one standby speaker.
#[derive(Clone, Debug)]
pub struct Tracker {
    settings: Settings,
    follows: BTreeMap<String, Follow>,
    taken: BTreeMap<IpAddr, Taken>,
}

impl Tracker {
    /// Follows nothing yet.
    pub fn new(settings: Settings) -> Tracker {
        Tracker {
            settings,
            follows: BTreeMap::new(),
            taken: BTreeMap::new(),
        }
    }

    /// The active nodes to follow now and the IPs this node stands by for on
    /// each (`restart` names nodes whose probe address changed: what was heard
    /// at the old address says nothing of the new one). Taken IPs this node no
    /// longer stands by for are forgotten: the operator made them official or
    /// moved them.
    pub fn follow(
        &mut self,
        targets: &BTreeMap<String, BTreeSet<IpAddr>>,
        restart: &BTreeSet<String>,
        now: Instant,
    ) {
        self.follows.retain(|node, _| targets.contains_key(node));
        for (node, ips) in targets {
            let fresh = Follow {
                ips: BTreeSet::new(),
                since: now,
                heard: None,
                lease_while_silent: None,
                renewals_while_silent: 0,
                unavailable: None,
            };
            let follow = self.follows.entry(node.clone()).or_insert(fresh.clone());
            if restart.contains(node) {
                *follow = fresh;
            }
            follow.ips = ips.clone();
        }
        self.taken
            .retain(|ip, taken| targets.get(&taken.from).is_some_and(|ips| ips.contains(ip)));
    }

    /// A signed answer from `node`'s speaker. Returns whether that armed the
    /// takeover anew (first answer, or the first after being unavailable):
    /// worth reporting.
    pub fn answered(&mut self, node: &str, now: Instant) -> bool {
        let Some(follow) = self.follows.get_mut(node) else {
            return false;
        };
        let armed_anew = follow.heard.is_none() || follow.unavailable.is_some();
        follow.heard = Some(now);
        follow.lease_while_silent = None;
        follow.renewals_while_silent = 0;
        follow.unavailable = None;
        armed_anew
    }

    /// `node`'s Lease as the apiserver shows it now (`renew`: its renewTime as
    /// written). Only looked at while the node is silent.
    pub fn lease_seen(&mut self, node: &str, renew: &str, now: Instant) -> Decision {
        let deadline = self.settings.deadline();
        let Some(follow) = self.follows.get_mut(node) else {
            return Decision::default();
        };
        if !silent(follow, now, deadline) {
            return Decision::default();
        }
        match &follow.lease_while_silent {
            Some(last) if last == renew => {}
            Some(_) => {
                follow.renewals_while_silent = follow.renewals_while_silent.saturating_add(1);
                follow.lease_while_silent = Some(renew.to_string());
            }
            None => follow.lease_while_silent = Some(renew.to_string()),
        }
        self.tick(now)
    }

    /// Nodes heard once and silent now: the ones whose Lease is worth a look.
    pub fn suspects(&self, now: Instant) -> Vec<String> {
        let deadline = self.settings.deadline();
        self.follows
            .iter()
            .filter(|(_, f)| f.heard.is_some() && silent(f, now, deadline))
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// This node's own network failed (its probes could not be sent: the
    /// link is down). Silence heard meanwhile says nothing about the active
    /// nodes, so their clocks start again: an isolated standby never takes
    /// IPs from nodes that are fine.
    pub fn own_network_down(&mut self, now: Instant) {
        for follow in self.follows.values_mut() {
            if follow.heard.is_some() {
                follow.heard = Some(now);
            } else {
                follow.since = now;
            }
        }
    }

    /// The passing of time: takeovers that are due, and nodes that turned
    /// unavailable.
    pub fn tick(&mut self, now: Instant) -> Decision {
        let deadline = self.settings.deadline();
        let mut decision = Decision::default();
        for (node, follow) in self.follows.iter_mut() {
            let verdict = match follow.heard {
                None if now.duration_since(follow.since) > deadline => {
                    Some(Unavailable::NeverHeard)
                }
                None => None,
                Some(_) if follow.renewals_while_silent >= 2 => Some(Unavailable::SilentWhileAlive),
                Some(heard) if now.duration_since(heard) > deadline => {
                    for ip in &follow.ips {
                        if !self.taken.contains_key(ip) {
                            decision.take.insert(
                                *ip,
                                Taken {
                                    from: node.clone(),
                                    why: format!(
                                        "node {node} did not answer {} probes ({} ms)",
                                        self.settings.misses,
                                        deadline.as_millis()
                                    ),
                                    since: SystemTime::now(),
                                },
                            );
                        }
                    }
                    None
                }
                Some(_) => None,
            };
            if let Some(why) = &verdict
                && follow.unavailable.as_ref() != Some(why)
            {
                decision.became_unavailable.push(node.clone());
            }
            follow.unavailable = verdict;
        }
        self.taken
            .extend(decision.take.iter().map(|(ip, t)| (*ip, t.clone())));
        decision
    }

    /// Takes IPs handed over by `node` as it stops (a planned hand-off needs
    /// no probe evidence: the active node itself says so). Returns those new.
    pub fn handed_over(&mut self, node: &str, ips: &[IpAddr]) -> Vec<IpAddr> {
        let Some(follow) = self.follows.get(node) else {
            return Vec::new();
        };
        let mut new = Vec::new();
        for ip in ips.iter().filter(|ip| follow.ips.contains(ip)) {
            if !self.taken.contains_key(ip) {
                self.taken.insert(
                    *ip,
                    Taken {
                        from: node.to_string(),
                        why: format!("handed over by node {node} as it stopped"),
                        since: SystemTime::now(),
                    },
                );
                new.push(*ip);
            }
        }
        new
    }

    /// Whether this node stands by for any of `ips` on `node`.
    pub fn stands_by(&self, node: &str, ips: &[IpAddr]) -> bool {
        self.follows
            .get(node)
            .is_some_and(|f| ips.iter().any(|ip| f.ips.contains(ip)))
    }

    /// How many followed nodes the fast path is unavailable towards.
    pub fn unavailable(&self) -> usize {
        self.follows
            .values()
            .filter(|f| f.unavailable.is_some())
            .count()
    }

    /// IPs taken over and not yet made official.
    pub fn taken(&self) -> &BTreeMap<IpAddr, Taken> {
        &self.taken
    }

    /// Per followed node, the IPs this node stands by for and those it took.
    pub fn probes(&self) -> Vec<(String, Vec<IpAddr>, Vec<IpAddr>)> {
        self.follows
            .iter()
            .map(|(node, follow)| {
                let taken = follow
                    .ips
                    .iter()
                    .filter(|ip| self.taken.get(ip).is_some_and(|t| &t.from == node))
                    .copied()
                    .collect();
                (node.clone(), follow.ips.iter().copied().collect(), taken)
            })
            .collect()
    }

    /// How the fast path stands towards each followed node.
    pub fn reports(&self, now: Instant) -> Vec<Report> {
        let deadline = self.settings.deadline();
        self.follows
            .iter()
            .map(|(node, follow)| Report {
                node: node.clone(),
                reach: match (&follow.unavailable, follow.heard) {
                    (Some(why), _) => Reach::Unavailable(why.clone()),
                    (None, None) => Reach::Waiting,
                    (None, Some(_)) if silent(follow, now, deadline) => Reach::Silent,
                    (None, Some(_)) => Reach::Armed,
                },
            })
            .collect()
    }
}

fn silent(follow: &Follow, now: Instant, deadline: Duration) -> bool {
    follow
        .heard
        .is_some_and(|heard| now.duration_since(heard) > deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "node-a";

    fn settings() -> Settings {
        Settings {
            interval: Duration::from_millis(100),
            misses: 3,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    /// A standby for `ip(10)` and `ip(11)` on node-a, following from `t0`.
    fn following(t0: Instant) -> Tracker {
        let mut tracker = Tracker::new(settings());
        let targets = BTreeMap::from([(A.to_string(), BTreeSet::from([ip(10), ip(11)]))]);
        tracker.follow(&targets, &BTreeSet::new(), t0);
        tracker
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn reach(tracker: &Tracker, now: Instant) -> Reach {
        tracker.reports(now)[0].reach.clone()
    }

    #[test]
    fn never_heard_never_takes_over_and_says_why() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        assert_eq!(reach(&tracker, t0), Reach::Waiting);
        let mut unavailable = Vec::new();
        for step in 1..=100 {
            let decision = tracker.tick(ms(t0, step * 100));
            assert!(decision.take.is_empty(), "no takeover at {step}");
            unavailable.extend(decision.became_unavailable);
        }
        assert_eq!(unavailable, vec![A.to_string()], "reported once");
        assert_eq!(
            reach(&tracker, ms(t0, 10_000)),
            Reach::Unavailable(Unavailable::NeverHeard)
        );
        assert!(tracker.taken().is_empty());
        assert!(tracker.suspects(ms(t0, 10_000)).is_empty());
        assert_eq!(tracker.unavailable(), 1);
    }

    #[test]
    fn heard_then_silent_takes_over_after_the_misses() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, ms(t0, 5));
        assert_eq!(reach(&tracker, ms(t0, 10)), Reach::Armed);
        // Silent from 5 ms on: 300 ms later the IPs are due, not before.
        assert!(tracker.tick(ms(t0, 300)).take.is_empty());
        let decision = tracker.tick(ms(t0, 306));
        assert_eq!(
            decision.take.keys().copied().collect::<Vec<_>>(),
            vec![ip(10), ip(11)]
        );
        assert!(
            decision.take[&ip(10)]
                .why
                .contains("did not answer 3 probes")
        );
        assert_eq!(decision.take[&ip(10)].from, A);
        // Taken once.
        assert!(tracker.tick(ms(t0, 400)).take.is_empty());
        assert_eq!(tracker.taken().len(), 2);
        assert_eq!(reach(&tracker, ms(t0, 400)), Reach::Silent);
        // The probes tell the active node which IPs were taken.
        assert_eq!(
            tracker.probes(),
            vec![(A.to_string(), vec![ip(10), ip(11)], vec![ip(10), ip(11)])]
        );
    }

    #[test]
    fn answers_keep_the_takeover_away() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        for step in 0..50 {
            tracker.answered(A, ms(t0, step * 100));
            assert!(tracker.tick(ms(t0, step * 100 + 50)).is_empty());
        }
    }

    #[test]
    fn a_returning_active_racing_a_takeover_keeps_the_ip_with_the_taker() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, t0);
        assert_eq!(tracker.tick(ms(t0, 301)).take.len(), 2);
        // The active speaker comes back and answers: the taken IPs stay taken
        // (the probes carry them, and the active node yields), the fast path
        // is armed again.
        tracker.answered(A, ms(t0, 350));
        assert!(tracker.tick(ms(t0, 400)).is_empty());
        assert_eq!(tracker.taken().len(), 2);
        assert_eq!(reach(&tracker, ms(t0, 400)), Reach::Armed);
        // The operator makes it official: this node no longer stands by for
        // them, so they are forgotten here.
        tracker.follow(&BTreeMap::new(), &BTreeSet::new(), ms(t0, 500));
        assert!(tracker.taken().is_empty());
    }

    #[test]
    fn silent_while_its_lease_is_renewed_twice_is_alive_and_keeps_what_is_not_taken() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, t0);
        // Probes start being dropped; the takeover goes ahead (a dead node
        // and a cut probe path look the same for the first 300 ms).
        assert_eq!(tracker.tick(ms(t0, 301)).take.len(), 2);
        assert_eq!(tracker.suspects(ms(t0, 301)), vec![A.to_string()]);
        // The Lease as first seen while silent, then renewed twice: alive.
        assert!(tracker.lease_seen(A, "r1", ms(t0, 400)).is_empty());
        assert!(tracker.lease_seen(A, "r2", ms(t0, 5_400)).is_empty());
        let decision = tracker.lease_seen(A, "r3", ms(t0, 10_400));
        assert_eq!(decision.became_unavailable, vec![A.to_string()]);
        assert_eq!(
            reach(&tracker, ms(t0, 10_500)),
            Reach::Unavailable(Unavailable::SilentWhileAlive)
        );
        // What was taken stays taken (its data-plane link may be what is
        // down); a new IP of that node is not taken.
        assert_eq!(tracker.taken().len(), 2);
        let targets = BTreeMap::from([(A.to_string(), BTreeSet::from([ip(10), ip(11), ip(12)]))]);
        tracker.follow(&targets, &BTreeSet::new(), ms(t0, 11_000));
        assert!(tracker.tick(ms(t0, 12_000)).take.is_empty());
        // Answers again (the firewall rule was removed): armed again, and a
        // later silence is a takeover once more.
        tracker.answered(A, ms(t0, 13_000));
        assert_eq!(reach(&tracker, ms(t0, 13_050)), Reach::Armed);
        assert_eq!(tracker.tick(ms(t0, 13_301)).take.len(), 1);
    }

    #[test]
    fn one_renewal_in_flight_from_a_dead_node_is_not_life() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, t0);
        assert_eq!(tracker.tick(ms(t0, 301)).take.len(), 2);
        // The renewal it sent just before it died lands after the first look.
        tracker.lease_seen(A, "before", ms(t0, 350));
        tracker.lease_seen(A, "its last", ms(t0, 1_350));
        for step in 2..10 {
            tracker.lease_seen(A, "its last", ms(t0, 350 + step * 1000));
        }
        assert_eq!(reach(&tracker, ms(t0, 10_000)), Reach::Silent);
        assert_eq!(tracker.taken().len(), 2);
    }

    #[test]
    fn a_lease_that_stays_the_same_while_silent_is_a_dead_node() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, t0);
        assert_eq!(tracker.tick(ms(t0, 301)).take.len(), 2);
        for step in 1..10 {
            let decision = tracker.lease_seen(A, "renewed once", ms(t0, 301 + step * 1000));
            assert!(decision.became_unavailable.is_empty());
        }
        assert_eq!(tracker.taken().len(), 2);
    }

    #[test]
    fn a_lease_seen_while_answering_means_nothing() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, t0);
        tracker.lease_seen(A, "one", ms(t0, 50));
        tracker.lease_seen(A, "two", ms(t0, 60));
        assert_eq!(tracker.tick(ms(t0, 301)).take.len(), 2);
    }

    #[test]
    fn firewall_opened_after_never_heard_arms_the_takeover() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.tick(ms(t0, 1_000));
        assert_eq!(
            reach(&tracker, ms(t0, 1_000)),
            Reach::Unavailable(Unavailable::NeverHeard)
        );
        assert!(tracker.answered(A, ms(t0, 2_000)), "armed anew: reported");
        assert!(!tracker.answered(A, ms(t0, 2_050)), "already armed");
        assert!(tracker.tick(ms(t0, 2_100)).is_empty());
        assert_eq!(reach(&tracker, ms(t0, 2_100)), Reach::Armed);
        assert_eq!(tracker.tick(ms(t0, 2_351)).take.len(), 2);
    }

    #[test]
    fn a_new_probe_address_starts_from_never_heard() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, t0);
        let targets = BTreeMap::from([(A.to_string(), BTreeSet::from([ip(10)]))]);
        tracker.follow(&targets, &BTreeSet::from([A.to_string()]), ms(t0, 100));
        assert!(tracker.tick(ms(t0, 1_000)).take.is_empty());
        assert_eq!(
            reach(&tracker, ms(t0, 1_000)),
            Reach::Unavailable(Unavailable::NeverHeard)
        );
    }

    #[test]
    fn a_hand_off_needs_no_probe_evidence_but_only_covers_what_this_node_stands_by_for() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        assert_eq!(tracker.handed_over(A, &[ip(10), ip(99)]), vec![ip(10)]);
        assert_eq!(tracker.handed_over(A, &[ip(10)]), Vec::<IpAddr>::new());
        assert!(tracker.handed_over("node-z", &[ip(11)]).is_empty());
        assert!(tracker.taken()[&ip(10)].why.contains("handed over"));
        assert!(tracker.stands_by(A, &[ip(11)]));
        assert!(!tracker.stands_by(A, &[ip(99)]));
    }

    #[test]
    fn a_standby_whose_own_link_is_down_takes_nothing() {
        let t0 = Instant::now();
        let mut tracker = following(t0);
        tracker.answered(A, t0);
        // Its own probes fail to go out for two seconds: no takeover.
        for step in 1..=20 {
            tracker.own_network_down(ms(t0, step * 100));
            assert!(tracker.tick(ms(t0, step * 100 + 50)).take.is_empty());
        }
        // Back, and the active node really is silent: taken after the misses.
        assert!(tracker.tick(ms(t0, 2_200)).take.is_empty());
        assert_eq!(tracker.tick(ms(t0, 2_301)).take.len(), 2);
    }

    #[test]
    fn messages_name_both_nodes_the_port_and_the_fix() {
        assert_eq!(
            Unavailable::NeverHeard.message("node-b", "node-c", 7473),
            "fast failover unavailable between node-b and node-c: no answer on UDP 7473 — open it between nodes (failover falls back to the speaker Lease)"
        );
        assert!(
            Unavailable::SilentWhileAlive
                .message("node-b", "node-c", 7473)
                .contains("while its Lease is renewed")
        );
    }
}
