//! The loads side, the unpickler: reads any standard pickle stream (protocols 0-5) into the
//! objects that CPython's `pickle.loads` would return. It shares only plumbing (opcodes,
//! errors, stats) and `crate::layouts` with the dumps side.
//!
//! The design mirrors the C unpickler in CPython's `Modules/_pickle.c`: one flat object stack
//! with a separate mark stack (a mark is a fence pops may not cross), an integer-indexed memo,
//! and a `match` on each opcode byte, one line per opcode as in `load()`. Semantics (including which object methods are looked up
//! and called) follow that file; where it and `Lib/pickle.py` differ, the C code wins because
//! that is what `pickle.loads` runs.
//!
//! Hostile input is part of the contract:
//! * every length prefix is checked against the remaining input before anything is allocated,
//!   so memory stays O(input length); the memo cannot be grown to an attacker-chosen index
//!   (see [`stack::Memo`]);
//! * malformed streams raise `ferropickle.UnpicklingError` naming the opcode and byte offset;
//!   exceptions raised by Python code the stream calls propagate unchanged, as in CPython;
//! * the loop is iterative (no recursion over the input) and never panics on input values;
//! * all references live in [`stack::Stack`] / [`stack::Memo`], which release them on drop,
//!   so error paths leak nothing.
//!
//! The hot opcodes (small ints, floats, strings, bytes, tuples, list/dict building, memo)
//! talk to the C API directly; the rare, call-heavy ones live in [`ops`].

mod input;
mod ops;
mod stack;

use std::ffi::CString;
use std::fmt::Display;

use pyo3::exceptions::{PyEOFError, PyOverflowError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyIterator;

use crate::errors::unpickling_error;
use crate::opcodes::*;
use crate::stats;
use input::{Input, InputBuffer};
use stack::{Memo, Owned, Stack};

/// `pickle.loads(data, *, fix_imports, encoding, errors, buffers)`.
pub fn loads<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    fix_imports: bool,
    encoding: &str,
    errors: &str,
    buffers: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let timer = stats::Timer::start();
    // Arguments are checked in `_pickle_loads_impl`'s order: input, buffers, encoding.
    let source = InputBuffer::new(data)?;
    // Like `_Unpickler_SetBuffers`: the iterator is taken up front, so a non-iterable
    // `buffers` fails even if the stream never uses it.
    let buffers = buffers
        .filter(|b| !b.is_none())
        .map(|b| b.try_iter())
        .transpose()?;
    let encoding_is_bytes = encoding == "bytes";
    let encoding = CString::new(encoding)
        .map_err(|_| PyValueError::new_err("embedded null character in encoding"))?;
    let errors = CString::new(errors)
        .map_err(|_| PyValueError::new_err("embedded null character in errors"))?;
    let mut reader = Reader {
        py,
        input: source.cursor(),
        stack: Stack::new(),
        memo: Memo::new(),
        proto: 0,
        fix_imports,
        encoding,
        errors,
        encoding_is_bytes,
        buffers,
        op: 0,
        op_pos: 0,
    };
    let result = reader.run();
    // Release the stream's objects before the input buffer (declared first, dropped last).
    drop(reader);
    stats::record_loads(timer, source.len(), result.is_ok());
    result
}

/// The state of one load (CPython's `UnpicklerObject`, minus file I/O).
struct Reader<'py> {
    py: Python<'py>,
    input: Input,
    stack: Stack,
    memo: Memo,
    /// The protocol announced by PROTO (0 until then); find_class depends on it.
    proto: u8,
    fix_imports: bool,
    encoding: CString,
    errors: CString,
    encoding_is_bytes: bool,
    buffers: Option<Bound<'py, PyIterator>>,
    /// The opcode being executed and its offset, for error messages.
    op: u8,
    op_pos: usize,
}

impl<'py> Reader<'py> {
    /// The main loop of `load()` in `_pickle.c`: one line per opcode, the arguments parsed by
    /// the `load_*` functions below (and, for the rarer opcodes, in [`ops`]).
    fn run(&mut self) -> PyResult<Bound<'py, PyAny>> {
        loop {
            self.op_pos = self.input.pos();
            let Some(op) = self.input.byte() else {
                // `load()` turns a failed opcode read into EOFError.
                return Err(PyEOFError::new_err(format!(
                    "Ran out of input (no STOP opcode before byte {})",
                    self.op_pos
                )));
            };
            self.op = op;
            match op {
                // Hot opcodes first; the order does not matter to the jump table, only to
                // whoever reads this.
                BININT1 => self.load_binint1()?,
                BININT2 => self.load_binint2()?,
                BININT => self.load_binint()?,
                BINFLOAT => self.load_binfloat()?,
                SHORT_BINUNICODE => self.load_counted_binunicode(1)?,
                BINUNICODE => self.load_counted_binunicode(4)?,
                BINUNICODE8 => self.load_counted_binunicode(8)?,
                SHORT_BINBYTES => self.load_counted_binbytes(1)?,
                BINBYTES => self.load_counted_binbytes(4)?,
                BINBYTES8 => self.load_counted_binbytes(8)?,
                NONE => self.push_borrowed(capi::none(self.py)),
                NEWTRUE => self.push_borrowed(capi::boolean(self.py, true)),
                NEWFALSE => self.push_borrowed(capi::boolean(self.py, false)),
                EMPTY_TUPLE => self.push_new(capi::tuple(self.py, 0))?,
                TUPLE1 => self.load_counted_tuple(1)?,
                TUPLE2 => self.load_counted_tuple(2)?,
                TUPLE3 => self.load_counted_tuple(3)?,
                TUPLE => self.load_tuple()?,
                EMPTY_LIST => self.push_new(capi::list(self.py, 0))?,
                EMPTY_DICT => self.push_new(capi::dict(self.py))?,
                EMPTY_SET => self.push_new(capi::set(self.py))?,
                MARK => self.stack.push_mark(),
                APPEND => self.load_append()?,
                APPENDS => self.load_appends()?,
                SETITEM => self.load_setitem()?,
                SETITEMS => self.load_setitems()?,
                MEMOIZE => self.load_memoize()?,
                BINPUT => self.load_binput()?,
                LONG_BINPUT => self.load_long_binput()?,
                BINGET => self.load_binget()?,
                LONG_BINGET => self.load_long_binget()?,
                FRAME => self.load_frame()?,
                PROTO => self.load_proto()?,
                STOP => return self.load_stop(),
                POP => self.load_pop()?,
                POP_MARK => self.load_pop_mark()?,
                DUP => self.load_dup()?,
                LONG1 => self.load_counted_long(1)?,
                LONG4 => self.load_counted_long(4)?,
                SHORT_BINSTRING => self.load_counted_binstring(1)?,
                BINSTRING => self.load_counted_binstring(4)?,
                BYTEARRAY8 => self.load_bytearray8()?,
                LIST => self.load_list()?,
                DICT => self.load_dict()?,
                FROZENSET => self.load_frozenset()?,
                ADDITEMS => self.load_additems()?,
                INT => self.load_int()?,
                LONG => self.load_long()?,
                FLOAT => self.load_float()?,
                STRING => self.load_string()?,
                UNICODE => self.load_unicode()?,
                PUT => self.load_put()?,
                GET => self.load_get()?,
                GLOBAL => self.load_global()?,
                STACK_GLOBAL => self.load_stack_global()?,
                INST => self.load_inst()?,
                OBJ => self.load_obj()?,
                REDUCE => self.load_reduce()?,
                NEWOBJ => self.load_newobj(false)?,
                NEWOBJ_EX => self.load_newobj(true)?,
                BUILD => self.load_build()?,
                EXT1 => self.load_extension(1)?,
                EXT2 => self.load_extension(2)?,
                EXT4 => self.load_extension(4)?,
                NEXT_BUFFER => self.load_next_buffer()?,
                READONLY_BUFFER => self.load_readonly_buffer()?,
                PERSID | BINPERSID => return Err(self.no_persistent_load()),
                _ => return Err(self.invalid_load_key(op)),
            }
        }
    }

    // ----- opcodes ------------------------------------------------------------------------
    //
    // The hot ones, each reading its argument and pushing its object (`load_*` in
    // `_pickle.c`); inlined into the loop, so the split costs nothing.

    #[inline(always)]
    fn load_binint1(&mut self) -> PyResult<()> {
        let v = self.read_u8()?;
        self.push_new(capi::long(self.py, v.into()))
    }

    #[inline(always)]
    fn load_binint2(&mut self) -> PyResult<()> {
        let v = u16::from_le_bytes(self.read_array()?);
        self.push_new(capi::long(self.py, v.into()))
    }

    #[inline(always)]
    fn load_binint(&mut self) -> PyResult<()> {
        let v = i32::from_le_bytes(self.read_array()?);
        self.push_new(capi::long(self.py, v.into()))
    }

    #[inline(always)]
    fn load_binfloat(&mut self) -> PyResult<()> {
        let v = f64::from_be_bytes(self.read_array()?);
        self.push_new(capi::float(self.py, v))
    }

    /// SHORT_BINUNICODE/BINUNICODE/BINUNICODE8: an `nbytes` length, then UTF-8.
    #[inline(always)]
    fn load_counted_binunicode(&mut self, nbytes: usize) -> PyResult<()> {
        let n = self.read_size(nbytes)?;
        self.push_utf8(n)
    }

    /// SHORT_BINBYTES/BINBYTES/BINBYTES8: an `nbytes` length, then the bytes.
    #[inline(always)]
    fn load_counted_binbytes(&mut self, nbytes: usize) -> PyResult<()> {
        let n = self.read_size(nbytes)?;
        self.check_read_into(n)?;
        self.push_bytes(n)
    }

    /// BYTEARRAY8: an 8-byte length, then the bytes of a new bytearray.
    fn load_bytearray8(&mut self) -> PyResult<()> {
        let n = self.read_size(8)?;
        self.check_read_into(n)?;
        let p = self.take(n)?;
        // SAFETY: `p..p+n` is within the input (checked by `take`) and `n` fits in `isize`;
        // the new bytearray copies the bytes.
        let obj = unsafe { ffi::PyByteArray_FromStringAndSize(p.cast(), n as _) };
        self.push_new(obj)
    }

    /// LONG1/LONG4 (`load_counted_long`): a byte count, then two's complement bytes.
    fn load_counted_long(&mut self, nbytes: usize) -> PyResult<()> {
        let n = self.read_signed_count(nbytes, "LONG pickle has negative byte count")?;
        self.push_long_le(n)
    }

    /// SHORT_BINSTRING/BINSTRING (`load_counted_binstring`).
    fn load_counted_binstring(&mut self, nbytes: usize) -> PyResult<()> {
        let n = self.read_signed_count(nbytes, "BINSTRING pickle has negative byte count")?;
        self.push_binstring(n)
    }

    /// TUPLE: the objects above the topmost MARK.
    #[inline(always)]
    fn load_tuple(&mut self) -> PyResult<()> {
        let start = self.marker()?;
        self.push_tuple(start)
    }

    /// LIST: the objects above the topmost MARK.
    fn load_list(&mut self) -> PyResult<()> {
        let start = self.marker()?;
        self.push_list(start)
    }

    #[inline(always)]
    fn load_append(&mut self) -> PyResult<()> {
        let x = self.stack.len().saturating_sub(1);
        self.do_append(x)
    }

    #[inline(always)]
    fn load_appends(&mut self) -> PyResult<()> {
        let x = self.marker()?;
        self.do_append(x)
    }

    #[inline(always)]
    fn load_setitem(&mut self) -> PyResult<()> {
        let x = self.stack.len().saturating_sub(2);
        self.do_setitems(x)
    }

    #[inline(always)]
    fn load_setitems(&mut self) -> PyResult<()> {
        let x = self.marker()?;
        self.do_setitems(x)
    }

    #[inline(always)]
    fn load_memoize(&mut self) -> PyResult<()> {
        let top = self.top()?;
        self.memo.put(self.memo.len(), top);
        Ok(())
    }

    #[inline(always)]
    fn load_binput(&mut self) -> PyResult<()> {
        let idx = self.read_u8()?;
        self.memo_put(idx.into())
    }

    #[inline(always)]
    fn load_long_binput(&mut self) -> PyResult<()> {
        let idx = u32::from_le_bytes(self.read_array()?);
        self.memo_put(self.index_u32(idx))
    }

    #[inline(always)]
    fn load_binget(&mut self) -> PyResult<()> {
        let idx = self.read_u8()?;
        self.memo_get(idx.into())
    }

    #[inline(always)]
    fn load_long_binget(&mut self) -> PyResult<()> {
        let idx = u32::from_le_bytes(self.read_array()?);
        self.memo_get(self.index_u32(idx))
    }

    /// FRAME (`load_frame`): check that the announced frame really is there. Where the
    /// interpreter's pickle keeps opcodes inside frames ([`strict_frames`]), a frame may not
    /// begin before the open one is used up, and no read may cross its end; elsewhere frames
    /// are transparent for in-memory input.
    #[inline(always)]
    fn load_frame(&mut self) -> PyResult<()> {
        let n = u64::from_le_bytes(self.read_array()?);
        let strict = strict_frames(self.py);
        if strict {
            if self.input.in_unfinished_frame() {
                return Err(self.fail("beginning of a new frame before end of current frame"));
            }
            self.input.leave_used_frame();
        }
        if i64::try_from(n).is_err() {
            return Err(PyOverflowError::new_err(format!(
                "FRAME length exceeds system's maximum of {} bytes",
                isize::MAX
            )));
        }
        if n > self.input.left_in_input() as u64 {
            return Err(self.truncated());
        }
        if strict {
            self.input.enter_frame(n as usize);
        }
        Ok(())
    }

    fn load_proto(&mut self) -> PyResult<()> {
        let proto = self.read_u8()?;
        if proto > HIGHEST_PROTOCOL {
            return Err(PyValueError::new_err(format!(
                "unsupported pickle protocol: {proto}"
            )));
        }
        self.proto = proto;
        Ok(())
    }

    /// STOP: the object on top of the stack is the result.
    fn load_stop(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let obj = self.pop()?;
        // SAFETY: `obj` is a strong reference the stack handed over.
        Ok(unsafe { Bound::from_owned_ptr(self.py, obj) })
    }

    fn load_pop_mark(&mut self) -> PyResult<()> {
        let start = self.marker()?;
        self.stack.truncate(start);
        Ok(())
    }

    fn load_dup(&mut self) -> PyResult<()> {
        let top = self.top()?;
        self.push_borrowed(top);
        Ok(())
    }

    // ----- errors -------------------------------------------------------------------------

    /// A malformed-stream error for the current opcode.
    #[cold]
    #[inline(never)]
    fn fail(&self, msg: impl Display) -> PyErr {
        unpickling_error(self.op_pos, format!("{}: {msg}", op_name(self.op)))
    }

    #[cold]
    #[inline(never)]
    fn truncated(&self) -> PyErr {
        if self.input.in_frame() {
            self.fail("pickle exhausted before end of frame")
        } else {
            self.fail("pickle data was truncated")
        }
    }

    /// `Pdata_stack_underflow`: popping across a MARK and popping an empty stack are both
    /// reported, with CPython's two messages.
    #[cold]
    #[inline(never)]
    fn underflow(&self) -> PyErr {
        self.fail(if self.stack.mark_set() {
            "unexpected MARK found"
        } else {
            "unpickling stack underflow"
        })
    }

    /// PERSID/BINPERSID: there is no `persistent_load` hook in `loads()`, so (like
    /// `load_persid`/`load_binpersid` without `pers_func`) this fails before looking at the
    /// argument.
    #[cold]
    #[inline(never)]
    fn no_persistent_load(&self) -> PyErr {
        self.fail(
            "A load persistent id instruction was encountered, but no persistent_load \
             function was specified.",
        )
    }

    #[cold]
    #[inline(never)]
    fn invalid_load_key(&self, op: u8) -> PyErr {
        let key = if op.is_ascii_graphic() {
            (op as char).to_string()
        } else {
            format!("\\x{op:02x}")
        };
        unpickling_error(self.op_pos, format!("invalid load key, '{key}'."))
    }

    /// The Python exception a C API call just set, if it returned NULL / -1.
    #[cold]
    #[inline(never)]
    fn fetch(&self) -> PyErr {
        PyErr::fetch(self.py)
    }

    // ----- input --------------------------------------------------------------------------

    #[inline(always)]
    fn read_u8(&mut self) -> PyResult<u8> {
        match self.input.byte() {
            Some(b) => Ok(b),
            None => Err(self.truncated()),
        }
    }

    #[inline(always)]
    fn read_array<const N: usize>(&mut self) -> PyResult<[u8; N]> {
        match self.input.array() {
            Some(a) => Ok(a),
            None => Err(self.truncated()),
        }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> PyResult<*const u8> {
        match self.input.take(n) {
            Some(p) => Ok(p),
            None => Err(self.truncated()),
        }
    }

    /// `_Unpickler_ReadInto`, which the C loaders of bytes and bytearrays use, calls even an
    /// empty read at the very end of the input truncated data.
    #[inline(always)]
    fn check_read_into(&self, n: usize) -> PyResult<()> {
        if n == 0 && self.input.left_in_input() == 0 {
            return Err(self.truncated());
        }
        Ok(())
    }

    /// A length prefix of `nbytes` (1, 4 or 8) little-endian bytes as a size (`calc_binsize`),
    /// rejecting what no buffer could hold (CPython's "exceeds system's maximum size"); the
    /// caller's read then checks the actual input.
    #[inline(always)]
    fn read_size(&mut self, nbytes: usize) -> PyResult<usize> {
        let n: u64 = match nbytes {
            1 => self.read_u8()?.into(),
            4 => u32::from_le_bytes(self.read_array()?).into(),
            _ => u64::from_le_bytes(self.read_array()?),
        };
        match usize::try_from(n) {
            Ok(n) if isize::try_from(n).is_ok() => Ok(n),
            _ => Err(PyOverflowError::new_err(format!(
                "{} exceeds system's maximum size of {} bytes",
                op_name(self.op),
                isize::MAX
            ))),
        }
    }

    /// A byte count of `nbytes` (1, or 4 signed) little-endian bytes; `negative` is the
    /// message for a negative 4-byte count.
    #[inline(always)]
    fn read_signed_count(&mut self, nbytes: usize, negative: &str) -> PyResult<usize> {
        if nbytes == 1 {
            return Ok(self.read_u8()?.into());
        }
        let n = i32::from_le_bytes(self.read_array()?);
        usize::try_from(n).map_err(|_| self.fail(negative))
    }

    /// A 32-bit memo index. `usize` is at least 32 bits on every platform CPython supports.
    #[inline(always)]
    fn index_u32(&self, idx: u32) -> usize {
        usize::try_from(idx).unwrap_or(usize::MAX)
    }

    // ----- stack --------------------------------------------------------------------------

    /// Push a new reference returned by a C API constructor, or raise its exception.
    #[inline(always)]
    fn push_new(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
        if obj.is_null() {
            Err(self.fetch())
        } else {
            self.stack.push(obj);
            Ok(())
        }
    }

    /// Push a new strong reference to the borrowed `obj`.
    #[inline(always)]
    fn push_borrowed(&mut self, obj: *mut ffi::PyObject) {
        // SAFETY: `obj` is a live object (a singleton, or borrowed from the stack or memo);
        // we hold the GIL.
        unsafe { ffi::Py_INCREF(obj) };
        self.stack.push(obj);
    }

    #[inline(always)]
    fn pop(&mut self) -> PyResult<Owned> {
        match self.stack.pop() {
            Some(obj) => Ok(obj),
            None => Err(self.underflow()),
        }
    }

    /// Pop the top object as a `Bound` (for the call-heavy opcodes).
    fn pop_bound(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let obj = self.pop()?;
        // SAFETY: `obj` is a strong reference the stack handed over.
        Ok(unsafe { Bound::from_owned_ptr(self.py, obj) })
    }

    /// The top object (borrowed from the stack).
    #[inline(always)]
    fn top(&self) -> PyResult<Owned> {
        match self.stack.top() {
            Some(obj) => Ok(obj),
            None => Err(self.underflow()),
        }
    }

    /// The stack height, when at least `n` objects sit above the innermost MARK; else the
    /// underflow error (`Pdata_stack_underflow`).
    #[inline(always)]
    fn need(&self, n: usize) -> PyResult<usize> {
        let len = self.stack.len();
        if len < self.stack.fence() + n {
            return Err(self.underflow());
        }
        Ok(len)
    }

    /// The stack height, when the objects from `x` up have a target just below them, above the
    /// innermost MARK (`do_append`, `do_setitems`, `load_additems`); else the underflow error.
    #[inline(always)]
    fn items_from(&self, x: usize) -> PyResult<usize> {
        let len = self.stack.len();
        if x > len || x <= self.stack.fence() {
            return Err(self.underflow());
        }
        Ok(len)
    }

    /// Pop the topmost MARK and return its stack position (`marker()`).
    #[inline(always)]
    fn marker(&mut self) -> PyResult<usize> {
        match self.stack.pop_mark() {
            Some(m) => Ok(m),
            None => Err(self.fail("could not find MARK")),
        }
    }

    /// POP: pops a MARK if it sits at the top of the stack, else an object (`load_pop`).
    fn load_pop(&mut self) -> PyResult<()> {
        if self.stack.top_mark() == Some(self.stack.len()) {
            self.stack.pop_mark();
        } else {
            let obj = self.pop()?;
            // SAFETY: the stack handed over this reference; we hold the GIL.
            unsafe { ffi::Py_DECREF(obj) };
        }
        Ok(())
    }

    // ----- scalars ------------------------------------------------------------------------

    /// BINUNICODE*: UTF-8 with `surrogatepass`, so lone surrogates round-trip.
    #[inline(always)]
    fn push_utf8(&mut self, n: usize) -> PyResult<()> {
        let p = self.take(n)?;
        // Pure-ASCII text (most keys and identifiers) is copied straight into a new compact
        // ASCII string, skipping the decoder's setup. Lengths 0 and 1 go through the decoder,
        // which returns CPython's cached singletons for them.
        if n >= 2 {
            // SAFETY: `p..p+n` is within the input (checked by `take`); the slice is dropped
            // before any Python code runs.
            let ascii = unsafe { std::slice::from_raw_parts(p, n) }.is_ascii();
            if ascii {
                let obj = capi::ascii_string(self.py, p, n);
                return self.push_new(obj);
            }
        }
        // SAFETY: `p..p+n` is within the input (checked by `take`); `n <= isize::MAX`
        // because it fits in the buffer. The decoder copies the bytes.
        let obj = unsafe { ffi::PyUnicode_DecodeUTF8(p.cast(), n as _, c"surrogatepass".as_ptr()) };
        self.push_new(obj)
    }

    #[inline(always)]
    fn push_bytes(&mut self, n: usize) -> PyResult<()> {
        let p = self.take(n)?;
        // SAFETY: as in `push_utf8`; `PyBytes_FromStringAndSize` copies the bytes.
        let obj = unsafe { ffi::PyBytes_FromStringAndSize(p.cast(), n as _) };
        self.push_new(obj)
    }

    /// LONG1/LONG4: little-endian two's complement (`load_counted_long`).
    fn push_long_le(&mut self, n: usize) -> PyResult<()> {
        let p = self.take(n)?;
        let obj = if n <= 8 {
            let mut buf = [0u8; 8];
            // SAFETY: `p..p+n` is within the input and `n <= 8` fits in `buf`.
            unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n) };
            // Sign-extend from the top byte actually present.
            if n > 0 && n < 8 && buf[n - 1] & 0x80 != 0 {
                buf[n..].fill(0xff);
            }
            capi::long(self.py, i64::from_le_bytes(buf))
        } else {
            // SAFETY: `p..p+n` is within the input; the function copies it.
            #[cfg(not(Py_3_13))]
            let long = unsafe { ffi::_PyLong_FromByteArray(p, n, 1, 1) };
            // The public form from 3.13 (the private one left PyO3's bindings): flags 1 is
            // `Py_ASNATIVEBYTES_LITTLE_ENDIAN`, the buffer read as signed.
            // SAFETY: as above.
            #[cfg(Py_3_13)]
            let long = unsafe { ffi::PyLong_FromNativeBytes(p.cast(), n, 1) };
            long
        };
        self.push_new(obj)
    }

    /// BINSTRING/SHORT_BINSTRING: Python 2 `str`, decoded per `encoding` (`_decode_string`
    /// in pickle.py; `encoding="bytes"` keeps bytes).
    fn push_binstring(&mut self, n: usize) -> PyResult<()> {
        let p = self.take(n)?;
        let obj = self.decode_string(p, n);
        self.push_new(obj)
    }

    /// Decode `n` bytes at `p` with the load's `encoding`/`errors`; NULL on error.
    fn decode_string(&self, p: *const u8, n: usize) -> *mut ffi::PyObject {
        // SAFETY: `p..p+n` is within a live buffer (the input, or a bytes object the caller
        // holds); both functions copy the bytes; the C strings outlive the call.
        unsafe {
            if self.encoding_is_bytes {
                ffi::PyBytes_FromStringAndSize(p.cast(), n as _)
            } else {
                ffi::PyUnicode_Decode(
                    p.cast(),
                    n as _,
                    self.encoding.as_ptr(),
                    self.errors.as_ptr(),
                )
            }
        }
    }

    // ----- containers ---------------------------------------------------------------------

    /// TUPLE1/2/3 (`load_counted_tuple`).
    #[inline(always)]
    fn load_counted_tuple(&mut self, n: usize) -> PyResult<()> {
        let len = self.need(n)?;
        self.push_tuple(len - n)
    }

    /// Replace the objects from `start` up with one tuple of them (`Pdata_poptuple`).
    #[inline(always)]
    fn push_tuple(&mut self, start: usize) -> PyResult<()> {
        let t = self.new_tuple_from(start)?;
        self.stack.push(t);
        Ok(())
    }

    /// A new tuple holding the objects from `start` up, moved off the stack.
    #[inline(always)]
    fn new_tuple_from(&mut self, start: usize) -> PyResult<Owned> {
        let n = self.stack.len() - start;
        let t = capi::tuple(self.py, n);
        if t.is_null() {
            return Err(self.fetch());
        }
        // SAFETY: `t` is a fresh tuple of size `n`; each slot is filled exactly once with a
        // reference moved (not copied) off the stack, so ownership transfers to the tuple.
        self.stack.drain_from(start, |i, obj| unsafe {
            ffi::PyTuple_SET_ITEM(t, i as _, obj)
        });
        Ok(t)
    }

    /// LIST: the objects from `start` up become a new list.
    fn push_list(&mut self, start: usize) -> PyResult<()> {
        let n = self.stack.len() - start;
        let l = capi::list(self.py, n);
        if l.is_null() {
            return Err(self.fetch());
        }
        // SAFETY: as in `new_tuple_from`, for a fresh list of size `n`.
        self.stack.drain_from(start, |i, obj| unsafe {
            ffi::PyList_SET_ITEM(l, i as _, obj)
        });
        self.stack.push(l);
        Ok(())
    }

    /// APPEND/APPENDS (`do_append`): the objects above position `x` are appended to the
    /// object just below it. Exact lists are extended in place; anything else gets its
    /// `extend` (or, failing that, `append`) method called, as pickle does.
    fn do_append(&mut self, x: usize) -> PyResult<()> {
        let len = self.items_from(x)?;
        if len == x {
            // Since CPython 3.15 an empty batch still goes to a target that is not a list:
            // `extend([])` if it has one, else its `append` is looked up (AttributeError).
            if cfg!(Py_3_15) {
                if let Some(target) = x.checked_sub(1).and_then(|i| self.stack.get(i)) {
                    // SAFETY: `target` is a live object borrowed from the stack.
                    if unsafe { ffi::PyList_CheckExact(target) } == 0 {
                        return self.append_generic(target, x);
                    }
                }
            }
            return Ok(());
        }
        let Some(list) = self.stack.get(x - 1) else {
            return Err(self.underflow());
        };
        // SAFETY: `list` is a live object borrowed from the stack.
        if unsafe { ffi::PyList_CheckExact(list) } != 0 {
            // Like `do_append`: move the items into a temporary list and splice it onto
            // the end, so the target grows once per batch rather than once per item.
            let slice = capi::list(self.py, len - x);
            if slice.is_null() {
                return Err(self.fetch());
            }
            // SAFETY: `slice` is a fresh list of size `len - x`; each slot gets one
            // reference moved off the stack.
            self.stack.drain_from(x, |i, obj| unsafe {
                ffi::PyList_SET_ITEM(slice, i as _, obj)
            });
            // SAFETY: `list` is an exact list and `slice` a full list, both live; the
            // splice takes its own references to the items.
            let status = unsafe {
                let end = ffi::PyList_GET_SIZE(list);
                let status = ffi::PyList_SetSlice(list, end, end, slice);
                ffi::Py_DECREF(slice);
                status
            };
            if status < 0 {
                return Err(self.fetch());
            }
            Ok(())
        } else {
            self.append_generic(list, x)
        }
    }

    /// SETITEM/SETITEMS (`do_setitems`): key/value pairs above position `x` go into the
    /// object just below it, with `PyDict_SetItem` for exact dicts and `__setitem__` else.
    fn do_setitems(&mut self, x: usize) -> PyResult<()> {
        let len = self.items_from(x)?;
        if len == x {
            return Ok(());
        }
        if (len - x) % 2 != 0 {
            return Err(self.fail("odd number of items for SETITEMS"));
        }
        let Some(dict) = self.stack.get(x - 1) else {
            return Err(self.underflow());
        };
        // SAFETY: `dict` is a live object borrowed from the stack.
        let set_item = if unsafe { ffi::PyDict_CheckExact(dict) } != 0 {
            ffi::PyDict_SetItem
        } else {
            ffi::PyObject_SetItem
        };
        for i in (x..len).step_by(2) {
            let (Some(k), Some(v)) = (self.stack.get(i), self.stack.get(i + 1)) else {
                break;
            };
            // SAFETY: `dict` (an exact dict when `set_item` is `PyDict_SetItem`), `k` and `v`
            // are live objects owned by the stack, which Python code cannot reach; both
            // functions take their own references.
            if unsafe { set_item(dict, k, v) } < 0 {
                return Err(self.fetch());
            }
        }
        self.stack.truncate(x);
        Ok(())
    }

    // ----- memo ---------------------------------------------------------------------------

    #[inline(always)]
    fn memo_put(&mut self, idx: usize) -> PyResult<()> {
        let top = self.top()?;
        self.memo.put(idx, top);
        Ok(())
    }

    #[inline(always)]
    fn memo_get(&mut self, idx: usize) -> PyResult<()> {
        match self.memo.get(idx) {
            Some(obj) => {
                self.push_borrowed(obj);
                Ok(())
            }
            None => Err(self.fail(format!("Memo value not found at index {idx}"))),
        }
    }
}

/// Safe wrappers over the C API constructors of the hot opcodes. The `Python` token proves
/// the GIL is held, which is their only precondition; each returns a new reference, or NULL
/// with an exception set (which [`Reader::push_new`] turns into `Err`).
mod capi {
    use pyo3::ffi;
    use pyo3::Python;

    #[inline(always)]
    pub(super) fn long(_py: Python<'_>, v: i64) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token); no other precondition.
        unsafe { ffi::PyLong_FromLongLong(v) }
    }

    #[inline(always)]
    pub(super) fn float(_py: Python<'_>, v: f64) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token); no other precondition.
        unsafe { ffi::PyFloat_FromDouble(v) }
    }

    /// A new tuple of `n` NULL slots, which the caller must fill before exposing it.
    #[inline(always)]
    pub(super) fn tuple(_py: Python<'_>, n: usize) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token); `n` is at most the stack height, so the cast to
        // `Py_ssize_t` is exact.
        unsafe { ffi::PyTuple_New(n as ffi::Py_ssize_t) }
    }

    /// A new list of `n` NULL slots, which the caller must fill before exposing it.
    #[inline(always)]
    pub(super) fn list(_py: Python<'_>, n: usize) -> *mut ffi::PyObject {
        // SAFETY: as for `tuple`.
        unsafe { ffi::PyList_New(n as ffi::Py_ssize_t) }
    }

    /// A new `str` holding the `n` ASCII bytes at `p`.
    ///
    /// The caller guarantees `p..p+n` is readable and pure ASCII, and `n <= isize::MAX`.
    #[inline(always)]
    pub(super) fn ascii_string(_py: Python<'_>, p: *const u8, n: usize) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token). A string created with maxchar 127 is a compact ASCII
        // string whose data is `n` one-byte code units; we fill all of them before anyone
        // else can see it, and ASCII input keeps the string valid.
        unsafe {
            let s = ffi::PyUnicode_New(n as ffi::Py_ssize_t, 127);
            if !s.is_null() {
                std::ptr::copy_nonoverlapping(p, ffi::PyUnicode_DATA(s).cast::<u8>(), n);
            }
            s
        }
    }

    #[inline(always)]
    pub(super) fn dict(_py: Python<'_>) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token); no other precondition.
        unsafe { ffi::PyDict_New() }
    }

    #[inline(always)]
    pub(super) fn set(_py: Python<'_>) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token); NULL means "empty set".
        unsafe { ffi::PySet_New(std::ptr::null_mut()) }
    }

    /// The `None` singleton (borrowed).
    #[inline(always)]
    pub(super) fn none(_py: Python<'_>) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token); returns a borrowed pointer to a static object.
        unsafe { ffi::Py_None() }
    }

    /// `True` or `False` (borrowed).
    #[inline(always)]
    pub(super) fn boolean(_py: Python<'_>, v: bool) -> *mut ffi::PyObject {
        // SAFETY: GIL held (token); returns a borrowed pointer to a static object.
        unsafe {
            if v {
                ffi::Py_True()
            } else {
                ffi::Py_False()
            }
        }
    }
}

/// Whether this interpreter's `pickle.loads` keeps reads inside frames: it rejects an opcode or
/// argument that crosses a frame's end, and a frame that begins before the open one is used up
/// (CPython 3.14.10 and 3.15.2 do; 3.13.0 reads frames as plain bytes). Asked of `pickle`
/// itself, once, with a stream of the second kind.
fn strict_frames(py: Python<'_>) -> bool {
    static STRICT: pyo3::sync::PyOnceLock<bool> = pyo3::sync::PyOnceLock::new();
    *STRICT.get_or_init(py, || {
        const NESTED: &[u8] = b"\x80\x04\x95\x0c\0\0\0\0\0\0\0N\x95\0\0\0\0\0\0\0\0NN.";
        let loads = py.import("pickle").and_then(|m| m.getattr("loads"));
        loads
            .and_then(|loads| loads.call1((pyo3::types::PyBytes::new(py, NESTED),)))
            .is_err()
    })
}
