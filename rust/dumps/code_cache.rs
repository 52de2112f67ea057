//! The encoded arguments of code objects, kept per live code object and copied into later
//! streams instead of walking the code object again.
//!
//! A code object is immutable: the objects `_code_reduce` reads from it (its bytecode, constants,
//! names, line table, ...) are the same objects for as long as it lives, so the opcodes that
//! write them are the same in every stream except in what depends on the stream itself:
//!
//! - **the memo.** `pickle` memoizes by identity. The walk of the arguments looks up and enters
//!   the objects it writes; if one of them (a name, a constant, a nested code object) is already
//!   in this stream's memo, the walk writes a `GET` where the segment holds the object, so the
//!   segment is used only when *none* of the objects it memoizes is in the memo yet (checked on
//!   every use; otherwise the arguments are walked as usual). Its `MEMOIZE`s carry no index (the
//!   native protocols are 4 and 5), so they stay as they are; its `GET`s carry absolute indices:
//!   each is written again at use, either for an entry the segment itself made (the memo's size
//!   where the segment starts, plus its offset) or for `types.CodeType` (which
//!   `_builtin_type("CodeType")` before the arguments always leaves in the memo), with
//!   `BINGET` or `LONG_BINGET` as the index needs. The segment's entries then enter our memo
//!   under the same indices, so later references to those objects are `GET`s as in `pickle`.
//! - **frames.** A frame closes at the first object that starts once the open frame holds
//!   64 KiB; a segment is copied only when the open frame stays below that through its end, and
//!   one whose recording closed a frame (a payload of 64 KiB or more) is never kept.
//!
//! A segment is recorded by walking the arguments once into a stream of their own whose memo
//! holds only `types.CodeType`, and is kept only for code objects whose fields are all of the
//! types the walker writes without running Python code or consulting a table that can change
//! (str, bytes, int, float, bool, None, tuple, frozenset, and code objects made of those); any
//! other constant (an `Ellipsis`, a complex) leaves that code object walked every time. Nested
//! code objects are part of their parent's segment. One segment per protocol (4 and 5).
//!
//! The table is keyed by the code object's address and holds a weak reference to it, whose
//! callback drops the entry when the code object is freed; every use also checks that the weak
//! reference still points at this very object, so a new object at a reused address never finds
//! a dead one's segment. Nothing here keeps a code object alive (a segment holds the objects
//! its code object holds, never the code object itself).
//!
//! CPython 3.11+ computes `co_code` from the adaptive bytecode and caches the result on the code
//! object; the segment holds the bytes object it wrote, and is used only while `co_code` still
//! returns that very object.

use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCFunction, PyFloat, PyFrozenSet, PyInt, PyString, PyTuple};
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};
use rustc_hash::FxHashMap;

use super::memo::MemoTable;
use super::types::code;
use super::Pickler;
use crate::opcodes::*;
use crate::writer::FRAME_SIZE_TARGET;

/// Code objects noted or kept at most; past that the table starts again.
const MAX_ENTRIES: usize = 8192;

/// A recorded segment is kept only below this size (it then can't have closed a frame, and
/// copying it often fits the open frame).
const MAX_SEGMENT: usize = FRAME_SIZE_TARGET / 2;

/// The encoded arguments of one code object for one protocol.
struct Segment {
    /// The opcodes as recorded, `GET`s included (rewritten at use, see `pieces`).
    bytes: Vec<u8>,
    /// The literal runs of `bytes` and the `GET`s between them.
    pieces: Vec<Piece>,
    /// Every object the arguments' walk entered into the memo, with its index as an offset
    /// from the memo's size where the segment starts.
    entries: Vec<(Py<PyAny>, u32)>,
    /// Memo indices the segment takes (`MEMOIZE`s), entries or not.
    indices: u32,
    /// The longest the segment can come out (every `GET` as a `LONG_BINGET`).
    max_len: usize,
    /// `co_code` of this code object and of each code object nested in it, as written (see the
    /// module docs); `None` stands for this code object, which must not be kept alive.
    co_codes: Vec<(Option<Py<PyAny>>, Py<PyAny>)>,
    /// Objects the walk counts (`stats()`), added at each use.
    objects: u64,
}

#[derive(Clone, Copy)]
enum Piece {
    /// `bytes[start..end]` as recorded.
    Literal(u32, u32),
    /// A `GET` of `types.CodeType`.
    GetCodeType,
    /// A `GET` of the entry this many indices after the segment's first.
    GetOwn(u32),
}

#[derive(Clone)]
enum Slot {
    /// Not recorded yet for this protocol.
    Unknown,
    /// Walked every time (a field of a kind that is not copied, or a segment too large).
    Never,
    Ready(Arc<Segment>),
}

struct Entry {
    /// A weak reference to the code object, whose callback removes this entry; `None` in the
    /// note left by a code object's first use.
    weakref: Option<Py<PyWeakrefReference>>,
    /// Protocol 4, protocol 5.
    slots: [Slot; 2],
    /// What `code::info` found for this code object (a `CodeInfo`), kept with the entry so
    /// that it is found by identity instead of by hashing the code object.
    info: Option<Py<PyAny>>,
}

static TABLE: LazyLock<Mutex<FxHashMap<usize, Entry>>> = LazyLock::new(Default::default);

/// The table, locked. Held only for map operations: nothing that can run Python code (or drop
/// a Python object, which may free a code object whose callback takes the lock) runs while it
/// is held.
fn table() -> MutexGuard<'static, FxHashMap<usize, Entry>> {
    TABLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes the argument tuple of `code` from its segment when the segment applies to this
/// stream (see the module docs); `false` when nothing was written and the caller walks it.
pub fn write_args<'py>(p: &mut Pickler<'py>, code: &Bound<'py, PyAny>) -> PyResult<bool> {
    let Some(segment) = segment(p, code)? else {
        return Ok(false);
    };
    let py = p.py;
    let Some(code_type_idx) = p.memo.get(p.lookup.cp.code_type.bind(py).as_any()) else {
        return Ok(false);
    };
    // The argument tuple's own `save()` ends a full frame first, as the walk would; the copy
    // then fits in the open frame only if no frame could end inside it.
    p.out.boundary();
    match p.out.frame_payload() {
        Some(n) if n + segment.max_len < FRAME_SIZE_TARGET => {}
        _ => return Ok(false),
    }
    let co_code = pyo3::intern!(py, "co_code");
    for (nested, written) in &segment.co_codes {
        let now = match nested {
            Some(nested) => nested.bind(py).getattr(co_code)?,
            None => code.getattr(co_code)?,
        };
        if !now.is(written) {
            return Ok(false);
        }
    }
    for (obj, _) in &segment.entries {
        if p.memo.get(obj.bind(py)).is_some() {
            return Ok(false);
        }
    }
    let base = p.memo.next_index();
    for piece in &segment.pieces {
        match *piece {
            Piece::Literal(start, end) => p.out.raw(&segment.bytes[start as usize..end as usize]),
            Piece::GetCodeType => p.out.get(code_type_idx),
            Piece::GetOwn(offset) => p.out.get(base + offset),
        }
    }
    p.memo
        .extend_relocated(py, &segment.entries, segment.indices);
    p.counts.objects += segment.objects;
    Ok(true)
}

/// The segment of `code` for this stream's protocol, recorded now if this code object was
/// seen before and never recorded; `None` when it is not kept. A code object met for the first
/// time is only noted (a function copy pickled once, as in a `client.submit` loop, would not
/// pay back its recording), in an entry without a weak reference: a note left by a dead code
/// object at a reused address can only make a new one recorded on its first use.
fn segment<'py>(p: &mut Pickler<'py>, code: &Bound<'py, PyAny>) -> PyResult<Option<Arc<Segment>>> {
    let py = p.py;
    let key = code.as_ptr() as usize;
    let slot = usize::from(p.proto == 5);
    let found = {
        let table = table();
        table.get(&key).map(|entry| {
            (
                entry.slots[slot].clone(),
                entry.weakref.as_ref().map(|w| w.clone_ref(py)),
            )
        })
    };
    let Some((found, weakref)) = found else {
        let dropped = {
            let mut table = table();
            let dropped = take_if_full(&mut table);
            table.insert(
                key,
                Entry {
                    weakref: None,
                    slots: [Slot::Unknown, Slot::Unknown],
                    info: None,
                },
            );
            dropped
        };
        drop(dropped);
        return Ok(None);
    };
    // An entry whose weak reference no longer points here is a dead code object's (its
    // callback not run yet): recorded again for this one.
    let weakref = weakref.filter(|w| w.bind(py).upgrade().is_some_and(|c| c.is(code)));
    let found = if weakref.is_some() {
        found
    } else {
        Slot::Unknown
    };
    let recorded = match found {
        Slot::Ready(segment) => return Ok(Some(segment)),
        Slot::Never => return Ok(None),
        Slot::Unknown => match record(p, code)? {
            Some(recorded) => recorded,
            // The walk failed: the caller's walk raises (or succeeds) as it would have.
            None => return Ok(None),
        },
    };
    let weakref = match weakref {
        Some(w) => w,
        None => watch(code)?,
    };
    let result = match &recorded {
        Slot::Ready(segment) => Some(segment.clone()),
        _ => None,
    };
    let dropped = {
        let mut table = table();
        let dropped = take_if_full(&mut table);
        let entry = table.entry(key).or_insert_with(|| Entry {
            weakref: None,
            slots: [Slot::Unknown, Slot::Unknown],
            info: None,
        });
        // A dead code object's entry is replaced whole.
        let stale = match &entry.weakref {
            Some(w) if !w.is(&weakref) => Some(std::mem::replace(
                entry,
                Entry {
                    weakref: None,
                    slots: [Slot::Unknown, Slot::Unknown],
                    info: None,
                },
            )),
            _ => None,
        };
        entry.weakref = Some(weakref);
        entry.slots[slot] = recorded;
        (dropped, stale)
    };
    drop(dropped);
    Ok(result)
}

/// The whole table when it holds [`MAX_ENTRIES`], left empty (dropped by the caller once the
/// lock is released).
fn take_if_full(table: &mut FxHashMap<usize, Entry>) -> FxHashMap<usize, Entry> {
    if table.len() >= MAX_ENTRIES {
        std::mem::take(table)
    } else {
        FxHashMap::default()
    }
}

/// A weak reference to `code` whose callback drops its entry when `code` is freed.
fn watch<'py>(code: &Bound<'py, PyAny>) -> PyResult<Py<PyWeakrefReference>> {
    let key = code.as_ptr() as usize;
    let callback = PyCFunction::new_closure(code.py(), None, None, move |_args, _kwargs| {
        let removed = table().remove(&key);
        drop(removed);
    })?;
    Ok(PyWeakrefReference::new_with(code, callback)?.unbind())
}

/// Walks the arguments of `code` into a stream of their own and keeps what they wrote; `None`
/// when the walk failed.
fn record<'py>(p: &mut Pickler<'py>, code: &Bound<'py, PyAny>) -> PyResult<Option<Slot>> {
    let py = p.py;
    let mut co_codes = Vec::new();
    if !copyable(p, code, true, &mut co_codes)? {
        return Ok(Some(Slot::Never));
    }
    let mut sub = Pickler::new(
        py,
        p.lookup,
        p.layouts,
        p.proto,
        None,
        Vec::new(),
        MemoTable::default(),
    );
    sub.cloudpickle_stream = true;
    #[cfg(Py_3_12)]
    {
        sub.depth = p.depth;
    }
    let code_type = p.lookup.cp.code_type.bind(py).clone().into_any();
    sub.memo.put(&code_type);
    let mark = sub.memo.mark();
    let start = sub.out.len();
    let frame = sub.out.frame_start();
    if code::save_code_args(&mut sub, code).is_err() {
        return Ok(None);
    }
    let bytes = sub.out.written_since(start).to_vec();
    if sub.out.frame_start() != frame || bytes.len() > MAX_SEGMENT {
        return Ok(Some(Slot::Never));
    }
    let Some(pieces) = scan(&bytes) else {
        return Ok(Some(Slot::Never));
    };
    let gets = pieces
        .iter()
        .filter(|piece| !matches!(piece, Piece::Literal(..)))
        .count();
    let entries = sub
        .memo
        .entries_since(mark)
        .iter()
        .map(|(obj, idx)| (obj.clone_ref(py), idx - 1))
        .collect();
    Ok(Some(Slot::Ready(Arc::new(Segment {
        max_len: bytes.len() + 3 * gets,
        bytes,
        pieces,
        entries,
        indices: sub.memo.next_index() - 1,
        co_codes,
        objects: sub.counts.objects,
    }))))
}

/// Whether every field of `code` (and of the code objects among its constants) is of a type
/// the walker writes without running Python code; collects their `co_code`s.
fn copyable<'py>(
    p: &Pickler<'py>,
    code: &Bound<'py, PyAny>,
    outermost: bool,
    co_codes: &mut Vec<(Option<Py<PyAny>>, Py<PyAny>)>,
) -> PyResult<bool> {
    let py = code.py();
    let co_code = code.getattr(pyo3::intern!(py, "co_code"))?;
    co_codes.push((
        (!outermost).then(|| code.clone().unbind()),
        co_code.unbind(),
    ));
    for value in code::code_field_values(p.lookup, code)? {
        if !copyable_value(p, &value, co_codes)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn copyable_value<'py>(
    p: &Pickler<'py>,
    value: &Bound<'py, PyAny>,
    co_codes: &mut Vec<(Option<Py<PyAny>>, Py<PyAny>)>,
) -> PyResult<bool> {
    if value.is_none()
        || value.is_exact_instance_of::<PyString>()
        || value.is_exact_instance_of::<PyBytes>()
        || value.is_exact_instance_of::<PyInt>()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<pyo3::types::PyBool>()
    {
        return Ok(true);
    }
    if value.is_exact_instance_of::<PyTuple>() || value.is_exact_instance_of::<PyFrozenSet>() {
        for item in value.try_iter()? {
            if !copyable_value(p, &item?, co_codes)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if value.get_type().is(p.lookup.cp.code_type.bind(value.py())) {
        return copyable(p, value, false, co_codes);
    }
    Ok(false)
}

/// Splits a recorded segment into literal runs and `GET`s. Index 0 is `types.CodeType` (the
/// recording memo's first entry); the others are the segment's own. `None` when an opcode the
/// argument walk of a copyable code object can't write appears.
fn scan(bytes: &[u8]) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut literal_start = 0;
    let mut i = 0;
    let len_at = |at: usize, width: usize| -> Option<usize> {
        let b = bytes.get(at..at + width)?;
        let mut le = [0u8; 8];
        le[..width].copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(le)).ok()
    };
    while i < bytes.len() {
        let op = bytes[i];
        let get = match op {
            BINGET => Some((u32::from(*bytes.get(i + 1)?), 2)),
            LONG_BINGET => Some((u32::try_from(len_at(i + 1, 4)?).ok()?, 5)),
            _ => None,
        };
        if let Some((idx, width)) = get {
            if literal_start < i {
                pieces.push(Piece::Literal(literal_start as u32, i as u32));
            }
            pieces.push(if idx == 0 {
                Piece::GetCodeType
            } else {
                Piece::GetOwn(idx - 1)
            });
            i += width;
            literal_start = i;
            continue;
        }
        let arg = match op {
            MARK | TUPLE | TUPLE1 | TUPLE2 | TUPLE3 | EMPTY_TUPLE | MEMOIZE | NONE | NEWTRUE
            | NEWFALSE | FROZENSET | POP | POP_MARK | REDUCE => 0,
            BININT1 => 1,
            BININT2 => 2,
            BININT => 4,
            BINFLOAT => 8,
            LONG1 => 1 + len_at(i + 1, 1)?,
            LONG4 => 4 + len_at(i + 1, 4)?,
            SHORT_BINUNICODE | SHORT_BINBYTES => 1 + len_at(i + 1, 1)?,
            BINUNICODE | BINBYTES => 4 + len_at(i + 1, 4)?,
            BINUNICODE8 | BINBYTES8 => 8 + len_at(i + 1, 8)?,
            _ => return None,
        };
        i = i.checked_add(1 + arg)?;
    }
    if i != bytes.len() {
        return None;
    }
    if literal_start < i {
        pieces.push(Piece::Literal(literal_start as u32, i as u32));
    }
    Some(pieces)
}

/// The `CodeInfo` kept for this very code object by [`keep_info`], if its entry is still
/// there.
pub fn info_of<'py>(code: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let py = code.py();
    let (weakref, info) = {
        let table = table();
        let entry = table.get(&(code.as_ptr() as usize))?;
        (
            entry.weakref.as_ref()?.clone_ref(py),
            entry.info.as_ref()?.clone_ref(py),
        )
    };
    let alive = weakref.bind(py).upgrade().is_some_and(|c| c.is(code));
    alive.then(|| info.into_bound(py))
}

/// Keeps `info` with the entry of `code`, when `code` has one of its own (from its second
/// `dumps` on).
pub fn keep_info(code: &Bound<'_, PyAny>, info: &Bound<'_, PyAny>) {
    let mut table = table();
    if let Some(entry) = table.get_mut(&(code.as_ptr() as usize)) {
        // Upgrading and dropping the reference runs no Python code: `code` is alive.
        let own = entry
            .weakref
            .as_ref()
            .is_some_and(|w| w.bind(code.py()).upgrade().is_some_and(|c| c.is(code)));
        if own && entry.info.is_none() {
            entry.info = Some(info.clone().unbind());
        }
    }
}

/// Number of code objects whose arguments are kept (for any protocol).
pub fn len() -> usize {
    table()
        .values()
        .filter(|e| e.slots.iter().any(|s| matches!(s, Slot::Ready(_))))
        .count()
}

/// Drops every segment.
pub fn clear() {
    let dropped = std::mem::take(&mut *table());
    drop(dropped);
}
