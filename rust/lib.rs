//! ferropickle's compiled core: a pickler that writes standard pickle protocol 5 streams and an
//! unpickler that reads any standard stream.
//!
//! The Python package `ferropickle` re-exports what this module defines; see
//! `python/ferropickle/_ferropickle.pyi` for the documented API.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod errors;
mod fallback;
mod globals;
mod memo;
mod opcodes;
mod pickler;
mod reader;
mod reduce;
mod types;
mod writer;

pub use errors::{PicklingError, UnpicklingError};

/// Pickle `obj` to a standard pickle stream (see the `.pyi` stub for the full contract).
#[pyfunction]
#[pyo3(signature = (obj, protocol=None, *, buffer_callback=None))]
fn dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<i64>,
    buffer_callback: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    pickler::dumps(py, obj, protocol, buffer_callback)
}

/// Rebuild the object a pickle stream describes (see the `.pyi` stub for the full contract).
#[pyfunction]
#[pyo3(signature = (data, /, *, fix_imports=true, encoding="ASCII", errors="strict", buffers=None))]
fn loads<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    fix_imports: bool,
    encoding: &str,
    errors: &str,
    buffers: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    reader::loads(py, data, fix_imports, encoding, errors, buffers)
}

#[pymodule(gil_used = true)]
fn _ferropickle(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(dumps, m)?)?;
    m.add_function(wrap_pyfunction!(loads, m)?)?;
    m.add("PicklingError", py.get_type::<PicklingError>())?;
    m.add("UnpicklingError", py.get_type::<UnpicklingError>())?;
    m.add("HIGHEST_PROTOCOL", opcodes::HIGHEST_PROTOCOL)?;
    m.add("DEFAULT_PROTOCOL", opcodes::HIGHEST_PROTOCOL)?;
    Ok(())
}
