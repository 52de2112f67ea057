//! Process-wide counters behind `ferropickle.stats()`: how much was pickled and how.
//!
//! Each call counts into plain integers on its own stack and adds them to these atomics once at
//! the end, so the hot path pays nothing per object.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyDict;

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        $(#[doc = $doc] pub static $name: AtomicU64 = AtomicU64::new(0);)*

        /// Every counter into `out`, by its lower-case name.
        pub fn fill(out: &Bound<'_, PyDict>) -> PyResult<()> {
            $(out.set_item(stringify!($name).to_ascii_lowercase(), $name.load(Relaxed))?;)*
            Ok(())
        }

        /// Sets every counter back to zero.
        pub fn reset() {
            $($name.store(0, Relaxed);)*
        }
    };
}

counters! {
    DUMPS_CALLS: "Calls to `dumps` (protocols 4 and 5).",
    DUMPS_ERRORS: "Calls to `dumps` that raised.",
    DUMPS_BYTES: "Bytes `dumps` returned.",
    DUMPS_NS: "Time spent in `dumps`, in nanoseconds.",
    OBJECTS_NATIVE: "Objects written without calling Python code (atoms, containers, memo hits, \
                     globals, paths, partials, dask nodes).",
    OBJECTS_REDUCED: "Objects written through `__reduce_ex__` or a copyreg/cloudpickle reducer.",
    OBJECTS_BY_VALUE: "By-value functions and classes written (from the cache or cloudpickle).",
    LOADS_CALLS: "Calls to `loads`.",
    LOADS_ERRORS: "Calls to `loads` that raised.",
    LOADS_BYTES: "Bytes `loads` read.",
    LOADS_NS: "Time spent in `loads`, in nanoseconds.",
}

/// One `dumps` call's counts, flushed into the process-wide counters when it ends.
#[derive(Default)]
pub struct CallCounts {
    pub objects: u64,
    pub reduced: u64,
    pub by_value: u64,
}

pub struct Timer(Instant);

impl Timer {
    pub fn start() -> Timer {
        Timer(Instant::now())
    }

    fn ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

pub fn record_dumps(timer: Timer, counts: &CallCounts, bytes: Option<usize>) {
    DUMPS_CALLS.fetch_add(1, Relaxed);
    DUMPS_NS.fetch_add(timer.ns(), Relaxed);
    match bytes {
        Some(n) => {
            DUMPS_BYTES.fetch_add(n as u64, Relaxed);
        }
        None => {
            DUMPS_ERRORS.fetch_add(1, Relaxed);
        }
    }
    let native = counts
        .objects
        .saturating_sub(counts.reduced + counts.by_value);
    OBJECTS_NATIVE.fetch_add(native, Relaxed);
    OBJECTS_REDUCED.fetch_add(counts.reduced, Relaxed);
    OBJECTS_BY_VALUE.fetch_add(counts.by_value, Relaxed);
}

pub fn record_loads(timer: Timer, bytes: usize, ok: bool) {
    LOADS_CALLS.fetch_add(1, Relaxed);
    LOADS_NS.fetch_add(timer.ns(), Relaxed);
    LOADS_BYTES.fetch_add(bytes as u64, Relaxed);
    if !ok {
        LOADS_ERRORS.fetch_add(1, Relaxed);
    }
}
