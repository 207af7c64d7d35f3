//! Every condition reason and message about announcing, and the
//! NodeAnnouncement specs and BGPPeer status the plan writes: pure functions
//! of the plan and of what the speakers report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferrolb_api::address::format_ip;
use ferrolb_api::bgppeer::BGPPeerStatus;
use ferrolb_api::constants::condition::reason;
use ferrolb_api::nodeannouncement::{
    BgpSession, BgpState, FailoverPhase, KERNEL_ANSWERS_ARP, L2Group, L2Phase, L2Role,
};
use ferrolb_api::{BGPPeer, NodeAnnouncement, NodeAnnouncementSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::cluster::Ours;
use crate::plan::allocation::{Assignment, ServiceKey};
use crate::plan::announce::{self, Announced, Entry, Outcome, Role, bgp};
use crate::plan::status::Verdict;

/// What the speakers report about failovers, per IP: the node answering for
/// it after a takeover, and the node it was taken from (which then neither
/// answers nor stands by for that IP while the report stands; its other IPs
/// and its BGP sessions are not touched).
#[derive(Clone, Debug, Default)]
pub struct Takeovers {
    /// IP → the node it was taken from.
    pub from: BTreeMap<IpAddr, String>,
    /// IP → the node that took it.
    pub by: BTreeMap<IpAddr, String>,
}

/// The Event text for a Service whose layer 2 IP is about to answer from
/// another node, and why: the old node stopped answering probes (a standby
/// took the IP over), or it can no longer announce.
pub fn moved(
    ips: &[IpAddr],
    outcome: Option<&Outcome>,
    current: &BTreeMap<IpAddr, String>,
    takeovers: &Takeovers,
    nodes: &[announce::Node],
) -> Option<String> {
    let Some(Outcome::Announced { node: new, .. }) = outcome else {
        return None;
    };
    let moves: Vec<String> = ips
        .iter()
        .filter_map(|ip| {
            let text = format_ip(*ip);
            let old = current.get(ip).filter(|old| *old != new)?;
            let why = if takeovers.by.get(ip) == Some(new) {
                format!("{old} stopped answering probes and {new} took the IP over")
            } else {
                match nodes.iter().find(|n| &n.name == old) {
                    None => format!("{old} is gone"),
                    Some(node) => match announce::unfit(node) {
                        Some(why) => format!("{old}: {why}"),
                        None => "the announcing nodes changed".to_string(),
                    },
                }
            };
            Some(format!("{text} moved from {old} to {new}: {why}"))
        })
        .collect();
    (!moves.is_empty()).then(|| moves.join("; "))
}

/// A Service with IPs, as the planner sees it; `current` is the node that
/// answers for its first IP now (the one that took it over, if one did),
/// `standbys` the node standing by for each IP now.
pub fn announced(
    service: &Ours,
    assignments: &[Assignment],
    endpoints: &BTreeMap<ServiceKey, BTreeSet<String>>,
    current: &BTreeMap<IpAddr, String>,
    standbys: &BTreeMap<IpAddr, String>,
    takeovers: &Takeovers,
) -> Announced {
    let current = assignments.first().and_then(|first| {
        takeovers
            .by
            .get(&first.ip)
            .or_else(|| current.get(&first.ip))
            .cloned()
    });
    Announced {
        labels: service.object.metadata.labels.clone().unwrap_or_default(),
        standby: assignments
            .first()
            .and_then(|first| standbys.get(&first.ip))
            .cloned(),
        avoid: assignments
            .first()
            .and_then(|first| takeovers.from.get(&first.ip))
            .cloned(),
        ips: assignments
            .iter()
            .map(|a| (a.ip, a.announced_as()))
            .collect(),
        local: service.local,
        endpoint_nodes: endpoints.get(&service.key).cloned().unwrap_or_default(),
        service: service.key.clone(),
        current,
    }
}

/// Per IP, the node standing by for it.
pub fn standbys(plan: &announce::Plan) -> BTreeMap<IpAddr, String> {
    plan.nodes
        .iter()
        .flat_map(|(node, entries)| {
            entries
                .iter()
                .filter(|e| matches!(e.role, Role::Standby(_)))
                .map(move |e| (e.ip, node.clone()))
        })
        .collect()
}

/// The NodeAnnouncement spec for a node's layer 2 entries and BGP sessions.
/// The entries go in groups, one per role, other node, interfaces and
/// arming; each group carries the other speaker's probe address: the active
/// node's for a standby group, the standby's for an active one. `arming`
/// lists this node's standby IPs it only arms for (see
/// [`announce::arming`](crate::plan::announce::arming)).
pub fn spec(
    node: &str,
    entries: &[Entry],
    sessions: &[BgpSession],
    probes: &BTreeMap<String, SocketAddr>,
    standbys: &BTreeMap<IpAddr, String>,
    arming: &BTreeSet<IpAddr>,
) -> NodeAnnouncementSpec {
    // (role, the other node, interfaces, arming) → IPs
    type Group<'a> = (L2Role, Option<&'a str>, &'a [String], bool);
    let mut groups: BTreeMap<Group, Vec<IpAddr>> = BTreeMap::new();
    for e in entries {
        let (role, other) = match &e.role {
            Role::Active => (L2Role::Active, standbys.get(&e.ip).map(String::as_str)),
            Role::Standby(active) => (L2Role::Standby, Some(active.as_str())),
        };
        let arms = role == L2Role::Standby && arming.contains(&e.ip);
        groups
            .entry((role, other, e.interfaces.as_slice(), arms))
            .or_default()
            .push(e.ip);
    }
    NodeAnnouncementSpec {
        node: Some(node.to_string()),
        l2: groups
            .into_iter()
            .map(|((role, other, interfaces, arming), ips)| L2Group {
                role,
                arming,
                standby_for: other
                    .filter(|_| role == L2Role::Standby)
                    .map(str::to_string),
                standby: other.filter(|_| role == L2Role::Active).map(str::to_string),
                probe: other.and_then(|n| probes.get(n)).copied(),
                interfaces: interfaces.to_vec(),
                ips: ips.into_iter().collect(),
            })
            .collect(),
        bgp: sessions.to_vec(),
    }
}

/// What a node's speaker reports for `ips`.
enum L2Report {
    /// It answers for every one.
    Answering,
    /// It applied the spec and cannot answer for one: why.
    Failed(String),
    /// Not reported yet.
    Pending,
}

fn reported(announcement: Option<&NodeAnnouncement>, ips: &[IpAddr]) -> L2Report {
    let Some(announcement) = announcement else {
        return L2Report::Pending;
    };
    let Some(status) = &announcement.status else {
        return L2Report::Pending;
    };
    let state = |ip: &IpAddr, phases: &[L2Phase]| {
        status
            .l2
            .iter()
            .find(|s| phases.contains(&s.state) && s.ips.contains(ip))
    };
    if ips
        .iter()
        .all(|ip| state(ip, &[L2Phase::Announcing, L2Phase::TakenOver]).is_some())
    {
        return L2Report::Answering;
    }
    if status.observed_generation == announcement.metadata.generation
        && let Some(failed) = ips.iter().find_map(|ip| state(ip, &[L2Phase::Failed]))
    {
        return L2Report::Failed(failed.message.clone().unwrap_or_default());
    }
    L2Report::Pending
}

/// A session as a node's speaker reports it: `Ok` when Established on the
/// current spec, else what is wrong.
/// Why a session is not carrying routes.
enum NotUp {
    /// The speaker has not caught up with the spec yet.
    Pending(String),
    /// The speaker applied it and the session is down.
    Down(String),
}

fn session_report(announcement: Option<&NodeAnnouncement>, peer: &str) -> Result<(), NotUp> {
    let pending = |why: &str| Err(NotUp::Pending(why.to_string()));
    let Some(announcement) = announcement else {
        return pending("no NodeAnnouncement yet");
    };
    let Some(status) = &announcement.status else {
        return pending("its speaker has not reported yet");
    };
    if status.observed_generation != announcement.metadata.generation
        || !announcement.spec.bgp.iter().any(|s| s.name == peer)
    {
        return pending("its speaker has not applied the latest announcement yet");
    }
    match status.bgp.iter().find(|s| s.name == peer) {
        Some(session) if session.state == BgpState::Established => Ok(()),
        Some(session) => Err(NotUp::Down(match &session.last_error {
            Some(error) => format!("{:?}: {error}", session.state),
            None => format!("{:?}", session.state),
        })),
        None => pending("its speaker has not reported the session yet"),
    }
}

impl NotUp {
    fn text(&self) -> &str {
        match self {
            NotUp::Pending(why) | NotUp::Down(why) => why,
        }
    }
}

/// The BGP part of the Announced verdict.
fn bgp_verdict(
    outcome: &bgp::Outcome,
    listed: &str,
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    summaries: &Summaries,
) -> Option<Verdict> {
    match outcome {
        bgp::Outcome::NoAdvertisement | bgp::Outcome::NotSelected(_) => None,
        bgp::Outcome::NoLocalEndpoints => Some(Verdict::no(
            reason::NO_LOCAL_ENDPOINTS,
            "BGP: externalTrafficPolicy is Local and no eligible node has a ready endpoint of this Service",
        )),
        bgp::Outcome::NoEligibleNode(why) => Some(Verdict::no(
            reason::NO_ELIGIBLE_NODE,
            format!("BGP: no node may advertise {listed}: {why}"),
        )),
        bgp::Outcome::Advertised(sessions) => {
            let summary = summaries.of(sessions, announcements);
            let down = &summary.down;
            Some(if summary.up > 0 {
                let bfd = match summary.bfd {
                    (0, _) => String::new(),
                    (guarded, up) => format!(", BFD Up on {up} of {guarded}"),
                };
                Verdict::yes(
                    reason::ANNOUNCED,
                    format!(
                        "BGP: {listed} advertised by node {} to {} peer(s) ({} of {} sessions Established{bfd})",
                        summary.nodes, summary.peers, summary.up, summary.total
                    ),
                )
            } else if summary.all_pending {
                Verdict::no(
                    reason::NOT_YET_APPLIED,
                    format!(
                        "BGP: {listed} is to be advertised on {} session(s); {down}",
                        summary.total,
                    ),
                )
            } else {
                Verdict::no(
                    reason::NO_ESTABLISHED_SESSION,
                    format!("BGP: no session that would carry {listed} is Established: {down}",),
                )
            })
        }
    }
}

/// How a set of sessions stands, as the BGP verdict tells it.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// The nodes with an Established session, some named.
    nodes: String,
    /// Peers with an Established session.
    peers: usize,
    /// Established sessions.
    up: usize,
    /// Sessions in all.
    total: usize,
    /// Every session not up only waits for its speaker.
    all_pending: bool,
    /// Some sessions not up, with why.
    down: String,
    /// Established sessions guarded by BFD, and of those with BFD Up.
    bfd: (usize, usize),
}

/// The BFD state a node's speaker reports for its session with `peer`:
/// None when the session has no BFD, else whether it is Up.
fn bfd_up(announcement: Option<&NodeAnnouncement>, peer: &str) -> Option<bool> {
    let session = announcement?
        .status
        .as_ref()?
        .bgp
        .iter()
        .find(|s| s.name == peer)?;
    session
        .bfd
        .as_ref()
        .map(|b| b.state == ferrolb_api::nodeannouncement::BfdState::Up)
}

/// The sessions' state, worked out once per set of sessions in a pass: the
/// Services of one advertisement share their set, so a thousand Services
/// over a thousand nodes cost a thousand looks, not a million.
#[derive(Debug, Default)]
pub struct Summaries {
    sets: std::cell::RefCell<BTreeMap<usize, Arc<Summary>>>,
    kernel: std::cell::OnceCell<Arc<str>>,
}

impl Summaries {
    /// The note on nodes whose kernel answers ARP for Service IPs too (empty
    /// when none does): the same for every layer 2 Service, worked out once.
    pub fn kernel_note(&self, announcements: &BTreeMap<String, Arc<NodeAnnouncement>>) -> Arc<str> {
        self.kernel
            .get_or_init(|| {
                let answering: Vec<&str> = announcements
                    .iter()
                    .filter(|(_, a)| {
                        a.status.as_ref().is_some_and(|s| {
                            s.problems.iter().any(|p| p.reason == KERNEL_ANSWERS_ARP)
                        })
                    })
                    .map(|(node, _)| node.as_str())
                    .collect();
                if answering.is_empty() {
                    return "".into();
                }
                format!(
                    "; the kernel of node {} answers ARP for Service IPs too (kube-proxy in IPVS mode without strictARP), so clients may reach any of them: set strictARP: true in kube-proxy's configuration",
                    name_some(&answering)
                )
                .into()
            })
            .clone()
    }

    /// How a set of sessions stands this pass.
    pub fn of(
        &self,
        sessions: &Arc<BTreeSet<(String, String)>>,
        announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    ) -> Arc<Summary> {
        let key = std::sync::Arc::as_ptr(sessions) as usize;
        if let Some(summary) = self.sets.borrow().get(&key) {
            return summary.clone();
        }
        let mut up: Vec<&(String, String)> = Vec::new();
        let mut all_pending = true;
        let mut down: Vec<String> = Vec::new();
        for session in sessions.iter() {
            let (node, peer) = session;
            match session_report(announcements.get(node).map(|a| a.as_ref()), peer) {
                Ok(()) => up.push(session),
                Err(why) => {
                    all_pending &= matches!(why, NotUp::Pending(_));
                    down.push(format!("{node} to {peer}: {}", why.text()));
                }
            }
        }
        let nodes: BTreeSet<&str> = up.iter().map(|(n, _)| n.as_str()).collect();
        let peers: BTreeSet<&str> = up.iter().map(|(_, p)| p.as_str()).collect();
        let guarded: Vec<bool> = up
            .iter()
            .filter_map(|(node, peer)| bfd_up(announcements.get(node).map(|a| a.as_ref()), peer))
            .collect();
        let summary = Arc::new(Summary {
            nodes: name_some(&nodes.into_iter().collect::<Vec<_>>()),
            peers: peers.len(),
            up: up.len(),
            total: sessions.len(),
            all_pending,
            // At most a few sessions named: the message must not grow with
            // the cluster.
            down: announce::some_of(&down.iter().map(String::as_str).collect::<Vec<_>>(), "; "),
            bfd: (guarded.len(), guarded.iter().filter(|up| **up).count()),
        });
        self.sets.borrow_mut().insert(key, summary.clone());
        summary
    }
}

/// The Announced verdict for a Service with IPs: layer 2 and BGP, each where
/// an advertisement covers the Service's pool.
pub fn verdict(
    outcome: Option<&Outcome>,
    bgp_outcome: Option<&bgp::Outcome>,
    ips: &[IpAddr],
    pools: &BTreeSet<String>,
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    summaries: &Summaries,
) -> Verdict {
    let listed = ips
        .iter()
        .map(|ip| format_ip(*ip))
        .collect::<Vec<_>>()
        .join(", ");
    let l2 = match outcome {
        Some(Outcome::NoAdvertisement | Outcome::NotSelected(_)) | None => None,
        Some(outcome) => Some(l2_verdict(
            outcome,
            ips,
            &listed,
            announcements,
            &summaries.kernel_note(announcements),
        )),
    };
    let bgp = bgp_outcome.and_then(|o| bgp_verdict(o, &listed, announcements, summaries));
    let pools = pools.iter().cloned().collect::<Vec<_>>().join(", ");
    match (l2, bgp) {
        (None, None) => match skipped_by(outcome, bgp_outcome) {
            Some(skipping) => Verdict::no(
                reason::NOT_SELECTED,
                format!(
                    "{skipping} cover pool {pools}, but their serviceSelectors do not select this Service (in layer 2, with every Service sharing its IP): label it to match one, or add a selector for it"
                ),
            ),
            None => Verdict::no(
                reason::NO_ADVERTISEMENT,
                format!(
                    "no L2Advertisement or BGPAdvertisement covers pool {pools}: create one that selects it"
                ),
            ),
        },
        (Some(one), None) | (None, Some(one)) => one,
        (Some(l2), Some(bgp)) => {
            let message = format!("{}; {}", l2.message, bgp.message);
            match (l2.is_true(), bgp.is_true()) {
                (true, true) => Verdict::yes(reason::ANNOUNCED, message),
                (false, _) => Verdict::no(&l2.reason, message),
                (true, false) => Verdict::no(&bgp.reason, message),
            }
        }
    }
}

/// The advertisements whose `serviceSelectors` skipped a Service, named
/// with their kinds (a few, then a count), when any did.
fn skipped_by(l2: Option<&Outcome>, bgp: Option<&bgp::Outcome>) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    if let Some(Outcome::NotSelected(skipping)) = l2 {
        names.extend(skipping.iter().map(|n| format!("L2Advertisement '{n}'")));
    }
    if let Some(bgp::Outcome::NotSelected(skipping)) = bgp {
        names.extend(skipping.iter().map(|n| format!("BGPAdvertisement '{n}'")));
    }
    (!names.is_empty())
        .then(|| announce::some_of(&names.iter().map(String::as_str).collect::<Vec<_>>(), ", "))
}

/// The layer 2 part of the Announced verdict.
fn l2_verdict(
    outcome: &Outcome,
    ips: &[IpAddr],
    listed: &str,
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    kernel_note: &str,
) -> Verdict {
    match outcome {
        Outcome::Announced { node, standby } => {
            let standby_node = standby.clone();
            let standby = standby
                .as_ref()
                .map_or(" (no standby node)".to_string(), |s| {
                    format!(" (standby {s})")
                });
            match reported(announcements.get(node).map(|a| a.as_ref()), ips) {
                L2Report::Answering => {
                    let notes = l2_notes(node, standby_node.as_deref(), announcements, kernel_note);
                    Verdict::yes(
                        reason::ANNOUNCED,
                        format!("L2: {listed} answered by node {node}{standby}{notes}"),
                    )
                }
                L2Report::Failed(why) => Verdict::no(
                    reason::ANNOUNCE_FAILED,
                    format!("L2: node {node} cannot answer for {listed}: {why}"),
                ),
                L2Report::Pending => Verdict::no(
                    reason::NOT_YET_APPLIED,
                    format!(
                        "L2: node {node} is to answer for {listed}{standby}; its speaker has not reported it yet"
                    ),
                ),
            }
        }
        Outcome::NoAdvertisement => Verdict::no(reason::NO_ADVERTISEMENT, "L2: no L2Advertisement"),
        Outcome::NotSelected(skipping) => Verdict::no(
            reason::NOT_SELECTED,
            format!(
                "L2: the serviceSelectors of {} skip this Service",
                name_some(&skipping.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        ),
        Outcome::NoLocalEndpoints => Verdict::no(
            reason::NO_LOCAL_ENDPOINTS,
            "L2: externalTrafficPolicy is Local and no eligible node has a ready endpoint of this Service",
        ),
        Outcome::NoEligibleNode(why) => Verdict::no(
            reason::NO_ELIGIBLE_NODE,
            format!("L2: no node may announce {listed}: {why}"),
        ),
    }
}

/// Names at most a few nodes, then counts the rest: status messages must not
/// grow with the cluster.
pub fn name_some(names: &[&str]) -> String {
    announce::some_of(names, ", ")
}

/// What an answered layer 2 IP's message adds: the fast path between the
/// active and the standby node when it is unavailable, and nodes whose
/// kernel answers ARP for Service IPs too. Each with its fix; empty when all
/// is well.
fn l2_notes(
    active: &str,
    standby: Option<&str>,
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    kernel_note: &str,
) -> String {
    let mut notes = String::new();
    if let Some(message) = standby
        .and_then(|s| announcements.get(s))
        .and_then(|a| a.status.as_ref())
        .and_then(|status| {
            status
                .failover
                .iter()
                .find(|f| f.node == active && f.state == FailoverPhase::Unavailable)
        })
        .and_then(|f| f.message.clone())
    {
        notes.push_str(&format!("; {message}"));
    }
    notes.push_str(kernel_note);
    notes
}

/// A BGPPeer's status: how many of the nodes that peer with it have the
/// session Established, and what is wrong with the others.
pub fn peer_status(
    peer: &BGPPeer,
    plan: &bgp::Plan,
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    now: &Time,
) -> BGPPeerStatus {
    let name = peer.name_any();
    let nodes: Vec<&String> = plan
        .nodes
        .iter()
        .filter(|(_, sessions)| sessions.iter().any(|s| s.name == name))
        .map(|(node, _)| node)
        .collect();
    let mut established = 0;
    let mut bfd_up_nodes = 0;
    let mut bfd_down: Vec<&str> = Vec::new();
    let mut problems = Vec::new();
    for node in &nodes {
        let announcement = announcements.get(*node).map(|a| a.as_ref());
        match session_report(announcement, &name) {
            Ok(()) => established += 1,
            Err(why) => problems.push(format!("{node}: {}", why.text())),
        }
        match bfd_up(announcement, &name) {
            Some(true) => bfd_up_nodes += 1,
            Some(false) => bfd_down.push(node.as_str()),
            None => {}
        }
    }
    let (status, reason, message) = if nodes.is_empty() {
        (
            "False",
            "NoSelectedNodes",
            "no node with a running speaker is selected by nodeSelectors".to_string(),
        )
    } else if problems.is_empty() {
        (
            "True",
            "Established",
            format!("Established on all {} selected nodes", nodes.len()),
        )
    } else {
        (
            "False",
            if established == 0 {
                "NotEstablished"
            } else {
                "PartlyEstablished"
            },
            format!(
                "Established on {established} of {} nodes; {}",
                nodes.len(),
                problems.join("; ")
            ),
        )
    };
    // BFD is told, not judged: a BGP session Established with BFD down is
    // still Established, and the router decides what BFD means to it.
    let message = if bfd_down.is_empty() {
        message
    } else {
        format!("{message}; BFD not Up on {}", name_some(&bfd_down))
    };
    let since = peer
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Established"))
        .filter(|c| c.status == status && c.reason == reason)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    BGPPeerStatus {
        observed_generation: peer.metadata.generation,
        conditions: vec![Condition {
            type_: "Established".to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.chars().take(4000).collect(),
            observed_generation: peer.metadata.generation,
            last_transition_time: since,
        }],
        selected_nodes: i32::try_from(nodes.len()).unwrap_or(i32::MAX),
        established_nodes: established,
        bfd_up_nodes: peer.spec.bfd_profile.is_some().then_some(bfd_up_nodes),
    }
}

/// The Announced message for a Service whose status another controller
/// writes too.
pub fn other_controller_message(managers: &[String]) -> String {
    format!(
        "another controller ({}) also writes status.loadBalancer of this Service, so clients may be handed its address instead of ferrolb's: turn it off (k3s: start the server with --disable servicelb; MetalLB: uninstall it once migrated) or keep the two apart with spec.loadBalancerClass (ferrolb handles --lb-class and Services without a class)",
        managers
            .iter()
            .map(|m| format!("field manager \"{m}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_api::nodeannouncement::{
        FailoverState, L2State, NodeAnnouncementStatus, NodeProblem,
    };
    use std::sync::Arc;

    const IP: &str = "192.168.1.10";

    fn announcement(node: &str, status: NodeAnnouncementStatus) -> (String, Arc<NodeAnnouncement>) {
        let mut a = NodeAnnouncement::new(node, NodeAnnouncementSpec::default());
        a.status = Some(status);
        (node.to_string(), Arc::new(a))
    }

    fn answering() -> NodeAnnouncementStatus {
        NodeAnnouncementStatus {
            l2: vec![L2State {
                ips: [IP.parse::<IpAddr>().unwrap()].into_iter().collect(),
                state: L2Phase::Announcing,
                interfaces: vec!["eth0".into()],
                since: None,
                message: None,
                taken_from: None,
            }],
            ..Default::default()
        }
    }

    fn l2_message(announcements: &BTreeMap<String, Arc<NodeAnnouncement>>) -> Verdict {
        let outcome = Outcome::Announced {
            node: "node-b".into(),
            standby: Some("node-c".into()),
        };
        verdict(
            Some(&outcome),
            None,
            &[IP.parse().unwrap()],
            &BTreeSet::from(["l2".to_string()]),
            announcements,
            &Summaries::default(),
        )
    }

    #[test]
    fn an_answered_ip_with_a_working_fast_path_says_just_that() {
        let announcements = BTreeMap::from([
            announcement("node-b", answering()),
            announcement("node-c", NodeAnnouncementStatus::default()),
        ]);
        let verdict = l2_message(&announcements);
        assert_eq!(verdict.reason, "Announced");
        assert_eq!(
            verdict.message,
            "L2: 192.168.1.10 answered by node node-b (standby node-c)"
        );
    }

    #[test]
    fn an_unavailable_fast_path_and_a_kernel_answering_arp_are_named_with_their_fixes() {
        let standby = NodeAnnouncementStatus {
            failover: vec![FailoverState {
                node: "node-b".into(),
                state: FailoverPhase::Unavailable,
                reason: Some("NoProbeAnswer".into()),
                message: Some("fast failover unavailable between node-b and node-c: no answer on UDP 7473 — open it between nodes".into()),
                since: None,
            }],
            problems: vec![NodeProblem {
                reason: KERNEL_ANSWERS_ARP.into(),
                message: "…".into(),
            }],
            ..Default::default()
        };
        let announcements = BTreeMap::from([
            announcement("node-b", answering()),
            announcement("node-c", standby),
        ]);
        let verdict = l2_message(&announcements);
        assert!(verdict.is_true(), "still reachable");
        assert!(
            verdict.message.contains(
                "; fast failover unavailable between node-b and node-c: no answer on UDP 7473 — open it between nodes"
            ),
            "{}",
            verdict.message
        );
        assert!(
            verdict
                .message
                .contains("the kernel of node node-c answers ARP for Service IPs too"),
            "{}",
            verdict.message
        );
        assert!(verdict.message.contains("strictARP: true"));
    }

    #[test]
    fn a_message_names_a_few_nodes_and_counts_the_rest() {
        assert_eq!(name_some(&["a", "b"]), "a, b");
        assert_eq!(name_some(&["a", "b", "c", "d", "e"]), "a, b, c and 2 more");
    }

    #[test]
    fn a_move_names_both_nodes_and_why() {
        let ip: IpAddr = IP.parse().unwrap();
        let to_c = Outcome::Announced {
            node: "node-c".into(),
            standby: None,
        };
        let current = BTreeMap::from([(ip, "node-b".to_string())]);
        let node = |name: &str, ready: bool| announce::Node {
            name: name.into(),
            labels: BTreeMap::new(),
            ready,
            excluded: false,
            speaker_alive: true,
            network_unavailable: false,
        };
        let mut takeovers = Takeovers::default();
        takeovers.by.insert(ip, "node-c".to_string());
        takeovers.from.insert(ip, "node-b".to_string());
        let nodes = [node("node-b", true), node("node-c", true)];
        assert_eq!(
            moved(&[ip], Some(&to_c), &current, &takeovers, &nodes).unwrap(),
            "192.168.1.10 moved from node-b to node-c: node-b stopped answering probes and node-c took the IP over"
        );
        let nodes = [node("node-b", false), node("node-c", true)];
        assert_eq!(
            moved(&[ip], Some(&to_c), &current, &Takeovers::default(), &nodes).unwrap(),
            "192.168.1.10 moved from node-b to node-c: node-b: not Ready"
        );
        assert_eq!(
            moved(
                &[ip],
                Some(&to_c),
                &current,
                &Takeovers::default(),
                &nodes[1..]
            )
            .unwrap(),
            "192.168.1.10 moved from node-b to node-c: node-b is gone"
        );
        let stays = BTreeMap::from([(ip, "node-c".to_string())]);
        assert!(moved(&[ip], Some(&to_c), &stays, &takeovers, &nodes).is_none());
        assert!(
            moved(&[ip], Some(&to_c), &BTreeMap::new(), &takeovers, &nodes).is_none(),
            "first placement"
        );
    }
}
