//! The kube side of announcement planning: Nodes, speaker Leases,
//! L2Advertisements and EndpointSlices into the planner's plain values; its
//! plan into NodeAnnouncement specs and `ferrolb.io/Announced` verdicts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_api::address::format_ip;
use ferrolb_api::constants::condition::reason;
use ferrolb_api::nodeannouncement::{L2Announcement, L2Phase, L2Role};
use ferrolb_api::selector::{Selector, label_selector_matches};
use ferrolb_api::{IPAddressPool, L2Advertisement, NodeAnnouncement, NodeAnnouncementSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::allocation::{Assignment, ServiceKey};
use crate::announce::{self, Announced, Entry, Outcome, Pools, Role};
use crate::convert;
use crate::status::Verdict;

/// The name of a node's speaker Lease in the ferrolb namespace.
pub fn speaker_lease(node: &str) -> String {
    format!("speaker-{node}")
}

/// Whether a Lease was renewed within its duration.
fn alive(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    renewed.0.as_second() + i64::from(spec.lease_duration_seconds.unwrap_or(0)) >= now.as_second()
}

/// Nodes as the planner sees them.
pub fn nodes(
    nodes: &[std::sync::Arc<Node>],
    leases: &[std::sync::Arc<Lease>],
) -> Vec<announce::Node> {
    let now = Timestamp::now();
    let live: BTreeSet<String> = leases
        .iter()
        .filter(|l| alive(l, now))
        .map(|l| l.name_any())
        .collect();
    nodes
        .iter()
        .map(|node| {
            let name = node.name_any();
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            announce::Node {
                speaker_alive: live.contains(&speaker_lease(&name)),
                labels: node.labels().clone(),
                ready,
                name,
            }
        })
        .collect()
}

/// L2Advertisements with their pool selection resolved against the pools.
pub fn advertisements(
    advertisements: &[std::sync::Arc<L2Advertisement>],
    pools: &[std::sync::Arc<IPAddressPool>],
) -> Vec<announce::L2Advertisement> {
    advertisements
        .iter()
        .map(|a| {
            let spec = &a.spec;
            let selected = if spec.ip_address_pools.is_empty()
                && spec.ip_address_pool_selectors.is_empty()
            {
                Pools::All
            } else {
                let mut names: BTreeSet<String> = spec.ip_address_pools.iter().cloned().collect();
                for pool in pools {
                    if spec
                        .ip_address_pool_selectors
                        .iter()
                        .any(|s| label_selector_matches(s, pool.labels()))
                    {
                        names.insert(pool.name_any());
                    }
                }
                Pools::Named(names)
            };
            announce::L2Advertisement {
                pools: selected,
                node_selectors: spec.node_selectors.iter().map(Selector::from).collect(),
                interfaces: spec.interfaces.clone(),
            }
        })
        .collect()
}

/// Nodes with a ready (or serving) endpoint of each Service, from the
/// EndpointSlices labelled with its name.
pub fn endpoint_nodes(
    slices: &[std::sync::Arc<EndpointSlice>],
) -> BTreeMap<ServiceKey, BTreeSet<String>> {
    let mut map: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice.labels().get("kubernetes.io/service-name") else {
            continue;
        };
        let key = ServiceKey::new(slice.namespace().unwrap_or_default(), service.clone());
        let nodes = map.entry(key).or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let usable = conditions.ready.unwrap_or(true) || conditions.serving.unwrap_or(false);
            if let (true, Some(node)) = (usable, &endpoint.node_name) {
                nodes.insert(node.clone());
            }
        }
    }
    map
}

/// A Service with IPs, as the planner sees it.
pub fn announced(
    service: &Service,
    assignments: &[Assignment],
    endpoints: &BTreeMap<ServiceKey, BTreeSet<String>>,
) -> Announced {
    let key = convert::service_key(service);
    let local = service
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    Announced {
        ips: assignments.iter().map(|a| (a.ip, a.pool.clone())).collect(),
        local,
        endpoint_nodes: endpoints.get(&key).cloned().unwrap_or_default(),
        service: key,
    }
}

/// The NodeAnnouncement spec for a node's entries (BGP sessions come later).
pub fn spec(node: &str, entries: &[Entry]) -> NodeAnnouncementSpec {
    NodeAnnouncementSpec {
        node: Some(node.to_string()),
        l2: entries
            .iter()
            .map(|e| L2Announcement {
                ip: format_ip(e.ip),
                interfaces: e.interfaces.clone(),
                role: match e.role {
                    Role::Active => L2Role::Active,
                    Role::Standby(_) => L2Role::Standby,
                },
                standby_for: match &e.role {
                    Role::Active => None,
                    Role::Standby(node) => Some(node.clone()),
                },
                services: e.services.clone(),
            })
            .collect(),
        bgp: Vec::new(),
    }
}

/// Whether a node's speaker reports announcing every one of `ips`.
fn reported(announcement: Option<&NodeAnnouncement>, ips: &[IpAddr]) -> bool {
    let Some(status) = announcement.and_then(|a| a.status.as_ref()) else {
        return false;
    };
    ips.iter().all(|ip| {
        let ip = format_ip(*ip);
        status
            .l2
            .iter()
            .any(|s| s.ip == ip && matches!(s.state, L2Phase::Announcing | L2Phase::TakenOver))
    })
}

/// The Announced verdict for a Service with IPs.
pub fn verdict(
    outcome: Option<&Outcome>,
    ips: &[IpAddr],
    pools: &BTreeSet<String>,
    announcements: &BTreeMap<String, std::sync::Arc<NodeAnnouncement>>,
) -> Verdict {
    let listed = ips
        .iter()
        .map(|ip| format_ip(*ip))
        .collect::<Vec<_>>()
        .join(", ");
    match outcome {
        Some(Outcome::Announced { node, standby }) => {
            let standby = standby
                .as_ref()
                .map_or(" (no standby node)".to_string(), |s| {
                    format!(" (standby {s})")
                });
            if reported(announcements.get(node).map(|a| a.as_ref()), ips) {
                Verdict::yes(
                    reason::ANNOUNCED,
                    format!("L2: {listed} answered by node {node}{standby}"),
                )
            } else {
                Verdict::no(
                    reason::NOT_YET_APPLIED,
                    format!(
                        "L2: node {node} is to answer for {listed}{standby}; its speaker has not reported it yet"
                    ),
                )
            }
        }
        Some(Outcome::NoAdvertisement) | None => Verdict::no(
            reason::NO_ADVERTISEMENT,
            format!(
                "no L2Advertisement covers pool {}: create one that selects it",
                pools.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
        Some(Outcome::NoLocalEndpoints) => Verdict::no(
            reason::NO_LOCAL_ENDPOINTS,
            "externalTrafficPolicy is Local and no eligible node has a ready endpoint of this Service",
        ),
        Some(Outcome::NoEligibleNode(why)) => Verdict::no(
            reason::NO_ELIGIBLE_NODE,
            format!("no node may announce {listed}: {why}"),
        ),
    }
}
