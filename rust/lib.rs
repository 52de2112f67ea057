//! ferropickle's compiled core: a pickler that writes standard pickle protocol 5 streams and an
//! unpickler that reads any standard stream.
//!
//! The Python package `ferropickle` re-exports what this module defines; see
//! `python/ferropickle/_ferropickle.pyi` for the documented API.

// Every `unsafe` block states why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod budget;
mod dumps;
mod errors;
mod layouts;
mod loads;
mod opcodes;
mod slots;
mod stats;
mod writer;

use dumps::{fragment_cache as cache, globals};
use loads::rebuilt;

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

/// Statistics and settings of the caches (see the `.pyi` stub).
#[pyfunction]
fn cache_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    cache::info(py, &out)?;
    rebuilt::info(&out)?;
    Ok(out)
}

/// Process-wide counters: calls, bytes and time of `dumps`/`loads`, objects written natively,
/// through `__reduce_ex__` and by value, and the fragment cache's hits, misses and evictions.
#[pyfunction(name = "stats")]
#[pyo3(signature = (*, reset=false))]
fn stats_py(py: Python<'_>, reset: bool) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    stats::fill(&out)?;
    let cache = PyDict::new(py);
    cache::info(py, &cache)?;
    for (k, v) in cache.iter() {
        out.set_item(format!("cache_{}", k.extract::<String>()?), v)?;
    }
    rebuilt::info(&out)?;
    if reset {
        stats::reset();
        cache::reset_counters();
        rebuilt::reset_counters();
    }
    Ok(out)
}

/// Empties the by-value fragment cache and the by-reference/by-value decisions.
#[pyfunction]
fn cache_clear() {
    cache::clear();
    globals::clear();
    rebuilt::clear();
}

/// Changes cache settings; `None` leaves a setting as it is.
#[pyfunction]
#[pyo3(signature = (
    *,
    cache=None,
    cache_max_bytes=None,
    loads_cache=None,
    loads_cache_max_entries=None,
    loads_cache_max_bytes=None,
    loads_cache_stateful=None,
))]
fn configure(
    py: Python<'_>,
    cache: Option<bool>,
    cache_max_bytes: Option<usize>,
    loads_cache: Option<bool>,
    loads_cache_max_entries: Option<usize>,
    loads_cache_max_bytes: Option<usize>,
    loads_cache_stateful: Option<bool>,
) -> PyResult<Bound<'_, PyDict>> {
    cache::configure(cache, cache_max_bytes);
    rebuilt::configure(
        loads_cache,
        loads_cache_max_entries,
        loads_cache_max_bytes,
        loads_cache_stateful,
    );
    cache_info(py)
}

#[pymodule(gil_used = true)]
fn _ferropickle(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(dumps_py, m)?)?;
    m.add_function(wrap_pyfunction!(loads_py, m)?)?;
    m.add_function(wrap_pyfunction!(cache_info, m)?)?;
    m.add_function(wrap_pyfunction!(cache_clear, m)?)?;
    m.add_function(wrap_pyfunction!(configure, m)?)?;
    m.add_function(wrap_pyfunction!(stats_py, m)?)?;
    m.add("PicklingError", py.get_type::<PicklingError>())?;
    m.add("UnpicklingError", py.get_type::<UnpicklingError>())?;
    m.add("HIGHEST_PROTOCOL", opcodes::HIGHEST_PROTOCOL)?;
    m.add("DEFAULT_PROTOCOL", opcodes::HIGHEST_PROTOCOL)?;
    Ok(())
}
