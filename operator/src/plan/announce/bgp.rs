//! BGP announcement planning: which sessions each node opens and which
//! prefixes each session carries. Pure logic over plain values.
//!
//! - A node opens a session to every BGPPeer whose `nodeSelectors` select it,
//!   once its speaker is alive.
//! - A Service IP is advertised by every node that is fit (Ready, not
//!   excluded, speaker alive), selected by a BGPAdvertisement covering the IP's
//!   pool, and for `externalTrafficPolicy: Local` holds an endpoint; on the
//!   sessions to that advertisement's `peers` (all when empty), of the IP's
//!   family. The prefix is the IP at the advertisement's aggregation length.
//! - Several advertisements for one prefix on one session merge: communities
//!   are joined, the highest local-pref wins (the webhook refuses conflicts).
//! - Where the prefix goes: a Service with `externalTrafficPolicy: Cluster` is
//!   advertised by every node the advertisement selects, so its prefix goes
//!   into the advertisement's shared set (written as PrefixSets, see
//!   [`shards`]) and each session names the advertisements it carries; a
//!   Local Service's prefix goes into the sessions of the nodes with an
//!   endpoint. A Service change then rewrites one shard, not every node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_api::PrefixSetSpec;
use ferrolb_api::address::format_ip;
use ferrolb_api::nodeannouncement::BgpSession;
use ferrolb_api::prefixset::MergedPrefixes;

use super::{Announced, Node, Pools, unfit};
use crate::plan::allocation::ServiceKey;
use crate::plan::allocation::selector::{Selector, any_matches};

/// A BGPPeer as a session template (`prefixes` empty) with its node selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// The session every selected node opens; `name` is the BGPPeer's.
    pub session: BgpSession,
    /// Nodes that peer; empty for all.
    pub node_selectors: Vec<Selector>,
}

impl Peer {
    /// Whether its sessions carry prefixes of this family: the session's
    /// own, or both with `dualStackAddressFamily`.
    fn carries(&self, v4: bool) -> bool {
        self.session.carries_family(!v4)
    }
}

/// A BGPAdvertisement with its pool selection resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// The BGPAdvertisement's name.
    pub name: String,
    /// The pools it covers.
    pub pools: Pools,
    /// Nodes that advertise; empty for all.
    pub node_selectors: Vec<Selector>,
    /// Services it advertises (of those pools); empty for all.
    pub service_selectors: Vec<Selector>,
    /// BGPPeers to advertise to; empty for all.
    pub peers: Vec<String>,
    /// IPv4 prefix length.
    pub aggregation_v4: u8,
    /// IPv6 prefix length.
    pub aggregation_v6: u8,
    /// Communities, as written in the advertisement.
    pub communities: Vec<String>,
    /// LOCAL_PREF for iBGP.
    pub local_pref: Option<u32>,
}

/// The BGP outcome for one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Advertised on these (node, peer) sessions (shared between the
    /// Services of one advertisement: one set, not one copy per Service).
    Advertised(std::sync::Arc<BTreeSet<(String, String)>>),
    /// No BGPAdvertisement covers its pool(s).
    NoAdvertisement,
    /// BGPAdvertisements cover its pool(s), but the `serviceSelectors` of
    /// each (named) skip it.
    NotSelected(Vec<String>),
    /// `externalTrafficPolicy: Local` and no eligible node has an endpoint.
    NoLocalEndpoints,
    /// No node may advertise; the message says why.
    NoEligibleNode(String),
}

/// Sessions per node (every node listed, possibly with none), the prefixes
/// shared per advertisement, and the outcome per Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Node → its sessions with their own prefixes and the advertisements
    /// they carry, sorted by name.
    pub nodes: BTreeMap<String, Vec<BgpSession>>,
    /// Advertisement → the prefixes every node it selects advertises.
    pub shared: BTreeMap<String, Shared>,
    /// Service → where its IPs are advertised.
    pub services: BTreeMap<ServiceKey, Outcome>,
}

/// The prefixes of one advertisement that every selected node advertises,
/// with the advertisement's path attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shared {
    /// Communities, as written in the advertisement.
    pub communities: Vec<String>,
    /// LOCAL_PREF for iBGP.
    pub local_pref: Option<u32>,
    /// The prefixes, both families.
    pub prefixes: BTreeSet<String>,
}

/// The prefix for `ip` at `length` (host bits cleared), as text.
pub fn prefix(ip: IpAddr, advertisement: &Advertisement) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let length = advertisement.aggregation_v4.min(32);
            let mask = if length == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(length))
            };
            let network = std::net::Ipv4Addr::from(u32::from(v4) & mask);
            format!("{network}/{length}")
        }
        IpAddr::V6(v6) => {
            let length = advertisement.aggregation_v6.min(128);
            let mask = if length == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(length))
            };
            let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{}/{length}", format_ip(IpAddr::V6(network)))
        }
    }
}

/// Where one advertisement takes a prefix of one family: the sessions that
/// carry it, and why the other nodes do not.
#[derive(Debug, Default)]
struct Reach {
    /// (node, peer name) of every session carrying it.
    used: std::sync::Arc<BTreeSet<(String, String)>>,
    /// The same sessions as (node, peer index).
    carried_by: Vec<(String, usize)>,
    /// Why nodes were left out.
    reasons: BTreeSet<String>,
    /// Some fit node was left out for want of a local endpoint.
    lacking_endpoints: bool,
}

type Sessions = BTreeMap<(String, usize), (MergedPrefixes, BTreeSet<String>)>;

/// The sessions `advertisement` takes a prefix of the family (`v4`) to: from
/// every fit node it selects, or, for `externalTrafficPolicy: Local`
/// (`endpoints`), only from those with an endpoint.
fn reach(
    nodes: &[Node],
    peers: &[Peer],
    advertisement: &Advertisement,
    v4: bool,
    sessions: &Sessions,
    endpoints: Option<&BTreeSet<String>>,
) -> Reach {
    let mut reach = Reach::default();
    let mut used = BTreeSet::new();
    for node in nodes {
        if !any_matches(&advertisement.node_selectors, &node.labels) {
            reach
                .reasons
                .insert(format!("{}: not selected by a BGPAdvertisement", node.name));
            continue;
        }
        if let Some(why) = unfit(node) {
            reach.reasons.insert(format!("{}: {why}", node.name));
            continue;
        }
        if endpoints.is_some_and(|e| !e.contains(&node.name)) {
            reach.lacking_endpoints = true;
            continue;
        }
        let mut peered = false;
        for (p, peer) in peers.iter().enumerate() {
            let wanted =
                advertisement.peers.is_empty() || advertisement.peers.contains(&peer.session.name);
            if !wanted || !peer.carries(v4) || !sessions.contains_key(&(node.name.clone(), p)) {
                continue;
            }
            peered = true;
            used.insert((node.name.clone(), peer.session.name.clone()));
            reach.carried_by.push((node.name.clone(), p));
        }
        if !peered {
            let family = if v4 { "IPv4" } else { "IPv6" };
            reach.reasons.insert(format!(
                "{}: no selected BGPPeer carrying {family} peers with it",
                node.name
            ));
        }
    }
    reach.used = std::sync::Arc::new(used);
    reach
}

/// Plans BGP sessions and prefixes.
pub fn plan_bgp(
    nodes: &[Node],
    peers: &[Peer],
    advertisements: &[Advertisement],
    services: &[Announced],
) -> Plan {
    // (node, peer) → (own prefix → (communities, local-pref), advertisements)
    let mut sessions: Sessions = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.speaker_alive) {
        for (p, peer) in peers.iter().enumerate() {
            if !any_matches(&peer.node_selectors, &node.labels) {
                continue;
            }
            // The advertisements this session carries: those selecting a fit
            // node and this peer (an unfit node keeps its sessions, empty).
            let carried = advertisements
                .iter()
                .filter(|a| {
                    unfit(node).is_none()
                        && any_matches(&a.node_selectors, &node.labels)
                        && (a.peers.is_empty() || a.peers.contains(&peer.session.name))
                })
                .map(|a| a.name.clone())
                .collect();
            sessions.insert((node.name.clone(), p), (MergedPrefixes::default(), carried));
        }
    }
    let mut plan = Plan {
        nodes: nodes.iter().map(|n| (n.name.clone(), Vec::new())).collect(),
        shared: advertisements
            .iter()
            .map(|a| {
                let shared = Shared {
                    communities: a.communities.clone(),
                    local_pref: a.local_pref,
                    prefixes: BTreeSet::new(),
                };
                (a.name.clone(), shared)
            })
            .collect(),
        services: BTreeMap::new(),
    };
    // Where a Cluster Service's prefix goes depends only on its advertisement
    // and family: worked out once, shared by every such Service.
    let mut reach_cache: BTreeMap<(usize, bool), std::sync::Arc<Reach>> = BTreeMap::new();
    for service in services {
        let mut reaches: Vec<std::sync::Arc<Reach>> = Vec::new();
        let mut covered = false;
        let mut skipped: BTreeSet<&str> = BTreeSet::new();
        for (ip, pool) in &service.ips {
            let Some(pool) = pool else { continue };
            for (a, advertisement) in advertisements
                .iter()
                .enumerate()
                .filter(|(_, a)| a.pools.covers(pool))
            {
                if !any_matches(&advertisement.service_selectors, &service.labels) {
                    skipped.insert(&advertisement.name);
                    continue;
                }
                covered = true;
                let text = prefix(*ip, advertisement);
                if !service.local {
                    if let Some(shared) = plan.shared.get_mut(&advertisement.name) {
                        shared.prefixes.insert(text.clone());
                    }
                    let reach = reach_cache
                        .entry((a, ip.is_ipv4()))
                        .or_insert_with(|| {
                            std::sync::Arc::new(reach(
                                nodes,
                                peers,
                                advertisement,
                                ip.is_ipv4(),
                                &sessions,
                                None,
                            ))
                        })
                        .clone();
                    reaches.push(reach);
                    continue;
                }
                let reach = reach(
                    nodes,
                    peers,
                    advertisement,
                    ip.is_ipv4(),
                    &sessions,
                    Some(&service.endpoint_nodes),
                );
                for (node, p) in &reach.carried_by {
                    if let Some((prefixes, _)) = sessions.get_mut(&(node.clone(), *p)) {
                        prefixes.add(&text, &advertisement.communities, advertisement.local_pref);
                    }
                }
                reaches.push(std::sync::Arc::new(reach));
            }
        }
        let used: std::sync::Arc<BTreeSet<(String, String)>> = match reaches.as_slice() {
            [one] => one.used.clone(),
            many => std::sync::Arc::new(many.iter().flat_map(|r| r.used.iter().cloned()).collect()),
        };
        let lacking_endpoints = reaches.iter().any(|r| r.lacking_endpoints);
        let reasons: BTreeSet<&str> = reaches
            .iter()
            .flat_map(|r| r.reasons.iter().map(String::as_str))
            .collect();
        let outcome = if !covered && !skipped.is_empty() {
            Outcome::NotSelected(skipped.into_iter().map(str::to_string).collect())
        } else if !covered {
            Outcome::NoAdvertisement
        } else if !used.is_empty() {
            Outcome::Advertised(used)
        } else if lacking_endpoints {
            Outcome::NoLocalEndpoints
        } else if reasons.is_empty() {
            Outcome::NoEligibleNode("there are no nodes".to_string())
        } else {
            Outcome::NoEligibleNode(super::some_of(
                &reasons.into_iter().collect::<Vec<_>>(),
                "; ",
            ))
        };
        plan.services.insert(service.service.clone(), outcome);
    }
    for ((node, p), (prefixes, carried)) in sessions {
        let mut session = peers[p].session.clone();
        session.prefixes = prefixes.into_prefixes();
        session.advertisements = carried.into_iter().collect();
        plan.nodes.entry(node).or_default().push(session);
    }
    for sessions in plan.nodes.values_mut() {
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
    }
    plan
}

/// The number of prefixes a shard is meant to hold on average: a change
/// rewrites one shard, and each speaker receives it, so shards stay small.
pub const SHARD_TARGET: usize = 512;

/// How many shards `prefixes` prefixes are spread over: a power of two, kept
/// as it is (`current`) while the average stays between a quarter of the
/// target and twice it, so a few Services more or less never reshuffle
/// every shard.
pub fn shard_count(prefixes: usize, current: Option<u32>) -> u32 {
    let wanted = prefixes.div_ceil(SHARD_TARGET).max(1).next_power_of_two();
    let wanted = u32::try_from(wanted).unwrap_or(1 << 16);
    match current {
        Some(k) if k.is_power_of_two() => {
            let k_prefixes = k as usize * SHARD_TARGET;
            let keep = prefixes <= 2 * k_prefixes && (k == 1 || 4 * prefixes >= k_prefixes);
            if keep { k } else { wanted }
        }
        _ => wanted,
    }
}

/// FNV-1a: a hash that stays the same across releases and restarts, so a
/// prefix stays in its shard.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shard a prefix belongs in, out of `shards`.
pub fn shard_of(prefix: &str, shards: u32) -> u32 {
    (fnv(prefix) % u64::from(shards.max(1))) as u32
}

/// The PrefixSet name of one shard: `<advertisement>-<shard>of<shards>`
/// (a long advertisement name is cut and made unique with its hash).
pub fn shard_name(advertisement: &str, shard: u32, shards: u32) -> String {
    let name = format!("{advertisement}-{shard}of{shards}");
    if name.len() <= 253 {
        return name;
    }
    let cut = advertisement[..200].trim_end_matches(['.', '-']);
    format!("{cut}-{:016x}-{shard}of{shards}", fnv(advertisement))
}

/// The PrefixSets of one advertisement's shared prefixes (none when it has
/// none), with `current` the shard count its PrefixSets have now.
pub fn shards(
    advertisement: &str,
    shared: &Shared,
    current: Option<u32>,
) -> Vec<(String, PrefixSetSpec)> {
    if shared.prefixes.is_empty() {
        return Vec::new();
    }
    let count = shard_count(shared.prefixes.len(), current);
    let mut sets: Vec<PrefixSetSpec> = (0..count)
        .map(|shard| PrefixSetSpec {
            advertisement: advertisement.to_string(),
            shard,
            shards: count,
            count: 0,
            communities: shared.communities.clone(),
            local_pref: shared.local_pref,
            prefixes: Vec::new(),
        })
        .collect();
    for prefix in &shared.prefixes {
        let set = &mut sets[shard_of(prefix, count) as usize];
        set.prefixes.push(prefix.clone());
        set.count += 1;
    }
    sets.into_iter()
        .map(|set| (shard_name(advertisement, set.shard, count), set))
        .collect()
}

/// What to write to bring the PrefixSets from `now` to the plan's shared
/// prefixes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetChanges {
    /// PrefixSets to apply (new or different).
    pub apply: Vec<(String, PrefixSetSpec)>,
    /// PrefixSets to delete.
    pub delete: Vec<String>,
}

/// The PrefixSet writes for the plan's shared prefixes, `now` being the
/// PrefixSets the store shows. A shard no longer wanted (other shard count,
/// advertisement gone) is deleted once every wanted shard of its
/// advertisement exists, so a re-shard never withdraws a route in between; an
/// old shard is never updated, so it holds nothing the new ones lack but what
/// is to go anyway.
pub fn prefix_set_changes(
    shared: &BTreeMap<String, Shared>,
    now: &BTreeMap<String, PrefixSetSpec>,
) -> SetChanges {
    let mut changes = SetChanges::default();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut unsettled: BTreeSet<&str> = BTreeSet::new();
    for (advertisement, prefixes) in shared {
        let current = now
            .values()
            .filter(|s| s.advertisement == *advertisement)
            .map(|s| s.shards)
            .max();
        for (name, spec) in shards(advertisement, prefixes, current) {
            match now.get(&name) {
                None => {
                    unsettled.insert(advertisement);
                    changes.apply.push((name.clone(), spec));
                }
                Some(seen) if *seen != spec => changes.apply.push((name.clone(), spec)),
                Some(_) => {}
            }
            wanted.insert(name);
        }
    }
    changes.delete = now
        .iter()
        .filter(|(name, set)| {
            !wanted.contains(*name) && !unsettled.contains(set.advertisement.as_str())
        })
        .map(|(name, _)| name.clone())
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_api::prefixset::{MAX_PREFIXES, SharedPrefixes};
    use std::collections::BTreeMap;

    fn node(name: &str) -> Node {
        Node {
            name: name.to_string(),
            labels: BTreeMap::new(),
            ready: true,
            excluded: false,
            speaker_alive: true,
            network_unavailable: false,
        }
    }

    fn peer(name: &str, address: &str) -> Peer {
        Peer {
            session: serde_json::from_value(serde_json::json!({
                "name": name, "myASN": 64512, "peerASN": 64500,
                "peerAddress": address, "peerPort": 179,
                "holdTime": "90s", "keepaliveTime": "30s", "connectTime": "10s",
            }))
            .unwrap(),
            node_selectors: Vec::new(),
        }
    }

    fn advertisement() -> Advertisement {
        Advertisement {
            name: "adv".to_string(),
            pools: Pools::All,
            node_selectors: Vec::new(),
            service_selectors: Vec::new(),
            peers: Vec::new(),
            aggregation_v4: 32,
            aggregation_v6: 128,
            communities: Vec::new(),
            local_pref: None,
        }
    }

    fn service(name: &str, ips: &[&str]) -> Announced {
        Announced {
            service: ServiceKey::new("default", name),
            labels: [("app".to_string(), name.to_string())].into(),
            ips: ips
                .iter()
                .map(|ip| (ip.parse().unwrap(), Some("pool".to_string())))
                .collect(),
            local: false,
            endpoint_nodes: BTreeSet::new(),
            current: None,
            standby: None,
            avoid: None,
        }
    }

    /// The session as its speaker resolves it: its own prefixes and those of
    /// the PrefixSets written for the advertisements it names.
    fn resolved(plan: &Plan, node: &str, peer: &str) -> Option<BgpSession> {
        let mut seen = SharedPrefixes::default();
        for (name, shared) in &plan.shared {
            for (object, set) in shards(name, shared, None) {
                seen.set(&object, set);
            }
        }
        let session = plan.nodes[node].iter().find(|s| s.name == peer)?;
        seen.resolve(std::slice::from_ref(session)).pop()
    }

    fn prefixes(plan: &Plan, node: &str, peer: &str) -> Vec<String> {
        resolved(plan, node, peer)
            .map(|s| s.prefixes.iter().map(|p| p.prefix.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_fit_node_advertises_to_every_peer_of_the_ips_family() {
        let nodes = [node("a"), node("b")];
        let peers = [peer("v4", "10.0.0.1"), peer("v6", "fd00::1")];
        let services = [service("web", &["172.20.0.5", "fd20::5"])];
        let plan = plan_bgp(&nodes, &peers, &[advertisement()], &services);
        for n in ["a", "b"] {
            assert_eq!(prefixes(&plan, n, "v4"), vec!["172.20.0.5/32"]);
            assert_eq!(prefixes(&plan, n, "v6"), vec!["fd20::5/128"]);
        }
        let Outcome::Advertised(used) = &plan.services[&ServiceKey::new("default", "web")] else {
            panic!("{plan:?}");
        };
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn a_dual_stack_peer_carries_both_families_and_a_single_family_one_its_own() {
        let mut both = peer("both", "10.0.0.1");
        both.session.dual_stack_address_family = true;
        let plan = plan_bgp(
            &[node("a")],
            &[both],
            &[advertisement()],
            &[service("web", &["172.20.0.5", "fd20::5"])],
        );
        assert_eq!(
            prefixes(&plan, "a", "both"),
            vec!["172.20.0.5/32", "fd20::5/128"]
        );
        let plan = plan_bgp(
            &[node("a")],
            &[peer("v4", "10.0.0.1")],
            &[advertisement()],
            &[service("six", &["fd20::6"])],
        );
        assert!(prefixes(&plan, "a", "v4").is_empty());
        let outcome = format!("{:?}", plan.services[&ServiceKey::new("default", "six")]);
        assert!(
            outcome.contains("no selected BGPPeer carrying IPv6"),
            "{outcome}"
        );
    }

    #[test]
    fn aggregation_merges_prefixes_and_communities_join() {
        let mut wide = advertisement();
        wide.aggregation_v4 = 24;
        wide.communities = vec!["65000:1".into()];
        let mut other = advertisement();
        other.name = "other".into();
        other.aggregation_v4 = 24;
        other.communities = vec!["65000:2".into()];
        other.local_pref = Some(200);
        let plan = plan_bgp(
            &[node("a")],
            &[peer("r", "10.0.0.1")],
            &[wide, other],
            &[service("x", &["172.20.0.5"]), service("y", &["172.20.0.9"])],
        );
        let session = resolved(&plan, "a", "r").unwrap();
        assert_eq!(session.prefixes.len(), 1);
        assert_eq!(session.prefixes[0].prefix, "172.20.0.0/24");
        assert_eq!(session.prefixes[0].communities, vec!["65000:1", "65000:2"]);
        assert_eq!(session.prefixes[0].local_pref, Some(200));
    }

    #[test]
    fn unfit_nodes_keep_their_sessions_but_advertise_nothing() {
        let mut down = node("b");
        down.ready = false;
        let mut dead = node("c");
        dead.speaker_alive = false;
        let mut unavailable = node("d");
        unavailable.network_unavailable = true;
        let plan = plan_bgp(
            &[node("a"), down, dead, unavailable],
            &[peer("r", "10.0.0.1")],
            &[advertisement()],
            &[service("web", &["172.20.0.5"])],
        );
        assert_eq!(prefixes(&plan, "a", "r"), vec!["172.20.0.5/32"]);
        assert_eq!(plan.nodes["b"].len(), 1, "the session stays up");
        assert!(prefixes(&plan, "b", "r").is_empty());
        assert!(plan.nodes["c"].is_empty(), "no speaker, no session");
        assert_eq!(plan.nodes["d"].len(), 1, "the session stays up");
        assert!(
            prefixes(&plan, "d", "r").is_empty(),
            "NetworkUnavailable: nothing advertised"
        );
    }

    #[test]
    fn local_services_are_advertised_only_from_nodes_with_endpoints() {
        let mut web = service("web", &["172.20.0.5"]);
        web.local = true;
        web.endpoint_nodes.insert("b".to_string());
        let plan = plan_bgp(
            &[node("a"), node("b")],
            &[peer("r", "10.0.0.1")],
            &[advertisement()],
            std::slice::from_ref(&web),
        );
        assert!(prefixes(&plan, "a", "r").is_empty());
        assert_eq!(prefixes(&plan, "b", "r"), vec!["172.20.0.5/32"]);
        web.endpoint_nodes.clear();
        let plan = plan_bgp(
            &[node("a"), node("b")],
            &[peer("r", "10.0.0.1")],
            &[advertisement()],
            &[web],
        );
        assert_eq!(
            plan.services[&ServiceKey::new("default", "web")],
            Outcome::NoLocalEndpoints
        );
    }

    #[test]
    fn peers_and_pools_of_an_advertisement_narrow_it() {
        let mut only = advertisement();
        only.peers = vec!["r1".into()];
        only.pools = Pools::Named(["other".to_string()].into());
        let plan = plan_bgp(
            &[node("a")],
            &[peer("r1", "10.0.0.1"), peer("r2", "10.0.0.2")],
            &[only.clone()],
            &[service("web", &["172.20.0.5"])],
        );
        assert_eq!(
            plan.services[&ServiceKey::new("default", "web")],
            Outcome::NoAdvertisement
        );
        only.pools = Pools::All;
        let plan = plan_bgp(
            &[node("a")],
            &[peer("r1", "10.0.0.1"), peer("r2", "10.0.0.2")],
            &[only],
            &[service("web", &["172.20.0.5"])],
        );
        assert_eq!(prefixes(&plan, "a", "r1"), vec!["172.20.0.5/32"]);
        assert!(prefixes(&plan, "a", "r2").is_empty());
    }

    #[test]
    fn service_selectors_pick_the_services_an_advertisement_carries() {
        let selector = |app: &str| -> Selector {
            Selector::from(
                &serde_json::from_value(serde_json::json!({"matchLabels": {"app": app}})).unwrap(),
            )
        };
        let mut web_only = advertisement();
        web_only.service_selectors = vec![selector("web")];
        let mut to_r2 = advertisement();
        to_r2.name = "db-to-r2".into();
        to_r2.peers = vec!["r2".into()];
        to_r2.service_selectors = vec![selector("db")];
        let services = [
            service("web", &["172.20.0.5"]),
            service("db", &["172.20.0.6"]),
            service("cache", &["172.20.0.7"]),
        ];
        let plan = plan_bgp(
            &[node("a")],
            &[peer("r1", "10.0.0.1"), peer("r2", "10.0.0.2")],
            &[web_only, to_r2],
            &services,
        );
        assert_eq!(prefixes(&plan, "a", "r1"), vec!["172.20.0.5/32"]);
        assert_eq!(
            prefixes(&plan, "a", "r2"),
            vec!["172.20.0.5/32", "172.20.0.6/32"]
        );
        assert_eq!(
            plan.services[&ServiceKey::new("default", "cache")],
            Outcome::NotSelected(vec!["adv".into(), "db-to-r2".into()])
        );
    }

    fn many(count: u32) -> Vec<Announced> {
        (0..count)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0xac14_0000 + i).to_string();
                service(&format!("s{i}"), &[&ip])
            })
            .collect()
    }

    #[test]
    fn cluster_prefixes_are_shared_once_not_copied_into_every_node() {
        let nodes: Vec<Node> = (0..50).map(|i| node(&format!("n{i}"))).collect();
        let plan = plan_bgp(
            &nodes,
            &[peer("r", "10.0.0.1")],
            &[advertisement()],
            &many(5_000),
        );
        assert_eq!(plan.shared["adv"].prefixes.len(), 5_000);
        for sessions in plan.nodes.values() {
            assert!(sessions[0].prefixes.is_empty(), "no copy per node");
            assert_eq!(sessions[0].advertisements, vec!["adv"]);
        }
        assert_eq!(prefixes(&plan, "n7", "r").len(), 5_000);
    }

    #[test]
    fn fifty_thousand_prefixes_fit_in_shards_far_below_the_cap() {
        let plan = plan_bgp(
            &[node("a")],
            &[peer("r", "10.0.0.1")],
            &[advertisement()],
            &many(50_000),
        );
        let sets = shards("adv", &plan.shared["adv"], None);
        assert_eq!(sets.len(), 128);
        let total: usize = sets.iter().map(|(_, s)| s.prefixes.len()).sum();
        assert_eq!(total, 50_000);
        let largest = sets.iter().map(|(_, s)| s.prefixes.len()).max().unwrap();
        assert!(
            largest < (MAX_PREFIXES / 4) as usize,
            "largest shard {largest}"
        );
        assert!(
            sets.iter()
                .all(|(_, s)| s.count as usize == s.prefixes.len())
        );
        assert_eq!(sets[3].0, "adv-3of128");
    }

    #[test]
    fn one_more_service_changes_one_shard() {
        let advertisements = [advertisement()];
        let before = plan_bgp(
            &[node("a")],
            &[peer("r", "10.0.0.1")],
            &advertisements,
            &many(4_000),
        );
        let after = plan_bgp(
            &[node("a")],
            &[peer("r", "10.0.0.1")],
            &advertisements,
            &many(4_001),
        );
        let old = shards("adv", &before.shared["adv"], None);
        let count = old[0].1.shards;
        let new = shards("adv", &after.shared["adv"], Some(count));
        let changed = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1);
        assert_eq!(before.nodes, after.nodes, "no NodeAnnouncement changes");
    }

    #[test]
    fn the_shard_count_grows_and_shrinks_with_slack() {
        assert_eq!(shard_count(0, None), 1);
        assert_eq!(shard_count(512, None), 1);
        assert_eq!(shard_count(513, None), 2);
        assert_eq!(shard_count(20_000, None), 64);
        // Kept while the average stays within bounds.
        assert_eq!(shard_count(1_000, Some(1)), 1);
        assert_eq!(shard_count(1_025, Some(1)), 4);
        assert_eq!(shard_count(20_000, Some(64)), 64);
        assert_eq!(shard_count(8_200, Some(64)), 64);
        assert_eq!(shard_count(8_000, Some(64)), 16);
        assert_eq!(
            shard_count(100, Some(3)),
            1,
            "not a power of two: recomputed"
        );
    }

    #[test]
    fn long_advertisement_names_give_valid_distinct_shard_names() {
        let long = format!("{}.x", "a".repeat(250));
        let other = format!("{}.y", "a".repeat(250));
        let (a, b) = (shard_name(&long, 1, 2), shard_name(&other, 1, 2));
        assert!(a.len() <= 253 && b.len() <= 253);
        assert_ne!(a, b);
        assert!(a.ends_with("-1of2"));
    }

    #[test]
    fn a_reshard_writes_the_new_shards_before_deleting_the_old() {
        let grow = |count: u32| {
            plan_bgp(
                &[node("a")],
                &[peer("r", "10.0.0.1")],
                &[advertisement()],
                &many(count),
            )
            .shared
        };
        // 500 prefixes in one shard, in the store.
        let mut now: BTreeMap<String, PrefixSetSpec> =
            shards("adv", &grow(500)["adv"], None).into_iter().collect();
        assert_eq!(now.keys().collect::<Vec<_>>(), vec!["adv-0of1"]);
        // 1,100: four shards are written, the old one stays meanwhile.
        let changes = prefix_set_changes(&grow(1_100), &now);
        assert_eq!(changes.apply.len(), 4);
        assert!(changes.delete.is_empty(), "{changes:?}");
        // Three of them landed, then the prefixes changed again: still kept.
        for (name, spec) in changes.apply.iter().take(3) {
            now.insert(name.clone(), spec.clone());
        }
        let changes = prefix_set_changes(&grow(1_101), &now);
        assert!(changes.delete.is_empty());
        // All four exist (one already out of date): the old shard goes.
        for (name, spec) in changes.apply {
            now.insert(name, spec);
        }
        let changes = prefix_set_changes(&grow(1_102), &now);
        assert_eq!(changes.delete, vec!["adv-0of1"]);
        assert_eq!(changes.apply.len(), 1, "the one shard the new prefix is in");
        // The advertisement gone: every shard goes at once.
        let gone = prefix_set_changes(&BTreeMap::new(), &now);
        assert_eq!(gone.delete.len(), 5);
        assert!(gone.apply.is_empty());
    }

    #[test]
    fn why_no_node_advertises_stays_short_on_a_large_cluster() {
        let nodes: Vec<Node> = (0..50)
            .map(|i| {
                let mut n = node(&format!("n{i:02}"));
                n.ready = false;
                n
            })
            .collect();
        let plan = plan_bgp(
            &nodes,
            &[peer("r", "10.0.0.1")],
            &[advertisement()],
            &[service("web", &["172.20.0.5"])],
        );
        let Outcome::NoEligibleNode(why) = &plan.services[&ServiceKey::new("default", "web")]
        else {
            panic!("{plan:?}");
        };
        assert_eq!(
            why,
            "n00: not Ready; n01: not Ready; n02: not Ready and 47 more"
        );
    }
}
