//! `pathlib` paths without calling `__reduce__`.
//!
//! On CPython 3.10 and 3.11 `PurePath.__reduce__` returns `(type(self), tuple(self._parts))`;
//! we read the `_parts` slot directly and write the same `cls(*parts)` call, which stock
//! `pickle.loads` turns back into an equal path of the same class. Only the four concrete
//! classes are handled (user subclasses may override `__reduce__`), and only after checking on a
//! sample path that this Python's `__reduce__` still has that shape; otherwise paths take the
//! generic reduce path.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple, PyType};

use crate::opcodes::REDUCE;
use crate::pickler::Pickler;
use crate::slots::Slot;

pub struct PathLayout {
    classes: Vec<Py<PyType>>,
    parts: Slot,
}

impl PathLayout {
    pub fn resolve(py: Python<'_>) -> PyResult<Option<PathLayout>> {
        let pathlib = py.import("pathlib")?;
        let pure = pathlib.getattr("PurePath")?;
        let Some(parts) = Slot::resolve(&pure, "_parts").ok().flatten() else {
            return Ok(None);
        };
        let mut classes = Vec::new();
        for name in [
            "PurePosixPath",
            "PureWindowsPath",
            "PosixPath",
            "WindowsPath",
        ] {
            let cls = pathlib.getattr(name)?.cast_into::<PyType>()?;
            // WindowsPath can't be instantiated on POSIX (and PosixPath not on Windows); a
            // class we can't sample is checked through its pure twin's `__reduce__`, which it
            // inherits unless overridden.
            if !cls.getattr("__reduce__")?.is(pure.getattr("__reduce__")?) {
                return Ok(None);
            }
            classes.push(cls.unbind());
        }
        let layout = PathLayout { classes, parts };
        for sample in [
            pathlib.getattr("PurePosixPath")?.call1(("/a/b", "c.txt"))?,
            pathlib.getattr("PureWindowsPath")?.call1(("C:\\a", "b"))?,
        ] {
            let reduced = sample.call_method0("__reduce__")?;
            let Some(parts) = layout.parts(&sample) else {
                return Ok(None);
            };
            let expected = PyTuple::new(
                py,
                [sample.get_type().into_any(), parts.to_tuple().into_any()],
            )?;
            if !reduced.eq(expected)? {
                return Ok(None);
            }
        }
        Ok(Some(layout))
    }

    /// Whether `ty` is one of the four concrete path classes.
    #[inline]
    pub fn handles(&self, ty: *mut pyo3::ffi::PyTypeObject) -> bool {
        self.classes
            .iter()
            .any(|c| c.as_ptr() == ty as *mut pyo3::ffi::PyObject)
    }

    fn parts<'py>(&self, path: &Bound<'py, PyAny>) -> Option<Bound<'py, PyList>> {
        self.parts.get(path)?.cast_into::<PyList>().ok()
    }
}

/// Writes `cls(*parts)`; returns `false` (nothing written) if the path's parts are unset.
pub fn save_path<'py>(
    p: &mut Pickler<'py>,
    layout: &PathLayout,
    path: &Bound<'py, PyAny>,
    unique: bool,
) -> PyResult<bool> {
    let Some(parts) = layout.parts(path) else {
        return Ok(false);
    };
    let cls = path.get_type();
    p.save(cls.as_any(), false)?;
    p.save_list_as_tuple(&parts, |i| format!("{}.parts[{i}]", cls_name(&cls)))?;
    p.out.op(REDUCE);
    // A path's parts are strings: it can't be part of a cycle, so a path nothing else refers
    // to needs no memo entry.
    p.memoize_unless(path, unique)?;
    Ok(true)
}

fn cls_name(cls: &Bound<'_, PyType>) -> String {
    cls.name().map(|n| n.to_string()).unwrap_or_default()
}
