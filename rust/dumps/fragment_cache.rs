//! The by-value fragment cache: cloudpickle's bytes for a function or class, kept while that very
//! object is alive and reused by every later `dumps` that meets it.
//!
//! This is what makes a scheduler task cost what its arguments cost: cloudpickle re-pickles a
//! `__main__` function (code, globals, a scan of `sys.modules` per package global) on every call,
//! and Dask calls it once per task with the same function.
//!
//! - Keyed by the object's address, guarded by a weak reference whose callback drops the entry
//!   when the object dies, so a new object at the same address can't hit a stale entry.
//! - A byte budget with least-recently-used eviction (the `lru` crate keeps the order).
//! - Semantics: the bytes are a snapshot taken the first time the object is pickled while the
//!   cache is on. Later changes to the function's globals, defaults or attributes are not seen
//!   until the entry is evicted or `cache_clear()` is called; `configure(cache=False)` turns the
//!   cache off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyWeakrefReference};

use crate::budget::Budget;

/// Default budget: enough for thousands of typical functions, small next to a scheduler's heap.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

struct Entry {
    weak: Py<PyWeakrefReference>,
    fragment: Py<PyBytes>,
    proto: u8,
}

struct Cache {
    /// Bounded by bytes only: an entry is as many as there are live by-value functions.
    entries: Budget<usize, Entry>,
    enabled: bool,
    hits: u64,
    misses: u64,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        entries: Budget::new(usize::MAX, DEFAULT_MAX_BYTES),
        enabled: true,
        hits: 0,
        misses: 0,
    })
});

/// Set by a death callback that found the cache locked (it can fire while this thread holds the
/// lock, e.g. when dropping a last reference): dead entries are then swept on the next access.
static DIRTY: AtomicBool = AtomicBool::new(false);

fn lock() -> MutexGuard<'static, Cache> {
    // Every update leaves the cache consistent, so a poisoned lock is still usable.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// Drops entries whose object died while the lock was held elsewhere.
    fn sweep(&mut self, py: Python<'_>, dropped: &mut Vec<Entry>) {
        if !DIRTY.swap(false, Ordering::AcqRel) {
            return;
        }
        for key in self
            .entries
            .keys_where(|e| e.weak.bind(py).upgrade().is_none())
        {
            dropped.extend(self.entries.remove(&key));
        }
    }
}

/// The cached fragment for `obj` at protocol `proto`, if there is one for this very object.
pub fn get<'py>(obj: &Bound<'py, PyAny>, proto: u8) -> Option<Bound<'py, PyBytes>> {
    let py = obj.py();
    let mut dropped = Vec::new();
    let found = {
        let mut cache = lock();
        if !cache.enabled {
            return None;
        }
        cache.sweep(py, &mut dropped);
        let key = obj.as_ptr() as usize;
        let hit = cache.entries.get(&key).and_then(|e| {
            let alive = e.weak.bind(py).upgrade().is_some_and(|o| o.is(obj));
            (alive && e.proto == proto).then(|| e.fragment.bind(py).clone())
        });
        if hit.is_some() {
            cache.hits += 1;
        } else {
            cache.misses += 1;
        }
        hit
    };
    drop(dropped);
    found
}

/// Remembers `fragment` for `obj` (evicting least recently used entries past the budget).
/// Objects that can't be weakly referenced are not cached.
pub fn put(obj: &Bound<'_, PyAny>, proto: u8, fragment: &Bound<'_, PyBytes>) -> PyResult<()> {
    let py = obj.py();
    let size = fragment.as_bytes().len();
    {
        let cache = lock();
        if !cache.enabled || size > cache.entries.max_bytes() {
            return Ok(());
        }
    }
    let key = obj.as_ptr() as usize;
    let callback = Bound::new(py, Evict { key })?;
    let Ok(weak) = PyWeakrefReference::new_with(obj, callback) else {
        return Ok(());
    };
    let entry = Entry {
        weak: weak.unbind(),
        fragment: fragment.clone().unbind(),
        proto,
    };
    let mut dropped = Vec::new();
    lock().entries.insert(key, entry, size, &mut dropped);
    // Released outside the lock: dropping a weak reference or bytes runs no Python code today,
    // but nothing here should rely on that.
    drop(dropped);
    Ok(())
}

/// The weak-reference callback that drops an entry when its function or class dies.
#[pyclass(frozen)]
struct Evict {
    key: usize,
}

#[pymethods]
impl Evict {
    fn __call__(&self, weak: &Bound<'_, PyAny>) {
        let Ok(mut cache) = CACHE.try_lock() else {
            DIRTY.store(true, Ordering::Release);
            return;
        };
        let same = cache
            .entries
            .peek(&self.key)
            .is_some_and(|e| e.weak.as_ptr() == weak.as_ptr());
        let removed = if same {
            cache.entries.remove(&self.key)
        } else {
            None
        };
        drop(cache);
        drop(removed);
    }
}

/// Empties the cache (and its counters).
pub fn clear() {
    let mut old = Vec::new();
    {
        let mut cache = lock();
        cache.entries.clear(&mut old);
        cache.hits = 0;
        cache.misses = 0;
        cache.entries.reset_evictions();
    }
    drop(old);
}

/// Zeroes the hit, miss and eviction counters (`stats(reset=True)`).
pub fn reset_counters() {
    let mut cache = lock();
    cache.hits = 0;
    cache.misses = 0;
    cache.entries.reset_evictions();
}

/// Turns the cache on or off (off also empties it) and sets its byte budget.
pub fn configure(enabled: Option<bool>, max_bytes: Option<usize>) {
    let mut evicted = Vec::new();
    {
        let mut cache = lock();
        if let Some(on) = enabled {
            cache.enabled = on;
            if !on {
                cache.entries.clear(&mut evicted);
            }
        }
        cache.entries.set_limits(None, max_bytes, &mut evicted);
    }
    drop(evicted);
}

/// `enabled`, `entries`, `bytes`, `max_bytes`, `hits`, `misses`, `evictions` into `out`.
pub fn info(py: Python<'_>, out: &Bound<'_, PyDict>) -> PyResult<()> {
    let mut dropped = Vec::new();
    let (enabled, entries, bytes, max_bytes, hits, misses, evictions) = {
        let mut cache = lock();
        cache.sweep(py, &mut dropped);
        (
            cache.enabled,
            cache.entries.len(),
            cache.entries.bytes(),
            cache.entries.max_bytes(),
            cache.hits,
            cache.misses,
            cache.entries.evictions(),
        )
    };
    drop(dropped);
    out.set_item("enabled", enabled)?;
    out.set_item("entries", entries)?;
    out.set_item("bytes", bytes)?;
    out.set_item("max_bytes", max_bytes)?;
    out.set_item("hits", hits)?;
    out.set_item("misses", misses)?;
    out.set_item("evictions", evictions)?;
    Ok(())
}
