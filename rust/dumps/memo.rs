//! The pickler's memo: which objects were already written, and at which memo index.
//!
//! Like `PyMemoTable` in `_pickle.c` it is keyed by object address and holds a strong reference
//! to every entry, so an address can't be reused by a new object while the stream is written.
//! A `MEMOIZE` for an object built for the stream alone (a tuple `pickle` makes for a
//! `__reduce__`, cloudpickle's state dicts) takes its index with [`MemoTable::skip`] and no table
//! entry: no other reference to it exists, so nothing can meet it again. Every object of the
//! caller's gets an entry (see the memo policy in `mod.rs`).

use pyo3::prelude::*;
use rustc_hash::FxHashMap;

/// Where the entries added after some point start (see [`MemoTable::get_since`]).
#[derive(Clone, Copy)]
pub struct Mark {
    moves: u32,
    len: usize,
}

#[derive(Default)]
pub struct MemoTable {
    index: FxHashMap<usize, u32>,
    /// Entries not yet in `index` (address, memo index), added by [`MemoTable::put_deferred`] and
    /// moved into `index` by the first lookup `index` can't answer: every lookup sees every
    /// entry, as in `pickle`; a message no lookup misses in (a list of distinct strings) never
    /// hashes them.
    deferred: Vec<(usize, u32)>,
    /// How many times `deferred` was moved into `index`: a [`Mark`] taken before is void.
    moves: u32,
    keep_alive: Vec<Py<PyAny>>,
    /// The index the next `MEMOIZE` assigns.
    next: u32,
}

impl MemoTable {
    /// Forgets every entry but keeps the allocations, for reuse by the next `dumps`.
    pub fn clear(&mut self) {
        self.index.clear();
        self.deferred.clear();
        self.keep_alive.clear();
        self.next = 0;
    }

    /// Whether the tables grew past what is worth keeping between calls. Every str, bytes and
    /// tuple takes an entry, so a list of 10,000 strings makes 10,000: regrowing the tables on
    /// every call cost more than filling them, so up to 65,536 entries (about 1.5 MB) are kept.
    pub fn is_large(&self) -> bool {
        self.keep_alive.capacity() > 1 << 16
    }

    /// The memo index of `obj`, if it was written before.
    #[inline]
    pub fn get(&mut self, obj: &Bound<'_, PyAny>) -> Option<u32> {
        let key = obj.as_ptr() as usize;
        if !self.index.is_empty() {
            if let Some(&idx) = self.index.get(&key) {
                return Some(idx);
            }
        }
        if self.deferred.is_empty() {
            return None;
        }
        self.index.extend(self.deferred.drain(..));
        self.moves = self.moves.wrapping_add(1);
        self.index.get(&key).copied()
    }

    /// A mark for [`MemoTable::get_since`]: where the entries added from now on start.
    #[inline]
    pub fn mark(&self) -> Mark {
        Mark {
            moves: self.moves,
            len: self.deferred.len(),
        }
    }

    /// [`MemoTable::get`] for an object that had no entry when `mark` was taken: only what was
    /// added since can be it, so a few deferred entries are scanned instead of all hashed.
    #[inline]
    pub fn get_since(&mut self, obj: &Bound<'_, PyAny>, mark: Mark) -> Option<u32> {
        let key = obj.as_ptr() as usize;
        match self.deferred.get(mark.len..) {
            Some(recent) if mark.moves == self.moves && recent.len() <= 16 => {
                if let Some(&(_, idx)) = recent.iter().find(|(k, _)| *k == key) {
                    return Some(idx);
                }
                if self.index.is_empty() {
                    return None;
                }
                self.index.get(&key).copied()
            }
            _ => self.get(obj),
        }
    }

    /// Records `obj` under the next index, which is what `MEMOIZE` assigns when read back.
    #[inline]
    pub fn put(&mut self, obj: &Bound<'_, PyAny>) -> u32 {
        let idx = self.skip();
        self.index.insert(obj.as_ptr() as usize, idx);
        self.keep_alive.push(obj.clone().unbind());
        idx
    }

    /// [`MemoTable::put`] for an object that can't have an entry yet, its hashing deferred.
    #[inline]
    pub fn put_deferred(&mut self, obj: &Bound<'_, PyAny>) -> u32 {
        let idx = self.skip();
        self.deferred.push((obj.as_ptr() as usize, idx));
        self.keep_alive.push(obj.clone().unbind());
        idx
    }

    /// Takes the next index for an object nothing can refer to again, without an entry.
    #[inline]
    pub fn skip(&mut self) -> u32 {
        let idx = self.next;
        self.next += 1;
        idx
    }
}
