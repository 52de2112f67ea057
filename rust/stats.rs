//! Process-wide counters behind `ferropickle.stats()`: how much was pickled and how.
//!
//! Each call counts into plain integers on its own stack and adds them here once at the end, so
//! the hot path pays nothing per object. The counters are only updated while holding the GIL
//! (the module is declared `gil_used`), so a relaxed load and store is enough: no locked
//! read-modify-write per counter on every call. Time comes from `quanta` (the CPU's time-stamp
//! counter, calibrated once) because the system clock costs more than pickling a small task.
//! Even so, reading it twice is about a tenth of a small `dumps` (a `Path`), so time is
//! sampled: each call is timed with probability 1/[`SAMPLE`], chosen at random, and counts
//! [`SAMPLE`] times its duration. The time counters are then an unbiased estimate of the total
//! (exact in expectation, close over many calls); every other counter is exact.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;

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
    DUMPS_NS: "Time spent in `dumps`, in nanoseconds (estimated from a sample of calls).",
    OBJECTS_NATIVE: "Objects written without calling Python code (atoms, containers, memo hits, \
                     globals, paths, partials, dask nodes).",
    OBJECTS_REDUCED: "Objects written through `__reduce_ex__` or a copyreg/cloudpickle reducer.",
    OBJECTS_BY_VALUE: "By-value functions and classes written (from the cache or cloudpickle).",
    LOADS_CALLS: "Calls to `loads`.",
    LOADS_ERRORS: "Calls to `loads` that raised.",
    LOADS_BYTES: "Bytes `loads` read.",
    LOADS_NS: "Time spent in `loads`, in nanoseconds (estimated from a sample of calls).",
}

/// One `dumps` call's counts, flushed into the process-wide counters when it ends.
#[derive(Default)]
pub struct CallCounts {
    pub objects: u64,
    pub reduced: u64,
    pub by_value: u64,
}

static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// One call in this many is timed.
const SAMPLE: u64 = 8;

/// A call's start time, if this call is one of those timed.
pub struct Timer(Option<u64>);

impl Timer {
    pub fn start() -> Timer {
        // fastrand's generator is per thread (wyrand), so picking costs a few instructions.
        let timed = fastrand::u64(..SAMPLE) == 0;
        Timer(timed.then(|| CLOCK.raw()))
    }

    /// The estimate this call adds to a time counter.
    fn ns(&self) -> u64 {
        self.0
            .map_or(0, |start| SAMPLE * CLOCK.delta_as_nanos(start, CLOCK.raw()))
    }
}

/// Adds `n` to a counter; see the module docs for why this isn't a `fetch_add`.
#[inline]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

pub fn record_dumps(timer: Timer, counts: &CallCounts, bytes: Option<usize>) {
    add(&DUMPS_CALLS, 1);
    add(&DUMPS_NS, timer.ns());
    match bytes {
        Some(n) => add(&DUMPS_BYTES, n as u64),
        None => add(&DUMPS_ERRORS, 1),
    }
    let native = counts
        .objects
        .saturating_sub(counts.reduced + counts.by_value);
    add(&OBJECTS_NATIVE, native);
    add(&OBJECTS_REDUCED, counts.reduced);
    add(&OBJECTS_BY_VALUE, counts.by_value);
}

pub fn record_loads(timer: Timer, bytes: usize, ok: bool) {
    add(&LOADS_CALLS, 1);
    add(&LOADS_NS, timer.ns());
    add(&LOADS_BYTES, bytes as u64);
    if !ok {
        add(&LOADS_ERRORS, 1);
    }
}
