//! By-value functions and classes, written inline in the one stream with cloudpickle's reduction.
//!
//! A function defined in `__main__` (or in a module registered with
//! `cloudpickle.register_pickle_by_value`, or otherwise not importable) can't be written as
//! `module.qualname`. cloudpickle's `Pickler._dynamic_function_reduce` describes it as
//!
//! ```text
//! _make_function(code, base_globals, None, None, closure)      # REDUCE, then memoized
//! _function_setstate(func, (func.__dict__, slotstate))          # the state setter
//! ```
//!
//! and that is what we write, building the same arguments natively: `base_globals` is one dict
//! per `__globals__` per `dumps` call (cloudpickle's `globals_ref`), so functions of one module
//! in one message share their globals when loaded; the closure is fresh empty cells, filled by
//! the state; the state holds the function's *current* globals (the names its code uses, read
//! from `__globals__` at this call), defaults, closure contents, attributes and names. Everything
//! goes through the same walker and memo as the rest of the message, so shared objects are
//! written once, cycles close through the memo and `PickleBuffer`s go out of band.
//!
//! Nothing about a function is cached between calls: only what its immutable code object
//! determines (see `code.rs`), and the opcodes that write that code object (`code_cache.rs`). On first use the native writer is checked against the installed
//! cloudpickle (`cloudpickle_check.rs`: sample functions pickled both ways, streams compared after
//! `pickletools.optimize`); if they differ (another cloudpickle version), the reduction comes
//! from a `cloudpickle.Pickler` kept for the call instead, with the same effect.
//!
//! By-value classes use cloudpickle's `_class_reduce` (a class is pickled far less often than a
//! task's function), whose reduction is written by the same walker.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use rustc_hash::FxHashMap;

use super::code;
use super::reduce;
use crate::dumps::cloudpickle_check;
use crate::dumps::lookup::Lookup;
use crate::dumps::{describe, Pickler};
use crate::errors::pickling_error;
use crate::opcodes::{EMPTY_DICT, MARK, POP, REDUCE, SETITEMS, TUPLE2};

/// What one `dumps` call remembers about the by-value functions it wrote.
#[derive(Default)]
pub struct State {
    /// `globals_ref`: the base globals dict written for each `__globals__` (keyed by its
    /// address, both kept alive for the call).
    base_globals: FxHashMap<usize, (Py<PyDict>, Py<PyDict>)>,
    /// A `cloudpickle.Pickler` for this call, when the native reduction isn't used.
    cloudpickler: Option<Py<PyAny>>,
}

/// Writes `obj` (a function or class that can't be pickled by reference) by value.
pub fn save_by_value<'py>(p: &mut Pickler<'py>, obj: &Bound<'py, PyAny>) -> PyResult<()> {
    p.counts.by_value += 1;
    p.enter_cloudpickle_stream()?;
    // SAFETY: type check on a live object.
    if unsafe { ffi::PyFunction_Check(obj.as_ptr()) } != 0 {
        return save_function(p, obj);
    }
    match obj.cast::<PyType>() {
        Ok(cls) => save_class(p, cls),
        Err(_) => Err(pickling_error(format!(
            "Can't pickle {} by value",
            describe(obj)
        ))),
    }
}

fn save_function<'py>(p: &mut Pickler<'py>, func: &Bound<'py, PyAny>) -> PyResult<()> {
    let py = p.py;
    if !cloudpickle_check::passed(py, p.lookup) {
        let rv = cloudpickle_reduction(p, func)?;
        return reduce::save_reduce(p, func, &rv);
    }
    // SAFETY: `func` is a live function; these getters return borrowed references to its
    // code, globals and closure (NULL for no closure), owned here before any code can run.
    let (code, globals, closure) = unsafe {
        let f = func.as_ptr();
        let closure = ffi::PyFunction_GetClosure(f);
        (
            Bound::from_borrowed_ptr(py, ffi::PyFunction_GetCode(f)),
            Bound::from_borrowed_ptr(py, ffi::PyFunction_GetGlobals(f)).cast_into::<PyDict>()?,
            if closure.is_null() {
                py.None().into_bound(py)
            } else {
                Bound::from_borrowed_ptr(py, closure)
            },
        )
    };
    let name = || describe(func);

    // `_make_function(code, base_globals, None, None, closure)`.
    // Every part is written where `pickle` would `save()` it, each `None` included, so a frame
    // holding 64 KiB ends where it would end in cloudpickle's stream.
    p.save(p.lookup.cp.make_function.bind(py), false)?;
    p.open_fresh_tuple(5);
    p.save(&code, false)
        .map_err(|e| p.at(e, || format!("{}.__code__", name())))?;
    let base = base_globals(py, &mut p.by_value, &globals)?;
    p.save(base.as_any(), false)?;
    let none = py.None().into_bound(py);
    p.save(&none, true)?;
    p.save(&none, true)?;
    if closure.is_none() {
        p.save(&none, true)?;
    } else {
        // Fresh empty cells, filled by the state: cells that lead back to the function can't
        // be written before it exists.
        let n = code
            .getattr(pyo3::intern!(py, "co_freevars"))?
            .cast_into::<PyTuple>()?
            .len();
        p.tuple_of(n, |p, _| {
            p.save(p.lookup.cp.make_empty_cell.bind(py), false)?;
            p.save_empty_tuple();
            p.out.op(REDUCE);
            p.memoize_fresh();
            Ok(())
        })?;
    }
    p.close_fresh_tuple(5);
    p.out.op(REDUCE);
    // Memoized before the state: a function reached again through its own globals, defaults
    // or closure (recursion) is then a memo fetch.
    if p.memoize_reduced(func) {
        return Ok(());
    }

    // `_function_setstate(func, (attributes, slotstate))`.
    p.save(p.lookup.cp.function_setstate.bind(py), false)?;
    p.save(func, false)?;
    let attrs = func
        .getattr(pyo3::intern!(py, "__dict__"))?
        .cast_into::<PyDict>()?;
    let attrs: Vec<_> = attrs.iter().collect();
    p.dict_of(&attrs, true, |k| format!("{}.{k}", name()))?;
    let mut slot: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = Vec::with_capacity(10);
    for key in [
        pyo3::intern!(py, "__name__"),
        pyo3::intern!(py, "__qualname__"),
        pyo3::intern!(py, "__annotations__"),
        pyo3::intern!(py, "__kwdefaults__"),
        pyo3::intern!(py, "__defaults__"),
        pyo3::intern!(py, "__module__"),
        pyo3::intern!(py, "__doc__"),
    ] {
        slot.push((key.clone().into_any(), func.getattr(key)?));
    }
    slot.push((
        pyo3::intern!(py, "__closure__").clone().into_any(),
        closure.clone(),
    ));
    // What the code object determines, looked up once (a hash of the code) for both.
    let info = code::info(p.lookup, &code)?;
    let f_globals = current_globals(info.get(), &globals)?;
    let submodules = submodules(p.lookup, info.get(), &code, &f_globals, &closure)?;
    // The slot dict, as `save_dict` writes it (its `save()` may end a frame first).
    p.out.boundary();
    p.out.op(EMPTY_DICT);
    p.memoize_fresh();
    p.out.op(MARK);
    for (i, (key, value)) in slot.iter().enumerate() {
        p.save(key, false)?;
        // cloudpickle writes copies of the two names ("".join), which share no memo entry.
        let result = if i < 2 {
            code::save_joined(p, value)
        } else {
            p.save(value, false)
        };
        result.map_err(|e| p.at(e, || format!("{}.{}", name(), key)))?;
    }
    p.save(pyo3::intern!(py, "_cloudpickle_submodules").as_any(), false)?;
    p.list_of(&submodules)?;
    p.save(pyo3::intern!(py, "__globals__").as_any(), false)?;
    p.dict_of(&f_globals, false, |k| {
        format!("{}.__globals__['{k}']", name())
    })?;
    p.out.op(SETITEMS);
    p.close_fresh_tuple(2);
    // `(func, state)` goes straight to the state setter: `save_reduce` writes it unmemoized.
    p.out.ops(&[TUPLE2, REDUCE, POP]);
    Ok(())
}

/// cloudpickle's `globals_ref`: the one base globals dict of this call for `globals`, with the
/// module attributes that resolve relative imports (filled when first made).
fn base_globals<'py>(
    py: Python<'py>,
    state: &mut State,
    globals: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let base = match state.base_globals.get(&(globals.as_ptr() as usize)) {
        Some((_, base)) => base.bind(py).clone(),
        None => {
            let base = PyDict::new(py);
            state.base_globals.insert(
                globals.as_ptr() as usize,
                (globals.clone().unbind(), base.clone().unbind()),
            );
            base
        }
    };
    if base.is_empty() {
        for key in [
            pyo3::intern!(py, "__package__"),
            pyo3::intern!(py, "__name__"),
            pyo3::intern!(py, "__path__"),
            pyo3::intern!(py, "__file__"),
        ] {
            if let Some(v) = globals.get_item(key)? {
                base.set_item(key, v)?;
            }
        }
    }
    Ok(base)
}

/// `{k: func.__globals__[k] for k in _extract_code_globals(code) if k in func.__globals__}`,
/// read now.
fn current_globals<'py>(
    info: &code::CodeInfo,
    globals: &Bound<'py, PyDict>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let py = globals.py();
    let names = info.names.bind(py);
    let mut out = Vec::with_capacity(names.len());
    let exact = globals.is_exact_instance_of::<PyDict>();
    for name in names.iter() {
        let value = if exact {
            globals.get_item(&name)?
        } else if globals.as_any().contains(&name)? {
            Some(globals.as_any().get_item(&name)?)
        } else {
            None
        };
        if let Some(v) = value {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// `_find_imported_submodules(code, chain(f_globals.values(), closure_values))`.
fn submodules<'py>(
    lookup: &Lookup,
    info: &code::CodeInfo,
    code: &Bound<'py, PyAny>,
    f_globals: &[(Bound<'py, PyAny>, Bound<'py, PyAny>)],
    closure: &Bound<'py, PyAny>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let py = code.py();
    let mut out = Vec::new();
    let closure_values: Vec<_> = match closure.cast::<PyTuple>() {
        Ok(cells) => cells
            .iter()
            .filter_map(|c| code::cell_contents(&c))
            .collect(),
        Err(_) => Vec::new(),
    };
    for dep in f_globals.iter().map(|(_, v)| v).chain(&closure_values) {
        // SAFETY: type check on a live object.
        if unsafe { ffi::PyModule_Check(dep.as_ptr()) } == 0 {
            continue;
        }
        let package = module_attr(dep, pyo3::intern!(py, "__package__"))?;
        match package {
            Some(p) if p.is_truthy()? => {}
            _ => continue,
        }
        let name = match module_attr(dep, pyo3::intern!(py, "__name__"))? {
            Some(name) => name,
            None => dep.getattr(pyo3::intern!(py, "__name__"))?,
        };
        let found = match name.cast_into::<PyString>() {
            Ok(name) => info.submodules_of(lookup, code, dep, &name)?,
            // A module whose `__name__` is not a str: let cloudpickle's function decide.
            Err(_) => lookup
                .cp
                .find_imported_submodules
                .bind(py)
                .call1((code, PyList::new(py, [dep])?))?
                .cast_into::<PyList>()?,
        };
        out.extend(found.iter());
    }
    Ok(out)
}

/// `getattr(module, name, None)`-like: the attribute, or `None` where there is none. For a
/// plain module (of `types.ModuleType` itself, whose class defines neither `__name__` nor
/// `__package__`) an attribute found in the module's dict is what `getattr` returns, so it is
/// read from there (the generic lookup first searches the class); otherwise, and for any
/// other object, through `getattr`.
fn module_attr<'py>(
    module: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = module.py();
    static PLAIN: PyOnceLock<bool> = PyOnceLock::new();
    let plain = *PLAIN.get_or_init(py, || {
        let class_dict = py
            .get_type::<pyo3::types::PyModule>()
            .getattr(pyo3::intern!(py, "__dict__"));
        class_dict.is_ok_and(|d| {
            ["__name__", "__package__"]
                .iter()
                .all(|k| d.contains(k).is_ok_and(|found| !found))
        })
    });
    // SAFETY: exact type check on a live object.
    if plain && unsafe { ffi::PyModule_CheckExact(module.as_ptr()) } != 0 {
        // SAFETY: `module` is a live module; `PyModule_GetDict` returns a borrowed reference to
        // its dict (every module object has one), owned here before any code can run.
        let dict = unsafe { Bound::from_borrowed_ptr(py, ffi::PyModule_GetDict(module.as_ptr())) };
        if let Ok(dict) = dict.cast_into::<PyDict>() {
            if let Some(value) = dict.get_item(name)? {
                return Ok(Some(value));
            }
        }
    }
    module.getattr_opt(name)
}

/// The reduction of `func` by a `cloudpickle.Pickler` kept for this call (so that its
/// `globals_ref` spans the call), when the native one doesn't match the installed cloudpickle.
fn cloudpickle_reduction<'py>(
    p: &mut Pickler<'py>,
    func: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = p.py;
    let pickler = match &p.by_value.cloudpickler {
        Some(pk) => pk.bind(py).clone(),
        None => {
            let file = py.import("io")?.getattr("BytesIO")?.call0()?;
            let pk = py
                .import("cloudpickle")?
                .getattr("Pickler")?
                .call1((file, p.proto))?;
            p.by_value.cloudpickler = Some(pk.clone().unbind());
            pk
        }
    };
    pickler
        .call_method1(pyo3::intern!(py, "_dynamic_function_reduce"), (func,))?
        .cast_into::<PyTuple>()
        .map_err(Into::into)
}

/// `_class_reduce(cls)` written by our walker: `_builtin_type(name)` for a class of `types`, the
/// skeleton-class reduction for a dynamic class.
fn save_class<'py>(p: &mut Pickler<'py>, cls: &Bound<'py, PyType>) -> PyResult<()> {
    let py = p.py;
    let rv = p.lookup.cp.class_reduce.bind(py).call1((cls,))?;
    match rv.cast::<PyTuple>() {
        Ok(rv) => reduce::save_reduce(p, cls.as_any(), rv),
        Err(_) => Err(pickling_error(format!(
            "Can't pickle {}: it is not importable by name, and cloudpickle would not pickle it \
             by value",
            describe(cls.as_any())
        ))),
    }
}
