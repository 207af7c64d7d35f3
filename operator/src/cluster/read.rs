//! The cluster as plain values: Nodes, speaker Leases, BGPPeers,
//! advertisements, EndpointSlices and what the speakers report in their
//! NodeAnnouncements, read into the types the planner takes. No decisions
//! here: only reading.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::address::{parse_ip, parse_ipv4};
use ferrolb_api::constants::EXCLUDE_LABEL;
use ferrolb_api::nodeannouncement::{BfdSettings, BgpSession, L2Phase, L2Role};
use ferrolb_api::selector::{Selector, label_selector_matches};
use ferrolb_api::timer::parse_timer;
use ferrolb_api::{
    BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement, NodeAnnouncement,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::plan::allocation::ServiceKey;
use crate::plan::announce::{self, Pools, bgp};
use crate::plan::conditions::Takeovers;

pub use ferrolb_api::constants::speaker_lease;

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

/// The Leases alive at `now` (by name), and how long until the first of
/// them runs out unless renewed. A renewal that leaves the first set as it was
/// changes no decision: the controller passes only when it changes, or when
/// that time comes.
pub fn liveness(
    leases: &[Arc<Lease>],
    now: Timestamp,
) -> (BTreeSet<String>, Option<std::time::Duration>) {
    let mut live = BTreeSet::new();
    let mut first_expiry: Option<i64> = None;
    for lease in leases.iter().filter(|l| alive(l, now)) {
        live.insert(lease.name_any());
        if let Some(spec) = &lease.spec
            && let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())
        {
            // `alive` holds through the whole second it ends in.
            let ends =
                renewed.0.as_second() + i64::from(spec.lease_duration_seconds.unwrap_or(0)) + 1;
            first_expiry = Some(first_expiry.map_or(ends, |e| e.min(ends)));
        }
    }
    let until = first_expiry.map(|ends| {
        let millis = (ends * 1000 - now.as_millisecond()).max(0);
        std::time::Duration::from_millis(millis as u64)
    });
    (live, until)
}

/// Reads takeovers from the NodeAnnouncement statuses.
pub fn takeovers(announcements: &BTreeMap<String, Arc<NodeAnnouncement>>) -> Takeovers {
    let mut found = Takeovers::default();
    for (node, announcement) in announcements {
        let Some(status) = &announcement.status else {
            continue;
        };
        for state in status.l2.iter().filter(|s| s.state == L2Phase::TakenOver) {
            if let Some(from) = &state.taken_from {
                found.from.insert(from.clone());
            }
            for ip in state.ips.iter() {
                found.by.insert(ip, node.clone());
            }
        }
    }
    found
}

/// Per IP (as text), the node whose spec makes it active now.
pub fn current_active(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
) -> BTreeMap<std::net::IpAddr, String> {
    let mut current = BTreeMap::new();
    for (node, announcement) in announcements {
        for group in announcement
            .spec
            .l2
            .iter()
            .filter(|g| g.role == L2Role::Active)
        {
            for ip in group.ips.iter() {
                current.insert(ip, node.clone());
            }
        }
    }
    current
}

/// Per node, where its speaker answers failover probes.
pub fn probe_addresses(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
) -> BTreeMap<String, SocketAddr> {
    announcements
        .iter()
        .filter_map(|(node, a)| {
            let address = a.status.as_ref()?.probe_address.as_deref()?;
            match address.parse() {
                Ok(address) => Some((node.clone(), address)),
                Err(_) => {
                    tracing::warn!(%node, address, "a speaker reports a probe address that is not ip:port; ignored");
                    None
                }
            }
        })
        .collect()
}

/// Nodes as the planner sees them: a node some standby took IPs over from
/// counts as having no live speaker, even before its Lease runs out.
pub fn nodes(
    nodes: &[Arc<Node>],
    live: &BTreeSet<String>,
    takeovers: &Takeovers,
    ignore_exclude_lb: bool,
) -> Vec<announce::Node> {
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
                speaker_alive: live.contains(&speaker_lease(&name))
                    && !takeovers.from.contains(&name),
                excluded: !ignore_exclude_lb && node.labels().contains_key(EXCLUDE_LABEL),
                labels: node.labels().clone(),
                ready,
                name,
            }
        })
        .collect()
}

/// The pools an advertisement covers: listed by name or selected by label;
/// every pool when it says neither.
fn resolve_pools(
    names: &[String],
    selectors: &[LabelSelector],
    pools: &[Arc<IPAddressPool>],
) -> Pools {
    if names.is_empty() && selectors.is_empty() {
        return Pools::All;
    }
    let mut selected: BTreeSet<String> = names.iter().cloned().collect();
    for pool in pools {
        if selectors
            .iter()
            .any(|s| label_selector_matches(s, pool.labels()))
        {
            selected.insert(pool.name_any());
        }
    }
    Pools::Named(selected)
}

/// A BFDProfile as a session runs it.
pub fn bfd_settings(profile: &BFDProfile) -> BfdSettings {
    let spec = &profile.spec;
    BfdSettings {
        profile: profile.name_any(),
        receive_interval: spec.receive_interval,
        transmit_interval: spec.transmit_interval,
        detect_multiplier: spec.detect_multiplier,
        passive_mode: spec.passive_mode,
        minimum_ttl: spec.minimum_ttl,
        authentication: spec.authentication.clone(),
    }
}

/// BGPPeers as session templates, defaults resolved (keepalive a third of the
/// hold time, connect time 10 s, the BFDProfile named, when it exists).
pub fn bgp_peers(peers: &[Arc<BGPPeer>], profiles: &[Arc<BFDProfile>]) -> Vec<bgp::Peer> {
    peers
        .iter()
        .filter_map(|peer| {
            let spec = &peer.spec;
            let name = peer.name_any();
            // The CRD's rules are the parsers': a value that does not parse
            // never got into the store (skipped, should one ever).
            let parsed = (|| -> Result<_, String> {
                let hold = parse_timer(&spec.hold_time).map_err(|e| e.to_string())?;
                let or = |text: &Option<String>, default: Duration| {
                    text.as_deref()
                        .map_or(Ok(default), parse_timer)
                        .map_err(|e| e.to_string())
                };
                let keepalive = or(&spec.keepalive_time, hold / 3)?;
                let connect = or(&spec.connect_time, Duration::from_secs(10))?;
                let address = parse_ip(&spec.peer_address).map_err(|e| e.to_string())?;
                let source = spec
                    .source_address
                    .as_deref()
                    .map(parse_ip)
                    .transpose()
                    .map_err(|e| e.to_string())?;
                let router_id = spec
                    .router_id
                    .as_deref()
                    .map(parse_ipv4)
                    .transpose()
                    .map_err(|e| e.to_string())?;
                Ok((hold, keepalive, connect, address, source, router_id))
            })();
            let (hold, keepalive, connect, address, source, router_id) = match parsed {
                Ok(parsed) => parsed,
                Err(why) => {
                    tracing::warn!(peer = %name, %why, "BGPPeer not read");
                    return None;
                }
            };
            Some(bgp::Peer {
                session: BgpSession {
                    name,
                    my_asn: spec.my_asn,
                    peer_asn: spec.peer_asn,
                    dynamic_asn: spec.dynamic_asn,
                    peer_address: address,
                    peer_port: spec.peer_port,
                    source_address: source,
                    router_id,
                    hold_time: hold.into(),
                    keepalive_time: keepalive.into(),
                    connect_time: connect.into(),
                    ebgp_multi_hop: spec.ebgp_multi_hop,
                    enable_graceful_restart: spec.enable_graceful_restart,
                    password_secret_ref: spec.password_secret_ref.clone(),
                    bfd: spec.bfd_profile.as_ref().and_then(|wanted| {
                        profiles
                            .iter()
                            .find(|p| p.name_any() == *wanted)
                            .map(|p| bfd_settings(p))
                    }),
                    prefixes: Vec::new(),
                    advertisements: Vec::new(),
                },
                node_selectors: spec.node_selectors.iter().map(Selector::from).collect(),
            })
        })
        .collect()
}

/// BGPAdvertisements with their pool selection resolved.
pub fn bgp_advertisements(
    advertisements: &[Arc<BGPAdvertisement>],
    pools: &[Arc<IPAddressPool>],
) -> Vec<bgp::Advertisement> {
    advertisements
        .iter()
        .map(|a| {
            let spec = &a.spec;
            bgp::Advertisement {
                name: a.name_any(),
                pools: resolve_pools(
                    &spec.ip_address_pools,
                    &spec.ip_address_pool_selectors,
                    pools,
                ),
                node_selectors: spec.node_selectors.iter().map(Selector::from).collect(),
                peers: spec.peers.clone(),
                aggregation_v4: spec.aggregation_length,
                aggregation_v6: spec.aggregation_length_v6,
                communities: spec.communities.clone(),
                local_pref: spec.local_pref,
            }
        })
        .collect()
}

/// L2Advertisements with their pool selection resolved against the pools.
pub fn advertisements(
    advertisements: &[Arc<L2Advertisement>],
    pools: &[Arc<IPAddressPool>],
) -> Vec<announce::L2Advertisement> {
    advertisements
        .iter()
        .map(|a| {
            let spec = &a.spec;
            announce::L2Advertisement {
                pools: resolve_pools(
                    &spec.ip_address_pools,
                    &spec.ip_address_pool_selectors,
                    pools,
                ),
                node_selectors: spec.node_selectors.iter().map(Selector::from).collect(),
                interfaces: spec.interfaces.clone(),
            }
        })
        .collect()
}

/// Nodes with a ready (or serving) endpoint of each Service, from the
/// EndpointSlices labelled with its name.
pub fn endpoint_nodes(slices: &[Arc<EndpointSlice>]) -> BTreeMap<ServiceKey, BTreeSet<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, renewed_second: i64, duration: i32) -> Arc<Lease> {
        let mut lease = Lease::default();
        lease.metadata.name = Some(name.to_string());
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                Timestamp::from_second(renewed_second).unwrap(),
            )),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        });
        Arc::new(lease)
    }

    #[test]
    fn a_renewal_changes_no_liveness_and_the_first_expiry_is_the_next_wake() {
        let now = Timestamp::from_second(1_000).unwrap();
        let leases = [
            lease("speaker-a", 995, 15),
            lease("speaker-b", 998, 15),
            lease("speaker-dead", 900, 15),
        ];
        let (live, until) = liveness(&leases, now);
        assert_eq!(
            live,
            BTreeSet::from(["speaker-a".to_string(), "speaker-b".to_string()])
        );
        assert_eq!(until, Some(std::time::Duration::from_secs(11)));
        // speaker-a renews: the same set, a later first expiry.
        let renewed = [
            lease("speaker-a", 1_000, 15),
            leases[1].clone(),
            leases[2].clone(),
        ];
        let (again, until) = liveness(&renewed, now);
        assert_eq!(again, live);
        assert_eq!(until, Some(std::time::Duration::from_secs(14)));
        // Past speaker-b's end: it is gone.
        let (later, _) = liveness(&renewed, Timestamp::from_second(1_014).unwrap());
        assert_eq!(later, BTreeSet::from(["speaker-a".to_string()]));
    }
}
