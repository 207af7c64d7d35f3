//! `BGPPeer`: a router the speakers open BGP sessions to.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::address::{Family, parse_ip, parse_ipv4};
use crate::cel::{self, lit, push_rules, rule, rule_at};
use crate::timer::parse_timer;
use crate::validation::{Errors, FieldError, NOT_A_NAME, Validate, is_object_name, selector};

/// The message when neither or both of peerASN and dynamicASN are set.
pub const ONE_ASN: &str = "set exactly one of peerASN and dynamicASN";
/// The message for ebgpMultiHop on an iBGP session.
pub const MULTIHOP_IBGP: &str =
    "ebgpMultiHop applies to eBGP only: this peer's AS equals myASN (iBGP)";
/// The message for a keepalive longer than the hold time.
pub const KEEPALIVE_OVER_HOLD: &str = "keepaliveTime must not exceed holdTime";
/// The message for a source address of the other family.
pub const SOURCE_FAMILY: &str = "sourceAddress must be of the same IP family as peerAddress";
/// The hold time when none is given (RFC 4271's suggested value).
pub const DEFAULT_HOLD_TIME: &str = "90s";

fn default_hold_time() -> String {
    DEFAULT_HOLD_TIME.to_string()
}

fn default_port() -> u16 {
    179
}

/// A BGP router the speakers peer with. Every node selected by `nodeSelectors`
/// opens its own session to it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    shortname = "bgpp",
    category = "ferrolb",
    status = "BGPPeerStatus",
    doc = "A BGP router that the speakers advertise Service IPs to.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.peerASN"),
    printcolumn(name = "My ASN", type_ = "integer", json_path = ".spec.myASN"),
    printcolumn(
        name = "Established",
        type_ = "integer",
        json_path = ".status.establishedNodes"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.selectedNodes"),
    printcolumn(name = "BFD Up", type_ = "integer", json_path = ".status.bfdUpNodes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = peer_rules)]
pub struct BGPPeerSpec {
    /// The AS number the speakers use on this session, 1-4294967295.
    #[serde(rename = "myASN")]
    #[schemars(schema_with = "cel::asn")]
    pub my_asn: u32,

    /// The peer's AS number, 1-4294967295. Set this or `dynamicASN`. Equal to
    /// `myASN` makes the session iBGP.
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::optional_asn")]
    pub peer_asn: Option<u32>,

    /// Accept whatever AS the peer announces, as long as it is `internal` (equal
    /// to myASN) or `external` (different). Set this or `peerASN`.
    #[serde(
        rename = "dynamicASN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsn>,

    /// The peer's IP address, IPv4 or IPv6.
    #[schemars(schema_with = "cel::ip_string")]
    pub peer_address: String,

    /// The peer's TCP port.
    #[serde(default = "default_port")]
    #[schemars(schema_with = "cel::port")]
    pub peer_port: u16,

    /// The local address to open the session from; by default the kernel picks
    /// one. Must be of the peer address's family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::ip_string")]
    pub source_address: Option<String>,

    /// Proposed BGP hold time in whole seconds: `0s` (no keepalives) or 3s to
    /// 65535s. The session uses the lower of both sides' values.
    #[serde(default = "default_hold_time")]
    #[schemars(schema_with = "cel::hold_time")]
    pub hold_time: String,

    /// Interval between KEEPALIVE messages, at most `holdTime`; by default a third
    /// of the negotiated hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::keepalive_time")]
    pub keepalive_time: Option<String>,

    /// How long to wait for the TCP connection before retrying (BGP's
    /// ConnectRetry time), 1s to 65535s; by default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::connect_time")]
    pub connect_time: Option<String>,

    /// The BGP identifier to use, an IPv4 address; by default the node's IPv4
    /// address.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::ipv4_string")]
    pub router_id: Option<String>,

    /// Label selectors on Nodes that peer with this router; a node matching any
    /// one of them does. Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::selector_list")]
    pub node_selectors: Vec<LabelSelector>,

    /// The TCP-MD5 (RFC 2385) password, read by the speakers from this Secret key.
    /// The value never appears in any ferrolb object, log or event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,

    /// Allow the eBGP peer to be more than one hop away (raises the TTL). Only
    /// for eBGP sessions.
    #[serde(default)]
    pub ebgp_multi_hop: bool,

    /// Negotiate graceful restart (RFC 4724): the peer keeps this node's routes
    /// while its speaker restarts.
    #[serde(default)]
    pub enable_graceful_restart: bool,

    /// Carry both address families on this one session (MetalLB's field):
    /// an IPv4 session also advertises the IPv6 prefixes, with this node's
    /// IPv6 address on the session's interface as next hop, and an IPv6
    /// session the IPv4 ones. A family the router does not offer, or one for
    /// which the node has no address there, is not sent, and the session's
    /// status says so.
    #[serde(default)]
    pub dual_stack_address_family: bool,

    /// The BFDProfile whose BFD session guards this peer's BGP sessions: when
    /// BFD goes down (a node or link failure), the BGP session goes down at
    /// once instead of after the hold time. Unset: no BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::name_string")]
    pub bfd_profile: Option<String>,
}

/// Which kind of AS a dynamic peer must be in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsn {
    /// The peer's AS equals myASN (iBGP).
    Internal,
    /// The peer's AS differs from myASN (eBGP).
    External,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's namespace.
    #[serde(default = "default_secret_namespace")]
    #[schemars(schema_with = "cel::name_string")]
    pub namespace: String,
    /// The Secret's name.
    #[schemars(schema_with = "cel::name_string")]
    pub name: String,
    /// The key inside the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_namespace() -> String {
    crate::constants::NAMESPACE.to_string()
}

fn default_secret_key() -> String {
    "password".to_string()
}

/// What the operator reports about a peer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Established` rolled up over the selected nodes, with the reason when
    /// sessions fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::conditions")]
    pub conditions: Vec<Condition>,

    /// Nodes selected to peer with this router.
    #[serde(default)]
    pub selected_nodes: i32,

    /// Selected nodes whose session is Established.
    #[serde(default)]
    pub established_nodes: i32,

    /// With a bfdProfile: selected nodes whose BFD session is Up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_up_nodes: Option<i32>,
}

/// The cross-field rules of a peer, as CEL on the spec.
fn peer_rules(schema: &mut Schema) {
    let timer = lit(cel::TIMER_RE);
    push_rules(
        schema,
        [
            rule("has(self.peerASN) != has(self.dynamicASN)", ONE_ASN),
            rule_at(
                "!self.ebgpMultiHop || (has(self.dynamicASN) ? self.dynamicASN == 'external' \
                 : (has(self.peerASN) && self.peerASN != self.myASN))",
                MULTIHOP_IBGP,
                ".ebgpMultiHop",
            ),
            rule_at(
                format!(
                    "!has(self.keepaliveTime) || !self.keepaliveTime.matches({timer}) \
                     || !self.holdTime.matches({timer}) \
                     || duration(self.keepaliveTime) <= duration(self.holdTime)"
                ),
                KEEPALIVE_OVER_HOLD,
                ".keepaliveTime",
            ),
            rule_at(
                "!has(self.sourceAddress) || !isIP(self.sourceAddress) || !isIP(self.peerAddress) \
                 || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",
                SOURCE_FAMILY,
                ".sourceAddress",
            ),
        ],
    );
}

/// Checks a timer field: syntax, then bounds.
fn check_timer(
    errors: &mut Errors,
    path: &str,
    text: &str,
    (min, max): (u64, u64),
    zero_ok: bool,
) -> Option<u64> {
    let secs = errors.check(path, parse_timer(text))?.as_secs();
    let field = path.rsplit('.').next().unwrap_or(path);
    if zero_ok && secs == 0 {
        return Some(0);
    }
    if secs < min || secs > max {
        if zero_ok {
            errors.add(
                path,
                format!("{field} must be 0s (no keepalives) or between {min}s and {max}s"),
            );
        } else {
            errors.add(path, format!("{field} must be between {min}s and {max}s"));
        }
    }
    Some(secs)
}

impl BGPPeerSpec {
    /// Whether the session is iBGP (both sides in one AS).
    pub fn is_ibgp(&self) -> bool {
        match (self.dynamic_asn, self.peer_asn) {
            (Some(kind), _) => kind == DynamicAsn::Internal,
            (None, Some(asn)) => asn == self.my_asn,
            (None, None) => false,
        }
    }

    /// The peer address, when it parses.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        parse_ip(&self.peer_address).ok()
    }
}

impl Validate for BGPPeerSpec {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::new();
        if self.my_asn == 0 {
            errors.add("spec.myASN", "an AS number is 1-4294967295");
        }
        if self.peer_asn == Some(0) {
            errors.add("spec.peerASN", "an AS number is 1-4294967295");
        }
        if self.peer_asn.is_some() == self.dynamic_asn.is_some() {
            errors.add("spec", ONE_ASN);
        }
        if self.peer_port == 0 {
            errors.add("spec.peerPort", "a TCP port is 1-65535");
        }
        let peer = errors.check("spec.peerAddress", parse_ip(&self.peer_address));
        if let Some(source) = &self.source_address {
            let source = errors.check("spec.sourceAddress", parse_ip(source));
            if let (Some(peer), Some(source)) = (peer, source)
                && Family::of(&peer) != Family::of(&source)
            {
                errors.add("spec.sourceAddress", SOURCE_FAMILY);
            }
        }
        if let Some(id) = &self.router_id {
            errors.check("spec.routerID", parse_ipv4(id));
        }
        let hold = check_timer(
            &mut errors,
            "spec.holdTime",
            &self.hold_time,
            (3, 65535),
            true,
        );
        if let Some(keepalive) = &self.keepalive_time {
            let keepalive = check_timer(
                &mut errors,
                "spec.keepaliveTime",
                keepalive,
                (0, 21845),
                false,
            );
            if let (Some(hold), Some(keepalive)) = (hold, keepalive)
                && keepalive > hold
            {
                errors.add("spec.keepaliveTime", KEEPALIVE_OVER_HOLD);
            }
        }
        if let Some(connect) = &self.connect_time {
            check_timer(&mut errors, "spec.connectTime", connect, (1, 65535), false);
        }
        if self.ebgp_multi_hop
            && (self.is_ibgp() || (self.peer_asn.is_none() && self.dynamic_asn.is_none()))
        {
            errors.add("spec.ebgpMultiHop", MULTIHOP_IBGP);
        }
        selector::check_all(&mut errors, "spec.nodeSelectors", &self.node_selectors);
        if let Some(secret) = &self.password_secret_ref {
            for (path, name) in [
                ("spec.passwordSecretRef.namespace", &secret.namespace),
                ("spec.passwordSecretRef.name", &secret.name),
            ] {
                if !is_object_name(name) {
                    errors.add(path, format!("'{name}' {NOT_A_NAME}"));
                }
            }
            if secret.key.is_empty() || secret.key.len() > 253 {
                errors.add(
                    "spec.passwordSecretRef.key",
                    "a Secret key is 1-253 characters",
                );
            }
        }
        errors.into_vec()
    }
}
