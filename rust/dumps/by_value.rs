//! By-value functions and classes, pickled by cloudpickle and embedded as a nested stream.
//!
//! A function defined in `__main__` (or in a module registered with
//! `cloudpickle.register_pickle_by_value`, or otherwise not importable) can't be written as
//! `module.qualname`. cloudpickle knows how to write its code, closure, globals and defaults, so
//! we hand it exactly that one object and embed the result as
//!
//! ```text
//! pickle.loads(b"<cloudpickle stream>")     # STACK_GLOBAL, BINBYTES, TUPLE1, REDUCE
//! ```
//!
//! Why a nested stream rather than splicing cloudpickle's opcodes into ours: a nested stream has
//! its own memo, so its bytes mean the same thing wherever they are embedded. That makes the
//! fragment a self-contained value that can be cached and reused for every later message
//! holding the same live function, without renumbering memo indices. The price is that an object
//! reachable both from the function and from the rest of the message is written twice; the
//! function itself is memoized in the outer stream, so it is rebuilt once per message. Stock
//! `pickle.loads` reads the result (it only needs cloudpickle importable, as for any cloudpickle
//! stream).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::fragment_cache as cache;
use super::Pickler;
use crate::opcodes::{REDUCE, TUPLE1};

/// Writes `obj` by value: `pickle.loads(<cloudpickle bytes>)`, then memoizes it so later
/// references in the same message are a `BINGET`.
pub fn save_by_value<'py>(p: &mut Pickler<'py>, obj: &Bound<'py, PyAny>) -> PyResult<()> {
    p.counts.by_value += 1;
    let fragment = fragment(p, obj)?;
    write_loads_call(p, &fragment)?;
    p.memoize(obj);
    Ok(())
}

/// cloudpickle's pickle of `obj` alone, in-band (a nested `pickle.loads` gets no buffers):
/// from the fragment cache when this very object was pickled before.
fn fragment<'py>(p: &Pickler<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    if let Some(cached) = cache::get(obj, p.proto) {
        return Ok(cached);
    }
    let bytes = p
        .lookup
        .cloudpickle_dumps
        .bind(p.py)
        .call1((obj, p.proto))?
        .cast_into::<PyBytes>()?;
    cache::put(obj, p.proto, &bytes)?;
    Ok(bytes)
}

fn write_loads_call<'py>(p: &mut Pickler<'py>, fragment: &Bound<'py, PyBytes>) -> PyResult<()> {
    let py = p.py;
    let loads = p.lookup.pickle_loads.bind(py).clone();
    match p.memo.get(&loads) {
        Some(idx) => p.out.get(idx),
        None => {
            let module = p.lookup.str_pickle.bind(py).clone();
            let name = p.lookup.str_loads.bind(py).clone();
            p.write_stack_global(&loads, &module, &name)?;
        }
    }
    p.out.bytes(fragment.as_bytes());
    p.out.ops(&[TUPLE1, REDUCE]);
    Ok(())
}
