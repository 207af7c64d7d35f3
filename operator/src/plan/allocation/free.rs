//! Free address space of one family of one pool, kept as sorted disjoint
//! intervals: taking the lowest free address, taking a given one and giving one
//! back are O(log n) in the number of intervals, whatever the pool's size.

use std::collections::BTreeMap;

/// Disjoint inclusive intervals `[start, end]` of free addresses, as integers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeSpace {
    /// start → end, no two touching or overlapping.
    intervals: BTreeMap<u128, u128>,
}

impl FreeSpace {
    /// Free space covering the given intervals (they may touch or overlap).
    pub fn new(ranges: impl IntoIterator<Item = (u128, u128)>) -> FreeSpace {
        let mut space = FreeSpace::default();
        for (start, end) in ranges {
            space.insert(start, end);
        }
        space
    }

    /// Whether nothing is free.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Number of intervals (a measure of fragmentation and of memory).
    pub fn intervals(&self) -> usize {
        self.intervals.len()
    }

    /// The free intervals in order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.intervals.iter().map(|(s, e)| (*s, *e))
    }

    /// Whether `value` is free.
    pub fn contains(&self, value: u128) -> bool {
        self.intervals
            .range(..=value)
            .next_back()
            .is_some_and(|(_, end)| value <= *end)
    }

    /// The lowest free value accepted by `usable`, checking at most three values
    /// at the start of each interval: enough to step over a .255 and a .0
    /// address, the only ones a pool skips.
    pub fn lowest(&self, usable: impl Fn(u128) -> bool) -> Option<u128> {
        self.iter().find_map(|(start, end)| {
            (start..=end.min(start.saturating_add(2))).find(|value| usable(*value))
        })
    }

    /// Marks `value` used; false when it was not free.
    pub fn take(&mut self, value: u128) -> bool {
        let Some((&start, &end)) = self.intervals.range(..=value).next_back() else {
            return false;
        };
        if value > end {
            return false;
        }
        self.intervals.remove(&start);
        if start < value {
            self.intervals.insert(start, value - 1);
        }
        if value < end {
            self.intervals.insert(value + 1, end);
        }
        true
    }

    /// Marks `[start, end]` free, merging with neighbours.
    pub fn insert(&mut self, mut start: u128, mut end: u128) {
        // Absorb every interval that overlaps or touches [start, end].
        while let Some((&s, &e)) = self.intervals.range(..=end.saturating_add(1)).next_back() {
            if e.saturating_add(1) < start {
                break;
            }
            self.intervals.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.intervals.insert(start, end);
    }

    /// Marks one value free.
    pub fn give_back(&mut self, value: u128) {
        self.insert(value, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_splits_and_give_back_merges() {
        let mut free = FreeSpace::new([(10, 20)]);
        assert!(free.take(10) && free.take(15) && free.take(20));
        assert!(!free.take(15) && !free.take(9) && !free.take(21));
        assert_eq!(free.iter().collect::<Vec<_>>(), [(11, 14), (16, 19)]);
        free.give_back(15);
        assert_eq!(free.iter().collect::<Vec<_>>(), [(11, 19)]);
        free.give_back(10);
        free.give_back(20);
        assert_eq!(free.iter().collect::<Vec<_>>(), [(10, 20)]);
    }

    #[test]
    fn overlapping_inputs_merge() {
        let free = FreeSpace::new([(5, 9), (0, 3), (4, 4), (8, 12), (20, 20)]);
        assert_eq!(free.iter().collect::<Vec<_>>(), [(0, 12), (20, 20)]);
        assert!(free.contains(12) && !free.contains(13) && free.contains(20));
    }

    #[test]
    fn lowest_skips_unusable_values_at_interval_starts() {
        let free = FreeSpace::new([(255, 256), (300, 310)]);
        // 255 and 256 (x.255, x.0) are unusable: the next interval serves.
        assert_eq!(free.lowest(|v| v % 256 != 0 && v % 256 != 255), Some(300));
        assert_eq!(free.lowest(|_| true), Some(255));
    }

    #[test]
    fn the_whole_ipv6_space_is_one_interval() {
        let mut free = FreeSpace::new([(0, u128::MAX)]);
        assert!(free.take(u128::MAX) && free.take(0));
        assert_eq!(free.iter().collect::<Vec<_>>(), [(1, u128::MAX - 1)]);
        free.give_back(u128::MAX);
        free.give_back(0);
        assert_eq!(free.iter().collect::<Vec<_>>(), [(0, u128::MAX)]);
    }
}
