//! (in progress)
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub fn dumps<'py>(
    _py: Python<'py>,
    _obj: &Bound<'py, PyAny>,
    _protocol: Option<i64>,
    _fix_imports: bool,
    _buffer_callback: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    Err(pyo3::exceptions::PyNotImplementedError::new_err("dumps"))
}
