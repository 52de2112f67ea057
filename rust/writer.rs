//! The output buffer: opcode encoding and protocol-4 framing. Plain Rust, no Python.
//!
//! Mirrors `_Pickler_Write`, `_Pickler_CommitFrame` and `_Pickler_write_bytes` in CPython's
//! `Modules/_pickle.c`, so that our frames sit where the C pickler would put them.

use crate::opcodes::*;

/// Frames are closed once they hold this much (`FRAME_SIZE_TARGET` in `_pickle.c`).
pub const FRAME_SIZE_TARGET: usize = 64 * 1024;
/// A frame smaller than this is not worth its 9-byte header (`FRAME_SIZE_MIN`).
const FRAME_SIZE_MIN: usize = 4;
const FRAME_HEADER_SIZE: usize = 9;
/// Items per `APPENDS`/`SETITEMS`/`ADDITEMS` batch (`BATCHSIZE` in `_pickle.c`).
pub const BATCHSIZE: usize = 1000;

pub struct Writer {
    buf: Vec<u8>,
    /// Where the open frame's reserved header starts; `None` between a large payload and the
    /// next write, and after `finish`.
    frame_start: Option<usize>,
}

impl Writer {
    /// Starts a protocol 4 or 5 stream with its `PROTO` header and opens the first frame
    /// (framing is part of protocol 4; older protocols never reach this writer).
    /// Like `new`, writing into `buf` (cleared first) so its capacity can be reused.
    pub fn with_buffer(proto: u8, mut buf: Vec<u8>) -> Self {
        debug_assert!(proto >= 4);
        buf.clear();
        let mut w = Writer {
            buf,
            frame_start: None,
        };
        w.buf.extend_from_slice(&[PROTO, proto]);
        w.start_frame();
        w
    }

    fn start_frame(&mut self) {
        self.frame_start = Some(self.buf.len());
        self.buf.extend_from_slice(&[0; FRAME_HEADER_SIZE]);
    }

    /// Closes the open frame: writes its header, or drops the reserved bytes when it is tiny.
    fn commit_frame(&mut self) {
        if let Some(start) = self.frame_start.take() {
            let len = self.buf.len() - start - FRAME_HEADER_SIZE;
            if len >= FRAME_SIZE_MIN {
                self.buf[start] = FRAME;
                self.buf[start + 1..start + FRAME_HEADER_SIZE]
                    .copy_from_slice(&(len as u64).to_le_bytes());
            } else {
                self.buf.drain(start..start + FRAME_HEADER_SIZE);
            }
        }
    }

    /// Called between objects (`_Pickler_OpcodeBoundary`): starts a new frame once the open one
    /// is big enough, so that a reader streaming from a file reads in ~64 KiB steps.
    #[inline]
    pub fn boundary(&mut self) {
        if let Some(start) = self.frame_start {
            // The frame's payload, its reserved header not counted, as `_Pickler_OpcodeBoundary`
            // measures it.
            if self.buf.len() - start - FRAME_HEADER_SIZE >= FRAME_SIZE_TARGET {
                self.commit_frame();
                self.start_frame();
            }
        }
    }

    /// Writes `STOP`, closes the last frame and hands back the stream.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(STOP);
        self.commit_frame();
        self.buf
    }

    /// Bytes written so far, headers and reserved frame headers included.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// What was written from position `start` (a [`Writer::len`]) on.
    pub fn written_since(&self, start: usize) -> &[u8] {
        &self.buf[start..]
    }

    /// Where the open frame's reserved header starts, to tell whether a frame was closed
    /// between two points.
    #[inline]
    pub fn frame_start(&self) -> Option<usize> {
        self.frame_start
    }

    /// The open frame's payload so far, as [`Writer::boundary`] measures it.
    #[inline]
    pub fn frame_payload(&self) -> Option<usize> {
        self.frame_start
            .map(|start| self.buf.len() - start - FRAME_HEADER_SIZE)
    }

    /// Opcodes encoded elsewhere, copied as they are (the caller keeps the frames right).
    #[inline]
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    #[inline]
    pub fn op(&mut self, op: u8) {
        self.buf.push(op);
    }

    #[inline]
    pub fn ops(&mut self, ops: &[u8]) {
        self.buf.extend_from_slice(ops);
    }

    /// Before the items of an `n`-tuple: `MARK` when it takes the general `TUPLE`
    /// (`save_tuple` builds up to three items with `TUPLE1`..`TUPLE3`, which need none).
    #[inline]
    pub fn tuple_open(&mut self, n: usize) {
        if n > 3 {
            self.buf.push(MARK);
        }
    }

    /// After the `n` items of a tuple opened with [`Writer::tuple_open`]: `EMPTY_TUPLE`,
    /// `TUPLE1`..`TUPLE3` or `TUPLE`.
    #[inline]
    pub fn tuple_close(&mut self, n: usize) {
        self.buf.push(match n {
            0 => EMPTY_TUPLE,
            1 => TUPLE1,
            2 => TUPLE2,
            3 => TUPLE3,
            _ => TUPLE,
        });
    }

    /// A header followed by a payload; payloads of a frame's size or more are written outside
    /// any frame, as `_Pickler_write_bytes` does, so readers can take them without a copy.
    #[inline]
    fn header_and_payload(&mut self, header: &[u8], payload: &[u8]) {
        if payload.len() >= FRAME_SIZE_TARGET {
            self.commit_frame();
            self.buf.reserve(header.len() + payload.len());
            self.buf.extend_from_slice(header);
            self.buf.extend_from_slice(payload);
            self.start_frame();
        } else {
            self.buf.extend_from_slice(header);
            self.buf.extend_from_slice(payload);
        }
    }

    /// `BININT1`/`BININT2`/`BININT` for 32-bit values, `LONG1` beyond (`save_long`).
    #[inline]
    pub fn int(&mut self, v: i64) {
        if (0..=0xff).contains(&v) {
            self.buf.extend_from_slice(&[BININT1, v as u8]);
        } else if (0..=0xffff).contains(&v) {
            let b = (v as u16).to_le_bytes();
            self.buf.extend_from_slice(&[BININT2, b[0], b[1]]);
        } else if let Ok(v32) = i32::try_from(v) {
            self.buf.push(BININT);
            self.buf.extend_from_slice(&v32.to_le_bytes());
        } else {
            self.long_le(&v.to_le_bytes());
        }
    }

    /// `LONG1`/`LONG4` from a little-endian two's complement encoding, trimmed to the shortest
    /// one that keeps the sign, which is what `pickle.encode_long` produces.
    pub fn long_le(&mut self, bytes: &[u8]) {
        let n = minimal_twos_complement_len(bytes);
        if n < 256 {
            self.buf.extend_from_slice(&[LONG1, n as u8]);
        } else {
            self.buf.push(LONG4);
            self.buf.extend_from_slice(&(n as u32).to_le_bytes());
        }
        self.buf.extend_from_slice(&bytes[..n]);
    }

    /// `BINFLOAT`: an IEEE 754 double, big-endian.
    #[inline]
    pub fn float(&mut self, v: f64) {
        self.buf.push(BINFLOAT);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `SHORT_BINUNICODE`/`BINUNICODE`/`BINUNICODE8` with UTF-8 (surrogatepass) bytes.
    #[inline]
    pub fn str_utf8(&mut self, utf8: &[u8]) {
        self.sized([SHORT_BINUNICODE, BINUNICODE, BINUNICODE8], utf8);
    }

    /// `SHORT_BINBYTES`/`BINBYTES`/`BINBYTES8`.
    #[inline]
    pub fn bytes(&mut self, data: &[u8]) {
        self.sized([SHORT_BINBYTES, BINBYTES, BINBYTES8], data);
    }

    /// `data` behind the shortest of a 1-, 4- or 8-byte length prefix (`ops` in that order).
    #[inline]
    fn sized(&mut self, [op1, op4, op8]: [u8; 3], data: &[u8]) {
        let n = data.len();
        if n < 256 {
            self.buf.reserve(2 + n);
            self.buf.extend_from_slice(&[op1, n as u8]);
            self.buf.extend_from_slice(data);
        } else if let Ok(n32) = u32::try_from(n) {
            let mut h = [op4, 0, 0, 0, 0];
            h[1..].copy_from_slice(&n32.to_le_bytes());
            self.header_and_payload(&h, data);
        } else {
            self.header8(op8, data);
        }
    }

    /// An opcode with an 8-byte length prefix, then `data`.
    fn header8(&mut self, op: u8, data: &[u8]) {
        let mut h = [op, 0, 0, 0, 0, 0, 0, 0, 0];
        h[1..].copy_from_slice(&(data.len() as u64).to_le_bytes());
        self.header_and_payload(&h, data);
    }

    /// `BYTEARRAY8` (protocol 5).
    pub fn bytearray(&mut self, data: &[u8]) {
        self.header8(BYTEARRAY8, data);
    }

    /// `BINGET`/`LONG_BINGET`.
    #[inline]
    pub fn get(&mut self, idx: u32) {
        if idx < 256 {
            self.buf.extend_from_slice(&[BINGET, idx as u8]);
        } else {
            self.buf.push(LONG_BINGET);
            self.buf.extend_from_slice(&idx.to_le_bytes());
        }
    }

    /// `EXT1`/`EXT2`/`EXT4` for a `copyreg` extension code.
    pub fn ext(&mut self, code: u32) {
        if code <= 0xff {
            self.buf.extend_from_slice(&[EXT1, code as u8]);
        } else if code <= 0xffff {
            let b = (code as u16).to_le_bytes();
            self.buf.extend_from_slice(&[EXT2, b[0], b[1]]);
        } else {
            self.buf.push(EXT4);
            self.buf.extend_from_slice(&code.to_le_bytes());
        }
    }
}

/// Length of the shortest little-endian two's complement encoding of the same value.
fn minimal_twos_complement_len(bytes: &[u8]) -> usize {
    let mut n = bytes.len();
    while n > 1 {
        let last = bytes[n - 1];
        let sign_of_prev = bytes[n - 2] & 0x80;
        if (last == 0x00 && sign_of_prev == 0) || (last == 0xff && sign_of_prev != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(w: Writer) -> Vec<u8> {
        // Drop the PROTO header, any FRAME header and STOP: what is left is the object written.
        let out = w.finish();
        let start = if out[2] == FRAME { 11 } else { 2 };
        out[start..out.len() - 1].to_vec()
    }

    #[test]
    fn small_ints_use_the_shortest_opcode() {
        for (v, want) in [
            (0_i64, vec![BININT1, 0]),
            (255, vec![BININT1, 255]),
            (256, vec![BININT2, 0, 1]),
            (65535, vec![BININT2, 255, 255]),
            (65536, vec![BININT, 0, 0, 1, 0]),
            (-1, vec![BININT, 255, 255, 255, 255]),
            (i32::MIN as i64, vec![BININT, 0, 0, 0, 0x80]),
        ] {
            let mut w = Writer::with_buffer(5, Vec::new());
            w.int(v);
            assert_eq!(body(w), want, "{v}");
        }
    }

    #[test]
    fn longs_match_pickle_encode_long() {
        // Expected bytes are `pickle.encode_long(v)` from CPython.
        for (v, want) in [
            (1_i64 << 31, vec![0, 0, 0, 0x80, 0]),
            (-(1_i64 << 31) - 1, vec![0xff, 0xff, 0xff, 0x7f, 0xff]),
            (-(1_i64 << 39), vec![0, 0, 0, 0, 0x80]),
            (
                i64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            ),
            (i64::MIN, vec![0, 0, 0, 0, 0, 0, 0, 0x80]),
        ] {
            let mut w = Writer::with_buffer(5, Vec::new());
            w.int(v);
            let mut expect = vec![LONG1, want.len() as u8];
            expect.extend(want);
            assert_eq!(body(w), expect, "{v}");
        }
    }

    #[test]
    fn tuples_take_the_opcode_save_tuple_picks() {
        for (n, want) in [
            (0, vec![EMPTY_TUPLE]),
            (1, vec![NONE, TUPLE1]),
            (2, vec![NONE, NONE, TUPLE2]),
            (3, vec![NONE, NONE, NONE, TUPLE3]),
            (4, vec![MARK, NONE, NONE, NONE, NONE, TUPLE]),
        ] {
            let mut w = Writer::with_buffer(5, Vec::new());
            w.tuple_open(n);
            for _ in 0..n {
                w.op(NONE);
            }
            w.tuple_close(n);
            assert_eq!(body(w), want, "{n}");
        }
    }

    #[test]
    fn tiny_streams_carry_no_frame() {
        let mut w = Writer::with_buffer(5, Vec::new());
        w.op(NONE);
        assert_eq!(w.finish(), vec![PROTO, 5, NONE, STOP]);
    }

    #[test]
    fn frames_wrap_the_body_and_large_payloads_sit_outside() {
        let mut w = Writer::with_buffer(5, Vec::new());
        w.str_utf8(b"abcdef");
        let big = vec![7u8; FRAME_SIZE_TARGET];
        w.bytes(&big);
        let out = w.finish();
        // PROTO 5, FRAME(8) SHORT_BINUNICODE "abcdef", then BINBYTES outside any frame, STOP.
        assert_eq!(&out[..3], &[PROTO, 5, FRAME]);
        assert_eq!(u64::from_le_bytes(out[3..11].try_into().unwrap()), 8);
        assert_eq!(out[11], SHORT_BINUNICODE);
        assert_eq!(out[19], BINBYTES);
        assert_eq!(*out.last().unwrap(), STOP);
        assert_eq!(out.len(), 19 + 5 + FRAME_SIZE_TARGET + 1);
    }

    #[test]
    fn protocol_4_and_5_frames_split_at_the_target() {
        let mut w = Writer::with_buffer(4, Vec::new());
        for _ in 0..(FRAME_SIZE_TARGET / 100 + 10) {
            w.str_utf8(&[b'x'; 98]);
            w.boundary();
        }
        let out = w.finish();
        let first = u64::from_le_bytes(out[3..11].try_into().unwrap()) as usize;
        assert!((FRAME_SIZE_TARGET..FRAME_SIZE_TARGET + 100).contains(&first));
        assert_eq!(out[11 + first], FRAME);
    }
}
