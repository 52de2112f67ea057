//! The dumps side: the walker, which writes each object the fastest way its type allows, and
//! its per-type writers (`save()` and the functions it dispatches to in `_pickle.c`).
//!
//! Hot types (str, int, float, None, bool, tuple, list, dict) are recognised by comparing type
//! pointers, in order of frequency, and written here without calling back into Python; paths,
//! partials and dask nodes go to their writers in `path.rs`, `partial.rs` and `dask.rs`, which
//! read them through `crate::layouts`; everything else goes through `reduce.rs` (the
//! `__reduce_ex__` protocol) or, for functions and classes, `globals.rs` (by reference) and
//! `by_value.rs` (by value, with cloudpickle's reduction); `code.rs` writes code objects, cells
//! and modules as cloudpickle does.
//! `lookup.rs` holds the Python objects all of them consult; `memo.rs` the memo table.
//!
//! Memo policy: `pickle` memoizes every str, bytes, tuple and container it writes. An object whose
//! reference count is 1 when we reach it is held only by the edge we came through. For immutable
//! atoms (str, bytes) and immutable containers (tuple, frozenset) that means the memo entry could
//! never be used: such "unique" objects skip the memo, which is most of the atoms and small
//! tuples in real data. Mutable objects (bytearray, containers) and reduced objects are always
//! memoized, containers before their contents, exactly as `pickle` does: every reference cycle
//! passes through one of them, so that is what stops a walk around a cycle (a tuple in a cycle is
//! reached twice, as in `pickle`, and its second copy is thrown away with `POP`).

mod by_value;
pub mod code;
mod dask;
pub mod globals;
mod lookup;
mod memo;
mod partial;
mod path;
mod reduce;

use pyo3::exceptions::{PyException, PyRecursionError, PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple, PyType};

use crate::errors;
use crate::layouts;
use crate::layouts::dask::DaskLayout;
use crate::layouts::partial::PartialLayout;
use crate::layouts::path::PathLayout;
use crate::opcodes::*;
use crate::stats;
use crate::writer::{Writer, BATCHSIZE, EMPTY_LAST_BATCH, LONE_LAST_ITEM};
use globals::Kind;
use lookup::Lookup;
use memo::Memo;

/// The native stack every level of the walk starts with at least. A thread's stack may be
/// small (Python lets threads run with 256 KiB), our frames are larger than `_pickle.c`'s, and
/// Python code called from the deepest level (a `__reduce__` doing `repr()` of a deep list)
/// needs room of its own: with less than this left, the walk goes on on a fresh stack segment
/// (`stacker::maybe_grow`) of [`STACK_SEGMENT`] bytes. Nesting is bounded by the interpreter's
/// recursion counter (`Py_EnterRecursiveCall`), so the segments are too.
const STACK_RED_ZONE: usize = 1024 * 1024;
/// A fresh stack segment: the size of a default thread's whole stack.
#[cfg(not(Py_3_14))]
const STACK_SEGMENT: usize = 8 * 1024 * 1024;

pub fn dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<i64>,
    buffer_callback: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let proto = match protocol {
        None => HIGHEST_PROTOCOL,
        Some(p) if p < 0 => HIGHEST_PROTOCOL,
        Some(p) if p > HIGHEST_PROTOCOL as i64 => {
            return Err(PyValueError::new_err(format!(
                "pickle protocol must be <= {HIGHEST_PROTOCOL}"
            )))
        }
        Some(p) => p as u8,
    };
    let buffer_callback = buffer_callback.filter(|cb| !cb.is_none());
    if buffer_callback.is_some() && proto < 5 {
        return Err(PyValueError::new_err("buffer_callback needs protocol >= 5"));
    }
    let lookup = Lookup::get(py)?;
    let native = Native {
        path: layouts::path::get(py)?,
        partial: layouts::partial::get(py)?,
        dask: layouts::dask::get(py),
    };
    if proto < 4 {
        // Protocols 0-3 predate framing, STACK_GLOBAL and MEMOIZE; nobody sends them to Dask,
        // so they are written by cloudpickle rather than by a second native writer.
        static LEGACY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let legacy = LEGACY.import(py, "ferropickle._legacy", "dumps")?;
        return match legacy.call1((obj, proto)) {
            Ok(data) => data.cast_into().map_err(Into::into),
            Err(e) if e.is_instance_of::<PyRecursionError>(py) => {
                Err(errors::recursion_error(py, Some(e)))
            }
            Err(e) => Err(e),
        };
    }
    let timer = stats::Timer::start();
    // `try_with`: a thread being torn down has no scratch left, and just allocates.
    let (buf, memo) = SCRATCH.try_with(|s| s.take()).unwrap_or_default();
    let mut p = Pickler::new(py, lookup, native, proto, buffer_callback, buf, memo);
    let result = p.save(obj, false).map_err(|e| p.explain(obj, e));
    let Pickler {
        out,
        mut memo,
        counts,
        ..
    } = p;
    let out = out.finish();
    let result = result.map(|()| PyBytes::new(py, &out));
    stats::record_dumps(timer, &counts, result.as_ref().ok().map(|_| out.len()));
    // Release memoized objects now (they may run finalizers), then keep the allocations for
    // the next call on this thread unless this one made them large.
    memo.clear();
    if out.capacity() <= SCRATCH_MAX_BYTES && !memo.is_large() {
        let _ = SCRATCH.try_with(|s| s.set((out, memo)));
    }
    result
}

/// A thread's output buffer and memo tables, reused between calls: most messages are small and
/// similar, and allocating and growing them each time costs more than writing a small task.
/// A nested `dumps` (called from a `__reduce__`) finds the slot empty and allocates its own.
const SCRATCH_MAX_BYTES: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::Cell<(Vec<u8>, Memo)> = std::cell::Cell::new(Default::default());
}

/// The layouts of the types written from their fields, each `None` when this Python's layout
/// is not the one its writer expects.
#[derive(Clone, Copy)]
struct Native {
    path: Option<&'static PathLayout>,
    partial: Option<&'static PartialLayout>,
    dask: Option<&'static DaskLayout>,
}

pub struct Pickler<'py> {
    pub py: Python<'py>,
    pub lookup: &'py Lookup,
    pub out: Writer,
    pub memo: Memo,
    pub proto: u8,
    pub buffer_callback: Option<Bound<'py, PyAny>>,
    native: Native,
    pub counts: stats::CallCounts,
    /// Per-call state of the by-value writer (cloudpickle's `globals_ref`).
    pub by_value: by_value::State,
    registry_checked: bool,
    /// Where the failing object sits, innermost first; filled only while an error unwinds.
    err_path: Vec<String>,
    err_leaf: Option<String>,
}

impl<'py> Pickler<'py> {
    fn new(
        py: Python<'py>,
        lookup: &'py Lookup,
        native: Native,
        proto: u8,
        buffer_callback: Option<Bound<'py, PyAny>>,
        buf: Vec<u8>,
        memo: Memo,
    ) -> Self {
        Pickler {
            py,
            lookup,
            out: Writer::with_buffer(proto, buf),
            memo,
            proto,
            buffer_callback,
            native,
            counts: stats::CallCounts::default(),
            by_value: by_value::State::default(),
            registry_checked: false,
            err_path: Vec::new(),
            err_leaf: None,
        }
    }

    /// Writes `obj`. `unique` says the caller saw it with a reference count of one (see the
    /// module docs): it is then neither looked up in nor added to the memo.
    #[inline]
    pub fn save(&mut self, obj: &Bound<'py, PyAny>, unique: bool) -> PyResult<()> {
        self.counts.objects += 1;
        // `save()` starts a new frame here once the open one is big enough.
        self.out.boundary();
        let ptr = obj.as_ptr();
        // SAFETY: `ptr` is a live object (we hold `obj`); the checks only read its type.
        unsafe {
            if ffi::PyUnicode_CheckExact(ptr) != 0 {
                return self.save_str(obj, unique);
            }
            if ffi::PyLong_CheckExact(ptr) != 0 {
                return self.save_int(obj);
            }
            if ptr == ffi::Py_None() {
                self.out.op(NONE);
                return Ok(());
            }
            if ffi::PyFloat_CheckExact(ptr) != 0 {
                self.out.float(ffi::PyFloat_AS_DOUBLE(ptr));
                return Ok(());
            }
            if ffi::PyBool_Check(ptr) != 0 {
                self.out.op(if ptr == ffi::Py_True() {
                    NEWTRUE
                } else {
                    NEWFALSE
                });
                return Ok(());
            }
        }
        self.save_nested(obj, unique)
    }

    /// None, bools, 64-bit ints and floats straight from a borrowed pointer: writing them runs
    /// no Python code, so a container's item needs no reference of our own. `false` (nothing
    /// written) for anything else.
    #[inline(always)]
    fn save_scalar(&mut self, ptr: *mut ffi::PyObject) -> bool {
        // SAFETY: callers pass a live object borrowed from a container they hold; the checks
        // only read its type and value.
        unsafe {
            if !(ffi::PyLong_CheckExact(ptr) != 0
                || ffi::PyFloat_CheckExact(ptr) != 0
                || ptr == ffi::Py_None()
                || ffi::PyBool_Check(ptr) != 0)
            {
                return false;
            }
        }
        // Every object `save()`s: the frame check comes first, as there.
        self.out.boundary();
        // SAFETY: as above.
        unsafe {
            if ffi::PyLong_CheckExact(ptr) != 0 {
                let mut overflow = 0;
                let v = ffi::PyLong_AsLongLongAndOverflow(ptr, &mut overflow);
                if overflow != 0 {
                    return false;
                }
                self.out.int(v);
            } else if ffi::PyFloat_CheckExact(ptr) != 0 {
                self.out.float(ffi::PyFloat_AS_DOUBLE(ptr));
            } else if ptr == ffi::Py_None() {
                self.out.op(NONE);
            } else if ptr == ffi::Py_True() {
                self.out.op(NEWTRUE);
            } else if ptr == ffi::Py_False() {
                self.out.op(NEWFALSE);
            } else {
                return false;
            }
        }
        self.counts.objects += 1;
        true
    }

    /// Everything that may recurse: counts nesting in the interpreter's own recursion counter,
    /// as `save()` in `_pickle.c` does (so Python code called from deep inside gets only what
    /// is left of the limit), keeps a native-stack red zone, and notes the failing object.
    #[inline(never)]
    fn save_nested(&mut self, obj: &Bound<'py, PyAny>, unique: bool) -> PyResult<()> {
        // CPython 3.14 checks the C stack by the stack pointer against the thread's own stack,
        // which a segment of ours is not: there the walk stops at the red zone instead.
        #[cfg(Py_3_14)]
        if stacker::remaining_stack().is_some_and(|left| left < STACK_RED_ZONE) {
            return Err(errors::recursion_error(self.py, None));
        }
        // SAFETY: we hold the GIL; every successful enter is matched by the leave below.
        if unsafe { ffi::Py_EnterRecursiveCall(c" while pickling an object".as_ptr()) } != 0 {
            return Err(PyErr::fetch(self.py));
        }
        #[cfg(not(Py_3_14))]
        let result =
            stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || self.dispatch(obj, unique));
        #[cfg(Py_3_14)]
        let result = self.dispatch(obj, unique);
        // SAFETY: matches the enter above.
        unsafe { ffi::Py_LeaveRecursiveCall() };
        if result.is_err() && self.err_leaf.is_none() {
            self.err_leaf = Some(describe(obj));
        }
        result
    }

    fn dispatch(&mut self, obj: &Bound<'py, PyAny>, unique: bool) -> PyResult<()> {
        if !unique {
            if let Some(idx) = self.memo.get(obj) {
                self.out.get(idx);
                return Ok(());
            }
        }
        let ptr = obj.as_ptr();
        // SAFETY: type checks on a live object.
        unsafe {
            if ffi::PyTuple_CheckExact(ptr) != 0 {
                return self
                    .save_tuple_body(obj.cast_unchecked(), unique, |i| format!("tuple[{i}]"));
            }
            if ffi::PyList_CheckExact(ptr) != 0 {
                return self.save_list(obj.cast_unchecked());
            }
            if ffi::PyDict_CheckExact(ptr) != 0 {
                return self.save_dict(obj.cast_unchecked());
            }
            if ffi::PyBytes_CheckExact(ptr) != 0 {
                return self.save_bytes(obj.cast_unchecked(), unique);
            }
            if ffi::PySet_CheckExact(ptr) != 0 {
                return self.save_set(obj.cast_unchecked());
            }
            if ffi::PyFrozenSet_CheckExact(ptr) != 0 {
                return self.save_frozenset(obj.cast_unchecked(), unique);
            }
            if ffi::PyByteArray_CheckExact(ptr) != 0 {
                return self.save_bytearray(obj);
            }
            if ffi::PyType_Check(ptr) != 0 {
                return self.save_type(obj.cast_unchecked());
            }
            if ffi::PyFunction_Check(ptr) != 0 {
                return self.save_global(obj, None);
            }
        }
        if self.save_native(obj, unique)? {
            return Ok(());
        }
        reduce::save_reduced(self, obj, unique)
    }

    /// Paths, partials and dask nodes, written from their fields without calling
    /// `__reduce__`; `false` when `obj` is none of those (or its fields can't be read).
    fn save_native(&mut self, obj: &Bound<'py, PyAny>, unique: bool) -> PyResult<bool> {
        let ty = obj.get_type_ptr();
        let Native {
            path,
            partial,
            dask,
        } = self.native;
        if let Some(layout) = partial {
            if layout.handles(ty) {
                return partial::save_partial(self, layout, obj);
            }
        }
        if let Some(layout) = path {
            if layout.handles(ty) {
                return path::save_path(self, layout, obj, unique);
            }
        }
        if let Some(layout) = dask {
            if let Some(node) = layout.node_for(ty) {
                return dask::save_node(self, node, obj);
            }
        }
        // Types cloudpickle reduces its own way, written natively (see `code.rs`).
        // SAFETY: type check on a live object.
        if unsafe { ffi::PyCode_Check(obj.as_ptr()) } != 0 {
            code::save_code(self, obj)?;
            return Ok(true);
        }
        if code::is_cell(self.lookup, obj) {
            code::save_cell(self, obj)?;
            return Ok(true);
        }
        if code::is_module(obj) && code::save_module(self, obj)? {
            return Ok(true);
        }
        Ok(false)
    }

    /// `MEMOIZE`, as `pickle` writes after every object it memoizes; a `unique` object (see
    /// the module docs) takes its index without a table entry, since it can't be met again.
    #[inline]
    pub fn memoize_unless(&mut self, obj: &Bound<'py, PyAny>, unique: bool) -> PyResult<()> {
        if unique {
            self.memoize_fresh();
        } else {
            self.memoize(obj);
        }
        Ok(())
    }

    /// `MEMOIZE` for an object built for the stream alone (a tuple `pickle` makes, a dict or
    /// list cloudpickle makes): nothing can refer to it, so it gets an index and no entry.
    #[inline]
    pub fn memoize_fresh(&mut self) {
        self.memo.skip();
        self.out.op(MEMOIZE);
    }

    /// After the `REDUCE`/`NEWOBJ` that rebuilds `obj`: memoizes it, or, when writing its
    /// arguments already reached it (a cycle through them), throws the new copy away and
    /// fetches that one, as `save_reduce` does. `true` in that case: its state was written
    /// already and must not be written again.
    pub fn memoize_reduced(&mut self, obj: &Bound<'py, PyAny>) -> bool {
        if let Some(idx) = self.memo.get(obj) {
            self.out.op(POP);
            self.out.get(idx);
            return true;
        }
        self.memoize(obj);
        false
    }

    #[inline]
    pub fn memoize(&mut self, obj: &Bound<'py, PyAny>) {
        self.memo.put(obj);
        self.out.op(MEMOIZE);
    }

    /// `save_unicode`: UTF-8 with `surrogatepass`, so lone surrogates survive as in `pickle`.
    #[inline]
    fn save_str(&mut self, obj: &Bound<'py, PyAny>, unique: bool) -> PyResult<()> {
        if !unique {
            if let Some(idx) = self.memo.get(obj) {
                self.out.get(idx);
                return Ok(());
            }
        }
        let mut size: ffi::Py_ssize_t = 0;
        // SAFETY: `obj` is an exact str; the returned buffer lives as long as the string, and we
        // copy it into the output before anything else runs.
        let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(obj.as_ptr(), &mut size) };
        if data.is_null() {
            // Lone surrogates are not UTF-8; `pickle` encodes them with "surrogatepass".
            let _ = PyErr::take(self.py);
            let encoded = obj
                .cast::<PyString>()?
                .call_method1(pyo3::intern!(self.py, "encode"), ("utf-8", "surrogatepass"))?;
            self.out.str_utf8(encoded.cast::<PyBytes>()?.as_bytes());
        } else {
            // SAFETY: `data` points at `size` bytes owned by the live string.
            let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size as usize) };
            self.out.str_utf8(bytes);
        }
        self.memoize_unless(obj, unique)
    }

    /// `save_bytearray`: `BYTEARRAY8` from protocol 5; before, `bytearray(bytes(obj))` with
    /// `REDUCE` (a fresh copy of the bytes, so nothing shares its memo entry), or
    /// `bytearray()` when empty. Memoized whatever its reference count: it is mutable.
    fn save_bytearray(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        if self.proto < 5 {
            // The class first: saving it may run code, which could resize the bytearray.
            let py = self.py;
            self.save(py.get_type::<pyo3::types::PyByteArray>().as_any(), false)?;
        }
        // SAFETY: `obj` is an exact bytearray; its buffer is copied into the output right
        // away, before any code can run.
        let data = unsafe {
            std::slice::from_raw_parts(
                ffi::PyByteArray_AsString(obj.as_ptr()) as *const u8,
                ffi::PyByteArray_Size(obj.as_ptr()) as usize,
            )
        };
        if self.proto >= 5 {
            self.out.bytearray(data);
        } else if data.is_empty() {
            self.out.ops(&[EMPTY_TUPLE, REDUCE]);
        } else if cfg!(Py_3_15) && data.len() == 1 {
            // Since CPython 3.15 the C pickler's `bytes(obj)` of a one-byte bytearray is the
            // interpreter's shared one-byte object, which it memoizes like any bytes: a second
            // one-byte bytearray of that value fetches it. Before, it was a fresh copy.
            let byte = PyBytes::new(self.py, data);
            self.save(byte.as_any(), false)?;
            self.close_fresh_tuple(1);
            self.out.op(REDUCE);
        } else {
            self.out.bytes(data);
            self.memoize_fresh();
            self.close_fresh_tuple(1);
            self.out.op(REDUCE);
        }
        self.memoize(obj);
        Ok(())
    }

    #[inline]
    fn save_int(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let mut overflow = 0;
        // SAFETY: `obj` is an exact int.
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow) };
        if overflow == 0 {
            self.out.int(v);
            return Ok(());
        }
        self.save_big_int(obj)
    }

    /// Ints beyond 64 bits: `pickle.encode_long`, via `int.to_bytes`.
    #[cold]
    fn save_big_int(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let bits: usize = obj
            .call_method0(pyo3::intern!(py, "bit_length"))?
            .extract()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("signed", true)?;
        let bytes = obj.call_method(
            pyo3::intern!(py, "to_bytes"),
            ((bits >> 3) + 1, "little"),
            Some(&kwargs),
        )?;
        self.out.long_le(bytes.cast::<PyBytes>()?.as_bytes());
        Ok(())
    }

    fn save_bytes(&mut self, obj: &Bound<'py, PyBytes>, unique: bool) -> PyResult<()> {
        self.out.bytes(obj.as_bytes());
        self.memoize_unless(obj.as_any(), unique)
    }

    /// `save_tuple`: `TUPLE1..3` or `MARK ... TUPLE`; a tuple reached again through its own items
    /// is thrown away and fetched from the memo, as `pickle` does. `label` names item `i` in
    /// error paths (`tuple[i]`, or `partial.args[i]` when a native writer knows better).
    pub fn save_tuple_as(
        &mut self,
        t: &Bound<'py, PyTuple>,
        unique: bool,
        label: impl Fn(usize) -> String,
    ) -> PyResult<()> {
        if !unique {
            if let Some(idx) = self.memo.get(t.as_any()) {
                self.out.get(idx);
                return Ok(());
            }
        }
        self.save_tuple_body(t, unique, label)
    }

    fn save_tuple_body(
        &mut self,
        t: &Bound<'py, PyTuple>,
        unique: bool,
        label: impl Fn(usize) -> String,
    ) -> PyResult<()> {
        let n = t.len();
        if n == 0 {
            self.out.op(EMPTY_TUPLE);
            return Ok(());
        }
        self.out.tuple_open(n);
        for i in 0..n {
            // SAFETY: `i < len`; a tuple's items can't change while we hold the tuple.
            let item = unsafe { t.get_borrowed_item_unchecked(i) };
            let item_unique = item.get_refcnt() == 1;
            if let Err(e) = self.save(&item, item_unique) {
                return Err(self.at(e, || label(i)));
            }
        }
        if !unique {
            if let Some(idx) = self.memo.get(t.as_any()) {
                if n > 3 {
                    self.out.op(POP_MARK);
                } else {
                    self.out.ops(&[POP, POP, POP][..n]);
                }
                self.out.get(idx);
                return Ok(());
            }
        }
        self.out.tuple_close(n);
        self.memoize_unless(t.as_any(), unique)
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
            self.out.op(EMPTY_TUPLE);
            return Ok(());
        }
        self.out.tuple_open(n);
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
        self.out.tuple_open(n);
        for i in 0..n {
            item(self, i)?;
        }
        self.close_fresh_tuple(n);
        Ok(())
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
        self.out.op(EMPTY_LIST);
        self.memoize_fresh();
        if n == 1 {
            item(self, 0)?;
            self.out.op(APPEND);
            return Ok(());
        }
        let mut i = 0;
        while i < n {
            if LONE_LAST_ITEM && i > 0 && n - i == 1 {
                item(self, i)?;
                self.out.op(APPEND);
                break;
            }
            self.out.op(MARK);
            let end = (i + BATCHSIZE).min(n);
            while i < end {
                item(self, i)?;
                i += 1;
            }
            self.out.op(APPENDS);
        }
        Ok(())
    }

    /// A dict built for the stream alone from `items`, written as `save_dict` writes it.
    /// `copied_keys`: the keys stand for copies (`"".join(k)`) that share no memo entry.
    pub fn dict_of(
        &mut self,
        items: &[(Bound<'py, PyAny>, Bound<'py, PyAny>)],
        copied_keys: bool,
        label: impl Fn(&str) -> String,
    ) -> PyResult<()> {
        self.out.op(EMPTY_DICT);
        self.memoize_fresh();
        if let [(k, v)] = items {
            self.dict_item(k, v, copied_keys, &label)?;
            self.out.op(SETITEM);
            return Ok(());
        }
        for batch in items.chunks(BATCHSIZE) {
            if let (true, [(k, v)]) = (LONE_LAST_ITEM, batch) {
                self.dict_item(k, v, copied_keys, &label)?;
                self.out.op(SETITEM);
                break;
            }
            self.out.op(MARK);
            for (k, v) in batch {
                self.dict_item(k, v, copied_keys, &label)?;
            }
            self.out.op(SETITEMS);
        }
        // As in `save_dict`: a full last batch is followed by an empty one (before 3.15).
        if EMPTY_LAST_BATCH && !items.is_empty() && items.len() % BATCHSIZE == 0 {
            self.out.ops(&[MARK, SETITEMS]);
        }
        Ok(())
    }

    fn dict_item(
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
    fn save_list(&mut self, list: &Bound<'py, PyList>) -> PyResult<()> {
        self.out.op(EMPTY_LIST);
        self.memoize(list.as_any());
        let py = self.py;
        if list.len() == 1 {
            let (item, item_unique) = list_item(py, list, 0);
            self.save(&item, item_unique)
                .map_err(|e| self.at(e, || "list[0]".to_owned()))?;
            self.out.op(APPEND);
            return Ok(());
        }
        let mut i = 0;
        // The length is re-read on every step: saving an item may run code that changes it.
        while i < list.len() {
            if LONE_LAST_ITEM && i > 0 && list.len() - i == 1 {
                let (item, item_unique) = list_item(py, list, i);
                self.save(&item, item_unique)
                    .map_err(|e| self.at(e, || format!("list[{i}]")))?;
                self.out.op(APPEND);
                break;
            }
            self.out.op(MARK);
            let end = i + BATCHSIZE;
            while i < end && i < list.len() {
                // SAFETY: `i < len`; the borrowed item is only read, with no code run meanwhile.
                if self.save_scalar(unsafe { ffi::PyList_GET_ITEM(list.as_ptr(), i as _) }) {
                    i += 1;
                    continue;
                }
                let (item, item_unique) = list_item(py, list, i);
                if let Err(e) = self.save(&item, item_unique) {
                    return Err(self.at(e, || format!("list[{i}]")));
                }
                i += 1;
            }
            self.out.op(APPENDS);
        }
        Ok(())
    }

    /// `save_dict` + `batch_dict_exact`: `EMPTY_DICT`, then `SETITEM` or batched `SETITEMS`.
    fn save_dict(&mut self, dict: &Bound<'py, PyDict>) -> PyResult<()> {
        self.out.op(EMPTY_DICT);
        self.memoize(dict.as_any());
        let size = dict.len();
        if size == 0 {
            return Ok(());
        }
        let mut pos: ffi::Py_ssize_t = 0;
        let mut in_batch = 0;
        let mut written = 0;
        let batched = size > 1;
        loop {
            let mut k: *mut ffi::PyObject = std::ptr::null_mut();
            let mut v: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: `PyDict_Next` hands out borrowed references; we read their reference
            // counts and then own a reference to each before anything can run Python code.
            let (key, key_unique, value, value_unique) = unsafe {
                if ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut k, &mut v) == 0 {
                    break;
                }
                // Counted before we take our references.
                let key_unique = ffi::Py_REFCNT(k) == 1;
                let value_unique = ffi::Py_REFCNT(v) == 1;
                (
                    Bound::from_borrowed_ptr(self.py, k),
                    key_unique,
                    Bound::from_borrowed_ptr(self.py, v),
                    value_unique,
                )
            };
            // The last item after full batches goes alone (3.15+).
            let lone = !batched || (LONE_LAST_ITEM && in_batch == 0 && written + 1 == size);
            if !lone && in_batch == 0 {
                self.out.op(MARK);
            }
            if let Err(e) = self.save(&key, key_unique) {
                return Err(self.at(e, || "dict key".to_owned()));
            }
            if let Err(e) = self.save(&value, value_unique) {
                return Err(self.at(e, || format!("dict[{}]", short_repr(&key))));
            }
            if dict.len() != size {
                return Err(PyRuntimeError::new_err(
                    "dictionary changed size during iteration",
                ));
            }
            if lone {
                self.out.op(SETITEM);
                return Ok(());
            }
            written += 1;
            in_batch += 1;
            if in_batch == BATCHSIZE {
                self.out.op(SETITEMS);
                in_batch = 0;
            }
        }
        // Before 3.15, `batch_dict_exact` loops while a batch came out full: a size that is a
        // multiple of the batch size ends with an empty `MARK SETITEMS`.
        if in_batch > 0 || (EMPTY_LAST_BATCH && size % BATCHSIZE == 0) {
            if in_batch == 0 {
                self.out.op(MARK);
            }
            self.out.op(SETITEMS);
        }
        Ok(())
    }

    /// `save_set`: `EMPTY_SET`, then batched `ADDITEMS`.
    fn save_set(&mut self, set: &Bound<'py, PySet>) -> PyResult<()> {
        self.out.op(EMPTY_SET);
        self.memoize(set.as_any());
        let mut in_batch = 0;
        let mut written = 0;
        // A plain iterator, so that a set changed while we write it raises `RuntimeError` as in
        // `pickle` (PyO3's set iterator treats that as a bug and panics).
        for item in set.as_any().try_iter()? {
            let item = item?;
            if in_batch == 0 {
                self.out.op(MARK);
            }
            // The iterator gave us our own reference: two in all means the set holds the other.
            let item_unique = item.get_refcnt() == 2;
            self.save(&item, item_unique)
                .map_err(|e| self.at(e, || "set item".to_owned()))?;
            in_batch += 1;
            written += 1;
            if in_batch == BATCHSIZE {
                self.out.op(ADDITEMS);
                in_batch = 0;
            }
        }
        // As in `batch_dict_exact`: a full last batch is followed by an empty one (before 3.15).
        if in_batch > 0 || (EMPTY_LAST_BATCH && written > 0 && written % BATCHSIZE == 0) {
            if in_batch == 0 {
                self.out.op(MARK);
            }
            self.out.op(ADDITEMS);
        }
        Ok(())
    }

    /// `save_frozenset`: `MARK ... FROZENSET`, with the same recursion check as tuples.
    fn save_frozenset(&mut self, set: &Bound<'py, PyFrozenSet>, unique: bool) -> PyResult<()> {
        self.out.op(MARK);
        for item in set.as_any().try_iter()? {
            let item = item?;
            let item_unique = item.get_refcnt() == 2;
            self.save(&item, item_unique)
                .map_err(|e| self.at(e, || "frozenset item".to_owned()))?;
        }
        if !unique {
            if let Some(idx) = self.memo.get(set.as_any()) {
                self.out.op(POP_MARK);
                self.out.get(idx);
                return Ok(());
            }
        }
        self.out.op(FROZENSET);
        self.memoize_unless(set.as_any(), unique)
    }

    /// Classes: the three singleton types as `type(None)` etc. (`save_singleton_type`), the rest
    /// by reference or, for dynamic classes, by value.
    fn save_type(&mut self, cls: &Bound<'py, PyType>) -> PyResult<()> {
        let py = self.py;
        for singleton in [py.None(), py.NotImplemented(), py.Ellipsis()] {
            let singleton = singleton.into_bound(py);
            if cls.is(singleton.get_type()) {
                let builtins_type = self.lookup.builtins_type.bind(py).clone();
                // `save_reduce(type, (singleton,))`: the argument tuple is memoized too.
                self.save(&builtins_type, false)?;
                self.save(&singleton, false)?;
                self.close_fresh_tuple(1);
                self.out.op(REDUCE);
                self.memoize(cls.as_any());
                return Ok(());
            }
        }
        // SAFETY: reading the type of a live object and the address of a static type object.
        let plain =
            unsafe { ffi::Py_TYPE(cls.as_ptr()) == std::ptr::addr_of_mut!(ffi::PyType_Type) };
        // A class with a metaclass: a copyreg (or cloudpickle) reducer registered for the
        // metaclass wins, as in `save()`, which consults the dispatch table first.
        if !plain && reduce::reducer_for(self, &cls.get_type())?.is_some() {
            return reduce::save_reduced(self, cls.as_any(), false);
        }
        self.save_global(cls.as_any(), None)
    }

    /// Functions, classes and builtins: `STACK_GLOBAL` (or `EXT*`) when importable by name,
    /// otherwise by value. `name` is a qualified name a `__reduce__` returned as a string.
    pub fn save_global(
        &mut self,
        obj: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyString>>,
    ) -> PyResult<()> {
        let kind = self.global_kind(obj, name)?;
        self.write_global(obj, kind)
    }

    /// The remembered by-reference/by-value decision for `obj`, or a fresh one.
    pub fn global_kind(
        &mut self,
        obj: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyString>>,
    ) -> PyResult<Kind> {
        if name.is_none() && globals::is_main_function(obj) {
            // The common by-value case, decided without the table: a `client.submit` loop
            // hands the scheduler a new copy of its function for every task.
            return Ok(Kind::ByValue);
        }
        if !self.registry_checked {
            globals::check_registry(self.py, self.lookup)?;
            self.registry_checked = true;
        }
        match globals::cached(self.py, obj) {
            Some(kind) => Ok(kind),
            None => globals::classify(self.py, self.lookup, obj, name),
        }
    }

    pub fn write_global(&mut self, obj: &Bound<'py, PyAny>, kind: Kind) -> PyResult<()> {
        match kind {
            Kind::ByRef { module, qualname } => {
                let module = module.into_bound(self.py);
                let qualname = qualname.into_bound(self.py);
                if let Some(code) = self.extension_code(&module, &qualname)? {
                    // `save_global` writes extension codes without memoizing them.
                    self.out.ext(code);
                    return Ok(());
                }
                self.write_stack_global(obj, &module, &qualname)
            }
            Kind::ByValue => by_value::save_by_value(self, obj),
        }
    }

    /// `module qualname STACK_GLOBAL MEMOIZE`, the names memoized as `save_global` does (a
    /// second global from the same module fetches its module name).
    pub fn write_stack_global(
        &mut self,
        obj: &Bound<'py, PyAny>,
        module: &Bound<'py, PyString>,
        qualname: &Bound<'py, PyString>,
    ) -> PyResult<()> {
        self.save(module.as_any(), false)?;
        self.save(qualname.as_any(), false)?;
        self.out.op(STACK_GLOBAL);
        self.memoize(obj);
        Ok(())
    }

    /// The `copyreg.add_extension` code for a global, if one is registered (almost never).
    fn extension_code(
        &self,
        module: &Bound<'py, PyString>,
        qualname: &Bound<'py, PyString>,
    ) -> PyResult<Option<u32>> {
        let registry = self.lookup.extension_registry.bind(self.py);
        if registry.is_empty() {
            return Ok(None);
        }
        match registry.get_item((module, qualname))? {
            Some(code) => Ok(Some(code.extract()?)),
            None => Ok(None),
        }
    }

    /// Records where an error happened on its way out (`seg` names the failing child's place
    /// in its container); built only on the error path.
    #[cold]
    #[inline(never)]
    pub fn at(&mut self, e: PyErr, seg: impl FnOnce() -> String) -> PyErr {
        self.err_path.push(seg());
        e
    }

    /// Lets an error that escaped the walk keep its type and message (the exception `pickle`
    /// would raise), adding where it happened as a note, e.g.
    /// `when pickling Task.args[0] -> dict['conn'] -> socket`. A `RecursionError` becomes a
    /// `PicklingRecursionError` (see `errors.rs`), the original attached as `__cause__`.
    /// Non-`Exception` errors (KeyboardInterrupt) pass through unchanged.
    #[cold]
    #[inline(never)]
    fn explain(&mut self, root: &Bound<'py, PyAny>, e: PyErr) -> PyErr {
        let py = self.py;
        if !e.is_instance_of::<PyException>(py) {
            return e;
        }
        let recursion_type = errors::recursion_error_type(py).ok();
        let e = match recursion_type {
            Some(t) if e.is_instance_of::<PyRecursionError>(py) && !e.get_type(py).is(t) => {
                errors::recursion_error(py, Some(e))
            }
            _ => e,
        };
        let leaf = self.err_leaf.take().unwrap_or_else(|| describe(root));
        let mut segs: Vec<&str> = self.err_path.iter().rev().map(String::as_str).collect();
        segs.push(&leaf);
        errors::add_note(py, &e, &format!("when pickling {}", segs.join(" -> ")));
        e
    }
}

/// An item of a list with a reference of our own (saving it may run code that mutates the list)
/// and whether the list held the only other reference.
#[inline]
fn list_item<'py>(
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

/// How an object is named in error messages: `socket`, `function process`, `class Foo`.
#[cold]
pub fn describe(obj: &Bound<'_, PyAny>) -> String {
    let qualname = |o: &Bound<'_, PyAny>| -> String {
        o.getattr(pyo3::intern!(o.py(), "__qualname__"))
            .map(|q| q.to_string())
            .unwrap_or_else(|_| "?".to_owned())
    };
    if obj.is_instance_of::<PyType>() {
        format!("class {}", qualname(obj))
    // SAFETY: type check on a live object.
    } else if unsafe { ffi::PyFunction_Check(obj.as_ptr()) } != 0 {
        format!("function {}", qualname(obj))
    } else {
        qualname(obj.get_type().as_any())
    }
}

/// A dict key as shown in error paths, cut short so one huge key can't flood the message.
#[cold]
pub fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("<{}>", describe(obj)));
    if r.chars().count() > 60 {
        format!("{}...", r.chars().take(57).collect::<String>())
    } else {
        r
    }
}
