//! `sys.modules` as pickle and cloudpickle see it, and counters that move whenever something a
//! remembered answer depends on may have changed.
//!
//! `pickle.whichmodule`, `save_global`'s checks and cloudpickle (`_lookup_module_and_qualname`,
//! `_module_reduce`, `_find_imported_submodules`) all read the `sys.modules` *attribute*, which a
//! program may rebind (`sys.modules = dict(sys.modules)`); the interpreter's own import dict
//! (`PyImport_GetModuleDict`) stays the original then. [`sys_modules`] reads what they read.
//!
//! From CPython 3.12 one dict watcher (`PyDict_AddWatcher`) counts the events (an insertion,
//! deletion, replacement, clear, clone into, or deallocation) of the dicts watched:
//! - `sys.__dict__`, so rebinding `sys.modules` is an event, and the dict `sys.modules` is
//!   now: both move [`modules_version`] and every [`Stamp`];
//! - the module dicts that remembered by-reference decisions were found in
//!   ([`Stamp::cover`]): they move every [`Stamp`] only.
//!
//! The callback runs with the GIL held, before the change is made; it only adds to counters. A
//! watched `sys.modules` dict that is deallocated is forgotten, so a new dict at its address is
//! watched again before anything is remembered against it. Before 3.12 there are no watchers,
//! but every dict still has a version tag (PEP 509), globally unique on those versions:
//! [`modules_version`] is `sys.modules`' tag, and a [`Stamp`] holds the tags of the dicts it
//! covers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `sys.modules`, read as `sys.modules` is in Python: from the interpreter's `sys` dict (what
/// `PySys_GetObject` reads); deleted, the `AttributeError` that reading it there raises.
pub fn sys_modules(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let not_there =
        || pyo3::exceptions::PyAttributeError::new_err("module 'sys' has no attribute 'modules'");
    let Some(sys_dict) = sys_dict(py) else {
        // SAFETY: `PySys_GetObject` returns a borrowed reference (or NULL, with no exception
        // set); we own a new reference before any code can run.
        unsafe {
            let modules = ffi::PySys_GetObject(c"modules".as_ptr());
            if modules.is_null() {
                return Err(not_there());
            }
            return Ok(Bound::from_borrowed_ptr(py, modules));
        }
    };
    // SAFETY: `sys_dict` is a live exact dict; `PyDict_GetItemWithError` returns a borrowed
    // reference (or NULL), owned before any code can run.
    unsafe {
        let modules =
            ffi::PyDict_GetItemWithError(sys_dict.as_ptr(), pyo3::intern!(py, "modules").as_ptr());
        if modules.is_null() {
            return Err(PyErr::take(py).unwrap_or_else(not_there));
        }
        Ok(Bound::from_borrowed_ptr(py, modules))
    }
}

/// The interpreter's `sys` dict, found once (`PySys_GetObject` builds a str for every lookup):
/// the `sys` module's dict, checked to hold the very `modules` object `PySys_GetObject` gives.
/// `None` if it can't be found so.
fn sys_dict(py: Python<'_>) -> Option<&Bound<'_, pyo3::types::PyDict>> {
    static SYS_DICT: PyOnceLock<Option<Py<pyo3::types::PyDict>>> = PyOnceLock::new();
    SYS_DICT
        .get_or_init(py, || {
            // SAFETY: `PyImport_GetModule` returns a new reference or NULL (reading the
            // interpreter's import dict, which rebinding `sys.modules` leaves alone);
            // `PySys_GetObject` a borrowed one or NULL, only compared.
            let (sys, modules) = unsafe {
                let sys = ffi::PyImport_GetModule(pyo3::intern!(py, "sys").as_ptr());
                if sys.is_null() {
                    PyErr::take(py);
                    return None;
                }
                (
                    Bound::from_owned_ptr(py, sys),
                    ffi::PySys_GetObject(c"modules".as_ptr()),
                )
            };
            let dict: Bound<'_, pyo3::types::PyDict> =
                sys.getattr("__dict__").ok()?.cast_into().ok()?;
            let holds = dict
                .get_item("modules")
                .ok()
                .flatten()
                .is_some_and(|m| m.as_ptr() == modules);
            holds.then(|| dict.unbind())
        })
        .as_ref()
        .map(|d| d.bind(py))
}

/// A number that changes whenever `sys.modules` (the attribute) is rebound or changes, with the
/// dict's address in the high bits; `None` where it can't be had (then nothing may be
/// remembered against it).
pub fn modules_version(py: Python<'_>) -> Option<u64> {
    if let Some(modules) = seen_modules(py) {
        return Some(version_of(modules));
    }
    #[cfg(not(Py_3_12))]
    // Read before the lookup, as what the lookup's answer holds for.
    let sys_tag = sys_dict(py).map(|sys| {
        // SAFETY: `sys` is a live exact dict.
        unsafe { version_tag(sys.as_ptr() as usize) }
    });
    let modules = sys_modules(py).ok()?;
    // SAFETY: a type check of a live object.
    if unsafe { ffi::PyDict_CheckExact(modules.as_ptr()) } == 0 {
        return None;
    }
    #[cfg(not(Py_3_12))]
    if let Some(tag) = sys_tag {
        SEEN_MODULES.store(modules.as_ptr() as usize, Ordering::Relaxed);
        SEEN_AT.store(tag, Ordering::Relaxed);
    }
    #[cfg(Py_3_12)]
    {
        // Counted from after the watching starts (which is an event itself).
        watchers::watch_modules(py, &modules)?;
        SEEN_MODULES.store(modules.as_ptr() as usize, Ordering::Relaxed);
        SEEN_AT.store(watchers::modules_events(), Ordering::Relaxed);
    }
    Some(version_of(modules.as_ptr() as usize))
}

/// The `sys.modules` dict [`modules_version`] last found in `sys.__dict__` (its address), and
/// when: `sys.__dict__`'s version tag before CPython 3.12, the count of events on `sys.__dict__`
/// and `sys.modules` from 3.12. While that is unchanged `sys.__dict__` still holds that very
/// dict as `modules` (alive, and watched from 3.12), so it need not be looked up again.
static SEEN_MODULES: AtomicUsize = AtomicUsize::new(0);
static SEEN_AT: AtomicU64 = AtomicU64::new(0);

/// [`SEEN_MODULES`], while it is still `sys.modules` (see there); `None` if it may not be.
#[inline]
fn seen_modules(py: Python<'_>) -> Option<usize> {
    let modules = SEEN_MODULES.load(Ordering::Relaxed);
    if modules == 0 {
        return None;
    }
    #[cfg(not(Py_3_12))]
    // SAFETY: `sys.__dict__` is a live exact dict.
    let now = unsafe { version_tag(sys_dict(py)?.as_ptr() as usize) };
    #[cfg(Py_3_12)]
    let now = {
        let _ = py;
        watchers::modules_events()
    };
    (now == SEEN_AT.load(Ordering::Relaxed)).then_some(modules)
}

/// [`modules_version`] of `modules`, the live `sys.modules` dict (its address).
#[inline]
fn version_of(modules: usize) -> u64 {
    #[cfg(not(Py_3_12))]
    // SAFETY: `modules` is a live exact dict (the caller's promise).
    let count = unsafe { version_tag(modules) };
    #[cfg(Py_3_12)]
    let count = watchers::modules_events();
    count ^ ((modules as u64) << 40)
}

/// What a check of a remembered answer read, taken before it read it: while [`Stamp::holds`],
/// nothing it read has changed since. It covers `sys.__dict__`, the dict `sys.modules` is, and
/// the one module dict given to [`Stamp::cover`].
///
/// From CPython 3.12 it is the count of events on every watched dict. Before 3.12 it is the
/// three dicts' version tags (PEP 509): every change to a dict gives it a new tag from one
/// counter for the whole interpreter, and so does every new dict, so a tag seen again means the
/// same dict, unchanged (a dict freed and another made at its address has another tag).
#[derive(Clone, Copy)]
pub struct Stamp {
    #[cfg(Py_3_12)]
    events: u64,
    #[cfg(not(Py_3_12))]
    tags: Tags,
}

/// The dicts a [`Stamp`] covers before 3.12 (addresses, to compare and read only in the order
/// [`Stamp::holds`] proves them alive) and their version tags.
#[cfg(not(Py_3_12))]
#[derive(Clone, Copy)]
struct Tags {
    /// `sys.__dict__`, which lives as long as the interpreter.
    sys: usize,
    sys_tag: u64,
    /// The dict `sys.__dict__["modules"]` was.
    modules: usize,
    modules_tag: u64,
    /// The module dict given to [`Stamp::cover`], 0 before.
    dict: usize,
    dict_tag: u64,
}

/// A dict's version tag (CPython < 3.12).
///
/// # Safety
/// `dict` must be a live dict; the GIL must be held.
#[cfg(not(Py_3_12))]
#[inline]
unsafe fn version_tag(dict: usize) -> u64 {
    // `PyDictObject` starts with the version tag after the object header and `ma_used`, which
    // we only read.
    #[allow(deprecated)]
    (*(dict as *mut ffi::PyDictObject)).ma_version_tag
}

impl Stamp {
    /// Taken before a check reads anything (it starts watching `sys.__dict__` and
    /// `sys.modules` from 3.12). `None` when `sys.modules` is not an exact dict or a dict can't
    /// be watched.
    pub fn take(py: Python<'_>) -> Option<Stamp> {
        let modules = sys_modules(py).ok()?;
        // SAFETY: a type check of a live object.
        if unsafe { ffi::PyDict_CheckExact(modules.as_ptr()) } == 0 {
            return None;
        }
        #[cfg(Py_3_12)]
        {
            watchers::watch_modules(py, &modules)?;
            Some(Stamp {
                events: watchers::all_events(),
            })
        }
        #[cfg(not(Py_3_12))]
        {
            // `sys_modules` read `modules` from this dict (none: from elsewhere, not covered).
            let sys = sys_dict(py)?.as_ptr() as usize;
            // SAFETY: `sys` and `modules` are live exact dicts.
            let (sys_tag, modules_tag) =
                unsafe { (version_tag(sys), version_tag(modules.as_ptr() as usize)) };
            Some(Stamp {
                tags: Tags {
                    sys,
                    sys_tag,
                    modules: modules.as_ptr() as usize,
                    modules_tag,
                    dict: 0,
                    dict_tag: 0,
                },
            })
        }
    }

    /// Covers `dict` (a module's `__dict__`, before the check reads it) too. `false` if it
    /// can't be (not an exact dict, or no watcher slot).
    pub fn cover(&mut self, py: Python<'_>, dict: &Bound<'_, PyAny>) -> bool {
        #[cfg(Py_3_12)]
        {
            watchers::watch(py, dict)
        }
        #[cfg(not(Py_3_12))]
        {
            let _ = py;
            // SAFETY: a type check of a live object, then a read of its tag.
            unsafe {
                if ffi::PyDict_CheckExact(dict.as_ptr()) == 0 {
                    return false;
                }
                self.tags.dict = dict.as_ptr() as usize;
                self.tags.dict_tag = version_tag(self.tags.dict);
            }
            true
        }
    }

    /// Whether nothing the stamped check read has changed since: none of the dicts covered
    /// changed (from 3.12: no watched dict did). Only for a stamp [`cover`](Stamp::cover)ed,
    /// whose check held: that check found the module in `sys.modules`.
    #[inline]
    pub fn holds(&self) -> bool {
        #[cfg(Py_3_12)]
        {
            self.events == watchers::all_events()
        }
        #[cfg(not(Py_3_12))]
        {
            let t = &self.tags;
            // SAFETY: each dict is read only once the one before proves it alive:
            // `sys.__dict__` lives as long as the interpreter; unchanged, it still holds
            // `modules`; unchanged, `modules` still holds the module the check found, whose
            // `__dict__` (read-only) is `dict`.
            unsafe {
                t.dict != 0
                    && version_tag(t.sys) == t.sys_tag
                    && version_tag(t.modules) == t.modules_tag
                    && version_tag(t.dict) == t.dict_tag
            }
        }
    }
}

/// The watcher (CPython 3.12+; PyO3 binds `PyDict_Watch` but not `PyDict_AddWatcher`).
#[cfg(Py_3_12)]
mod watchers {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;

    type Callback = unsafe extern "C" fn(
        event: c_int,
        dict: *mut ffi::PyObject,
        key: *mut ffi::PyObject,
        new_value: *mut ffi::PyObject,
    ) -> c_int;

    extern "C" {
        /// `int PyDict_AddWatcher(PyDict_WatchCallback callback)`: a watcher id, or -1 with an
        /// exception set (an interpreter has a few watcher slots).
        fn PyDict_AddWatcher(callback: Callback) -> c_int;
    }

    /// `PyDict_EVENT_DEALLOCATED` (the sixth of `PyDict_WatchEvent`, 3.12-3.15).
    const DEALLOCATED: c_int = 5;

    /// Events on `sys.__dict__` and the watched `sys.modules`.
    static MODULES_EVENTS: AtomicU64 = AtomicU64::new(0);
    /// Events on every watched dict.
    static ALL_EVENTS: AtomicU64 = AtomicU64::new(0);
    /// The `sys.modules` dict watched (its address), 0 before the first or once deallocated.
    static MODULES: AtomicUsize = AtomicUsize::new(0);
    /// `sys.__dict__` (its address), once watched; it lives as long as the interpreter.
    static SYS_DICT: AtomicUsize = AtomicUsize::new(0);
    static WATCHER: PyOnceLock<Option<c_int>> = PyOnceLock::new();

    /// Counts the event. Called by the interpreter with the GIL held, before the change; it
    /// runs no Python code and never fails.
    unsafe extern "C" fn on_event(
        event: c_int,
        dict: *mut ffi::PyObject,
        _key: *mut ffi::PyObject,
        _new_value: *mut ffi::PyObject,
    ) -> c_int {
        let dict = dict as usize;
        if dict == MODULES.load(Ordering::Relaxed) || dict == SYS_DICT.load(Ordering::Relaxed) {
            MODULES_EVENTS.fetch_add(1, Ordering::Relaxed);
            if event == DEALLOCATED && dict == MODULES.load(Ordering::Relaxed) {
                MODULES.store(0, Ordering::Relaxed);
            }
        }
        ALL_EVENTS.fetch_add(1, Ordering::Relaxed);
        0
    }

    fn id(py: Python<'_>) -> Option<c_int> {
        *WATCHER.get_or_init(py, || {
            // SAFETY: registering a callback that lives as long as the process, with the GIL.
            let id = unsafe { PyDict_AddWatcher(on_event) };
            if id < 0 {
                // No watcher slot left: nothing is remembered against the counters.
                PyErr::take(py);
                None
            } else {
                Some(id)
            }
        })
    }

    /// Watches `dict`, an exact dict. `false` if it can't be.
    pub(super) fn watch(py: Python<'_>, dict: &Bound<'_, PyAny>) -> bool {
        let Some(id) = id(py) else {
            return false;
        };
        // SAFETY: a type check of a live object; `PyDict_Watch` on a live exact dict with a
        // registered watcher id (watching a dict twice is harmless).
        unsafe {
            if ffi::PyDict_CheckExact(dict.as_ptr()) == 0 {
                return false;
            }
            if ffi::PyDict_Watch(id, dict.as_ptr()) != 0 {
                PyErr::take(py);
                return false;
            }
        }
        true
    }

    /// Makes sure `sys.__dict__` and `modules` (the current `sys.modules`, an exact dict) are
    /// watched. `None` if they can't be.
    pub(super) fn watch_modules(py: Python<'_>, modules: &Bound<'_, PyAny>) -> Option<()> {
        if SYS_DICT.load(Ordering::Relaxed) == 0 {
            let sys_dict = super::sys_dict(py)?;
            if !watch(py, sys_dict.as_any()) {
                return None;
            }
            SYS_DICT.store(sys_dict.as_ptr() as usize, Ordering::Relaxed);
            MODULES_EVENTS.fetch_add(1, Ordering::Relaxed);
            ALL_EVENTS.fetch_add(1, Ordering::Relaxed);
        }
        if MODULES.load(Ordering::Relaxed) != modules.as_ptr() as usize {
            if !watch(py, modules) {
                return None;
            }
            MODULES.store(modules.as_ptr() as usize, Ordering::Relaxed);
            // Whatever was remembered for another dict is stale.
            MODULES_EVENTS.fetch_add(1, Ordering::Relaxed);
            ALL_EVENTS.fetch_add(1, Ordering::Relaxed);
        }
        Some(())
    }

    pub(super) fn modules_events() -> u64 {
        MODULES_EVENTS.load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn all_events() -> u64 {
        ALL_EVENTS.load(Ordering::Relaxed)
    }
}
