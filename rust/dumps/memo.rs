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
use rustc_hash::FxHashMap;

/// Where the entries added after some point start (see [`MemoTable::get_since`]).
#[derive(Clone, Copy)]
pub struct Mark(usize);

#[derive(Default)]
pub struct MemoTable {
    /// Every entry in the order added: the object (the reference that keeps its address
    /// from being reused) and its memo index.
    entries: Vec<(Py<PyAny>, u32)>,
    /// Address to memo index for `entries[..hashed]`.
    index: FxHashMap<usize, u32>,
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
        if self.index.is_empty() {
            return None;
        }
        self.index.get(&(obj.as_ptr() as usize)).copied()
    }

    #[inline(never)]
    fn hash_new_entries(&mut self) {
        let new = &self.entries[self.hashed..];
        self.index
            .extend(new.iter().map(|(obj, idx)| (obj.as_ptr() as usize, *idx)));
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
