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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_api::address::format_ip;
use ferrolb_api::nodeannouncement::{AdvertisedPrefix, BgpSession};

use super::{Announced, Node, Pools, unfit};
use crate::allocation::ServiceKey;
use crate::allocation::selector::{Selector, any_matches};

/// A BGPPeer as a session template (`prefixes` empty) with its node selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// The session every selected node opens; `name` is the BGPPeer's.
    pub session: BgpSession,
    /// Nodes that peer; empty for all.
    pub node_selectors: Vec<Selector>,
}

impl Peer {
    fn family_v4(&self) -> bool {
        !self.session.peer_address.contains(':')
    }
}

/// A BGPAdvertisement with its pool selection resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// The pools it covers.
    pub pools: Pools,
    /// Nodes that advertise; empty for all.
    pub node_selectors: Vec<Selector>,
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
    /// Advertised on these (node, peer) sessions.
    Advertised(BTreeSet<(String, String)>),
    /// No BGPAdvertisement covers its pool(s).
    NoAdvertisement,
    /// `externalTrafficPolicy: Local` and no eligible node has an endpoint.
    NoLocalEndpoints,
    /// No node may advertise; the message says why.
    NoEligibleNode(String),
}

/// Sessions per node (every node listed, possibly with none) and the outcome
/// per Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Node → its sessions with their prefixes, sorted by name.
    pub nodes: BTreeMap<String, Vec<BgpSession>>,
    /// Service → where its IPs are advertised.
    pub services: BTreeMap<ServiceKey, Outcome>,
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

/// Plans BGP sessions and prefixes.
pub fn plan_bgp(
    nodes: &[Node],
    peers: &[Peer],
    advertisements: &[Advertisement],
    services: &[Announced],
) -> Plan {
    // (node, peer) → prefix → (communities, local-pref)
    type Prefixes = BTreeMap<String, (BTreeSet<String>, Option<u32>)>;
    let mut sessions: BTreeMap<(String, usize), Prefixes> = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.speaker_alive) {
        for (p, peer) in peers.iter().enumerate() {
            if any_matches(&peer.node_selectors, &node.labels) {
                sessions.insert((node.name.clone(), p), Prefixes::new());
            }
        }
    }
    let mut plan = Plan {
        nodes: nodes.iter().map(|n| (n.name.clone(), Vec::new())).collect(),
        services: BTreeMap::new(),
    };
    for service in services {
        let mut used: BTreeSet<(String, String)> = BTreeSet::new();
        let mut covered = false;
        let mut reasons: BTreeSet<String> = BTreeSet::new();
        let mut lacking_endpoints = false;
        for (ip, pool) in &service.ips {
            let Some(pool) = pool else { continue };
            for advertisement in advertisements.iter().filter(|a| a.pools.covers(pool)) {
                covered = true;
                let text = prefix(*ip, advertisement);
                for node in nodes {
                    if !any_matches(&advertisement.node_selectors, &node.labels) {
                        reasons
                            .insert(format!("{}: not selected by a BGPAdvertisement", node.name));
                        continue;
                    }
                    if let Some(why) = unfit(node) {
                        reasons.insert(format!("{}: {why}", node.name));
                        continue;
                    }
                    if service.local && !service.endpoint_nodes.contains(&node.name) {
                        lacking_endpoints = true;
                        continue;
                    }
                    let mut peered = false;
                    for (p, peer) in peers.iter().enumerate() {
                        let wanted = advertisement.peers.is_empty()
                            || advertisement.peers.contains(&peer.session.name);
                        if !wanted || peer.family_v4() != ip.is_ipv4() {
                            continue;
                        }
                        let Some(prefixes) = sessions.get_mut(&(node.name.clone(), p)) else {
                            continue;
                        };
                        peered = true;
                        let entry = prefixes.entry(text.clone()).or_default();
                        entry.0.extend(advertisement.communities.iter().cloned());
                        entry.1 = entry.1.max(advertisement.local_pref);
                        used.insert((node.name.clone(), peer.session.name.clone()));
                    }
                    if !peered {
                        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                        reasons.insert(format!(
                            "{}: no selected BGPPeer of the {family} family peers with it",
                            node.name
                        ));
                    }
                }
            }
        }
        let outcome = if !covered {
            Outcome::NoAdvertisement
        } else if !used.is_empty() {
            Outcome::Advertised(used)
        } else if lacking_endpoints {
            Outcome::NoLocalEndpoints
        } else if reasons.is_empty() {
            Outcome::NoEligibleNode("there are no nodes".to_string())
        } else {
            Outcome::NoEligibleNode(reasons.into_iter().collect::<Vec<_>>().join("; "))
        };
        plan.services.insert(service.service.clone(), outcome);
    }
    for ((node, p), prefixes) in sessions {
        let mut session = peers[p].session.clone();
        session.prefixes = prefixes
            .into_iter()
            .map(|(prefix, (communities, local_pref))| AdvertisedPrefix {
                prefix,
                communities: communities.into_iter().collect(),
                local_pref,
            })
            .collect();
        plan.nodes.entry(node).or_default().push(session);
    }
    for sessions in plan.nodes.values_mut() {
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str) -> Node {
        Node {
            name: name.to_string(),
            labels: BTreeMap::new(),
            ready: true,
            excluded: false,
            speaker_alive: true,
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
            pools: Pools::All,
            node_selectors: Vec::new(),
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
            ips: ips
                .iter()
                .map(|ip| (ip.parse().unwrap(), Some("pool".to_string())))
                .collect(),
            local: false,
            endpoint_nodes: BTreeSet::new(),
            current: None,
        }
    }

    fn prefixes(plan: &Plan, node: &str, peer: &str) -> Vec<String> {
        plan.nodes[node]
            .iter()
            .find(|s| s.name == peer)
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
    fn aggregation_merges_prefixes_and_communities_join() {
        let mut wide = advertisement();
        wide.aggregation_v4 = 24;
        wide.communities = vec!["65000:1".into()];
        let mut other = advertisement();
        other.aggregation_v4 = 24;
        other.communities = vec!["65000:2".into()];
        other.local_pref = Some(200);
        let plan = plan_bgp(
            &[node("a")],
            &[peer("r", "10.0.0.1")],
            &[wide, other],
            &[service("x", &["172.20.0.5"]), service("y", &["172.20.0.9"])],
        );
        let session = &plan.nodes["a"][0];
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
        let plan = plan_bgp(
            &[node("a"), down, dead],
            &[peer("r", "10.0.0.1")],
            &[advertisement()],
            &[service("web", &["172.20.0.5"])],
        );
        assert_eq!(prefixes(&plan, "a", "r"), vec!["172.20.0.5/32"]);
        assert_eq!(plan.nodes["b"].len(), 1, "the session stays up");
        assert!(prefixes(&plan, "b", "r").is_empty());
        assert!(plan.nodes["c"].is_empty(), "no speaker, no session");
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
}
