//! `NodeAnnouncement`: one node's desired announcements, written by the operator
//! (spec) and applied and reported by that node's speaker (status).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::address::{Family, format_ip, parse_cidr};
use crate::bgppeer::{DynamicAsn, SecretKeyRef};
use crate::cel::{self, push_rules, rule_at};
use crate::community::Community;
use crate::ipset::IpSet;
use crate::timer::Timer;
use crate::validation::{
    Errors, FieldError, NOT_A_NAME, NOT_AN_INTERFACE, Validate, is_interface_name, is_object_name,
};

/// The message for a standby entry without the node it stands by for (or an
/// active entry with one).
pub const STANDBY_FOR: &str =
    "standbyFor is required for role standby and not allowed for role active";

/// The message for a standby group naming a standby of its own.
pub const STANDBY: &str = "standby is only for role active";
/// The message for `arming` on an active group.
pub const ARMING: &str = "arming is only for role standby";

/// What one node announces. Named after the node; the operator writes the spec,
/// the node's speaker the status. `kubectl get nodeannouncements` shows what
/// every node announces and whether it worked.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "NodeAnnouncement",
    plural = "nodeannouncements",
    shortname = "na",
    category = "ferrolb",
    status = "NodeAnnouncementStatus",
    doc = "The announcements one node's speaker must make, and what it reports back.",
    printcolumn(name = "L2 Active", type_ = "string", json_path = ".status.l2Active"),
    printcolumn(name = "BGP Up", type_ = "string", json_path = ".status.bgpSessions"),
    printcolumn(name = "BFD Up", type_ = "string", json_path = ".status.bfdSessions"),
    printcolumn(
        name = "Generation",
        type_ = "integer",
        json_path = ".metadata.generation"
    ),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.observedGeneration"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeAnnouncementSpec {
    /// The node this is for (the object's name too). Always written by the
    /// operator, so the spec stays present when the node announces nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::name_string")]
    pub node: Option<String>,

    /// IPs this node answers ARP/NDP for (role `active`) or is ready to take
    /// over (role `standby`), in groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "l2_list")]
    pub l2: Vec<L2Group>,

    /// BGP sessions this node opens, each with the prefixes it advertises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "session_list")]
    pub bgp: Vec<BgpSession>,
}

/// A group of IPs this node plays one part for, paired with one other node:
/// one group per role, other node and interfaces, so the list stays short and
/// the IPs are written as ranges.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = l2_rules)]
pub struct L2Group {
    /// `active`: answer for the IPs now. `standby`: watch the active node and
    /// take over when it stops answering.
    pub role: L2Role,

    /// For role `standby`: the node that is active for the IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::name_string")]
    pub standby_for: Option<String>,

    /// For role `active`: the node standing by for the IPs (none when no
    /// other node may announce them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::name_string")]
    pub standby: Option<String>,

    /// Where the other speaker of the pair answers failover messages (as it
    /// reports in `status.probeAddress`): for role `standby` the active
    /// node's (probed), for role `active` the standby's (handed the IPs on a
    /// planned stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "probe_string")]
    pub probe: Option<SocketAddr>,

    /// Interfaces to answer on. Empty: the interface carrying the node's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::interface_set")]
    pub interfaces: Vec<String>,

    /// For role `standby`: probe the active node until its speaker answers,
    /// and take nothing over yet. The operator sets it on a new standby
    /// while the one it replaces, still able to, keeps standing by: the old
    /// one lets go only once the new one has heard the active node
    /// (make-before-break).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arming: bool,

    /// The Service IPs.
    pub ips: IpSet,
}

/// The part a node plays for an IP.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum L2Role {
    /// Answers for the IP.
    Active,
    /// Ready to take the IP over.
    Standby,
}

/// One BGP session with everything the speaker needs, defaults resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpSession {
    /// The BGPPeer this session comes from.
    #[schemars(schema_with = "cel::name_string")]
    pub name: String,
    /// Local AS number.
    #[serde(rename = "myASN")]
    #[schemars(schema_with = "cel::asn")]
    pub my_asn: u32,
    /// The peer's AS number, unless `dynamicASN` is set.
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::optional_asn")]
    pub peer_asn: Option<u32>,
    /// Accept any internal or external AS from the peer.
    #[serde(
        rename = "dynamicASN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsn>,
    /// The peer's address.
    #[schemars(schema_with = "cel::ip_string")]
    pub peer_address: IpAddr,
    /// The peer's TCP port.
    #[schemars(schema_with = "cel::port")]
    pub peer_port: u16,
    /// The local address to connect from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::ip_string")]
    pub source_address: Option<IpAddr>,
    /// The BGP identifier (IPv4).
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::ipv4_string")]
    pub router_id: Option<Ipv4Addr>,
    /// Proposed hold time.
    #[schemars(schema_with = "cel::hold_time")]
    pub hold_time: Timer,
    /// Keepalive interval.
    #[schemars(schema_with = "cel::keepalive_time")]
    pub keepalive_time: Timer,
    /// Connect retry time.
    #[schemars(schema_with = "cel::connect_time")]
    pub connect_time: Timer,
    /// Raise the TTL for a multi-hop eBGP peer.
    #[serde(default)]
    pub ebgp_multi_hop: bool,
    /// Negotiate graceful restart.
    #[serde(default)]
    pub enable_graceful_restart: bool,
    /// Offer both address families on this session.
    #[serde(default)]
    pub dual_stack_address_family: bool,
    /// The TCP-MD5 password's Secret key; the value itself is never written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Prefixes only this node advertises on this session (Services with
    /// `externalTrafficPolicy: Local`), with their path attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "prefix_list")]
    pub prefixes: Vec<AdvertisedPrefix>,
    /// The BFD session guarding this BGP session (its BGPPeer's BFDProfile,
    /// resolved); none: no BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSettings>,
    /// BGPAdvertisements whose shared prefixes this session carries too: those
    /// of the peer's family in their PrefixSets (the prefixes every selected
    /// node advertises, kept out of each node's object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::name_set")]
    pub advertisements: Vec<String>,
}

/// A BFDProfile as a session runs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdSettings {
    /// The BFDProfile this comes from.
    #[schemars(schema_with = "cel::name_string")]
    pub profile: String,
    /// Required Min RX, milliseconds.
    pub receive_interval: u32,
    /// Desired Min TX, milliseconds.
    pub transmit_interval: u32,
    /// Detect Mult.
    pub detect_multiplier: u8,
    /// Wait for the router to send first.
    #[serde(default)]
    pub passive_mode: bool,
    /// Lowest TTL of a multihop packet.
    pub minimum_ttl: u8,
    /// Keyed authentication, the key in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<crate::bfdprofile::BfdAuthentication>,
}

/// One prefix with its path attributes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvertisedPrefix {
    /// The prefix, such as `172.20.1.5/32` or `fd00::5/128`.
    #[schemars(length(max = 49))]
    pub prefix: String,
    /// Standard and large communities, as in BGPAdvertisement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 40)))]
    pub communities: Vec<String>,
    /// LOCAL_PREF, for iBGP sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cel::local_pref")]
    pub local_pref: Option<u32>,
}

/// What the speaker reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAnnouncementStatus {
    /// The spec generation the speaker has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Applied`: whether the speaker applied the whole spec, and why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::conditions")]
    pub conditions: Vec<Condition>,

    /// Layer 2 state, IPs grouped by state: those answered (`Announcing`,
    /// `TakenOver`), those that cannot be (`Failed`), and standby IPs only
    /// when something stands in their way (`Standby` with a message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "l2_state_list")]
    pub l2: Vec<L2State>,

    /// Per-session BGP state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "session_state_list")]
    pub bgp: Vec<SessionState>,

    /// The IPs this node answers ARP/NDP for right now, as ranges: the first
    /// few and how many more (a table column can show only one value of a
    /// list, so this summary exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_active: Option<String>,

    /// Sessions Established out of sessions configured, such as `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_sessions: Option<String>,

    /// BFD sessions Up out of BGP sessions with BFD, such as `2/2`; absent
    /// when no session uses BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_sessions: Option<String>,

    /// Where this node's speaker answers failover probes (`ip:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_address: Option<String>,

    /// The fast failover path towards each active node this node stands by
    /// for: `Armed` once that node's speaker answered a probe, `Unavailable`
    /// (with why) when it never did or went silent while alive — then only the
    /// slow path (the speaker Lease) moves its IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "failover_state_list")]
    pub failover: Vec<FailoverState>,

    /// What on this node, outside the speaker's reach, breaks what it
    /// announces, each with the fix: such as the kernel answering ARP for
    /// Service IPs that kube-proxy in IPVS mode put on `kube-ipvs0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "node_problem_list")]
    pub problems: Vec<NodeProblem>,
}

/// The fast failover path from this (standby) node towards one active node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverState {
    /// The active node.
    pub node: String,
    /// How the path stands.
    pub state: FailoverPhase,
    /// Why it is unavailable (`NoProbeAnswer`, `ProbesLostWhileAlive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// How the fast failover path towards an active node stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailoverPhase {
    /// The active node's speaker answers: a takeover follows its silence.
    Armed,
    /// Not heard yet.
    Pending,
    /// No takeover from this node: only its Lease running out moves its IPs.
    Unavailable,
}

/// A problem on the node that the speaker reports and cannot fix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeProblem {
    /// What it is, as a word (`KernelAnswersARP`).
    pub reason: String,
    /// What it breaks and how to fix it.
    pub message: String,
}

/// The reason a node reports when its kernel answers ARP for Service IPs.
pub const KERNEL_ANSWERS_ARP: &str = "KernelAnswersARP";

/// The layer 2 state of a group of IPs on this node: one group per state,
/// interfaces, message and node taken from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2State {
    /// What the speaker is doing for them.
    pub state: L2Phase,
    /// The Service IPs.
    pub ips: IpSet,
    /// Interfaces they are answered on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// When this group first showed this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Why, for `Failed` and for a standby not answering, and the detail of a takeover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `TakenOver`: the node the IPs were taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_from: Option<String>,
}

/// Layer 2 state of an IP on a node.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum L2Phase {
    /// Answering ARP/NDP for the IP.
    Announcing,
    /// Standing by, watching the active node.
    Standby,
    /// Took the IP over from a silent active node, not yet confirmed by the operator.
    TakenOver,
    /// Cannot announce (for example no such interface).
    Failed,
}

/// The state of one BGP session on this node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    /// The session's name (its BGPPeer).
    pub name: String,
    /// The RFC 4271 state.
    pub state: BgpState,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Prefixes currently advertised on the session.
    #[serde(default)]
    pub prefixes_advertised: i32,
    /// The last error: a NOTIFICATION sent or received, a connection failure,
    /// an authentication failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// While established: the address families this session carries but
    /// does not send, and why (the router does not offer one in its OPEN, or
    /// the node has no address of it for a next hop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub families_not_sent: Option<String>,
    /// The BFD session guarding it, when the peer has a BFDProfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdStatus>,
}

/// How a BFD session stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdStatus {
    /// RFC 5880 state.
    pub state: BfdState,
    /// Why it last went down, and what stands in its way (packets dropped by
    /// authentication, wrong TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// RFC 5880 session states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BfdState {
    /// Held down by one side.
    AdminDown,
    /// Not up.
    Down,
    /// Heard the router; waiting for it to hear this node.
    Init,
    /// Both sides hear each other.
    Up,
}

/// The RFC 4271 session states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BgpState {
    /// Not trying yet, or backing off.
    Idle,
    /// Opening the TCP connection.
    Connect,
    /// Waiting to retry the TCP connection.
    Active,
    /// OPEN sent.
    OpenSent,
    /// OPEN received, waiting for KEEPALIVE.
    OpenConfirm,
    /// Up: routes are exchanged.
    Established,
}

fn keyed_list<T: JsonSchema>(generator: &mut SchemaGenerator, key: &str, max: u64) -> Schema {
    let item = generator.subschema_for::<T>();
    let mut schema = schemars::json_schema!({ "type": "array", "maxItems": max, "items": item });
    cel::list_map(&mut schema, &[key]);
    schema
}

fn atomic_list<T: JsonSchema>(generator: &mut SchemaGenerator, max: u64) -> Schema {
    let item = generator.subschema_for::<T>();
    schemars::json_schema!({
        "type": "array", "maxItems": max, "items": item, "x-kubernetes-list-type": "atomic",
    })
}

fn l2_list(generator: &mut SchemaGenerator) -> Schema {
    atomic_list::<L2Group>(generator, 4096)
}

/// A failover address `ip:port` (`[ip]:port` for IPv6).
fn probe_string(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "string", "maxLength": 64,
        "pattern": "^([0-9.]{7,15}|\\[[0-9a-fA-F:.]{2,45}\\]):[0-9]{1,5}$",
    })
}

fn session_list(generator: &mut SchemaGenerator) -> Schema {
    keyed_list::<BgpSession>(generator, "name", 64)
}

fn prefix_list(generator: &mut SchemaGenerator) -> Schema {
    keyed_list::<AdvertisedPrefix>(generator, "prefix", 4096)
}

fn l2_state_list(generator: &mut SchemaGenerator) -> Schema {
    atomic_list::<L2State>(generator, 4096)
}

fn failover_state_list(generator: &mut SchemaGenerator) -> Schema {
    keyed_list::<FailoverState>(generator, "node", 4096)
}

fn node_problem_list(generator: &mut SchemaGenerator) -> Schema {
    keyed_list::<NodeProblem>(generator, "reason", 16)
}

fn session_state_list(generator: &mut SchemaGenerator) -> Schema {
    keyed_list::<SessionState>(generator, "name", 64)
}

fn l2_rules(schema: &mut Schema) {
    push_rules(
        schema,
        [
            rule_at(
                "(self.role == 'standby') == has(self.standbyFor)",
                STANDBY_FOR,
                ".standbyFor",
            ),
            rule_at(
                "self.role == 'active' || !has(self.standby)",
                STANDBY,
                ".standby",
            ),
            rule_at(
                "self.role == 'standby' || !has(self.arming) || !self.arming",
                ARMING,
                ".arming",
            ),
        ],
    );
}

impl BgpSession {
    /// Whether this session carries prefixes of the family of `v6` (true:
    /// IPv6): its peer address's family, or both with
    /// `dualStackAddressFamily`. The one rule the planner, the shared
    /// prefixes and `kubectl ferrolb status` read.
    pub fn carries_family(&self, v6: bool) -> bool {
        self.dual_stack_address_family || self.peer_address.is_ipv6() == v6
    }
}

impl Validate for NodeAnnouncementSpec {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::new();
        let mut ranges: Vec<(IpAddr, IpAddr, usize)> = Vec::new();
        for (i, group) in self.l2.iter().enumerate() {
            let at = format!("spec.l2[{i}]");
            for (j, name) in group.interfaces.iter().enumerate() {
                if !is_interface_name(name) {
                    errors.add(
                        format!("{at}.interfaces[{j}]"),
                        format!("'{name}' {NOT_AN_INTERFACE}"),
                    );
                }
            }
            if (group.role == L2Role::Standby) != group.standby_for.is_some() {
                errors.add(format!("{at}.standbyFor"), STANDBY_FOR);
            }
            if group.role == L2Role::Standby && group.standby.is_some() {
                errors.add(format!("{at}.standby"), STANDBY);
            }
            if group.role == L2Role::Active && group.arming {
                errors.add(format!("{at}.arming"), ARMING);
            }
            ranges.extend(group.ips.ranges().iter().map(|(a, b)| (*a, *b, i)));
        }
        // An IP in two groups: sorted by start, a range overlaps the one
        // before it when it starts before that one ends.
        ranges.sort_unstable();
        let mut reported = BTreeSet::new();
        for pair in ranges.windows(2) {
            let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
            if Family::of(&start) == Family::of(&end) && start <= end && reported.insert(second) {
                errors.add(
                    format!("spec.l2[{second}].ips"),
                    format!(
                        "{} is also in spec.l2[{first}]: an IP is in one group",
                        format_ip(start)
                    ),
                );
            }
        }
        for (i, session) in self.bgp.iter().enumerate() {
            let at = format!("spec.bgp[{i}]");
            if !is_object_name(&session.name) {
                errors.add(
                    format!("{at}.name"),
                    format!("'{}' {NOT_A_NAME}", session.name),
                );
            }
            for (j, prefix) in session.prefixes.iter().enumerate() {
                let at = format!("{at}.prefixes[{j}]");
                errors.check(&format!("{at}.prefix"), parse_cidr(&prefix.prefix));
                for (k, community) in prefix.communities.iter().enumerate() {
                    errors.check(
                        &format!("{at}.communities[{k}]"),
                        Community::parse(community),
                    );
                }
            }
        }
        let names: Vec<&str> = self.bgp.iter().map(|s| s.name.as_str()).collect();
        errors.no_duplicates("spec.bgp", &names);
        errors.into_vec()
    }
}
