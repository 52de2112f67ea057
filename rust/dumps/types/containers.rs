//! Containers: tuple, list, dict, set and frozenset as `save_tuple`, `save_list`, `save_dict`,
//! `save_set` and `save_frozenset` in `_pickle.c` write them, and the containers a reduction
//! builds for the stream alone (`tuple_of`, `list_of`, `dict_of`).

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFrozenSet, PyList, PySet, PyTuple};

use super::code;
use crate::dumps::batch::Batching;
use crate::dumps::{ref_count, short_repr, Pickler};
use crate::opcodes::*;

impl<'py> Pickler<'py> {
    /// `save_tuple`: `TUPLE1..3` or `MARK ... TUPLE`; a tuple reached again through its own items
    /// is thrown away and fetched from the memo, as `pickle` does. `label` names item `i` in
    /// error paths (`tuple[i]`, or `partial.args[i]` when the caller knows better).
    pub fn save_tuple_as(
        &mut self,
        t: &Bound<'py, PyTuple>,
        unique: bool,
        label: impl Fn(usize) -> String,
    ) -> PyResult<()> {
        // Written where `pickle` would `save()` the tuple: a full frame ends first, before a
        // memo fetch too.
        self.out.boundary();
        if !unique {
            if let Some(idx) = self.memo.get(t.as_any()) {
                self.out.get(idx);
                return Ok(());
            }
        }
        self.save_tuple_body(t, label)
    }

    /// `save_tuple` once the tuple was looked up in the memo (by `save_tuple_as` or the walker).
    pub(in crate::dumps) fn save_tuple_body(
        &mut self,
        t: &Bound<'py, PyTuple>,
        label: impl Fn(usize) -> String,
    ) -> PyResult<()> {
        let n = t.len();
        if n == 0 {
            self.out.op(EMPTY_TUPLE);
            return Ok(());
        }
        let mark = self.memo.mark();
        self.out.tuple_open(n);
        for i in 0..n {
            // SAFETY: `i < len`; a tuple's items can't change while we hold the tuple.
            let item = unsafe { t.get_borrowed_item_unchecked(i) };
            let item_unique = ref_count(&item) == 1;
            if let Err(e) = self.save(&item, item_unique) {
                return Err(self.at(e, || label(i)));
            }
        }
        // Looked up again whatever its reference count: writing the items may have reached it
        // (a cycle, or Python code). Only entries added since `mark` can be it.
        if let Some(idx) = self.memo.get_since(t.as_any(), mark) {
            if n > 3 {
                self.out.op(POP_MARK);
            } else {
                self.out.ops(&[POP, POP, POP][..n]);
            }
            self.out.get(idx);
            return Ok(());
        }
        self.out.tuple_close(n);
        self.memoize(t.as_any());
        Ok(())
    }

    /// A list's items written as a fresh tuple (memoized with no entry: nothing can refer to
    /// it), as `pickle` writes the `tuple(list)` a `__reduce__` builds.
    pub fn save_list_as_tuple(
        &mut self,
        list: &Bound<'py, PyList>,
        label: impl Fn(usize) -> String,
    ) -> PyResult<()> {
        let n = list.len();
        if n == 0 {
            self.save_empty_tuple();
            return Ok(());
        }
        self.open_fresh_tuple(n);
        let mut written = 0;
        while written < n && written < list.len() {
            let (item, item_unique) = list_item(self.py, list, written);
            if let Err(e) = self.save(&item, item_unique) {
                return Err(self.at(e, || label(written)));
            }
            written += 1;
        }
        if written != n {
            return Err(PyRuntimeError::new_err(
                "list changed size during iteration",
            ));
        }
        self.close_fresh_tuple(n);
        Ok(())
    }

    /// A tuple built for the stream alone, of `n` items written by `item`: `EMPTY_TUPLE`,
    /// `TUPLE1..3` or `MARK ... TUPLE`, then (when not empty) memoized as `save_tuple` does.
    pub fn tuple_of(
        &mut self,
        n: usize,
        mut item: impl FnMut(&mut Self, usize) -> PyResult<()>,
    ) -> PyResult<()> {
        self.open_fresh_tuple(n);
        for i in 0..n {
            item(self, i)?;
        }
        self.close_fresh_tuple(n);
        Ok(())
    }

    /// Opens a tuple built for the stream alone (`MARK` when it has more than three items).
    /// `pickle` `save()`s that tuple, which first ends the open frame once it holds 64 KiB
    /// (`_Pickler_OpcodeBoundary`): so does this, as every helper here that writes an object
    /// `pickle` would `save()` without passing through [`Pickler::save`].
    #[inline]
    pub fn open_fresh_tuple(&mut self, n: usize) {
        self.out.boundary();
        self.out.tuple_open(n);
    }

    /// `EMPTY_TUPLE` for the `()` a reduction passes (`_make_empty_cell()`, `cls.__new__(cls)`),
    /// after the frame check of its `save()`.
    #[inline]
    pub fn save_empty_tuple(&mut self) {
        self.out.boundary();
        self.out.op(EMPTY_TUPLE);
    }

    /// Closes a tuple built for the stream alone that was opened with `tuple_open(n)`.
    #[inline]
    pub fn close_fresh_tuple(&mut self, n: usize) {
        self.out.tuple_close(n);
        if n > 0 {
            self.memoize_fresh();
        }
    }

    /// A list built for the stream alone from `items`, written as `save_list` writes it.
    pub fn list_of(&mut self, items: &[Bound<'py, PyAny>]) -> PyResult<()> {
        self.list_of_with(items.len(), |p, i| p.save(&items[i], false))
    }

    /// A list built for the stream alone of `n` items written by `item`: `EMPTY_LIST`,
    /// memoized, then `APPEND` for one item or batches of `MARK ... APPENDS`.
    pub fn list_of_with(
        &mut self,
        n: usize,
        mut item: impl FnMut(&mut Self, usize) -> PyResult<()>,
    ) -> PyResult<()> {
        self.out.boundary();
        self.out.op(EMPTY_LIST);
        self.memoize_fresh();
        let mut indices = 0..n;
        self.batched(Batching::list(n), || Ok(indices.next()), |p, i| item(p, i))
    }

    /// A dict built for the stream alone from `items`, written as `save_dict` writes it.
    /// `copied_keys`: the keys stand for copies (`"".join(k)`) that share no memo entry.
    pub fn dict_of(
        &mut self,
        items: &[(Bound<'py, PyAny>, Bound<'py, PyAny>)],
        copied_keys: bool,
        label: impl Fn(&str) -> String,
    ) -> PyResult<()> {
        self.out.boundary();
        self.out.op(EMPTY_DICT);
        self.memoize_fresh();
        let mut items_iter = items.iter();
        self.batched(
            Batching::dict(items.len()),
            || Ok(items_iter.next()),
            |p, (k, v)| p.dict_item(k, v, copied_keys, &label),
        )
    }

    pub(in crate::dumps) fn dict_item(
        &mut self,
        k: &Bound<'py, PyAny>,
        v: &Bound<'py, PyAny>,
        copied_keys: bool,
        label: &impl Fn(&str) -> String,
    ) -> PyResult<()> {
        if copied_keys {
            code::save_joined(self, k)?;
        } else {
            self.save(k, false)?;
        }
        self.save(v, false)
            .map_err(|e| self.at(e, || label(&k.to_string())))
    }

    /// `save_list` + `batch_list_exact`: `EMPTY_LIST`, then `APPEND` or batched `APPENDS`.
    pub(in crate::dumps) fn save_list(&mut self, list: &Bound<'py, PyList>) -> PyResult<()> {
        self.out.op(EMPTY_LIST);
        self.memoize(list.as_any());
        let py = self.py;
        let mut i = 0;
        // The length is re-read on every step: saving an item may run code that changes it.
        let next = || {
            let found = (i < list.len()).then_some(i);
            i += 1;
            Ok(found)
        };
        self.batched(Batching::list(list.len()), next, |p, i| {
            // SAFETY: `i < len` was checked just before; the borrowed item is only read, with
            // no code run meanwhile.
            let ptr = unsafe { ffi::PyList_GET_ITEM(list.as_ptr(), i as _) };
            let ty = p.classify(ptr);
            if p.save_scalar(ptr, ty) {
                return Ok(());
            }
            let (item, item_unique) = list_item(py, list, i);
            p.save_as(&item, ty, item_unique)
                .map_err(|e| p.at(e, || format!("list[{i}]")))
        })
    }

    /// `save_dict` + `batch_dict_exact`: `EMPTY_DICT`, then `SETITEM` or batched `SETITEMS`.
    pub(in crate::dumps) fn save_dict(&mut self, dict: &Bound<'py, PyDict>) -> PyResult<()> {
        self.out.op(EMPTY_DICT);
        self.memoize(dict.as_any());
        let py = self.py;
        let size = dict.len();
        let mut pos: ffi::Py_ssize_t = 0;
        let next = || {
            let mut k: *mut ffi::PyObject = std::ptr::null_mut();
            let mut v: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: `PyDict_Next` hands out borrowed references; we read their reference
            // counts and then own a reference to each before anything can run Python code.
            unsafe {
                if ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut k, &mut v) == 0 {
                    return Ok(None);
                }
                // Counted before we take our references.
                let key_unique = ffi::Py_REFCNT(k) == 1;
                let value_unique = ffi::Py_REFCNT(v) == 1;
                Ok(Some((
                    Bound::from_borrowed_ptr(py, k),
                    key_unique,
                    Bound::from_borrowed_ptr(py, v),
                    value_unique,
                )))
            }
        };
        self.batched(
            Batching::dict(size),
            next,
            |p, (key, key_unique, value, value_unique)| {
                p.save(&key, key_unique)
                    .map_err(|e| p.at(e, || "dict key".to_owned()))?;
                p.save(&value, value_unique)
                    .map_err(|e| p.at(e, || format!("dict[{}]", short_repr(&key))))?;
                if dict.len() != size {
                    return Err(PyRuntimeError::new_err(
                        "dictionary changed size during iteration",
                    ));
                }
                Ok(())
            },
        )
    }

    /// `save_set`: `EMPTY_SET`, then batched `ADDITEMS`.
    pub(in crate::dumps) fn save_set(&mut self, set: &Bound<'py, PySet>) -> PyResult<()> {
        self.out.op(EMPTY_SET);
        self.memoize(set.as_any());
        // A plain iterator, so that a set changed while we write it raises `RuntimeError` as in
        // `pickle` (PyO3's set iterator treats that as a bug and panics).
        let mut items = set.as_any().try_iter()?;
        self.batched(
            Batching::SET,
            || items.next().transpose(),
            |p, item| {
                // The iterator gave us our own reference: two in all means the set holds the
                // other.
                let item_unique = ref_count(&item) == 2;
                p.save(&item, item_unique)
                    .map_err(|e| p.at(e, || "set item".to_owned()))
            },
        )
    }

    /// `save_frozenset`: `MARK ... FROZENSET`, with the same recursion check as tuples.
    pub(in crate::dumps) fn save_frozenset(
        &mut self,
        set: &Bound<'py, PyFrozenSet>,
    ) -> PyResult<()> {
        let mark = self.memo.mark();
        self.out.op(MARK);
        for item in set.as_any().try_iter()? {
            let item = item?;
            let item_unique = ref_count(&item) == 2;
            self.save(&item, item_unique)
                .map_err(|e| self.at(e, || "frozenset item".to_owned()))?;
        }
        if let Some(idx) = self.memo.get_since(set.as_any(), mark) {
            self.out.op(POP_MARK);
            self.out.get(idx);
            return Ok(());
        }
        self.out.op(FROZENSET);
        self.memoize(set.as_any());
        Ok(())
    }
}

/// An item of a list with a reference of our own (saving it may run code that mutates the list)
/// and whether the list held the only other reference.
#[inline]
pub(crate) fn list_item<'py>(
    py: Python<'py>,
    list: &Bound<'py, PyList>,
    i: usize,
) -> (Bound<'py, PyAny>, bool) {
    // SAFETY: callers check `i < len` right before; the item is borrowed from the list and we
    // take our own reference before returning.
    unsafe {
        let ptr = ffi::PyList_GET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t);
        // Counted before we take our reference.
        let unique = ffi::Py_REFCNT(ptr) == 1;
        (Bound::from_borrowed_ptr(py, ptr), unique)
    }
}
