//! Exposes the target interpreter's version as `cfg(Py_3_N)` flags, as pyo3 itself uses them.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
