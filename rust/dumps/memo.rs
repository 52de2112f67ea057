//! The pickler's memo: which objects were already written, and at which memo index.
//!
//! Like `PyMemoTable` in `_pickle.c` it is keyed by object address and holds a strong reference
//! to every entry, so an address can't be reused by a new object while the stream is written.
//! A `MEMOIZE` for an object built for the stream alone (a tuple `pickle` makes for a
//! `__reduce__`, cloudpickle's state dicts) takes its index with [`MemoTable::skip`] and no table
//! entry: no other reference to it exists, so nothing can meet it again. Every object of the
//! caller's gets an entry (see the memo policy in `mod.rs`).
//!
//! Entries are added to a list, unhashed, and hashed by the first lookup that comes after them:
//! every lookup sees every entry, as in `pickle`, and a message in which nothing is looked up
//! (a list of distinct strings, each held once) hashes nothing.

use pyo3::prelude::*;

/// Where the entries added after some point start (see [`MemoTable::get_since`]).
#[derive(Clone, Copy)]
pub struct Mark(usize);

#[derive(Default)]
pub struct MemoTable {
    /// Every entry in the order added: the object (the reference that keeps its address
    /// from being reused) and its memo index.
    entries: Vec<(Py<PyAny>, u32)>,
    /// Address to memo index for `entries[..hashed]`.
    index: AddressIndex,
    hashed: usize,
    /// The index the next `MEMOIZE` assigns.
    next: u32,
}

impl MemoTable {
    /// Forgets every entry but keeps the allocations, for reuse by the next `dumps`.
    pub fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
        self.hashed = 0;
        self.next = 0;
    }

    /// Whether the tables grew past what is worth keeping between calls. Every str, bytes and
    /// tuple takes an entry, so a list of 10,000 strings makes 10,000: regrowing the tables on
    /// every call cost more than filling them, so up to 65,536 entries (about 1.5 MB) are kept.
    pub fn is_large(&self) -> bool {
        self.entries.capacity() > 1 << 16
    }

    /// The memo index of `obj`, if it was written before.
    #[inline]
    pub fn get(&mut self, obj: &Bound<'_, PyAny>) -> Option<u32> {
        if self.hashed < self.entries.len() {
            self.hash_new_entries();
        }
        self.index.get(obj.as_ptr() as usize)
    }

    #[inline(never)]
    fn hash_new_entries(&mut self) {
        let new = &self.entries[self.hashed..];
        self.index.reserve(new.len());
        for (obj, idx) in new {
            self.index.insert(obj.as_ptr() as usize, *idx);
        }
        self.hashed = self.entries.len();
    }

    /// A mark for [`MemoTable::get_since`]: where the entries added from now on start.
    #[inline]
    pub fn mark(&self) -> Mark {
        Mark(self.entries.len())
    }

    /// [`MemoTable::get`] for an object that had no entry when `mark` was taken: only what was
    /// added since can be it, so a few entries are compared instead of all hashed.
    #[inline]
    pub fn get_since(&mut self, obj: &Bound<'_, PyAny>, mark: Mark) -> Option<u32> {
        let recent = &self.entries[mark.0..];
        if recent.len() <= 16 {
            let ptr = obj.as_ptr();
            return recent
                .iter()
                .find(|(o, _)| o.as_ptr() == ptr)
                .map(|(_, idx)| *idx);
        }
        self.get(obj)
    }

    /// Records `obj` under the next index, which is what `MEMOIZE` assigns when read back.
    #[inline]
    pub fn put(&mut self, obj: &Bound<'_, PyAny>) -> u32 {
        let idx = self.skip();
        self.entries.push((obj.clone().unbind(), idx));
        idx
    }

    /// The index the next `MEMOIZE` assigns.
    #[inline]
    pub fn next_index(&self) -> u32 {
        self.next
    }

    /// The entries added since `mark`, in order, with their memo indices.
    pub fn entries_since(&self, mark: Mark) -> &[(Py<PyAny>, u32)] {
        &self.entries[mark.0..]
    }

    /// Takes the next `count` indices at once, entering each of `entries` (given as offsets
    /// from the first of them, in increasing order) under its index: what `count` `MEMOIZE`s
    /// written elsewhere assign, when only those objects get entries.
    pub fn extend_relocated(&mut self, py: Python<'_>, entries: &[(Py<PyAny>, u32)], count: u32) {
        let base = self.next;
        self.entries.extend(
            entries
                .iter()
                .map(|(obj, offset)| (obj.clone_ref(py), base + offset)),
        );
        self.next += count;
    }

    /// Takes the next index for an object nothing can refer to again, without an entry.
    #[inline]
    pub fn skip(&mut self) -> u32 {
        let idx = self.next;
        self.next += 1;
        idx
    }
}

/// Object address to memo index: open addressing with linear probing, as `PyMemoTable` in
/// `_pickle.c` keys its table by address. Emptied in constant time (a slot belongs to the
/// table only while its generation is the table's), since a memo is emptied after every call
/// and most calls fill few of its slots.
struct AddressIndex {
    /// `(address, memo index, generation)`; a power of two in length, or empty. Generation 0
    /// marks a slot never used.
    slots: Vec<(usize, u32, u32)>,
    /// The number of live slots.
    len: usize,
    /// The generation whose slots are live (never 0); a slot of any other one is empty.
    generation: u32,
    /// 64 minus log2 of the number of slots: the top bits of the hash pick the slot.
    shift: u32,
}

impl Default for AddressIndex {
    fn default() -> Self {
        AddressIndex {
            slots: Vec::new(),
            len: 0,
            generation: 1,
            shift: 64,
        }
    }
}

impl AddressIndex {
    fn clear(&mut self) {
        self.len = 0;
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // After 2^32 clears a slot could look live again: start over.
            self.slots.iter_mut().for_each(|s| *s = (0, 0, 0));
            self.generation = 1;
        }
    }

    /// The slot at which probing for `address` starts (Fibonacci hashing of the address
    /// without its alignment bits).
    #[inline]
    fn start(&self, address: usize) -> usize {
        let h = ((address >> 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> self.shift) as usize
    }

    #[inline]
    fn get(&self, address: usize) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.start(address);
        loop {
            let (a, idx, generation) = self.slots[i];
            if generation != self.generation {
                return None;
            }
            if a == address {
                return Some(idx);
            }
            i = (i + 1) & mask;
        }
    }

    /// Room for `more` entries beyond the live ones, at most half full: most lookups miss,
    /// and a miss probes to the next empty slot.
    #[inline]
    fn reserve(&mut self, more: usize) {
        let needed = (self.len + more) * 2 + 1;
        if needed > self.slots.len() {
            self.grow(needed);
        }
    }

    /// [`Self::reserve`] when the slots are too few for `needed`.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, needed: usize) {
        let size = needed.next_power_of_two().max(64);
        let old = std::mem::replace(&mut self.slots, vec![(0, 0, 0); size]);
        self.shift = 64 - size.trailing_zeros();
        let live = self.generation;
        self.len = 0;
        for (a, idx, generation) in old {
            if generation == live {
                self.insert(a, idx);
            }
        }
    }

    /// Enters `address` under `idx` (a later entry for the same address wins, as it did in
    /// the map this replaces). The caller reserved room.
    #[inline]
    fn insert(&mut self, address: usize, idx: u32) {
        let mask = self.slots.len() - 1;
        let mut i = self.start(address);
        loop {
            let slot = &mut self.slots[i];
            if slot.2 != self.generation {
                *slot = (address, idx, self.generation);
                self.len += 1;
                return;
            }
            if slot.0 == address {
                slot.1 = idx;
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AddressIndex;

    #[test]
    fn addresses_are_found_until_cleared_and_later_entries_win() {
        let mut index = AddressIndex::default();
        assert_eq!(index.get(0x1000), None);
        for round in 0..3u32 {
            index.reserve(1000);
            for i in 0..1000usize {
                index.insert(0x10_0000 + i * 16, i as u32 + round);
            }
            index.insert(0x10_0000, 7777);
            for i in 1..1000usize {
                assert_eq!(index.get(0x10_0000 + i * 16), Some(i as u32 + round));
            }
            assert_eq!(index.get(0x10_0000), Some(7777));
            assert_eq!(index.get(0x9999_0000), None);
            index.clear();
            assert_eq!(index.get(0x10_0010), None);
        }
    }

    #[test]
    fn growing_keeps_the_live_entries_only() {
        let mut index = AddressIndex::default();
        index.reserve(10);
        index.insert(0x40, 1);
        index.clear();
        index.reserve(10);
        index.insert(0x80, 2);
        index.reserve(5000);
        assert_eq!(index.get(0x40), None);
        assert_eq!(index.get(0x80), Some(2));
    }
}
