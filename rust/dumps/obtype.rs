//! What the walker has in hand: an object's type, classified once (as orjson's
//! `pyobject_to_obtype` does) so that `Pickler::save` dispatches in one `match`.
//!
//! Type pointers are compared in order of frequency: the atoms first (str, int, None, float,
//! bool), then the containers, classes and functions, then the types written from their fields
//! (whose layouts were looked up once per call), then the rest, which goes through
//! `__reduce_ex__`. Every check is on the exact type, as in `save()` in `_pickle.c`: a subclass
//! of `dict` is reduced like any other object.

use pyo3::ffi;

use super::lookup::Lookup;
use crate::layouts::partial::PartialLayout;
use crate::layouts::path::PathLayout;
use crate::layouts::task_node::{Node, TaskNodeLayout};

/// The layouts of the types written from their fields, each `None` when this Python's layout
/// is not the one its writer expects (those types are then reduced like any other object).
#[derive(Clone, Copy)]
pub struct Layouts {
    pub path: Option<&'static PathLayout>,
    pub partial: Option<&'static PartialLayout>,
    pub task_nodes: Option<&'static TaskNodeLayout>,
}

/// How an object is written; see `Pickler::save` for the writer of each.
#[derive(Clone, Copy)]
pub enum ObType {
    Str,
    Int,
    None,
    Float,
    Bool,
    Tuple,
    List,
    Dict,
    Bytes,
    Set,
    FrozenSet,
    ByteArray,
    /// A class (of any metaclass).
    Type,
    /// A Python function.
    Function,
    Partial(&'static PartialLayout),
    Path(&'static PathLayout),
    TaskNode(&'static Node),
    /// The types cloudpickle reduces its own way, written natively (`types/code.rs`).
    Code,
    Cell,
    Module,
    PickleBuffer,
    /// Everything else: a reducer from a dispatch table, or `__reduce_ex__`.
    Other,
}

impl ObType {
    /// Classifies the object at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be a live object; only its type (and, for `None` and bools, its address) is
    /// read.
    #[inline(always)]
    pub unsafe fn of(ptr: *mut ffi::PyObject, layouts: &Layouts, lookup: &Lookup) -> ObType {
        if ffi::PyUnicode_CheckExact(ptr) != 0 {
            ObType::Str
        } else if ffi::PyLong_CheckExact(ptr) != 0 {
            ObType::Int
        } else if ptr == ffi::Py_None() {
            ObType::None
        } else if ffi::PyFloat_CheckExact(ptr) != 0 {
            ObType::Float
        } else if ffi::PyBool_Check(ptr) != 0 {
            ObType::Bool
        } else {
            Self::of_non_atom(ptr, layouts, lookup)
        }
    }

    /// Whether the object is written from its value alone, without a reference of our own:
    /// None, a bool, a float or an int (which `Pickler::save_scalar` writes when it fits in
    /// 64 bits).
    #[inline(always)]
    pub fn is_scalar(self) -> bool {
        matches!(
            self,
            ObType::Int | ObType::None | ObType::Float | ObType::Bool
        )
    }

    #[inline(never)]
    unsafe fn of_non_atom(ptr: *mut ffi::PyObject, layouts: &Layouts, lookup: &Lookup) -> ObType {
        if ffi::PyTuple_CheckExact(ptr) != 0 {
            return ObType::Tuple;
        }
        if ffi::PyList_CheckExact(ptr) != 0 {
            return ObType::List;
        }
        if ffi::PyDict_CheckExact(ptr) != 0 {
            return ObType::Dict;
        }
        if ffi::PyBytes_CheckExact(ptr) != 0 {
            return ObType::Bytes;
        }
        if ffi::PySet_CheckExact(ptr) != 0 {
            return ObType::Set;
        }
        if ffi::PyFrozenSet_CheckExact(ptr) != 0 {
            return ObType::FrozenSet;
        }
        if ffi::PyByteArray_CheckExact(ptr) != 0 {
            return ObType::ByteArray;
        }
        if ffi::PyType_Check(ptr) != 0 {
            return ObType::Type;
        }
        if ffi::PyFunction_Check(ptr) != 0 {
            return ObType::Function;
        }
        let ty = ffi::Py_TYPE(ptr);
        if let Some(layout) = layouts.partial {
            if layout.handles(ty) {
                return ObType::Partial(layout);
            }
        }
        if let Some(layout) = layouts.path {
            if layout.handles(ty) {
                return ObType::Path(layout);
            }
        }
        if let Some(layout) = layouts.task_nodes {
            if let Some(node) = layout.node_for(ty) {
                return ObType::TaskNode(node);
            }
        }
        if ffi::PyCode_Check(ptr) != 0 {
            return ObType::Code;
        }
        if ty as *mut ffi::PyObject == lookup.cp.cell_type.as_ptr() {
            return ObType::Cell;
        }
        if ty == std::ptr::addr_of_mut!(ffi::PyModule_Type) {
            return ObType::Module;
        }
        if ty as *mut ffi::PyObject == lookup.pickle_buffer_type.as_ptr() {
            return ObType::PickleBuffer;
        }
        ObType::Other
    }
}
