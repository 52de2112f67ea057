//! The rarer opcodes: protocol 0/1 text arguments, globals (`find_class`), object
//! construction (REDUCE, NEWOBJ, INST/OBJ, BUILD), extensions and out-of-band buffers, plus
//! the generic (non-list, non-dict, non-set) paths of the container-filling opcodes.
//!
//! Each function names the `Modules/_pickle.c` function it mirrors.

use std::ffi::CStr;

use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::input::owned_line;
use super::stack::Owned;
use super::{capi, Reader};
use crate::layouts::{path, task_node};

/// `getattr(obj, name)`, with `AttributeError` turned into `None` (`_PyObject_LookupAttr`).
fn lookup_attr<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    // SAFETY: both objects are live; a NULL result is handled below.
    let attr = unsafe { ffi::PyObject_GetAttr(obj.as_ptr(), name.as_ptr()) };
    // SAFETY: `attr` is a new reference or NULL with an exception set.
    match unsafe { Bound::from_owned_ptr_or_err(obj.py(), attr) } {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<PyAttributeError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

extern "C" {
    /// `PySys_Audit` (CPython 3.8+, public C API; not wrapped by pyo3-ffi).
    fn PySys_Audit(event: *const std::ffi::c_char, format: *const std::ffi::c_char, ...) -> i32;
}

/// The path builder of `layouts::path`, when this Python's `pathlib` layout was recognised.
fn path_builder(py: Python<'_>) -> Option<&'static path::PathLayout> {
    path::get(py).ok().flatten()
}

/// The C-level type name of `obj`'s type (`Py_TYPE(obj)->tp_name`), as CPython's messages use.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    // SAFETY: `obj` is live, so its type is; `tp_name` is a NUL-terminated C string owned by
    // the type object.
    unsafe { CStr::from_ptr((*ffi::Py_TYPE(obj.as_ptr())).tp_name) }
        .to_string_lossy()
        .into_owned()
}

/// `[+-]?digits` in `radix` as an `i64`, or `None` if it is not that or might overflow (the
/// caller then falls back to Python's arbitrary-precision parser).
fn parse_i64(s: &[u8], radix: u32) -> Option<i64> {
    let (neg, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        let d = char::from(d).to_digit(radix)?;
        v = v * i64::from(radix) + i64::from(d);
    }
    Some(if neg { -v } else { v })
}

/// The base in which INT and LONG read their text: CPython 3.14 made both decimal
/// (`strtol(s, &end, 10)`, `PyLong_FromString(s, NULL, 10)`: "010" is ten, "0x1f" an error);
/// before, base 0 (Python literal syntax: "0x1f" is 31, "010" octal in C's `strtol`).
const TEXT_INT_BASE: u32 = if cfg!(Py_3_14) { 10 } else { 0 };

/// C's `strtol(s, &end, base)` (glibc) on `s`, for base 0 or 10: the value, the index `end`
/// points at, and whether it overflowed (`ERANGE`). Leading C whitespace and a sign are skipped;
/// in base 0, `0x` starts hex (only when a hex digit follows: otherwise just the `0` is read),
/// another leading `0` octal; with no digits at all, `end` is 0.
fn strtol(s: &[u8], base: u32) -> (i64, usize, bool) {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut i = 0;
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let (radix, start) = match (s.get(i), s.get(i + 1), s.get(i + 2)) {
        _ if base == 10 => (10, i),
        (Some(b'0'), Some(b'x' | b'X'), Some(h)) if h.is_ascii_hexdigit() => (16, i + 2),
        (Some(b'0'), Some(b'x' | b'X'), _) => return (0, i + 1, false),
        (Some(b'0'), _, _) => (8, i),
        _ => (10, i),
    };
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    let mut j = start;
    while let Some(d) = s.get(j).and_then(|&b| char::from(b).to_digit(radix)) {
        match magnitude
            .checked_mul(u64::from(radix))
            .and_then(|m| m.checked_add(u64::from(d)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        j += 1;
    }
    if j == start {
        return (0, 0, false);
    }
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    if overflow || magnitude > limit {
        return (if negative { i64::MIN } else { i64::MAX }, j, true);
    }
    let value = if negative {
        0i64.wrapping_sub_unsigned(magnitude)
    } else {
        magnitude as i64
    };
    (value, j, false)
}

/// `s` up to its first NUL, NUL-terminated: how the C unpickler hands a text argument to
/// `PyLong_FromString` / `PyOS_string_to_double` (which stop at the NUL).
fn c_text(mut s: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = s.iter().position(|&b| b == 0) {
        s.truncate(nul);
    }
    s.push(0);
    s
}

/// The attribute lookup of `find_class` since CPython 3.14: from protocol 4 a dotted name is
/// a path, any step of which failing is `AttributeError("Can't resolve path 'a.b' on module
/// 'm'")`; otherwise one `getattr`, raising what it raises.
fn find_attribute_314<'py>(
    proto: u8,
    module: &Bound<'py, PyAny>,
    module_name: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = module.py();
    if proto >= 4 {
        let dotted = name.cast::<PyString>()?.to_str()?;
        if dotted.contains('.') {
            let mut obj = module.clone();
            for part in dotted.split('.') {
                obj = match obj.getattr(part) {
                    Ok(next) => next,
                    Err(e) if e.is_instance_of::<PyAttributeError>(py) => {
                        return Err(PyAttributeError::new_err(format!(
                            "Can't resolve path {} on module {}",
                            name.repr()?,
                            module_name.repr()?
                        )))
                    }
                    Err(e) => return Err(e),
                };
            }
            return Ok(obj);
        }
    }
    // SAFETY: both objects are live; the result is a new reference or NULL with an exception.
    unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyObject_GetAttr(module.as_ptr(), name.as_ptr()))
    }
}

impl<'py> Reader<'py> {
    /// A text argument line (without its `\n`). Like `_Unpickler_Readline` plus the
    /// `len < 2` checks of the C loaders, a missing newline or an empty argument means
    /// truncated data.
    fn text_arg(&mut self) -> PyResult<Vec<u8>> {
        match self.input.line() {
            Some(line) if line.1 > 0 => Ok(owned_line(line)),
            _ => Err(self.truncated()),
        }
    }

    /// Wrap a new reference from a C API call that may have failed.
    fn owned(&self, obj: *mut ffi::PyObject) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `obj` is a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(self.py, obj) }
    }

    /// Push a `Bound`, giving its reference to the stack.
    fn push_bound(&mut self, obj: Bound<'py, PyAny>) {
        self.stack.push(obj.into_ptr());
    }

    /// The object at stack position `i` as a new `Bound` (callers check `i < len`).
    fn stack_bound(&self, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let obj: Owned = self.stack.get(i).ok_or_else(|| self.underflow())?;
        // SAFETY: `obj` is a live object owned by the stack; this takes a new reference.
        Ok(unsafe { Bound::from_borrowed_ptr(self.py, obj) })
    }

    /// `Python int(text, 0)` through `PyLong_FromString`, as the C loaders parse text ints.
    /// `PyLong_FromString(text, NULL, base)`, raising what it raises (a `ValueError`, or a
    /// `UnicodeDecodeError` when its message can't show the text), as the C loaders do.
    fn long_from_text(&self, text: Vec<u8>, base: i32) -> PyResult<Bound<'py, PyAny>> {
        let text = c_text(text);
        // SAFETY: `text` is NUL-terminated and outlives the call, which copies what it needs.
        let obj =
            unsafe { ffi::PyLong_FromString(text.as_ptr().cast(), std::ptr::null_mut(), base) };
        self.owned(obj)
    }

    /// INT (`load_int`): C's `strtol(s, &end, base)` over the line (its `\n` included); if
    /// that overflowed or stopped before the end of the line, `PyLong_FromString(s, NULL,
    /// base)`, whose failure is `ValueError("could not convert string to int")`
    /// ([`TEXT_INT_BASE`]). Protocol 0's `False`/`True` are the lines "00" and "01"; before
    /// CPython 3.15, any two-character line reading 0 or 1 (" 1", "-0", "+1", ...).
    pub(super) fn load_int(&mut self) -> PyResult<()> {
        let mut line = self.text_arg()?;
        line.push(b'\n');
        // The C code works on a NUL-terminated copy: the line ends at its first NUL.
        let text = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
        let (value, end, overflow) = strtol(text, TEXT_INT_BASE);
        let at = |i: usize| text.get(i).copied().unwrap_or(0);
        let stopped_early =
            (at(end) != b'\n' && at(end) != 0) || (at(end) == b'\n' && at(end + 1) != 0);
        let obj = if overflow || stopped_early {
            let text = text.to_vec();
            self.long_from_text(text, TEXT_INT_BASE as i32)
                .map_err(|_| PyValueError::new_err("could not convert string to int"))?
        } else if line.len() == 3
            && (value == 0 || value == 1)
            && (!cfg!(Py_3_15) || line[0] == b'0')
        {
            // SAFETY: `boolean` returns a borrowed static object; this takes a reference.
            unsafe { Bound::from_borrowed_ptr(self.py, capi::boolean(self.py, value == 1)) }
        } else {
            self.owned(capi::long(self.py, value))?
        };
        self.push_bound(obj);
        Ok(())
    }

    /// LONG (`load_long`): Python 2 `repr(long)`; the trailing `L` is optional. Read by
    /// `PyLong_FromString` in [`TEXT_INT_BASE`], over the line with its `\n` unless an `L`
    /// ended it (C cuts the line there), as the error message shows.
    pub(super) fn load_long(&mut self) -> PyResult<()> {
        let mut line = self.text_arg()?;
        if line.last() == Some(&b'L') {
            line.pop();
        } else {
            line.push(b'\n');
        }
        let obj = self.long_from_text(line, TEXT_INT_BASE as i32)?;
        self.push_bound(obj);
        Ok(())
    }

    /// FLOAT (`load_float`): `PyOS_string_to_double` over the whole argument.
    pub(super) fn load_float(&mut self) -> PyResult<()> {
        let text = c_text(self.text_arg()?);
        let mut end: *mut std::ffi::c_char = std::ptr::null_mut();
        // SAFETY: `text` is NUL-terminated and outlives the call; `end` receives a pointer
        // into it; `PyExc_OverflowError` is a valid exception type.
        let v = unsafe {
            ffi::PyOS_string_to_double(text.as_ptr().cast(), &mut end, ffi::PyExc_OverflowError)
        };
        if v == -1.0 {
            if let Some(err) = PyErr::take(self.py) {
                return Err(err);
            }
        }
        // SAFETY: `end` points into `text` (at worst at its terminating NUL).
        if end.is_null() || unsafe { *end } != 0 {
            return Err(PyValueError::new_err("could not convert string to float"));
        }
        let obj = self.owned(capi::float(self.py, v))?;
        self.push_bound(obj);
        Ok(())
    }

    /// STRING (`load_string`): a quoted Python 2 `repr(str)`, unescaped with
    /// `codecs.escape_decode` and then decoded like BINSTRING.
    pub(super) fn load_string(&mut self) -> PyResult<()> {
        let line = match self.input.line() {
            Some(line) => owned_line(line),
            None => return Err(self.truncated()),
        };
        let inner = match line.as_slice() {
            [q, inner @ .., last] if q == last && (*q == b'\'' || *q == b'"') => inner,
            _ => return Err(self.fail("the STRING opcode argument must be quoted")),
        };
        static ESCAPE_DECODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let escape_decode = ESCAPE_DECODE.import(self.py, "codecs", "escape_decode")?;
        let decoded = escape_decode.call1((pyo3::types::PyBytes::new(self.py, inner),))?;
        let raw = decoded.get_item(0)?;
        let obj = if self.encoding_is_bytes {
            raw
        } else {
            let raw = raw.cast_into::<pyo3::types::PyBytes>()?;
            let bytes = raw.as_bytes();
            let s = self.decode_string(bytes.as_ptr(), bytes.len());
            self.owned(s)?
        };
        self.push_bound(obj);
        Ok(())
    }

    /// UNICODE (`load_unicode`): raw-unicode-escape text.
    pub(super) fn load_unicode(&mut self) -> PyResult<()> {
        let Some((p, n)) = self.input.line() else {
            return Err(self.truncated());
        };
        // SAFETY: `p..p+n` is the line just read from the live input; the decoder copies it.
        let obj =
            unsafe { ffi::PyUnicode_DecodeRawUnicodeEscape(p.cast(), n as _, std::ptr::null()) };
        let obj = self.owned(obj)?;
        self.push_bound(obj);
        Ok(())
    }

    /// A decimal memo index for PUT/GET (`PyLong_FromString(s, NULL, 10)` in C).
    fn index_from_text(&self, line: Vec<u8>) -> PyResult<i64> {
        if let Some(v) = parse_i64(line.trim_ascii(), 10) {
            return Ok(v);
        }
        // `PyLong_AsSsize_t`'s OverflowError, like the parser's ValueError, is raised as is.
        self.long_from_text(line, 10)?.extract::<i64>()
    }

    /// PUT (`load_put`).
    pub(super) fn load_put(&mut self) -> PyResult<()> {
        // The C code reads the argument, then checks the stack, then parses.
        let line = self.text_arg()?;
        let top = self.top()?;
        let idx = self.index_from_text(line)?;
        let idx =
            usize::try_from(idx).map_err(|_| PyValueError::new_err("negative PUT argument"))?;
        self.memo.put(idx, top);
        Ok(())
    }

    /// GET (`load_get`).
    pub(super) fn load_get(&mut self) -> PyResult<()> {
        let line = self.text_arg()?;
        let idx = self.index_from_text(line)?;
        match usize::try_from(idx).ok().and_then(|i| self.memo.get(i)) {
            Some(obj) => {
                self.push_borrowed(obj);
                Ok(())
            }
            None => Err(self.fail(format!("Memo value not found at index {idx}"))),
        }
    }

    /// The generic half of `do_append`: call `extend(items)` if the object has it, else
    /// `append(item)` for each item.
    pub(super) fn append_generic(&mut self, target: Owned, x: usize) -> PyResult<()> {
        // SAFETY: `target` is a live object owned by the stack; this takes a new reference.
        let target = unsafe { Bound::from_borrowed_ptr(self.py, target) };
        if let Some(extend) = lookup_attr(&target, intern!(self.py, "extend").as_any())? {
            let n = self.stack.len() - x;
            let slice = self.owned(capi::list(self.py, n))?;
            let l = slice.as_ptr();
            // SAFETY: `l` is a fresh list of size `n`; each slot gets one reference moved off
            // the stack.
            self.stack
                .drain_from(x, |i, obj| unsafe { ffi::PyList_SET_ITEM(l, i as _, obj) });
            extend.call1((slice,))?;
        } else {
            let append = target.getattr(intern!(self.py, "append"))?;
            for i in x..self.stack.len() {
                append.call1((self.stack_bound(i)?,))?;
            }
            self.stack.truncate(x);
        }
        Ok(())
    }

    /// DICT (`load_dict`).
    pub(super) fn load_dict(&mut self) -> PyResult<()> {
        let start = self.marker()?;
        let len = self.stack.len();
        if (len - start) % 2 != 0 {
            return Err(self.fail("odd number of items for DICT"));
        }
        let dict = self.owned(capi::dict(self.py))?;
        for i in (start..len).step_by(2) {
            let (Some(k), Some(v)) = (self.stack.get(i), self.stack.get(i + 1)) else {
                break;
            };
            // SAFETY: `dict` is a fresh dict; `k`, `v` are live objects owned by the stack.
            if unsafe { ffi::PyDict_SetItem(dict.as_ptr(), k, v) } < 0 {
                return Err(self.fetch());
            }
        }
        self.stack.truncate(start);
        self.push_bound(dict);
        Ok(())
    }

    /// FROZENSET (`load_frozenset`).
    pub(super) fn load_frozenset(&mut self) -> PyResult<()> {
        let start = self.marker()?;
        let items = self.new_tuple_from(start)?;
        // SAFETY: `items` is a new tuple reference we own.
        let items = unsafe { Bound::from_owned_ptr(self.py, items) };
        // SAFETY: `items` is a live tuple; NULL is handled by `owned`.
        let fs = self.owned(unsafe { ffi::PyFrozenSet_New(items.as_ptr()) })?;
        self.push_bound(fs);
        Ok(())
    }

    /// ADDITEMS (`load_additems`): `PySet_Add` for sets (and subclasses), else `add(item)`.
    pub(super) fn load_additems(&mut self) -> PyResult<()> {
        let mark = self.marker()?;
        let len = self.items_from(mark)?;
        if len == mark && !cfg!(Py_3_15) {
            return Ok(());
        }
        // Since CPython 3.15 an empty batch still looks up `add` on a target that is not a set.
        let target = self.stack_bound(mark - 1)?;
        // SAFETY: `target` is live.
        if unsafe { ffi::PySet_Check(target.as_ptr()) } != 0 {
            for i in mark..len {
                let Some(item) = self.stack.get(i) else { break };
                // SAFETY: `target` is a set; `item` a live object owned by the stack;
                // `PySet_Add` takes its own reference.
                if unsafe { ffi::PySet_Add(target.as_ptr(), item) } < 0 {
                    return Err(self.fetch());
                }
            }
        } else {
            let add = target.getattr(intern!(self.py, "add"))?;
            for i in mark..len {
                add.call1((self.stack_bound(i)?,))?;
            }
        }
        self.stack.truncate(mark);
        Ok(())
    }

    /// `find_class` (`_pickle_Unpickler_find_class_impl`): audit hook, Python 2 name
    /// mapping for protocols < 3, `PyImport_Import`, then attribute lookup (dotted paths
    /// allowed from protocol 4).
    fn find_class(
        &self,
        module: Bound<'py, PyAny>,
        name: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        // SAFETY: the format "OO" matches the two live object arguments; `PySys_Audit` returns
        // -1 with an exception set when a hook raises.
        if unsafe {
            PySys_Audit(
                c"pickle.find_class".as_ptr(),
                c"OO".as_ptr(),
                module.as_ptr(),
                name.as_ptr(),
            )
        } < 0
        {
            return Err(self.fetch());
        }
        let (mut module, mut name) = (module, name);
        if self.proto < 3 && self.fix_imports {
            static NAME_MAPPING: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
            static IMPORT_MAPPING: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
            let key = PyTuple::new(py, [&module, &name])?;
            let name_mapping = NAME_MAPPING.import(py, "_compat_pickle", "NAME_MAPPING")?;
            if let Some(item) = name_mapping.get_item(&key)? {
                let pair = item
                    .cast::<PyTuple>()
                    .ok()
                    .filter(|t| t.len() == 2)
                    .map(|t| (t.get_item(0), t.get_item(1)));
                match pair {
                    Some((Ok(m), Ok(n)))
                        if m.is_instance_of::<PyString>() && n.is_instance_of::<PyString>() =>
                    {
                        module = m;
                        name = n;
                    }
                    _ => {
                        return Err(PyRuntimeError::new_err(format!(
                        "_compat_pickle.NAME_MAPPING values should be 2-tuples of strings, not {}",
                        type_name(&item)
                    )))
                    }
                }
            } else {
                let import_mapping =
                    IMPORT_MAPPING.import(py, "_compat_pickle", "IMPORT_MAPPING")?;
                if let Some(item) = import_mapping.get_item(&module)? {
                    if !item.is_instance_of::<PyString>() {
                        return Err(PyRuntimeError::new_err(format!(
                            "_compat_pickle.IMPORT_MAPPING values should be strings, not {}",
                            type_name(&item)
                        )));
                    }
                    module = item;
                }
            }
        }
        let module_name = module;
        let module = self.import_module(&module_name)?;
        if cfg!(Py_3_14) {
            return find_attribute_314(self.proto, &module, &module_name, &name);
        }
        let found = if self.proto >= 4 {
            // `get_dotted_path` + `get_deep_attribute`.
            let dotted = name.cast::<PyString>()?.to_str()?;
            if dotted.split('.').any(|part| part == "<locals>") {
                // CPython 3.13 reworded this message ("pickle" became "get").
                let verb = if cfg!(Py_3_13) { "get" } else { "pickle" };
                return Err(PyAttributeError::new_err(format!(
                    "Can't {verb} local attribute {} on {}",
                    name.repr()?,
                    module.repr()?
                )));
            }
            let mut obj = Some(module.clone());
            for part in dotted.split('.') {
                obj = match obj {
                    Some(o) => lookup_attr(&o, PyString::new(py, part).as_any())?,
                    None => break,
                };
            }
            obj
        } else {
            lookup_attr(&module, &name)?
        };
        match found {
            Some(obj) => Ok(obj),
            None => Err(PyAttributeError::new_err(format!(
                "Can't get attribute {} on {}",
                name.repr()?,
                module.repr()?
            ))),
        }
    }

    /// `__import__(module)` then `sys.modules[module]`, as `find_class` does, starting with
    /// `sys.modules` itself: for a module that is already imported and fully initialised that is
    /// all `PyImport_Import` ends up returning, without its call through `builtins.__import__`.
    /// A module still initialising (`__spec__._initializing`) takes the full import, which waits
    /// for it, as in CPython (bpo-20664).
    fn import_module(&self, name: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        // SAFETY: `name` is live; `PyImport_GetModule` returns a new reference or NULL.
        let cached = unsafe { ffi::PyImport_GetModule(name.as_ptr()) };
        if cached.is_null() {
            let _ = PyErr::take(py);
        } else {
            // SAFETY: a new reference we now own.
            let module = unsafe { Bound::from_owned_ptr(py, cached) };
            let initialising = module
                .getattr_opt(intern!(py, "__spec__"))?
                .filter(|spec| !spec.is_none())
                .map(|spec| spec.getattr_opt(intern!(py, "_initializing")))
                .transpose()?
                .flatten()
                .map(|flag| flag.is_truthy())
                .transpose()?
                .unwrap_or(false);
            if !initialising {
                return Ok(module);
            }
        }
        // SAFETY: `name` is live; NULL is handled by `owned`.
        self.owned(unsafe { ffi::PyImport_Import(name.as_ptr()) })
    }

    /// A module or class name argument of GLOBAL/INST: a non-empty line, decoded strictly.
    fn name_arg(&mut self, ascii: bool) -> PyResult<Bound<'py, PyAny>> {
        let Some((p, n)) = self.input.line().filter(|l| l.1 > 0) else {
            return Err(self.truncated());
        };
        // SAFETY: `p..p+n` is the line just read from the live input; the decoders copy it.
        let s = unsafe {
            if ascii {
                ffi::PyUnicode_DecodeASCII(p.cast(), n as _, c"strict".as_ptr())
            } else {
                ffi::PyUnicode_DecodeUTF8(p.cast(), n as _, c"strict".as_ptr())
            }
        };
        self.owned(s)
    }

    /// GLOBAL (`load_global`).
    pub(super) fn load_global(&mut self) -> PyResult<()> {
        let module = self.name_arg(false)?;
        let name = self.name_arg(false)?;
        let obj = self.find_class(module, name)?;
        self.push_bound(obj);
        Ok(())
    }

    /// STACK_GLOBAL (`load_stack_global`).
    pub(super) fn load_stack_global(&mut self) -> PyResult<()> {
        let name = self.pop_bound()?;
        let module = self.pop_bound()?;
        if !module.is_exact_instance_of::<PyString>() || !name.is_exact_instance_of::<PyString>() {
            return Err(self.fail("STACK_GLOBAL requires str"));
        }
        let obj = self.find_class(module, name)?;
        self.push_bound(obj);
        Ok(())
    }

    /// `instantiate()` for INST/OBJ: `cls.__new__(cls)` when there are no arguments and the
    /// class has no `__getinitargs__`, else `cls(*args)`.
    fn instantiate(
        &self,
        cls: &Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `cls` is live.
        if args.is_empty() && unsafe { ffi::PyType_Check(cls.as_ptr()) } != 0 {
            let initargs = lookup_attr(cls, intern!(self.py, "__getinitargs__").as_any())?;
            if initargs.is_none() {
                return cls.call_method1(intern!(self.py, "__new__"), (cls,));
            }
        }
        cls.call1(args)
    }

    /// The objects from `start` up, moved off the stack into a tuple.
    fn pop_tuple(&mut self, start: usize) -> PyResult<Bound<'py, PyTuple>> {
        let t = self.new_tuple_from(start)?;
        // SAFETY: `t` is a new tuple reference we own.
        Ok(unsafe { Bound::from_owned_ptr(self.py, t).cast_into_unchecked() })
    }

    /// INST (`load_inst`): MARK args... INST module\nname\n.
    pub(super) fn load_inst(&mut self) -> PyResult<()> {
        let start = self.marker()?;
        let module = self.name_arg(true)?;
        let name = self.name_arg(true)?;
        let cls = self.find_class(module, name)?;
        let args = self.pop_tuple(start)?;
        let obj = self.instantiate(&cls, args)?;
        self.push_bound(obj);
        Ok(())
    }

    /// OBJ (`load_obj`): MARK cls args... OBJ.
    pub(super) fn load_obj(&mut self) -> PyResult<()> {
        let start = self.marker()?;
        if self.stack.len() < start + 1 {
            return Err(self.underflow());
        }
        let args = self.pop_tuple(start + 1)?;
        let cls = self.pop_bound()?;
        let obj = self.instantiate(&cls, args)?;
        self.push_bound(obj);
        Ok(())
    }

    /// REDUCE (`load_reduce`): `callable(*args)`; `PyObject_CallObject` insists on a tuple.
    pub(super) fn load_reduce(&mut self) -> PyResult<()> {
        let args = self.pop_bound()?;
        let callable = self.pop_bound()?;
        // A path built from its args without calling the class (see `layouts::path`).
        if let Some(paths) = path_builder(self.py) {
            if paths.builds(&callable) {
                if let Some(obj) = paths.construct(&callable, &args)? {
                    self.push_bound(obj);
                    return Ok(());
                }
            }
        }
        // SAFETY: both are live; NULL is handled by `owned`. A non-tuple `args` raises
        // TypeError("argument list must be a tuple") as in CPython.
        let obj =
            self.owned(unsafe { ffi::PyObject_CallObject(callable.as_ptr(), args.as_ptr()) })?;
        self.push_bound(obj);
        Ok(())
    }

    /// NEWOBJ / NEWOBJ_EX (`load_newobj`): `cls.__new__(cls, *args, **kwargs)` through the
    /// type's `tp_new` slot, with CPython's argument checks.
    pub(super) fn load_newobj(&mut self, use_kwargs: bool) -> PyResult<()> {
        let kwargs = if use_kwargs {
            Some(self.pop_bound()?)
        } else {
            None
        };
        let args = self.pop_bound()?;
        let cls = self.pop_bound()?;
        // SAFETY: `cls` is live.
        if unsafe { ffi::PyType_Check(cls.as_ptr()) } == 0 {
            return Err(self.fail(format!(
                "class argument must be a type, not {}",
                type_name(&cls)
            )));
        }
        let tp = cls.as_ptr().cast::<ffi::PyTypeObject>();
        // SAFETY: `cls` is a type object, so `tp` points to a live `PyTypeObject`.
        let Some(tp_new) = (unsafe { (*tp).tp_new }) else {
            // SAFETY: as above; `tp_name` is a NUL-terminated string owned by the type.
            let name = unsafe { CStr::from_ptr((*tp).tp_name) }.to_string_lossy();
            return Err(self.fail(format!("class argument '{name}' doesn't have __new__")));
        };
        if !args.is_instance_of::<PyTuple>() {
            return Err(self.fail(format!(
                "args argument must be a tuple, not {}",
                type_name(&args)
            )));
        }
        let kwargs_ptr = match &kwargs {
            Some(kw) if !kw.is_instance_of::<PyDict>() => {
                return Err(self.fail(format!(
                    "kwargs argument must be a dict, not {}",
                    type_name(kw)
                )));
            }
            Some(kw) => kw.as_ptr(),
            None => std::ptr::null_mut(),
        };
        // SAFETY: `tp_new` is the type's own slot, called with the type, a tuple and a dict
        // (or NULL) exactly as `_pickle.c` does; NULL is handled by `owned`.
        let obj = self.owned(unsafe { tp_new(tp, args.as_ptr(), kwargs_ptr) })?;
        self.push_bound(obj);
        Ok(())
    }

    /// BUILD (`load_build`): `inst.__setstate__(state)` if defined; otherwise `state` (or
    /// the first half of a `(state, slotstate)` pair) updates `inst.__dict__` with interned
    /// str keys, and `slotstate` is applied with `setattr`.
    pub(super) fn load_build(&mut self) -> PyResult<()> {
        let py = self.py;
        self.need(2)?;
        let state = self.pop_bound()?;
        let inst = self.stack_bound(self.stack.len() - 1)?;
        // A dask `Task`: its `__setstate__` sets slots from a tuple; do that without the call.
        if let Some(nodes) = task_node::get(py) {
            if nodes.restore(&inst, &state)? {
                return Ok(());
            }
        }
        if let Some(setstate) = lookup_attr(&inst, intern!(py, "__setstate__").as_any())? {
            setstate.call1((state,))?;
            return Ok(());
        }
        let (state, slotstate) = match state.cast::<PyTuple>() {
            Ok(t) if t.len() == 2 => (t.get_item(0)?, Some(t.get_item(1)?)),
            _ => (state, None),
        };
        if !state.is_none() {
            let Ok(state) = state.cast::<PyDict>() else {
                return Err(self.fail("state is not a dictionary"));
            };
            let inst_dict = inst.getattr(intern!(py, "__dict__"))?;
            // Iterate over a snapshot: `__setitem__`/`__hash__` may run Python code that
            // mutates `state`.
            for item in state.items().iter() {
                let (key, value) = item.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()?;
                let key = if key.is_exact_instance_of::<PyString>() {
                    let mut p = key.into_ptr();
                    // SAFETY: `p` is an owned reference to an exact str; interning may
                    // replace it with another owned reference, which we then own.
                    unsafe {
                        ffi::PyUnicode_InternInPlace(&mut p);
                        Bound::from_owned_ptr(py, p)
                    }
                } else {
                    key
                };
                inst_dict.set_item(key, value)?;
            }
        }
        if let Some(slotstate) = slotstate {
            let Ok(slotstate) = slotstate.cast::<PyDict>() else {
                return Err(self.fail("slot state is not a dictionary"));
            };
            for item in slotstate.items().iter() {
                let (key, value) = item.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()?;
                // SAFETY: all three objects are live; `PyObject_SetAttr` raises TypeError
                // for a non-str key, as in CPython.
                if unsafe { ffi::PyObject_SetAttr(inst.as_ptr(), key.as_ptr(), value.as_ptr()) } < 0
                {
                    return Err(self.fetch());
                }
            }
        }
        Ok(())
    }

    /// EXT1/EXT2/EXT4 (`load_extension`): an `nbytes` code (EXT4's signed), looked up in the
    /// copyreg extension registry.
    pub(super) fn load_extension(&mut self, nbytes: usize) -> PyResult<()> {
        let py = self.py;
        let code: i64 = match nbytes {
            1 => self.read_u8()?.into(),
            2 => u16::from_le_bytes(self.read_array()?).into(),
            _ => i32::from_le_bytes(self.read_array()?).into(),
        };
        if code <= 0 {
            return Err(self.fail("EXT specifies code <= 0"));
        }
        let copyreg = py.import("copyreg")?;
        let cache = copyreg.getattr("_extension_cache")?;
        let cache = cache.cast::<PyDict>()?;
        if let Some(obj) = cache.get_item(code)? {
            self.push_bound(obj);
            return Ok(());
        }
        let registry = copyreg.getattr("_inverted_registry")?;
        let Some(pair) = registry.cast::<PyDict>()?.get_item(code)? else {
            return Err(PyValueError::new_err(format!(
                "unregistered extension code {code}"
            )));
        };
        let names = pair
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .and_then(|t| Some((t.get_item(0).ok()?, t.get_item(1).ok()?)))
            .filter(|(m, n)| m.is_instance_of::<PyString>() && n.is_instance_of::<PyString>());
        let Some((module, name)) = names else {
            return Err(PyValueError::new_err(format!(
                "_inverted_registry[{code}] isn't a 2-tuple of strings"
            )));
        };
        let obj = self.find_class(module, name)?;
        cache.set_item(code, &obj)?;
        self.push_bound(obj);
        Ok(())
    }

    /// NEXT_BUFFER (`load_next_buffer`): the next object of the `buffers` iterable.
    pub(super) fn load_next_buffer(&mut self) -> PyResult<()> {
        let Some(buffers) = &self.buffers else {
            return Err(self.fail(
                "pickle stream refers to out-of-band data but no *buffers* argument was given",
            ));
        };
        match buffers.clone().next() {
            Some(buf) => {
                self.push_bound(buf?);
                Ok(())
            }
            None => Err(self.fail("not enough out-of-band buffers")),
        }
    }

    /// READONLY_BUFFER (`load_readonly_buffer`): make the top object a read-only
    /// memoryview unless it already is read-only.
    pub(super) fn load_readonly_buffer(&mut self) -> PyResult<()> {
        let top = self.top()?;
        // SAFETY: `top` is live; NULL is handled by `owned`.
        let view = self.owned(unsafe { ffi::PyMemoryView_FromObject(top) })?;
        if !view.getattr(intern!(self.py, "readonly"))?.is_truthy()? {
            let ro = view.call_method0(intern!(self.py, "toreadonly"))?;
            self.stack.replace_top(ro.into_ptr());
        }
        Ok(())
    }
}
