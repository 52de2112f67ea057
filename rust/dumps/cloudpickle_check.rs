//! Whether our native writer of by-value functions and code objects writes what the installed
//! cloudpickle writes, checked once per process on first use: sample functions pickled both
//! ways, streams compared after `pickletools.optimize`. The by-value writer (`types/by_value.rs`)
//! and the code-object writer (`types/code.rs`) ask it before writing natively; when the answer
//! is no (another cloudpickle version), they take cloudpickle's own reduction instead.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::lookup::Lookup;
use crate::errors::pickling_error;

/// Whether our writer of by-value functions and code objects writes what the installed
/// cloudpickle writes (if not, they take cloudpickle's reduction instead). Decided once, on
/// first use, by [`probe`]; while the probe runs the answer is "yes", so that the probe itself
/// exercises our writer.
pub fn passed(py: Python<'_>, lookup: &Lookup) -> bool {
    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;
    static VERDICT: AtomicU8 = AtomicU8::new(UNKNOWN);
    match VERDICT.load(Ordering::Acquire) {
        YES => true,
        NO => false,
        _ => {
            VERDICT.store(YES, Ordering::Release);
            let same = probe(py, lookup).unwrap_or(false);
            VERDICT.store(if same { YES } else { NO }, Ordering::Release);
            same
        }
    }
}

/// Sample functions covering every part of the reduction: a closure cell, positional, keyword
/// and annotated arguments, an attribute, a docstring, module globals and a submodule reached
/// through one, recursion through a cell, a nested function, a lambda, a comprehension, and
/// two functions sharing one module's globals.
const PROBE: &CStr = c"
import json.decoder
GLOBAL = {'k': 1}
def outer():
    cell = [1]
    def sample(a, b=2, *, c=3) -> int:
        'doc'
        return json.decoder.JSONDecodeError, a, b + c + len(GLOBAL) + len(cell), sample
    sample.attr = 4
    return sample
def plain(x):
    def nested():
        return GLOBAL
    return [y for y in x], lambda: GLOBAL, nested
samples = [outer(), plain, (outer(), plain)]
";

/// Whether, for every sample, our stream and `cloudpickle.dumps`'s are the same once
/// `pickletools.optimize` has dropped unused memo entries. Our pickles here are not counted in
/// `ferropickle.stats()`: nobody asked for them.
fn probe(py: Python<'_>, lookup: &Lookup) -> PyResult<bool> {
    let ns = PyDict::new(py);
    ns.set_item("__name__", "__main__")?;
    py.run(PROBE, Some(&ns), Some(&ns))?;
    let optimize = py.import("pickletools")?.getattr("optimize")?;
    let cloudpickle_dumps = lookup.cloudpickle_dumps.bind(py);
    let samples = ns
        .get_item("samples")?
        .ok_or_else(|| pickling_error("probe"))?;
    for sample in samples.try_iter()? {
        let sample = sample?;
        let ours = crate::dumps::dumps_uncounted(py, &sample, Some(5))?;
        let theirs = cloudpickle_dumps.call1((&sample, 5))?;
        if !optimize.call1((ours,))?.eq(optimize.call1((theirs,))?)? {
            return Ok(false);
        }
    }
    Ok(true)
}
