//! `pathlib` paths without calling `__reduce__`: `cls(*parts)` from the `_parts` slot, the call
//! `PurePath.__reduce__` describes on CPython 3.10 and 3.11 (see `layouts::path`).

use pyo3::prelude::*;
use pyo3::types::PyType;

use super::Pickler;
use crate::layouts::path::PathLayout;
use crate::opcodes::REDUCE;

/// Writes `cls(*parts)`; returns `false` (nothing written) if the path's parts are unset.
pub fn save_path<'py>(
    p: &mut Pickler<'py>,
    layout: &PathLayout,
    path: &Bound<'py, PyAny>,
    unique: bool,
) -> PyResult<bool> {
    let Some(parts) = layout.parts(path) else {
        return Ok(false);
    };
    let cls = path.get_type();
    p.save(cls.as_any(), false)?;
    p.save_list_as_tuple(&parts, |i| format!("{}.parts[{i}]", cls_name(&cls)))?;
    p.out.op(REDUCE);
    // A path's parts are strings: it can't be part of a cycle, so a path nothing else refers
    // to needs no memo entry.
    p.memoize_unless(path, unique)?;
    Ok(true)
}

fn cls_name(cls: &Bound<'_, PyType>) -> String {
    cls.name().map(|n| n.to_string()).unwrap_or_default()
}
