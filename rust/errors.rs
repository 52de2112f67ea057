//! The exceptions ferropickle raises, and the one place Rust errors become Python ones.
//!
//! Both exception types subclass the stdlib ones, so `except pickle.PicklingError` (and
//! `except pickle.UnpicklingError`) clauses in existing code keep working.

use pyo3::create_exception;
use pyo3::prelude::*;

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
