//! Addresses as users write them in pools: a CIDR (`10.0.0.0/24`), a range
//! (`10.0.0.10-10.0.0.20`, spaces around `-` allowed) or a single IP, IPv4 or IPv6.
//!
//! Every entry becomes an inclusive [`AddressRange`]; nothing here walks or expands
//! the address space, so an IPv6 /64 costs the same as a /32.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The longest prefix length of the family: 32 or 128.
    pub fn max_prefix_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Message tails shared with the CRD schema's CEL rules ([`crate::cel`]): the
/// user sees the same words whichever check caught the value.
pub const NOT_AN_ADDRESS: &str =
    "is not an address: write a CIDR (10.0.0.0/24), a range (10.0.0.10-10.0.0.20) or a single IP";
/// See [`NOT_AN_ADDRESS`].
pub const HOST_BITS: &str =
    "has host bits set: a CIDR must start at its network address (10.0.0.0/24, not 10.0.0.1/24)";
/// See [`NOT_AN_ADDRESS`].
pub const MIXED: &str = "mixes IPv4 and IPv6: both ends must be of one family";
/// See [`NOT_AN_ADDRESS`].
pub const REVERSED: &str = "starts after it ends: write the lower address first";
/// See [`NOT_AN_ADDRESS`].
pub const NOT_AN_IP: &str = "is not an IP address";
/// See [`NOT_AN_ADDRESS`].
pub const NOT_AN_IPV4: &str = "is not an IPv4 address";
/// See [`NOT_AN_ADDRESS`].
pub const NOT_A_CIDR: &str = "is not a CIDR such as 10.0.0.0/24 or fd00::/64";

/// Why an address string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not a CIDR, a range or an IP at all.
    #[error("'{0}' {NOT_AN_ADDRESS}")]
    Syntax(String),
    /// A CIDR whose address has bits set past the prefix length.
    #[error("'{given}' {HOST_BITS}; here {masked}")]
    HostBits {
        /// What the user wrote.
        given: String,
        /// The CIDR they most likely meant.
        masked: String,
    },
    /// A range whose two ends are of different families.
    #[error("range '{0}' {MIXED}")]
    MixedFamilies(String),
    /// A range whose start is above its end.
    #[error("range '{0}' {REVERSED}")]
    Reversed(String),
    /// Not a single IP address (where only an IP is allowed).
    #[error("'{0}' {NOT_AN_IP}")]
    NotAnIp(String),
    /// Not an IPv4 address (where only IPv4 is allowed).
    #[error("'{0}' {NOT_AN_IPV4}")]
    NotAnIpv4(String),
    /// Not a CIDR (where only a CIDR is allowed).
    #[error("'{0}' {NOT_A_CIDR}")]
    NotACidr(String),
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    start: IpAddr,
    end: IpAddr,
}

impl AddressRange {
    /// A range from `start` to `end`, both included. `None` when the families
    /// differ or `start > end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Option<AddressRange> {
        (Family::of(&start) == Family::of(&end) && to_u128(start) <= to_u128(end))
            .then_some(AddressRange { start, end })
    }

    /// The range covered by a prefix; `None` when `len` exceeds the family's width.
    pub fn from_prefix(ip: IpAddr, len: u8) -> Option<AddressRange> {
        let family = Family::of(&ip);
        if len > family.max_prefix_len() {
            return None;
        }
        let width = u32::from(family.max_prefix_len());
        let host_bits = width - u32::from(len);
        let host_mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let base = to_u128(ip) & !host_mask;
        Some(AddressRange {
            start: from_u128(family, base),
            end: from_u128(family, base | host_mask),
        })
    }

    /// The first address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// The last address.
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// The family of both ends.
    pub fn family(&self) -> Family {
        Family::of(&self.start)
    }

    /// How many addresses the range holds. An IPv6 ::/0 holds 2^128, one more than
    /// `u128::MAX`: it saturates there.
    pub fn size(&self) -> u128 {
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(&ip) == self.family()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.family() == other.family()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// The shared part of two ranges, if any.
    pub fn intersection(&self, other: &AddressRange) -> Option<AddressRange> {
        if !self.overlaps(other) {
            return None;
        }
        let start = to_u128(self.start).max(to_u128(other.start));
        let end = to_u128(self.end).min(to_u128(other.end));
        Some(AddressRange {
            start: from_u128(self.family(), start),
            end: from_u128(self.family(), end),
        })
    }

    /// The shortest prefix length whose block can hold the whole range: a range
    /// inside one /24 needs 24 or less. Aggregation lengths shorter than this
    /// would advertise addresses outside the range.
    pub fn covering_prefix_len(&self) -> u8 {
        let diff = to_u128(self.start) ^ to_u128(self.end);
        let width = self.family().max_prefix_len();
        let differing = 128 - diff.leading_zeros() as u8;
        width.saturating_sub(differing)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            f.write_str(&format_ip(self.start))
        } else {
            write!(f, "{}-{}", format_ip(self.start), format_ip(self.end))
        }
    }
}

/// An address as the API writes it: RFC 5952 for IPv6 but always in hex groups.
/// (Rust prints `::ffff:a.b.c.d` for IPv4-mapped addresses, a form the API
/// refuses to read, and a pool such as `::/80` does reach them.)
pub fn format_ip(ip: IpAddr) -> String {
    let IpAddr::V6(v6) = ip else {
        return ip.to_string();
    };
    let groups = v6.segments();
    // The longest run of two or more zero groups, the first of equals.
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, g) in groups.iter().enumerate() {
        if *g == 0 {
            run = if run.1 == 0 {
                (i, 1)
            } else {
                (run.0, run.1 + 1)
            };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let hex = |part: &[u16]| {
        part.iter()
            .map(|g| format!("{g:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best.1 < 2 {
        return hex(&groups);
    }
    format!(
        "{}::{}",
        hex(&groups[..best.0]),
        hex(&groups[best.0 + best.1..])
    )
}

/// The address as an unsigned integer; IPv4 takes the low 32 bits.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`to_u128`] for a family; IPv4 keeps the low 32 bits.
pub fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        // Truncation is the point: an IPv4 value is the low 32 bits.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Whether an address is IPv4-mapped IPv6 (`::ffff:0:0/96`): the API reads
/// none as an IP and ferrolb hands none out.
pub fn is_ipv4_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// Parses one IP address the way the apiserver's CEL `ip()` does: no zone, no
/// IPv4-mapped IPv6 form, no leading zeros in IPv4 octets.
pub fn parse_ip(text: &str) -> Result<IpAddr, AddressError> {
    let not_ip = || AddressError::NotAnIp(text.to_string());
    let ip = IpAddr::from_str(text).map_err(|_| not_ip())?;
    if is_ipv4_mapped(ip) {
        return Err(not_ip());
    }
    Ok(ip)
}

/// Parses an IPv4 address (a BGP router ID).
pub fn parse_ipv4(text: &str) -> Result<Ipv4Addr, AddressError> {
    match parse_ip(text) {
        Ok(IpAddr::V4(v4)) => Ok(v4),
        _ => Err(AddressError::NotAnIpv4(text.to_string())),
    }
}

/// Parses a CIDR `ip/len`; the address must have no bits set past `len`.
pub fn parse_cidr(text: &str) -> Result<AddressRange, AddressError> {
    let not_cidr = || AddressError::NotACidr(text.to_string());
    let (ip, len) = text.split_once('/').ok_or_else(not_cidr)?;
    let ip = parse_ip(ip).map_err(|_| not_cidr())?;
    // Only plain decimal digits without leading zeros, as the apiserver's
    // `isCIDR` (Go's netip) reads them.
    let plain = !len.is_empty()
        && len.len() <= 3
        && len.bytes().all(|b| b.is_ascii_digit())
        && (len == "0" || !len.starts_with('0'));
    if !plain {
        return Err(not_cidr());
    }
    let len: u8 = len.parse().map_err(|_| not_cidr())?;
    let range = AddressRange::from_prefix(ip, len).ok_or_else(not_cidr)?;
    if range.start() != ip {
        return Err(AddressError::HostBits {
            given: text.to_string(),
            masked: format!("{}/{}", range.start(), len),
        });
    }
    Ok(range)
}

/// Parses one entry of `IPAddressPool.spec.addresses`.
pub fn parse_pool_entry(text: &str) -> Result<AddressRange, AddressError> {
    if text.contains('/') {
        return parse_cidr(text).map_err(|e| match e {
            AddressError::NotACidr(_) => AddressError::Syntax(text.to_string()),
            other => other,
        });
    }
    if let Some((start, end)) = text.split_once('-') {
        let syntax = || AddressError::Syntax(text.to_string());
        let start = parse_ip(start.trim()).map_err(|_| syntax())?;
        let end = parse_ip(end.trim()).map_err(|_| syntax())?;
        if Family::of(&start) != Family::of(&end) {
            return Err(AddressError::MixedFamilies(text.to_string()));
        }
        return AddressRange::new(start, end)
            .ok_or_else(|| AddressError::Reversed(text.to_string()));
    }
    let ip = parse_ip(text).map_err(|_| AddressError::Syntax(text.to_string()))?;
    Ok(AddressRange { start: ip, end: ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn cidr_range_and_single_ip_parse_to_inclusive_ranges() {
        let r = parse_pool_entry("10.0.0.0/30").expect("cidr");
        assert_eq!(
            (r.start(), r.end(), r.size()),
            (ip("10.0.0.0"), ip("10.0.0.3"), 4)
        );
        let r = parse_pool_entry("10.0.0.10 - 10.0.0.20").expect("range with spaces");
        assert_eq!(
            (r.start(), r.end(), r.size()),
            (ip("10.0.0.10"), ip("10.0.0.20"), 11)
        );
        let r = parse_pool_entry("192.168.1.7").expect("single");
        assert_eq!(r.size(), 1);
        let r = parse_pool_entry("fd00::/64").expect("v6 cidr");
        assert_eq!(r.size(), 1u128 << 64);
        assert_eq!(r.end(), ip("fd00::ffff:ffff:ffff:ffff"));
        let r = parse_pool_entry("fd00::10-fd00::1:0").expect("v6 range");
        assert_eq!(r.size(), 0x1_0000 - 0x10 + 1);
        assert_eq!(
            parse_pool_entry("::/0").expect("everything").size(),
            u128::MAX
        );
        assert_eq!(
            parse_pool_entry("2001:db8::1").expect("v6 single").family(),
            Family::V6
        );
    }

    #[test]
    fn garbage_is_a_syntax_error_naming_the_value() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.256",
            "10.0.0.01",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "fd00::/129",
            "10.0.0.1-",
            "-10.0.0.1",
            "10.0.0.1-10.0.0.2-10.0.0.3",
            "fe80::1%eth0",
            "::ffff:10.0.0.1",
            "pool",
        ] {
            let err = parse_pool_entry(bad).expect_err(bad);
            assert_eq!(err, AddressError::Syntax(bad.to_string()), "{bad}");
            assert!(err.to_string().contains(&format!("'{bad}'")));
        }
    }

    #[test]
    fn host_bits_are_refused_with_the_masked_cidr() {
        let err = parse_pool_entry("10.0.0.1/24").expect_err("host bits");
        assert!(
            err.to_string()
                .starts_with("'10.0.0.1/24' has host bits set")
        );
        assert!(err.to_string().ends_with("here 10.0.0.0/24"));
        let err = parse_pool_entry("fd00::1/64").expect_err("v6 host bits");
        assert!(err.to_string().ends_with("here fd00::/64"));
    }

    #[test]
    fn ranges_must_be_ordered_and_of_one_family() {
        assert_eq!(
            parse_pool_entry("10.0.0.20-10.0.0.10"),
            Err(AddressError::Reversed("10.0.0.20-10.0.0.10".into()))
        );
        assert_eq!(
            parse_pool_entry("fd00::2-fd00::1"),
            Err(AddressError::Reversed("fd00::2-fd00::1".into()))
        );
        assert_eq!(
            parse_pool_entry("10.0.0.1-fd00::1"),
            Err(AddressError::MixedFamilies("10.0.0.1-fd00::1".into()))
        );
    }

    #[test]
    fn ipv6_prints_in_hex_groups_and_reads_back() {
        for text in [
            "::",
            "::1",
            "fd00::",
            "fd00::1:0:0:2",
            "1:0:0:2::",
            "1:2:3:4:5:6:7:8",
            "fd00:0:0:1::1",
        ] {
            assert_eq!(format_ip(ip(text)), ip(text).to_string(), "{text}");
        }
        assert_eq!(format_ip(ip("::ffff:1.2.3.4")), "::ffff:102:304");
        assert_eq!(format_ip(ip("1:0:0:2:0:0:0:3")), "1:0:0:2::3");
        // A pool may cover IPv4-mapped addresses (`::/80` does); they print in
        // hex but, as for the apiserver's `ip()`, are not accepted as an IP.
        let range = parse_pool_entry("::/80").expect("range");
        assert_eq!(range.to_string(), "::-::ffff:ffff:ffff");
        assert!(is_ipv4_mapped(range.end()) && parse_pool_entry(&range.to_string()).is_err());
    }

    #[test]
    fn overlap_and_intersection() {
        let a = parse_pool_entry("10.0.0.0/24").expect("a");
        let b = parse_pool_entry("10.0.0.200-10.0.1.5").expect("b");
        let c = parse_pool_entry("10.0.1.6-10.0.1.9").expect("c");
        let v6 = parse_pool_entry("::/0").expect("v6");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!b.overlaps(&c) && !a.overlaps(&v6));
        assert_eq!(
            a.intersection(&b).expect("shared").to_string(),
            "10.0.0.200-10.0.0.255"
        );
        assert!(a.contains(ip("10.0.0.9")) && !a.contains(ip("fd00::1")));
    }

    #[test]
    fn covering_prefix_len_is_the_shortest_block_holding_the_range() {
        let len = |s: &str| parse_pool_entry(s).expect(s).covering_prefix_len();
        assert_eq!(len("10.0.0.0/24"), 24);
        assert_eq!(len("10.0.0.7"), 32);
        assert_eq!(len("10.0.0.100-10.0.0.110"), 28);
        assert_eq!(len("10.0.0.255-10.0.1.0"), 23);
        assert_eq!(len("fd00::/64"), 64);
        assert_eq!(len("fd00::1"), 128);
        assert_eq!(len("::/0"), 0);
    }
}
