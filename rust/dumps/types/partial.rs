//! `functools.partial` without calling `__reduce__`: the opcodes `pickle` writes for
//! `partial_reduce`'s `(type(p), (p.func,), (p.func, p.args, p.keywords, p.__dict__))` (`None`
//! for a dict never made), from the fields `layouts::partial` reads, so the function is written
//! once and fetched from the memo the second time, as with `pickle`.

use pyo3::prelude::*;

use crate::dumps::{ref_count, Pickler};
use crate::layouts::partial::PartialLayout;
use crate::opcodes::{BUILD, REDUCE};

/// Writes `partial(func)` then its state with `BUILD`; `false` if a field could not be read.
pub fn save_partial<'py>(
    p: &mut Pickler<'py>,
    layout: &PartialLayout,
    obj: &Bound<'py, PyAny>,
) -> PyResult<bool> {
    let Some(f) = layout.fields(obj) else {
        return Ok(false);
    };
    let py = p.py;
    p.save(layout.cls(py).as_any(), false)?;
    p.save(&f.func, false)
        .map_err(|e| p.at(e, || "partial.func".to_owned()))?;
    p.close_fresh_tuple(1);
    p.out.op(REDUCE);
    // Memoized before the state, like every reduced object: the state may lead back here.
    if p.memoize_reduced(obj) {
        return Ok(true);
    }
    // The state tuple `(func, args, keywords, dict)`, `save()`d by `pickle`: a full frame ends
    // before its `MARK`.
    p.open_fresh_tuple(4);
    p.save(&f.func, false)?;
    let args_unique = ref_count(&f.args) == 2;
    p.save_tuple_as(&f.args, args_unique, |i| format!("partial.args[{i}]"))?;
    let keywords_unique = ref_count(&f.keywords) == 2;
    p.save(&f.keywords, keywords_unique)
        .map_err(|e| p.at(e, || "partial.keywords".to_owned()))?;
    match &f.dict {
        Some(d) => p
            .save(d, false)
            .map_err(|e| p.at(e, || "partial.__dict__".to_owned()))?,
        None => p.save(&py.None().into_bound(py), true)?,
    }
    p.close_fresh_tuple(4);
    p.out.op(BUILD);
    Ok(true)
}
