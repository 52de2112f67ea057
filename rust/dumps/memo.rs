//! The pickler's memo: which objects were already written, and at which memo index.
//!
//! Like `PyMemoTable` in `_pickle.c` it is keyed by object address and holds a strong reference
//! to every entry, so an address can't be reused by a new object while the stream is written.
//! A `MEMOIZE` for an object that can't be met again (see the memo policy in `mod.rs`) takes its
//! index with [`MemoTable::skip`] and no table entry: the stream numbers it as `pickle` does.

use pyo3::prelude::*;
use rustc_hash::FxHashMap;

#[derive(Default)]
pub struct MemoTable {
    index: FxHashMap<usize, u32>,
    keep_alive: Vec<Py<PyAny>>,
    /// The index the next `MEMOIZE` assigns.
    next: u32,
}

impl MemoTable {
    /// Forgets every entry but keeps the allocations, for reuse by the next `dumps`.
    pub fn clear(&mut self) {
        self.index.clear();
        self.keep_alive.clear();
        self.next = 0;
    }

    /// Whether the tables grew past what is worth keeping between calls.
    pub fn is_large(&self) -> bool {
        self.keep_alive.capacity() > 4096
    }

    /// The memo index of `obj`, if it was written before.
    #[inline]
    pub fn get(&self, obj: &Bound<'_, PyAny>) -> Option<u32> {
        if self.index.is_empty() {
            return None;
        }
        self.index.get(&(obj.as_ptr() as usize)).copied()
    }

    /// Records `obj` under the next index, which is what `MEMOIZE` assigns when read back.
    #[inline]
    pub fn put(&mut self, obj: &Bound<'_, PyAny>) -> u32 {
        let idx = self.skip();
        self.index.insert(obj.as_ptr() as usize, idx);
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
