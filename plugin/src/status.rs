//! `kubectl ferrolb status`: why a Service is or is not reachable, from the
//! cluster alone. Pure: a [`Snapshot`] in, a report and its text out.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use ferrolb_api::nodeannouncement::{L2Phase, L2Role};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::snapshot::{
    CONDITIONS, Snapshot, condition_cell, covers, ingress_ips, is_ours, key, pools_of,
    service_condition,
};

/// Everything `status` says about one Service.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    pub namespace: String,
    pub name: String,
    /// Why ferrolb leaves it alone, when it does (another class, not a LoadBalancer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ours: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    pub ips: Vec<IpReport>,
    pub conditions: Vec<ConditionReport>,
    pub events: Vec<EventReport>,
}

/// One ingress IP: its pools, and the nodes carrying it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpReport {
    pub ip: IpAddr,
    /// The pools holding it (none: it is kept, outside every pool).
    pub pools: Vec<String>,
    /// Layer 2: who answers ARP/NDP for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layer2: Vec<L2Report>,
    /// BGP: which node advertises it on which session.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bgp: Vec<BgpReport>,
}

/// A node's layer 2 part for an IP.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L2Report {
    pub node: String,
    /// `active` or `standby`, as the operator planned.
    pub role: String,
    /// What the node's speaker reports: `Announcing`, `TakenOver`, `Failed`,
    /// `Standby`, or `NotReported` (nothing yet).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `active`: the node standing by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<String>,
    /// The fast failover path towards this node's active peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
}

/// One node's BGP session carrying an IP.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpReport {
    pub node: String,
    /// The BGPPeer.
    pub peer: String,
    pub prefix: String,
    /// The RFC 4271 state the speaker reports, or `NotReported`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The families the established session carries but does not send, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub families_not_sent: Option<String>,
    /// The BFD session guarding it (`Up`, `Down: why`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
}

/// One condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionReport {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub since: Option<Timestamp>,
}

/// One Event about the Service.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last: Option<Timestamp>,
    pub from: String,
}

/// How many Events are shown, newest first.
pub const EVENTS: usize = 10;

const NOT_REPORTED: &str = "NotReported";

/// The report on one Service.
pub fn report(snapshot: &Snapshot, service: &Service) -> ServiceReport {
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = service.spec.clone().unwrap_or_default();
    let not_ours = (!is_ours(service)).then(|| match spec.type_.as_deref() {
        Some("LoadBalancer") => format!(
            "spec.loadBalancerClass is {}: another controller handles it",
            spec.load_balancer_class.as_deref().unwrap_or_default()
        ),
        other => format!(
            "type {} is not LoadBalancer: no external IP is given",
            other.unwrap_or("ClusterIP")
        ),
    });
    let ips = ingress_ips(service)
        .into_iter()
        .map(|ip| IpReport {
            ip,
            pools: pools_of(snapshot, ip),
            layer2: layer2(snapshot, ip),
            bgp: bgp(snapshot, ip),
        })
        .collect();
    let conditions = CONDITIONS
        .iter()
        .filter_map(|kind| service_condition(service, kind))
        .map(|c| ConditionReport {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            since: Some(c.last_transition_time.0),
        })
        .collect();
    let mut events: Vec<EventReport> = snapshot
        .events
        .iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Service")
                && e.involved_object.name.as_deref() == Some(name.as_str())
                && e.involved_object.namespace.as_deref() == Some(namespace.as_str())
        })
        .map(|e| EventReport {
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
            last: e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            from: e
                .reporting_component
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
                .unwrap_or_default(),
        })
        .collect();
    events.sort_by(|a, b| b.last.cmp(&a.last).then(a.reason.cmp(&b.reason)));
    events.truncate(EVENTS);
    ServiceReport {
        namespace,
        name,
        not_ours,
        external_traffic_policy: spec.external_traffic_policy,
        ips,
        conditions,
        events,
    }
}

fn layer2(snapshot: &Snapshot, ip: IpAddr) -> Vec<L2Report> {
    let mut out = Vec::new();
    for na in &snapshot.announcements {
        let node = na.metadata.name.clone().unwrap_or_default();
        let status = na.status.clone().unwrap_or_default();
        for group in na.spec.l2.iter().filter(|g| g.ips.contains(&ip)) {
            let reported = status.l2.iter().find(|s| s.ips.contains(&ip));
            let state = match (group.role, reported) {
                (_, Some(s)) => format!("{:?}", s.state),
                // The speaker names standby IPs only when something is in
                // their way; an applied spec with none means standing by.
                (L2Role::Standby, None) if status.observed_generation == na.metadata.generation => {
                    format!("{:?}", L2Phase::Standby)
                }
                _ => NOT_REPORTED.into(),
            };
            let message = reported.and_then(|s| {
                let taken = s
                    .taken_from
                    .as_ref()
                    .map(|n| format!("taken over from {n}"));
                match (s.message.clone(), taken) {
                    (Some(m), Some(t)) => Some(format!("{t}: {m}")),
                    (m, t) => m.or(t),
                }
            });
            let failover = match group.role {
                L2Role::Active => None,
                L2Role::Standby => group.standby_for.as_ref().and_then(|active| {
                    let path = status.failover.iter().find(|f| &f.node == active)?;
                    Some(match &path.message {
                        Some(m) => format!("{:?}: {m}", path.state),
                        None => format!("{:?}", path.state),
                    })
                }),
            };
            out.push(L2Report {
                node: node.clone(),
                role: match group.role {
                    L2Role::Active => "active".into(),
                    L2Role::Standby => "standby".into(),
                },
                state,
                message,
                standby: group.standby.clone(),
                failover,
            });
        }
    }
    // Active first, then standby; by node within each.
    out.sort_by(|a, b| a.role.cmp(&b.role).then(a.node.cmp(&b.node)));
    out
}

fn bgp(snapshot: &Snapshot, ip: IpAddr) -> Vec<BgpReport> {
    // Shared prefixes covering the IP, by advertisement.
    let shared: Vec<(&str, &str)> = snapshot
        .prefix_sets
        .iter()
        .flat_map(|set| {
            set.spec
                .prefixes
                .iter()
                .filter(|p| covers(p, ip))
                .map(|p| (set.spec.advertisement.as_str(), p.as_str()))
        })
        .collect();
    let mut out = Vec::new();
    for na in &snapshot.announcements {
        let node = na.metadata.name.clone().unwrap_or_default();
        let status = na.status.clone().unwrap_or_default();
        for session in &na.spec.bgp {
            let mut prefixes: BTreeSet<&str> = session
                .prefixes
                .iter()
                .filter(|p| covers(&p.prefix, ip))
                .map(|p| p.prefix.as_str())
                .collect();
            prefixes.extend(
                shared
                    .iter()
                    .filter(|(ad, _)| session.advertisements.iter().any(|a| a == ad))
                    .map(|(_, p)| *p),
            );
            // A session carries its peer's family, or both (dualStackAddressFamily).
            if prefixes.is_empty() || !session.carries_family(ip.is_ipv6()) {
                continue;
            }
            let reported = status.bgp.iter().find(|s| s.name == session.name);
            for prefix in prefixes {
                out.push(BgpReport {
                    node: node.clone(),
                    peer: session.name.clone(),
                    prefix: prefix.to_string(),
                    state: reported.map_or(NOT_REPORTED.into(), |s| format!("{:?}", s.state)),
                    last_error: reported.and_then(|s| s.last_error.clone()),
                    families_not_sent: reported.and_then(|s| s.families_not_sent.clone()),
                    bfd: reported
                        .and_then(|s| s.bfd.as_ref())
                        .map(|b| match &b.message {
                            Some(m) => format!("{:?}: {m}", b.state),
                            None => format!("{:?}", b.state),
                        }),
                });
            }
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node).then(a.peer.cmp(&b.peer)));
    out
}

/// How long ago, as kubectl prints ages (`45s`, `3m`, `2h`, `4d`).
pub fn age(now: Timestamp, then: Option<Timestamp>) -> String {
    let Some(then) = then else {
        return "-".into();
    };
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The report as text.
pub fn render(report: &ServiceReport, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Service {}/{}", report.namespace, report.name);
    if let Some(why) = &report.not_ours {
        let _ = writeln!(out, "  not handled by ferrolb: {why}");
    }
    if let Some(policy) = &report.external_traffic_policy {
        let _ = writeln!(out, "  externalTrafficPolicy: {policy}");
    }
    if report.ips.is_empty() {
        let _ = writeln!(out, "  IPs: none");
    }
    for ip in &report.ips {
        let pools = if ip.pools.is_empty() {
            "in no pool".to_string()
        } else {
            format!("pool {}", ip.pools.join(", "))
        };
        let _ = writeln!(out, "  IP {} ({pools})", ip.ip);
        for l2 in &ip.layer2 {
            let mut line = format!("    layer 2  {:<8} {:<16} {}", l2.role, l2.node, l2.state);
            if let Some(standby) = &l2.standby {
                let _ = write!(line, ", standby {standby}");
            }
            if let Some(message) = &l2.message {
                let _ = write!(line, ": {message}");
            }
            if let Some(failover) = &l2.failover {
                let _ = write!(line, " (fast failover {failover})");
            }
            let _ = writeln!(out, "{line}");
        }
        for session in &ip.bgp {
            let mut line = format!(
                "    BGP      {:<16} peer {:<16} {:<12} {}",
                session.node, session.peer, session.state, session.prefix
            );
            if let Some(bfd) = &session.bfd {
                let _ = write!(line, " BFD {bfd}");
            }
            if let Some(error) = &session.last_error {
                let _ = write!(line, " (last error: {error})");
            }
            if let Some(why) = &session.families_not_sent {
                let _ = write!(line, " ({why})");
            }
            let _ = writeln!(out, "{line}");
        }
        if ip.layer2.is_empty() && ip.bgp.is_empty() && report.not_ours.is_none() {
            let _ = writeln!(out, "    announced by no node");
        }
    }
    let _ = writeln!(out, "Conditions:");
    if report.conditions.is_empty() {
        let _ = writeln!(
            out,
            "  none yet (is the operator running? kubectl -n ferrolb-system get pods)"
        );
    }
    for c in &report.conditions {
        let _ = writeln!(
            out,
            "  {:<22} {:<5} {:<22} {:>4}  {}",
            c.type_,
            c.status,
            c.reason,
            age(now, c.since),
            c.message
        );
    }
    let _ = writeln!(out, "Events:");
    if report.events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &report.events {
        let count = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:>4}  {:<8} {:<20} {}: {}{count}",
            age(now, e.last),
            e.type_,
            e.reason,
            e.from,
            e.message
        );
    }
    out
}

/// One row per Service ferrolb handles: IPs, pools, both conditions, and
/// where it is announced.
pub fn table(snapshot: &Snapshot, all_namespaces: bool) -> String {
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut services: Vec<&Service> = snapshot.services.iter().filter(|s| is_ours(s)).collect();
    services.sort_by_key(|s| key(s));
    for service in services {
        let report = report(snapshot, service);
        let ips: Vec<String> = report.ips.iter().map(|i| i.ip.to_string()).collect();
        let mut pools: Vec<String> = report.ips.iter().flat_map(|i| i.pools.clone()).collect();
        pools.dedup();
        let active: BTreeSet<&str> = report
            .ips
            .iter()
            .flat_map(|i| &i.layer2)
            .filter(|l| l.role == "active")
            .map(|l| l.node.as_str())
            .collect();
        let bgp: BTreeSet<&str> = report
            .ips
            .iter()
            .flat_map(|i| &i.bgp)
            .filter(|b| b.state == "Established")
            .map(|b| b.node.as_str())
            .collect();
        let mut via = Vec::new();
        if !active.is_empty() {
            via.push(format!(
                "L2 {}",
                active.into_iter().collect::<Vec<_>>().join(",")
            ));
        }
        if !bgp.is_empty() {
            via.push(format!("BGP {} node(s)", bgp.len()));
        }
        rows.push([
            report.namespace.clone(),
            report.name.clone(),
            or_dash(ips.join(",")),
            or_dash(pools.join(",")),
            condition_cell(service_condition(service, CONDITIONS[0])),
            condition_cell(service_condition(service, CONDITIONS[1])),
            or_dash(via.join("; ")),
        ]);
    }
    let header = [
        "NAMESPACE",
        "NAME",
        "IPS",
        "POOL",
        "IPALLOCATED",
        "ANNOUNCED",
        "VIA",
    ];
    let skip = usize::from(!all_namespaces);
    let mut widths = [0usize; 7];
    for row in std::iter::once(header.map(String::from)).chain(rows.iter().cloned()) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .skip(skip)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
    out
}

fn or_dash(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).expect("test yaml")
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            now: "2026-11-30T12:00:00Z".parse().expect("time"),
            pools: vec![
                parse("metadata: {name: l2}\nspec: {addresses: [192.168.1.0/24]}"),
                parse("metadata: {name: bgp}\nspec: {addresses: [10.20.0.0/24]}"),
            ],
            prefix_sets: vec![parse(
                "metadata: {name: ads-0}\nspec: {advertisement: ads, shard: 0, shards: 1, count: 1, prefixes: [10.20.0.0/24]}",
            )],
            announcements: vec![
                parse(
                    r#"
metadata: {name: node-a, generation: 3}
spec:
  l2: [{role: active, standby: node-b, ips: [192.168.1.10-192.168.1.12]}]
  bgp:
  - {name: router, myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1, peerPort: 179, holdTime: 90s, keepaliveTime: 30s, connectTime: 5s, advertisements: [ads]}
status:
  observedGeneration: 3
  l2: [{state: Announcing, ips: [192.168.1.10-192.168.1.12]}]
  bgp: [{name: router, state: Established, prefixesAdvertised: 1, bfd: {state: Up}}]
"#,
                ),
                parse(
                    r#"
metadata: {name: node-b, generation: 5}
spec:
  l2: [{role: standby, standbyFor: node-a, ips: [192.168.1.11]}]
  bgp:
  - {name: router, myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1, peerPort: 179, holdTime: 90s, keepaliveTime: 30s, connectTime: 5s, prefixes: [{prefix: 10.20.0.7/32}]}
status:
  observedGeneration: 5
  failover: [{node: node-a, state: Unavailable, reason: NoProbeAnswer, message: no answer on UDP 7473}]
  bgp: [{name: router, state: Active, lastError: connection refused}]
"#,
                ),
            ],
            ..Snapshot::default()
        }
    }

    fn service(ip: &str) -> Service {
        parse(&format!(
            r#"
metadata: {{name: web, namespace: shop}}
spec: {{type: LoadBalancer}}
status:
  loadBalancer: {{ingress: [{{ip: {ip}}}]}}
  conditions:
  - {{type: ferrolb.io/Announced, status: "False", reason: NoEligibleNode, message: none, lastTransitionTime: "2026-11-30T11:59:00Z"}}
  - {{type: ferrolb.io/IPAllocated, status: "True", reason: Allocated, message: ok, lastTransitionTime: "2026-11-30T10:00:00Z"}}
"#
        ))
    }

    #[test]
    fn layer_2_names_the_active_node_and_the_standby_with_its_failover_path() {
        let report = report(&snapshot(), &service("192.168.1.11"));
        let ip = &report.ips[0];
        assert_eq!(ip.pools, ["l2"]);
        assert_eq!(ip.layer2.len(), 2);
        assert_eq!(
            (ip.layer2[0].role.as_str(), ip.layer2[0].node.as_str()),
            ("active", "node-a")
        );
        assert_eq!(ip.layer2[0].state, "Announcing");
        assert_eq!(ip.layer2[0].standby.as_deref(), Some("node-b"));
        // A standby of an applied spec that reports nothing stands by.
        assert_eq!(ip.layer2[1].state, "Standby");
        assert_eq!(
            ip.layer2[1].failover.as_deref(),
            Some("Unavailable: no answer on UDP 7473")
        );
        // Conditions in a fixed order, whatever the stored order.
        assert_eq!(report.conditions[0].type_, "ferrolb.io/IPAllocated");
        let text = render(&report, snapshot().now);
        assert!(text.contains("IP 192.168.1.11 (pool l2)"), "{text}");
        assert!(text.contains("fast failover Unavailable"), "{text}");
        assert!(text.contains("NoEligibleNode          60s  none"), "{text}");
    }

    #[test]
    fn a_standby_whose_speaker_has_not_applied_the_spec_is_not_reported_standing_by() {
        let mut s = snapshot();
        s.announcements[1]
            .status
            .as_mut()
            .expect("status")
            .observed_generation = Some(4);
        let report = report(&s, &service("192.168.1.11"));
        assert_eq!(report.ips[0].layer2[1].state, "NotReported");
    }

    #[test]
    fn bgp_finds_shared_and_node_prefixes_with_each_session_state() {
        let report = report(&snapshot(), &service("10.20.0.7"));
        let bgp = &report.ips[0].bgp;
        // node-a through its advertisement's PrefixSet (aggregated /24),
        // node-b through its own prefix (externalTrafficPolicy: Local).
        assert_eq!(bgp.len(), 2, "{bgp:?}");
        assert_eq!(
            (
                bgp[0].node.as_str(),
                bgp[0].prefix.as_str(),
                bgp[0].state.as_str()
            ),
            ("node-a", "10.20.0.0/24", "Established")
        );
        assert_eq!(
            (
                bgp[1].node.as_str(),
                bgp[1].prefix.as_str(),
                bgp[1].state.as_str()
            ),
            ("node-b", "10.20.0.7/32", "Active")
        );
        assert_eq!(bgp[1].last_error.as_deref(), Some("connection refused"));
        assert_eq!(bgp[0].bfd.as_deref(), Some("Up"));
        assert_eq!(bgp[1].bfd, None);
        let text = render(&report, snapshot().now);
        assert!(text.contains("10.20.0.0/24 BFD Up"), "{text}");
        // An IP outside every pool and announcement.
        let report = super::report(&snapshot(), &service("10.99.0.1"));
        assert!(report.ips[0].pools.is_empty() && report.ips[0].bgp.is_empty());
        let text = render(&report, snapshot().now);
        assert!(
            text.contains("(in no pool)") && text.contains("announced by no node"),
            "{text}"
        );
    }

    #[test]
    fn an_ipv6_prefix_shows_on_an_ipv4_session_only_when_it_carries_both_families() {
        let mut s = snapshot();
        s.pools.push(parse(
            "metadata: {name: v6}\nspec: {addresses: ['fd20::/120']}",
        ));
        s.announcements[1].spec.bgp[0]
            .prefixes
            .push(parse("{prefix: 'fd20::7/128'}"));
        let report = super::report(&s, &service("fd20::7"));
        assert!(report.ips[0].bgp.is_empty(), "{:?}", report.ips[0].bgp);
        s.announcements[1].spec.bgp[0].dual_stack_address_family = true;
        let report = super::report(&s, &service("fd20::7"));
        let bgp = &report.ips[0].bgp;
        assert_eq!(
            bgp.iter()
                .map(|b| (b.node.as_str(), b.peer.as_str(), b.prefix.as_str()))
                .collect::<Vec<_>>(),
            [("node-b", "router", "fd20::7/128")]
        );
        // The router did not offer IPv6: the session says so.
        let why =
            "the peer does not offer IPv6 unicast on this session: its IPv6 prefixes are not sent";
        s.announcements[1].status.as_mut().expect("status").bgp[0].families_not_sent =
            Some(why.into());
        let report = super::report(&s, &service("fd20::7"));
        let text = render(&report, s.now);
        assert!(text.contains(why), "{text}");
    }

    #[test]
    fn the_table_shows_only_our_services_and_where_they_are_announced() {
        let mut s = snapshot();
        let mut other = service("192.168.1.10");
        other.metadata.name = Some("elsewhere".into());
        other.spec.as_mut().expect("spec").load_balancer_class = Some("example.com/lb".into());
        s.services = vec![service("192.168.1.10"), other];
        let shown = table(&s, true);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 2, "{shown}");
        assert!(lines[0].starts_with("NAMESPACE"), "{shown}");
        assert!(
            lines[1].contains("192.168.1.10")
                && lines[1].contains("False/NoEligibleNode")
                && lines[1].ends_with("L2 node-a"),
            "{shown}"
        );
        assert!(!table(&s, false).contains("NAMESPACE"));
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().expect("time");
        let ago = |s: i64| Some(Timestamp::from_second(now.as_second() - s).expect("time"));
        assert_eq!(age(now, ago(5)), "5s");
        assert_eq!(age(now, ago(600)), "10m");
        assert_eq!(age(now, ago(3 * 3600)), "3h");
        assert_eq!(age(now, ago(9 * 86_400)), "9d");
        assert_eq!(age(now, None), "-");
    }
}
