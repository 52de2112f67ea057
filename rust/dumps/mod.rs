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

mod cloudpickle_check;
mod global_kind;
mod lookup;
mod memo;
mod types;

use pyo3::exceptions::{PyException, PyRecursionError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};

use crate::errors;
use crate::layouts;
use crate::layouts::dask::DaskLayout;
use crate::layouts::partial::PartialLayout;
use crate::layouts::path::PathLayout;
use crate::opcodes::*;
use crate::stats;
use crate::writer::Writer;
use lookup::Lookup;
use memo::Memo;
use types::{by_value, code, partial, path, reduce, task_node as dask};

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

/// The Python module that writes protocols 0-3 (with cloudpickle's pickler).
const PROTOCOLS_0_TO_3_MODULE: &str = "ferropickle._protocols_0_to_3";

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
        static PROTOCOLS_0_TO_3_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let dumps = PROTOCOLS_0_TO_3_DUMPS.import(py, PROTOCOLS_0_TO_3_MODULE, "dumps")?;
        return match dumps.call1((obj, proto)) {
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

/// What the pickler remembers between calls (`ferropickle.cache_info()`).
pub struct CacheInfo {
    /// By-reference/by-value decisions about functions, classes and builtins.
    pub globals: usize,
    /// Code objects whose global names (and submodules reached) are known.
    pub code_objects: usize,
}

pub fn cache_info(py: Python<'_>) -> CacheInfo {
    CacheInfo {
        globals: global_kind::len(),
        code_objects: code::len(py),
    }
}

/// Forgets the by-reference/by-value decisions and what is known about code objects
/// (`ferropickle.cache_clear()`).
pub fn cache_clear(py: Python<'_>) {
    global_kind::clear();
    code::clear(py);
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
