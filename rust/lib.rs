//! ferropickle's compiled core: a pickler that writes standard pickle protocol 5 streams and an
//! unpickler that reads any standard stream.
//!
//! The Python package `ferropickle` re-exports what this module defines; see
//! `python/ferropickle/_ferropickle.pyi` for the documented API.

// Every `unsafe` block states why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod dumps;
mod errors;
mod layouts;
mod loads;
mod opcodes;
mod slots;
mod stats;
mod writer;

pub use errors::{PicklingError, UnpicklingError};

/// Pickle `obj` to a standard pickle stream (see the `.pyi` stub for the full contract).
#[pyfunction(name = "dumps")]
#[pyo3(signature = (obj, protocol=None, *, buffer_callback=None))]
fn dumps_py<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<i64>,
    buffer_callback: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    dumps::dumps(py, obj, protocol, buffer_callback)
}

/// Rebuild the object a pickle stream describes (see the `.pyi` stub for the full contract).
#[pyfunction(name = "loads")]
#[pyo3(signature = (data, /, *, fix_imports=true, encoding="ASCII", errors="strict", buffers=None))]
fn loads_py<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    fix_imports: bool,
    encoding: &str,
    errors: &str,
    buffers: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    loads::loads(py, data, fix_imports, encoding, errors, buffers)
}

/// What the pickler remembers between calls (see the `.pyi` stub).
#[pyfunction]
fn cache_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = dumps::cache_info(py);
    let out = PyDict::new(py);
    out.set_item("globals", info.globals)?;
    out.set_item("code_objects", info.code_objects)?;
    out.set_item("submodule_scans", info.submodule_scans)?;
    out.set_item("code_segments", info.code_segments)?;
    Ok(out)
}

/// Process-wide counters: calls, bytes and time of `dumps`/`loads`, and objects written
/// natively, through `__reduce_ex__` and by value; and which native writers this Python's
/// layouts allow (a layout not recognised sends its objects through `__reduce_ex__`).
#[pyfunction(name = "stats")]
#[pyo3(signature = (*, reset=false))]
fn stats_py(py: Python<'_>, reset: bool) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    stats::fill(&out)?;
    let writers = PyDict::new(py);
    writers.set_item("path", layouts::path::get(py)?.is_some())?;
    writers.set_item("partial", layouts::partial::get(py)?.is_some())?;
    writers.set_item("dask", layouts::task_node::get(py).is_some())?;
    out.set_item("native_writers", writers)?;
    if reset {
        stats::reset();
    }
    Ok(out)
}

/// Forgets the by-reference/by-value decisions and what is known about code objects.
#[pyfunction]
fn cache_clear(py: Python<'_>) {
    dumps::cache_clear(py);
}

/// The module's state (the looked-up cloudpickle functions, the caches) is process-wide and
/// made of the objects of the interpreter that created it; a subinterpreter using it would
/// call into another interpreter's objects, which breaks once either is gone. So the module
/// loads in the main interpreter only, and a subinterpreter gets a clear `ImportError`.
fn main_interpreter_only() -> PyResult<()> {
    // SAFETY: called with the GIL held during module initialisation; both calls return
    // interpreter states that are valid for the call.
    let (current, main) = unsafe {
        (
            pyo3::ffi::PyInterpreterState_Get(),
            pyo3::ffi::PyInterpreterState_Main(),
        )
    };
    if current == main {
        return Ok(());
    }
    Err(pyo3::exceptions::PyImportError::new_err(
        "ferropickle can't be imported in a subinterpreter: its state belongs to the main \
         interpreter",
    ))
}

#[pymodule(gil_used = true)]
fn _ferropickle(m: &Bound<'_, PyModule>) -> PyResult<()> {
    main_interpreter_only()?;
    let py = m.py();
    m.add_function(wrap_pyfunction!(dumps_py, m)?)?;
    m.add_function(wrap_pyfunction!(loads_py, m)?)?;
    m.add_function(wrap_pyfunction!(cache_info, m)?)?;
    m.add_function(wrap_pyfunction!(cache_clear, m)?)?;
    m.add_function(wrap_pyfunction!(stats_py, m)?)?;
    m.add("PicklingError", py.get_type::<PicklingError>())?;
    m.add("UnpicklingError", py.get_type::<UnpicklingError>())?;
    m.add("PicklingRecursionError", errors::recursion_error_type(py)?)?;
    m.add("HIGHEST_PROTOCOL", opcodes::HIGHEST_PROTOCOL)?;
    m.add("DEFAULT_PROTOCOL", opcodes::HIGHEST_PROTOCOL)?;
    // The package's one version: Cargo.toml's, which maturin also writes into the metadata.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
