//! Names shared by every ferrolb component: the API group, the namespace,
//! annotations users write on Services, condition types and reasons.

/// The API group of every ferrolb resource.
pub const GROUP: &str = "ferrolb.io";
/// The API version.
pub const VERSION: &str = "v1alpha1";
/// The namespace ferrolb runs in.
pub const NAMESPACE: &str = "ferrolb-system";
/// The load balancer class ferrolb answers to (Services without a class are ours too).
pub const LB_CLASS: &str = "ferrolb.io/ferrolb";

/// The Secret (in ferrolb's namespace) holding the fast failover key: the
/// operator creates it, the speakers read it.
pub const FAILOVER_SECRET: &str = "ferrolb-failover";

/// The Secret (in ferrolb's namespace) holding BGP passwords, one key per
/// BGPPeer: the only Secret besides the failover key a speaker may read.
pub const BGP_PASSWORDS_SECRET: &str = "ferrolb-bgp-passwords";

/// The operator replicas' leader election Lease, in ferrolb's namespace.
pub const LEADER_LEASE: &str = "ferrolb-operator";

/// The name of a node's speaker Lease in ferrolb's namespace: its sign of
/// life, renewed by the speaker and read by the operator and other speakers.
pub fn speaker_lease(node: &str) -> String {
    format!("speaker-{node}")
}

/// Field managers, named after the binaries.
pub mod manager {
    /// The operator's field manager.
    pub const OPERATOR: &str = "ferrolb-operator";
    /// The speakers' field manager.
    pub const SPEAKER: &str = "ferrolb-speaker";
    /// The webhook's field manager.
    pub const WEBHOOK: &str = "ferrolb-webhook";
}

/// Service annotations. Each has MetalLB spellings that are read too.
pub mod annotation {
    /// The pool to take the address from.
    pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
    /// Requested IPs, comma-separated, one per family.
    pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
    /// The sharing key: Services with the same key may share an IP.
    pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";

    /// The spellings read for an annotation, ours first.
    pub fn spellings(ours: &str) -> [String; 3] {
        let name = ours.trim_start_matches("ferrolb.io/");
        [
            ours.to_string(),
            format!("metallb.io/{name}"),
            format!("metallb.universe.tf/{name}"),
        ]
    }
}

/// Label a node carries to keep it out of external load balancing.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Condition types and reasons on Services and ferrolb objects.
pub mod condition {
    /// Whether the Service has its IPs.
    pub const IP_ALLOCATED: &str = "ferrolb.io/IPAllocated";
    /// Whether the Service's IPs are announced.
    pub const ANNOUNCED: &str = "ferrolb.io/Announced";
    /// Whether the speaker applied its NodeAnnouncement.
    pub const APPLIED: &str = "Applied";
    /// Whether an object is valid and in use.
    pub const READY: &str = "Ready";

    /// Reasons for `IPAllocated`.
    pub mod reason {
        /// True: the IPs are assigned.
        pub const ALLOCATED: &str = "Allocated";
        /// No pool serves the Service.
        pub const NO_MATCHING_POOL: &str = "NoMatchingPool";
        /// Every matching pool is full.
        pub const POOL_EXHAUSTED: &str = "PoolExhausted";
        /// The requested IP is held by another Service.
        pub const REQUESTED_IP_UNAVAILABLE: &str = "RequestedIPUnavailable";
        /// The requested IP lies in no pool.
        pub const REQUESTED_IP_NOT_IN_ANY_POOL: &str = "RequestedIPNotInAnyPool";
        /// The IP is shared under incompatible terms.
        pub const SHARING_CONFLICT: &str = "SharingConflict";
        /// The annotations or spec cannot be satisfied as written.
        pub const INVALID_REQUEST: &str = "InvalidRequest";
        /// Dual stack required but one family has no address.
        pub const DUAL_STACK_UNAVAILABLE: &str = "DualStackUnavailable";
        /// The Service keeps an IP that no pool holds any more (its pool was
        /// edited or deleted); nothing is renumbered silently.
        pub const IP_NOT_IN_ANY_POOL: &str = "IPNotInAnyPool";
        /// True for `Announced`.
        pub const ANNOUNCED: &str = "Announced";
        /// No advertisement covers the pool.
        pub const NO_ADVERTISEMENT: &str = "NoAdvertisement";
        /// Advertisements cover the pool, but their `serviceSelectors`
        /// skip the Service.
        pub const NOT_SELECTED: &str = "NotSelected";
        /// No node may announce.
        pub const NO_ELIGIBLE_NODE: &str = "NoEligibleNode";
        /// externalTrafficPolicy Local and no node has a ready endpoint.
        pub const NO_LOCAL_ENDPOINTS: &str = "NoLocalEndpoints";
        /// The chosen node's speaker has not applied it yet.
        pub const NOT_YET_APPLIED: &str = "NotYetApplied";
        /// The chosen node's speaker cannot answer for it (such as an
        /// interface the advertisement names that the node does not have).
        pub const ANNOUNCE_FAILED: &str = "AnnounceFailed";
        /// No BGP session carries the route.
        pub const NO_ESTABLISHED_SESSION: &str = "NoEstablishedSession";
        /// Another load-balancer controller writes the Service's
        /// `status.loadBalancer` too.
        pub const OTHER_CONTROLLER: &str = "OtherController";
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metallb_spellings_are_read_too() {
        assert_eq!(
            super::annotation::spellings(super::annotation::ADDRESS_POOL),
            [
                "ferrolb.io/address-pool",
                "metallb.io/address-pool",
                "metallb.universe.tf/address-pool"
            ]
        );
    }
}
