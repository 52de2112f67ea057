//! A least-recently-used map held to an entry count and a byte budget: the bookkeeping both
//! caches (`dumps/fragment_cache.rs` and `loads/rebuilt.rs`) share.
//!
//! Evicted and replaced values are handed back to the caller rather than dropped here: the
//! caches run this under a lock, and releasing the last reference to a Python object may run
//! arbitrary code, which must happen after the lock is released.

use std::hash::Hash;

use lru::LruCache;

pub struct Budget<K: Hash + Eq, V> {
    /// Each value with the bytes it was charged.
    entries: LruCache<K, (V, usize)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    evictions: u64,
}

impl<K: Hash + Eq, V> Budget<K, V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Budget {
            entries: LruCache::unbounded(),
            bytes: 0,
            max_entries,
            max_bytes,
            evictions: 0,
        }
    }

    /// The value for `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// The value for `key`, leaving the order alone.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.entries.peek(key).map(|(v, _)| v)
    }

    /// Stores `value`, charged `size` bytes, then evicts least recently used entries until
    /// both budgets hold. A value that could never fit is not stored (it goes to `out` too).
    pub fn insert(&mut self, key: K, value: V, size: usize, out: &mut Vec<V>) {
        if size > self.max_bytes || self.max_entries == 0 {
            out.push(value);
            return;
        }
        if let Some((old, old_size)) = self.entries.put(key, (value, size)) {
            self.bytes -= old_size;
            out.push(old);
        }
        self.bytes += size;
        self.shrink(out);
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, size) = self.entries.pop(key)?;
        self.bytes -= size;
        Some(value)
    }

    /// Evicts least recently used entries until both budgets hold.
    fn shrink(&mut self, out: &mut Vec<V>) {
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, (value, size))) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= size;
            self.evictions += 1;
            out.push(value);
        }
    }

    /// Changes the budgets (`None` keeps one) and evicts down to them.
    pub fn set_limits(
        &mut self,
        max_entries: Option<usize>,
        max_bytes: Option<usize>,
        out: &mut Vec<V>,
    ) {
        if let Some(n) = max_entries {
            self.max_entries = n;
        }
        if let Some(n) = max_bytes {
            self.max_bytes = n;
        }
        self.shrink(out);
    }

    /// Removes every entry (not counted as evictions).
    pub fn clear(&mut self, out: &mut Vec<V>) {
        while let Some((_, (value, _))) = self.entries.pop_lru() {
            out.push(value);
        }
        self.bytes = 0;
    }

    /// The keys whose values match `pred`.
    pub fn keys_where(&self, mut pred: impl FnMut(&V) -> bool) -> Vec<K>
    where
        K: Clone,
    {
        self.entries
            .iter()
            .filter(|(_, (v, _))| pred(v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn reset_evictions(&mut self) {
        self.evictions = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_past_the_byte_budget() {
        let mut b = Budget::new(10, 100);
        let mut out = Vec::new();
        b.insert(1, "a", 40, &mut out);
        b.insert(2, "b", 40, &mut out);
        assert_eq!(b.get(&1), Some(&"a")); // 2 is now the least recently used
        b.insert(3, "c", 40, &mut out);
        assert_eq!(out, vec!["b"]);
        assert_eq!((b.len(), b.bytes(), b.evictions()), (2, 80, 1));
    }

    #[test]
    fn evicts_past_the_entry_budget_and_refuses_what_cannot_fit() {
        let mut b = Budget::new(2, 100);
        let mut out = Vec::new();
        b.insert(1, 'a', 0, &mut out);
        b.insert(2, 'b', 0, &mut out);
        b.insert(3, 'c', 0, &mut out);
        b.insert(4, 'd', 101, &mut out);
        assert_eq!(out, vec!['a', 'd']);
        assert_eq!(b.peek(&4), None);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count() {
        let mut b = Budget::new(10, 100);
        let mut out = Vec::new();
        b.insert(1, 'a', 30, &mut out);
        b.insert(1, 'b', 50, &mut out);
        assert_eq!((out.clone(), b.bytes()), (vec!['a'], 50));
        assert_eq!(b.remove(&1), Some('b'));
        assert_eq!(b.bytes(), 0);
        b.insert(2, 'c', 10, &mut out);
        b.set_limits(Some(0), None, &mut out);
        assert_eq!((b.len(), b.bytes()), (0, 0));
    }
}
