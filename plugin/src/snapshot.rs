//! What `status` and `doctor` read from the cluster, read once
//! ([`crate::cluster::snapshot`]) and judged by pure functions.

use std::net::IpAddr;

use ferrolb_api::address::parse_cidr;
use ferrolb_api::constants::{LB_CLASS, condition};
use ferrolb_api::{
    BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement, NodeAnnouncement, PrefixSet,
};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

/// Objects read from one cluster at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// When it was read.
    pub now: Timestamp,
    /// `type: LoadBalancer` Services in scope.
    pub services: Vec<Service>,
    /// Every NodeAnnouncement.
    pub announcements: Vec<NodeAnnouncement>,
    /// Every PrefixSet.
    pub prefix_sets: Vec<PrefixSet>,
    /// Every pool.
    pub pools: Vec<IPAddressPool>,
    /// Every L2Advertisement.
    pub l2_advertisements: Vec<L2Advertisement>,
    /// Every BGPAdvertisement.
    pub bgp_advertisements: Vec<BGPAdvertisement>,
    /// Every BGPPeer.
    pub peers: Vec<BGPPeer>,
    /// Events about the Services asked for.
    pub events: Vec<Event>,
    /// Every Node (doctor).
    pub nodes: Vec<Node>,
    /// Leases in ferrolb's namespace (doctor).
    pub leases: Vec<Lease>,
    /// `kube-system/kube-proxy`, when there is one (doctor).
    pub kube_proxy: Option<ConfigMap>,
    /// Pods of other load-balancer controllers (doctor).
    pub other_controllers: Vec<Pod>,
    /// ferrolb's namespace, when it exists (doctor).
    pub namespace: Option<Namespace>,
    /// The webhook's registration, when there is one (doctor).
    pub webhook: Option<ValidatingWebhookConfiguration>,
    /// What the apiserver answered to a pool the webhook must deny, sent
    /// with dry run (doctor): None when accepted.
    pub webhook_probe: Option<Result<(), String>>,
}

/// Whether ferrolb handles a Service: `type: LoadBalancer`, with no class or ours.
pub fn is_ours(service: &Service) -> bool {
    let spec = service.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_none_or(|c| c == LB_CLASS)
}

/// `namespace/name` of a Service.
pub fn key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or("default"),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A Service's ingress IPs.
pub fn ingress_ips(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// One of a Service's conditions.
pub fn service_condition<'a>(service: &'a Service, kind: &str) -> Option<&'a Condition> {
    service
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// `True`, or `False/Reason`, or `-` for a condition not written yet.
pub fn condition_cell(condition: Option<&Condition>) -> String {
    match condition {
        None => "-".into(),
        Some(c) if c.status == "True" => "True".into(),
        Some(c) => format!("{}/{}", c.status, c.reason),
    }
}

/// The pools holding an IP.
pub fn pools_of(snapshot: &Snapshot, ip: IpAddr) -> Vec<String> {
    snapshot
        .pools
        .iter()
        .filter(|p| p.spec.ranges().iter().any(|r| r.contains(ip)))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Whether a prefix (`a.b.c.d/n`) covers an IP.
pub fn covers(prefix: &str, ip: IpAddr) -> bool {
    parse_cidr(prefix).is_ok_and(|r| r.contains(ip))
}

/// The two conditions' types, in the order they are shown.
pub const CONDITIONS: [&str; 2] = [condition::IP_ALLOCATED, condition::ANNOUNCED];
