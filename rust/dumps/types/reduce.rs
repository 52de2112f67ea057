//! Objects pickled through the `__reduce_ex__` protocol, as `save()` and `save_reduce()` in
//! `_pickle.c` do it: reducers from cloudpickle's and copyreg's dispatch tables, `PickleBuffer`,
//! builtins, then `__reduce_ex__(protocol)` / `__reduce__()`; the result is written with
//! `REDUCE`, `NEWOBJ` or `NEWOBJ_EX`, list and dict items, and `BUILD` or a state setter.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::buffer;
use crate::dumps::batch::Batching;
use crate::dumps::global_kind;
use crate::dumps::{describe, ref_count, short_repr, Pickler};
use crate::errors::pickling_error;
use crate::opcodes::*;

/// Asks `obj` how to rebuild it (a dispatch table's reducer, else `__reduce_ex__(protocol)`),
/// as `save()` in `_pickle.c` does for a type it has no writer for, and writes the answer: a
/// global by name (a string), or the reduce value with [`save_reduce`].
pub fn reduce_and_save<'py>(p: &mut Pickler<'py>, obj: &Bound<'py, PyAny>) -> PyResult<()> {
    let py = p.py;
    let ty = obj.get_type();
    if ty.is(p.lookup.pickle_buffer_type.bind(py)) {
        return buffer::save_picklebuffer(p, obj);
    }
    p.counts.reduced += 1;
    // A bound method its owner gives back by name goes as `getattr(owner, name)`, its own
    // `__reduce__`, as `pickle` writes it; cloudpickle's `MethodType(func, self)` (which
    // pickles the function by value) only for one that can't be found that way.
    let by_name = ty.is(p.lookup.cp.method_type.bind(py)) && method_by_name(obj);
    let reducer = if by_name { None } else { reducer_for(p, &ty)? };
    let reduced = match reducer {
        Some(reducer) => reducer.call1((obj,))?,
        None => {
            // SAFETY: type check on a live object.
            if unsafe { ffi::PyCFunction_Check(obj.as_ptr()) } != 0 {
                if let Some(kind) = global_kind::cached(py, obj, None) {
                    return p.write_global(obj, kind);
                }
            }
            if obj.is_instance_of::<PyType>() {
                // A class whose metaclass is not `type` (`save()` in `_pickle.c` writes these
                // with `save_global` when no dispatch-table entry claims them).
                return p.save_global(obj, None);
            }
            match obj.getattr_opt(pyo3::intern!(py, "__reduce_ex__"))? {
                Some(reduce_ex) => reduce_ex.call1((p.proto,))?,
                None => obj.call_method0(pyo3::intern!(py, "__reduce__"))?,
            }
        }
    };
    if let Ok(name) = reduced.cast::<PyString>() {
        return p.save_global(obj, Some(name));
    }
    match reduced.cast::<PyTuple>() {
        Ok(rv) => save_reduce(p, obj, rv),
        Err(_) => Err(pickling_error(format!(
            "__reduce__ must return a string or tuple{}",
            not_type(&reduced)?
        ))),
    }
}

/// The type of a wrong value as `save_reduce` names it in its errors: since CPython 3.14,
/// `", not T"` with `%T` (the type's fully qualified name, without `builtins.` or `__main__.`);
/// before 3.14 the message stops at what was required.
fn not_type(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if cfg!(Py_3_14) {
        Ok(format!(", not {}", type_name(value)?))
    } else {
        Ok(String::new())
    }
}

/// The name of `value`'s type in `save_reduce`'s messages: `%T` since CPython 3.14, the C
/// `tp_name` before (`collections.OrderedDict`, but `H` for a class `H` defined in Python).
fn type_name(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if cfg!(Py_3_14) {
        return Ok(value.get_type().fully_qualified_name()?.to_string());
    }
    // SAFETY: `value` is live, so its type is; `tp_name` is a NUL-terminated C string owned
    // by the type object.
    let name = unsafe { std::ffi::CStr::from_ptr((*ffi::Py_TYPE(value.as_ptr())).tp_name) };
    Ok(name.to_string_lossy().into_owned())
}

/// `"item"` on CPython 3.14+, `"element"` before (the fourth to sixth items' messages).
const ITEM: &str = if cfg!(Py_3_14) { "item" } else { "element" };

/// Whether `getattr(method.__self__, name) == method` for the name its `__reduce__` gives:
/// `method.__func__.__name__`, which since CPython 3.15 is mangled for a private name
/// (`__m` of class `A` is `_A__m`), so such a method is then asked for its own.
fn method_by_name(method: &Bound<'_, PyAny>) -> bool {
    let py = method.py();
    let found = || -> PyResult<bool> {
        let owner = method.getattr(pyo3::intern!(py, "__self__"))?;
        let mut name = method
            .getattr(pyo3::intern!(py, "__func__"))?
            .getattr(pyo3::intern!(py, "__name__"))?
            .cast_into::<PyString>()?;
        let text = name.to_str()?;
        if cfg!(Py_3_15) && text.starts_with("__") && !text.ends_with("__") {
            // `(getattr, (self, name))`.
            name = method
                .call_method0(pyo3::intern!(py, "__reduce__"))?
                .get_item(1)?
                .get_item(1)?
                .cast_into::<PyString>()?;
        }
        owner.getattr(name)?.eq(method)
    };
    found().unwrap_or(false)
}

/// cloudpickle's reducer for this exact type if it has one, else copyreg's
/// (`cloudpickle.Pickler.dispatch_table` is a `ChainMap` in that order).
pub fn reducer_for<'py>(
    p: &Pickler<'py>,
    ty: &Bound<'py, PyType>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = p.py;
    if let Some(r) = p.lookup.cloudpickle_dispatch.bind(py).get_item(ty)? {
        return Ok(Some(r));
    }
    p.lookup.copyreg_dispatch.bind(py).get_item(ty)
}

enum Constructor {
    Reduce,
    NewObj,
    NewObjEx,
}

/// `save_reduce` in `_pickle.c`, with its checks and messages.
pub fn save_reduce<'py>(
    p: &mut Pickler<'py>,
    obj: &Bound<'py, PyAny>,
    rv: &Bound<'py, PyTuple>,
) -> PyResult<()> {
    let py = p.py;
    let n = rv.len();
    if !(2..=6).contains(&n) {
        return Err(pickling_error(
            "tuple returned by __reduce__ must contain 2 through 6 elements",
        ));
    }
    let item =
        |i: usize| -> Option<Bound<'py, PyAny>> { rv.get_item(i).ok().filter(|o| !o.is_none()) };
    let callable = rv.get_item(0)?;
    let args = rv.get_item(1)?;
    let state = item(2);
    let listitems = item(3);
    let dictitems = item(4);
    let state_setter = item(5);

    if !callable.is_callable() {
        return Err(pickling_error(format!(
            "first item of the tuple returned by __reduce__ must be callable{}",
            not_type(&callable)?
        )));
    }
    let Ok(args) = args.cast::<PyTuple>() else {
        return Err(pickling_error(format!(
            "second item of the tuple returned by __reduce__ must be a tuple{}",
            not_type(&args)?
        )));
    };
    for (items, which) in [(&listitems, "fourth"), (&dictitems, "fifth")] {
        if let Some(it) = items {
            // SAFETY: type check on a live object.
            if unsafe { ffi::PyIter_Check(it.as_ptr()) } == 0 {
                return Err(pickling_error(format!(
                    "{which} {ITEM} of the tuple returned by __reduce__ must be an iterator, \
                     not {}",
                    type_name(it)?
                )));
            }
        }
    }
    if let Some(setter) = &state_setter {
        if !setter.is_callable() {
            let required = if cfg!(Py_3_14) {
                "callable"
            } else {
                "a function"
            };
            return Err(pickling_error(format!(
                "sixth {ITEM} of the tuple returned by __reduce__ must be {required}, not {}",
                type_name(setter)?
            )));
        }
    }

    let owner = || describe(obj);
    match constructor(p, &callable)? {
        Constructor::NewObjEx => {
            if args.len() != 3 {
                return Err(pickling_error(if cfg!(Py_3_14) {
                    format!("__newobj_ex__ expected 3 arguments, got {}", args.len())
                } else {
                    format!(
                        "length of the NEWOBJ_EX argument tuple must be exactly 3, not {}",
                        args.len()
                    )
                }));
            }
            let cls = args.get_item(0)?;
            let cargs = args.get_item(1)?;
            let kwargs = args.get_item(2)?;
            // What each of the three must be, as 3.14+ and earlier word it.
            let wrong = |nth: &str, what: &str, value: &Bound<'py, PyAny>| -> PyResult<PyErr> {
                let ty = type_name(value)?;
                Ok(pickling_error(if cfg!(Py_3_14) {
                    format!("{nth} argument to __newobj_ex__() must be {what}, not {ty}")
                } else {
                    format!("{nth} item from NEWOBJ_EX argument tuple must be {what}, not {ty}")
                }))
            };
            if !cls.is_instance_of::<PyType>() {
                return Err(wrong("first", "a class", &cls)?);
            }
            if !cargs.is_instance_of::<PyTuple>() {
                return Err(wrong("second", "a tuple", &cargs)?);
            }
            if !kwargs.is_instance_of::<PyDict>() {
                return Err(wrong("third", "a dict", &kwargs)?);
            }
            p.save(&cls, false)
                .map_err(|e| p.at(e, || format!("{}.__class__", owner())))?;
            p.save(&cargs, false)
                .map_err(|e| p.at(e, || format!("{}.args", owner())))?;
            p.save(&kwargs, false)
                .map_err(|e| p.at(e, || format!("{}.kwargs", owner())))?;
            p.out.op(NEWOBJ_EX);
        }
        Constructor::NewObj => {
            if args.is_empty() {
                return Err(pickling_error(if cfg!(Py_3_14) {
                    "__newobj__ expected at least 1 argument, got 0"
                } else {
                    "__newobj__ arglist is empty"
                }));
            }
            let cls = args.get_item(0)?;
            if !cls.is_instance_of::<PyType>() {
                return Err(pickling_error(if cfg!(Py_3_14) {
                    format!(
                        "first argument to __newobj__() must be a class, not {}",
                        type_name(&cls)?
                    )
                } else {
                    "args[0] from __newobj__ args is not a type".to_owned()
                }));
            }
            let obj_class = obj.getattr(pyo3::intern!(py, "__class__"))?;
            if !obj_class.is(&cls) {
                return Err(pickling_error(if cfg!(Py_3_14) {
                    format!(
                        "first argument to __newobj__() must be {}, not {}",
                        obj_class.repr()?,
                        cls.repr()?
                    )
                } else {
                    "args[0] from __newobj__ args has the wrong class".to_owned()
                }));
            }
            p.save(&cls, false)
                .map_err(|e| p.at(e, || format!("{}.__class__", owner())))?;
            save_newobj_args(p, args, obj)?;
            p.out.op(NEWOBJ);
        }
        Constructor::Reduce => {
            p.save(&callable, false)
                .map_err(|e| p.at(e, || format!("{} reducer", owner())))?;
            // The reducer's own tuple, which it may share (`BaseException.__reduce__` returns
            // `self.args`): written like any tuple, memoized unless ours is the only other
            // reference (`rv` holds one, `args` another).
            let args_unique = ref_count(args) == 2;
            p.save_tuple_as(args, args_unique, |i| format!("{}.args[{i}]", owner()))?;
            p.out.op(REDUCE);
        }
    }

    // Memoized before its state: a reference cycle through the state comes back here.
    if p.memoize_reduced(obj) {
        return Ok(());
    }
    if let Some(items) = listitems {
        batch_list(p, &items, obj)?;
    }
    if let Some(items) = dictitems {
        batch_dict(p, &items, obj)?;
    }
    if let Some(state) = state {
        // SAFETY: reading the reference count of a live object.
        let state_unique = unsafe { ffi::Py_REFCNT(state.as_ptr()) } == 2;
        match state_setter {
            None => {
                p.save(&state, state_unique)
                    .map_err(|e| p.at(e, || format!("{}.state", owner())))?;
                p.out.op(BUILD);
            }
            Some(setter) => {
                // `setter(obj, state)` through REDUCE, then POP: the object was memoized above,
                // so it is written as a memo fetch.
                p.save(&setter, false)
                    .map_err(|e| p.at(e, || format!("{} state setter", owner())))?;
                p.save(obj, false)?;
                p.save(&state, state_unique)
                    .map_err(|e| p.at(e, || format!("{}.state", owner())))?;
                p.out.ops(&[TUPLE2, REDUCE, POP]);
            }
        }
    }
    Ok(())
}

/// Is the callable `copyreg.__newobj__`/`__newobj_ex__` (or another callable of that name, which
/// `pickle` also treats as one)?
fn constructor<'py>(p: &Pickler<'py>, callable: &Bound<'py, PyAny>) -> PyResult<Constructor> {
    let py = p.py;
    if callable.is(p.lookup.copyreg_newobj.bind(py)) {
        return Ok(Constructor::NewObj);
    }
    if callable.is(p.lookup.copyreg_newobj_ex.bind(py)) {
        return Ok(Constructor::NewObjEx);
    }
    let Some(name) = callable.getattr_opt(pyo3::intern!(py, "__name__"))? else {
        return Ok(Constructor::Reduce);
    };
    let Ok(name) = name.cast::<PyString>() else {
        return Ok(Constructor::Reduce);
    };
    Ok(match name.to_str()? {
        "__newobj__" => Constructor::NewObj,
        "__newobj_ex__" => Constructor::NewObjEx,
        _ => Constructor::Reduce,
    })
}

/// `args[1:]` for `NEWOBJ`, written as the fresh tuple `pickle` builds for it (nothing else can
/// refer to that one, so it needs no memo entry), with each item's place known for errors.
fn save_newobj_args<'py>(
    p: &mut Pickler<'py>,
    args: &Bound<'py, PyTuple>,
    owner: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let skip = 1;
    let n = args.len().saturating_sub(skip);
    p.open_fresh_tuple(n);
    for i in skip..args.len() {
        // SAFETY: `i < len`; the tuple is immutable and we hold it.
        let item = unsafe { args.get_borrowed_item_unchecked(i) };
        let item_unique = ref_count(&item) == 1;
        if let Err(e) = p.save(&item, item_unique) {
            return Err(p.at(e, || format!("{}.args[{}]", describe(owner), i - skip)));
        }
    }
    p.close_fresh_tuple(n);
    Ok(())
}

/// `batch_list`: a reducer's list items, as `APPEND` or batches of `APPENDS`.
fn batch_list<'py>(
    p: &mut Pickler<'py>,
    items: &Bound<'py, PyAny>,
    owner: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let mut iter = items.try_iter()?;
    let mut index = 0;
    let save = |p: &mut Pickler<'py>, item: Bound<'py, PyAny>| {
        let at = index;
        index += 1;
        p.save(&item, false)
            .map_err(|e| p.at(e, || format!("{}[{at}]", describe(owner))))
    };
    p.batched(Batching::LIST_ITEMS, || iter.next().transpose(), save)
}

/// `batch_dict`: a reducer's `(key, value)` items, as `SETITEM` or batches of `SETITEMS`.
fn batch_dict<'py>(
    p: &mut Pickler<'py>,
    items: &Bound<'py, PyAny>,
    owner: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let mut iter = items.try_iter()?;
    let save = |p: &mut Pickler<'py>, item: Bound<'py, PyAny>| {
        let (k, v) = match item.cast_into::<PyTuple>() {
            Ok(t) if t.len() == 2 => (t.get_item(0)?, t.get_item(1)?),
            _ => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "dict items iterator must return 2-tuples",
                ))
            }
        };
        p.save(&k, false)
            .map_err(|e| p.at(e, || format!("{} key", describe(owner))))?;
        p.save(&v, false)
            .map_err(|e| p.at(e, || format!("{}[{}]", describe(owner), short_repr(&k))))
    };
    p.batched(Batching::DICT_ITEMS, || iter.next().transpose(), save)
}
