//! Reading an attribute through its descriptor, resolved once: `descr.__get__(obj, type)` is a
//! direct C call (`tp_descr_get`) instead of an attribute lookup through the type's MRO.

use pyo3::ffi;
use pyo3::prelude::*;

pub struct Slot {
    descr: Py<PyAny>,
    get: ffi::descrgetfunc,
    set: ffi::descrsetfunc,
}

impl Slot {
    /// The descriptor `cls.<name>` if it is a data descriptor with a getter (a `__slots__`
    /// member, or a C type's member/getset), else `None`: a class attribute shadowing the slot,
    /// for one, can't be read this way.
    pub fn resolve(cls: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<Slot>> {
        let py = cls.py();
        let descr = cls.getattr(pyo3::types::PyString::intern(py, name))?;
        // SAFETY: reading a type's slot table; `descr` is live.
        let (get, set) = unsafe {
            let tp = ffi::Py_TYPE(descr.as_ptr());
            ((*tp).tp_descr_get, (*tp).tp_descr_set)
        };
        Ok(match (get, set) {
            (Some(get), Some(set)) => Some(Slot {
                descr: descr.unbind(),
                get,
                set,
            }),
            _ => None,
        })
    }

    /// The attribute's value on `obj` (an instance of the class it was resolved on), or `None`
    /// when it is unset.
    #[inline]
    pub fn get<'py>(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        let py = obj.py();
        // SAFETY: `get` is the descriptor's own `tp_descr_get`, called with the descriptor, a live
        // instance of the type it belongs to and that type, as `PyObject_GetAttr` would; it
        // returns a new reference or NULL with an exception set.
        unsafe {
            let tp = ffi::Py_TYPE(obj.as_ptr()) as *mut ffi::PyObject;
            let v = (self.get)(self.descr.as_ptr(), obj.as_ptr(), tp);
            if v.is_null() {
                let _ = PyErr::take(py);
                None
            } else {
                Some(Bound::from_owned_ptr(py, v))
            }
        }
    }

    /// Sets the attribute on `obj` (an instance of the class it was resolved on).
    #[inline]
    pub fn set(&self, obj: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: `set` is the descriptor's own `tp_descr_set`, called with the descriptor, a
        // live instance of its type and a live value, as `PyObject_SetAttr` would.
        let rc = unsafe { (self.set)(self.descr.as_ptr(), obj.as_ptr(), value.as_ptr()) };
        if rc < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(())
    }
}
