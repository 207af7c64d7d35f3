//! ARP (RFC 826) and NDP (RFC 4861) frames: reading the requests a speaker
//! answers and writing its answers, gratuitous ARP and unsolicited Neighbor
//! Advertisements. Pure functions over bytes; anything malformed is an error,
//! never a panic.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The Ethernet broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The Ethernet multicast address an IPv6 multicast group maps to (RFC 2464).
    pub fn for_ipv6_multicast(group: Ipv6Addr) -> Mac {
        let o = group.octets();
        Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a frame was not taken as a request; each is counted, none is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its headers say.
    Truncated,
    /// Not an ARP or IPv6 frame.
    NotArpOrIpv6,
    /// ARP for something other than IPv4 over Ethernet.
    UnsupportedArp,
    /// Not ICMPv6, or a hop limit other than 255 (NDP must not be routed).
    NotNdp,
    /// The ICMPv6 checksum does not add up.
    BadChecksum,
    /// An NDP option of length zero or running past the end.
    BadOption,
}

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// An ARP request: who has `target`? Tell `sender_ip` at `sender_mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRequest {
    /// The asker's hardware address.
    pub sender_mac: Mac,
    /// The asker's IP (0.0.0.0 for a probe).
    pub sender_ip: Ipv4Addr,
    /// The IP asked about.
    pub target_ip: Ipv4Addr,
}

/// A Neighbor Solicitation: who has `target`?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// The asker's Ethernet source address.
    pub source_mac: Mac,
    /// The asker's IP (`::` for duplicate address detection).
    pub source_ip: Ipv6Addr,
    /// The address asked about.
    pub target: Ipv6Addr,
}

/// What a frame asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// An ARP request.
    Arp(ArpRequest),
    /// A Neighbor Solicitation.
    Ndp(NeighborSolicitation),
    /// Something the speaker ignores (ARP replies, other ICMPv6).
    Other,
}

fn u16_at(frame: &[u8], at: usize) -> Result<u16, Malformed> {
    frame
        .get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(Malformed::Truncated)
}

fn mac_at(frame: &[u8], at: usize) -> Result<Mac, Malformed> {
    let b = frame.get(at..at + 6).ok_or(Malformed::Truncated)?;
    Ok(Mac([b[0], b[1], b[2], b[3], b[4], b[5]]))
}

fn ipv6_at(frame: &[u8], at: usize) -> Result<Ipv6Addr, Malformed> {
    let b: [u8; 16] = frame
        .get(at..at + 16)
        .ok_or(Malformed::Truncated)?
        .try_into()
        .map_err(|_| Malformed::Truncated)?;
    Ok(Ipv6Addr::from(b))
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `message`.
fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads an Ethernet frame.
pub fn parse(frame: &[u8]) -> Result<Request, Malformed> {
    match u16_at(frame, 12)? {
        ETHERTYPE_ARP => parse_arp(frame),
        ETHERTYPE_IPV6 => parse_ndp(frame),
        _ => Err(Malformed::NotArpOrIpv6),
    }
}

fn parse_arp(frame: &[u8]) -> Result<Request, Malformed> {
    let arp = frame.get(14..42).ok_or(Malformed::Truncated)?;
    let (htype, ptype, hlen, plen) = (u16_at(arp, 0)?, u16_at(arp, 2)?, arp[4], arp[5]);
    if htype != 1 || ptype != 0x0800 || hlen != 6 || plen != 4 {
        return Err(Malformed::UnsupportedArp);
    }
    if u16_at(arp, 6)? != 1 {
        return Ok(Request::Other);
    }
    Ok(Request::Arp(ArpRequest {
        sender_mac: mac_at(arp, 8)?,
        sender_ip: Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]),
        target_ip: Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]),
    }))
}

fn parse_ndp(frame: &[u8]) -> Result<Request, Malformed> {
    let ip = frame.get(14..54).ok_or(Malformed::Truncated)?;
    let payload_len = usize::from(u16_at(ip, 4)?);
    let (next_header, hop_limit) = (ip[6], ip[7]);
    if next_header != ICMPV6 {
        return Ok(Request::Other);
    }
    let source = ipv6_at(ip, 8)?;
    let destination = ipv6_at(ip, 24)?;
    let message = frame
        .get(54..54 + payload_len)
        .ok_or(Malformed::Truncated)?;
    if message.len() < 24 {
        return Err(Malformed::Truncated);
    }
    if message[0] != NEIGHBOR_SOLICITATION {
        return Ok(Request::Other);
    }
    if hop_limit != 255 || message[1] != 0 {
        return Err(Malformed::NotNdp);
    }
    if icmpv6_checksum(source, destination, message) != 0 {
        return Err(Malformed::BadChecksum);
    }
    let target = ipv6_at(message, 8)?;
    // Options must be well formed even though only the source address is read.
    let mut options = &message[24..];
    while !options.is_empty() {
        let length = usize::from(*options.get(1).ok_or(Malformed::BadOption)?) * 8;
        if length == 0 || length > options.len() {
            return Err(Malformed::BadOption);
        }
        options = &options[length..];
    }
    Ok(Request::Ndp(NeighborSolicitation {
        source_mac: mac_at(frame, 6)?,
        source_ip: source,
        target,
    }))
}

fn ethernet(destination: Mac, source: Mac, ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(86);
    frame.extend_from_slice(&destination.0);
    frame.extend_from_slice(&source.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

fn arp(
    operation: u16,
    destination: Mac,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> Vec<u8> {
    let mut frame = ethernet(destination, sender.0, ETHERTYPE_ARP);
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    frame.extend_from_slice(&operation.to_be_bytes());
    frame.extend_from_slice(&sender.0.0);
    frame.extend_from_slice(&sender.1.octets());
    frame.extend_from_slice(&target.0.0);
    frame.extend_from_slice(&target.1.octets());
    frame
}

/// The ARP reply telling the asker that `request.target_ip` is at `ours`.
pub fn arp_reply(ours: Mac, request: &ArpRequest) -> Vec<u8> {
    arp(
        2,
        request.sender_mac,
        (ours, request.target_ip),
        (request.sender_mac, request.sender_ip),
    )
}

/// A gratuitous ARP announcing that `ip` is at `ours`, to everyone (a request
/// with sender and target IP equal, which every stack updates its cache from).
pub fn gratuitous_arp(ours: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp(1, Mac::BROADCAST, (ours, ip), (Mac([0; 6]), ip))
}

fn neighbor_advertisement(
    ours: Mac,
    target: Ipv6Addr,
    destination: (Mac, Ipv6Addr),
    solicited: bool,
) -> Vec<u8> {
    let mut message = vec![NEIGHBOR_ADVERTISEMENT, 0, 0, 0];
    // Flags: Solicited when answering, Override always (the address moved to us).
    let flags = if solicited { 0x60 } else { 0x20 };
    message.extend_from_slice(&[flags, 0, 0, 0]);
    message.extend_from_slice(&target.octets());
    // Target link-layer address option.
    message.extend_from_slice(&[2, 1]);
    message.extend_from_slice(&ours.0);
    let checksum = icmpv6_checksum(target, destination.1, &message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = ethernet(destination.0, ours, ETHERTYPE_IPV6);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[ICMPV6, 255]);
    frame.extend_from_slice(&target.octets());
    frame.extend_from_slice(&destination.1.octets());
    frame.extend_from_slice(&message);
    frame
}

/// All-nodes multicast, where unsolicited and DAD answers go.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The Neighbor Advertisement answering `solicitation` with `ours`.
pub fn neighbor_reply(ours: Mac, solicitation: &NeighborSolicitation) -> Vec<u8> {
    if solicitation.source_ip.is_unspecified() {
        // Duplicate address detection: answer to all nodes, not solicited.
        neighbor_advertisement(
            ours,
            solicitation.target,
            (Mac::for_ipv6_multicast(ALL_NODES), ALL_NODES),
            false,
        )
    } else {
        neighbor_advertisement(
            ours,
            solicitation.target,
            (solicitation.source_mac, solicitation.source_ip),
            true,
        )
    }
}

/// An unsolicited Neighbor Advertisement announcing that `ip` is at `ours`.
pub fn unsolicited_advertisement(ours: Mac, ip: Ipv6Addr) -> Vec<u8> {
    neighbor_advertisement(
        ours,
        ip,
        (Mac::for_ipv6_multicast(ALL_NODES), ALL_NODES),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0, 0x99]);
    const NODE: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);

    fn request_frame(target: Ipv4Addr) -> Vec<u8> {
        arp(
            1,
            Mac::BROADCAST,
            (CLIENT, Ipv4Addr::new(192, 168, 35, 2)),
            (Mac([0; 6]), target),
        )
    }

    fn solicitation_frame(source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut message = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&target.octets());
        message.extend_from_slice(&[1, 1]);
        message.extend_from_slice(&CLIENT.0);
        let seg = target.segments();
        let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | (seg[6] & 0xff), seg[7]);
        let checksum = icmpv6_checksum(source, group, &message);
        message[2..4].copy_from_slice(&checksum.to_be_bytes());
        let mut frame = ethernet(Mac::for_ipv6_multicast(group), CLIENT, ETHERTYPE_IPV6);
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[ICMPV6, 255]);
        frame.extend_from_slice(&source.octets());
        frame.extend_from_slice(&group.octets());
        frame.extend_from_slice(&message);
        frame
    }

    #[test]
    fn an_arp_request_is_read_and_answered() {
        let target = Ipv4Addr::new(192, 168, 35, 100);
        let Ok(Request::Arp(request)) = parse(&request_frame(target)) else {
            panic!("not read")
        };
        assert_eq!((request.sender_mac, request.target_ip), (CLIENT, target));
        let reply = arp_reply(NODE, &request);
        assert_eq!(&reply[0..6], &CLIENT.0, "unicast back to the asker");
        assert_eq!(u16_at(&reply, 20), Ok(2), "operation: reply");
        assert_eq!(&reply[22..28], &NODE.0);
        assert_eq!(&reply[28..32], &target.octets());
        // Our own reply read back is not a request.
        assert_eq!(parse(&reply), Ok(Request::Other));
    }

    #[test]
    fn gratuitous_arp_has_sender_and_target_equal() {
        let ip = Ipv4Addr::new(192, 168, 35, 100);
        let frame = gratuitous_arp(NODE, ip);
        let Ok(Request::Arp(request)) = parse(&frame) else {
            panic!("a request")
        };
        assert_eq!(
            (request.sender_ip, request.target_ip, request.sender_mac),
            (ip, ip, NODE)
        );
        assert_eq!(&frame[0..6], &Mac::BROADCAST.0);
    }

    #[test]
    fn a_neighbor_solicitation_is_read_and_answered_with_a_valid_checksum() {
        let source: Ipv6Addr = "fd00::2".parse().expect("ip");
        let target: Ipv6Addr = "fd00::100".parse().expect("ip");
        let Ok(Request::Ndp(ns)) = parse(&solicitation_frame(source, target)) else {
            panic!("not read")
        };
        assert_eq!(
            (ns.source_mac, ns.source_ip, ns.target),
            (CLIENT, source, target)
        );
        let reply = neighbor_reply(NODE, &ns);
        assert_eq!(&reply[0..6], &CLIENT.0);
        let message = &reply[54..];
        assert_eq!(message[0], NEIGHBOR_ADVERTISEMENT);
        assert_eq!(message[4] & 0x60, 0x60, "solicited and override");
        assert_eq!(
            icmpv6_checksum(target, source, message),
            0,
            "checksum verifies"
        );
        assert_eq!(&message[26..32], &NODE.0, "target link-layer address");
        // DAD probes are answered to all nodes.
        let dad = neighbor_reply(
            NODE,
            &NeighborSolicitation {
                source_ip: Ipv6Addr::UNSPECIFIED,
                ..ns
            },
        );
        assert_eq!(&dad[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let unsolicited = unsolicited_advertisement(NODE, target);
        assert_eq!(unsolicited[54 + 4] & 0x60, 0x20, "override, not solicited");
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good_arp = request_frame(Ipv4Addr::new(10, 0, 0, 1));
        for len in 0..good_arp.len() {
            assert!(parse(&good_arp[..len]).is_err(), "truncated to {len}");
        }
        let mut other_hw = good_arp.clone();
        other_hw[15] = 6;
        assert_eq!(parse(&other_hw), Err(Malformed::UnsupportedArp));
        let good_ns = solicitation_frame(
            "fd00::2".parse().expect("ip"),
            "fd00::1".parse().expect("ip"),
        );
        for len in 0..good_ns.len() {
            assert!(parse(&good_ns[..len]).is_err(), "truncated to {len}");
        }
        let mut bad_sum = good_ns.clone();
        bad_sum[56] ^= 0xff;
        assert_eq!(parse(&bad_sum), Err(Malformed::BadChecksum));
        let mut routed = good_ns.clone();
        routed[21] = 64;
        assert_eq!(parse(&routed), Err(Malformed::NotNdp));
        let mut zero_option = good_ns.clone();
        zero_option[54 + 25] = 0;
        assert!(parse(&zero_option).is_err());
        let mut ipv4 = good_arp;
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(parse(&ipv4), Err(Malformed::NotArpOrIpv6));
    }
}
