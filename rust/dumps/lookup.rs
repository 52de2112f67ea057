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
    /// cloudpickle's reconstructors and helpers, which by-value functions, code objects, cells
    /// and modules are written with (see `types/by_value.rs`, `types/code.rs`): the same
    /// callables `cloudpickle.dumps` writes, so stock `pickle.loads` (with cloudpickle
    /// installed) reads our streams as it reads cloudpickle's.
    pub cp: CloudpickleFns,
    /// The set behind `cloudpickle.register_pickle_by_value` (`_PICKLE_BY_VALUE_MODULES`), read
    /// directly since it is consulted on every call; a copy from the public
    /// `list_registry_pickle_by_value()` if a cloudpickle version renames it.
    cloudpickle_registry_set: Option<Py<PySet>>,
    cloudpickle_registry_fn: Py<PyAny>,
    /// `pickle.whichmodule`, for the rare global without a `__module__`.
    pub whichmodule: Py<PyAny>,
    pub pickle_buffer_type: Py<PyType>,
    pub builtins_type: Py<PyAny>,
}

/// Callables and tables of `cloudpickle.cloudpickle`, by their cloudpickle names.
pub struct CloudpickleFns {
    pub make_function: Py<PyAny>,
    pub function_setstate: Py<PyAny>,
    pub make_empty_cell: Py<PyAny>,
    pub make_cell: Py<PyAny>,
    pub subimport: Py<PyAny>,
    pub builtin_type: Py<PyAny>,
    /// `_BUILTIN_TYPE_NAMES`: every class of `types`, by its name there, which
    /// `Pickler.save_global` writes as `_builtin_type(name)`.
    pub builtin_type_names: Py<PyAny>,
    /// `_extract_code_globals(code)`: the global names a code object (and the code nested in
    /// it) reads or writes, in a deterministic order. Called once per distinct code object.
    pub extract_code_globals: Py<PyAny>,
    /// `_find_imported_submodules(code, deps)`, called once per code object, module and
    /// state of `sys.modules`.
    pub find_imported_submodules: Py<PyAny>,
    /// `_class_reduce(cls)`: the reduction of a class pickled by value.
    pub class_reduce: Py<PyAny>,
    pub code_type: Py<PyType>,
    /// `types.MethodType`: bound methods, which `types/reduce.rs` writes by name where it can.
    pub method_type: Py<PyType>,
    pub cell_type: Py<PyType>,
    /// The `"CodeType"` that `_builtin_type` is called with to get `types.CodeType` back.
    pub str_code_type: Py<PyString>,
    /// `"<dynamic-code>"`: what cloudpickle writes as every code object's `co_filename`.
    pub str_dynamic_code: Py<PyString>,
    /// Whether `_code_reduce` writes `"<dynamic-code>"` as every `co_filename` (3.1.3+).
    pub dynamic_filename: bool,
    /// `True` where code objects have `co_exceptiontable` and `co_qualname` (3.11+): the
    /// `CodeType` constructor takes them, and `_code_reduce` writes them.
    pub code_has_exceptiontable: bool,
}

impl CloudpickleFns {
    fn init(py: Python<'_>) -> PyResult<CloudpickleFns> {
        let cp = py.import("cloudpickle.cloudpickle")?;
        let get = |name: &str| -> PyResult<Py<PyAny>> { Ok(cp.getattr(name)?.unbind()) };
        let types = py.import("types")?;
        let code_type = types.getattr("CodeType")?.cast_into::<PyType>()?;
        let code_has_exceptiontable = code_type.hasattr("co_exceptiontable")?;
        // `_code_reduce(code)[1][10]` is the `co_filename` it writes (both field orders).
        let sample = py.eval(c"(lambda: None).__code__", None, None)?;
        let dynamic_filename = cp
            .getattr("_code_reduce")?
            .call1((sample,))?
            .get_item(1)?
            .get_item(10)?
            .eq("<dynamic-code>")?;
        Ok(CloudpickleFns {
            make_function: get("_make_function")?,
            function_setstate: get("_function_setstate")?,
            make_empty_cell: get("_make_empty_cell")?,
            make_cell: get("_make_cell")?,
            subimport: get("subimport")?,
            builtin_type: get("_builtin_type")?,
            builtin_type_names: get("_BUILTIN_TYPE_NAMES")?,
            extract_code_globals: get("_extract_code_globals")?,
            find_imported_submodules: get("_find_imported_submodules")?,
            class_reduce: get("_class_reduce")?,
            code_type: code_type.unbind(),
            method_type: types.getattr("MethodType")?.cast_into::<PyType>()?.unbind(),
            cell_type: types.getattr("CellType")?.cast_into::<PyType>()?.unbind(),
            str_code_type: PyString::intern(py, "CodeType").unbind(),
            str_dynamic_code: PyString::new(py, "<dynamic-code>").unbind(),
            dynamic_filename,
            code_has_exceptiontable,
        })
    }
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
            cp: CloudpickleFns::init(py)?,
            cloudpickle_registry_set: cp_impl
                .getattr("_PICKLE_BY_VALUE_MODULES")
                .ok()
                .and_then(|s| s.cast_into::<PySet>().ok())
                .map(Bound::unbind),
            cloudpickle_registry_fn: cloudpickle
                .getattr("list_registry_pickle_by_value")?
                .unbind(),
            whichmodule: pickle.getattr("whichmodule")?.unbind(),
            pickle_buffer_type: pickle.getattr("PickleBuffer")?.cast_into()?.unbind(),
            builtins_type: py.get_type::<PyType>().into_any().unbind(),
        })
    }
}
