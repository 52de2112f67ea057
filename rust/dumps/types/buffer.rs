//! PEP 574 buffers (`pickle.PickleBuffer`), as `save_picklebuffer` in `_pickle.c` writes them.

use pyo3::ffi;
use pyo3::prelude::*;

use crate::dumps::Pickler;
use crate::errors::pickling_error;
use crate::opcodes::*;

/// `save_picklebuffer`: a PEP 574 buffer goes out of band when the buffer callback returns a
/// false value, otherwise in band as bytes (read-only) or a bytearray (writable).
pub fn save_picklebuffer<'py>(p: &mut Pickler<'py>, obj: &Bound<'py, PyAny>) -> PyResult<()> {
    if p.proto < 5 {
        return Err(pickling_error(
            "PickleBuffer can only pickled with protocol >= 5",
        ));
    }
    let view = BufferView::new(obj)?;
    if !view.is_contiguous() {
        return Err(pickling_error(
            "PickleBuffer can not be pickled when pointing to a non-contiguous buffer",
        ));
    }
    let in_band = match &p.buffer_callback {
        Some(cb) => {
            // A walk that started over (see `Pickler::start_over`) meets the buffers the
            // stopped one handed to the callback first and in the same order: their answers
            // are reused, so the callback gets each buffer once.
            let met = p.buffers_met;
            p.buffers_met += 1;
            match p.buffer_answers.get(met) {
                Some(&answer) => answer,
                None => {
                    let answer = cb.call1((obj,))?.is_truthy()?;
                    p.buffer_answers.push(answer);
                    answer
                }
            }
        }
        None => true,
    };
    if in_band {
        if view.readonly() {
            p.out.bytes(view.as_bytes());
            p.memoize(obj);
            Ok(())
        } else {
            // Loads as a (mutable) bytearray: memoized whatever its reference count.
            p.out.bytearray(view.as_bytes());
            p.memoize(obj);
            Ok(())
        }
    } else {
        p.out.op(NEXT_BUFFER);
        if view.readonly() {
            p.out.op(READONLY_BUFFER);
        }
        Ok(())
    }
}

/// A `Py_buffer` released on drop.
struct BufferView {
    view: Box<ffi::Py_buffer>,
}

impl BufferView {
    fn new(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: `Py_buffer` is a plain C struct for which all-zeroes is a valid "empty" value.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is live; on success the view must be released, which `Drop` does.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_FULL_RO) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(BufferView { view })
    }

    fn is_contiguous(&self) -> bool {
        // SAFETY: `view` was filled by `PyObject_GetBuffer`.
        unsafe { ffi::PyBuffer_IsContiguous(&*self.view, b'A' as std::ffi::c_char) != 0 }
    }

    fn readonly(&self) -> bool {
        self.view.readonly != 0
    }

    fn as_bytes(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: a contiguous buffer exposes `len` bytes at `buf` until it is released, which
        // happens only when `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for BufferView {
    fn drop(&mut self) {
        // SAFETY: the view was obtained by a successful `PyObject_GetBuffer`; the GIL is held
        // wherever a `BufferView` lives (it never leaves the pickler).
        unsafe { ffi::PyBuffer_Release(&mut *self.view) }
    }
}
