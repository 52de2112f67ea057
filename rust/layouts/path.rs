//! How this Python lays out a `pathlib` path, probed once per interpreter.
//!
//! `PurePath.__reduce__` returns `(type(self), args)`, and `args` lives in different slots on
//! different CPythons:
//!
//! - 3.10 and 3.11: `tuple(self._parts)`, the parsed parts (`Shape::Parts`);
//! - 3.12: `self.parts`, i.e. `(self._drv + self._root,) + tuple(self._tail_cached)` (without
//!   the first item when both are empty), parsed lazily from `_raw_paths` by `_load_parts`
//!   (`Shape::Tail`);
//! - 3.13 and later: `tuple(self._raw_paths)`, the segments the path was made from
//!   (`Shape::Raw`).
//!
//! The dumps side reads those slots and writes the same `cls(*args)` call, which stock
//! `pickle.loads` turns back into an equal path of the same class. Only the four concrete
//! classes are handled (user subclasses may override `__reduce__`), and only once this Python's
//! own `__reduce_ex__` was checked to give exactly those args on sample paths; a layout that
//! matches none of the shapes leaves paths to the generic reduce path (`get` is then `None`,
//! and `ferropickle.stats()["native_writers"]["path"]` says so).
//!
//! The loads side builds paths without calling the class, for the classes where that was
//! checked (slot by slot) to give what calling the class gives: from already-parsed parts as
//! `PurePath._from_parsed_parts` does on 3.10/3.11, and on 3.12+ by storing the segments in
//! `_raw_paths`, which is all `PurePath.__init__` does with `str` arguments.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyTuple, PyType};

use crate::slots::Slot;

static LAYOUT: PyOnceLock<Option<PathLayout>> = PyOnceLock::new();

/// This Python's path layout, `None` when it is none of the shapes the fast paths know.
pub fn get(py: Python<'_>) -> PyResult<Option<&'static PathLayout>> {
    Ok(LAYOUT
        .get_or_try_init(py, || PathLayout::resolve(py))?
        .as_ref())
}

pub struct PathLayout {
    classes: Vec<Py<PyType>>,
    shape: Shape,
    /// The classes `construct` may build (checked against calling them).
    buildable_classes: Vec<Py<PyType>>,
}

/// Where `__reduce__`'s args live; see the module docs.
enum Shape {
    Parts {
        parts: Slot,
        drv: Slot,
        root: Slot,
    },
    Tail {
        drv: Slot,
        root: Slot,
        tail: Slot,
        raw: Slot,
    },
    Raw {
        raw: Slot,
    },
}

/// A path's `__reduce__` args, read from its slots: `anchor` (3.12's `drive + root`, when not
/// empty) followed by the items of `rest`.
pub struct ReduceArgs<'py> {
    pub anchor: Option<Bound<'py, PyAny>>,
    pub rest: Bound<'py, PyList>,
}

impl ReduceArgs<'_> {
    /// How many args `cls(*args)` takes.
    pub fn count(&self) -> usize {
        usize::from(self.anchor.is_some()) + self.rest.len()
    }
}

impl Shape {
    /// The shapes whose slots this `PurePath` has, in the order of the CPythons that use them.
    fn candidates(pure: &Bound<'_, PyAny>) -> Vec<Shape> {
        let slot = |name| Slot::resolve(pure, name).ok().flatten();
        let mut out = Vec::new();
        if let (Some(parts), Some(drv), Some(root)) = (slot("_parts"), slot("_drv"), slot("_root"))
        {
            out.push(Shape::Parts { parts, drv, root });
        }
        if let (Some(drv), Some(root), Some(tail), Some(raw)) = (
            slot("_drv"),
            slot("_root"),
            slot("_tail_cached"),
            slot("_raw_paths"),
        ) {
            if pure.hasattr("_load_parts").unwrap_or(false) {
                out.push(Shape::Tail {
                    drv,
                    root,
                    tail,
                    raw,
                });
            }
        }
        if let Some(raw) = slot("_raw_paths") {
            out.push(Shape::Raw { raw });
        }
        out
    }

    fn name(&self) -> &'static str {
        match self {
            Shape::Parts { .. } => "parts",
            Shape::Tail { .. } => "parts",
            Shape::Raw { .. } => "args",
        }
    }
}

impl PathLayout {
    fn resolve(py: Python<'_>) -> PyResult<Option<PathLayout>> {
        let pathlib = py.import("pathlib")?;
        let pure = pathlib.getattr("PurePath")?;
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
        for shape in Shape::candidates(&pure) {
            let mut layout = PathLayout {
                classes: classes.iter().map(|c| c.clone_ref(py)).collect(),
                shape,
                buildable_classes: Vec::new(),
            };
            if !layout.reduces_like_pathlib(&pathlib)? {
                continue;
            }
            for cls in &classes {
                if layout.construction_matches(cls.bind(py))? {
                    layout.buildable_classes.push(cls.clone_ref(py));
                }
            }
            return Ok(Some(layout));
        }
        Ok(None)
    }

    /// Whether `args` gives what this Python's `__reduce_ex__` gives, on fresh sample paths
    /// (3.12 parses them on first use) and again once they are parsed.
    fn reduces_like_pathlib(&self, pathlib: &Bound<'_, PyModule>) -> PyResult<bool> {
        let py = pathlib.py();
        let posix = pathlib.getattr("PurePosixPath")?;
        let windows = pathlib.getattr("PureWindowsPath")?;
        for sample in [
            posix.call1(("/a/b", "c.txt"))?,
            posix.call1(("rel//x/.", "y"))?,
            posix.call1(("//host", "x"))?,
            posix.call0()?,
            windows.call1(("C:\\a", "b"))?,
            windows.call1(("\\\\server\\share\\x",))?,
            windows.call1(("C:x",))?,
        ] {
            let fresh = self.args_tuple(&sample)?;
            let reduced = sample.call_method1("__reduce_ex__", (5,))?;
            let parsed = self.args_tuple(&sample)?;
            let (Some(fresh), Some(parsed)) = (fresh, parsed) else {
                return Ok(false);
            };
            let expected = PyTuple::new(py, [sample.get_type().into_any(), fresh.into_any()])?;
            if !reduced.eq(&expected)? || !expected.get_item(1)?.eq(parsed)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn args_tuple<'py>(&self, path: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(args) = self.reduce_args(path)? else {
            return Ok(None);
        };
        let items: Vec<_> = args.anchor.into_iter().chain(args.rest.iter()).collect();
        Ok(Some(PyTuple::new(path.py(), items)?))
    }

    /// Whether building `cls` paths natively gives what calling `cls` gives, for a few shapes
    /// of args (absolute, `//`-rooted, relative, empty, and on 3.12+ unparsed): the same type,
    /// every slot the same (set or unset, before and after the path is parsed by `str`), the
    /// same `__reduce_ex__`. A class that can't be instantiated here (`WindowsPath` on POSIX)
    /// fails the check and keeps the call.
    fn construction_matches(&self, cls: &Bound<'_, PyType>) -> PyResult<bool> {
        let py = cls.py();
        let mut samples = vec![
            vec!["/", "data", "f1.parquet"],
            vec!["//", "host", "x"],
            vec!["rel", "..", "x.txt"],
            vec![],
        ];
        if !matches!(self.shape, Shape::Parts { .. }) {
            samples.extend([vec!["a/b", "c"], vec!["/x", ".", ""], vec!["C:\\a", "b"]]);
        }
        let slot_names = slot_names(cls)?;
        for parts in samples {
            let args = PyTuple::new(py, &parts)?;
            let Ok(expected) = cls.call1(&args) else {
                return Ok(false);
            };
            let Some(built) = self.construct(cls, &args)? else {
                return Ok(false);
            };
            if !built.get_type().is(expected.get_type())
                || !same_slots(&built, &expected, &slot_names)?
                || built.str()?.to_str()? != expected.str()?.to_str()?
                || !same_slots(&built, &expected, &slot_names)?
            {
                return Ok(false);
            }
            let reduced = built.call_method1("__reduce_ex__", (5,))?;
            if !reduced.eq(expected.call_method1("__reduce_ex__", (5,))?)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `cls(*args)` for a class `builds` accepts, without calling it: `None` when the args
    /// aren't all `str` (and, on 3.10/3.11, in parsed form); the caller then calls the class.
    pub fn construct<'py>(
        &self,
        cls: &Bound<'py, PyAny>,
        args: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Ok(args) = args.cast::<PyTuple>() else {
            return Ok(None);
        };
        match &self.shape {
            Shape::Parts { parts, drv, root } => construct_parsed(cls, args, parts, drv, root),
            Shape::Tail { raw, .. } | Shape::Raw { raw } => {
                // `PurePath.__init__` keeps `str` arguments as they are, in a new list.
                if !args.iter().all(|a| a.is_exact_instance_of::<PyString>()) {
                    return Ok(None);
                }
                let obj = object_new(cls)?;
                raw.set(&obj, PyList::new(cls.py(), args)?.as_any())?;
                Ok(Some(obj))
            }
        }
    }

    /// Whether `cls` is a path class `construct` may build.
    #[inline]
    pub fn builds(&self, cls: &Bound<'_, PyAny>) -> bool {
        self.buildable_classes
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

    /// What the args are called in error paths (`PosixPath.parts[0]`).
    pub fn args_name(&self) -> &'static str {
        self.shape.name()
    }

    /// The path's `__reduce__` args; `None` while the slots they come from are unset. On 3.12
    /// an unparsed path is parsed first, as `__reduce__` (through `parts`) would.
    pub fn reduce_args<'py>(&self, path: &Bound<'py, PyAny>) -> PyResult<Option<ReduceArgs<'py>>> {
        let list = |slot: &Slot| slot.get(path).and_then(|v| v.cast_into::<PyList>().ok());
        Ok(match &self.shape {
            Shape::Parts { parts, .. } => list(parts).map(|rest| ReduceArgs { anchor: None, rest }),
            Shape::Raw { raw } => list(raw).map(|rest| ReduceArgs { anchor: None, rest }),
            Shape::Tail {
                drv, root, tail, ..
            } => {
                let read = || Some((drv.get(path)?, root.get(path)?, list(tail)?));
                let parsed = match read() {
                    Some(parsed) => Some(parsed),
                    // A path that can't be parsed (no `_raw_paths`) goes the generic way,
                    // which raises what `pickle` raises for it.
                    None => match path.call_method0(pyo3::intern!(path.py(), "_load_parts")) {
                        Ok(_) => read(),
                        Err(_) => None,
                    },
                };
                match parsed {
                    None => None,
                    Some((drv, root, rest)) => {
                        // `(self.drive + self.root,)` when either is non-empty, with Python's `+`.
                        let anchor = if drv.is_truthy()? || root.is_truthy()? {
                            Some(drv.add(root)?)
                        } else {
                            None
                        };
                        Some(ReduceArgs { anchor, rest })
                    }
                }
            }
        })
    }
}

/// 3.10/3.11: a POSIX path from already-parsed parts, interned and stored as
/// `PurePath._from_parsed_parts` does; `None` when the parts are not in parsed form.
fn construct_parsed<'py>(
    cls: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    parts_slot: &Slot,
    drv: &Slot,
    root_slot: &Slot,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = cls.py();
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
    drv.set(&obj, PyString::intern(py, "").as_any())?;
    root_slot.set(&obj, PyString::intern(py, root).as_any())?;
    parts_slot.set(&obj, PyList::new(py, parts)?.as_any())?;
    Ok(Some(obj))
}

/// The names in the `__slots__` of `cls` and its bases.
fn slot_names(cls: &Bound<'_, PyType>) -> PyResult<Vec<String>> {
    let mut names = Vec::new();
    for base in cls.getattr("__mro__")?.try_iter()? {
        let Ok(slots) = base?.getattr("__dict__")?.get_item("__slots__") else {
            continue;
        };
        let slots = if slots.is_instance_of::<PyString>() {
            vec![slots.extract::<String>()?]
        } else {
            slots
                .try_iter()?
                .map(|s| s?.extract::<String>())
                .collect::<PyResult<_>>()?
        };
        names.extend(slots.into_iter().filter(|s| !s.starts_with("__")));
    }
    Ok(names)
}

/// Whether `a` and `b` have the same slots set, to equal values.
fn same_slots(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>, names: &[String]) -> PyResult<bool> {
    for name in names {
        match (a.getattr(name.as_str()), b.getattr(name.as_str())) {
            (Ok(x), Ok(y)) if x.eq(&y)? => {}
            (Err(_), Err(_)) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
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

/// `object.__new__(cls)`: a blank instance, as `PurePath.__new__` makes.
fn object_new<'py>(cls: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    py.get_type::<pyo3::types::PyAny>()
        .call_method1(pyo3::intern!(py, "__new__"), (cls,))
}
