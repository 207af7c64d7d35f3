//! Layer 2 announcement planning: which node answers ARP/NDP for each Service
//! IP, and which one stands by. Pure logic, no kube types.
//!
//! - A node is eligible for an IP when it is Ready, not labelled
//!   `node.kubernetes.io/exclude-from-external-load-balancers`, its speaker is
//!   alive, an L2Advertisement covering the IP's pool selects it, and, for
//!   `externalTrafficPolicy: Local`, it holds a ready endpoint.
//! - IPs that must travel together form a group: all IPs of one Service, and all
//!   Services sharing an IP. A group lands on one node.
//! - The active node is the eligible node with the highest rendezvous score for
//!   the group, the standby the second: adding or removing a node moves only the
//!   groups that node wins or held, and the same inputs always give the same plan.
//!   A group stays on its current node while that node is eligible (no moving
//!   back when a node returns), and goes to the node that took it over after a
//!   failover; its standby stays too while eligible. The node it was taken
//!   from neither answers nor stands by for it while the takeover report
//!   stands; its other IPs stay where they are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::plan::allocation::ServiceKey;
use crate::plan::allocation::selector::{Labels, Selector, any_matches};

/// A node as planning sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`,
    /// and the operator does not ignore that label (`--ignore-exclude-lb`).
    pub excluded: bool,
    /// Its speaker's Lease is alive.
    pub speaker_alive: bool,
    /// Its `NetworkUnavailable` condition is True: the node's network is
    /// not set up (a CNI still starting, a cloud route missing).
    pub network_unavailable: bool,
}

/// Which pools an advertisement covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pools {
    /// Every pool.
    All,
    /// These pools (names listed, or selected by label).
    Named(BTreeSet<String>),
}

impl Pools {
    pub(crate) fn covers(&self, pool: &str) -> bool {
        match self {
            Pools::All => true,
            Pools::Named(names) => names.contains(pool),
        }
    }
}

/// An L2Advertisement with its pool selection resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Advertisement {
    /// The L2Advertisement's name.
    pub name: String,
    /// The pools it covers.
    pub pools: Pools,
    /// Services it announces (of those pools); empty for all.
    pub service_selectors: Vec<Selector>,
    /// Nodes it selects; empty for all.
    pub node_selectors: Vec<Selector>,
    /// Interfaces to answer on; empty for the default.
    pub interfaces: Vec<String>,
}

/// A Service with IPs to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// Which Service.
    pub service: ServiceKey,
    /// Its labels, for advertisements' `serviceSelectors`.
    pub labels: Labels,
    /// Its IPs and the pool of each (`None` when in no pool any more).
    pub ips: Vec<(IpAddr, Option<String>)>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Nodes holding a ready (or serving) endpoint.
    pub endpoint_nodes: BTreeSet<String>,
    /// The node answering for its IPs now (or that took them over): kept
    /// while eligible, so an IP moves only when it must.
    pub current: Option<String>,
    /// The node standing by for its IPs now: kept while eligible too, so a
    /// standby that has heard the active is not swapped for one that has not
    /// (a cut in between would find nobody to take over).
    pub standby: Option<String>,
    /// The node a standby took its IPs over from: while that report stands
    /// it neither answers nor stands by for them (the two could not hear each
    /// other), unless no other node may.
    pub avoid: Option<String>,
}

/// A node's part for one IP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Answers for the IP.
    Active,
    /// Takes it over when the active node (named) goes silent.
    Standby(String),
}

/// One IP on one node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The IP.
    pub ip: IpAddr,
    /// What the node does for it.
    pub role: Role,
    /// Interfaces to answer on; empty for the default.
    pub interfaces: Vec<String>,
    /// The Services using the IP, `namespace/name`.
    pub services: Vec<String>,
}

/// The layer 2 outcome for one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Announced from `node`, with `standby` ready.
    Announced {
        /// The active node.
        node: String,
        /// The standby node, if there is a second eligible one.
        standby: Option<String>,
    },
    /// No L2Advertisement covers its pool(s).
    NoAdvertisement,
    /// L2Advertisements cover its pool(s), but the `serviceSelectors` of
    /// each (named) skip it or another Service sharing its IP.
    NotSelected(Vec<String>),
    /// `externalTrafficPolicy: Local` and no eligible node has an endpoint.
    NoLocalEndpoints,
    /// No node may announce; the message says why each was left out.
    NoEligibleNode(String),
}

/// The plan: entries per node (every node listed, possibly empty) and the
/// outcome per Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Node → what it announces, sorted by IP.
    pub nodes: BTreeMap<String, Vec<Entry>>,
    /// Service → what happened to its IPs.
    pub services: BTreeMap<ServiceKey, Outcome>,
}

/// FNV-1a, then a SplitMix64 finish: a small hash that is the same in every
/// build and on every machine (std's hasher makes no such promise).
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Rendezvous score of a node for a group.
fn score(node: &str, group: &str) -> u64 {
    stable_hash(&[node.as_bytes(), group.as_bytes()])
}

/// Groups Services that must share a node: union-find over Services and IPs.
fn groups(services: &[Announced]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..services.len()).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut root = i;
        while parent[root] != root {
            root = parent[root];
        }
        let mut i = i;
        while parent[i] != root {
            let next = parent[i];
            parent[i] = root;
            i = next;
        }
        root
    }
    let mut owner: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (i, service) in services.iter().enumerate() {
        for (ip, _) in &service.ips {
            if let Some(&j) = owner.get(ip) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a] = b;
            } else {
                owner.insert(*ip, i);
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..services.len() {
        let root = find(&mut parent, i);
        by_root.entry(root).or_default().push(i);
    }
    by_root.into_values().collect()
}

/// Why an excluded node is left out, and how to use it anyway.
pub const EXCLUDED: &str = "labelled node.kubernetes.io/exclude-from-external-load-balancers (kubeadm, kind and Talos put it on control-plane nodes; run the operator with --ignore-exclude-lb to use them)";

/// Why a node cannot announce, if it cannot (advertisement and endpoints
/// aside).
pub(crate) fn unfit(node: &Node) -> Option<&'static str> {
    if !node.ready {
        Some("not Ready")
    } else if node.network_unavailable {
        Some("its NetworkUnavailable condition is True")
    } else if node.excluded {
        Some(EXCLUDED)
    } else if !node.speaker_alive {
        Some("its speaker is not running")
    } else {
        None
    }
}

/// How many items a status message names before it counts the rest.
pub const NAMED: usize = 3;

/// At most [`NAMED`] items joined with `separator`, then how many more:
/// status messages must not grow with the cluster.
pub fn some_of(items: &[&str], separator: &str) -> String {
    let mut text = items
        .iter()
        .take(NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(separator);
    if items.len() > NAMED {
        text.push_str(&format!(" and {} more", items.len() - NAMED));
    }
    text
}

/// The nodes a set of advertisements lets announce (by index, with the
/// interfaces to answer on), and why each other node may not.
struct Selection {
    eligible: Vec<(usize, Vec<String>)>,
    reasons: Vec<String>,
    selected_any: bool,
    /// Node name → its place in `eligible`.
    position: HashMap<String, usize>,
    /// The names of the eligible nodes.
    names: BTreeSet<String>,
    /// Places in `eligible` of the nodes that were not eligible for the
    /// same advertisements in the last pass (unknown without one).
    added: Option<Vec<usize>>,
}

impl Selection {
    fn of(
        nodes: &[Node],
        advertising: &[&L2Advertisement],
        before: Option<&BTreeSet<String>>,
    ) -> Selection {
        let mut selection = Selection {
            eligible: Vec::new(),
            reasons: Vec::new(),
            selected_any: false,
            position: HashMap::new(),
            names: BTreeSet::new(),
            added: before.map(|_| Vec::new()),
        };
        for (index, node) in nodes.iter().enumerate() {
            let selecting: Vec<&&L2Advertisement> = advertising
                .iter()
                .filter(|a| any_matches(&a.node_selectors, &node.labels))
                .collect();
            if selecting.is_empty() {
                selection
                    .reasons
                    .push(format!("{}: not selected by an L2Advertisement", node.name));
                continue;
            }
            selection.selected_any = true;
            if let Some(why) = unfit(node) {
                selection.reasons.push(format!("{}: {why}", node.name));
                continue;
            }
            // One advertisement with no interfaces means the default one too.
            let interfaces = if selecting.iter().any(|a| a.interfaces.is_empty()) {
                Vec::new()
            } else {
                selecting
                    .iter()
                    .flat_map(|a| a.interfaces.iter().cloned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            };
            let at = selection.eligible.len();
            if let (Some(added), Some(before)) = (&mut selection.added, before)
                && !before.contains(&node.name)
            {
                added.push(at);
            }
            selection.position.insert(node.name.clone(), at);
            selection.names.insert(node.name.clone());
            selection.eligible.push((index, interfaces));
        }
        selection
    }
}

/// Plans layer 2 announcements from scratch.
pub fn plan_l2(nodes: &[Node], advertisements: &[L2Advertisement], services: &[Announced]) -> Plan {
    plan_l2_from(
        &mut Placements::default(),
        nodes,
        advertisements,
        services,
        true,
    )
}

/// Where the last pass placed each group, so the next one works out only
/// what changed: a group keeps its active node without scoring every node
/// again, and only nodes that became eligible are scored for its standby. A
/// group whose active or standby node left, whose current node is not the
/// one placed, or that serves `Local` Services is placed afresh. The same
/// inputs give the same plan as [`plan_l2`] (a property test replays random
/// changes through both).
#[derive(Clone, Debug, Default)]
pub struct Placements {
    /// The advertisements of the last pass: when they change, nothing kept
    /// is trusted.
    advertisements: Vec<L2Advertisement>,
    /// Per set of advertisements (by index), the nodes it let announce.
    eligible: BTreeMap<Vec<usize>, BTreeSet<String>>,
    /// Per group (by its first IP): its advertisements, active and standby.
    groups: HashMap<String, Placed>,
}

#[derive(Clone, Debug)]
struct Placed {
    advertisements: Vec<usize>,
    /// Placed among the nodes with endpoints of its Local Services only.
    local: bool,
    active: String,
    standby: Option<String>,
    /// Placed while a node was avoided (after a takeover): the next pass
    /// places it afresh, since the avoided node may fill its standby now.
    avoided: bool,
}

/// Plans layer 2 announcements, starting from where the last pass placed
/// each group (see [`Placements`]), and remembers this pass's placement.
/// With `whole`, `services` are all of them and what is not placed now is
/// forgotten; without, they are some whole groups re-planned among the
/// same nodes and advertisements, and the other groups' places are kept.
pub fn plan_l2_from(
    placements: &mut Placements,
    nodes: &[Node],
    advertisements: &[L2Advertisement],
    services: &[Announced],
    whole: bool,
) -> Plan {
    if placements.advertisements != advertisements {
        *placements = Placements {
            advertisements: advertisements.to_vec(),
            ..Placements::default()
        };
    }
    let mut placed: HashMap<String, Placed> = HashMap::with_capacity(placements.groups.len());
    let mut eligible_now: BTreeMap<Vec<usize>, BTreeSet<String>> = BTreeMap::new();
    let mut plan = Plan {
        nodes: nodes.iter().map(|n| (n.name.clone(), Vec::new())).collect(),
        services: BTreeMap::new(),
    };
    let mut by_advertisements: BTreeMap<Vec<usize>, Selection> = BTreeMap::new();
    for group in groups(services) {
        let members: Vec<&Announced> = group.iter().map(|i| &services[*i]).collect();
        let pools: BTreeSet<&str> = members
            .iter()
            .flat_map(|s| s.ips.iter().filter_map(|(_, p)| p.as_deref()))
            .collect();
        // Advertisements covering every pool of the group, and of those the
        // ones whose serviceSelectors select every Service of it: a group
        // sharing an IP is announced by one node, never split between the
        // nodes of advertisements that select some of its Services.
        let covering: Vec<usize> = advertisements
            .iter()
            .enumerate()
            .filter(|(_, a)| !pools.is_empty() && pools.iter().all(|p| a.pools.covers(p)))
            .map(|(i, _)| i)
            .collect();
        let chosen: Vec<usize> = covering
            .iter()
            .copied()
            .filter(|i| {
                let selectors = &advertisements[*i].service_selectors;
                members.iter().all(|s| any_matches(selectors, &s.labels))
            })
            .collect();
        let advertising: Vec<&L2Advertisement> =
            chosen.iter().map(|i| &advertisements[*i]).collect();
        let outcome_for_all = |plan: &mut Plan, outcome: Outcome| {
            for member in &members {
                plan.services
                    .insert(member.service.clone(), outcome.clone());
            }
        };
        if covering.is_empty() {
            outcome_for_all(&mut plan, Outcome::NoAdvertisement);
            continue;
        }
        if advertising.is_empty() {
            let skipping = covering
                .iter()
                .map(|i| advertisements[*i].name.clone())
                .collect();
            outcome_for_all(&mut plan, Outcome::NotSelected(skipping));
            continue;
        }
        // Which nodes the group's advertisements let announce: the same for
        // every group of the same advertisements, so worked out once.
        if !by_advertisements.contains_key(&chosen) {
            let selection = Selection::of(nodes, &advertising, placements.eligible.get(&chosen));
            eligible_now.insert(chosen.clone(), selection.names.clone());
            by_advertisements.insert(chosen.clone(), selection);
        }
        let base = &by_advertisements[&chosen];
        let locals: Vec<&Announced> = members.iter().copied().filter(|s| s.local).collect();
        // Positions in `base.eligible` of the nodes that may announce this
        // group: all of them, unless it has Local Services, or IPs some
        // standby took over from a node.
        let local_ok = |name: &String| locals.iter().all(|s| s.endpoint_nodes.contains(name));
        let mut avoid: BTreeSet<&str> = members.iter().filter_map(|s| s.avoid.as_deref()).collect();
        let keep = |avoid: &BTreeSet<&str>| -> Vec<usize> {
            (0..base.eligible.len())
                .filter(|i| {
                    let name = &nodes[base.eligible[*i].0].name;
                    local_ok(name) && !avoid.contains(name.as_str())
                })
                .collect()
        };
        let mut filtered: Option<Vec<usize>> =
            (!locals.is_empty() || !avoid.is_empty()).then(|| keep(&avoid));
        if !avoid.is_empty() && filtered.as_ref().is_some_and(Vec::is_empty) {
            // Better the node it was taken from than none.
            avoid.clear();
            filtered = (!locals.is_empty()).then(|| keep(&avoid));
        }
        let count = filtered.as_ref().map_or(base.eligible.len(), Vec::len);
        if count == 0 {
            let reasons = &base.reasons;
            let outcome = if base.selected_any && !locals.is_empty() && reasons.len() < nodes.len()
            {
                Outcome::NoLocalEndpoints
            } else if reasons.is_empty() {
                Outcome::NoEligibleNode("there are no nodes".to_string())
            } else {
                Outcome::NoEligibleNode(some_of(
                    &reasons.iter().map(String::as_str).collect::<Vec<_>>(),
                    "; ",
                ))
            };
            outcome_for_all(&mut plan, outcome);
            continue;
        }
        let candidate = |k: usize| filtered.as_ref().map_or(k, |f| f[k]);
        let key = members
            .iter()
            .flat_map(|s| s.ips.iter().map(|(ip, _)| *ip))
            .min()
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        // The highest score wins (ties by name); the current node stays
        // while eligible. Only the first two matter, so each node's score is
        // worked out once and no list is sorted.
        let current = members.iter().find_map(|s| s.current.as_deref());
        let standing_by = members.iter().find_map(|s| s.standby.as_deref());
        let rank = |i: usize| {
            let node = &nodes[base.eligible[i].0];
            (
                current == Some(node.name.as_str()),
                standing_by == Some(node.name.as_str()),
                score(&node.name, &key),
                std::cmp::Reverse(node.name.as_str()),
            )
        };
        // What the last pass placed still holds when the group's
        // advertisements are the same, neither node left, the active node is
        // the current one, and the group has no Local Service.
        let before = placements.groups.get(&key).filter(|p| {
            locals.is_empty()
                && !p.local
                && p.advertisements == chosen
                && current == Some(p.active.as_str())
                && base.position.contains_key(&p.active)
                && !p.avoided
                && avoid.is_empty()
                && standing_by.is_none_or(|s| p.standby.as_deref() == Some(s))
                && p.standby
                    .as_ref()
                    .is_none_or(|s| base.position.contains_key(s))
        });
        let (first, second) = match (before, &base.added) {
            (Some(before), Some(added)) => {
                // Only nodes that became eligible can outrank the standby.
                let active = base.position[&before.active];
                let mut second = before
                    .standby
                    .as_ref()
                    .map(|s| (rank(base.position[s]), base.position[s]));
                for &i in added {
                    let r = rank(i);
                    if second.as_ref().is_none_or(|(next, _)| r > *next) {
                        second = Some((r, i));
                    }
                }
                (active, second.map(|(_, i)| i))
            }
            _ => {
                let mut first: Option<(_, usize)> = None;
                let mut second: Option<(_, usize)> = None;
                for i in (0..count).map(candidate) {
                    let r = rank(i);
                    if first.as_ref().is_none_or(|(best, _)| r > *best) {
                        second = first.take();
                        first = Some((r, i));
                    } else if second.as_ref().is_none_or(|(next, _)| r > *next) {
                        second = Some((r, i));
                    }
                }
                (first.expect("a node is eligible").1, second.map(|(_, i)| i))
            }
        };
        let (active_index, active_interfaces) = &base.eligible[first];
        let active = &nodes[*active_index];
        let standby = second.map(|i| (&nodes[base.eligible[i].0], &base.eligible[i].1));
        placed.insert(
            key.clone(),
            Placed {
                local: !locals.is_empty(),
                advertisements: chosen,
                active: active.name.clone(),
                standby: standby.map(|(n, _)| n.name.clone()),
                avoided: !avoid.is_empty(),
            },
        );
        let ips: BTreeSet<IpAddr> = members
            .iter()
            .flat_map(|s| s.ips.iter().map(|(ip, _)| *ip))
            .collect();
        for ip in &ips {
            let users: Vec<String> = members
                .iter()
                .filter(|s| s.ips.iter().any(|(i, _)| i == ip))
                .map(|s| s.service.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            plan.nodes
                .entry(active.name.clone())
                .or_default()
                .push(Entry {
                    ip: *ip,
                    role: Role::Active,
                    interfaces: active_interfaces.clone(),
                    services: users.clone(),
                });
            if let Some((node, interfaces)) = standby {
                plan.nodes
                    .entry(node.name.clone())
                    .or_default()
                    .push(Entry {
                        ip: *ip,
                        role: Role::Standby(active.name.clone()),
                        interfaces: (*interfaces).clone(),
                        services: users,
                    });
            }
        }
        outcome_for_all(
            &mut plan,
            Outcome::Announced {
                node: active.name.clone(),
                standby: standby.map(|(n, _)| n.name.clone()),
            },
        );
    }
    for entries in plan.nodes.values_mut() {
        entries.sort();
    }
    if whole {
        placements.groups = placed;
        placements.eligible = eligible_now;
    } else {
        placements.groups.extend(placed);
        placements.eligible.extend(eligible_now);
    }
    plan
}

impl Placements {
    /// Forgets the places of the groups whose first IP is one of `ips`
    /// (groups about to be re-planned, which may no longer exist).
    pub fn forget<'a>(&mut self, ips: impl IntoIterator<Item = &'a IpAddr>) {
        for ip in ips {
            self.groups.remove(&ip.to_string());
        }
    }
}

pub mod arming;
pub mod bgp;

#[cfg(test)]
mod tests;
