//! Functions that `loads` already rebuilt from a by-value fragment.
//!
//! Our streams embed a by-value function as `pickle.loads(b"<cloudpickle stream>")` (see
//! `fallback.rs`). Rebuilding it (unmarshalling code, creating the function, its globals, its
//! closure) costs far more than the rest of a task; a worker receives the same fragment with
//! every task. So when a `REDUCE` calls `pickle.loads` on exactly one bytes object, we look the
//! bytes up here first and hand back the object rebuilt last time.
//!
//! - Only *stateless* functions are shared (`ferropickle/_stateless.py` decides, once per
//!   fragment): stock `pickle.loads` gives every message its own copy of a function's globals,
//!   closure cells and defaults, so a function that can carry state from one call to the next
//!   (a `global` or `nonlocal` write, a mutable default, a mutable global it reads) is rebuilt
//!   for every message as before, unless `configure(loads_cache_stateful=True)` asks otherwise.
//!   By-value classes are rebuilt too: cloudpickle hands back the same class object each time,
//!   but resets its attributes to the pickled ones, which sharing would skip.
//! - Keyed by an xxh3-128 digest of the bytes. A shared entry keeps the bytes and compares them,
//!   so a hit is always the same fragment; a not-shareable entry keeps only the digest and
//!   length (a collision could only cost a rebuild).
//! - At most `max_entries` entries and `max_bytes` of kept fragments (least recently used
//!   evicted); `configure(loads_cache=False)` turns it off. Stock `pickle.loads` is unaffected:
//!   it just runs the nested `pickle.loads`.

use std::sync::{LazyLock, Mutex, MutexGuard};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};
use xxhash_rust::xxh3::xxh3_128;

use crate::budget::Budget;

pub const DEFAULT_MAX_ENTRIES: usize = 4096;
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

enum Entry {
    /// A stateless function, shared by every load of these very bytes.
    Shared {
        fragment: Py<PyBytes>,
        rebuilt: Py<PyAny>,
    },
    /// A function rebuilt for every load (it may carry state); remembered only so the decision
    /// is not made again.
    Rebuild { len: usize },
}

struct Rebuilt {
    /// Shared entries are charged their fragment's size; the others keep no bytes.
    entries: Budget<u128, Entry>,
    enabled: bool,
    share_stateful: bool,
    hits: u64,
    misses: u64,
}

static REBUILT: LazyLock<Mutex<Rebuilt>> = LazyLock::new(|| {
    Mutex::new(Rebuilt {
        entries: Budget::new(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES),
        enabled: true,
        share_stateful: false,
        hits: 0,
        misses: 0,
    })
});

static PICKLE_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether `callable` is `pickle.loads`, the wrapper `fallback.rs` writes around a fragment.
#[inline]
pub fn is_pickle_loads(callable: &Bound<'_, PyAny>) -> bool {
    let py = callable.py();
    PICKLE_LOADS
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py.import("pickle")?.getattr("loads")?.unbind())
        })
        .is_ok_and(|loads| loads.is(callable))
}

fn lock() -> MutexGuard<'static, Rebuilt> {
    // Every update leaves the table consistent, so a poisoned lock is still usable.
    REBUILT.lock().unwrap_or_else(|e| e.into_inner())
}

/// `pickle.loads(fragment)`, or the function it gave last time.
pub fn load<'py>(
    loads: &Bound<'py, PyAny>,
    fragment: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loads.py();
    let bytes = fragment.as_bytes();
    let key = xxh3_128(bytes);
    let (known, share_stateful) = {
        let mut table = lock();
        if !table.enabled {
            drop(table);
            return loads.call1((fragment,));
        }
        let known = match table.entries.get(&key) {
            Some(Entry::Shared { fragment, rebuilt }) if fragment.bind(py).as_bytes() == bytes => {
                Some(Some(rebuilt.clone_ref(py)))
            }
            Some(Entry::Rebuild { len }) if *len == bytes.len() => Some(None),
            _ => None,
        };
        match &known {
            Some(Some(_)) => table.hits += 1,
            _ => table.misses += 1,
        }
        (known, table.share_stateful)
    };
    match known {
        Some(Some(obj)) => return Ok(obj.into_bound(py)),
        // Seen before and not shareable: rebuild, as stock pickle does.
        Some(None) => return loads.call1((fragment,)),
        None => {}
    }
    let obj = loads.call1((fragment,))?;
    // Only functions: a by-value class is rebuilt every time (see the module docs).
    // SAFETY: type check on a live object.
    if unsafe { ffi::PyFunction_Check(obj.as_ptr()) } != 0 {
        let (entry, size) = if share_stateful || is_stateless(&obj)? {
            let shared = Entry::Shared {
                fragment: fragment.clone().unbind(),
                rebuilt: obj.clone().unbind(),
            };
            (shared, bytes.len())
        } else {
            (Entry::Rebuild { len: bytes.len() }, 0)
        };
        let mut evicted = Vec::new();
        {
            let mut table = lock();
            if table.enabled {
                table.entries.insert(key, entry, size, &mut evicted);
            }
        }
        // Released outside the lock: the last reference to a function may run finalizers.
        drop(evicted);
    }
    Ok(obj)
}

static IS_STATELESS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `ferropickle._stateless.is_stateless(obj)`: whether sharing `obj` can't be observed.
fn is_stateless(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    let f = IS_STATELESS.get_or_try_init(py, || -> PyResult<_> {
        Ok(py
            .import("ferropickle._stateless")?
            .getattr("is_stateless")?
            .unbind())
    })?;
    f.bind(py).call1((obj,))?.is_truthy()
}

pub fn clear() {
    let mut old = Vec::new();
    {
        let mut table = lock();
        table.entries.clear(&mut old);
        table.hits = 0;
        table.misses = 0;
    }
    drop(old);
}

pub fn reset_counters() {
    let mut table = lock();
    table.hits = 0;
    table.misses = 0;
}

/// Turns the table on or off (off also empties it), sets its size and whether functions that
/// may carry state are shared too.
pub fn configure(
    enabled: Option<bool>,
    max_entries: Option<usize>,
    max_bytes: Option<usize>,
    share_stateful: Option<bool>,
) {
    let mut evicted = Vec::new();
    {
        let mut table = lock();
        if let Some(on) = enabled {
            table.enabled = on;
        }
        if let Some(share) = share_stateful {
            if share != table.share_stateful {
                // Earlier decisions were made under the other rule.
                table.entries.clear(&mut evicted);
            }
            table.share_stateful = share;
        }
        if !table.enabled {
            table.entries.clear(&mut evicted);
        }
        table
            .entries
            .set_limits(max_entries, max_bytes, &mut evicted);
    }
    drop(evicted);
}

/// `loads_cache_enabled`, `_stateful`, `_entries`, `_max_entries`, `_bytes`, `_max_bytes`,
/// `_hits`, `_misses`.
pub fn info(out: &Bound<'_, PyDict>) -> PyResult<()> {
    let (enabled, stateful, entries, max_entries, bytes, max_bytes, hits, misses) = {
        let table = lock();
        (
            table.enabled,
            table.share_stateful,
            table.entries.len(),
            table.entries.max_entries(),
            table.entries.bytes(),
            table.entries.max_bytes(),
            table.hits,
            table.misses,
        )
    };
    out.set_item("loads_cache_bytes", bytes)?;
    out.set_item("loads_cache_max_bytes", max_bytes)?;
    out.set_item("loads_cache_enabled", enabled)?;
    out.set_item("loads_cache_stateful", stateful)?;
    out.set_item("loads_cache_entries", entries)?;
    out.set_item("loads_cache_max_entries", max_entries)?;
    out.set_item("loads_cache_hits", hits)?;
    out.set_item("loads_cache_misses", misses)?;
    Ok(())
}
