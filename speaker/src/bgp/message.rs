//! The messages the speaker sends and the checks on the OPEN it receives,
//! built on netgauze's types: OPEN with capabilities, UPDATEs for routes and
//! withdrawals, End-of-RIB, and NOTIFICATION text for people.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::{BgpNotificationMessage, OpenMessageError};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LargeCommunities, LocalPreference, MpReach, MpUnreach, NextHop, Origin, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_iana::address_family::AddressType;

use super::config::{Attributes, Peer};

/// The AS number sent in the 2-octet field when ours does not fit (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// How long the peer keeps our routes while we restart (graceful restart).
pub const RESTART_TIME: u16 = 120;
/// Prefixes per UPDATE, chosen so the largest message (64 communities, 64
/// large communities) stays well under 4,096 bytes.
const V4_PER_UPDATE: usize = 400;
const V6_PER_UPDATE: usize = 100;
const V4_WITHDRAW_PER_UPDATE: usize = 700;
const V6_WITHDRAW_PER_UPDATE: usize = 200;

/// The address families ferrolb advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 unicast.
    V4,
    /// IPv6 unicast.
    V6,
}

impl Family {
    /// The family of a prefix.
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    fn address_type(self) -> AddressType {
        match self {
            Family::V4 => AddressType::Ipv4Unicast,
            Family::V6 => AddressType::Ipv6Unicast,
        }
    }

    fn from_address_type(address_type: AddressType) -> Option<Family> {
        match address_type {
            AddressType::Ipv4Unicast => Some(Family::V4),
            AddressType::Ipv6Unicast => Some(Family::V6),
            _ => None,
        }
    }
}

/// What we say about ourselves in OPEN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// Our AS.
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// Families we offer (by the session's transport: IPv4 over IPv4, IPv6 over IPv6).
    pub families: Vec<Family>,
    /// Offer graceful restart.
    pub graceful_restart: bool,
}

/// Our OPEN.
pub fn open(local: &Local) -> BgpMessage {
    let mut capabilities: Vec<BgpCapability> = local
        .families
        .iter()
        .map(|f| {
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                f.address_type(),
            ))
        })
        .collect();
    capabilities.push(BgpCapability::RouteRefresh);
    capabilities.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
        local.asn,
    )));
    if local.graceful_restart {
        let families: Vec<GracefulRestartAddressFamily> = local
            .families
            .iter()
            .map(|f| GracefulRestartAddressFamily::new(true, f.address_type()))
            .collect();
        capabilities.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(false, false, RESTART_TIME, families),
        ));
    }
    let my_as = u16::try_from(local.asn).unwrap_or(AS_TRANS);
    BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        local.hold_time,
        local.router_id,
        [BgpOpenMessageParameter::new_capabilities(capabilities)],
    ))
}

/// What both sides agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Hold time (zero: none).
    pub hold_time: Duration,
    /// Keepalive interval; `None` with no hold time.
    pub keepalive: Option<Duration>,
    /// Both sides speak 4-octet AS numbers.
    pub asn4: bool,
    /// Families both sides offered.
    pub families: BTreeSet<Family>,
    /// The peer's AS.
    pub peer_asn: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// The peer offered graceful restart.
    pub peer_graceful_restart: bool,
}

/// Why an OPEN is refused: the NOTIFICATION to send and a sentence for people.
pub type Refusal = (BgpNotificationMessage, String);

/// Checks the peer's OPEN against the session's settings (RFC 4271 6.2).
pub fn check_open(
    peer: &Peer,
    local: &Local,
    configured_keepalive: Duration,
    open: &BgpOpenMessage,
) -> Result<Negotiated, Refusal> {
    if open.version() != 4 {
        return Err((
            BgpNotificationMessage::OpenMessageError(OpenMessageError::UnsupportedVersionNumber {
                value: 4u16.to_be_bytes().into(),
            }),
            format!("the peer speaks BGP version {}, not 4", open.version()),
        ));
    }
    let capabilities = open.capabilities();
    let asn4 = capabilities
        .iter()
        .any(|c| matches!(c, BgpCapability::FourOctetAs(_)));
    let peer_asn = open.my_asn4();
    if !peer.accepts_asn(peer_asn) {
        let expected = match (peer.peer_asn, peer.dynamic) {
            (Some(asn), _) => format!("AS {asn}"),
            (None, Some(kind)) => {
                format!("a dynamic {} AS", format!("{kind:?}").to_lowercase())
            }
            (None, None) => "a configured AS".to_string(),
        };
        return Err((
            BgpNotificationMessage::OpenMessageError(OpenMessageError::BadPeerAs {
                value: open.my_as().to_be_bytes().into(),
            }),
            format!("the peer says it is AS {peer_asn}; expected {expected}"),
        ));
    }
    let id = open.bgp_id();
    if id.is_unspecified() || id.is_broadcast() || (peer.is_ibgp() && id == local.router_id) {
        return Err((
            BgpNotificationMessage::OpenMessageError(OpenMessageError::BadBgpIdentifier {
                value: id.octets().into(),
            }),
            format!("the peer's BGP identifier {id} is unusable (zero, broadcast or ours)"),
        ));
    }
    let theirs = open.hold_time();
    if theirs == 1 || theirs == 2 {
        return Err((
            BgpNotificationMessage::OpenMessageError(OpenMessageError::UnacceptableHoldTime {
                value: theirs.to_be_bytes().into(),
            }),
            format!("the peer's hold time {theirs}s is below the 3s minimum"),
        ));
    }
    let hold = theirs.min(local.hold_time);
    let hold_time = Duration::from_secs(hold.into());
    let keepalive = (hold > 0).then(|| {
        configured_keepalive
            .min(hold_time / 3)
            .max(Duration::from_secs(1))
    });
    let offered: BTreeSet<Family> = capabilities
        .iter()
        .filter_map(|c| match c {
            BgpCapability::MultiProtocolExtensions(mp) => {
                Family::from_address_type(mp.address_type())
            }
            _ => None,
        })
        .collect();
    let has_mp = capabilities
        .iter()
        .any(|c| matches!(c, BgpCapability::MultiProtocolExtensions(_)));
    // Without any multiprotocol capability a peer speaks IPv4 unicast only.
    let theirs: BTreeSet<Family> = if has_mp { offered } else { [Family::V4].into() };
    let families = local
        .families
        .iter()
        .copied()
        .filter(|f| theirs.contains(f))
        .collect();
    let peer_graceful_restart = capabilities
        .iter()
        .any(|c| matches!(c, BgpCapability::GracefulRestartCapability(_)));
    Ok(Negotiated {
        hold_time,
        keepalive,
        asn4,
        families,
        peer_asn,
        peer_id: id,
        peer_graceful_restart,
    })
}

/// What every UPDATE on a session shares.
#[derive(Clone, Debug)]
pub struct Sender {
    /// Our AS.
    pub asn: u32,
    /// Internal session: no AS prepended, LOCAL_PREF sent.
    pub ibgp: bool,
    /// 4-octet AS numbers negotiated.
    pub asn4: bool,
    /// Next hop for IPv4 routes: our end of the connection.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 routes.
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl Sender {
    /// The next hops from the connection's local address.
    pub fn next_hops(local: IpAddr) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        match local {
            IpAddr::V4(v4) => (Some(v4), None),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (Some(v4), None),
                None => (None, Some(v6)),
            },
        }
    }

    /// The next hops from the connection's local address and, with
    /// `dual_stack`, this node's address of the other family on the same
    /// interface (`addresses`: each interface's name and address). An IPv6
    /// next hop must be global (a router a hop away cannot use a link-local
    /// one without the interface); none found: that family is not sent.
    pub fn next_hops_on(
        local: IpAddr,
        dual_stack: bool,
        addresses: &[(String, IpAddr)],
    ) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let (mut v4, mut v6) = Self::next_hops(local);
        if !dual_stack {
            return (v4, v6);
        }
        let local = local.to_canonical();
        let Some(interface) = addresses
            .iter()
            .find(|(_, a)| *a == local)
            .map(|(name, _)| name)
        else {
            return (v4, v6);
        };
        for (_, address) in addresses.iter().filter(|(name, _)| name == interface) {
            match address {
                IpAddr::V4(a) if v4.is_none() && !a.is_loopback() && !a.is_link_local() => {
                    v4 = Some(*a)
                }
                IpAddr::V6(a)
                    if v6.is_none()
                        && !a.is_loopback()
                        && !a.is_unicast_link_local()
                        && a.to_ipv4_mapped().is_none() =>
                {
                    v6 = Some(*a)
                }
                _ => {}
            }
        }
        (v4, v6)
    }

    /// Whether routes of `family` can be sent (a next hop of that family exists).
    pub fn can_send(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.next_hop_v4.is_some(),
            Family::V6 => self.next_hop_v6.is_some(),
        }
    }

    fn attribute(optional: bool, transitive: bool, value: PathAttributeValue) -> PathAttribute {
        // Flags are chosen per attribute type below; the extended-length bit is
        // allowed on any attribute and spares a length check.
        PathAttribute::from(optional, transitive, false, optional, value)
            .expect("flags match the attribute type")
    }

    fn common(&self, attributes: &Attributes) -> Vec<PathAttribute> {
        let mut list = vec![Self::attribute(
            false,
            true,
            PathAttributeValue::Origin(Origin::IGP),
        )];
        let path = if self.ibgp {
            Vec::new()
        } else {
            vec![self.asn]
        };
        let as_path = if self.asn4 {
            let segments = if path.is_empty() {
                vec![]
            } else {
                vec![As4PathSegment::new(AsPathSegmentType::AsSequence, path)]
            };
            AsPath::As4PathSegments(segments.into())
        } else {
            let two: Vec<u16> = path
                .iter()
                .map(|asn| u16::try_from(*asn).unwrap_or(AS_TRANS))
                .collect();
            let segments = if two.is_empty() {
                vec![]
            } else {
                vec![As2PathSegment::new(AsPathSegmentType::AsSequence, two)]
            };
            AsPath::As2PathSegments(segments.into())
        };
        list.push(Self::attribute(
            false,
            true,
            PathAttributeValue::AsPath(as_path),
        ));
        if !self.asn4 && !self.ibgp && self.asn > u32::from(u16::MAX) {
            list.push(Self::attribute(
                true,
                true,
                PathAttributeValue::As4Path(As4Path::new([As4PathSegment::new(
                    AsPathSegmentType::AsSequence,
                    [self.asn],
                )])),
            ));
        }
        if self.ibgp {
            list.push(Self::attribute(
                false,
                true,
                PathAttributeValue::LocalPreference(LocalPreference::new(
                    attributes.local_pref.unwrap_or(100),
                )),
            ));
        }
        if !attributes.communities.is_empty() {
            let communities: Vec<Community> = attributes
                .communities
                .iter()
                .map(|c| Community::new(*c))
                .collect();
            list.push(Self::attribute(
                true,
                true,
                PathAttributeValue::Communities(Communities::new(communities)),
            ));
        }
        if !attributes.large.is_empty() {
            let large: Vec<LargeCommunity> = attributes
                .large
                .iter()
                .map(|(a, b, c)| LargeCommunity::new(*a, *b, *c))
                .collect();
            list.push(Self::attribute(
                true,
                true,
                PathAttributeValue::LargeCommunities(LargeCommunities::new(large)),
            ));
        }
        list
    }

    /// UPDATEs announcing `prefixes` (all of one family) with `attributes`.
    pub fn announce(&self, attributes: &Attributes, prefixes: &[IpNet]) -> Vec<BgpMessage> {
        let v4: Vec<Ipv4UnicastAddress> = prefixes
            .iter()
            .filter_map(|p| match p {
                IpNet::V4(net) => Ipv4Unicast::from_net(*net)
                    .ok()
                    .map(Ipv4UnicastAddress::new_no_path_id),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6: Vec<Ipv6UnicastAddress> = prefixes
            .iter()
            .filter_map(|p| match p {
                IpNet::V6(net) => Ipv6Unicast::from_net(*net)
                    .ok()
                    .map(|n| Ipv6UnicastAddress::new(None, n)),
                IpNet::V4(_) => None,
            })
            .collect();
        let mut messages = Vec::new();
        if let Some(next_hop) = self.next_hop_v4 {
            for chunk in v4.chunks(V4_PER_UPDATE) {
                let mut list = self.common(attributes);
                list.insert(
                    2,
                    Self::attribute(
                        false,
                        true,
                        PathAttributeValue::NextHop(NextHop::new(next_hop)),
                    ),
                );
                messages.push(BgpMessage::Update(BgpUpdateMessage::new(
                    vec![],
                    list,
                    chunk.to_vec(),
                )));
            }
        }
        if let Some(next_hop) = self.next_hop_v6 {
            for chunk in v6.chunks(V6_PER_UPDATE) {
                let mut list = vec![Self::attribute(
                    true,
                    false,
                    PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                        next_hop_global: next_hop,
                        next_hop_local: None,
                        nlri: chunk.to_vec().into(),
                    }),
                )];
                list.extend(self.common(attributes));
                messages.push(BgpMessage::Update(BgpUpdateMessage::new(
                    vec![],
                    list,
                    vec![],
                )));
            }
        }
        messages
    }

    /// UPDATEs withdrawing `prefixes`.
    pub fn withdraw(&self, prefixes: &[IpNet]) -> Vec<BgpMessage> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for prefix in prefixes {
            match prefix {
                IpNet::V4(net) => {
                    if let Ok(n) = Ipv4Unicast::from_net(*net) {
                        v4.push(Ipv4UnicastAddress::new_no_path_id(n));
                    }
                }
                IpNet::V6(net) => {
                    if let Ok(n) = Ipv6Unicast::from_net(*net) {
                        v6.push(Ipv6UnicastAddress::new(None, n));
                    }
                }
            }
        }
        let mut messages: Vec<BgpMessage> = v4
            .chunks(V4_WITHDRAW_PER_UPDATE)
            .map(|chunk| BgpMessage::Update(BgpUpdateMessage::new(chunk.to_vec(), vec![], vec![])))
            .collect();
        messages.extend(v6.chunks(V6_WITHDRAW_PER_UPDATE).map(|chunk| {
            BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                vec![Self::attribute(
                    true,
                    false,
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                        nlri: chunk.to_vec().into(),
                    }),
                )],
                vec![],
            ))
        }));
        messages
    }
}

/// The End-of-RIB marker for a family (RFC 4724).
pub fn end_of_rib(family: Family) -> BgpMessage {
    match family {
        Family::V4 => BgpMessage::Update(BgpUpdateMessage::new(vec![], vec![], vec![])),
        Family::V6 => BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            vec![Sender::attribute(
                true,
                false,
                PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                    nlri: Vec::new().into(),
                }),
            )],
            vec![],
        )),
    }
}

/// The family a ROUTE-REFRESH asks for, if it is one we advertise.
pub fn refresh_family(address_type: AddressType) -> Option<Family> {
    Family::from_address_type(address_type)
}

/// A NOTIFICATION as people read it: "Cease / AdministrativeShutdown".
pub fn describe(notification: &BgpNotificationMessage) -> String {
    let debug = format!("{notification:?}");
    // `CeaseError(AdministrativeShutdown { value: [] })` → code and subcode.
    let (code, rest) = debug.split_once('(').unwrap_or((&debug, ""));
    let subcode = rest.split([' ', '{', '(', ')']).next().unwrap_or_default();
    let code = code.trim_end_matches("Error");
    let code = match code {
        "HoldTimerExpired" => "Hold Timer Expired",
        "FiniteStateMachine" => "Finite State Machine Error",
        "MessageHeader" => "Message Header Error",
        "OpenMessage" => "OPEN Message Error",
        "UpdateMessage" => "UPDATE Message Error",
        "RouteRefresh" => "ROUTE-REFRESH Message Error",
        other => other,
    };
    if subcode.is_empty() || subcode == "Unspecific" {
        code.to_string()
    } else {
        format!("{code} / {subcode}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use netgauze_bgp_pkt::codec::BgpCodec;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn a_dual_stack_session_takes_the_other_family_from_its_own_interface() {
        let addresses: Vec<(String, IpAddr)> = [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "192.168.5.11"),
            ("eth0", "fe80::1"),
            ("eth0", "fd00:5::11"),
            ("eth1", "10.9.0.11"),
            ("eth1", "fd00:9::11"),
        ]
        .iter()
        .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
        .collect();
        let v4: IpAddr = "192.168.5.11".parse().unwrap();
        let v6: IpAddr = "fd00:9::11".parse().unwrap();
        // Over IPv4 on eth0: eth0's global IPv6 address, not its link-local one.
        assert_eq!(
            Sender::next_hops_on(v4, true, &addresses),
            (
                Some("192.168.5.11".parse().unwrap()),
                Some("fd00:5::11".parse().unwrap())
            )
        );
        // Over IPv6 on eth1: eth1's IPv4 address, not eth0's.
        assert_eq!(
            Sender::next_hops_on(v6, true, &addresses),
            (
                Some("10.9.0.11".parse().unwrap()),
                Some("fd00:9::11".parse().unwrap())
            )
        );
        // Not asked, or no address of the other family there: one family.
        assert_eq!(
            Sender::next_hops_on(v4, false, &addresses),
            (Some("192.168.5.11".parse().unwrap()), None)
        );
        let only_v4: Vec<(String, IpAddr)> = vec![("eth0".into(), v4)];
        assert_eq!(
            Sender::next_hops_on(v4, true, &only_v4),
            (Some("192.168.5.11".parse().unwrap()), None)
        );
        // An IPv4-mapped local address is the IPv4 one.
        let mapped: IpAddr = "::ffff:192.168.5.11".parse().unwrap();
        assert_eq!(
            Sender::next_hops_on(mapped, true, &addresses).1,
            Some("fd00:5::11".parse().unwrap())
        );
    }

    fn peer() -> Peer {
        Peer {
            name: "r".into(),
            my_asn: 4_200_000_001,
            peer_asn: Some(64500),
            dynamic: None,
            address: "10.0.0.1".parse().unwrap(),
            port: 179,
            source: None,
            router_id: None,
            hold_time: Duration::from_secs(90),
            keepalive: Duration::from_secs(30),
            connect_retry: Duration::from_secs(10),
            multihop: false,
            graceful_restart: true,
            password: None,
            dual_stack: false,
        }
    }

    fn local() -> Local {
        Local {
            asn: 4_200_000_001,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            hold_time: 90,
            families: vec![Family::V4],
            graceful_restart: true,
        }
    }

    /// Encodes and decodes through the codec, as on the wire.
    fn wire(message: BgpMessage) -> (BgpMessage, usize) {
        let mut codec = BgpCodec::new(true);
        let mut buffer = BytesMut::new();
        codec.encode(message, &mut buffer).unwrap();
        let length = buffer.len();
        let (back, _) = codec.decode(&mut buffer).unwrap().unwrap();
        (back, length)
    }

    #[test]
    fn a_four_octet_as_goes_as_as_trans_with_the_capability() {
        let (back, _) = wire(open(&local()));
        let BgpMessage::Open(open) = back else {
            panic!()
        };
        assert_eq!(open.my_as(), AS_TRANS);
        assert_eq!(open.my_asn4(), 4_200_000_001);
        let caps = open.capabilities();
        assert!(
            caps.iter()
                .any(|c| matches!(c, BgpCapability::RouteRefresh))
        );
        assert!(
            caps.iter()
                .any(|c| matches!(c, BgpCapability::GracefulRestartCapability(_)))
        );
    }

    fn their_open(hold: u16, capabilities: Vec<BgpCapability>) -> BgpOpenMessage {
        BgpOpenMessage::new(
            64500,
            hold,
            Ipv4Addr::new(10, 0, 0, 1),
            [BgpOpenMessageParameter::new_capabilities(capabilities)],
        )
    }

    #[test]
    fn negotiation_takes_the_lower_hold_time_and_common_families() {
        let mp =
            |t| BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(t));
        let open = their_open(
            30,
            vec![
                mp(AddressType::Ipv6Unicast),
                BgpCapability::FourOctetAs(FourOctetAsCapability::new(64500)),
            ],
        );
        let mut ours = local();
        ours.families = vec![Family::V4, Family::V6];
        let n = check_open(&peer(), &ours, Duration::from_secs(30), &open).unwrap();
        assert_eq!(n.hold_time, Duration::from_secs(30));
        assert_eq!(n.keepalive, Some(Duration::from_secs(10)));
        assert_eq!(n.families, [Family::V6].into());
        assert!(n.asn4);
        // No multiprotocol capability: IPv4 unicast only. Hold time 0: no keepalives.
        let n = check_open(
            &peer(),
            &ours,
            Duration::from_secs(30),
            &their_open(0, vec![]),
        )
        .unwrap();
        assert_eq!(n.families, [Family::V4].into());
        assert_eq!(n.keepalive, None);
        assert!(!n.asn4);
    }

    #[test]
    fn a_bad_open_is_refused_with_the_matching_notification() {
        let refused = |open: BgpOpenMessage| {
            check_open(&peer(), &local(), Duration::from_secs(30), &open)
                .unwrap_err()
                .0
        };
        let wrong_as = BgpOpenMessage::new(65001, 90, Ipv4Addr::new(10, 0, 0, 1), []);
        assert!(matches!(
            refused(wrong_as),
            BgpNotificationMessage::OpenMessageError(OpenMessageError::BadPeerAs { .. })
        ));
        assert!(matches!(
            refused(their_open(2, vec![])),
            BgpNotificationMessage::OpenMessageError(OpenMessageError::UnacceptableHoldTime { .. })
        ));
        let zero_id = BgpOpenMessage::new(64500, 90, Ipv4Addr::UNSPECIFIED, []);
        assert!(matches!(
            refused(zero_id),
            BgpNotificationMessage::OpenMessageError(OpenMessageError::BadBgpIdentifier { .. })
        ));
    }

    fn attributes_of(message: &BgpMessage) -> Vec<PathAttributeValue> {
        let BgpMessage::Update(update) = message else {
            panic!()
        };
        update
            .path_attributes()
            .iter()
            .map(|a| a.value().clone())
            .collect()
    }

    #[test]
    fn ibgp_carries_local_pref_and_no_as_and_ebgp_prepends_ours() {
        let attributes = Attributes {
            communities: vec![65000 << 16 | 1],
            large: vec![(64512, 1, 2)],
            local_pref: Some(250),
        };
        let prefixes: Vec<IpNet> = vec!["172.20.0.5/32".parse().unwrap()];
        let mut sender = Sender {
            asn: 64512,
            ibgp: true,
            asn4: true,
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: None,
        };
        let (back, _) = wire(sender.announce(&attributes, &prefixes).remove(0));
        let values = attributes_of(&back);
        assert!(
            values.contains(&PathAttributeValue::LocalPreference(LocalPreference::new(
                250
            )))
        );
        assert!(
            values.contains(&PathAttributeValue::AsPath(AsPath::As4PathSegments(
                vec![].into()
            )))
        );
        sender.ibgp = false;
        let (back, _) = wire(sender.announce(&attributes, &prefixes).remove(0));
        let values = attributes_of(&back);
        assert!(
            !values
                .iter()
                .any(|v| matches!(v, PathAttributeValue::LocalPreference(_)))
        );
        assert!(
            values.contains(&PathAttributeValue::AsPath(AsPath::As4PathSegments(
                vec![As4PathSegment::new(AsPathSegmentType::AsSequence, [64512])].into()
            )))
        );
        assert!(
            values
                .iter()
                .any(|v| matches!(v, PathAttributeValue::LargeCommunities(_)))
        );
    }

    #[test]
    fn many_prefixes_split_into_messages_that_fit_4096_bytes() {
        let attributes = Attributes {
            communities: (0..64).collect(),
            large: (0..64).map(|i| (i, i, i)).collect(),
            local_pref: None,
        };
        let sender = Sender {
            asn: 64512,
            ibgp: false,
            asn4: true,
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: Some("fd00::2".parse().unwrap()),
        };
        let v4: Vec<IpNet> = (0..5000u32)
            .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0xac10_0000 + i), 32).unwrap()))
            .collect();
        let v6: Vec<IpNet> = (0..1000u128)
            .map(|i| IpNet::V6(ipnet::Ipv6Net::new((0xfd20u128 << 112 | i).into(), 128).unwrap()))
            .collect();
        for (messages, count) in [
            (sender.announce(&attributes, &v4), v4.len()),
            (sender.announce(&attributes, &v6), v6.len()),
            (sender.withdraw(&v4), v4.len()),
            (sender.withdraw(&v6), v6.len()),
        ] {
            let mut seen = 0;
            for message in messages {
                let (back, length) = wire(message);
                assert!(length <= 4096, "{length} bytes");
                let BgpMessage::Update(update) = back else {
                    panic!()
                };
                seen += update.nlri().len() + update.withdraw_routes().len();
                for attribute in update.path_attributes() {
                    match attribute.value() {
                        PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => {
                            seen += nlri.len()
                        }
                        PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                            seen += nlri.len()
                        }
                        _ => {}
                    }
                }
            }
            assert_eq!(seen, count);
        }
    }

    #[test]
    fn notifications_read_as_code_and_subcode() {
        let cease = BgpNotificationMessage::CeaseError(
            netgauze_bgp_pkt::notification::CeaseError::AdministrativeShutdown {
                value: Box::new([]),
            },
        );
        assert_eq!(describe(&cease), "Cease / AdministrativeShutdown");
        let hold = BgpNotificationMessage::HoldTimerExpiredError(
            netgauze_bgp_pkt::notification::HoldTimerExpiredError::Unspecific {
                sub_code: 0,
                value: Box::new([]),
            },
        );
        assert_eq!(describe(&hold), "Hold Timer Expired");
    }
}
