//! "Already written?": the one memory of what the operator wrote, for every
//! kind it writes. The watch stores lag behind a write; without this a pass
//! right after a write would see the old object and write it again.

use std::collections::HashMap;
use std::hash::Hash;

/// What was last written per object, with the resourceVersion the write
/// produced: a store older than that has not seen the write yet.
#[derive(Debug)]
pub struct Memo<K, V> {
    last: HashMap<K, (V, u64)>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            last: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, V: PartialEq> Memo<K, V> {
    /// Whether `desired` must be written: not when the store already shows it
    /// (`in_store`), nor when the same value was written and the store
    /// (at `seen_rv`) has not caught up with that write yet.
    pub fn needs(&mut self, key: &K, desired: &V, in_store: bool, seen_rv: Option<u64>) -> bool {
        if in_store {
            self.last.remove(key);
            return false;
        }
        !matches!(
            self.last.get(key),
            Some((last, rv)) if last == desired && seen_rv.is_none_or(|seen| seen < *rv)
        )
    }

    /// A write that succeeded, with the resourceVersion it produced.
    pub fn record(&mut self, key: K, value: V, rv: u64) {
        self.last.insert(key, (value, rv));
    }

    /// A value the apiserver refused: skipped until another is wanted or
    /// the store shows this one.
    pub fn refuse(&mut self, key: K, value: V) {
        self.last.insert(key, (value, u64::MAX));
    }

    /// Forgets an object (gone).
    pub fn forget(&mut self, key: &K) {
        self.last.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_on_its_way_is_not_repeated_and_a_newer_store_decides() {
        let mut memo: Memo<&str, u32> = Memo::default();
        assert!(memo.needs(&"a", &1, false, Some(10)), "never written");
        memo.record("a", 1, 11);
        assert!(
            !memo.needs(&"a", &1, false, Some(10)),
            "store behind our write"
        );
        assert!(memo.needs(&"a", &2, false, Some(10)), "a different value");
        assert!(
            memo.needs(&"a", &1, false, Some(12)),
            "store past our write and still different: someone changed it"
        );
        assert!(!memo.needs(&"a", &1, true, Some(12)), "the store shows it");
        assert!(
            memo.needs(&"a", &1, false, Some(10)),
            "forgotten once shown"
        );
    }
}
