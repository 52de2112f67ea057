//! How this Python lays out a `pathlib` path, probed once per interpreter.
//!
//! On CPython 3.10 and 3.11 `PurePath.__reduce__` returns `(type(self), tuple(self._parts))`;
//! the dumps side reads the `_parts` slot directly and writes the same `cls(*parts)` call, which
//! stock `pickle.loads` turns back into an equal path of the same class. Only the four concrete
//! classes are handled (user subclasses may override `__reduce__`), and only after checking on a
//! sample path that this Python's `__reduce__` still has that shape; otherwise paths take the
//! generic reduce path. The loads side builds POSIX paths from already-parsed parts as
//! `PurePath._from_parsed_parts` does, for the classes where that was checked to give what
//! calling the class gives.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyTuple, PyType};

use crate::slots::Slot;

static LAYOUT: PyOnceLock<Option<PathLayout>> = PyOnceLock::new();

/// This Python's path layout, `None` when it is not the one the fast paths expect.
pub fn get(py: Python<'_>) -> PyResult<Option<&'static PathLayout>> {
    Ok(LAYOUT
        .get_or_try_init(py, || PathLayout::resolve(py))?
        .as_ref())
}

pub struct PathLayout {
    classes: Vec<Py<PyType>>,
    parts: Slot,
    /// What `loads` needs to build a POSIX path from its parts without re-parsing them, as
    /// `PurePath._from_parsed_parts` does: the other two parsed slots, and the classes for
    /// which that was checked to give what calling the class gives.
    drv: Slot,
    root: Slot,
    posix_classes: Vec<Py<PyType>>,
}

impl PathLayout {
    fn resolve(py: Python<'_>) -> PyResult<Option<PathLayout>> {
        let pathlib = py.import("pathlib")?;
        let pure = pathlib.getattr("PurePath")?;
        let (Some(parts), Some(drv), Some(root)) = (
            Slot::resolve(&pure, "_parts").ok().flatten(),
            Slot::resolve(&pure, "_drv").ok().flatten(),
            Slot::resolve(&pure, "_root").ok().flatten(),
        ) else {
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
        let mut layout = PathLayout {
            classes,
            parts,
            drv,
            root,
            posix_classes: Vec::new(),
        };
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
        for name in ["PurePosixPath", "PosixPath"] {
            let cls = pathlib.getattr(name)?.cast_into::<PyType>()?;
            if layout.posix_construction_matches(&cls)? {
                layout.posix_classes.push(cls.unbind());
            }
        }
        Ok(Some(layout))
    }

    /// Whether building `cls` paths from parts natively gives what `cls(*parts)` gives, for a
    /// few shapes (absolute, `//`-rooted, relative, empty). `PosixPath` can't be instantiated
    /// on Windows; the check then fails and it keeps the call.
    fn posix_construction_matches(&self, cls: &Bound<'_, PyType>) -> PyResult<bool> {
        let py = cls.py();
        for parts in [
            vec!["/", "data", "f1.parquet"],
            vec!["//", "host", "x"],
            vec!["rel", "..", "x.txt"],
            vec![],
        ] {
            let args = PyTuple::new(py, &parts)?;
            let Ok(expected) = cls.call1(&args) else {
                return Ok(false);
            };
            let Some(built) = self.construct_posix(cls, &args)? else {
                return Ok(false);
            };
            for slot in [&self.drv, &self.root, &self.parts] {
                match (slot.get(&built), slot.get(&expected)) {
                    (Some(a), Some(b)) if a.eq(&b)? => {}
                    _ => return Ok(false),
                }
            }
            if !built.get_type().is(expected.get_type())
                || built.str()?.to_str()? != expected.str()?.to_str()?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `cls(*args)` for a POSIX path class whose `args` are already-parsed parts (what
    /// `save_path` writes, and what `pickle` writes for a path): the parts are interned and
    /// stored as `PurePath._from_parsed_parts` does. `None` when `cls` isn't such a class or
    /// the parts are not in parsed form (then the caller calls the class, which parses them).
    pub fn construct_posix<'py>(
        &self,
        cls: &Bound<'py, PyAny>,
        args: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = cls.py();
        let Ok(args) = args.cast::<PyTuple>() else {
            return Ok(None);
        };
        let mut root = "";
        let mut parts = Vec::with_capacity(args.len());
        for (i, part) in args.iter().enumerate() {
            let Ok(part) = part.cast_into_exact::<PyString>() else {
                return Ok(None);
            };
            // A part with lone surrogates (an undecodable file name) isn't UTF-8: let the class
            // handle it.
            let Ok(text) = part.to_str() else {
                return Ok(None);
            };
            if i == 0 && (text == "/" || text == "//") {
                root = if text == "/" { "/" } else { "//" };
            } else if text.is_empty() || text == "." || text.contains('/') {
                return Ok(None);
            }
            parts.push(intern(part));
        }
        let obj = object_new(cls)?;
        self.drv.set(&obj, PyString::intern(py, "").as_any())?;
        self.root.set(&obj, PyString::intern(py, root).as_any())?;
        self.parts.set(&obj, PyList::new(py, parts)?.as_any())?;
        Ok(Some(obj))
    }

    /// Whether `cls` is a POSIX path class `construct_posix` may build.
    #[inline]
    pub fn builds(&self, cls: &Bound<'_, PyAny>) -> bool {
        self.posix_classes
            .iter()
            .any(|c| c.as_ptr() == cls.as_ptr())
    }

    /// Whether `ty` is one of the four concrete path classes.
    #[inline]
    pub fn handles(&self, ty: *mut pyo3::ffi::PyTypeObject) -> bool {
        self.classes
            .iter()
            .any(|c| c.as_ptr() == ty as *mut pyo3::ffi::PyObject)
    }

    /// The path's `_parts` list; `None` while unset.
    pub fn parts<'py>(&self, path: &Bound<'py, PyAny>) -> Option<Bound<'py, PyList>> {
        self.parts.get(path)?.cast_into::<PyList>().ok()
    }
}

/// `sys.intern(s)`, as `parse_parts` does for every part.
fn intern(s: Bound<'_, PyString>) -> Bound<'_, PyString> {
    let py = s.py();
    let mut ptr = s.into_ptr();
    // SAFETY: `ptr` is an owned reference to an exact str; interning may swap it for another
    // owned reference, which we then own.
    unsafe {
        pyo3::ffi::PyUnicode_InternInPlace(&mut ptr);
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// `object.__new__(cls)`: a blank instance, as `PurePath._from_parsed_parts` makes.
fn object_new<'py>(cls: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    py.get_type::<pyo3::types::PyAny>()
        .call_method1(pyo3::intern!(py, "__new__"), (cls,))
}
