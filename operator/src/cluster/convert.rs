//! Kubernetes objects into the allocator's plain values: IPAddressPools into
//! [`Pool`]s, Services into [`ServiceRequest`]s.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_api::IPAddressPool;
use ferrolb_api::address::{Family, parse_ip};
use ferrolb_api::constants::annotation;
use k8s_openapi::api::core::v1::Service;

use crate::plan::allocation::selector::{Labels, Selector};
use crate::plan::allocation::{
    Failure, FamilyPolicy, Pool, PoolAllocation, Protocol, Reason, ServiceKey, ServiceRequest,
    Sharing,
};

/// An IPAddressPool as a [`Pool`]; entries that do not parse are left out (the
/// schema rejects them, so only a pool written around it can have them).
pub fn pool(object: &IPAddressPool) -> Pool {
    let spec = &object.spec;
    Pool {
        name: object.metadata.name.clone().unwrap_or_default(),
        ranges: spec.ranges(),
        auto_assign: spec.auto_assign,
        avoid_buggy_ips: spec.avoid_buggy_ips,
        allocation: spec.service_allocation.as_ref().map(|a| PoolAllocation {
            priority: a.priority,
            namespaces: a.namespaces.clone(),
            namespace_selectors: a.namespace_selectors.iter().map(Selector::from).collect(),
            service_selectors: a.service_selectors.iter().map(Selector::from).collect(),
        }),
    }
}

/// The key of a Service.
pub fn service_key(service: &Service) -> ServiceKey {
    ServiceKey::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether the operator is responsible for a Service: `type: LoadBalancer`, and
/// no `loadBalancerClass` or ours.
pub fn is_ours(service: &Service, lb_class: &str) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|class| class == lb_class)
}

/// Field managers other than `own` that wrote `status.loadBalancer.ingress`
/// of a Service (as its managedFields show) since `own` last wrote its
/// status: another load-balancer controller on the same Services, such as
/// k3s's ServiceLB or MetalLB still running. Before `own` has written
/// anything nobody is named; an entry older than `own`'s last write is not a
/// writer but a leftover (MetalLB's, after a migration: `own` writing the
/// same IPs shares the field with it, and the entry stays).
pub fn other_ingress_writers(service: &Service, own: &str) -> Vec<String> {
    let entries = service.metadata.managed_fields.iter().flatten();
    let Some(ours) = entries
        .clone()
        .filter(|entry| entry.manager.as_deref() == Some(own))
        .map(|entry| entry.time.as_ref().map(|t| t.0))
        .max()
    else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter(|entry| entry.manager.as_deref().is_some_and(|m| m != own))
        .filter(|entry| {
            entry.fields_v1.as_ref().is_some_and(|fields| {
                fields
                    .0
                    .pointer("/f:status/f:loadBalancer/f:ingress")
                    .is_some()
            })
        })
        // Seconds are all managedFields keep: a write in the same second
        // as ours counts.
        .filter(|entry| match (entry.time.as_ref(), ours) {
            (Some(theirs), Some(ours)) => theirs.0 >= ours,
            _ => true,
        })
        .filter_map(|entry| entry.manager.clone())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The first of an annotation's spellings (ours, then MetalLB's) that is set.
fn annotation<'a>(service: &'a Service, name: &str) -> Option<&'a str> {
    let annotations = service.metadata.annotations.as_ref()?;
    annotation::spellings(name)
        .iter()
        .find_map(|key| annotations.get(key.as_str()))
        .map(|v| v.trim())
}

fn family_of(name: &str) -> Family {
    if name == "IPv6" {
        Family::V6
    } else {
        Family::V4
    }
}

/// What a Service asks for. A request that cannot be read (an annotation that
/// is not an IP list) is a [`Reason::InvalidRequest`] failure.
pub fn request(service: &Service, namespace_labels: &Labels) -> Result<ServiceRequest, Failure> {
    let spec = service.spec.clone().unwrap_or_default();
    let primary = spec
        .ip_families
        .as_ref()
        .and_then(|f| f.first())
        .map_or(Family::V4, |f| family_of(f));
    let families = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDual(primary),
        Some("RequireDualStack") => FamilyPolicy::RequireDual(primary),
        _ => FamilyPolicy::Single(primary),
    };
    let invalid = |m: String| Failure::new(Reason::InvalidRequest, m);
    let mut requested: Vec<IpAddr> = Vec::new();
    if let Some(list) = annotation(service, annotation::LOAD_BALANCER_IPS) {
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            requested.push(parse_ip(part).map_err(|_| {
                invalid(format!(
                    "annotation {}: '{part}' is not an IP address; write one IP per family, comma-separated",
                    annotation::LOAD_BALANCER_IPS
                ))
            })?);
        }
    } else if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        requested.push(
            parse_ip(ip).map_err(|_| {
                invalid(format!("spec.loadBalancerIP: '{ip}' is not an IP address"))
            })?,
        );
    }
    let sharing = annotation(service, annotation::ALLOW_SHARED_IP)
        .filter(|k| !k.is_empty())
        .map(|key| {
            let local = spec.external_traffic_policy.as_deref() == Some("Local");
            let backend = if local {
                let selector: BTreeMap<_, _> = spec.selector.clone().unwrap_or_default();
                selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                String::new()
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    let protocol = match p.protocol.as_deref() {
                        Some("UDP") => Protocol::Udp,
                        Some("SCTP") => Protocol::Sctp,
                        _ => Protocol::Tcp,
                    };
                    (protocol, u16::try_from(p.port).unwrap_or_default())
                })
                .collect();
            Sharing {
                key: key.to_string(),
                backend,
                ports,
            }
        });
    Ok(ServiceRequest {
        service: service_key(service),
        namespace_labels: namespace_labels.clone(),
        labels: service.metadata.labels.clone().unwrap_or_default(),
        families,
        requested,
        pool: annotation(service, annotation::ADDRESS_POOL)
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        sharing,
    })
}

#[cfg(test)]
mod other_writer_tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

    fn entry(manager: &str, fields: serde_json::Value, second: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_string()),
            fields_v1: Some(FieldsV1(fields)),
            subresource: Some("status".into()),
            time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + second).expect("time"),
            )),
            ..Default::default()
        }
    }

    fn ingress() -> serde_json::Value {
        serde_json::json!({"f:status": {"f:loadBalancer": {"f:ingress": {}}}})
    }

    #[test]
    fn another_manager_of_the_ingress_is_named_and_ours_or_other_fields_are_not() {
        let mut service = Service::default();
        service.metadata.managed_fields = Some(vec![
            entry("ferrolb-operator", ingress(), 10),
            entry("svclb-controller", ingress(), 12),
            entry(
                "kubectl-edit",
                serde_json::json!({"f:metadata": {"f:labels": {}}}),
                13,
            ),
        ]);
        let found = other_ingress_writers(&service, "ferrolb-operator");
        assert_eq!(found, vec!["svclb-controller".to_string()]);
        let message = crate::plan::conditions::other_controller_message(&found);
        assert!(message.contains("\"svclb-controller\""), "{message}");
        assert!(message.contains("--disable servicelb"), "{message}");
        assert!(message.contains("loadBalancerClass"), "{message}");
        service.metadata.managed_fields = None;
        assert!(other_ingress_writers(&service, "ferrolb-operator").is_empty());
    }

    #[test]
    fn an_entry_older_than_our_last_write_is_a_leftover_not_a_writer() {
        let mut service = Service::default();
        // MetalLB wrote the IP, then ferrolb took over writing the same IP:
        // both own the field, MetalLB's entry is older.
        service.metadata.managed_fields = Some(vec![
            entry("metallb-controller", ingress(), 0),
            entry("ferrolb-operator", ingress(), 30),
        ]);
        assert!(other_ingress_writers(&service, "ferrolb-operator").is_empty());
        // Before ferrolb writes anything, nobody is named yet.
        service.metadata.managed_fields = Some(vec![entry("metallb-controller", ingress(), 0)]);
        assert!(other_ingress_writers(&service, "ferrolb-operator").is_empty());
        // MetalLB still running writes again after ferrolb (same second too).
        service.metadata.managed_fields = Some(vec![
            entry("metallb-controller", ingress(), 30),
            entry("ferrolb-operator", ingress(), 30),
        ]);
        assert_eq!(
            other_ingress_writers(&service, "ferrolb-operator"),
            ["metallb-controller"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).expect("service yaml")
    }

    #[test]
    fn classes_decide_ownership() {
        let lb = service("metadata: {name: a, namespace: d}\nspec: {type: LoadBalancer}");
        let other = service(
            "metadata: {name: a, namespace: d}\nspec: {type: LoadBalancer, loadBalancerClass: example.com/x}",
        );
        let ours = service(
            "metadata: {name: a, namespace: d}\nspec: {type: LoadBalancer, loadBalancerClass: ferrolb.io/ferrolb}",
        );
        let cluster_ip = service("metadata: {name: a, namespace: d}\nspec: {type: ClusterIP}");
        assert!(is_ours(&lb, "ferrolb.io/ferrolb") && is_ours(&ours, "ferrolb.io/ferrolb"));
        assert!(
            !is_ours(&other, "ferrolb.io/ferrolb") && !is_ours(&cluster_ip, "ferrolb.io/ferrolb")
        );
    }

    #[test]
    fn metallb_annotations_are_read_and_ours_win() {
        let svc = service(
            "metadata:\n  name: a\n  namespace: d\n  annotations:\n    metallb.universe.tf/address-pool: old\n    metallb.io/loadBalancerIPs: '10.0.0.1, fd00::1'\n    metallb.io/allow-shared-ip: k\nspec:\n  type: LoadBalancer\n  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6, IPv4]\n  ports: [{port: 53, protocol: UDP}]",
        );
        let r = request(&svc, &Labels::new()).expect("request");
        assert_eq!(r.pool.as_deref(), Some("old"));
        assert_eq!(r.requested.len(), 2);
        assert_eq!(r.families, FamilyPolicy::PreferDual(Family::V6));
        assert_eq!(r.sharing.expect("sharing").ports, [(Protocol::Udp, 53)]);
        let mut svc = svc;
        svc.metadata
            .annotations
            .get_or_insert_default()
            .insert("ferrolb.io/address-pool".into(), "new".into());
        assert_eq!(
            request(&svc, &Labels::new())
                .expect("request")
                .pool
                .as_deref(),
            Some("new")
        );
    }

    #[test]
    fn an_unreadable_ip_annotation_is_an_invalid_request() {
        let svc = service(
            "metadata: {name: a, namespace: d, annotations: {ferrolb.io/loadBalancerIPs: 'ten.0.0.1'}}\nspec: {type: LoadBalancer}",
        );
        let failure = request(&svc, &Labels::new()).expect_err("invalid");
        assert_eq!(failure.reason, Reason::InvalidRequest);
        assert!(failure.message.contains("'ten.0.0.1' is not an IP address"));
        let svc = service(
            "metadata: {name: a, namespace: d}\nspec: {type: LoadBalancer, loadBalancerIP: 10.0.0.9}",
        );
        assert_eq!(
            request(&svc, &Labels::new()).expect("ok").requested,
            ["10.0.0.9".parse::<IpAddr>().expect("ip")]
        );
    }
}
