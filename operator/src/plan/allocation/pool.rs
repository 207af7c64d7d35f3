//! A pool as the allocator sees it: its ranges, who it serves, and its free
//! space per family.

use std::cmp::Ordering;

use ferrolb_api::address::{AddressRange, Family, from_u128, is_ipv4_mapped, to_u128};

use super::free::FreeSpace;
use super::request::ServiceRequest;
use super::selector::{Selector, any_matches};

/// A pool's restriction to some Services, and its place in the order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolAllocation {
    /// Lower first; `None` after every pool with a priority.
    pub priority: Option<i32>,
    /// Namespaces served. With `namespace_selectors`: a namespace qualifies when
    /// it is listed or matches a selector; both empty: any namespace.
    pub namespaces: Vec<String>,
    /// Namespace label selectors (see `namespaces`).
    pub namespace_selectors: Vec<Selector>,
    /// Service label selectors, any of which must match; empty for any.
    pub service_selectors: Vec<Selector>,
}

/// An IPAddressPool as plain values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// Its addresses; they may overlap each other.
    pub ranges: Vec<AddressRange>,
    /// Whether Services get its addresses without asking for the pool.
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in .0 and .255.
    pub avoid_buggy_ips: bool,
    /// Which Services it serves, first.
    pub allocation: Option<PoolAllocation>,
}

impl Pool {
    /// A pool with defaults (auto-assign, serving everyone).
    pub fn new(name: impl Into<String>, ranges: Vec<AddressRange>) -> Pool {
        Pool {
            name: name.into(),
            ranges,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        }
    }

    /// Whether the pool serves this Service at all (its `serviceAllocation`).
    pub fn serves(&self, request: &ServiceRequest) -> bool {
        let Some(allocation) = &self.allocation else {
            return true;
        };
        // `namespaces` and `namespaceSelectors` widen each other (as in MetalLB):
        // a namespace qualifies when it is listed or matches a selector.
        let namespace_ok = (allocation.namespaces.is_empty()
            && allocation.namespace_selectors.is_empty())
            || allocation.namespaces.contains(&request.service.namespace)
            || allocation
                .namespace_selectors
                .iter()
                .any(|s| s.matches(&request.namespace_labels));
        namespace_ok && any_matches(&allocation.service_selectors, &request.labels)
    }

    /// Whether `ip` is an address the pool hands out automatically: never an
    /// IPv4-mapped IPv6 address (a pool such as `::/80` covers some), nor .0 and
    /// .255 with `avoidBuggyIPs`.
    pub fn usable(&self, family: Family, value: u128) -> bool {
        match family {
            Family::V4 => !(self.avoid_buggy_ips && is_buggy(value)),
            Family::V6 => !is_ipv4_mapped(from_u128(family, value)),
        }
    }

    /// The order pools are tried in: with a serviceAllocation by priority (none
    /// last), then without one; ties by name.
    pub fn order(&self, other: &Pool) -> Ordering {
        let key = |p: &Pool| {
            (
                p.allocation.is_none(),
                p.allocation
                    .as_ref()
                    .and_then(|a| a.priority)
                    .map_or((1, 0), |prio| (0, prio)),
            )
        };
        key(self)
            .cmp(&key(other))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// An IPv4 address (as an integer) ending in .0 or .255.
pub fn is_buggy(value: u128) -> bool {
    matches!(value & 0xff, 0 | 0xff)
}

/// How many values in `[start, end]` are ≡ `rem` (mod 256).
fn count_mod_256(start: u128, end: u128, rem: u128) -> u128 {
    let upto = |x: u128| if x < rem { 0 } else { (x - rem) / 256 + 1 };
    upto(end) - if start == 0 { 0 } else { upto(start - 1) }
}

/// A pool with its free space and counts.
#[derive(Clone, Debug)]
pub struct PoolState {
    /// The pool.
    pub pool: Pool,
    /// Free addresses per family: `[IPv4, IPv6]`.
    pub free: [FreeSpace; 2],
    /// Usable addresses per family (saturating at `u128::MAX`).
    pub total: [u128; 2],
    /// Addresses held by Services per family.
    pub assigned: [u128; 2],
}

/// The index of a family in per-family arrays.
pub fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl PoolState {
    /// A pool with every address free.
    pub fn new(pool: Pool) -> PoolState {
        let per_family = |family: Family| {
            FreeSpace::new(
                pool.ranges
                    .iter()
                    .filter(|r| r.family() == family)
                    .map(|r| (to_u128(r.start()), to_u128(r.end()))),
            )
        };
        let free = [per_family(Family::V4), per_family(Family::V6)];
        let mut total = [0u128; 2];
        for family in [Family::V4, Family::V6] {
            for (start, end) in free[slot(family)].iter() {
                let mut size = (end - start).saturating_add(1);
                if family == Family::V4 && pool.avoid_buggy_ips {
                    size -= count_mod_256(start, end, 0) + count_mod_256(start, end, 255);
                }
                total[slot(family)] = total[slot(family)].saturating_add(size);
            }
        }
        PoolState {
            pool,
            free,
            total,
            assigned: [0, 0],
        }
    }

    /// Whether the pool's ranges hold `value` of `family`.
    pub fn contains(&self, family: Family, value: u128) -> bool {
        self.pool.ranges.iter().any(|r| {
            r.family() == family && (to_u128(r.start())..=to_u128(r.end())).contains(&value)
        })
    }

    /// Whether the pool has addresses of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.total[slot(family)] > 0
    }

    /// The lowest free address it would hand out for `family`.
    pub fn lowest_free(&self, family: Family) -> Option<u128> {
        self.free[slot(family)].lowest(|v| self.pool.usable(family, v))
    }

    /// Usable addresses still free for `family`.
    pub fn available(&self, family: Family) -> u128 {
        self.total[slot(family)].saturating_sub(self.assigned[slot(family)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_api::address::parse_pool_entry;

    fn pool(entries: &[&str], avoid: bool) -> PoolState {
        let mut pool = Pool::new(
            "p",
            entries
                .iter()
                .map(|e| parse_pool_entry(e).expect(e))
                .collect(),
        );
        pool.avoid_buggy_ips = avoid;
        PoolState::new(pool)
    }

    #[test]
    fn totals_count_each_address_once_and_skip_buggy_ones_on_request() {
        assert_eq!(
            pool(&["10.0.0.0/24", "10.0.0.128/25"], false).total,
            [256, 0]
        );
        assert_eq!(pool(&["10.0.0.0/24"], true).total, [254, 0]);
        assert_eq!(
            pool(&["10.0.0.0/23", "fd00::/64"], true).total,
            [508, 1 << 64]
        );
        assert_eq!(pool(&["10.0.0.255-10.0.1.0"], true).total, [0, 0]);
        assert_eq!(pool(&["::/0"], false).total, [0, u128::MAX]);
        assert_eq!(pool(&["0.0.0.0/0"], true).total, [(1 << 32) - (1 << 25), 0]);
    }

    #[test]
    fn buggy_addresses_are_not_handed_out_but_counted_out() {
        let p = pool(&["10.0.0.255-10.0.1.2"], true);
        assert_eq!(
            p.lowest_free(Family::V4),
            Some(to_u128("10.0.1.1".parse().expect("ip")))
        );
        assert_eq!(p.available(Family::V4), 2);
    }

    #[test]
    fn pools_order_by_priority_then_without_allocation_then_name() {
        let with = |name: &str, priority: Option<i32>| Pool {
            allocation: Some(PoolAllocation {
                priority,
                ..PoolAllocation::default()
            }),
            ..Pool::new(name, vec![])
        };
        let mut pools = [
            Pool::new("a-plain", vec![]),
            with("z-none", None),
            with("b-20", Some(20)),
            with("c-5", Some(5)),
            with("a-20", Some(20)),
        ];
        pools.sort_by(Pool::order);
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["c-5", "a-20", "b-20", "z-none", "a-plain"]);
    }
}
