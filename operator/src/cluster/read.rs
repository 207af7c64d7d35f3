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
use ferrolb_api::nodeannouncement::{BfdSettings, BgpSession, FailoverPhase, L2Phase, L2Role};
use ferrolb_api::selector::{Selector, label_selector_matches};
use ferrolb_api::timer::parse_timer;
use ferrolb_api::{
    BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement, NodeAnnouncement,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
#[cfg(test)]
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::plan::allocation::ServiceKey;
use crate::plan::announce::{self, Pools, bgp};
use crate::plan::conditions::Takeovers;
use crate::plan::liveness::LeaseView;

pub use ferrolb_api::constants::speaker_lease;

/// Leases as liveness reads them, by the one rule of [`ferrolb_api::lease`]:
/// what changes at each renewal (never compared with a clock) and the
/// duration. A released Lease has no renewal.
pub fn lease_views(leases: &[Arc<Lease>]) -> Vec<LeaseView> {
    leases
        .iter()
        .map(|lease| {
            let spec = lease.spec.as_ref();
            LeaseView {
                name: lease.name_any(),
                renewal: spec.and_then(ferrolb_api::lease::renewal),
                duration: spec.map(ferrolb_api::lease::duration).unwrap_or_default(),
            }
        })
        .collect()
}

/// Reads takeovers from the NodeAnnouncement statuses. A report counts only
/// while its reporter's speaker is alive, and only for the IPs that the
/// reporter's spec has it stand by for, for the node the report names: a
/// report from a dead node, or one its spec has moved on from, counts for
/// nothing, and no status can claim an IP or a node its spec never gave it.
/// The spec (the operator's own writing) also bounds the work: a reported
/// range is only ever asked whether it holds an IP, never expanded.
pub fn takeovers(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    live: &BTreeSet<String>,
) -> Takeovers {
    let mut found = Takeovers::default();
    for (node, announcement) in announcements {
        if !live.contains(&speaker_lease(node)) {
            continue;
        }
        let Some(status) = &announcement.status else {
            continue;
        };
        for state in status.l2.iter().filter(|s| s.state == L2Phase::TakenOver) {
            let Some(from) = &state.taken_from else {
                continue;
            };
            let standing_by = announcement.spec.l2.iter().filter(|g| {
                g.role == L2Role::Standby
                    && !g.arming
                    && g.standby_for.as_deref() == Some(from.as_str())
            });
            for group in standing_by {
                for ip in group.ips.iter().filter(|ip| state.ips.contains(ip)) {
                    found.by.insert(ip, node.clone());
                    found.from.insert(ip, from.clone());
                }
            }
        }
    }
    found
}

/// Per IP, the node whose spec makes it active now.
pub fn current_active(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
) -> BTreeMap<std::net::IpAddr, String> {
    in_role(announcements, L2Role::Active)
        .into_iter()
        .map(|(ip, (node, _))| (ip, node))
        .collect()
}

/// Per IP, the node whose spec makes it stand by for it now.
pub fn current_standby(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
) -> BTreeMap<std::net::IpAddr, String> {
    standing_by(announcements)
        .into_iter()
        .map(|(ip, (node, _))| (ip, node))
        .collect()
}

/// Per IP, the node whose spec gives it `role` for it, and the other node
/// its group names (the active node a standby stands by for). An arming
/// standby is not standing by yet.
fn in_role(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
    role: L2Role,
) -> BTreeMap<std::net::IpAddr, (String, String)> {
    let mut found = BTreeMap::new();
    for (node, announcement) in announcements {
        for group in announcement
            .spec
            .l2
            .iter()
            .filter(|g| g.role == role && !g.arming)
        {
            let other = group
                .standby_for
                .as_ref()
                .or(group.standby.as_ref())
                .cloned()
                .unwrap_or_default();
            for ip in group.ips.iter() {
                found.insert(ip, (node.clone(), other.clone()));
            }
        }
    }
    found
}

/// Per IP, the node whose spec has it stand by now (arming aside), and the
/// active node it stands by for.
pub fn standing_by(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
) -> BTreeMap<std::net::IpAddr, (String, String)> {
    in_role(announcements, L2Role::Standby)
}

/// The (standby, active) pairs whose standby reports, in its own status,
/// that it heard the active node's speaker (`Armed`) or that it cannot
/// (`Unavailable`): a new standby arming towards that node is done waiting.
pub fn failover_settled(
    announcements: &BTreeMap<String, Arc<NodeAnnouncement>>,
) -> BTreeSet<(String, String)> {
    announcements
        .iter()
        .flat_map(|(node, a)| {
            a.status
                .iter()
                .flat_map(|s| s.failover.iter())
                .filter(|f| f.state != FailoverPhase::Pending)
                .map(move |f| (node.clone(), f.node.clone()))
        })
        .collect()
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

/// Nodes as the planner sees them. Only the cluster's own evidence takes a
/// node out: its speaker's Lease (as the operator observed it), its Ready
/// and NetworkUnavailable conditions. A standby's takeover report moves the IPs of that pair and
/// nothing else (see [`takeovers`]).
pub fn nodes(
    nodes: &[Arc<Node>],
    live: &BTreeSet<String>,
    ignore_exclude_lb: bool,
) -> Vec<announce::Node> {
    nodes
        .iter()
        .map(|node| {
            let name = node.name_any();
            let condition = |kind: &str| {
                node.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == kind))
                    .is_some_and(|c| c.status == "True")
            };
            announce::Node {
                ready: condition("Ready"),
                network_unavailable: condition("NetworkUnavailable"),
                speaker_alive: live.contains(&speaker_lease(&name)),
                excluded: !ignore_exclude_lb && node.labels().contains_key(EXCLUDE_LABEL),
                labels: node.labels().clone(),
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
                    dual_stack_address_family: spec.dual_stack_address_family,
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
                service_selectors: spec.service_selectors.iter().map(Selector::from).collect(),
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
                name: a.name_any(),
                service_selectors: spec.service_selectors.iter().map(Selector::from).collect(),
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(name: &str, holder: Option<&str>, renewed_second: i64) -> Arc<Lease> {
        let mut lease = Lease::default();
        lease.metadata.name = Some(name.to_string());
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_second).unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        });
        Arc::new(lease)
    }

    fn announcement(node: &str, spec: &str, status: &str) -> (String, Arc<NodeAnnouncement>) {
        let json = format!(
            r#"{{"apiVersion": "ferrolb.io/v1alpha1", "kind": "NodeAnnouncement",
                "metadata": {{"name": "{node}"}}, "spec": {spec}, "status": {status}}}"#
        );
        (
            node.to_string(),
            Arc::new(serde_json::from_str(&json).expect("a NodeAnnouncement")),
        )
    }

    #[test]
    fn a_takeover_counts_for_the_ips_the_reporters_spec_gave_it_and_only_while_it_lives() {
        let spec = r#"{"l2": [{"role": "standby", "standbyFor": "node-a", "ips": ["10.0.0.1-10.0.0.3"]}]}"#;
        // node-b reports the whole IPv4 space taken from node-a, and node-c
        // (standing by for nobody) claims node-b's IPs.
        let announcements = BTreeMap::from([
            announcement(
                "node-b",
                spec,
                r#"{"l2": [{"state": "TakenOver", "takenFrom": "node-a", "ips": ["0.0.0.0-255.255.255.255"]}]}"#,
            ),
            announcement(
                "node-c",
                r#"{"l2": []}"#,
                r#"{"l2": [{"state": "TakenOver", "takenFrom": "node-b", "ips": ["10.0.0.7"]}]}"#,
            ),
        ]);
        let live: BTreeSet<String> = ["speaker-node-b", "speaker-node-c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let started = std::time::Instant::now();
        let found = takeovers(&announcements, &live);
        assert!(started.elapsed() < Duration::from_secs(1), "never expanded");
        let ips: Vec<String> = found.by.keys().map(|ip| ip.to_string()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert!(found.by.values().all(|n| n == "node-b"));
        assert!(found.from.values().all(|n| n == "node-a"));
        // node-b's speaker is dead: its report counts for nothing.
        let found = takeovers(
            &announcements,
            &BTreeSet::from(["speaker-node-c".to_string()]),
        );
        assert!(found.by.is_empty() && found.from.is_empty());
    }

    #[test]
    fn a_renewal_is_a_new_renew_time_or_holder_and_a_released_lease_has_none() {
        let views = lease_views(&[
            lease("speaker-a", Some("node-a"), 1_000),
            lease("speaker-b", Some("node-a"), 1_005),
            lease("ferrolb-operator", Some(""), 1_000),
            lease("speaker-old", None, 1_000),
        ]);
        assert_ne!(views[0].renewal, views[1].renewal);
        assert_eq!(views[2].renewal, None, "released");
        assert!(views[3].renewal.is_some());
        assert_eq!(views[0].duration, Duration::from_secs(15));
    }
}
