//! Code objects, cells and modules as cloudpickle writes them, and what a by-value function's
//! reduction needs to know about its code.
//!
//! - A code object is `_builtin_type("CodeType")(*args)`, with `args` exactly as cloudpickle's
//!   `_code_reduce` builds them for this Python (3.10: 16 fields, 3.11+: 18 with `co_qualname`
//!   and `co_exceptiontable`), including its deterministic `co_filename` and its fresh copies
//!   of the name tuples. Whether that matches the installed cloudpickle is checked once
//!   (`cloudpickle_check.rs`); if not, code objects go through its `_code_reduce`.
//! - A cell is `_make_cell(contents)` or `_make_empty_cell()` (`_cell_reduce`).
//! - A module importable by name is `subimport(name)` (`_module_reduce`); anything else goes to
//!   cloudpickle's `_module_reduce` (modules registered by value become `dynamic_subimport`).
//!
//! The one cache here, [`CodeInfo`], holds only what a code object's *content* determines: the
//! global names it uses (`_extract_code_globals`, which cloudpickle caches the same way, keyed
//! by code equality) and, per module and per state of `sys.modules`, which submodules those names
//! reach (`_find_imported_submodules`). A code object is immutable, so the first can never go
//! stale; the second is re-computed whenever `sys.modules` has changed at all or was rebound
//! (`watch.rs`: its dict version tag, or a dict watcher, moves on every insertion, deletion and
//! replacement). Once `code_cache.rs` keeps a code object's encoded arguments, its `CodeInfo` is
//! kept there too and found by identity, without hashing the code object.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyKeyError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::reduce;
use crate::dumps::cloudpickle_check;
use crate::dumps::code_cache;
use crate::dumps::global_kind;
use crate::dumps::lookup::Lookup;
use crate::dumps::watch;
use crate::dumps::Pickler;
use crate::opcodes::REDUCE;

extern "C" {
    // Part of the stable C API (`Include/cellobject.h`), not bound by `pyo3-ffi`.
    fn PyCell_Get(cell: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// A cell's contents, `None` (Rust) when it is empty.
pub fn cell_contents<'py>(cell: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `cell` is a live cell object; `PyCell_Get` returns a new reference or NULL (an
    // empty cell), without setting an exception for a cell.
    unsafe { Bound::from_owned_ptr_or_opt(cell.py(), PyCell_Get(cell.as_ptr())) }
}

/// `_cell_reduce`: `_make_cell(contents)` or `_make_empty_cell()`, then memoized.
pub fn save_cell<'py>(p: &mut Pickler<'py>, cell: &Bound<'py, PyAny>) -> PyResult<()> {
    let py = p.py;
    match cell_contents(cell) {
        Some(contents) => {
            p.save(p.lookup.cp.make_cell.bind(py), false)?;
            p.save(&contents, false)
                .map_err(|e| p.at(e, || "cell_contents".to_owned()))?;
            p.close_fresh_tuple(1);
            p.out.op(REDUCE);
        }
        None => {
            p.save(p.lookup.cp.make_empty_cell.bind(py), false)?;
            p.save_empty_tuple();
            p.out.op(REDUCE);
        }
    }
    p.memoize_reduced(cell);
    Ok(())
}

/// `_module_reduce`: `subimport(name)` when the module is importable by name where it is
/// loaded (not registered by value, and in `sys.modules` under its name), otherwise
/// cloudpickle's own reduction. `false` when the caller should reduce it through cloudpickle.
pub fn save_module<'py>(p: &mut Pickler<'py>, module: &Bound<'py, PyAny>) -> PyResult<bool> {
    let py = p.py;
    // `obj.__name__`, as `_module_reduce` reads it (a module may rename itself).
    let Some(name) = module.getattr_opt(pyo3::intern!(py, "__name__"))? else {
        return Ok(false);
    };
    let Ok(name) = name.cast_into::<PyString>() else {
        return Ok(false);
    };
    if global_kind::registered_by_value(py, p.lookup, name.to_str()?)? {
        return Ok(false);
    }
    // `_module_reduce` asks `name in sys.modules`, the attribute a program may rebind.
    if !watch::sys_modules(py)?.contains(&name)? {
        return Ok(false);
    }
    p.save(p.lookup.cp.subimport.bind(py), false)?;
    p.save(name.as_any(), false)?;
    p.close_fresh_tuple(1);
    p.out.op(REDUCE);
    p.memoize_reduced(module);
    Ok(true)
}

/// `types.CodeType` as cloudpickle writes that class: `_builtin_type("CodeType")`, memoized.
fn save_code_type(p: &mut Pickler<'_>) -> PyResult<()> {
    let py = p.py;
    let cp = &p.lookup.cp;
    let code_type = cp.code_type.bind(py).clone().into_any();
    // `save()` of the class: the frame check comes before the memo fetch.
    p.out.boundary();
    if let Some(idx) = p.memo.get(&code_type) {
        p.out.get(idx);
        return Ok(());
    }
    p.save(cp.builtin_type.bind(py), false)?;
    p.save(cp.str_code_type.bind(py).as_any(), false)?;
    p.close_fresh_tuple(1);
    p.out.op(REDUCE);
    p.memoize(&code_type);
    Ok(())
}

/// Writes a code object as cloudpickle's `_code_reduce` describes it: `types.CodeType(*args)`
/// with this Python's constructor fields, in their order.
pub fn save_code<'py>(p: &mut Pickler<'py>, code: &Bound<'py, PyAny>) -> PyResult<()> {
    let py = p.py;
    if !cloudpickle_check::passed(py, p.lookup) {
        let reducer = p
            .lookup
            .cloudpickle_dispatch
            .bind(py)
            .get_item(p.lookup.cp.code_type.bind(py))?
            .ok_or_else(|| PyKeyError::new_err("cloudpickle has no CodeType reducer"))?;
        let rv = reducer.call1((code,))?.cast_into::<PyTuple>()?;
        return reduce::save_reduce(p, code, &rv);
    }
    save_code_type(p)?;
    // The arguments, copied from what an earlier call wrote for this code object when they
    // come out the same here (see `code_cache.rs`), or written field by field.
    if !code_cache::write_args(p, code)? {
        save_code_args(p, code)?;
    }
    p.out.op(REDUCE);
    p.memoize_reduced(code);
    Ok(())
}

/// The argument tuple of `types.CodeType(*args)`: this Python's constructor fields, in their
/// order, each as `_code_reduce` gives it.
pub fn save_code_args<'py>(p: &mut Pickler<'py>, code: &Bound<'py, PyAny>) -> PyResult<()> {
    let py = p.py;
    let fields = code_fields(py, p.lookup);
    p.open_fresh_tuple(fields.len());
    for (name, treat) in fields {
        let attr = name.bind(py);
        let result = match treat {
            Treat::Plain => p.save(&code.getattr(attr)?, false),
            Treat::CopyTuple => {
                // A new tuple of the same names: memoized with no entry.
                let t = code.getattr(attr)?.cast_into::<PyTuple>()?;
                p.tuple_of(t.len(), |p, i| {
                    p.save(&t.get_item(i)?, false)
                        .map_err(|e| p.at(e, || format!("code.{attr}[{i}]")))
                })
            }
            Treat::CopyStr => save_joined(p, &code.getattr(attr)?),
            Treat::Filename if p.lookup.cp.dynamic_filename => {
                p.save_str_copy(p.lookup.cp.str_dynamic_code.bind(py).as_any())
            }
            Treat::Filename => p.save(&code.getattr(attr)?, false),
        };
        result.map_err(|e| p.at(e, || format!("code.{attr}")))?;
    }
    p.close_fresh_tuple(fields.len());
    Ok(())
}

/// The values of the constructor fields `_code_reduce` reads from `code` (for a field it copies,
/// the value it copies), in its order.
pub fn code_field_values<'py>(
    lookup: &Lookup,
    code: &Bound<'py, PyAny>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let py = code.py();
    code_fields(py, lookup)
        .iter()
        .map(|(name, _)| code.getattr(name.bind(py)))
        .collect()
}

/// The fields of `types.CodeType(...)`, in `_code_reduce`'s order; `true` marks the two that
/// exist from 3.11 on (`co_qualname`, `co_exceptiontable`).
const FIELDS: [(&str, bool); 18] = [
    ("co_argcount", false),
    ("co_posonlyargcount", false),
    ("co_kwonlyargcount", false),
    ("co_nlocals", false),
    ("co_stacksize", false),
    ("co_flags", false),
    ("co_code", false),
    ("co_consts", false),
    ("co_names", false),
    ("co_varnames", false),
    ("co_filename", false),
    ("co_name", false),
    ("co_qualname", true),
    ("co_firstlineno", false),
    ("co_linetable", false),
    ("co_exceptiontable", true),
    ("co_freevars", false),
    ("co_cellvars", false),
];

/// How `_code_reduce` treats a field beyond reading it.
#[derive(Clone, Copy)]
enum Treat {
    Plain,
    /// A tuple of names, which it copies (`tuple(name for name in ...)`) so that the copy
    /// shares no memo entry: written as a tuple nothing else refers to.
    CopyTuple,
    /// `co_name`, copied with `"".join`.
    CopyStr,
    /// `co_filename`: `"<dynamic-code>"` in cloudpickle 3.1.3+, the code's own before.
    Filename,
}

/// The constructor fields of this Python's code objects, with their names interned once.
fn code_fields<'a>(py: Python<'_>, lookup: &Lookup) -> &'a [(Py<PyString>, Treat)] {
    static TABLE: PyOnceLock<Vec<(Py<PyString>, Treat)>> = PyOnceLock::new();
    TABLE.get_or_init(py, || {
        let new_fields = lookup.cp.code_has_exceptiontable;
        FIELDS
            .iter()
            .filter(|(_, since_311)| new_fields || !since_311)
            .map(|(n, _)| (PyString::intern(py, n).unbind(), treat(n)))
            .collect()
    })
}

fn treat(name: &str) -> Treat {
    match name {
        "co_names" | "co_varnames" | "co_freevars" | "co_cellvars" => Treat::CopyTuple,
        "co_name" => Treat::CopyStr,
        "co_filename" => Treat::Filename,
        _ => Treat::Plain,
    }
}

/// Writes `"".join(s)`, the copy cloudpickle writes of a name so that interning can't change
/// which names share a memo entry: a string of two or more characters is a new object (written
/// with no memo entry); `str.join` gives a shorter one back as the single-character string its
/// iteration yields (the cached one for Latin-1 characters), which is what we then write.
pub fn save_joined<'py>(p: &mut Pickler<'py>, s: &Bound<'py, PyAny>) -> PyResult<()> {
    if joined_copy(s) {
        return p.save_str_copy(s);
    }
    let py = s.py();
    let joined = PyString::intern(py, "").call_method1(pyo3::intern!(py, "join"), (s,))?;
    p.save(&joined, false)
}

/// Whether `"".join(s)` is a new string nothing else refers to: `s` is a str of two or more
/// characters.
pub fn joined_copy(s: &Bound<'_, PyAny>) -> bool {
    // SAFETY: type check and length of a live object.
    unsafe {
        ffi::PyUnicode_CheckExact(s.as_ptr()) != 0 && ffi::PyUnicode_GetLength(s.as_ptr()) > 1
    }
}

/// What a function's reduction needs from its code object, shared by every code object equal
/// to it (code equality compares the bytecode, names and constants these derive from).
#[pyclass(frozen)]
pub struct CodeInfo {
    /// `_extract_code_globals(code)`, in its order.
    pub names: Py<PyTuple>,
    /// Per module name: `_find_imported_submodules(code, [module])`, valid while
    /// `sys.modules` is as it was at `modules_version`.
    submodules: Py<PyDict>,
    modules_version: AtomicU64,
}

/// Distinct code objects kept at most; past that the table starts again (a process has far
/// fewer distinct by-value functions).
const MAX_CODE_INFO: usize = 4096;

static CODE_INFO: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn table(py: Python<'_>) -> &Bound<'_, PyDict> {
    CODE_INFO
        .get_or_init(py, || PyDict::new(py).unbind())
        .bind(py)
}

/// The [`CodeInfo`] of `code`, computed through cloudpickle the first time such code is seen.
pub fn info<'py>(lookup: &Lookup, code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, CodeInfo>> {
    let py = code.py();
    if let Some(found) = code_cache::info_of(code) {
        return Ok(found.cast_into::<CodeInfo>()?);
    }
    let table = table(py);
    if let Some(found) = table.get_item(code)? {
        code_cache::keep_info(code, &found);
        return Ok(found.cast_into::<CodeInfo>()?);
    }
    let names = lookup.cp.extract_code_globals.bind(py).call1((code,))?;
    let names = PyTuple::new(py, names.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
    let info = Bound::new(
        py,
        CodeInfo {
            names: names.unbind(),
            submodules: PyDict::new(py).unbind(),
            modules_version: AtomicU64::new(modules_version(py).unwrap_or(0)),
        },
    )?;
    if table.len() >= MAX_CODE_INFO {
        table.clear();
    }
    table.set_item(code, &info)?;
    Ok(info)
}

/// Number of distinct code objects described.
pub fn len(py: Python<'_>) -> usize {
    table(py).len()
}

pub fn clear(py: Python<'_>) {
    table(py).clear();
}

impl CodeInfo {
    /// `_find_imported_submodules(code, [module])` for one module `dep`: the submodules of the
    /// package `dep` in `sys.modules` that `code` can reach by attribute names.
    pub fn submodules_of<'py>(
        &self,
        lookup: &Lookup,
        code: &Bound<'py, PyAny>,
        dep: &Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = code.py();
        let cached = self.submodules.bind(py);
        let now = modules_version(py);
        match now {
            Some(v) if v == self.modules_version.load(Ordering::Relaxed) => {
                if let Some(found) = cached.get_item(name)? {
                    return Ok(found.cast_into::<PyList>()?);
                }
            }
            Some(v) => {
                cached.clear();
                self.modules_version.store(v, Ordering::Relaxed);
            }
            None => {}
        }
        SUBMODULE_SCANS.fetch_add(1, Ordering::Relaxed);
        let found = lookup
            .cp
            .find_imported_submodules
            .bind(py)
            .call1((code, PyList::new(py, [dep])?))?
            .cast_into::<PyList>()?;
        if now.is_some() {
            cached.set_item(name, &found)?;
        }
        Ok(found)
    }
}

/// Times `_find_imported_submodules` ran because no valid cached answer was at hand.
static SUBMODULE_SCANS: AtomicU64 = AtomicU64::new(0);

/// [`SUBMODULE_SCANS`], for `cache_info()`.
pub fn submodule_scans() -> u64 {
    SUBMODULE_SCANS.load(Ordering::Relaxed)
}

/// A number that changes whenever `sys.modules` (the attribute) is rebound or changes;
/// `None` where it can't be had (then nothing is cached). See `watch.rs`.
fn modules_version(py: Python<'_>) -> Option<u64> {
    watch::modules_version(py)
}
