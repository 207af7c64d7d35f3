//! The chaos run's pure half: a seeded schedule of faults, what each fault
//! is allowed to cost the clients, and the judgement of what the clients, the
//! router and the Pods showed against that. The real-cluster scenario
//! (`e2e/tests/chaos.rs`) injects the faults and collects the samples; every
//! decision about them is made here, on plain values, and tested on tables.

use std::fmt;
use std::time::Duration;

/// A small, seeded generator (SplitMix64): the same seed gives the same
/// schedule on every machine.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// Whole seconds in `low..=high`.
    pub fn seconds(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_secs(self.between(low, high))
    }
}

/// One fault. Nodes are numbered from 1, as the cluster names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every process of the node killed at once (a power cut), started again
    /// after `down`.
    NodeCrash {
        /// The node.
        node: usize,
        /// How long it stays off.
        down: Duration,
    },
    /// The node's LAN link down for `down`, then up.
    LinkFlap {
        /// The node.
        node: usize,
        /// How long the link stays down.
        down: Duration,
    },
    /// The node's speaker process killed (SIGKILL); the kubelet restarts it.
    SpeakerKill {
        /// The node.
        node: usize,
    },
    /// The operator replica holding the leader Lease killed (SIGKILL).
    LeaderKill,
    /// A webhook replica killed (SIGKILL).
    WebhookKill,
    /// kube-apiserver stopped (SIGSTOP) for `hold`, then continued.
    ApiserverFreeze {
        /// How long it is frozen.
        hold: Duration,
    },
    /// kube-apiserver stopped (SIGTERM, as a static Pod restart does) and
    /// started again.
    ApiserverRestart,
    /// etcd killed (SIGKILL) and started again after `down`.
    EtcdRestart {
        /// How long it stays off.
        down: Duration,
    },
    /// UDP port 7473 (fast failover) dropped both ways on the node for
    /// `hold`, then restored.
    FailoverDrop {
        /// The node.
        node: usize,
        /// How long the port is dropped.
        hold: Duration,
    },
    /// `percent` of the packets through the node's LAN link dropped at
    /// random for `hold`.
    PacketLoss {
        /// The node.
        node: usize,
        /// The share dropped.
        percent: u64,
        /// How long.
        hold: Duration,
    },
}

/// Every kind of fault, by the name the schedule prints.
pub const KINDS: [&str; 10] = [
    "node-crash",
    "link-flap",
    "speaker-kill",
    "leader-kill",
    "webhook-kill",
    "apiserver-freeze",
    "apiserver-restart",
    "etcd-restart",
    "failover-drop",
    "packet-loss",
];

impl Fault {
    /// The fault of kind `kind` (one of [`KINDS`]), its node and times drawn
    /// from `rng`.
    pub fn draw(kind: &str, rng: &mut Rng, nodes: usize) -> Fault {
        let node = rng.between(1, nodes as u64) as usize;
        match kind {
            "node-crash" => Fault::NodeCrash {
                node,
                down: rng.seconds(3, 20),
            },
            "link-flap" => Fault::LinkFlap {
                node,
                down: rng.seconds(2, 10),
            },
            "speaker-kill" => Fault::SpeakerKill { node },
            "leader-kill" => Fault::LeaderKill,
            "webhook-kill" => Fault::WebhookKill,
            "apiserver-freeze" => Fault::ApiserverFreeze {
                hold: rng.seconds(10, 40),
            },
            "apiserver-restart" => Fault::ApiserverRestart,
            "etcd-restart" => Fault::EtcdRestart {
                down: rng.seconds(1, 10),
            },
            "failover-drop" => Fault::FailoverDrop {
                node,
                hold: rng.seconds(5, 20),
            },
            "packet-loss" => Fault::PacketLoss {
                node,
                percent: rng.between(5, 20),
                hold: rng.seconds(10, 30),
            },
            other => panic!("no fault kind {other}"),
        }
    }

    /// Its kind, as in [`KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::NodeCrash { .. } => "node-crash",
            Fault::LinkFlap { .. } => "link-flap",
            Fault::SpeakerKill { .. } => "speaker-kill",
            Fault::LeaderKill => "leader-kill",
            Fault::WebhookKill => "webhook-kill",
            Fault::ApiserverFreeze { .. } => "apiserver-freeze",
            Fault::ApiserverRestart => "apiserver-restart",
            Fault::EtcdRestart { .. } => "etcd-restart",
            Fault::FailoverDrop { .. } => "failover-drop",
            Fault::PacketLoss { .. } => "packet-loss",
        }
    }

    /// The node whose data path the fault hurts: its BGP sessions may be
    /// reset, its Pods may restart. `None` for a fault of the control plane
    /// or one that leaves every data path whole (UDP 7473 dropped: the
    /// failover protocol's own decision may move IPs, but no session of that
    /// node has a reason to go down).
    pub fn hurts(&self) -> Option<usize> {
        match self {
            Fault::NodeCrash { node, .. }
            | Fault::LinkFlap { node, .. }
            | Fault::SpeakerKill { node }
            | Fault::PacketLoss { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// Whether clients must not notice the fault at all: the control plane
    /// only, so not a single request may fail.
    pub fn control_plane(&self) -> bool {
        matches!(
            self,
            Fault::LeaderKill
                | Fault::WebhookKill
                | Fault::ApiserverFreeze { .. }
                | Fault::ApiserverRestart
                | Fault::EtcdRestart { .. }
        )
    }

    /// How long after the fault is undone requests may still fail because
    /// of it. A crashed node's Pods start again and pass their readiness
    /// probe, and kube-proxy on every node learns their endpoints anew:
    /// Kubernetes' own time, not ferrolb's.
    pub fn tail(&self) -> Duration {
        match self {
            Fault::NodeCrash { .. } => Duration::from_secs(60),
            Fault::LinkFlap { .. } | Fault::SpeakerKill { .. } => Duration::from_secs(10),
            Fault::FailoverDrop { .. } | Fault::PacketLoss { .. } => Duration::from_secs(5),
            _ => Duration::ZERO,
        }
    }

    /// The longest time a client may go without a single answer during the
    /// fault's window: the fast failover's detection (about 1 s), BFD's
    /// (3 × 300 ms) and the router's route change, with margin for a busy
    /// two-core machine. For packet loss: a lost SYN is retransmitted
    /// after 1 s, the probe's own timeout.
    pub fn gap(&self) -> Duration {
        if self.control_plane() {
            Duration::ZERO
        } else {
            Duration::from_secs(3)
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NodeCrash { node, down } => write!(f, "node-crash node{node} for {down:?}"),
            Fault::LinkFlap { node, down } => write!(f, "link-flap node{node} for {down:?}"),
            Fault::SpeakerKill { node } => write!(f, "speaker-kill node{node}"),
            Fault::ApiserverFreeze { hold } => write!(f, "apiserver-freeze for {hold:?}"),
            Fault::EtcdRestart { down } => write!(f, "etcd-restart after {down:?}"),
            Fault::FailoverDrop { node, hold } => {
                write!(f, "failover-drop node{node} for {hold:?}")
            }
            Fault::PacketLoss {
                node,
                percent,
                hold,
            } => write!(f, "packet-loss {percent}% node{node} for {hold:?}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// The schedule for `seed`: `count` faults on a cluster of `nodes` nodes.
/// The first ones are every kind once, in an order the seed shuffles, so a
/// short run still meets each fault; then kinds drawn at random.
pub fn schedule(seed: u64, count: usize, nodes: usize) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let mut kinds: Vec<&str> = KINDS.to_vec();
    for i in (1..kinds.len()).rev() {
        let j = rng.between(0, i as u64) as usize;
        kinds.swap(i, j);
    }
    (0..count)
        .map(|i| {
            let kind = match kinds.get(i) {
                Some(kind) => *kind,
                None => KINDS[rng.between(0, KINDS.len() as u64 - 1) as usize],
            };
            Fault::draw(kind, &mut rng, nodes)
        })
        .collect()
}

/// One client request: when it was sent (since the run began) and whether
/// it was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// When it was sent.
    pub at: Duration,
    /// Whether it was answered.
    pub ok: bool,
}

/// Where a fault may cost requests: from its start until `tail` after it
/// was undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When the fault began.
    pub start: Duration,
    /// When it was undone.
    pub undone: Duration,
    /// How long after that its effects may last.
    pub tail: Duration,
}

impl Window {
    /// Its end.
    pub fn end(&self) -> Duration {
        self.undone + self.tail
    }

    fn holds(&self, at: Duration) -> bool {
        at >= self.start && at <= self.end()
    }
}

/// What one client saw over a stretch of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests that failed.
    pub failed: usize,
    /// Requests sent.
    pub sent: usize,
    /// The longest time between two answered requests (or a bound of the
    /// stretch and an answered request) in which some request failed.
    pub gap: Duration,
}

/// What `requests` (sorted by time) saw in `[from, to]`. The gap counts
/// only stretches that hold a failure: a quiet client is no outage.
pub fn tally(requests: &[Request], from: Duration, to: Duration) -> Tally {
    let mut tally = Tally::default();
    let mut last_ok = from;
    let mut failing = false;
    for r in requests.iter().filter(|r| r.at >= from && r.at <= to) {
        tally.sent += 1;
        if r.ok {
            if failing {
                tally.gap = tally.gap.max(r.at - last_ok);
            }
            last_ok = r.at;
            failing = false;
        } else {
            tally.failed += 1;
            failing = true;
        }
    }
    if failing {
        tally.gap = tally.gap.max(to - last_ok);
    }
    tally
}

/// The failed requests no window explains.
pub fn unexplained(requests: &[Request], windows: &[Window]) -> Vec<Duration> {
    requests
        .iter()
        .filter(|r| !r.ok && !windows.iter().any(|w| w.holds(r.at)))
        .map(|r| r.at)
        .collect()
}

/// ARP answers for one IP, in order: when, and from which MAC.
pub type Answers = [(Duration, String)];

/// How often, in `[from, to]`, a MAC answered again within a second after
/// another MAC had answered since its last answer (A, B, A): two nodes
/// answering for one IP. One takeover shows none, or one where the new
/// node's gratuitous ARP crosses the old node's last answer.
pub fn two_macs(answers: &Answers, from: Duration, to: Duration) -> usize {
    let seen: Vec<&(Duration, String)> = answers
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    seen.windows(3)
        .filter(|w| {
            w[0].1 == w[2].1 && w[0].1 != w[1].1 && w[2].0 - w[0].0 <= Duration::from_secs(1)
        })
        .count()
}

/// How often the MAC answering changed in `[from, to]`: the IP's moves.
pub fn moves(answers: &Answers, from: Duration, to: Duration) -> usize {
    let seen: Vec<&String> = answers
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|(_, mac)| mac)
        .collect();
    seen.windows(2).filter(|w| w[0] != w[1]).count()
}

/// How many crossings of [`two_macs`] a fault's window may show: a
/// takeover's gratuitous ARP and the move back each cross at most once.
pub const CROSSINGS_PER_WINDOW: usize = 2;

/// One ferrolb Pod, as the restart check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    /// Its name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// The restarts of its containers, summed.
    pub restarts: u64,
}

/// The Pods that restarted, went or came between `before` and `after`
/// when none of them was allowed to: `allowed` says, by Pod and node,
/// which the fault killed.
pub fn unexpected_restarts(
    before: &[PodState],
    after: &[PodState],
    allowed: impl Fn(&PodState) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for old in before {
        match after.iter().find(|p| p.name == old.name) {
            Some(new) if new.restarts == old.restarts => {}
            Some(_) if allowed(old) => {}
            Some(new) => out.push(format!(
                "{} on {} restarted ({} -> {})",
                old.name, old.node, old.restarts, new.restarts
            )),
            None if allowed(old) => {}
            None => out.push(format!("{} on {} went", old.name, old.node)),
        }
    }
    for new in after {
        if !before.iter().any(|p| p.name == new.name) && !allowed(new) {
            out.push(format!("{} on {} is new", new.name, new.node));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_seed_gives_one_schedule_and_a_short_run_meets_every_kind() {
        let a = schedule(42, 25, 3);
        assert_eq!(a, schedule(42, 25, 3), "replayable from its seed");
        assert_ne!(a, schedule(43, 25, 3), "another seed, another schedule");
        let mut first: Vec<&str> = a[..KINDS.len()].iter().map(Fault::kind).collect();
        first.sort();
        let mut kinds = KINDS.to_vec();
        kinds.sort();
        assert_eq!(first, kinds, "the first ten are every kind once");
        for fault in &a {
            if let Some(node) = fault.hurts() {
                assert!((1..=3).contains(&node), "{fault}");
            }
        }
        assert_eq!(
            schedule(42, 3, 3),
            a[..3].to_vec(),
            "a shorter run is the longer run's start"
        );
    }

    #[test]
    fn the_gap_counts_only_stretches_with_failures() {
        let requests: Vec<Request> = [
            (1.0, true),
            (1.02, false),
            (1.04, false),
            (1.5, true),
            (4.0, true),
            (4.1, false),
        ]
        .iter()
        .map(|(t, ok)| Request { at: s(*t), ok: *ok })
        .collect();
        let all = tally(&requests, s(0.0), s(5.0));
        assert_eq!((all.failed, all.sent), (3, 6));
        // 1.0 -> 1.5 held failures; 1.5 -> 4.0 was quiet, not an outage; the
        // failure at 4.1 runs to the stretch's end.
        assert_eq!(all.gap, s(1.0));
        let early = tally(&requests, s(0.0), s(2.0));
        assert_eq!((early.failed, early.gap), (2, s(0.5)));
    }

    #[test]
    fn failures_outside_every_window_are_unexplained() {
        let at = |t: f64, ok: bool| Request { at: s(t), ok };
        let requests = [
            at(1.0, false),
            at(10.0, false),
            at(12.5, false),
            at(30.0, true),
        ];
        let windows = [Window {
            start: s(9.0),
            undone: s(11.0),
            tail: s(2.0),
        }];
        assert_eq!(unexplained(&requests, &windows), vec![s(1.0)]);
    }

    #[test]
    fn a_takeover_is_one_move_and_two_answering_macs_cross_again_and_again() {
        let answers = |macs: &[&str]| -> Vec<(Duration, String)> {
            macs.iter()
                .enumerate()
                .map(|(i, m)| (s(i as f64 * 0.01), m.to_string()))
                .collect()
        };
        let takeover = answers(&["a", "a", "a", "b", "b", "b"]);
        assert_eq!(two_macs(&takeover, s(0.0), s(10.0)), 0);
        assert_eq!(moves(&takeover, s(0.0), s(10.0)), 1);
        let crossed = answers(&["a", "a", "b", "a", "b", "b"]);
        assert_eq!(two_macs(&crossed, s(0.0), s(10.0)), 2);
        let split = answers(&["a", "b", "a", "b", "a", "b", "a", "b"]);
        assert!(two_macs(&split, s(0.0), s(10.0)) > CROSSINGS_PER_WINDOW);
        // A move back long after is two moves, not two MACs at once.
        let back = vec![
            (s(0.0), "a".to_string()),
            (s(1.0), "b".to_string()),
            (s(30.0), "a".to_string()),
        ];
        assert_eq!(two_macs(&back, s(0.0), s(40.0)), 0);
    }

    #[test]
    fn only_the_killed_pods_may_restart() {
        let pod = |name: &str, node: &str, restarts: u64| PodState {
            name: name.into(),
            node: node.into(),
            restarts,
        };
        let before = [
            pod("speaker-a", "node1", 0),
            pod("speaker-b", "node2", 0),
            pod("operator-x", "node2", 1),
        ];
        let after = [
            pod("speaker-a", "node1", 1),
            pod("speaker-b", "node2", 0),
            pod("operator-x", "node2", 2),
            pod("operator-y", "node3", 0),
        ];
        let on_node1 = |p: &PodState| p.node == "node1";
        assert_eq!(
            unexpected_restarts(&before, &after, on_node1),
            vec![
                "operator-x on node2 restarted (1 -> 2)".to_string(),
                "operator-y on node3 is new".to_string()
            ]
        );
        assert!(unexpected_restarts(&before, &before, |_| false).is_empty());
    }

    #[test]
    fn control_plane_faults_may_cost_nothing_and_data_faults_are_bounded() {
        let mut rng = Rng::new(7);
        for kind in KINDS {
            let fault = Fault::draw(kind, &mut rng, 3);
            assert_eq!(fault.kind(), kind);
            if fault.control_plane() {
                assert_eq!(
                    (fault.gap(), fault.tail(), fault.hurts()),
                    (Duration::ZERO, Duration::ZERO, None)
                );
            } else {
                assert!(fault.gap() > Duration::ZERO, "{fault}");
            }
        }
    }
}
