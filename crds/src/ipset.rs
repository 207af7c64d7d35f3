//! A set of IP addresses as the NodeAnnouncement carries it: a sorted list of
//! single addresses and `first-last` ranges. Service IPs come out of pools in
//! order, so thousands of them usually take a few entries; a node's layer 2
//! part stays readable with `kubectl get -o yaml` and well under etcd's object
//! limit at 50,000 Services.

use std::fmt;
use std::net::IpAddr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::{Family, format_ip, from_u128, parse_ip, to_u128};

/// Entries an IP set may hold (each an address or a range).
pub const MAX_ENTRIES: u64 = 100_000;

/// A set of addresses: sorted, disjoint, non-adjacent inclusive ranges, each of
/// one family.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpSet {
    ranges: Vec<(IpAddr, IpAddr)>,
}

/// Why an entry of an IP set was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IP address or a range first-last of one family, first not after last")]
pub struct IpSetError(pub String);

impl IpSet {
    /// The empty set.
    pub fn new() -> IpSet {
        IpSet::default()
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many addresses the set holds.
    pub fn len(&self) -> u128 {
        self.ranges
            .iter()
            .map(|(a, b)| to_u128(*b) - to_u128(*a) + 1)
            .sum()
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let at = self.ranges.partition_point(|(_, end)| end < ip);
        self.ranges.get(at).is_some_and(|(start, end)| {
            Family::of(start) == Family::of(ip) && start <= ip && ip <= end
        })
    }

    /// The ranges, first and last included, sorted.
    pub fn ranges(&self) -> &[(IpAddr, IpAddr)] {
        &self.ranges
    }

    /// Every address, in order (each range expanded).
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ranges.iter().flat_map(|(start, end)| {
            let family = Family::of(start);
            (to_u128(*start)..=to_u128(*end)).map(move |v| from_u128(family, v))
        })
    }

    /// The entries as written: `a` or `a-b`.
    pub fn entries(&self) -> impl Iterator<Item = String> + '_ {
        self.ranges.iter().map(|(a, b)| {
            if a == b {
                format_ip(*a)
            } else {
                format!("{}-{}", format_ip(*a), format_ip(*b))
            }
        })
    }

    /// Reads one entry.
    pub fn parse_entry(text: &str) -> Result<(IpAddr, IpAddr), IpSetError> {
        let bad = || IpSetError(text.to_string());
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (
                parse_ip(a).map_err(|_| bad())?,
                parse_ip(b).map_err(|_| bad())?,
            ),
            None => {
                let ip = parse_ip(text).map_err(|_| bad())?;
                (ip, ip)
            }
        };
        if Family::of(&a) != Family::of(&b) || to_u128(a) > to_u128(b) {
            return Err(bad());
        }
        Ok((a, b))
    }

    fn from_ranges(mut ranges: Vec<(IpAddr, IpAddr)>) -> IpSet {
        ranges.sort_unstable();
        let mut merged: Vec<(IpAddr, IpAddr)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            if let Some(last) = merged.last_mut()
                && Family::of(&last.1) == Family::of(&start)
                && to_u128(start) <= to_u128(last.1).saturating_add(1)
            {
                if end > last.1 {
                    last.1 = end;
                }
                continue;
            }
            merged.push((start, end));
        }
        IpSet { ranges: merged }
    }
}

impl FromIterator<IpAddr> for IpSet {
    fn from_iter<T: IntoIterator<Item = IpAddr>>(iter: T) -> IpSet {
        IpSet::from_ranges(iter.into_iter().map(|ip| (ip, ip)).collect())
    }
}

impl<'a> FromIterator<&'a IpAddr> for IpSet {
    fn from_iter<T: IntoIterator<Item = &'a IpAddr>>(iter: T) -> IpSet {
        iter.into_iter().copied().collect()
    }
}

impl fmt::Display for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.entries().collect();
        f.write_str(&entries.join(","))
    }
}

impl Serialize for IpSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.ranges.len()))?;
        for entry in self.entries() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for IpSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IpSet, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = IpSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of IP addresses and first-last ranges")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IpSet, A::Error> {
                let mut ranges = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(text) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    ranges.push(IpSet::parse_entry(&text).map_err(de::Error::custom)?);
                }
                Ok(IpSet::from_ranges(ranges))
            }
        }
        deserializer.deserialize_seq(Entries)
    }
}

/// An address or a range of two: hex digits, dots and colons, one dash. The
/// exact reading is the parser's; the schema keeps out what is plainly not
/// an address (a CEL rule per entry would cost too much at this size).
const ENTRY_PATTERN: &str = "^[0-9a-fA-F.:]{2,39}(-[0-9a-fA-F.:]{2,39})?$";

impl JsonSchema for IpSet {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpSet".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "description": "IP addresses and first-last ranges, sorted.",
            "maxItems": MAX_ENTRIES,
            "items": {"type": "string", "maxLength": 79, "pattern": ENTRY_PATTERN},
            "x-kubernetes-list-type": "atomic",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn consecutive_addresses_are_written_as_ranges() {
        let set: IpSet = [
            "192.168.1.12",
            "192.168.1.10",
            "192.168.1.11",
            "192.168.1.20",
            "fd00::1",
            "fd00::2",
            "10.0.0.1",
        ]
        .iter()
        .map(|t| ip(t))
        .collect();
        assert_eq!(
            serde_json::to_value(&set).unwrap(),
            serde_json::json!([
                "10.0.0.1",
                "192.168.1.10-192.168.1.12",
                "192.168.1.20",
                "fd00::1-fd00::2"
            ])
        );
        assert_eq!(set.len(), 7);
        assert!(set.contains(&ip("192.168.1.11")));
        assert!(!set.contains(&ip("192.168.1.13")));
        assert!(
            !set.contains(&ip("::c0a8:10b")),
            "IPv4 ranges hold no IPv6 address"
        );
        assert_eq!(set.iter().count(), 7);
    }

    #[test]
    fn what_is_read_is_what_is_written() {
        let set: IpSet = serde_json::from_value(serde_json::json!([
            "192.168.1.20",
            "192.168.1.10-192.168.1.12",
            "192.168.1.13",
            "fd00::a"
        ]))
        .unwrap();
        assert_eq!(
            set.entries().collect::<Vec<_>>(),
            ["192.168.1.10-192.168.1.13", "192.168.1.20", "fd00::a"]
        );
        let again: IpSet = serde_json::from_value(serde_json::to_value(&set).unwrap()).unwrap();
        assert_eq!(again, set);
    }

    #[test]
    fn a_bad_entry_is_named() {
        for bad in [
            "nonsense",
            "192.168.1.12-192.168.1.10",
            "192.168.1.1-fd00::1",
            "192.168.1.1 - 192.168.1.2",
            "::ffff:1.2.3.4",
        ] {
            let error = serde_json::from_value::<IpSet>(serde_json::json!([bad])).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn the_schema_pattern_admits_every_written_entry() {
        let pattern = regex::Regex::new(ENTRY_PATTERN).unwrap();
        let set: IpSet = [
            "0.0.0.0",
            "255.255.255.254",
            "255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::",
            "::1",
        ]
        .iter()
        .map(|t| ip(t))
        .collect();
        for entry in set.entries() {
            assert!(pattern.is_match(&entry), "{entry}");
        }
        assert!(!pattern.is_match("a b"));
    }

    #[test]
    fn fifty_thousand_scattered_ipv6_addresses_fit_in_an_object() {
        // Every other address: no two adjacent, so no range helps.
        let set: IpSet = (0..50_000u128)
            .map(|i| {
                from_u128(
                    Family::V6,
                    0x2001_0db8_1234_5678_0000_0000_0000_0000 + i * 2 + 0xa1b2,
                )
            })
            .collect();
        let bytes = serde_json::to_vec(&set).unwrap().len();
        assert!(bytes < 1_500_000, "{bytes} bytes");
    }
}
