"""Scalars: None, bools, ints, floats, str, bytes, bytearray, and subclasses of the builtins.

Values are chosen at the boundaries where the pickle opcode changes (BININT1/BININT2/BININT/
LONG1/LONG4, SHORT_BINUNICODE/BINUNICODE, SHORT_BINBYTES/BINBYTES, frame size).
"""

from __future__ import annotations

import math
import pickle
import pickletools
import struct

import pytest
from oracle import LEGACY_PROTOCOLS, assert_like_pickle, roundtrip, unframed_payloads

import ferropickle


def opcodes(data: bytes) -> list[str]:
    return [op.name for op, _, _ in pickletools.genops(data)]


def test_none(protocol):
    roundtrip(None, protocol=protocol)


@pytest.mark.parametrize("value", [True, False])
def test_bools(protocol, value):
    for r in roundtrip(value, protocol=protocol):
        assert r is value


def test_bool_and_int_stay_distinct(protocol):
    obj = [True, 1, False, 0, {True: 1, 0: False}]
    for r in roundtrip(obj, protocol=protocol):
        assert [type(x) for x in r[:4]] == [bool, int, bool, int]
        assert [type(x) for x in r[4].items() for x in x] == [bool, int, int, bool]


INT_BOUNDARIES = [
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32,
    -1,
    -128,
    -129,
    -256,
    -(2**31),
    -(2**31) - 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    -(2**64),
    2**2039 - 1,  # LONG1 with 255 bytes
    2**2039,  # LONG4
    -(2**2039),  # LONG1 with 255 bytes
    -(2**2039) - 1,  # LONG4
    10**400,
    -(10**400),
    3**50000,  # far beyond int max str digits: must not go through str()
]


def int_id(v: int) -> str:
    return str(v) if abs(v) <= 2**64 else f"{'-' if v < 0 else ''}{v.bit_length()}bits"


@pytest.mark.parametrize("value", INT_BOUNDARIES, ids=int_id)
def test_int_boundaries(protocol, value):
    roundtrip(value, protocol=protocol)


@pytest.mark.parametrize(
    ("value", "opcode"),
    [
        (0, "BININT1"),
        (255, "BININT1"),
        (256, "BININT2"),
        (65535, "BININT2"),
        (65536, "BININT"),
        (-1, "BININT"),
        (2**31 - 1, "BININT"),
        (-(2**31), "BININT"),
        (2**31, "LONG1"),
        (-(2**31) - 1, "LONG1"),
        (2**2039 - 1, "LONG1"),
        (2**2039, "LONG4"),
        (-(2**2039), "LONG1"),
        (-(2**2039) - 1, "LONG4"),
    ],
    ids=lambda v: int_id(v) if isinstance(v, int) else v,
)
def test_int_opcode_matches_pickle(value, opcode):
    ours = ferropickle.dumps(value)
    assert opcode in opcodes(ours)
    assert ours == pickle.dumps(value, 5)


def test_ints_encode_like_pickle_encode_long():
    for v in [*INT_BOUNDARIES, *range(-300, 300)]:
        assert ferropickle.dumps(v, 4) == pickle.dumps(v, 4), v


FLOATS = [0.0, -0.0, 1.0, -1.5, math.pi, 1e308, -1e308, 5e-324, -5e-324, math.inf, -math.inf]


@pytest.mark.parametrize("value", FLOATS, ids=repr)
def test_floats(protocol, value):
    roundtrip(value, protocol=protocol)


def test_negative_zero_keeps_its_sign(protocol):
    for r in roundtrip(-0.0, protocol=protocol):
        assert math.copysign(1.0, r) == -1.0


def test_nan(protocol):
    for r in roundtrip(math.nan, protocol=protocol):
        assert math.isnan(r)


def test_nan_payload_is_preserved():
    nan = struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0]
    assert ferropickle.dumps(nan) == pickle.dumps(nan, 5)


STRINGS = [
    "",
    "a",
    "hello world",
    "caf\xe9 \xff",  # latin-1
    "\u20ac \u4e2d\u6587 \uffff",  # BMP
    "\U0001f600 \U0010ffff",  # astral
    "\ud800",  # lone surrogates
    "\udfff",
    "a\ud800b\udc00c",
    "\ud83d\ude00",  # a surrogate *pair* written as two code points: not an emoji
    "\x00 nul",
]


@pytest.mark.parametrize("value", STRINGS, ids=ascii)
def test_strings(protocol, value):
    roundtrip(value, protocol=protocol)


@pytest.mark.parametrize("value", STRINGS, ids=ascii)
def test_strings_encode_like_pickle(value):
    assert_like_pickle(value)
    assert_like_pickle([value, value])


# 255/256 is the SHORT_BINUNICODE/BINUNICODE boundary (in UTF-8 bytes), 65536 the frame size.
LENGTHS = [255, 256, 65535, 65536, 70_000]


@pytest.mark.parametrize("n", LENGTHS)
def test_string_lengths(protocol, n):
    roundtrip("x" * n, protocol=protocol)
    # multi-byte characters: the boundary is in UTF-8 bytes, not code points
    roundtrip("\xe9" * (n // 2) + "x" * (n % 2), protocol=protocol)


@pytest.mark.parametrize("n", [255, 256])
def test_string_length_opcodes(n):
    ops = opcodes(ferropickle.dumps("x" * n))
    assert ("SHORT_BINUNICODE" if n < 256 else "BINUNICODE") in ops


def test_huge_string_bypasses_the_frame(protocol):
    s = "y" * (100 * 1024)
    data = ferropickle.dumps(["small", s, "small2"], protocol)
    roundtrip(["small", s, "small2"], protocol=protocol)
    # The big payload sits outside any frame, as `pickle` writes it.
    assert unframed_payloads(data) == ["BINUNICODE"]
    assert_like_pickle(["small", s, "small2"], protocol)


@pytest.mark.parametrize("n", [0, 1, *LENGTHS])
def test_bytes_lengths(protocol, n):
    roundtrip(bytes(range(256)) * (n // 256) + b"z" * (n % 256), protocol=protocol)


@pytest.mark.parametrize("n", [255, 256])
def test_bytes_length_opcodes(n):
    ops = opcodes(ferropickle.dumps(b"x" * n))
    assert ("SHORT_BINBYTES" if n < 256 else "BINBYTES") in ops


@pytest.mark.parametrize("n", [0, 1, 255, 256, 65536, 70_000])
def test_bytearray(protocol, n):
    for r in roundtrip(bytearray(b"q" * n), protocol=protocol):
        assert type(r) is bytearray


def test_bytearray_is_a_bytearray8_at_protocol_5():
    assert "BYTEARRAY8" in opcodes(ferropickle.dumps(bytearray(b"abc"), 5))
    assert "BYTEARRAY8" not in opcodes(ferropickle.dumps(bytearray(b"abc"), 4))


def test_a_bytearray_is_one_object_however_it_was_reached():
    """A bytearray was memoized only when its reference count said something else held it, as
    an immutable object may be; it is mutable, so `pickle` memoizes it always, and reached three
    times it came back as three copies."""
    data = bytearray(b"abc")
    for r in roundtrip((data,) * 3):
        assert r[0] is r[1] is r[2]


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**70), 1.5, "text", b"bytes", bytearray(b"ba"), [1, "a", (2.0, None)]],
    ids=repr,
)
@pytest.mark.parametrize("proto", LEGACY_PROTOCOLS)
def test_legacy_protocols_spot_check(proto, value):
    data = ferropickle.dumps(value, proto)
    assert data[:2] == bytes([pickle.PROTO[0], proto])
    roundtrip(value, protocol=proto)


# ---------------------------------------------------------------------------------------------
# Subclasses of the builtins go through `__reduce_ex__`, and keep their type and attributes.
# ---------------------------------------------------------------------------------------------


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyStr(str):
    pass


class MyBytes(bytes):
    pass


class MyList(list):
    pass


class MyDict(dict):
    pass


class MyTuple(tuple):
    __slots__ = ()


class MyComplex(complex):
    pass


class MyBytearray(bytearray):
    pass


SUBCLASS_VALUES = [
    MyInt(5),
    MyInt(2**100),
    MyFloat(-0.0),
    MyFloat(2.5),
    MyStr("sub \ud800"),
    MyBytes(b"\x00\xff"),
    MyList([1, [2], "3"]),
    MyDict(a=1, b=[2]),
    MyTuple((1, "two", None)),
    MyComplex(1, -2),
    MyBytearray(b"xyz"),
]


@pytest.mark.parametrize("value", SUBCLASS_VALUES, ids=lambda v: type(v).__name__)
def test_builtin_subclasses(protocol, value):
    roundtrip(value, protocol=protocol)


@pytest.mark.parametrize(
    "value",
    [v for v in SUBCLASS_VALUES if hasattr(v, "__dict__")],
    ids=lambda v: type(v).__name__,
)
def test_builtin_subclasses_keep_attributes(protocol, value):
    value = type(value)(value)
    value.note = ["attached", 1]
    for r in roundtrip(value, protocol=protocol):
        assert r.note == ["attached", 1]


def test_subclass_shared_twice_is_one_object(protocol):
    m = MyInt(7)
    for r in roundtrip([m, m], protocol=protocol):
        assert r[0] is r[1]


def test_one_byte_bytearrays_share_the_interpreters_one_byte_bytes():
    """Before protocol 5 a bytearray is `bytearray(bytes)`; since CPython 3.15 the bytes of a
    one-byte bytearray are the interpreter's shared one-byte object, which `pickle` memoizes:
    a second such bytearray fetches it. Ours wrote it again."""
    obj = [bytearray(b"\x00"), bytearray(b"\x00"), bytearray(b"\x01"), bytearray(b"ab")]
    for protocol in range(5):
        assert ferropickle.dumps(obj, protocol) == pickle.dumps(obj, protocol), protocol
    for r in roundtrip(obj, protocol=4):
        assert r[0] is not r[1]
