//! How this Python lays out a `functools.partial`, probed once per interpreter.
//!
//! `partial.__reduce__` (`partial_reduce` in `Modules/_functoolsmodule.c`) returns
//! `(type(p), (p.func,), (p.func, p.args, p.keywords, p.__dict__))`, the dict `None` when the
//! instance never made one (an empty one that was made is written as `{}`), restored by
//! `partial.__setstate__`. The fields are read through their descriptors and the instance dict
//! pointer directly (the `__dict__` getter would create an empty dict on every partial it
//! touches), after checking on a sample that they give what this Python's own `__reduce__`
//! gives.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{IntoPyDict, PyTuple, PyType};

use crate::slots::Slot;

static LAYOUT: PyOnceLock<Option<PartialLayout>> = PyOnceLock::new();

/// This Python's partial layout, `None` when it is not the one the fast path expects.
pub fn get(py: Python<'_>) -> PyResult<Option<&'static PartialLayout>> {
    Ok(LAYOUT
        .get_or_try_init(py, || PartialLayout::resolve(py))?
        .as_ref())
}

pub struct PartialLayout {
    cls: Py<PyType>,
    func: Slot,
    args: Slot,
    keywords: Slot,
    dictoffset: ffi::Py_ssize_t,
}

impl PartialLayout {
    fn resolve(py: Python<'_>) -> PyResult<Option<PartialLayout>> {
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

    /// `functools.partial` itself.
    pub fn cls<'py>(&self, py: Python<'py>) -> &Bound<'py, PyType> {
        self.cls.bind(py)
    }

    #[inline]
    pub fn handles(&self, ty: *mut ffi::PyTypeObject) -> bool {
        self.cls.as_ptr() == ty as *mut ffi::PyObject
    }

    /// The fields `__reduce__` would return; `None` if one is unset or of the wrong type.
    pub fn fields<'py>(&self, p: &Bound<'py, PyAny>) -> Option<Fields<'py>> {
        let py = p.py();
        // SAFETY: `p` is an exact `functools.partial`, whose instances keep their `__dict__`
        // pointer (NULL until first used) at `tp_dictoffset`, checked positive at resolve time.
        let dict = unsafe {
            let slot = (p.as_ptr() as *mut u8).offset(self.dictoffset) as *mut *mut ffi::PyObject;
            let d = *slot;
            // `partial_reduce` writes `None` only for a dict never made: one made and left
            // empty (by `vars(p)`, or an attribute set and deleted) is written as `{}`.
            if d.is_null() {
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

/// A partial's fields; `dict` is `None` when the instance dict was never made.
pub struct Fields<'py> {
    pub func: Bound<'py, PyAny>,
    pub args: Bound<'py, PyTuple>,
    pub keywords: Bound<'py, PyAny>,
    pub dict: Option<Bound<'py, PyAny>>,
}
