//! Whether two things of the API can apply to the same object: two lists of
//! label selectors to one node, two address lists to one IP. The webhook's
//! cross-object rules are built on these.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::address::AddressRange;

/// What one label key must satisfy, gathered from two selectors.
#[derive(Default)]
struct KeyConstraint {
    present: bool,
    absent: bool,
    /// `None`: any value; `Some`: one of these.
    allowed: Option<BTreeSet<String>>,
    forbidden: BTreeSet<String>,
}

impl KeyConstraint {
    fn allow(&mut self, values: impl IntoIterator<Item = String>) {
        let values: BTreeSet<String> = values.into_iter().collect();
        self.allowed = Some(match self.allowed.take() {
            Some(current) => current.intersection(&values).cloned().collect(),
            None => values,
        });
        self.present = true;
    }

    fn satisfiable(&self) -> bool {
        if self.present && self.absent {
            return false;
        }
        match &self.allowed {
            Some(allowed) => allowed.iter().any(|v| !self.forbidden.contains(v)),
            None => true,
        }
    }
}

/// Whether some set of labels satisfies both selectors at once.
pub fn selectors_intersect(a: &LabelSelector, b: &LabelSelector) -> bool {
    let mut keys: BTreeMap<&str, KeyConstraint> = BTreeMap::new();
    for selector in [a, b] {
        for (key, value) in selector.match_labels.iter().flatten() {
            keys.entry(key).or_default().allow([value.clone()]);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let constraint = keys.entry(&expr.key).or_default();
            let values = expr.values.clone().unwrap_or_default();
            match expr.operator.as_str() {
                "In" => constraint.allow(values),
                "NotIn" => constraint.forbidden.extend(values),
                "Exists" => constraint.present = true,
                "DoesNotExist" => constraint.absent = true,
                // An operator the schema lets through matches nothing.
                _ => return false,
            }
        }
    }
    keys.values().all(KeyConstraint::satisfiable)
}

/// Whether two selector lists (each matching what any of its selectors
/// matches; an empty list matches everything) can match a common object.
pub fn selector_lists_intersect(a: &[LabelSelector], b: &[LabelSelector]) -> bool {
    let everything = [LabelSelector::default()];
    let a = if a.is_empty() { &everything[..] } else { a };
    let b = if b.is_empty() { &everything[..] } else { b };
    a.iter()
        .any(|x| b.iter().any(|y| selectors_intersect(x, y)))
}

/// The smallest set of CIDR blocks covering a range exactly, as
/// `(first address, prefix length)`, lowest first.
pub fn cidr_blocks(range: &AddressRange) -> Vec<(u128, u8)> {
    use crate::address::to_u128;
    let width = u32::from(range.family().max_prefix_len());
    let mut start = to_u128(range.start());
    let end = to_u128(range.end());
    let mut blocks = Vec::new();
    loop {
        // The largest aligned block starting at `start` that stays within `end`.
        let align = if start == 0 {
            width
        } else {
            start.trailing_zeros().min(width)
        };
        let mut host_bits = align;
        while host_bits > 0 {
            let last = if host_bits >= 128 {
                u128::MAX
            } else {
                start | ((1u128 << host_bits) - 1)
            };
            if last <= end {
                break;
            }
            host_bits -= 1;
        }
        blocks.push((start, (width - host_bits) as u8));
        let last = if host_bits >= 128 {
            u128::MAX
        } else {
            start | ((1u128 << host_bits) - 1)
        };
        if last >= end {
            break;
        }
        start = last + 1;
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::parse_pool_entry;
    use crate::selector::label_selector_matches;

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml::from_str(yaml).expect("selector")
    }

    #[test]
    fn disjoint_and_overlapping_selectors() {
        let zone_a = selector("matchLabels: {zone: a}");
        let zone_b = selector("matchLabels: {zone: b}");
        let zone_in_ab = selector("matchExpressions: [{key: zone, operator: In, values: [a, b]}]");
        let not_a = selector("matchExpressions: [{key: zone, operator: NotIn, values: [a]}]");
        let no_zone = selector("matchExpressions: [{key: zone, operator: DoesNotExist}]");
        let rack = selector("matchLabels: {rack: r1}");
        assert!(!selectors_intersect(&zone_a, &zone_b));
        assert!(selectors_intersect(&zone_a, &zone_in_ab));
        assert!(!selectors_intersect(&zone_a, &not_a));
        assert!(selectors_intersect(&zone_b, &not_a));
        assert!(!selectors_intersect(&zone_a, &no_zone));
        assert!(
            selectors_intersect(&not_a, &no_zone),
            "NotIn holds for a missing key"
        );
        assert!(
            selectors_intersect(&zone_a, &rack),
            "different keys can both hold"
        );
        assert!(
            selector_lists_intersect(&[], std::slice::from_ref(&zone_a)),
            "an empty list selects every node"
        );
        assert!(!selector_lists_intersect(
            std::slice::from_ref(&zone_a),
            &[zone_b.clone(), no_zone]
        ));
        assert!(selector_lists_intersect(
            &[zone_a, zone_b.clone()],
            &[zone_b]
        ));
    }

    #[test]
    fn matching_labels() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        assert!(label_selector_matches(
            &selector("matchLabels: {zone: a}"),
            &labels
        ));
        assert!(!label_selector_matches(
            &selector("matchExpressions: [{key: zone, operator: NotIn, values: [a]}]"),
            &labels
        ));
        assert!(label_selector_matches(&LabelSelector::default(), &labels));
    }

    #[test]
    fn ranges_split_into_exact_cidr_blocks() {
        let blocks = |s: &str| -> Vec<u8> {
            cidr_blocks(&parse_pool_entry(s).expect(s))
                .iter()
                .map(|(_, len)| *len)
                .collect()
        };
        assert_eq!(blocks("10.0.0.0/24"), [24]);
        assert_eq!(blocks("10.0.0.100-10.0.0.110"), [30, 30, 31, 32]);
        assert_eq!(blocks("10.0.0.7"), [32]);
        assert_eq!(blocks("0.0.0.0/0"), [0]);
        assert_eq!(blocks("::/0"), [0]);
        assert_eq!(blocks("fd00::1-fd00::2"), [128, 128]);
    }
}
