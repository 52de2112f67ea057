//! The unpickler's object stack, mark stack and memo, holding strong references as raw
//! pointers (no per-push refcount bookkeeping beyond what CPython's `Pdata` does) and
//! releasing everything they still own when dropped, so an error anywhere leaks nothing.

use std::collections::HashMap;

use pyo3::ffi;

/// A strong reference owned by the stack or memo.
pub(super) type Owned = *mut ffi::PyObject;

/// CPython's `Pdata` plus the unpickler's `marks` array: one flat object stack, and the
/// positions where MARK opcodes were seen. The topmost mark is a fence that pops may not
/// cross, exactly as in `Modules/_pickle.c`.
pub(super) struct Stack {
    items: Vec<Owned>,
    marks: Vec<usize>,
    fence: usize,
}

impl Stack {
    pub(super) fn new() -> Self {
        Stack {
            items: Vec::with_capacity(64),
            marks: Vec::new(),
            fence: 0,
        }
    }

    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    #[inline(always)]
    pub(super) fn fence(&self) -> usize {
        self.fence
    }

    /// Whether a MARK is active: decides between CPython's two underflow messages.
    pub(super) fn mark_set(&self) -> bool {
        !self.marks.is_empty()
    }

    /// Take ownership of `obj` (a new, non-null reference).
    #[inline(always)]
    pub(super) fn push(&mut self, obj: Owned) {
        self.items.push(obj);
    }

    /// Pop the top object, transferring its reference to the caller; `None` if that would
    /// cross the fence (`Pdata_pop`).
    #[inline(always)]
    pub(super) fn pop(&mut self) -> Option<Owned> {
        if self.items.len() > self.fence {
            self.items.pop()
        } else {
            None
        }
    }

    /// The top object (borrowed), if there is one above the fence.
    #[inline(always)]
    pub(super) fn top(&self) -> Option<Owned> {
        if self.items.len() > self.fence {
            self.items.last().copied()
        } else {
            None
        }
    }

    /// Replace the top object (which must exist above the fence) with `obj`, releasing the
    /// old one. The old reference is released last so the stack is consistent if its
    /// deallocation runs Python code.
    #[inline(always)]
    pub(super) fn replace_top(&mut self, obj: Owned) {
        if let Some(slot) = self.items.last_mut() {
            let old = std::mem::replace(slot, obj);
            // SAFETY: `old` was a strong reference owned by the stack; we hold the GIL.
            unsafe { ffi::Py_DECREF(old) };
        }
    }

    /// The borrowed object at absolute position `i` (callers check `i < len()`).
    #[inline(always)]
    pub(super) fn get(&self, i: usize) -> Option<Owned> {
        self.items.get(i).copied()
    }

    /// MARK: remember the current height and make it the new fence.
    pub(super) fn push_mark(&mut self) {
        self.fence = self.items.len();
        self.marks.push(self.fence);
    }

    /// Pop the topmost mark and return its position (`marker()` in `_pickle.c`).
    pub(super) fn pop_mark(&mut self) -> Option<usize> {
        let mark = self.marks.pop()?;
        self.fence = self.marks.last().copied().unwrap_or(0);
        Some(mark)
    }

    /// The topmost mark's position, if any (used by POP to pop a mark instead of an object).
    pub(super) fn top_mark(&self) -> Option<usize> {
        self.marks.last().copied()
    }

    /// Move the objects from `start` to the top out of the stack, in order, handing each
    /// reference to `sink` (which takes ownership of it). `start` must be `<= len()`.
    #[inline(always)]
    pub(super) fn drain_from(&mut self, start: usize, mut sink: impl FnMut(usize, Owned)) {
        for (i, obj) in self.items.drain(start..).enumerate() {
            sink(i, obj);
        }
    }

    /// Drop the objects from `start` to the top (`Pdata_clear`).
    pub(super) fn truncate(&mut self, start: usize) {
        while self.items.len() > start {
            if let Some(obj) = self.items.pop() {
                // SAFETY: the stack owned this reference; we hold the GIL.
                unsafe { ffi::Py_DECREF(obj) };
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.truncate(0);
    }
}

/// The memo: a dense vector for the indices picklers actually write (0, 1, 2, ... in order),
/// and a hash map for anything else, so a hostile `LONG_BINPUT 0xFFFFFFF0` costs one map
/// entry instead of the gigabytes CPython's `_Unpickler_MemoPut` would resize to.
///
/// Invariant: every index below `dense.len()` lives in `dense`; `sparse` holds only larger
/// indices. So `len()` (the number of distinct indices, used by MEMOIZE) is the sum of both.
///
/// `sparse` keeps std's randomly seeded SipHash: its keys are attacker-chosen (PUT takes any
/// 64-bit decimal), and a fixed hash like FxHash could be fed colliding keys to make every
/// insert a long probe, turning a small stream into a quadratic-time hang.
pub(super) struct Memo {
    dense: Vec<Owned>,
    sparse: HashMap<usize, Owned>,
}

impl Memo {
    pub(super) fn new() -> Self {
        Memo {
            dense: Vec::with_capacity(32),
            sparse: HashMap::new(),
        }
    }

    /// The number of distinct memo indices, which MEMOIZE uses as its index.
    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    /// The borrowed object stored at `idx`.
    #[inline(always)]
    pub(super) fn get(&self, idx: usize) -> Option<Owned> {
        match self.dense.get(idx) {
            Some(&obj) => Some(obj),
            None if self.sparse.is_empty() => None,
            None => self.sparse.get(&idx).copied(),
        }
    }

    /// Store a new reference to the borrowed `obj` at `idx`, releasing any previous value.
    #[inline(always)]
    pub(super) fn put(&mut self, idx: usize, obj: Owned) {
        // SAFETY: `obj` is a live object borrowed from the stack; we hold the GIL.
        unsafe { ffi::Py_INCREF(obj) };
        let old = if idx < self.dense.len() {
            Some(std::mem::replace(&mut self.dense[idx], obj))
        } else if idx == self.dense.len() {
            self.dense.push(obj);
            // Keep the invariant: pull now-contiguous sparse indices into the vector.
            while let Some(next) = self.sparse.remove(&self.dense.len()) {
                self.dense.push(next);
            }
            None
        } else {
            self.sparse.insert(idx, obj)
        };
        if let Some(old) = old {
            // SAFETY: the memo owned `old`; it is released after the memo is consistent.
            unsafe { ffi::Py_DECREF(old) };
        }
    }
}

impl Drop for Memo {
    fn drop(&mut self) {
        for obj in self
            .dense
            .drain(..)
            .chain(self.sparse.drain().map(|(_, v)| v))
        {
            // SAFETY: the memo owned these references; we hold the GIL.
            unsafe { ffi::Py_DECREF(obj) };
        }
    }
}
