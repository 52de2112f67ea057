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

use lru::LruCache;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyWeakrefReference};

/// Default budget: enough for thousands of typical functions, small next to a scheduler's heap.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

struct Entry {
    weak: Py<PyWeakrefReference>,
    fragment: Py<PyBytes>,
    proto: u8,
}

struct Cache {
    entries: LruCache<usize, Entry>,
    bytes: usize,
    max_bytes: usize,
    enabled: bool,
    hits: u64,
    misses: u64,
    evictions: u64,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        entries: LruCache::unbounded(),
        bytes: 0,
        max_bytes: DEFAULT_MAX_BYTES,
        enabled: true,
        hits: 0,
        misses: 0,
        evictions: 0,
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
    fn remove(&mut self, key: usize) -> Option<Entry> {
        let entry = self.entries.pop(&key)?;
        self.bytes -= fragment_len(&entry);
        Some(entry)
    }

    /// Drops entries whose object died while the lock was held elsewhere.
    fn sweep(&mut self, py: Python<'_>, dropped: &mut Vec<Entry>) {
        if !DIRTY.swap(false, Ordering::AcqRel) {
            return;
        }
        let dead: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, e)| e.weak.bind(py).upgrade().is_none())
            .map(|(k, _)| *k)
            .collect();
        for key in dead {
            dropped.extend(self.remove(key));
        }
    }
}

fn fragment_len(entry: &Entry) -> usize {
    // SAFETY: `fragment` is a bytes object; reading its size needs no GIL-protected state
    // beyond the object being alive, which the entry guarantees.
    unsafe { pyo3::ffi::PyBytes_Size(entry.fragment.as_ptr()) as usize }
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
        if !cache.enabled || size > cache.max_bytes {
            return Ok(());
        }
    }
    let key = obj.as_ptr() as usize;
    let callback = Bound::new(py, Evict { key })?;
    let Ok(weak) = PyWeakrefReference::new_with(obj, callback) else {
        return Ok(());
    };
    let mut dropped = Vec::new();
    {
        let mut cache = lock();
        dropped.extend(cache.remove(key));
        cache.entries.put(
            key,
            Entry {
                weak: weak.unbind(),
                fragment: fragment.clone().unbind(),
                proto,
            },
        );
        cache.bytes += size;
        while cache.bytes > cache.max_bytes {
            let Some((_, old)) = cache.entries.pop_lru() else {
                break;
            };
            cache.bytes -= fragment_len(&old);
            cache.evictions += 1;
            dropped.push(old);
        }
    }
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
        let removed = if same { cache.remove(self.key) } else { None };
        drop(cache);
        drop(removed);
    }
}

/// Empties the cache (and its counters).
pub fn clear() {
    let old = {
        let mut cache = lock();
        cache.bytes = 0;
        cache.hits = 0;
        cache.misses = 0;
        cache.evictions = 0;
        std::mem::replace(&mut cache.entries, LruCache::unbounded())
    };
    drop(old);
}

/// Zeroes the hit, miss and eviction counters (`stats(reset=True)`).
pub fn reset_counters() {
    let mut cache = lock();
    cache.hits = 0;
    cache.misses = 0;
    cache.evictions = 0;
}

/// Turns the cache on or off (off also empties it) and sets its byte budget.
pub fn configure(enabled: Option<bool>, max_bytes: Option<usize>) {
    let mut evicted = Vec::new();
    {
        let mut cache = lock();
        if let Some(on) = enabled {
            cache.enabled = on;
            if !on {
                while let Some((_, e)) = cache.entries.pop_lru() {
                    evicted.push(e);
                }
                cache.bytes = 0;
            }
        }
        if let Some(max) = max_bytes {
            cache.max_bytes = max;
            while cache.bytes > cache.max_bytes {
                let Some((_, old)) = cache.entries.pop_lru() else {
                    break;
                };
                cache.bytes -= fragment_len(&old);
                cache.evictions += 1;
                evicted.push(old);
            }
        }
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
            cache.bytes,
            cache.max_bytes,
            cache.hits,
            cache.misses,
            cache.evictions,
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
