//! The exceptions ferropickle raises, and the one place Rust errors become Python ones.
//!
//! Both exception types subclass the stdlib ones, so `except pickle.PicklingError` (and
//! `except pickle.UnpicklingError`) clauses in existing code keep working. Exceptions raised
//! by Python code while pickling keep their type; [`add_note`] names where they happened.

use pyo3::create_exception;
use pyo3::exceptions::PyRecursionError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple, PyType};

mod stdlib {
    pyo3::import_exception!(pickle, PicklingError);
    pyo3::import_exception!(pickle, UnpicklingError);
}

create_exception!(
    ferropickle,
    PicklingError,
    stdlib::PicklingError,
    "An object could not be pickled; the message names its type and where it sits."
);
create_exception!(
    ferropickle,
    UnpicklingError,
    stdlib::UnpicklingError,
    "A pickle stream was malformed or truncated; the message names the offset and opcode."
);

/// `ferropickle.PicklingRecursionError`: both a `RecursionError` (what `pickle` raises for
/// runaway nesting) and a `pickle.PicklingError` (what cloudpickle turns it into), so either
/// `except` clause catches it. Made at run time: a class with two exception bases.
pub fn recursion_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.get_or_try_init(py, || {
        let bases = PyTuple::new(
            py,
            [
                py.get_type::<PicklingError>(),
                py.get_type::<PyRecursionError>(),
            ],
        )?;
        // SAFETY: the name and doc are NUL-terminated; `bases` is a live tuple of exception
        // classes; the result is a new reference to a class, or NULL with an exception set.
        let cls = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyErr_NewExceptionWithDoc(
                    c"ferropickle.PicklingRecursionError".as_ptr(),
                    c"Pickling needed more nesting than the recursion limit or the thread's \
                      stack allows. A RecursionError, as pickle raises, and a PicklingError, \
                      as cloudpickle raises."
                        .as_ptr(),
                    bases.as_ptr(),
                    std::ptr::null_mut(),
                ),
            )?
        };
        Ok(cls.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.bind(py))
}

/// The error runaway nesting raises, with `cause` (the `RecursionError` met, if any) attached.
#[cold]
#[inline(never)]
pub fn recursion_error(py: Python<'_>, cause: Option<PyErr>) -> PyErr {
    let msg = "maximum recursion depth exceeded while pickling an object: it needs excessively \
               deep recursion";
    let err = match recursion_error_type(py) {
        Ok(cls) => PyErr::from_type(cls.clone(), msg),
        Err(e) => e,
    };
    err.set_cause(py, cause);
    err
}

/// Adds `note` to `err` as PEP 678 `add_note` does (`__notes__`, shown under the traceback),
/// also on Python 3.10, which has no `add_note` (there tools such as pytest and the
/// `exceptiongroup` backport show `__notes__`).
#[cold]
#[inline(never)]
pub fn add_note(py: Python<'_>, err: &PyErr, note: &str) {
    let value = err.value(py);
    let added = match value.getattr_opt(pyo3::intern!(py, "add_note")) {
        Ok(Some(add)) => add.call1((note,)).map(drop),
        _ => match value.getattr_opt(pyo3::intern!(py, "__notes__")) {
            Ok(Some(notes)) => notes
                .call_method1(pyo3::intern!(py, "append"), (note,))
                .map(drop),
            _ => PyList::new(py, [note])
                .and_then(|l| value.setattr(pyo3::intern!(py, "__notes__"), l)),
        },
    };
    // A note is a courtesy: an exception that refuses one is raised without it.
    drop(added);
}

/// A `ferropickle.UnpicklingError` for a malformed stream at byte `offset`.
#[cold]
#[inline(never)]
pub fn unpickling_error(offset: usize, msg: impl std::fmt::Display) -> PyErr {
    UnpicklingError::new_err(format!("{msg} (at byte {offset})"))
}

/// A `ferropickle.PicklingError` with a plain message.
#[cold]
#[inline(never)]
pub fn pickling_error(msg: impl Into<String>) -> PyErr {
    PicklingError::new_err(msg.into())
}
