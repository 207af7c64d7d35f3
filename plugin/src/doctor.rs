//! `kubectl ferrolb doctor`: what in a cluster breaks a bare-metal load
//! balancer, each finding with its fix. Pure: a [`Snapshot`] in, findings out.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ferrolb_api::constants::{EXCLUDE_LABEL, LEADER_LEASE, NAMESPACE, condition, speaker_lease};
use ferrolb_api::nodeannouncement::FailoverPhase;
use ferrolb_api::selector::label_selector_matches;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::snapshot::{Snapshot, ingress_ips, is_ours, key, service_condition};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something users notice now: doctor exits 1.
    Error,
    /// Something that breaks in some cases, or soon.
    Warning,
    /// Checked and fine.
    Ok,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The check, as a short name (`kube-proxy`, `speakers`, …).
    pub check: &'static str,
    /// What was found.
    pub what: String,
    /// How to fix it (empty for `ok`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

fn found(severity: Severity, check: &'static str, what: String, fix: String) -> Finding {
    Finding {
        severity,
        check,
        what,
        fix,
    }
}

fn ok(check: &'static str, what: String) -> Finding {
    found(Severity::Ok, check, what, String::new())
}

/// Every finding, in check order.
pub fn examine(s: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    install(s, &mut out);
    webhook(s, &mut out);
    kube_proxy(s, &mut out);
    excluded_nodes(s, &mut out);
    other_controllers(s, &mut out);
    speakers(s, &mut out);
    pools(s, &mut out);
    services(s, &mut out);
    out
}

/// Whether the findings make doctor exit non-zero.
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

/// Read once, a Lease is alive until its written renewal plus its duration
/// ([`ferrolb_api::lease::alive_at`]: the rule the operator reads Leases by,
/// with the written time standing in for a renewal seen).
fn fresh(lease: &Lease, now: Timestamp) -> bool {
    lease
        .spec
        .as_ref()
        .is_some_and(|spec| ferrolb_api::lease::alive_at(spec, now))
}

fn lease<'a>(s: &'a Snapshot, name: &str) -> Option<&'a Lease> {
    s.leases
        .iter()
        .find(|l| l.metadata.name.as_deref() == Some(name))
}

fn install(s: &Snapshot, out: &mut Vec<Finding>) {
    let Some(namespace) = &s.namespace else {
        out.push(found(
            Severity::Error,
            "install",
            format!("namespace {NAMESPACE} does not exist: ferrolb is not installed"),
            "kubectl apply -k config/default (see the README's install)".into(),
        ));
        return;
    };
    let labels = namespace.metadata.labels.clone().unwrap_or_default();
    match labels
        .get("pod-security.kubernetes.io/enforce")
        .map(String::as_str)
    {
        Some("privileged") => out.push(ok(
            "pod-security",
            format!("namespace {NAMESPACE} enforces the privileged Pod Security level the speakers need"),
        )),
        Some(level) => out.push(found(
            Severity::Error,
            "pod-security",
            format!(
                "namespace {NAMESPACE} enforces Pod Security level `{level}`: speaker Pods (host network, NET_RAW, NET_ADMIN) are refused, so no node announces anything"
            ),
            format!(
                "kubectl label namespace {NAMESPACE} pod-security.kubernetes.io/enforce=privileged --overwrite"
            ),
        )),
        None => out.push(found(
            Severity::Warning,
            "pod-security",
            format!(
                "namespace {NAMESPACE} has no pod-security.kubernetes.io/enforce label: where the cluster's default level is baseline or restricted, speaker Pods are refused"
            ),
            format!(
                "kubectl label namespace {NAMESPACE} pod-security.kubernetes.io/enforce=privileged"
            ),
        )),
    }
    match lease(s, LEADER_LEASE) {
        Some(l) if fresh(l, s.now) => out.push(ok(
            "operator",
            format!(
                "operator leader {} holds Lease {NAMESPACE}/{LEADER_LEASE}",
                l.spec
                    .as_ref()
                    .and_then(|sp| sp.holder_identity.clone())
                    .unwrap_or_default()
            ),
        )),
        _ => out.push(found(
            Severity::Error,
            "operator",
            format!(
                "no operator replica holds Lease {NAMESPACE}/{LEADER_LEASE}: no Service gets an IP or a status"
            ),
            format!(
                "kubectl -n {NAMESPACE} get pods -l app.kubernetes.io/name=ferrolb-operator; kubectl -n {NAMESPACE} logs deploy/ferrolb-operator"
            ),
        )),
    }
}

fn webhook(s: &Snapshot, out: &mut Vec<Finding>) {
    if s.webhook.is_none() {
        out.push(found(
            Severity::Warning,
            "webhook",
            "ValidatingWebhookConfiguration ferrolb-webhook is not registered: overlapping pools and bad peers are only caught by the schema, not at admission".into(),
            "kubectl apply -k config/default (it registers the webhook)".into(),
        ));
        return;
    }
    match &s.webhook_probe {
        Some(Err(answer)) if answer.contains("denied the request") => out.push(ok(
            "webhook",
            "the webhook answers: it denied a bad pool sent with dry run".into(),
        )),
        Some(Err(answer)) if answer.contains("failed calling webhook") => out.push(found(
            Severity::Error,
            "webhook",
            format!("the webhook is registered but does not answer, so every pool, advertisement and peer change is refused: {answer}"),
            format!("kubectl -n {NAMESPACE} get pods -l app.kubernetes.io/name=ferrolb-webhook; kubectl -n {NAMESPACE} logs deploy/ferrolb-webhook"),
        )),
        Some(Err(answer)) => out.push(found(
            Severity::Warning,
            "webhook",
            format!("a bad pool sent with dry run was refused, but not by the webhook: {answer}"),
            "kubectl get validatingwebhookconfiguration ferrolb-webhook -o yaml".into(),
        )),
        Some(Ok(())) | None => out.push(found(
            Severity::Error,
            "webhook",
            "a pool that overlaps itself was accepted (dry run): the webhook was not called, so bad pools reach the operator".into(),
            "kubectl get validatingwebhookconfiguration ferrolb-webhook -o yaml (the pool rule and its failurePolicy)".into(),
        )),
    }
}

fn kube_proxy(s: &Snapshot, out: &mut Vec<Finding>) {
    let Some(config) = s
        .kube_proxy
        .as_ref()
        .and_then(|m| m.data.as_ref())
        .and_then(|d| d.get("config.conf"))
    else {
        out.push(ok(
            "kube-proxy",
            "no kube-system/kube-proxy ConfigMap (k3s, or kube-proxy replaced): nothing to check"
                .into(),
        ));
        return;
    };
    let parsed: serde_yaml::Value = serde_yaml::from_str(config).unwrap_or_default();
    let mode = parsed["mode"].as_str().unwrap_or("").to_string();
    let strict = parsed["ipvs"]["strictARP"].as_bool().unwrap_or(false);
    if mode != "ipvs" {
        let shown = if mode.is_empty() {
            "iptables (default)"
        } else {
            &mode
        };
        out.push(ok("kube-proxy", format!("kube-proxy mode {shown}")));
    } else if strict {
        out.push(ok(
            "kube-proxy",
            "kube-proxy mode ipvs with strictARP".into(),
        ));
    } else {
        let severity = if s.l2_advertisements.is_empty() {
            Severity::Warning
        } else {
            Severity::Error
        };
        out.push(found(
            severity,
            "kube-proxy",
            "kube-proxy runs in IPVS mode without strictARP: every node's kernel answers ARP for every Service IP (they sit on kube-ipvs0), so in layer 2 clients reach any node and failover does not move traffic".into(),
            "kubectl -n kube-system edit configmap kube-proxy (set ipvs.strictARP: true), then kubectl -n kube-system rollout restart daemonset kube-proxy".into(),
        ));
    }
}

fn excluded(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LABEL))
}

fn excluded_nodes(s: &Snapshot, out: &mut Vec<Finding>) {
    let names: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| excluded(n))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    if names.is_empty() {
        out.push(ok(
            "excluded-nodes",
            format!("no node carries {EXCLUDE_LABEL}"),
        ));
    } else if names.len() == s.nodes.len() {
        out.push(found(
            Severity::Error,
            "excluded-nodes",
            format!(
                "every node ({}) carries {EXCLUDE_LABEL} (kubeadm puts it on control-plane nodes): no node may announce a Service IP",
                names.join(", ")
            ),
            format!(
                "on a single-node or control-plane-only cluster add --ignore-exclude-lb to the operator's args; else kubectl label node NAME {EXCLUDE_LABEL}-"
            ),
        ));
    } else {
        out.push(found(
            Severity::Warning,
            "excluded-nodes",
            format!(
                "{} carr{} {EXCLUDE_LABEL}: never announces a Service IP",
                names.join(", "),
                if names.len() == 1 { "ies" } else { "y" }
            ),
            format!("if that is not meant: kubectl label node NAME {EXCLUDE_LABEL}-"),
        ));
    }
}

fn other_controllers(s: &Snapshot, out: &mut Vec<Finding>) {
    let mut kinds: BTreeSet<String> = BTreeSet::new();
    for pod in &s.other_controllers {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        if labels.contains_key("svccontroller.k3s.cattle.io/svcname") {
            kinds.insert("k3s ServiceLB (svclb-* Pods)".into());
        } else {
            kinds.insert(format!("MetalLB (Pods in namespace {namespace})"));
        }
    }
    let fighting: Vec<String> = s
        .services
        .iter()
        .filter(|svc| {
            service_condition(svc, condition::ANNOUNCED)
                .is_some_and(|c| c.reason == condition::reason::OTHER_CONTROLLER)
        })
        .map(key)
        .collect();
    if kinds.is_empty() && fighting.is_empty() {
        out.push(ok(
            "other-lb",
            "no other load-balancer controller found".into(),
        ));
        return;
    }
    let mut what = String::new();
    if !kinds.is_empty() {
        let _ = write!(
            what,
            "another load-balancer controller runs: {}",
            kinds.into_iter().collect::<Vec<_>>().join("; ")
        );
    }
    if !fighting.is_empty() {
        if !what.is_empty() {
            what.push_str("; ");
        }
        let _ = write!(
            what,
            "another controller writes the status of {}",
            list(&fighting)
        );
    }
    out.push(found(
        Severity::Error,
        "other-lb",
        what,
        "k3s: start the server with --disable servicelb; MetalLB: uninstall it once migrated (README, Moving from MetalLB); or keep them apart with spec.loadBalancerClass".into(),
    ));
}

fn speakers(s: &Snapshot, out: &mut Vec<Finding>) {
    if s.namespace.is_none() {
        return;
    }
    let eligible: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| !excluded(n))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let missing: Vec<String> = eligible
        .iter()
        .filter(|node| !lease(s, &speaker_lease(node)).is_some_and(|l| fresh(l, s.now)))
        .cloned()
        .collect();
    if missing.is_empty() {
        out.push(ok(
            "speakers",
            format!(
                "a speaker runs on each of the {} eligible node(s)",
                eligible.len()
            ),
        ));
    } else {
        let severity = if missing.len() == eligible.len() {
            Severity::Error
        } else {
            Severity::Warning
        };
        out.push(found(
            severity,
            "speakers",
            format!(
                "no live speaker on {} (its Lease {NAMESPACE}/speaker-NODE is missing or expired): that node announces nothing",
                list(&missing)
            ),
            format!(
                "kubectl -n {NAMESPACE} get daemonset ferrolb-speaker; kubectl -n {NAMESPACE} get pods -o wide -l app.kubernetes.io/name=ferrolb-speaker (taints the DaemonSet does not tolerate? Pods refused?)"
            ),
        ));
    }
    for na in &s.announcements {
        let node = na.metadata.name.clone().unwrap_or_default();
        let Some(status) = &na.status else { continue };
        for problem in &status.problems {
            out.push(found(
                Severity::Error,
                "node",
                format!("{node}: {}: {}", problem.reason, problem.message),
                String::new(),
            ));
        }
        for path in status
            .failover
            .iter()
            .filter(|f| f.state == FailoverPhase::Unavailable)
        {
            out.push(found(
                Severity::Warning,
                "fast-failover",
                format!(
                    "{node} cannot watch {} directly ({}): if {} dies its IPs move only when its Lease runs out (seconds, not 300 ms){}",
                    path.node,
                    path.reason.as_deref().unwrap_or("Unavailable"),
                    path.node,
                    path.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
                "allow UDP 7473 between nodes (host firewall, security groups)".into(),
            ));
        }
        for session in &status.bgp {
            if let Some(bfd) = session
                .bfd
                .as_ref()
                .filter(|b| b.state != ferrolb_api::nodeannouncement::BfdState::Up)
            {
                out.push(found(
                    Severity::Warning,
                    "bfd",
                    format!(
                        "{node}: BFD with {} is {:?}{}: a failure of this node is noticed after the BGP hold time, not the BFD detection time",
                        session.name,
                        bfd.state,
                        bfd.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                    "configure BFD for this node on the router (FRR: neighbor NODE bfd; BIRD: bfd on), with the same authentication; allow UDP 3784 (4784 multihop)".into(),
                ));
            }
        }
        if let Some(applied) = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::APPLIED && c.status == "False")
        {
            out.push(found(
                Severity::Error,
                "node",
                format!(
                    "{node}: the speaker could not apply everything: {}",
                    applied.message
                ),
                String::new(),
            ));
        }
    }
}

fn selects(
    selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    names: &[String],
    pool: &ferrolb_api::IPAddressPool,
) -> bool {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let labels = pool.metadata.labels.clone().unwrap_or_default();
    (names.is_empty() && selectors.is_empty())
        || names.contains(&name)
        || selectors
            .iter()
            .any(|sel| label_selector_matches(sel, &labels))
}

fn pools(s: &Snapshot, out: &mut Vec<Finding>) {
    if s.pools.is_empty() {
        out.push(found(
            Severity::Warning,
            "pools",
            "no IPAddressPool: no Service can get an IP".into(),
            "create one: kubectl apply -f config/samples (or kubectl ferrolb convert your MetalLB configuration)".into(),
        ));
        return;
    }
    let lonely: Vec<String> = s
        .pools
        .iter()
        .filter(|pool| {
            !s.l2_advertisements.iter().any(|a| {
                selects(
                    &a.spec.ip_address_pool_selectors,
                    &a.spec.ip_address_pools,
                    pool,
                )
            }) && !s.bgp_advertisements.iter().any(|a| {
                selects(
                    &a.spec.ip_address_pool_selectors,
                    &a.spec.ip_address_pools,
                    pool,
                )
            })
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    if lonely.is_empty() {
        out.push(ok(
            "pools",
            format!("each of the {} pool(s) is advertised", s.pools.len()),
        ));
    } else {
        out.push(found(
            Severity::Warning,
            "pools",
            format!(
                "no L2Advertisement or BGPAdvertisement selects pool {}: its Services get IPs that nothing announces",
                list(&lonely)
            ),
            "add an L2Advertisement (layer 2) or a BGPAdvertisement with a BGPPeer naming the pool".into(),
        ));
    }
}

fn services(s: &Snapshot, out: &mut Vec<Finding>) {
    let ours: Vec<_> = s.services.iter().filter(|svc| is_ours(svc)).collect();
    let mut pending = Vec::new();
    let mut unannounced = Vec::new();
    for service in &ours {
        let allocated = service_condition(service, condition::IP_ALLOCATED);
        if ingress_ips(service).is_empty() {
            pending.push(match allocated {
                Some(c) => format!("{} ({}: {})", key(service), c.reason, c.message),
                None => format!("{} (no condition yet)", key(service)),
            });
            continue;
        }
        if let Some(c) = service_condition(service, condition::ANNOUNCED)
            && c.status == "False"
            && c.reason != condition::reason::OTHER_CONTROLLER
        {
            unannounced.push(format!("{} ({}: {})", key(service), c.reason, c.message));
        }
    }
    if !pending.is_empty() {
        out.push(found(
            Severity::Error,
            "services",
            format!(
                "{} Service(s) without an IP: {}",
                pending.len(),
                list(&pending)
            ),
            "kubectl ferrolb status svc/NAME -n NAMESPACE says why".into(),
        ));
    }
    if !unannounced.is_empty() {
        out.push(found(
            Severity::Error,
            "services",
            format!(
                "{} Service(s) with an IP that is not announced: {}",
                unannounced.len(),
                list(&unannounced)
            ),
            "kubectl ferrolb status svc/NAME -n NAMESPACE says why".into(),
        ));
    }
    if pending.is_empty() && unannounced.is_empty() {
        out.push(ok(
            "services",
            format!(
                "all {} LoadBalancer Service(s) have IPs and are announced",
                ours.len()
            ),
        ));
    }
}

/// The first few of a list and how many more.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        let _ = write!(text, " (+{} more)", items.len() - SHOWN);
    }
    text
}

/// The findings as text: problems first, then what is fine.
pub fn render(findings: &[Finding]) -> String {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| f.severity);
    let mut out = String::new();
    for f in sorted {
        let label = match f.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "WARN ",
            Severity::Ok => "ok   ",
        };
        let _ = writeln!(out, "{label} {:<15} {}", f.check, f.what);
        if !f.fix.is_empty() {
            let _ = writeln!(out, "      {:<15} fix: {}", "", f.fix);
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).expect("test yaml")
    }

    fn lease(name: &str, renewed: &str) -> Lease {
        parse(&format!(
            "metadata: {{name: {name}}}\nspec: {{renewTime: '{renewed}', leaseDurationSeconds: 15}}"
        ))
    }

    /// Service default/web with an IP and its Announced condition.
    fn web(status: &str, reason: &str) -> k8s_openapi::api::core::v1::Service {
        parse(&format!(
            r#"
metadata: {{name: web, namespace: default}}
spec: {{type: LoadBalancer}}
status:
  loadBalancer: {{ingress: [{{ip: 10.0.0.1}}]}}
  conditions:
  - {{type: ferrolb.io/Announced, status: "{status}", reason: {reason}, message: m, lastTransitionTime: "2026-11-30T11:00:00Z"}}
"#
        ))
    }

    /// A healthy cluster: two nodes with live speakers, operator, webhook, a
    /// pool advertised in layer 2, one Service announced.
    fn healthy() -> Snapshot {
        Snapshot {
            now: "2026-11-30T12:00:10Z".parse().expect("time"),
            namespace: Some(parse(
                "metadata: {name: ferrolb-system, labels: {pod-security.kubernetes.io/enforce: privileged}}",
            )),
            leases: vec![
                lease("ferrolb-operator", "2026-11-30T12:00:05.000000Z"),
                lease("speaker-a", "2026-11-30T12:00:05.000000Z"),
                lease("speaker-b", "2026-11-30T12:00:05.000000Z"),
            ],
            nodes: vec![parse("metadata: {name: a}"), parse("metadata: {name: b}")],
            webhook: Some(parse("metadata: {name: ferrolb-webhook}")),
            webhook_probe: Some(Err(
                "admission webhook \"ipaddresspools.ferrolb.io\" denied the request: overlap"
                    .into(),
            )),
            pools: vec![parse(
                "metadata: {name: p, labels: {tier: web}}\nspec: {addresses: [10.0.0.0/24]}",
            )],
            l2_advertisements: vec![parse("metadata: {name: all}\nspec: {}")],
            services: vec![web("True", "Announced")],
            ..Snapshot::default()
        }
    }

    fn of(findings: &[Finding], check: &str) -> Vec<(Severity, String)> {
        findings
            .iter()
            .filter(|f| f.check == check)
            .map(|f| (f.severity, f.what.clone()))
            .collect()
    }

    fn severity(s: &Snapshot, check: &str) -> Severity {
        let found = of(&examine(s), check);
        assert_eq!(found.len(), 1, "{check}: {found:?}");
        found[0].0
    }

    #[test]
    fn a_healthy_cluster_has_no_problem_and_says_what_it_checked() {
        let findings = examine(&healthy());
        assert!(!failed(&findings));
        assert!(
            findings.iter().all(|f| f.severity == Severity::Ok),
            "{findings:?}"
        );
        assert!(render(&findings).ends_with("0 error(s), 0 warning(s)\n"));
    }

    #[test]
    fn kube_proxy_ipvs_without_strict_arp_is_an_error_only_where_layer_2_is_used() {
        let with = |config: &str, l2: bool| {
            let mut s = healthy();
            s.kube_proxy = Some(parse(&format!(
                "metadata: {{name: kube-proxy}}\ndata:\n  config.conf: |\n    {config}"
            )));
            if !l2 {
                s.l2_advertisements.clear();
                s.bgp_advertisements = vec![parse("metadata: {name: b}\nspec: {}")];
            }
            severity(&s, "kube-proxy")
        };
        assert_eq!(with("mode: iptables", true), Severity::Ok);
        assert_eq!(with("mode: ''", true), Severity::Ok);
        assert_eq!(
            with("{mode: ipvs, ipvs: {strictARP: true}}", true),
            Severity::Ok
        );
        assert_eq!(
            with("{mode: ipvs, ipvs: {strictARP: false}}", true),
            Severity::Error
        );
        assert_eq!(with("mode: ipvs", true), Severity::Error);
        assert_eq!(with("mode: ipvs", false), Severity::Warning);
    }

    #[test]
    fn excluded_nodes_are_a_warning_and_all_of_them_an_error() {
        let mut s = healthy();
        s.nodes[0] = parse(
            "metadata: {name: a, labels: {node.kubernetes.io/exclude-from-external-load-balancers: ''}}",
        );
        assert_eq!(severity(&s, "excluded-nodes"), Severity::Warning);
        // The excluded node needs no speaker.
        s.leases
            .retain(|l| l.metadata.name.as_deref() != Some("speaker-a"));
        assert_eq!(severity(&s, "speakers"), Severity::Ok);
        s.nodes[1] = parse(
            "metadata: {name: b, labels: {node.kubernetes.io/exclude-from-external-load-balancers: ''}}",
        );
        let found = of(&examine(&s), "excluded-nodes");
        assert_eq!(found[0].0, Severity::Error);
        assert!(found[0].1.contains("a, b"), "{found:?}");
    }

    #[test]
    fn a_node_whose_speaker_lease_ran_out_has_no_live_speaker() {
        let mut s = healthy();
        s.leases[2] = lease("speaker-b", "2026-11-30T11:59:00.000000Z");
        let found = of(&examine(&s), "speakers");
        assert_eq!(found[0].0, Severity::Warning);
        assert!(found[0].1.contains("no live speaker on b"), "{found:?}");
        s.leases.truncate(1);
        assert_eq!(severity(&s, "speakers"), Severity::Error);
    }

    #[test]
    fn the_webhook_is_judged_by_who_answered_the_dry_run() {
        let mut s = healthy();
        s.webhook_probe = Some(Err("Internal error occurred: failed calling webhook \"ipaddresspools.ferrolb.io\": connection refused".into()));
        assert_eq!(severity(&s, "webhook"), Severity::Error);
        s.webhook_probe = Some(Ok(()));
        assert_eq!(severity(&s, "webhook"), Severity::Error);
        s.webhook_probe = Some(Err(
            "IPAddressPool.ferrolb.io is invalid: spec.addresses".into()
        ));
        assert_eq!(severity(&s, "webhook"), Severity::Warning);
        s.webhook = None;
        assert_eq!(severity(&s, "webhook"), Severity::Warning);
    }

    #[test]
    fn a_pool_is_advertised_by_name_by_selector_or_by_an_advertisement_naming_none() {
        let mut s = healthy();
        let lonely = |s: &Snapshot| severity(s, "pools") == Severity::Warning;
        assert!(!lonely(&s));
        s.l2_advertisements = vec![parse(
            "metadata: {name: x}\nspec: {ipAddressPools: [other]}",
        )];
        assert!(lonely(&s));
        s.bgp_advertisements = vec![parse(
            "metadata: {name: y}\nspec: {ipAddressPoolSelectors: [{matchLabels: {tier: web}}]}",
        )];
        assert!(!lonely(&s));
        s.bgp_advertisements.clear();
        s.l2_advertisements = vec![parse("metadata: {name: x}\nspec: {ipAddressPools: [p]}")];
        assert!(!lonely(&s));
    }

    #[test]
    fn services_without_ip_or_announcement_are_errors_with_their_reasons() {
        let mut s = healthy();
        s.services.push(parse(
            r#"
metadata: {name: wants, namespace: shop}
spec: {type: LoadBalancer}
status:
  conditions:
  - {type: ferrolb.io/IPAllocated, status: "False", reason: PoolExhausted, message: full, lastTransitionTime: "2026-11-30T11:00:00Z"}
"#,
        ));
        s.services.push(parse(
            "metadata: {name: other, namespace: shop}\nspec: {type: LoadBalancer, loadBalancerClass: example.com/x}",
        ));
        let found = of(&examine(&s), "services");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].1.contains("shop/wants (PoolExhausted: full)"),
            "{found:?}"
        );
        assert!(
            !found[0].1.contains("shop/other"),
            "another class is not ours"
        );
        // OtherController is reported once, under other-lb.
        s.services.pop();
        s.services.pop();
        s.services[0] = web("False", "OtherController");
        let findings = examine(&s);
        assert_eq!(of(&findings, "services")[0].0, Severity::Ok);
        assert_eq!(of(&findings, "other-lb")[0].0, Severity::Error);
    }

    #[test]
    fn a_bfd_session_not_up_is_a_warning_naming_the_router_side_fix() {
        let mut s = healthy();
        s.announcements = vec![parse(
            "metadata: {name: a}\nspec: {}\nstatus:\n  bgp:\n  - {name: tor, state: Established, bfd: {state: Down, message: 'went down: control detection time expired'}}\n  - {name: other, state: Established, bfd: {state: Up}}",
        )];
        let found = of(&examine(&s), "bfd");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Severity::Warning);
        assert!(
            found[0]
                .1
                .contains("a: BFD with tor is Down (went down: control detection time expired)"),
            "{found:?}"
        );
    }

    #[test]
    fn without_the_namespace_doctor_says_to_install_and_checks_no_speaker() {
        let mut s = healthy();
        s.namespace = None;
        let findings = examine(&s);
        assert_eq!(of(&findings, "install")[0].0, Severity::Error);
        assert!(of(&findings, "speakers").is_empty());
        assert!(failed(&findings));
    }
}
