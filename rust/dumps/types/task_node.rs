//! Dask graph nodes (`dask._task_spec`) without calling `__reduce_ex__`/`__getstate__`: each
//! node is written from the slots `layouts::task_node` reads, as the opcodes `pickle` would write
//! from its `__reduce_ex__(5)`: `cls(*slots)` with `REDUCE` for `TaskRef`, `Alias` and
//! `DataNode`; `NEWOBJ` then `BUILD` with the state tuple (`Task`) or list (nested containers).

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::dumps::{ref_count, Pickler};
use crate::layouts::task_node::{Field, Node, Reduction, Role};
use crate::opcodes::*;

/// Writes `obj`, an instance of exactly `node`'s class; `false` (nothing written) when a slot
/// is unset.
pub fn save_task_node<'py>(
    p: &mut Pickler<'py>,
    node: &Node,
    obj: &Bound<'py, PyAny>,
) -> PyResult<bool> {
    let Some(values) = node.values(obj) else {
        return Ok(false);
    };
    let py = p.py;
    let name = node.name;
    p.save(node.cls.bind(py).as_any(), false)?;
    match node.reduction {
        Reduction::Call => {
            p.open_fresh_tuple(values.len());
            for (field, v) in node.fields.iter().zip(&values) {
                save_field(p, name, field, v)?;
            }
            p.close_fresh_tuple(values.len());
            p.out.op(REDUCE);
            p.memoize_reduced(obj);
        }
        Reduction::State { as_list } => {
            p.save_empty_tuple();
            p.out.op(NEWOBJ);
            // Memoized before the state, like every reduced object: the state may lead back.
            p.memoize(obj);
            // The state `__reduce_ex__` returns, a tuple (`Task`) or a list (nested
            // containers), built for the stream alone and written as `pickle` writes it.
            if as_list {
                p.list_of_with(values.len(), |p, i| {
                    save_field(p, name, &node.fields[i], &values[i])
                })?;
            } else {
                p.tuple_of(values.len(), |p, i| {
                    save_field(p, name, &node.fields[i], &values[i])
                })?;
            }
            p.out.op(BUILD);
        }
    }
    Ok(true)
}

fn save_field<'py>(
    p: &mut Pickler<'py>,
    node: &str,
    field: &Field,
    value: &Bound<'py, PyAny>,
) -> PyResult<()> {
    // Our reference plus the node's: nothing else refers to the value.
    let unique = ref_count(value) == 2;
    if field.role == Role::Args {
        if let Ok(args) = value.cast::<PyTuple>() {
            return p.save_tuple_as(args, unique, |i| format!("{node}.args[{i}]"));
        }
    }
    p.save(value, unique)
        .map_err(|e| p.at(e, || format!("{node}.{}", field.name)))
}
