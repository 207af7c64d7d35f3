//! A session's settings and routes, read from a NodeAnnouncement's `spec.bgp`
//! entry. Anything that does not parse is reported, never guessed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ferrolb_api::bgppeer::{DynamicAsn, SecretKeyRef};
use ferrolb_api::community::Community;
use ferrolb_api::nodeannouncement::BgpSession;
use ipnet::IpNet;

/// How a session connects: a change here restarts the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The session's name (its BGPPeer).
    pub name: String,
    /// Local AS.
    pub my_asn: u32,
    /// The peer's AS; `None` with `dynamic` set.
    pub peer_asn: Option<u32>,
    /// Which peer AS is accepted when `peer_asn` is not given.
    pub dynamic: Option<DynamicAsn>,
    /// Where to connect.
    pub address: IpAddr,
    /// The peer's TCP port.
    pub port: u16,
    /// The local address to connect from.
    pub source: Option<IpAddr>,
    /// The BGP identifier; `None`: the connection's local IPv4 address.
    pub router_id: Option<Ipv4Addr>,
    /// Proposed hold time (0: no keepalives at all).
    pub hold_time: Duration,
    /// Keepalive interval before negotiation.
    pub keepalive: Duration,
    /// Connect retry time: the first back-off after a failure.
    pub connect_retry: Duration,
    /// eBGP peer more than one hop away.
    pub multihop: bool,
    /// Negotiate graceful restart.
    pub graceful_restart: bool,
    /// Offer both address families, whatever the session's own.
    pub dual_stack: bool,
    /// The TCP-MD5 password's Secret key.
    pub password: Option<SecretKeyRef>,
}

impl Peer {
    /// Whether the session is internal: the peer's AS is ours (or dynamic internal).
    pub fn is_ibgp(&self) -> bool {
        match self.peer_asn {
            Some(asn) => asn == self.my_asn,
            None => self.dynamic == Some(DynamicAsn::Internal),
        }
    }

    /// Whether the peer's announced AS is acceptable.
    pub fn accepts_asn(&self, asn: u32) -> bool {
        match (self.peer_asn, self.dynamic) {
            (Some(expected), _) => asn == expected,
            (None, Some(DynamicAsn::Internal)) => asn == self.my_asn,
            (None, Some(DynamicAsn::External)) => asn != self.my_asn,
            (None, None) => false,
        }
    }
}

/// Path attributes of a route beyond what the session decides (AS_PATH,
/// NEXT_HOP, ORIGIN).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attributes {
    /// Standard communities, sorted.
    pub communities: Vec<u32>,
    /// Large communities, sorted.
    pub large: Vec<(u32, u32, u32)>,
    /// LOCAL_PREF (sent on iBGP sessions only).
    pub local_pref: Option<u32>,
}

/// The routes a session advertises.
pub type Routes = BTreeMap<IpNet, Attributes>;

/// One session read from a NodeAnnouncement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// How to connect.
    pub peer: Peer,
    /// What to advertise.
    pub routes: Routes,
    /// The BFD session guarding it.
    pub bfd: Option<ferrolb_api::nodeannouncement::BfdSettings>,
}

/// Reads one `spec.bgp` entry: its addresses and timers come typed; its
/// prefixes and communities are read here, so a bad one fails this session
/// alone, by name.
pub fn read(session: &BgpSession) -> Result<Session, String> {
    let peer = Peer {
        name: session.name.clone(),
        my_asn: session.my_asn,
        peer_asn: session.peer_asn,
        dynamic: session.dynamic_asn,
        address: session.peer_address,
        port: session.peer_port,
        source: session.source_address,
        router_id: session.router_id,
        hold_time: session.hold_time.0,
        keepalive: session.keepalive_time.0,
        connect_retry: session.connect_time.0,
        multihop: session.ebgp_multi_hop,
        graceful_restart: session.enable_graceful_restart,
        dual_stack: session.dual_stack_address_family,
        password: session.password_secret_ref.clone(),
    };
    let mut routes = Routes::new();
    for entry in &session.prefixes {
        let prefix: IpNet = entry
            .prefix
            .parse()
            .map_err(|_| format!("prefix {}: not a CIDR", entry.prefix))?;
        let mut attributes = Attributes {
            local_pref: entry.local_pref,
            ..Attributes::default()
        };
        for text in &entry.communities {
            match Community::parse(text).map_err(|e| format!("community {text}: {}", e.0))? {
                Community::Standard(value) => attributes.communities.push(value),
                Community::Large(a, b, c) => attributes.large.push((a, b, c)),
            }
        }
        attributes.communities.sort_unstable();
        attributes.communities.dedup();
        attributes.large.sort_unstable();
        attributes.large.dedup();
        routes.insert(prefix.trunc(), attributes);
    }
    Ok(Session {
        peer,
        routes,
        bfd: session.bfd.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_api::nodeannouncement::AdvertisedPrefix;

    fn session() -> BgpSession {
        serde_json::from_value(serde_json::json!({
            "name": "router", "myASN": 64512, "peerASN": 64513,
            "peerAddress": "10.0.0.1", "peerPort": 179,
            "holdTime": "90s", "keepaliveTime": "30s", "connectTime": "5s",
        }))
        .unwrap()
    }

    #[test]
    fn a_session_reads_with_its_routes_and_communities() {
        let mut s = session();
        s.prefixes.push(AdvertisedPrefix {
            prefix: "172.20.0.5/32".into(),
            communities: vec!["65000:2".into(), "65000:1".into(), "large:64512:1:2".into()],
            local_pref: Some(200),
        });
        let read = read(&s).unwrap();
        assert_eq!(read.peer.hold_time, Duration::from_secs(90));
        assert!(!read.peer.is_ibgp());
        let attributes = &read.routes[&"172.20.0.5/32".parse::<IpNet>().unwrap()];
        assert_eq!(
            attributes.communities,
            vec![65000 << 16 | 1, 65000 << 16 | 2]
        );
        assert_eq!(attributes.large, vec![(64512, 1, 2)]);
    }

    #[test]
    fn a_bad_prefix_is_reported_by_name() {
        let mut s = session();
        s.prefixes.push(AdvertisedPrefix {
            prefix: "nonsense".into(),
            communities: vec![],
            local_pref: None,
        });
        assert_eq!(read(&s).unwrap_err(), "prefix nonsense: not a CIDR");
    }

    #[test]
    fn dynamic_asn_accepts_by_kind() {
        let mut s = session();
        s.peer_asn = None;
        s.dynamic_asn = Some(DynamicAsn::External);
        let peer = read(&s).unwrap().peer;
        assert!(peer.accepts_asn(65001) && !peer.accepts_asn(64512));
        s.dynamic_asn = Some(DynamicAsn::Internal);
        let peer = read(&s).unwrap().peer;
        assert!(peer.accepts_asn(64512) && !peer.accepts_asn(65001) && peer.is_ibgp());
    }
}
