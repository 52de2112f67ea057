//! How the installed dask lays out its graph nodes (`dask._task_spec`), probed once.
//!
//! The scheduler pickles one `Task` per message; its `__getstate__` is Python code that builds a
//! tuple of every slot, and that call costs more than writing the task does. So each node type's
//! fields are read from its slots directly, in the order its `__reduce_ex__(5)` returns them:
//!
//! - `TaskRef`, `Alias`, `DataNode`: `cls(*slots)` (their `__reduce__`);
//! - `Task`: `copyreg.__newobj__(cls)`, then the tuple of `cls.get_all_slots()` values as its
//!   state (`Task.__getstate__`);
//! - `List`, `Tuple`, `Set`, `Dict` (nested containers): the same with a list, and `kwargs`
//!   without its redundant `"constructor"` (`NestedContainer.__getstate__`).
//!
//! dask is never imported here: the types are picked up once `dask._task_spec` is in
//! `sys.modules`. Each type's layout is checked then against its own `__reduce_ex__(5)` on a
//! sample node; a type whose check fails (a dask version that changed it) is left out, and
//! keeps the generic paths.

use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{IntoPyDict, PyDict, PyList, PyString, PyTuple, PyType};

use crate::slots::Slot;

pub struct TaskNodeLayout {
    nodes: Vec<Node>,
}

/// One node type: its class, the name its fields are reported under, its fields in state order
/// and how its reduce value rebuilds it.
pub struct Node {
    pub cls: Py<PyType>,
    pub name: &'static str,
    pub fields: Vec<Field>,
    pub reduction: Reduction,
    /// `BUILD` may set the slots directly instead of calling `__setstate__` (checked on a
    /// sample: `Task.__setstate__` sets each slot from the state tuple, in order).
    setstate_by_slots: bool,
}

/// How a node's `__reduce_ex__(5)` rebuilds it.
pub enum Reduction {
    /// `cls(*fields)` with `REDUCE`.
    Call,
    /// `NEWOBJ` then `BUILD` with the fields as a tuple (`Task`) or a list (nested containers,
    /// which also drop `"constructor"` from `kwargs`).
    State { as_list: bool },
}

/// One slot of a node: read through its descriptor, or by attribute when a class attribute
/// shadows it (`List.constructor`).
pub struct Field {
    access: Access,
    pub name: String,
    pub role: Role,
}

enum Access {
    Slot(Slot),
    Attr(Py<PyString>),
}

#[derive(PartialEq)]
pub enum Role {
    Plain,
    /// `Task.args`: its items are named `Task.args[i]` in error paths.
    Args,
    /// A nested container's `kwargs`, written without `"constructor"`.
    ContainerKwargs,
}

impl Field {
    fn resolve(cls: &Bound<'_, PyAny>, name: &str, nested: bool) -> PyResult<Field> {
        let access = match Slot::resolve(cls, name)? {
            Some(slot) => Access::Slot(slot),
            None => Access::Attr(PyString::intern(cls.py(), name).unbind()),
        };
        let role = match name {
            "args" => Role::Args,
            "kwargs" if nested => Role::ContainerKwargs,
            _ => Role::Plain,
        };
        Ok(Field {
            access,
            name: name.to_owned(),
            role,
        })
    }

    fn get<'py>(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        let v = match &self.access {
            Access::Slot(s) => s.get(obj)?,
            Access::Attr(n) => obj.getattr(n.bind(obj.py())).ok()?,
        };
        if self.role == Role::ContainerKwargs {
            let kw = v.cast::<PyDict>().ok()?.copy().ok()?;
            kw.del_item("constructor").ok();
            return Some(kw.into_any());
        }
        Some(v)
    }
}

static TASK_NODES: PyOnceLock<Option<TaskNodeLayout>> = PyOnceLock::new();

/// `len(sys.modules)` when `dask._task_spec` was last found missing: until a module is
/// imported, there is no need to look again.
static MODULES_SEEN: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The dask node layouts, once `dask._task_spec` has been imported by someone else.
pub fn get(py: Python<'_>) -> Option<&'static TaskNodeLayout> {
    if let Some(resolved) = TASK_NODES.get(py) {
        return resolved.as_ref();
    }
    // SAFETY: `PyImport_GetModuleDict` returns a borrowed reference to `sys.modules`.
    let n_modules = unsafe { ffi::PyDict_Size(ffi::PyImport_GetModuleDict()) } as usize;
    if MODULES_SEEN.swap(n_modules, Ordering::Relaxed) == n_modules {
        return None;
    }
    let name = pyo3::intern!(py, "dask._task_spec");
    // SAFETY: `PyImport_GetModule` returns a new reference or NULL (with or without an error).
    let module = unsafe { ffi::PyImport_GetModule(name.as_ptr()) };
    if module.is_null() {
        let _ = PyErr::take(py);
        return None;
    }
    // SAFETY: a new reference we now own.
    let module = unsafe { Bound::from_owned_ptr(py, module) };
    TASK_NODES
        .get_or_init(py, || TaskNodeLayout::resolve(&module).ok())
        .as_ref()
}

impl TaskNodeLayout {
    fn resolve(module: &Bound<'_, PyAny>) -> PyResult<TaskNodeLayout> {
        let py = module.py();
        let newobj = py.import("copyreg")?.getattr("__newobj__")?;
        let mut nodes = Vec::new();
        let task_ref = module.getattr("TaskRef")?.call1(("k",))?;
        let call_samples = [
            ("TaskRef", vec!["key"], task_ref.clone()),
            (
                "Alias",
                vec!["key", "target"],
                module.getattr("Alias")?.call1(("a", "b"))?,
            ),
            (
                "DataNode",
                vec!["key", "value"],
                module.getattr("DataNode")?.call1(("k", 1))?,
            ),
        ];
        for (name, fields, sample) in call_samples {
            let cls = module.getattr(name)?.cast_into::<PyType>()?;
            let fields = fields
                .into_iter()
                .map(|f| Field::resolve(cls.as_any(), f, false))
                .collect::<PyResult<Vec<_>>>()?;
            let node = Node {
                cls: cls.unbind(),
                name,
                fields,
                reduction: Reduction::Call,
                setstate_by_slots: false,
            };
            if node.matches(&sample, &newobj)? {
                nodes.push(node);
            }
        }
        let task = module.getattr("Task")?;
        let kwargs = [("x", task_ref)].into_py_dict(py)?;
        let state_samples = [
            (
                "Task",
                task.call(("k", py.get_type::<PyList>(), 1), Some(&kwargs))?,
            ),
            ("List", module.getattr("List")?.call1((1, 2))?),
            ("Tuple", module.getattr("Tuple")?.call1((1, 2))?),
            ("Set", module.getattr("Set")?.call1((1, 2))?),
            ("Dict", module.getattr("Dict")?.call1((("a", 1),))?),
        ];
        for (name, sample) in state_samples {
            let cls = module.getattr(name)?.cast_into::<PyType>()?;
            let slot_names: Vec<String> = cls.call_method0("get_all_slots")?.extract()?;
            let nested = name != "Task";
            let fields = slot_names
                .iter()
                .map(|f| Field::resolve(cls.as_any(), f, nested))
                .collect::<PyResult<Vec<_>>>()?;
            let mut node = Node {
                cls: cls.unbind(),
                name,
                fields,
                reduction: Reduction::State { as_list: nested },
                setstate_by_slots: false,
            };
            if node.matches(&sample, &newobj)? {
                node.setstate_by_slots = !nested && node.setstate_matches(&sample)?;
                nodes.push(node);
            }
        }
        Ok(TaskNodeLayout { nodes })
    }

    /// The node type whose class is exactly `ty`.
    #[inline]
    pub fn node_for(&self, ty: *mut ffi::PyTypeObject) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.cls.as_ptr() == ty as *mut ffi::PyObject)
    }

    /// `BUILD` for a `Task`: sets its slots from the state tuple directly, which is what its
    /// `__setstate__` does in Python. `false` (nothing done) for anything else, including a
    /// state of another shape, which then takes the `__setstate__` call.
    pub fn restore(&self, inst: &Bound<'_, PyAny>, state: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Some(node) = self.node_for(inst.get_type_ptr()) else {
            return Ok(false);
        };
        if !node.setstate_by_slots {
            return Ok(false);
        }
        let Ok(state) = state.cast::<PyTuple>() else {
            return Ok(false);
        };
        if state.len() != node.fields.len() {
            return Ok(false);
        }
        for (field, value) in node.fields.iter().zip(state.iter()) {
            let Access::Slot(slot) = &field.access else {
                return Ok(false);
            };
            slot.set(inst, &value)?;
        }
        Ok(true)
    }
}

impl Node {
    /// Whether what we would write for `sample` is what its own `__reduce_ex__(5)` describes.
    fn matches(&self, sample: &Bound<'_, PyAny>, newobj: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = sample.py();
        let Some(values) = self.values(sample) else {
            return Ok(false);
        };
        let reduced = sample.call_method1("__reduce_ex__", (5,))?;
        let cls = self.cls.bind(py);
        let expected = match self.reduction {
            Reduction::Call => (cls, PyTuple::new(py, values)?)
                .into_pyobject(py)?
                .into_any(),
            Reduction::State { as_list } => {
                let state = if as_list {
                    PyList::new(py, values)?.into_any()
                } else {
                    PyTuple::new(py, values)?.into_any()
                };
                (newobj, (cls,), state, py.None(), py.None())
                    .into_pyobject(py)?
                    .into_any()
            }
        };
        // A node's own `__eq__` may tokenize; compare the reduce tuples item by item instead.
        let reduced = reduced.cast_into::<PyTuple>()?;
        let expected = expected.cast_into::<PyTuple>()?;
        if reduced.len() != expected.len() {
            return Ok(false);
        }
        for (a, b) in reduced.iter().zip(expected.iter()) {
            if !(a.is(&b) || a.eq(&b)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether setting the slots from `sample`'s state on a blank instance gives what its own
    /// `__setstate__` gives.
    fn setstate_matches(&self, sample: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = sample.py();
        if self
            .fields
            .iter()
            .any(|f| !matches!(f.access, Access::Slot(_)))
        {
            return Ok(false);
        }
        let Some(values) = self.values(sample) else {
            return Ok(false);
        };
        let state = PyTuple::new(py, &values)?;
        let cls = self.cls.bind(py);
        let by_python = cls.call_method1("__new__", (cls,))?;
        by_python.call_method1("__setstate__", (&state,))?;
        let native = cls.call_method1("__new__", (cls,))?;
        for (field, value) in self.fields.iter().zip(state.iter()) {
            if let Access::Slot(slot) = &field.access {
                slot.set(&native, &value)?;
            }
        }
        for field in &self.fields {
            let (a, b) = (field.get(&by_python), field.get(&native));
            match (a, b) {
                (Some(a), Some(b)) if a.is(&b) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The field values in order, with nested containers' `kwargs` already without
    /// `"constructor"`; `None` if a slot is unset (the generic path then reports it).
    pub fn values<'py>(&self, obj: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
        // Sized up front: collecting through `Option` would grow the vector step by step.
        let mut out = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            out.push(field.get(obj)?);
        }
        Some(out)
    }
}
