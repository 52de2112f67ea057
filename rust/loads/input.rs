//! The byte source of one `loads` call: a borrowed, C-contiguous view of the caller's
//! bytes-like object, and a bounds-checked cursor over it.
//!
//! Soundness note: a writable input (a `bytearray`, a NumPy array) can be mutated by Python
//! code that the stream itself calls (REDUCE, BUILD, ...). So the cursor keeps a raw pointer
//! and never hands out a Rust slice that outlives one opcode's argument parsing: every slice
//! it creates is dropped before any Python code can run, and payloads are copied into Python
//! objects by C API calls that take the raw pointer. Resizing is impossible while we hold the
//! buffer export (CPython raises `BufferError`), so `ptr..ptr+len` stays valid throughout.

use pyo3::ffi;
use pyo3::prelude::*;

/// The exported buffer of the `data` argument, released when dropped (like `PyBuffer_Release`
/// at the end of CPython's `_pickle_loads_impl`).
pub(super) struct InputBuffer {
    /// Boxed so the `Py_buffer` keeps its address between export and release, as some
    /// exporters expect.
    view: Option<Box<ffi::Py_buffer>>,
    ptr: *const u8,
    len: usize,
}

impl InputBuffer {
    /// Borrow the bytes of `data` without copying, as `_Unpickler_SetStringInput` does with
    /// `PyObject_GetBuffer(input, &buffer, PyBUF_CONTIG_RO)`.
    pub(super) fn new(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let obj = data.as_ptr();
        // SAFETY: `obj` is a live object (borrowed from `data`, which outlives this call).
        if unsafe { ffi::PyBytes_CheckExact(obj) } != 0 {
            // SAFETY: `obj` is an exact `bytes`, whose storage is immutable and lives as long
            // as the object; the caller keeps `data` alive for the whole load.
            let (ptr, len) = unsafe { (ffi::PyBytes_AS_STRING(obj), ffi::PyBytes_Size(obj)) };
            return Ok(InputBuffer {
                view: None,
                ptr: ptr.cast(),
                len: usize::try_from(len).unwrap_or(0),
            });
        }
        let mut view = Box::new(std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed());
        // SAFETY: `view` points to writable memory the size of a `Py_buffer`; on success the
        // exporter fills it in and we release it exactly once in `Drop`. `PyBUF_ND` asks for a
        // C-contiguous buffer with no format requirement, like CPython's `PyBUF_CONTIG_RO`.
        // For a `str` this raises "a bytes-like object is required, not 'str'".
        if unsafe { ffi::PyObject_GetBuffer(obj, view.as_mut_ptr(), ffi::PyBUF_ND) } != 0 {
            return Err(PyErr::fetch(data.py()));
        }
        // SAFETY: `PyObject_GetBuffer` succeeded, so the struct is initialised.
        let view: Box<ffi::Py_buffer> = unsafe { Box::from_raw(Box::into_raw(view).cast()) };
        let len = usize::try_from(view.len).unwrap_or(0);
        Ok(InputBuffer {
            ptr: view.buf.cast_const().cast(),
            len,
            view: Some(view),
        })
    }

    /// The input's size in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn cursor(&self) -> Input {
        Input {
            ptr: self.ptr,
            len: self.len,
            pos: 0,
            end: self.len,
        }
    }
}

impl Drop for InputBuffer {
    fn drop(&mut self) {
        if let Some(view) = self.view.as_mut() {
            // SAFETY: the view was filled by a successful `PyObject_GetBuffer` and is released
            // once; `InputBuffer` only lives inside `loads`, which holds the GIL.
            unsafe { ffi::PyBuffer_Release(&mut **view) };
        }
    }
}

/// A read position in the input. Every read is checked against the end first, so a length
/// prefix can never make us read (or allocate) past the data we were given.
///
/// Where the interpreter's pickle keeps reads inside frames (see `Reader::load_frame`), an open
/// frame moves `len` to the frame's end, so that no opcode or argument reads across it; a read
/// that starts exactly at that end leaves the frame and goes on in the rest of the input, as
/// `pickle`'s `_Unframer` does.
pub(super) struct Input {
    ptr: *const u8,
    /// The end of the readable bytes: the input's end, or the open frame's.
    len: usize,
    pos: usize,
    /// The input's end.
    end: usize,
}

impl Input {
    /// Bytes left in the whole input, whatever frame is open.
    pub(super) fn left_in_input(&self) -> usize {
        self.end - self.pos
    }

    /// Whether a frame is open and not used up.
    pub(super) fn in_unfinished_frame(&self) -> bool {
        self.len < self.end && self.pos < self.len
    }

    /// Whether a frame is open (a failed read then ran out of the frame, not of the input).
    pub(super) fn in_frame(&self) -> bool {
        self.len < self.end
    }

    /// Opens a frame of the next `n` bytes (`n <= left_in_input()`, checked by the caller).
    pub(super) fn enter_frame(&mut self, n: usize) {
        debug_assert!(n <= self.left_in_input());
        self.len = self.pos + n;
    }

    /// Leaves the open frame if it is used up; returns whether it did (the caller then retries
    /// its read in the rest of the input).
    #[cold]
    #[inline(never)]
    pub(super) fn leave_used_frame(&mut self) -> bool {
        if self.pos == self.len && self.len < self.end {
            self.len = self.end;
            true
        } else {
            false
        }
    }

    #[inline(always)]
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    pub(super) fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// The next byte, or `None` at the end of the input.
    #[inline(always)]
    pub(super) fn byte(&mut self) -> Option<u8> {
        if self.pos < self.len {
            // SAFETY: `pos < len`, and `ptr..ptr+len` is the live exported buffer.
            let b = unsafe { *self.ptr.add(self.pos) };
            self.pos += 1;
            Some(b)
        } else if self.leave_used_frame() {
            self.byte()
        } else {
            None
        }
    }

    /// The next `N` bytes by value (for fixed-size integer and float arguments).
    #[inline(always)]
    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.remaining() >= N {
            // SAFETY: `N` bytes from `pos` are within the buffer (checked above); the read is
            // unaligned-safe and copies them out, so no reference into the buffer is kept.
            let a = unsafe { self.ptr.add(self.pos).cast::<[u8; N]>().read_unaligned() };
            self.pos += N;
            Some(a)
        } else if self.leave_used_frame() {
            self.array()
        } else {
            None
        }
    }

    /// Skip `n` bytes and return a raw pointer to them, for C API calls that copy them.
    #[inline(always)]
    pub(super) fn take(&mut self, n: usize) -> Option<*const u8> {
        if n <= self.remaining() {
            // SAFETY: `pos + n <= len` (checked above), so the pointer is in bounds.
            let p = unsafe { self.ptr.add(self.pos) };
            self.pos += n;
            Some(p)
        } else if self.leave_used_frame() {
            self.take(n)
        } else {
            None
        }
    }

    /// The next line without its `\n` (as a raw pointer and length), the way
    /// `_Unpickler_Readline` reads text arguments: a missing newline means truncated data.
    pub(super) fn line(&mut self) -> Option<(*const u8, usize)> {
        if self.pos == self.len {
            self.leave_used_frame();
        }
        // SAFETY: the slice covers exactly the unread part of the live buffer and is dropped
        // at the end of this function, before any Python code can run.
        let rest = unsafe { std::slice::from_raw_parts(self.ptr.add(self.pos), self.remaining()) };
        let n = rest.iter().position(|&b| b == b'\n')?;
        let p = rest.as_ptr();
        self.pos += n + 1;
        Some((p, n))
    }
}

/// Copy a line returned by [`Input::line`] out of the input buffer.
///
/// Text arguments only appear in protocol 0/1 opcodes and are short, so the copy is cheap and
/// keeps the parsing code working on owned data.
pub(super) fn owned_line((ptr, len): (*const u8, usize)) -> Vec<u8> {
    // SAFETY: `(ptr, len)` came from `Input::line`, so it lies within the live buffer; the
    // temporary slice is copied at once and no Python code runs in between.
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}
