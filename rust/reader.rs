//! (in progress)
use pyo3::prelude::*;

pub fn loads<'py>(
    _py: Python<'py>,
    _data: &Bound<'py, PyAny>,
    _fix_imports: bool,
    _encoding: &str,
    _errors: &str,
    _buffers: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    Err(pyo3::exceptions::PyNotImplementedError::new_err("loads"))
}
