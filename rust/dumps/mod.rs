//! The dumps side: `dumps()` sets up a [`Pickler`] for one call, which walks the object graph as
//! `save()` in `_pickle.c` does and writes through `crate::writer::Writer` (opcodes, frames).
//!
//! One object's path: `Pickler::save` classifies its type once (`obtype.rs`: type pointers
//! compared in order of frequency, the field layouts of paths, partials and task nodes looked up
//! once per call) and `Pickler::save_as` picks its writer in one `match`. None, bools, ints,
//! floats and str are written at once; everything else passes `Pickler::nested` first (the memo:
//! an object met again is a memo fetch; the interpreter's recursion counter; a native-stack red
//! zone) and then goes to its writer in `types/`: `atoms.rs`; `containers.rs`, whose items go
//! in `_pickle.c`'s batches (`batch.rs`); `global.rs` for functions and classes, by reference or,
//! as `global_kind.rs` decides and remembers, by value (`by_value.rs`); `path.rs`, `partial.rs`
//! and `task_node.rs`, written from their fields through `crate::layouts`; `code.rs` for code
//! objects, cells and modules as cloudpickle writes them; `buffer.rs` for PEP 574 buffers; and
//! `reduce.rs` for the rest (`__reduce_ex__` and the dispatch tables). A writer hands each child
//! back to `save`. On an error each level notes the child's place (`Pickler::at`) and
//! `Pickler::explain` adds the path as the exception's note.
//!
//! Around the walk: `lookup.rs` holds the Python objects every writer consults, `memo.rs` the
//! memo table, `cloudpickle_check.rs` whether our by-value writer matches the installed
//! cloudpickle, `code_cache.rs` the encoded arguments of code objects met before, copied into
//! later streams.
//!
//! Memo policy: exactly `pickle`'s. Every str, bytes, tuple, frozenset and container that
//! `pickle` memoizes gets a memo entry, whatever its reference count: an object held by one
//! reference when we reach it can still be reached again later in the same `dumps`, by Python
//! code that looks it up through its holder (a `__reduce__` returning `(tuple, (table[key],))`,
//! a by-value function's globals read by name), and `pickle` then fetches it from the memo. So
//! the memo entries, and with them the bytes and the identities after loading, can't depend on
//! how many references happen to exist. The reference count is used for speed only: an
//! object held by one reference (the edge we came through, "unique" below) can't be in the
//! memo yet, since the memo holds a reference to each of its entries, so its lookup on the way
//! in is skipped (and entries are hashed only when a lookup comes: see `memo.rs`). A tuple
//! or frozenset is looked up again after its items, as `save_tuple` does: writing them may
//! have reached it (a cycle, or Python code), and then its copy is thrown away with `POP` and
//! the memoized one fetched. Mutable objects and reduced objects are memoized before their
//! contents, exactly as `pickle` does: every reference cycle passes through one of them, so
//! that is what stops a walk around a cycle.

mod batch;
mod cloudpickle_check;
mod code_cache;
mod global_kind;
mod lookup;
mod memo;
mod obtype;
mod types;
mod watch;

use pyo3::exceptions::{PyException, PyRecursionError, PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};

use crate::errors;
use crate::layouts;
use crate::opcodes::*;
use crate::stats;
use crate::writer::Writer;
use lookup::Lookup;
use memo::MemoTable;
use obtype::{Layouts, ObType};
use types::{buffer, by_value, code, partial, path, reduce, task_node};

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

/// `ferropickle.dumps`, counted in `ferropickle.stats()`.
pub fn dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<i64>,
    buffer_callback: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    dumps_counted(py, obj, protocol, buffer_callback, true)
}

/// The same stream, left out of `ferropickle.stats()`: for pickles ferropickle makes for its
/// own purposes (the first-use check of the by-value writer), which no caller asked for.
pub fn dumps_uncounted<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<i64>,
) -> PyResult<Bound<'py, PyBytes>> {
    dumps_counted(py, obj, protocol, None, false)
}

fn dumps_counted<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<i64>,
    buffer_callback: Option<Bound<'py, PyAny>>,
    counted: bool,
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
    let layouts = Layouts {
        path: layouts::path::get(py)?,
        partial: layouts::partial::get(py)?,
        task_nodes: layouts::task_node::get(py),
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
    let mut p = Pickler::new(py, lookup, layouts, proto, buffer_callback, buf, memo);
    let mut result = p.save(obj, false);
    if p.restart {
        // The stream turned out to be cloudpickle's after something was written in `pickle`'s
        // form (see `Pickler::enter_cloudpickle_stream`): written again, cloudpickle's from the
        // start. At most once: the second walk starts as cloudpickle's.
        p.start_over();
        result = p.save(obj, false);
    }
    let result = result.map_err(|e| p.explain(obj, e));
    let Pickler {
        out,
        mut memo,
        counts,
        ..
    } = p;
    let out = out.finish();
    let result = result.map(|()| PyBytes::new(py, &out));
    if counted {
        stats::record_dumps(timer, &counts, result.as_ref().ok().map(|_| out.len()));
    }
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
    /// Times `sys.modules` was scanned for a module's imported submodules.
    pub submodule_scans: u64,
    /// Code objects whose encoded arguments are kept for copying into later streams.
    pub code_segments: usize,
}

pub fn cache_info(py: Python<'_>) -> CacheInfo {
    CacheInfo {
        globals: global_kind::len(),
        code_objects: code::len(py),
        submodule_scans: code::submodule_scans(),
        code_segments: code_cache::len(),
    }
}

/// Forgets the by-reference/by-value decisions and what is known about code objects, their
/// encoded arguments included (`ferropickle.cache_clear()`).
pub fn cache_clear(py: Python<'_>) {
    global_kind::clear();
    code::clear(py);
    code_cache::clear();
}

/// A thread's output buffer and memo tables, reused between calls: most messages are small and
/// similar, and allocating and growing them each time costs more than writing a small task.
/// A nested `dumps` (called from a `__reduce__`) finds the slot empty and allocates its own.
const SCRATCH_MAX_BYTES: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::Cell<(Vec<u8>, MemoTable)> =
        std::cell::Cell::new(Default::default());
}

pub struct Pickler<'py> {
    pub py: Python<'py>,
    pub lookup: &'py Lookup,
    pub out: Writer,
    pub memo: MemoTable,
    pub proto: u8,
    pub buffer_callback: Option<Bound<'py, PyAny>>,
    layouts: Layouts,
    pub counts: stats::CallCounts,
    /// Per-call state of the by-value writer (cloudpickle's `globals_ref`).
    pub by_value: by_value::State,
    registry_checked: bool,
    /// Whether the stream is cloudpickle's: something only cloudpickle writes was met (see
    /// [`Pickler::enter_cloudpickle_stream`]), or the walk started over as cloudpickle's.
    pub cloudpickle_stream: bool,
    /// Whether something was written in a form only `pickle` writes, which a cloudpickle
    /// stream can't hold: a class of cloudpickle's builtin-type table by name (see
    /// [`Pickler::save_type`]), or a private function or class by its mangled name (3.15).
    pub pickle_only_form: bool,
    /// Set when the stream became cloudpickle's after `pickle_only_form`: `dumps` writes it
    /// again from the start.
    restart: bool,
    /// The buffer callback's answers (in band or not), one per PEP 574 buffer in the order
    /// met, and how many buffers this walk met: a walk that starts over reuses the answers
    /// instead of handing the callback the same buffers again (see `buffer::save_picklebuffer`).
    pub buffer_answers: Vec<bool>,
    pub buffers_met: usize,
    /// How many `nested` levels are open (see there), from 3.12 on.
    #[cfg(Py_3_12)]
    depth: i32,
    /// Where the failing object sits, innermost first; filled only while an error unwinds.
    err_path: Vec<String>,
    err_leaf: Option<String>,
}

impl<'py> Pickler<'py> {
    fn new(
        py: Python<'py>,
        lookup: &'py Lookup,
        layouts: Layouts,
        proto: u8,
        buffer_callback: Option<Bound<'py, PyAny>>,
        buf: Vec<u8>,
        memo: MemoTable,
    ) -> Self {
        Pickler {
            py,
            lookup,
            out: Writer::with_buffer(proto, buf),
            memo,
            proto,
            buffer_callback,
            layouts,
            counts: stats::CallCounts::default(),
            by_value: by_value::State::default(),
            registry_checked: false,
            cloudpickle_stream: false,
            pickle_only_form: false,
            restart: false,
            buffer_answers: Vec::new(),
            buffers_met: 0,
            #[cfg(Py_3_12)]
            depth: 0,
            err_path: Vec::new(),
            err_leaf: None,
        }
    }

    /// Writes `obj`. `unique` says the caller saw it with a reference count of one (see the
    /// module docs): it can't be in the memo yet, so it is not looked up there.
    ///
    /// None, bools, floats and 64-bit ints are written here, inline in every caller (as a
    /// container's items are: see [`Self::save_scalar`]); everything else in [`Self::save_as`].
    #[inline]
    pub fn save(&mut self, obj: &Bound<'py, PyAny>, unique: bool) -> PyResult<()> {
        let ptr = obj.as_ptr();
        let ty = self.classify(ptr);
        if self.save_scalar(ptr, ty) {
            return Ok(());
        }
        self.save_as(obj, ty, unique)
    }

    /// The type of the live object at `ptr`, as the walker dispatches on it.
    #[inline(always)]
    fn classify(&self, ptr: *mut ffi::PyObject) -> ObType {
        // SAFETY: callers pass a live object (held, or borrowed from a container they hold).
        unsafe { ObType::of(ptr, &self.layouts, self.lookup) }
    }

    /// `save()` in `_pickle.c` for an object classified as `ty`: the one place that picks a
    /// writer. Atoms are written at once; everything else goes through [`Self::nested`] (the
    /// recursion count and the memo) to its writer in `types/`. A type written from its fields
    /// whose fields can't be read (its writer says `false`) is reduced like any other object.
    #[inline]
    pub fn save_as(&mut self, obj: &Bound<'py, PyAny>, ty: ObType, unique: bool) -> PyResult<()> {
        self.counts.objects += 1;
        // `save()` starts a new frame here once the open one is big enough.
        self.out.boundary();
        // SAFETY: the only unsafe operations below are the `cast_unchecked`s, each to the exact
        // type that its arm's `ObType` names.
        unsafe {
            match ty {
                ObType::Int | ObType::None | ObType::Float | ObType::Bool => {
                    if self.write_scalar(obj.as_ptr(), ty) {
                        return Ok(());
                    }
                    self.save_big_int(obj)
                }
                ObType::Str => self.save_str(obj, unique),
                ObType::Tuple => self.nested(obj, unique, |p| {
                    let t = obj.cast_unchecked();
                    p.save_tuple_body(t, |i| format!("tuple[{i}]"))
                }),
                ObType::List => self.nested(obj, unique, |p| p.save_list(obj.cast_unchecked())),
                ObType::Dict => self.nested(obj, unique, |p| p.save_dict(obj.cast_unchecked())),
                ObType::Bytes => self.nested(obj, unique, |p| p.save_bytes(obj.cast_unchecked())),
                ObType::Set => self.nested(obj, unique, |p| p.save_set(obj.cast_unchecked())),
                ObType::FrozenSet => {
                    self.nested(obj, unique, |p| p.save_frozenset(obj.cast_unchecked()))
                }
                ObType::ByteArray => self.nested(obj, unique, |p| p.save_bytearray(obj)),
                ObType::Type => self.nested(obj, unique, |p| p.save_type(obj.cast_unchecked())),
                ObType::Function => self.nested(obj, unique, |p| p.save_global(obj, None)),
                ObType::Partial(layout) => self.nested(obj, unique, |p| {
                    let written = partial::save_partial(p, layout, obj)?;
                    p.or_reduce(written, obj)
                }),
                ObType::Path(layout) => self.nested(obj, unique, |p| {
                    let written = path::save_path(p, layout, obj)?;
                    p.or_reduce(written, obj)
                }),
                ObType::TaskNode(node) => self.nested(obj, unique, |p| {
                    let written = task_node::save_task_node(p, node, obj)?;
                    p.or_reduce(written, obj)
                }),
                ObType::Code => self.nested(obj, unique, |p| {
                    p.enter_cloudpickle_stream()?;
                    code::save_code(p, obj)
                }),
                ObType::Cell => self.nested(obj, unique, |p| {
                    p.enter_cloudpickle_stream()?;
                    code::save_cell(p, obj)
                }),
                ObType::Module => self.nested(obj, unique, |p| {
                    p.enter_cloudpickle_stream()?;
                    let written = code::save_module(p, obj)?;
                    p.or_reduce(written, obj)
                }),
                ObType::PickleBuffer => {
                    self.nested(obj, unique, |p| buffer::save_picklebuffer(p, obj))
                }
                ObType::Other => self.nested(obj, unique, |p| reduce::reduce_and_save(p, obj)),
            }
        }
    }

    /// Called where the first object only cloudpickle writes is written (a function or class by
    /// value, a code object, cell or module): from here on the stream is cloudpickle's. When
    /// something was already written in a form only `pickle` writes, the walk stops
    /// (an error that `dumps` does not report: it sees `restart` and starts over).
    #[inline]
    pub fn enter_cloudpickle_stream(&mut self) -> PyResult<()> {
        if self.cloudpickle_stream {
            return Ok(());
        }
        self.cloudpickle_stream = true;
        if self.pickle_only_form {
            self.restart = true;
            return Err(PyRuntimeError::new_err(
                "the stream became cloudpickle's: written again from the start",
            ));
        }
        Ok(())
    }

    /// Forgets everything the stopped walk wrote or remembered for the stream (the output, the
    /// memo, the by-value writer's per-call state, the error path) and starts the next walk as
    /// cloudpickle's. What it learned about the buffer callback stays: the next walk meets the
    /// same buffers first, in the same order, and reuses the answers.
    #[cold]
    fn start_over(&mut self) {
        let old = std::mem::replace(&mut self.out, Writer::with_buffer(self.proto, Vec::new()));
        self.out = Writer::with_buffer(self.proto, old.finish());
        self.memo.clear();
        self.by_value = by_value::State::default();
        self.counts = stats::CallCounts::default();
        self.err_path.clear();
        self.err_leaf = None;
        self.restart = false;
        self.cloudpickle_stream = true;
        self.buffers_met = 0;
    }

    /// After a writer from fields: an object whose fields it could not read (`written` is
    /// `false`, nothing was written) is reduced like any other.
    fn or_reduce(&mut self, written: bool, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        if written {
            return Ok(());
        }
        reduce::reduce_and_save(self, obj)
    }

    /// A container's item straight from a borrowed pointer when it is None, a bool, a float or
    /// a 64-bit int: writing those runs no Python code, so the item needs no reference of our
    /// own. `false` (nothing written) for anything else.
    #[inline(always)]
    pub fn save_scalar(&mut self, ptr: *mut ffi::PyObject, ty: ObType) -> bool {
        if !ty.is_scalar() {
            return false;
        }
        // Every object `save()`s: the frame check comes first, as there.
        self.out.boundary();
        if !self.write_scalar(ptr, ty) {
            return false;
        }
        self.counts.objects += 1;
        true
    }

    /// Everything but atoms: looked up in the memo first, and counted in the interpreter's own
    /// recursion counter, as `save()` in `_pickle.c` does (so Python code called from deep
    /// inside gets only what is left of the limit); keeps a native-stack red zone, and notes
    /// the failing object.
    #[inline(never)]
    fn nested(
        &mut self,
        obj: &Bound<'py, PyAny>,
        unique: bool,
        write: impl FnOnce(&mut Self) -> PyResult<()>,
    ) -> PyResult<()> {
        // CPython 3.14 checks the C stack by the stack pointer against the thread's own stack,
        // which a segment of ours is not: there the walk stops at the red zone instead.
        #[cfg(Py_3_14)]
        if stacker::remaining_stack().is_some_and(|left| left < STACK_RED_ZONE) {
            return Err(errors::recursion_error(self.py, None));
        }
        // Up to 3.11 `Py_EnterRecursiveCall` counts in the counter `sys.getrecursionlimit()`
        // bounds (Python frames and these levels together); from 3.12 it counts against the
        // interpreter's fixed C-recursion limit instead, so the levels are also counted here and
        // bounded by `sys.getrecursionlimit()`: nesting past it raises on every version.
        #[cfg(Py_3_12)]
        {
            // SAFETY: reads the interpreter's limit; we hold the GIL.
            if self.depth >= unsafe { ffi::Py_GetRecursionLimit() } {
                return Err(PyRecursionError::new_err(
                    "maximum recursion depth exceeded while pickling an object",
                ));
            }
        }
        // SAFETY: we hold the GIL; every successful enter is matched by the leave below.
        if unsafe { ffi::Py_EnterRecursiveCall(c" while pickling an object".as_ptr()) } != 0 {
            return Err(PyErr::fetch(self.py));
        }
        #[cfg(Py_3_12)]
        {
            self.depth += 1;
        }
        let memo_or_write = |p: &mut Self| {
            if !unique {
                if let Some(idx) = p.memo.get(obj) {
                    p.out.get(idx);
                    return Ok(());
                }
            }
            write(p)
        };
        #[cfg(not(Py_3_14))]
        let result = stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || memo_or_write(self));
        #[cfg(Py_3_14)]
        let result = memo_or_write(self);
        // SAFETY: matches the enter above.
        unsafe { ffi::Py_LeaveRecursiveCall() };
        #[cfg(Py_3_12)]
        {
            self.depth -= 1;
        }
        if result.is_err() && self.err_leaf.is_none() {
            self.err_leaf = Some(describe(obj));
        }
        result
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

/// `obj`'s reference count, which a writer compares with the references it knows of to tell
/// whether anything else holds the object (see the memo rule in the module docs).
#[inline(always)]
pub fn ref_count<T>(obj: &Bound<'_, T>) -> isize {
    // SAFETY: `obj` is a live object (we hold a reference to it); this only reads its count.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
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
