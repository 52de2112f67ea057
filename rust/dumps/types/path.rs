//! `pathlib` paths without calling `__reduce__`: `cls(*args)` with the args read from the
//! path's slots, the call `PurePath.__reduce__` describes on this CPython (see `layouts::path`).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

use super::containers::list_item;
use crate::dumps::{ref_count, Pickler};
use crate::layouts::path::PathLayout;
use crate::opcodes::REDUCE;

/// Writes `cls(*args)`; returns `false` (nothing written) if the slots holding the args are
/// unset.
pub fn save_path<'py>(
    p: &mut Pickler<'py>,
    layout: &PathLayout,
    path: &Bound<'py, PyAny>,
) -> PyResult<bool> {
    let Some(args) = layout.reduce_args(path)? else {
        return Ok(false);
    };
    let cls = path.get_type();
    let label = |i| format!("{}.{}[{i}]", cls_name(&cls), layout.args_name());
    p.save(cls.as_any(), false)?;
    match &args.anchor {
        None => p.save_list_as_tuple(&args.rest, label)?,
        // 3.12's `(drive + root,) + tail`; the tail is the path's own parsed list of strings.
        Some(anchor) => p.tuple_of(args.count(), |p, i| {
            let saved = if i == 0 {
                // A fresh `drive + root` only we hold: nothing else in the stream is it.
                p.save(anchor, ref_count(anchor) == 1)
            } else if i <= args.rest.len() {
                let (item, unique) = list_item(p.py, &args.rest, i - 1);
                p.save(&item, unique)
            } else {
                Err(PyRuntimeError::new_err(
                    "list changed size during iteration",
                ))
            };
            saved.map_err(|e| p.at(e, || label(i)))
        })?,
    }
    p.out.op(REDUCE);
    p.memoize(path);
    Ok(true)
}

fn cls_name(cls: &Bound<'_, PyType>) -> String {
    cls.name().map(|n| n.to_string()).unwrap_or_default()
}
