//! Atoms: str, int (and ints beyond 64 bits), bytes and bytearray, as `save_unicode`,
//! `save_long`, `save_bytes` and `save_bytearray` in `_pickle.c` write them, and None, bools
//! and floats (`save_none`, `save_bool`, `save_float`).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::dumps::obtype::ObType;
use crate::dumps::Pickler;
use crate::opcodes::*;

impl<'py> Pickler<'py> {
    /// `save_unicode`: UTF-8 with `surrogatepass`, so lone surrogates survive as in `pickle`.
    #[inline]
    pub(in crate::dumps) fn save_str(
        &mut self,
        obj: &Bound<'py, PyAny>,
        unique: bool,
    ) -> PyResult<()> {
        if !unique {
            if let Some(idx) = self.memo.get(obj) {
                self.out.get(idx);
                return Ok(());
            }
        }
        self.write_str(obj)?;
        self.memoize(obj);
        Ok(())
    }

    /// A copy of the str `obj` built for the stream alone (cloudpickle's `"".join(name)`),
    /// written without making the copy: no other reference to the copy exists, so it is
    /// memoized with no entry, and the original keeps its own.
    pub(in crate::dumps) fn save_str_copy(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        self.counts.objects += 1;
        self.out.boundary();
        self.write_str(obj)?;
        self.memoize_fresh();
        Ok(())
    }

    #[inline(always)]
    fn write_str(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let mut size: ffi::Py_ssize_t = 0;
        // SAFETY: `obj` is an exact str; the returned buffer lives as long as the string, and we
        // copy it into the output before anything else runs.
        let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(obj.as_ptr(), &mut size) };
        if data.is_null() {
            // Lone surrogates are not UTF-8; `pickle` encodes them with "surrogatepass".
            let _ = PyErr::take(self.py);
            let encoded = obj
                .cast::<PyString>()?
                .call_method1(pyo3::intern!(self.py, "encode"), ("utf-8", "surrogatepass"))?;
            self.out.str_utf8(encoded.cast::<PyBytes>()?.as_bytes());
        } else {
            // SAFETY: `data` points at `size` bytes owned by the live string.
            let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size as usize) };
            self.out.str_utf8(bytes);
        }
        Ok(())
    }

    /// `save_bytearray`: `BYTEARRAY8` from protocol 5; before, `bytearray(bytes(obj))` with
    /// `REDUCE` (a fresh copy of the bytes, so nothing shares its memo entry; on 3.15 a
    /// one-byte one is the shared one-byte bytes), or `bytearray()` when empty. Memoized whatever its reference count: it is mutable.
    pub(in crate::dumps) fn save_bytearray(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        if self.proto < 5 {
            // The class first: saving it may run code, which could resize the bytearray.
            let py = self.py;
            self.save(py.get_type::<pyo3::types::PyByteArray>().as_any(), false)?;
        }
        // SAFETY: `obj` is an exact bytearray; its buffer is copied into the output right
        // away, before any code can run.
        let data = unsafe {
            std::slice::from_raw_parts(
                ffi::PyByteArray_AsString(obj.as_ptr()) as *const u8,
                ffi::PyByteArray_Size(obj.as_ptr()) as usize,
            )
        };
        if self.proto >= 5 {
            self.out.bytearray(data);
        } else if data.is_empty() {
            self.save_empty_tuple();
            self.out.op(REDUCE);
        } else if cfg!(Py_3_15) && data.len() == 1 {
            // Since CPython 3.15 the C pickler's `bytes(obj)` of a one-byte bytearray is the
            // interpreter's shared one-byte object, which it memoizes like any bytes: a second
            // one-byte bytearray of that value fetches it. Before, it was a fresh copy.
            let byte = PyBytes::new(self.py, data);
            self.save(byte.as_any(), false)?;
            self.close_fresh_tuple(1);
            self.out.op(REDUCE);
        } else {
            // The copy `bytes(obj)`, `save()`d: a full frame ends before it.
            self.out.boundary();
            self.out.bytes(data);
            self.memoize_fresh();
            self.close_fresh_tuple(1);
            self.out.op(REDUCE);
        }
        self.memoize(obj);
        Ok(())
    }

    /// None, a bool, a float or an int that fits in 64 bits, from the object at `ptr`
    /// (classified as `ty`): `NONE`, `NEWTRUE`/`NEWFALSE`, `BINFLOAT`, `BININT*` or `LONG1`.
    /// `false` (nothing written) for a larger int, which [`Self::save_big_int`] writes.
    #[inline(always)]
    pub(in crate::dumps) fn write_scalar(&mut self, ptr: *mut ffi::PyObject, ty: ObType) -> bool {
        // SAFETY: callers pass a live object of the type `ty` names; only its value is read.
        unsafe {
            match ty {
                ObType::Int => {
                    let mut overflow = 0;
                    let v = ffi::PyLong_AsLongLongAndOverflow(ptr, &mut overflow);
                    if overflow != 0 {
                        return false;
                    }
                    self.out.int(v);
                }
                ObType::Float => self.out.float(ffi::PyFloat_AS_DOUBLE(ptr)),
                ObType::None => self.out.op(NONE),
                ObType::Bool => self.out.op(if ptr == ffi::Py_True() {
                    NEWTRUE
                } else {
                    NEWFALSE
                }),
                _ => return false,
            }
        }
        true
    }

    /// Ints beyond 64 bits: `pickle.encode_long`, via `int.to_bytes`.
    #[cold]
    pub(in crate::dumps) fn save_big_int(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let bits: usize = obj
            .call_method0(pyo3::intern!(py, "bit_length"))?
            .extract()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("signed", true)?;
        let bytes = obj.call_method(
            pyo3::intern!(py, "to_bytes"),
            ((bits >> 3) + 1, "little"),
            Some(&kwargs),
        )?;
        self.out.long_le(bytes.cast::<PyBytes>()?.as_bytes());
        Ok(())
    }

    pub(in crate::dumps) fn save_bytes(&mut self, obj: &Bound<'py, PyBytes>) -> PyResult<()> {
        self.out.bytes(obj.as_bytes());
        self.memoize(obj.as_any());
        Ok(())
    }
}
