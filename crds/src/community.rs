//! BGP communities as users write them: standard `65000:100` (RFC 1997), large
//! `large:64512:1:2` (RFC 8092), or a well-known name such as `no-export`.

use std::fmt;

/// Well-known standard communities by the names routers print for them.
pub const WELL_KNOWN: [(&str, u32); 4] = [
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
    ("no-peer", 0xFFFF_FF04),
];

/// One community attached to a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    /// A standard community, `high:low` packed into 32 bits.
    Standard(u32),
    /// A large community: global administrator, local data 1, local data 2.
    Large(u32, u32, u32),
}

/// The message tail for a bad community, shared with the CRD schema.
pub const COMMUNITY_RULE: &str = "is not a community: write 65000:100 (each part 0-65535), large:64512:1:2 (each part 0-4294967295) or one of no-export, no-advertise, no-export-subconfed, no-peer";

/// Why a community string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' {COMMUNITY_RULE}")]
pub struct CommunityError(pub String);

/// The part of a community that must be plain decimal digits: `u32::from_str`
/// alone would also take "+5".
fn number<T: std::str::FromStr>(part: &str) -> Option<T> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

impl Community {
    /// Parses one entry of `BGPAdvertisement.spec.communities`.
    pub fn parse(text: &str) -> Result<Community, CommunityError> {
        let err = || CommunityError(text.to_string());
        if let Some((_, value)) = WELL_KNOWN.iter().find(|(name, _)| *name == text) {
            return Ok(Community::Standard(*value));
        }
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["large", a, b, c] => Ok(Community::Large(
                number(a).ok_or_else(err)?,
                number(b).ok_or_else(err)?,
                number(c).ok_or_else(err)?,
            )),
            [high, low] => {
                let high: u16 = number(high).ok_or_else(err)?;
                let low: u16 = number(low).ok_or_else(err)?;
                Ok(Community::Standard(
                    (u32::from(high) << 16) | u32::from(low),
                ))
            }
            _ => Err(err()),
        }
    }

    /// Whether this is a large community.
    pub fn is_large(&self) -> bool {
        matches!(self, Community::Large(..))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xFFFF),
            Community::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_large_and_well_known_parse() {
        assert_eq!(
            Community::parse("65000:100"),
            Ok(Community::Standard(0xFDE8_0064))
        );
        assert_eq!(Community::parse("0:0"), Ok(Community::Standard(0)));
        assert_eq!(
            Community::parse("65535:65535"),
            Ok(Community::Standard(u32::MAX))
        );
        assert_eq!(
            Community::parse("large:4294967295:1:2"),
            Ok(Community::Large(u32::MAX, 1, 2))
        );
        assert_eq!(
            Community::parse("no-export"),
            Ok(Community::Standard(0xFFFF_FF01))
        );
        assert_eq!(
            Community::parse("no-export").expect("known").to_string(),
            "65535:65281"
        );
        assert_eq!(
            Community::parse("large:1:2:3").expect("large").to_string(),
            "large:1:2:3"
        );
    }

    #[test]
    fn out_of_range_or_malformed_is_refused_with_the_value() {
        for bad in [
            "65536:1",
            "1:65536",
            "+1:2",
            "1:-2",
            "1",
            "1:2:3",
            "large:1:2",
            "large:4294967296:1:2",
            "LARGE:1:2:3",
            "no_export",
            "",
            ":",
        ] {
            let err = Community::parse(bad).expect_err(bad);
            assert!(
                err.to_string()
                    .starts_with(&format!("'{bad}' is not a community"))
            );
        }
    }
}
