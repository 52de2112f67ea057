//! Functions, classes and builtins: by reference (`save_global` in `_pickle.c`: `STACK_GLOBAL`
//! or `EXT*`) or by value (`by_value.rs`), as `global_kind.rs` decides.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyType};

use super::{by_value, reduce};
use crate::dumps::global_kind::{self, Kind};
use crate::dumps::Pickler;
use crate::opcodes::*;

impl<'py> Pickler<'py> {
    /// Classes: the three singleton types as `type(None)` etc. (`save_singleton_type`), the rest
    /// by reference or, for dynamic classes, by value.
    ///
    /// The builtin-type table: cloudpickle's `save_global` writes every class in
    /// `_BUILTIN_TYPE_NAMES` (the classes of `types`, read from the installed cloudpickle) as
    /// `_builtin_type(name)`, `pickle` writes the ones it finds by name (`types.SimpleNamespace`,
    /// `GenericAlias`, `UnionType`, ...) by name. A stream equals `pickle`'s as long as nothing
    /// in it needs cloudpickle and cloudpickle's, from its first byte, once something does. So
    /// these classes are written as `pickle` writes them while nothing only cloudpickle writes
    /// (a function or class by value, a code object, cell or module) was met, and as cloudpickle
    /// writes them once one was (`cloudpickle_stream`). One written in `pickle`'s form before the
    /// first such object is noted (`pickle_only_form`); when that object comes, the walk
    /// starts over as cloudpickle's (`Pickler::enter_cloudpickle_stream`), so no stream mixes
    /// the two forms.
    pub(in crate::dumps) fn save_type(&mut self, cls: &Bound<'py, PyType>) -> PyResult<()> {
        let py = self.py;
        for singleton in [py.None(), py.NotImplemented(), py.Ellipsis()] {
            let singleton = singleton.into_bound(py);
            if cls.is(singleton.get_type()) {
                let builtins_type = self.lookup.builtins_type.bind(py).clone();
                // `save_reduce(type, (singleton,))`: the argument tuple is memoized too.
                self.save(&builtins_type, false)?;
                self.save(&singleton, false)?;
                self.close_fresh_tuple(1);
                self.out.op(REDUCE);
                self.memoize(cls.as_any());
                return Ok(());
            }
        }
        // SAFETY: reading the type of a live object and the address of a static type object.
        let plain =
            unsafe { ffi::Py_TYPE(cls.as_ptr()) == std::ptr::addr_of_mut!(ffi::PyType_Type) };
        // The table's classes are plain classes: another one is looked up there (hashed, as
        // cloudpickle does) only once the stream is cloudpickle's, since `pickle` never hashes
        // it (a metaclass may make it unhashable).
        let names = self.lookup.cp.builtin_type_names.bind(py);
        let in_table = if plain || self.cloudpickle_stream {
            names.cast::<PyDict>()?.get_item(cls)?
        } else {
            None
        };
        if let Some(name) = in_table {
            if self.cloudpickle_stream {
                // `save_reduce(_builtin_type, (name,), obj=cls)`.
                self.save(self.lookup.cp.builtin_type.bind(py), false)?;
                self.save(&name, false)?;
                self.close_fresh_tuple(1);
                self.out.op(REDUCE);
                self.memoize(cls.as_any());
                return Ok(());
            }
            // Written in `pickle`'s form below: noted, in case the stream turns cloudpickle's.
            self.pickle_only_form = true;
        }
        // A class with a metaclass: a copyreg (or cloudpickle) reducer registered for the
        // metaclass wins, as in `save()`, which consults the dispatch table first.
        if !plain && reduce::reducer_for(self, &cls.get_type())?.is_some() {
            return reduce::reduce_and_save(self, cls.as_any());
        }
        self.save_global(cls.as_any(), None)
    }

    /// Functions, classes and builtins: `STACK_GLOBAL` (or `EXT*`) when importable by name,
    /// otherwise by value. `name` is a qualified name a `__reduce__` returned as a string.
    pub fn save_global(
        &mut self,
        obj: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyString>>,
    ) -> PyResult<()> {
        let kind = self.global_kind(obj, name)?;
        self.write_global(obj, kind)
    }

    /// The remembered by-reference/by-value decision for `obj`, or a fresh one.
    pub fn global_kind(
        &mut self,
        obj: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyString>>,
    ) -> PyResult<Kind> {
        if name.is_none() && global_kind::is_main_function(obj) {
            // The common by-value case, decided without the table: a `client.submit` loop
            // hands the scheduler a new copy of its function for every task.
            return Ok(Kind::ByValue);
        }
        if !self.registry_checked {
            global_kind::check_registry(self.py, self.lookup)?;
            self.registry_checked = true;
        }
        match global_kind::cached(self.py, obj, name) {
            Some(kind) => Ok(kind),
            None => global_kind::classify(self.py, self.lookup, obj, name),
        }
    }

    pub fn write_global(&mut self, obj: &Bound<'py, PyAny>, kind: Kind) -> PyResult<()> {
        match kind {
            Kind::ByRef { module, qualname } => {
                let module = module.into_bound(self.py);
                let qualname = qualname.into_bound(self.py);
                if let Some(code) = self.extension_code(&module, &qualname)? {
                    // `save_global` writes extension codes without memoizing them.
                    self.out.ext(code);
                    return Ok(());
                }
                self.write_stack_global(obj, &module, &qualname)
            }
            // 3.15's `pickle` writes a private name by its mangled form; cloudpickle writes a
            // function or class of that kind by value. Written as the stream's writer would,
            // noted in case the stream turns cloudpickle's (see `save_type`).
            Kind::Mangled {
                cloudpickle_by_value: true,
                ..
            } if self.cloudpickle_stream => by_value::save_by_value(self, obj),
            Kind::Mangled {
                module,
                mangled,
                cloudpickle_by_value,
                ..
            } => {
                self.pickle_only_form |= cloudpickle_by_value;
                self.write_global(
                    obj,
                    Kind::ByRef {
                        module,
                        qualname: mangled,
                    },
                )
            }
            Kind::ByValue => by_value::save_by_value(self, obj),
        }
    }

    /// `module qualname STACK_GLOBAL MEMOIZE`, the names memoized as `save_global` does (a
    /// second global from the same module fetches its module name).
    pub fn write_stack_global(
        &mut self,
        obj: &Bound<'py, PyAny>,
        module: &Bound<'py, PyString>,
        qualname: &Bound<'py, PyString>,
    ) -> PyResult<()> {
        self.save(module.as_any(), false)?;
        self.save(qualname.as_any(), false)?;
        self.out.op(STACK_GLOBAL);
        self.memoize(obj);
        Ok(())
    }

    /// The `copyreg.add_extension` code for a global, if one is registered (almost never).
    pub(in crate::dumps) fn extension_code(
        &self,
        module: &Bound<'py, PyString>,
        qualname: &Bound<'py, PyString>,
    ) -> PyResult<Option<u32>> {
        let registry = self.lookup.extension_registry.bind(self.py);
        if registry.is_empty() {
            return Ok(None);
        }
        match registry.get_item((module, qualname))? {
            Some(code) => Ok(Some(code.extract()?)),
            None => Ok(None),
        }
    }
}
