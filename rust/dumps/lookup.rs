//! Python objects the pickler consults on every call, looked up once per interpreter.
//!
//! Like pydantic-core's `ObTypeLookup`: fetching `copyreg.dispatch_table` or cloudpickle's
//! reducers by attribute on each call would cost more than pickling a small object.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PySet, PyString, PyType};

pub struct Lookup {
    /// `copyreg.dispatch_table`, which `pickle` consults before `__reduce_ex__`.
    pub copyreg_dispatch: Py<PyDict>,
    /// `copyreg._extension_registry`: `(module, name) -> code` for `EXT1/2/4`.
    pub extension_registry: Py<PyDict>,
    pub copyreg_newobj: Py<PyAny>,
    pub copyreg_newobj_ex: Py<PyAny>,
    /// cloudpickle's reducers for types it pickles differently from `pickle` (methods, code
    /// objects, modules, properties, loggers, dict views, ...); they win over copyreg's, as in
    /// `cloudpickle.Pickler.dispatch_table`.
    pub cloudpickle_dispatch: Py<PyDict>,
    pub cloudpickle_dumps: Py<PyAny>,
    /// The set behind `cloudpickle.register_pickle_by_value` (`_PICKLE_BY_VALUE_MODULES`), read
    /// directly since it is consulted on every call; a copy from the public
    /// `list_registry_pickle_by_value()` if a cloudpickle version renames it.
    cloudpickle_registry_set: Option<Py<PySet>>,
    cloudpickle_registry_fn: Py<PyAny>,
    /// `pickle.whichmodule`, for the rare global without a `__module__`.
    pub whichmodule: Py<PyAny>,
    /// `pickle.loads`: what a by-value fragment is wrapped in (see `by_value.rs`).
    pub pickle_loads: Py<PyAny>,
    pub pickle_buffer_type: Py<PyType>,
    pub builtins_type: Py<PyAny>,
    pub str_pickle: Py<PyString>,
    pub str_loads: Py<PyString>,
}

static LOOKUP: PyOnceLock<Lookup> = PyOnceLock::new();

impl Lookup {
    /// The names of the modules registered with `cloudpickle.register_pickle_by_value`.
    pub fn by_value_registry<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.cloudpickle_registry_set {
            Some(set) => Ok(set.bind(py).clone().into_any()),
            None => self.cloudpickle_registry_fn.bind(py).call0(),
        }
    }

    pub fn get(py: Python<'_>) -> PyResult<&Lookup> {
        LOOKUP.get_or_try_init(py, || Self::init(py))
    }

    fn init(py: Python<'_>) -> PyResult<Lookup> {
        let copyreg = py.import("copyreg")?;
        let pickle = py.import("pickle")?;
        let cloudpickle = py.import("cloudpickle")?;
        let cp_impl = py.import("cloudpickle.cloudpickle")?;
        Ok(Lookup {
            copyreg_dispatch: copyreg.getattr("dispatch_table")?.cast_into()?.unbind(),
            extension_registry: copyreg
                .getattr("_extension_registry")?
                .cast_into()?
                .unbind(),
            copyreg_newobj: copyreg.getattr("__newobj__")?.unbind(),
            copyreg_newobj_ex: copyreg.getattr("__newobj_ex__")?.unbind(),
            cloudpickle_dispatch: cp_impl
                .getattr("Pickler")?
                .getattr("_dispatch_table")?
                .cast_into()?
                .unbind(),
            cloudpickle_dumps: cloudpickle.getattr("dumps")?.unbind(),
            cloudpickle_registry_set: cp_impl
                .getattr("_PICKLE_BY_VALUE_MODULES")
                .ok()
                .and_then(|s| s.cast_into::<PySet>().ok())
                .map(Bound::unbind),
            cloudpickle_registry_fn: cloudpickle
                .getattr("list_registry_pickle_by_value")?
                .unbind(),
            whichmodule: pickle.getattr("whichmodule")?.unbind(),
            pickle_loads: pickle.getattr("loads")?.unbind(),
            pickle_buffer_type: pickle.getattr("PickleBuffer")?.cast_into()?.unbind(),
            builtins_type: py.get_type::<PyType>().into_any().unbind(),
            str_pickle: PyString::intern(py, "pickle").unbind(),
            str_loads: PyString::intern(py, "loads").unbind(),
        })
    }
}
