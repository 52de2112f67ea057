//! `functools.partial` without calling `__reduce__`.
//!
//! `partial.__reduce__` (`partial_reduce` in `Modules/_functoolsmodule.c`) returns
//! `(type(p), (p.func,), (p.func, p.args, p.keywords, p.__dict__ or None))`, restored by
//! `partial.__setstate__`. We read the fields through their descriptors and the instance dict
//! pointer directly (the `__dict__` getter would create an empty dict on every partial it
//! touches) and write the same opcodes, so the function is written once and fetched from the
//! memo the second time, as with `pickle`.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyTuple, PyType};

use crate::opcodes::{BUILD, MARK, REDUCE, TUPLE, TUPLE1};
use crate::pickler::Pickler;
use crate::slots::Slot;

pub struct PartialLayout {
    cls: Py<PyType>,
    func: Slot,
    args: Slot,
    keywords: Slot,
    dictoffset: ffi::Py_ssize_t,
}

impl PartialLayout {
    pub fn resolve(py: Python<'_>) -> PyResult<Option<PartialLayout>> {
        let cls = py
            .import("functools")?
            .getattr("partial")?
            .cast_into::<PyType>()?;
        let (Some(func), Some(args), Some(keywords)) = (
            Slot::resolve(cls.as_any(), "func")?,
            Slot::resolve(cls.as_any(), "args")?,
            Slot::resolve(cls.as_any(), "keywords")?,
        ) else {
            return Ok(None);
        };
        // SAFETY: reading a field of a live type object.
        let dictoffset = unsafe { (*cls.as_type_ptr()).tp_dictoffset };
        if dictoffset <= 0 {
            return Ok(None);
        }
        let layout = PartialLayout {
            cls: cls.clone().unbind(),
            func,
            args,
            keywords,
            dictoffset,
        };
        // Check the layout against this Python's own `__reduce__` on a sample.
        let len = py.import("builtins")?.getattr("len")?;
        let sample = cls.call((len, 1), Some(&[("k", 1)].into_py_dict(py)?))?;
        sample.setattr("attr", 2)?;
        let reduced = sample.call_method0("__reduce__")?;
        let Some(fields) = layout.fields(&sample) else {
            return Ok(None);
        };
        let state = PyTuple::new(
            py,
            [
                fields.func.clone(),
                fields.args.into_any(),
                fields.keywords,
                fields.dict.unwrap_or_else(|| py.None().into_bound(py)),
            ],
        )?;
        let expected = (cls, (fields.func,), state).into_pyobject(py)?;
        Ok(reduced.eq(expected)?.then_some(layout))
    }

    #[inline]
    pub fn handles(&self, ty: *mut ffi::PyTypeObject) -> bool {
        self.cls.as_ptr() == ty as *mut ffi::PyObject
    }

    fn fields<'py>(&self, p: &Bound<'py, PyAny>) -> Option<Fields<'py>> {
        let py = p.py();
        // SAFETY: `p` is an exact `functools.partial`, whose instances keep their `__dict__`
        // pointer (NULL until first used) at `tp_dictoffset`, checked positive at resolve time.
        let dict = unsafe {
            let slot = (p.as_ptr() as *mut u8).offset(self.dictoffset) as *mut *mut ffi::PyObject;
            let d = *slot;
            if d.is_null() || ffi::PyDict_Size(d) == 0 {
                None
            } else {
                Some(Bound::from_borrowed_ptr(py, d))
            }
        };
        Some(Fields {
            func: self.func.get(p)?,
            args: self.args.get(p)?.cast_into::<PyTuple>().ok()?,
            keywords: self.keywords.get(p)?,
            dict,
        })
    }
}

struct Fields<'py> {
    func: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    keywords: Bound<'py, PyAny>,
    dict: Option<Bound<'py, PyAny>>,
}

/// Writes `partial(func)` then its state with `BUILD`; `false` if a field could not be read.
pub fn save_partial<'py>(
    p: &mut Pickler<'py>,
    layout: &PartialLayout,
    obj: &Bound<'py, PyAny>,
) -> PyResult<bool> {
    let Some(f) = layout.fields(obj) else {
        return Ok(false);
    };
    let py = p.py;
    p.save(layout.cls.bind(py).as_any(), false)?;
    p.save(&f.func, false)
        .map_err(|e| p.at(e, || "partial.func".to_owned()))?;
    p.out.ops(&[TUPLE1, REDUCE]);
    // Memoized before the state, like every reduced object: the state may lead back here.
    if p.memoize_reduced(obj) {
        return Ok(true);
    }
    p.out.op(MARK);
    p.save(&f.func, false)?;
    let args_unique = f.args.get_refcnt() == 2;
    p.save_tuple_as(&f.args, args_unique, |i| format!("partial.args[{i}]"))?;
    let keywords_unique = f.keywords.get_refcnt() == 2;
    p.save(&f.keywords, keywords_unique)
        .map_err(|e| p.at(e, || "partial.keywords".to_owned()))?;
    match &f.dict {
        Some(d) => p
            .save(d, false)
            .map_err(|e| p.at(e, || "partial.__dict__".to_owned()))?,
        None => p.save(&py.None().into_bound(py), true)?,
    }
    p.out.ops(&[TUPLE, BUILD]);
    Ok(true)
}
