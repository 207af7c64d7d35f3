//! What a Service asks of the allocator, and what it gets back, as plain values.

use std::fmt;
use std::net::IpAddr;

use ferrolb_api::address::Family;
use ferrolb_api::constants::condition::reason;

use super::selector::Labels;

/// A Service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceKey {
    /// A key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The IP families a Service wants (`spec.ipFamilyPolicy` with `spec.ipFamilies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FamilyPolicy {
    /// One address of this family.
    Single(Family),
    /// One address of each family if possible, at least one; the primary first.
    PreferDual(Family),
    /// One address of each family, or none at all; the primary first.
    RequireDual(Family),
}

impl FamilyPolicy {
    /// The families in order of preference.
    pub fn families(self) -> Vec<Family> {
        let other = |f: Family| match f {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        };
        match self {
            FamilyPolicy::Single(f) => vec![f],
            FamilyPolicy::PreferDual(f) | FamilyPolicy::RequireDual(f) => vec![f, other(f)],
        }
    }

    /// Whether an address of `family` is allowed.
    pub fn allows(self, family: Family) -> bool {
        self.families().contains(&family)
    }
}

/// A transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// The terms under which a Service shares its IP (`ferrolb.io/allow-shared-ip`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sharing {
    /// The sharing key: only Services with the same key share.
    pub key: String,
    /// What traffic reaches: Services sharing an IP must agree on it (for
    /// `externalTrafficPolicy: Local`, the pod selector; empty otherwise).
    pub backend: String,
    /// The Service's ports: no two sharers may use the same one.
    pub ports: Vec<(Protocol, u16)>,
}

impl Sharing {
    /// Whether two Services may share an IP, and why not.
    pub fn conflict_with(&self, other: &Sharing) -> Option<String> {
        if self.key != other.key {
            return Some(format!(
                "its sharing key is '{}', not '{}'",
                other.key, self.key
            ));
        }
        if self.backend != other.backend {
            return Some(
                "it selects other backends (Services sharing an IP with externalTrafficPolicy: Local must select the same pods)"
                    .to_string(),
            );
        }
        let clash: Vec<String> = self
            .ports
            .iter()
            .filter(|p| other.ports.contains(p))
            .map(|(proto, port)| format!("{port}/{proto:?}").to_uppercase())
            .collect();
        (!clash.is_empty()).then(|| format!("it uses port {} too", clash.join(", ")))
    }
}

/// Everything the allocator needs to know about one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRequest {
    /// Which Service.
    pub service: ServiceKey,
    /// Labels of the Service's namespace (for `namespaceSelectors`).
    pub namespace_labels: Labels,
    /// Labels of the Service (for `serviceSelectors`).
    pub labels: Labels,
    /// The families it wants.
    pub families: FamilyPolicy,
    /// IPs it asks for by name (`ferrolb.io/loadBalancerIPs` or
    /// `spec.loadBalancerIP`); empty to let the allocator choose.
    pub requested: Vec<IpAddr>,
    /// The pool it asks for (`ferrolb.io/address-pool`).
    pub pool: Option<String>,
    /// Its sharing terms, if it allows sharing.
    pub sharing: Option<Sharing>,
}

impl ServiceRequest {
    /// A request with defaults: IPv4 only, nothing asked for, no sharing.
    pub fn new(service: ServiceKey) -> ServiceRequest {
        ServiceRequest {
            service,
            namespace_labels: Labels::new(),
            labels: Labels::new(),
            families: FamilyPolicy::Single(Family::V4),
            requested: Vec::new(),
            pool: None,
            sharing: None,
        }
    }
}

/// Why a Service has no IP; the names are the condition reasons users see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No pool serves the Service (with that family).
    NoMatchingPool,
    /// Every pool that serves it is full.
    PoolExhausted,
    /// The requested IP is held by another Service.
    RequestedIPUnavailable,
    /// The requested IP lies in no pool.
    RequestedIPNotInAnyPool,
    /// The IP is shared under incompatible terms.
    SharingConflict,
    /// The request contradicts itself.
    InvalidRequest,
    /// Dual stack is required but one family cannot be served.
    DualStackUnavailable,
}

impl Reason {
    /// The condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoMatchingPool => reason::NO_MATCHING_POOL,
            Reason::PoolExhausted => reason::POOL_EXHAUSTED,
            Reason::RequestedIPUnavailable => reason::REQUESTED_IP_UNAVAILABLE,
            Reason::RequestedIPNotInAnyPool => reason::REQUESTED_IP_NOT_IN_ANY_POOL,
            Reason::SharingConflict => reason::SHARING_CONFLICT,
            Reason::InvalidRequest => reason::INVALID_REQUEST,
            Reason::DualStackUnavailable => reason::DUAL_STACK_UNAVAILABLE,
        }
    }
}

/// A failed allocation: the reason and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The condition reason.
    pub reason: Reason,
    /// What happened and what to do.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

/// One IP held by a Service, and the pool it came from (`None` when it lies in
/// no pool any more: the pool was edited or deleted after it was handed out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The IP.
    pub ip: IpAddr,
    /// Its pool.
    pub pool: Option<String>,
    /// When in no pool now: the pool it was in last (kept announced as that
    /// pool's advertisements say, so an edited or deleted pool costs no
    /// traffic; an operator restart forgets it).
    pub was_in: Option<String>,
}

impl Assignment {
    /// The pool whose advertisements announce it: its own, or the last one.
    pub fn announced_as(&self) -> Option<String> {
        self.pool.clone().or_else(|| self.was_in.clone())
    }
}
