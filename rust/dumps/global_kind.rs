//! Functions, classes and other globals: by reference or by value, decided once per object.
//!
//! `pickle` re-derives `module.qualname` for every global it writes and re-imports the module to
//! check it (`save_global` in `_pickle.c`); cloudpickle also scans `sys.modules` for module-level
//! objects. Here the decision is made the first time an object is seen and remembered, keyed by
//! its address and guarded by a weak reference, so a dead object's address never matches.
//!
//! The rule that keeps a remembered decision exactly cloudpickle's (`_should_pickle_by_reference`)
//! and pickle's (`save_global`): both derive it, on every call, from the object's `__module__`,
//! its `__qualname__` (or the name its `__reduce__` returned), `sys.modules[__module__]`, the
//! attribute walk from that module, the module's own `__name__` and the by-value registry. Only
//! by-reference decisions are remembered, and each use re-reads all of them: `__module__` and
//! the name are read again and compared with the remembered ones (the current objects are the
//! ones written), the module and the walk are re-checked by [`Anchor::holds`] (which also
//! compares the module's `__name__` when the registry is not empty), and a change of the
//! registry empties the cache. A global without a `__module__` is found by a scan of all of
//! `sys.modules`, which nothing cheaper can re-check: that decision is never remembered, and
//! nor is a by-value one (it may turn by-reference when the walk starts leading to the object).
//!
//! The re-check is skipped while nothing it reads can have changed: for a name of one part
//! (`module.name`) in a real module, the check that held is stamped with a [`watch::Stamp`],
//! taken before it, covering the module's dict, `sys.__dict__` and `sys.modules`; a later use
//! whose object still has the very `__module__` and `__qualname__` objects remembered, while
//! the stamp holds, is answered without the lookups. Any insertion, deletion or replacement in
//! one of those dicts, rebinding `sys.modules`, or a dict's deallocation ends the stamp (from
//! CPython 3.12 a dict watcher counts the events; before, the dicts' PEP 509 version tags
//! move), and the next use checks again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyFrozenSet, PyString, PyWeakrefReference};
use rustc_hash::FxHashMap;

use super::lookup::Lookup;
use super::watch;
use crate::errors::pickling_error;

/// How a function, class or builtin is written.
pub enum Kind {
    /// `STACK_GLOBAL module qualname`: importable by name where it is loaded.
    ByRef {
        module: Py<PyString>,
        qualname: Py<PyString>,
    },
    /// CPython 3.15+: a name with private parts (`A.__m`) that only its mangled form
    /// (`A._A__m`) leads to, which `save_global` looks up and writes. cloudpickle writes a
    /// function or class of that kind by value (it looks the name up as it is):
    /// `cloudpickle_by_value`, and the writer picks the form its stream is in.
    Mangled {
        module: Py<PyString>,
        /// The name as read (`__qualname__`, or what `__reduce__` returned).
        qualname: Py<PyString>,
        mangled: Py<PyString>,
        cloudpickle_by_value: bool,
    },
    /// Pickled by value (see `types/by_value.rs`): defined in `__main__`, in a
    /// module registered with `cloudpickle.register_pickle_by_value`, or not importable.
    ByValue,
}

impl Kind {
    fn clone_ref(&self, py: Python<'_>) -> Kind {
        match self {
            Kind::ByRef { module, qualname } => Kind::ByRef {
                module: module.clone_ref(py),
                qualname: qualname.clone_ref(py),
            },
            Kind::Mangled {
                module,
                qualname,
                mangled,
                cloudpickle_by_value,
            } => Kind::Mangled {
                module: module.clone_ref(py),
                qualname: qualname.clone_ref(py),
                mangled: mangled.clone_ref(py),
                cloudpickle_by_value: *cloudpickle_by_value,
            },
            Kind::ByValue => Kind::ByValue,
        }
    }

    /// The module and the name as read, of a by-reference kind.
    fn names(&self) -> Option<(&Py<PyString>, &Py<PyString>)> {
        match self {
            Kind::ByRef { module, qualname }
            | Kind::Mangled {
                module, qualname, ..
            } => Some((module, qualname)),
            Kind::ByValue => None,
        }
    }

    /// The same kind for `module` and `qualname` (equal to this one's, maybe other objects).
    fn with_names(self, module: Py<PyString>, qualname: Py<PyString>) -> Kind {
        match self {
            Kind::Mangled {
                mangled,
                cloudpickle_by_value,
                ..
            } => Kind::Mangled {
                module,
                qualname,
                mangled,
                cloudpickle_by_value,
            },
            _ => Kind::ByRef { module, qualname },
        }
    }
}

/// Keeps the cache from pinning objects: a weak reference where the type allows one (functions
/// and classes do), otherwise a strong one (builtin functions, which live as long as their
/// module anyway).
enum Target {
    Weak(Py<PyWeakrefReference>),
    Strong { _keep_alive: Py<PyAny> },
}

struct Entry {
    target: Target,
    kind: Kind,
    /// For `ByRef`: where the name pointed when classified, re-checked on every use.
    anchor: Option<Anchor>,
    /// Tells this entry from a later one for the same object (see [`mark`]).
    id: u64,
    /// The [`watch::Stamp`] taken before the last check of `anchor` that held and that it
    /// covers; while it holds, nothing that check read changed.
    checked: Option<watch::Stamp>,
}

/// The next [`Entry::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How `sys.modules[module]` led to the object when it was classified by reference. Rebinding
/// the name (`importlib.reload`, monkeypatching `mod.f` or `Class.f`) or replacing the module
/// makes a remembered decision stale, so the walk is repeated on every use (for a stamped one,
/// on the first use after a dict it read changed: see the module docs): a dict lookup for a
/// plain name, plus one `getattr` per dot. (`pickle` re-imports the module and walks the name every
/// time too; we skip the import and the module-name search.) The module is compared by address
/// so the cache pins nothing; the object itself is guarded by `Target`.
struct Anchor {
    module: usize,
    path: Vec<Py<PyString>>,
    /// The module's `__name__` when the by-value registry was not empty (whether it is
    /// registered depends on it); the cache is emptied when the registry changes.
    module_name: Option<Py<PyAny>>,
}

impl Anchor {
    fn clone_ref(&self, py: Python<'_>) -> Anchor {
        Anchor {
            module: self.module,
            path: self.path.iter().map(|p| p.clone_ref(py)).collect(),
            module_name: self.module_name.as_ref().map(|n| n.clone_ref(py)),
        }
    }

    /// Whether `sys.modules[module_name]` is still the same module and the path still leads
    /// from it to `obj`: `None` if not, else the [`watch::Stamp`] to mark the entry with when
    /// it covers everything the check read (else `Some(None)`).
    fn holds(
        &self,
        py: Python<'_>,
        module_name: &Bound<'_, PyString>,
        obj: &Bound<'_, PyAny>,
    ) -> Option<Option<watch::Stamp>> {
        let (first, rest) = self.path.split_first()?;
        // Taken before anything is read (it watches `sys.__dict__` and `sys.modules` first): a
        // change during the check ends it.
        let mut stamp = watch::Stamp::take(py);
        // `sys.modules` as pickle and cloudpickle read it (the attribute); anything but an
        // exact dict is left to `compute`, which asks it as they do.
        let modules = watch::sys_modules(py).ok()?;
        // SAFETY: a type check of a live object; `PyDict_GetItemWithError` returns a borrowed
        // reference (or NULL); `sys.modules` keeps the module alive while we take our own
        // reference to it, before any code can run.
        let module = unsafe {
            if ffi::PyDict_CheckExact(modules.as_ptr()) == 0 {
                return None;
            }
            let module = ffi::PyDict_GetItemWithError(modules.as_ptr(), module_name.as_ptr());
            if module.is_null() || module as usize != self.module {
                let _ = PyErr::take(py);
                return None;
            }
            Bound::from_borrowed_ptr(py, module)
        };
        // A stamp covers a real module (no `__getattr__` of a subclass) and a name of one part
        // (no class attribute on the way): its dict is covered before it is read.
        // SAFETY: a type check of a live object; `PyModule_GetDict` returns a borrowed
        // reference, owned at once.
        let covered = unsafe {
            ffi::PyModule_CheckExact(module.as_ptr()) != 0
                && rest.is_empty()
                && stamp.as_mut().is_some_and(|s| {
                    s.cover(
                        py,
                        &Bound::from_borrowed_ptr(py, ffi::PyModule_GetDict(module.as_ptr())),
                    )
                })
        };
        if let Some(seen) = &self.module_name {
            match module.getattr(pyo3::intern!(py, "__name__")) {
                Ok(name) if name.eq(seen.bind(py)).unwrap_or(false) => {}
                _ => return None,
            }
        }
        // A real module: a lookup in its dict. Anything else in `sys.modules` (some packages
        // put an object there): an attribute lookup, as `pickle` does.
        // SAFETY: type check on a live object; `PyModule_GetDict` and `PyDict_GetItemWithError`
        // return borrowed references, owned before any code can run.
        let top = unsafe {
            if ffi::PyModule_Check(module.as_ptr()) != 0 {
                let dict = ffi::PyModule_GetDict(module.as_ptr());
                let top = ffi::PyDict_GetItemWithError(dict, first.as_ptr());
                if top.is_null() {
                    let _ = PyErr::take(py);
                    return None;
                }
                Bound::from_borrowed_ptr(py, top)
            } else {
                module.getattr(first.bind(py)).ok()?
            }
        };
        let mut found = top;
        for part in rest {
            found = found.getattr(part.bind(py)).ok()?;
        }
        if !found.is(obj) {
            return None;
        }
        Some(stamp.filter(|_| covered))
    }
}

/// Entries beyond this are pruned (dead ones first); a process has far fewer live globals.
const MAX_ENTRIES: usize = 16_384;

#[derive(Default)]
struct Cache {
    entries: FxHashMap<usize, Entry>,
    /// cloudpickle's by-value registry as of the last check: registering a module by value
    /// changes the answer for every global of that module, so a change empties the cache.
    registry: Option<Py<PyAny>>,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);

fn lock() -> MutexGuard<'static, Cache> {
    // A panic while holding the lock can't leave the map inconsistent (every update is a single
    // insert or remove), so a poisoned lock is still usable.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the registry snapshot in [`Cache::registry`] is empty (set with it, under the GIL).
static REGISTRY_SEEN_EMPTY: AtomicBool = AtomicBool::new(false);

/// Empties the cache when cloudpickle's by-value registry changed since the last call.
/// Called once per `dumps` that writes a global.
pub fn check_registry(py: Python<'_>, lookup: &Lookup) -> PyResult<()> {
    let current = lookup.by_value_registry(py)?;
    // Nearly always both empty: nothing to compare, nothing to lock.
    // SAFETY: type and size reads of a live object.
    let empty = unsafe {
        ffi::PySet_Check(current.as_ptr()) != 0 && ffi::PySet_GET_SIZE(current.as_ptr()) == 0
    };
    if empty && REGISTRY_SEEN_EMPTY.load(Relaxed) {
        return Ok(());
    }
    let stale = {
        let cache = lock();
        cache.registry.as_ref().map(|seen| seen.clone_ref(py))
    };
    let unchanged = match stale {
        Some(seen) => seen.bind(py).eq(&current)?,
        None => false,
    };
    if !unchanged {
        let snapshot = PyFrozenSet::new(py, current.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
        REGISTRY_SEEN_EMPTY.store(snapshot.is_empty(), Relaxed);
        let old = {
            let mut cache = lock();
            let registry = cache.registry.replace(snapshot.into_any().unbind());
            (registry, std::mem::take(&mut cache.entries))
        };
        // Dropped outside the lock: releasing a last reference may run arbitrary code (a
        // `__del__` that calls `dumps` would otherwise wait on this lock forever).
        drop(old);
    }
    Ok(())
}

/// How many decisions are remembered.
pub fn len() -> usize {
    lock().entries.len()
}

/// Forgets every decision (`ferropickle.cache_clear()`).
pub fn clear() {
    let old = std::mem::take(&mut lock().entries);
    drop(old);
}

/// The remembered decision for `obj`, if it is still the object that was classified, its
/// `__module__` and name (`name`, from its `__reduce__`, or its `__qualname__`) are still the
/// ones it was classified with, and that name still leads to it.
#[inline]
pub fn cached<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    name: Option<&Bound<'py, PyString>>,
) -> Option<Kind> {
    let (kind, anchor, id, stamped) = {
        let cache = lock();
        let entry = cache.entries.get(&(obj.as_ptr() as usize))?;
        // Nothing the last check read changed since it held: the anchor is not needed, and the
        // object the entry was made for is alive (the module dict has referred to it since the
        // check), so it is `obj`.
        let stamped = entry.checked.filter(watch::Stamp::holds);
        let anchor = match stamped {
            Some(_) => None,
            None => {
                let alive = match &entry.target {
                    Target::Weak(w) => w
                        .bind(py)
                        .upgrade()
                        .is_some_and(|o| o.as_ptr() == obj.as_ptr()),
                    Target::Strong { .. } => true,
                };
                if !alive {
                    return None;
                }
                entry.anchor.as_ref().map(|a| a.clone_ref(py))
            }
        };
        (entry.kind.clone_ref(py), anchor, entry.id, stamped)
    };
    // Checked outside the lock: a dict lookup may call a key's `__eq__`.
    let (module, qualname) = kind.names()?;
    // The common case, without attribute lookups: the very objects remembered.
    // SAFETY: `obj` is live; the pointers read are only compared, never dereferenced.
    let same = unsafe { module_and_qualname_fields(py, obj.as_ptr()) }.is_some_and(|(m, q)| {
        let q = name.map_or(q, |n| n.as_ptr());
        m == module.as_ptr() && q == qualname.as_ptr()
    });
    // (Checked again after the fields: reading a class's `__module__` is a dict lookup.)
    if same && stamped.as_ref().is_some_and(watch::Stamp::holds) {
        return Some(kind);
    }
    // The entry was stamped but the names are other objects now: asked again from scratch.
    let anchor = anchor?;
    if same {
        if let Some(stamp) = anchor.holds(py, module.bind(py), obj)? {
            mark(obj, id, stamp);
        }
        return Some(kind);
    }
    let module_now = obj
        .getattr_opt(pyo3::intern!(py, "__module__"))
        .ok()??
        .cast_into::<PyString>()
        .ok()?;
    let name_now = match name {
        Some(n) => n.clone(),
        None => qualname_of(py, obj).ok()?,
    };
    if !module_now.as_any().eq(module.bind(py)).ok()?
        || !name_now.as_any().eq(qualname.bind(py)).ok()?
    {
        return None;
    }
    anchor.holds(py, &module_now, obj)?;
    // The objects read now are the ones written, as `save_global` writes what it just read:
    // whether two globals share a memo entry for a name depends on which str object it is.
    Some(kind.with_names(module_now.unbind(), name_now.unbind()))
}

/// Marks `obj`'s entry as checked by `stamp`, if it is still the entry `id` (a check may run
/// code that replaced it, with an anchor the stamp may not cover).
fn mark(obj: &Bound<'_, PyAny>, id: u64, stamp: watch::Stamp) {
    let mut cache = lock();
    if let Some(entry) = cache.entries.get_mut(&(obj.as_ptr() as usize)) {
        if entry.id == id {
            entry.checked = Some(stamp);
        }
    }
}

/// A function's `__module__` and `__qualname__` fields, or a class's (of metaclass `type`, with
/// `__module__` in its own dict) as `type.__module__`/`type.__qualname__` read them; `None` for
/// anything else. Borrowed pointers, to compare only.
///
/// # Safety
/// `obj` must be a live object; the GIL must be held.
unsafe fn module_and_qualname_fields(
    py: Python<'_>,
    obj: *mut ffi::PyObject,
) -> Option<(*mut ffi::PyObject, *mut ffi::PyObject)> {
    if ffi::PyFunction_Check(obj) != 0 {
        let f = obj as *mut ffi::PyFunctionObject;
        return Some(((*f).func_module, (*f).func_qualname));
    }
    if ffi::Py_TYPE(obj) != std::ptr::addr_of_mut!(ffi::PyType_Type) {
        return None;
    }
    let t = obj as *mut ffi::PyTypeObject;
    if (*t).tp_flags & ffi::Py_TPFLAGS_HEAPTYPE == 0 || (*t).tp_dict.is_null() {
        return None;
    }
    let module =
        ffi::PyDict_GetItemWithError((*t).tp_dict, pyo3::intern!(py, "__module__").as_ptr());
    if module.is_null() {
        let _ = PyErr::take(py);
        return None;
    }
    Some((module, (*(obj as *mut ffi::PyHeapTypeObject)).ht_qualname))
}

/// `obj.__qualname__`, or `obj.__name__` for an object without one.
fn qualname_of<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    match obj.getattr(pyo3::intern!(py, "__qualname__")) {
        Ok(q) => Ok(q.cast_into()?),
        Err(_) => Ok(obj.getattr(pyo3::intern!(py, "__name__"))?.cast_into()?),
    }
}

/// Whether `obj` is a function whose `__module__` is `"__main__"`: pickled by value whatever
/// else holds (`_lookup_module_and_qualname` gives up on `__main__` at once).
#[inline]
pub fn is_main_function(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is live; `PyFunction_GetModule` returns a borrowed reference to the
    // function's `__module__` (or NULL), only compared here, while `obj` keeps it alive.
    unsafe {
        if ffi::PyFunction_Check(obj.as_ptr()) == 0 {
            return false;
        }
        let module = ffi::PyFunction_GetModule(obj.as_ptr());
        !module.is_null()
            && ffi::PyUnicode_CheckExact(module) != 0
            && ffi::PyUnicode_CompareWithASCIIString(module, c"__main__".as_ptr()) == 0
    }
}

/// Classifies `obj` (a function, class or builtin) and remembers the answer. `name` is the
/// qualified name to use when `__reduce__` returned a string, as `pickle` allows.
pub fn classify(
    py: Python<'_>,
    lookup: &Lookup,
    obj: &Bound<'_, PyAny>,
    name: Option<&Bound<'_, PyString>>,
) -> PyResult<Kind> {
    let (kind, anchor) = compute(py, lookup, obj, name)?;
    if anchor.is_none() {
        // Not a decision that can be re-checked on use (see the module docs).
        return Ok(kind);
    }
    let target = match PyWeakrefReference::new(obj) {
        Ok(w) => Target::Weak(w.unbind()),
        Err(e) if e.is_instance_of::<PyTypeError>(py) => Target::Strong {
            _keep_alive: obj.clone().unbind(),
        },
        Err(e) => return Err(e),
    };
    let evicted = {
        let mut cache = lock();
        let evicted = if cache.entries.len() >= MAX_ENTRIES {
            Some(std::mem::take(&mut cache.entries))
        } else {
            None
        };
        let replaced = cache.entries.insert(
            obj.as_ptr() as usize,
            Entry {
                target,
                kind: kind.clone_ref(py),
                anchor,
                id: NEXT_ID.fetch_add(1, Relaxed),
                checked: None,
            },
        );
        (evicted, replaced)
    };
    // Released outside the lock (see `check_registry`).
    drop(evicted);
    Ok(kind)
}

/// Whether `obj` is pickled by value or by reference, mirroring cloudpickle's
/// `_should_pickle_by_reference` for functions and classes and `pickle`'s `save_global` checks
/// for everything else.
fn compute(
    py: Python<'_>,
    lookup: &Lookup,
    obj: &Bound<'_, PyAny>,
    name: Option<&Bound<'_, PyString>>,
) -> PyResult<(Kind, Option<Anchor>)> {
    // SAFETY: `obj` is a valid object for the duration of the call.
    let dynamic_ok = unsafe { ffi::PyFunction_Check(obj.as_ptr()) != 0 }
        || obj.is_instance_of::<pyo3::types::PyType>();
    let qualname: Bound<'_, PyString> = match name {
        Some(n) => n.clone(),
        None => qualname_of(py, obj)?,
    };
    let mangled = mangled_name(py, &qualname)?;
    // Anything but a function or class is found by the name `pickle` looks up (cloudpickle
    // leaves it to `pickle`'s `save_global`).
    let private = !dynamic_ok && mangled.is_some();
    let module_attr = obj.getattr_opt(pyo3::intern!(py, "__module__"))?;
    // `__module__` unset or `None`: found by a scan of `sys.modules` (`_whichmodule` for
    // cloudpickle, which gives up with `None`; `pickle.whichmodule` for the rest).
    let (module_name, scanned): (Bound<'_, PyString>, bool) = match module_attr {
        Some(m) if !m.is_none() => (m.cast_into()?, false),
        _ if dynamic_ok => {
            static WHICHMODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            let whichmodule = WHICHMODULE.import(py, "cloudpickle.cloudpickle", "_whichmodule")?;
            let found = whichmodule.call1((obj, &qualname))?;
            if found.is_none() {
                return Ok((Kind::ByValue, None));
            }
            (found.cast_into()?, true)
        }
        _ => (
            lookup
                .whichmodule
                .bind(py)
                .call1((obj, mangled.as_ref().unwrap_or(&qualname)))?
                .cast_into()?,
            true,
        ),
    };
    let modname = module_name.to_str()?;
    if dynamic_ok && modname == "__main__" {
        return Ok((Kind::ByValue, None));
    }
    let sys_modules = watch::sys_modules(py)?;
    let module = match sys_modules.get_item(&module_name) {
        Ok(m) if !m.is_none() => m,
        _ if dynamic_ok => return Ok((Kind::ByValue, None)),
        _ => match py.import(module_name.clone()) {
            Ok(m) => m.into_any(),
            Err(e) => {
                // CPython 3.14 shows the import's own error.
                let why = if cfg!(Py_3_14) {
                    e.value(py).str()?.to_string()
                } else {
                    format!("import of module {} failed", module_name.repr()?)
                };
                let err = pickling_error(format!("Can't pickle {}: {why}", obj.repr()?));
                err.set_cause(py, Some(e));
                return Err(err);
            }
        },
    };
    let module_addr = module.as_ptr() as usize;
    // The name `save_global` looks up (3.15 mangles private parts).
    let lookup_name = mangled.clone().unwrap_or_else(|| qualname.clone());
    let first = if private { &lookup_name } else { &qualname };
    let (path, mangled) = match walk(py, &module, first.to_str()?)? {
        Walk::Found { found, path } if found.is(obj) => (path, mangled.filter(|_| private)),
        _ if dynamic_ok => {
            // cloudpickle looks the name up as it is and goes by value; 3.15's `pickle` finds
            // a private function or class (`A.__m`) by its mangled name (`A._A__m`).
            let walked = match &mangled {
                Some(m) if !scanned => walk(py, &module, m.to_str()?)?,
                _ => Walk::Missing,
            };
            match walked {
                Walk::Found { found, path } if found.is(obj) => (path, mangled),
                _ => return Ok((Kind::ByValue, None)),
            }
        }
        walked => return Err(not_found(obj, modname, &lookup_name, walked)?),
    };
    // cloudpickle's `_is_registered_pickle_by_value(module)`: by the found module's own
    // `__name__`, which may no longer be its key in `sys.modules`.
    let mut module_name_seen = None;
    if dynamic_ok && lookup.by_value_registry(py)?.len()? > 0 {
        let own_name = module.getattr(pyo3::intern!(py, "__name__"))?;
        if registered_by_value(py, lookup, own_name.cast::<PyString>()?.to_str()?)? {
            return Ok((Kind::ByValue, None));
        }
        module_name_seen = Some(own_name.unbind());
    }
    let anchor = (!scanned).then(|| Anchor {
        module: module_addr,
        path,
        module_name: module_name_seen,
    });
    // The very `__module__` object, as `save_global` writes it: two globals share a memo entry
    // for their module name only when they share that object.
    let module = module_name.clone().unbind();
    let kind = match mangled {
        None => Kind::ByRef {
            module,
            qualname: qualname.unbind(),
        },
        Some(mangled) => Kind::Mangled {
            module,
            qualname: qualname.unbind(),
            mangled: mangled.unbind(),
            cloudpickle_by_value: dynamic_ok,
        },
    };
    Ok((kind, anchor))
}

/// Where a walk of a dotted name from a module ended.
enum Walk<'py> {
    /// Every part found: what the last one is, and the parts.
    Found {
        found: Bound<'py, PyAny>,
        path: Vec<Py<PyString>>,
    },
    /// A `<locals>` part came first.
    Local,
    /// A part is missing.
    Missing,
}

/// `getattr` of each part of `name` in turn, from `module`, as `save_global` walks it.
fn walk<'py>(py: Python<'py>, module: &Bound<'py, PyAny>, name: &str) -> PyResult<Walk<'py>> {
    let mut found = module.clone();
    let mut path = Vec::new();
    for part in name.split('.') {
        if part == "<locals>" {
            return Ok(Walk::Local);
        }
        match found.getattr_opt(part)? {
            Some(next) => {
                path.push(PyString::intern(py, part).unbind());
                found = next
            }
            None => return Ok(Walk::Missing),
        }
    }
    Ok(Walk::Found { found, path })
}

/// `save_global`'s error when `name` does not lead from module `modname` to `obj`.
fn not_found(
    obj: &Bound<'_, PyAny>,
    modname: &str,
    name: &Bound<'_, PyString>,
    walked: Walk<'_>,
) -> PyResult<PyErr> {
    let obj = obj.repr()?;
    Ok(pickling_error(match walked {
        Walk::Local => format!("Can't pickle local object {obj}"),
        Walk::Missing if cfg!(Py_3_14) => {
            format!("Can't pickle {obj}: it's not found as {modname}.{name}")
        }
        Walk::Missing => format!("Can't pickle {obj}: attribute lookup {name} on {modname} failed"),
        Walk::Found { .. } => {
            format!("Can't pickle {obj}: it's not the same object as {modname}.{name}")
        }
    }))
}

/// The name 3.15's `save_global` looks up for `name`, if it differs: each private part
/// (`__m`, not `__m__`) after the first is mangled with the part before it, as the compiler
/// mangles a private name in a class body (`A.__m` is `A._A__m`). Earlier interpreters look
/// the name up as it is.
fn mangled_name<'py>(
    py: Python<'py>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyString>>> {
    if !cfg!(Py_3_15) {
        return Ok(None);
    }
    let text = name.to_str()?;
    if !text.contains(".__") {
        return Ok(None);
    }
    let parts: Vec<&str> = text.split('.').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let owner = if i > 0 {
            parts[i - 1].trim_start_matches('_')
        } else {
            ""
        };
        if i > 0 && part.starts_with("__") && !part.ends_with("__") && !owner.is_empty() {
            out.push(format!("_{owner}{part}"));
        } else {
            out.push((*part).to_owned());
        }
    }
    let mangled = out.join(".");
    Ok((mangled != text).then(|| PyString::new(py, &mangled)))
}

/// cloudpickle's `_is_registered_pickle_by_value`: the module or one of its parent packages
/// was registered with `cloudpickle.register_pickle_by_value`.
pub fn registered_by_value(py: Python<'_>, lookup: &Lookup, modname: &str) -> PyResult<bool> {
    let registry = lookup.by_value_registry(py)?;
    // Nearly always empty: then no name needs building.
    if registry.len()? == 0 {
        return Ok(false);
    }
    let mut name = modname;
    loop {
        if registry.contains(name)? {
            return Ok(true);
        }
        match name.rsplit_once('.') {
            Some((parent, _)) => name = parent,
            None => return Ok(false),
        }
    }
}
