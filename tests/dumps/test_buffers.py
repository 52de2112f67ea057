"""PEP 574 out-of-band buffers: `buffer_callback` when pickling, `buffers=` when loading."""

from __future__ import annotations

import pickle
import pickletools

import pytest
from oracle import assert_like_pickle, assert_same, check_stream, roundtrip, unframed_payloads

import ferropickle


def opcodes(data: bytes) -> list[str]:
    return [op.name for op, _, _ in pickletools.genops(data)]


def three_way_out_of_band(obj, *, check=assert_same):
    """Pickles `obj` at protocol 5 with buffers out of band and loads it all three ways.

    Returns the three results and the buffers each pickler produced.
    """
    ours_buffers: list[pickle.PickleBuffer] = []
    ours = ferropickle.dumps(obj, 5, buffer_callback=ours_buffers.append)
    check_stream(ours)
    theirs_buffers: list[pickle.PickleBuffer] = []
    theirs = pickle.dumps(obj, 5, buffer_callback=theirs_buffers.append)
    # Same buffers, in the same order, as `pickle` hands out.
    assert [bytes(b.raw()) for b in ours_buffers] == [bytes(b.raw()) for b in theirs_buffers]
    results = [
        pickle.loads(ours, buffers=ours_buffers),
        ferropickle.loads(theirs, buffers=theirs_buffers),
        ferropickle.loads(ours, buffers=iter(ours_buffers)),
    ]
    for r in results:
        check(obj, r)
    return results, ours_buffers


def test_picklebuffer_out_of_band_readonly():
    data = b"immutable payload" * 10
    buf = pickle.PickleBuffer(data)
    results, buffers = three_way_out_of_band(buf, check=lambda a, b: None)
    assert len(buffers) == 1
    assert buffers[0].raw().readonly
    for r in results:
        assert bytes(r) == data
        assert memoryview(r).readonly


def test_picklebuffer_out_of_band_writable():
    data = bytearray(b"mutable payload" * 10)
    buf = pickle.PickleBuffer(data)
    results, buffers = three_way_out_of_band(buf, check=lambda a, b: None)
    assert not buffers[0].raw().readonly
    for r in results:
        assert bytes(r) == bytes(data)
        assert not memoryview(r).readonly


def test_out_of_band_opcodes():
    buffers: list[pickle.PickleBuffer] = []
    data = ferropickle.dumps(
        [pickle.PickleBuffer(b"ro"), pickle.PickleBuffer(bytearray(b"rw"))],
        5,
        buffer_callback=buffers.append,
    )
    ops = opcodes(data)
    assert ops.count("NEXT_BUFFER") == 2
    assert ops.count("READONLY_BUFFER") == 1
    assert len(buffers) == 2


def test_loaded_buffer_is_the_callers_buffer_not_a_copy():
    """Out of band means zero-copy: the loaded object views the buffer passed to `loads`."""
    backing = bytearray(b"0123456789")
    buffers: list[pickle.PickleBuffer] = []
    data = ferropickle.dumps(pickle.PickleBuffer(backing), 5, buffer_callback=buffers.append)
    for loads in (pickle.loads, ferropickle.loads):
        target = bytearray(b"abcdefghij")
        r = loads(data, buffers=[target])
        assert r is target or bytes(memoryview(r)) == b"abcdefghij"
        target[0] = ord("Z")
        assert bytes(memoryview(r))[0] == ord("Z")


def test_numpy_arrays_out_of_band():
    np = pytest.importorskip("numpy")
    arrays = {
        "f8": np.arange(1000, dtype=np.float64),
        "2d": np.arange(12, dtype=np.int32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(12).reshape(3, 4)),
        "readonly": np.frombuffer(b"\x00" * 16, dtype=np.int64),
    }
    results, buffers = three_way_out_of_band(arrays)
    assert len(buffers) == len(arrays)
    for r in results:
        assert r["fortran"].flags.f_contiguous
        assert not r["readonly"].flags.writeable


def test_numpy_non_contiguous_array_goes_in_band():
    """numpy copies a non-contiguous array into the stream itself (no PickleBuffer)."""
    np = pytest.importorskip("numpy")
    a = np.arange(20).reshape(4, 5)[::2, ::2]
    results, _ = three_way_out_of_band(a)
    for r in results:
        assert (r == a).all()


def test_numpy_array_shared_twice_is_one_buffer():
    np = pytest.importorskip("numpy")
    a = np.arange(10)
    results, buffers = three_way_out_of_band([a, a])
    assert len(buffers) == 1
    for r in results:
        assert r[0] is r[1]


def test_callback_returning_true_keeps_the_buffer_in_band():
    seen: list[pickle.PickleBuffer] = []

    def keep_in_band(buf):
        seen.append(buf)
        return True

    payload = [pickle.PickleBuffer(b"in-band ro"), pickle.PickleBuffer(bytearray(b"in-band rw"))]
    data = ferropickle.dumps(payload, 5, buffer_callback=keep_in_band)
    assert len(seen) == 2
    assert "NEXT_BUFFER" not in opcodes(data)
    assert_like_pickle(payload, 5, buffer_callback=lambda b: True)
    for r in (pickle.loads(data), ferropickle.loads(data)):
        assert r == [b"in-band ro", bytearray(b"in-band rw")]
        assert [type(x) for x in r] == [bytes, bytearray]


def test_callback_with_mixed_answers():
    payload = [pickle.PickleBuffer(b"a" * 10), pickle.PickleBuffer(b"b" * 10)]
    out: list[pickle.PickleBuffer] = []

    def first_out_of_band(buf):
        if not out:
            out.append(buf)
            return False
        return True

    data = ferropickle.dumps(payload, 5, buffer_callback=first_out_of_band)
    assert opcodes(data).count("NEXT_BUFFER") == 1
    for loads in (pickle.loads, ferropickle.loads):
        r = loads(data, buffers=out)
        assert bytes(r[0]) == b"a" * 10
        assert r[1] == b"b" * 10


@pytest.mark.parametrize("proto", [4, 5])
def test_no_callback_means_in_band(proto):
    if proto == 4:
        # PickleBuffer itself needs protocol 5; numpy falls back to in-band bytes at 4.
        np = pytest.importorskip("numpy")
        roundtrip(np.arange(100), protocol=proto)
        return
    payload = [pickle.PickleBuffer(b"ro"), pickle.PickleBuffer(bytearray(b"rw"))]
    data = ferropickle.dumps(payload, proto)
    assert "NEXT_BUFFER" not in opcodes(data)
    assert_like_pickle(payload, proto)
    for r in (pickle.loads(data), ferropickle.loads(data)):
        assert r == [b"ro", bytearray(b"rw")]
        assert [type(x) for x in r] == [bytes, bytearray]


def test_none_callback_means_in_band():
    data = ferropickle.dumps(pickle.PickleBuffer(b"x"), 5, buffer_callback=None)
    assert pickle.loads(data) == b"x"


def test_buffer_callback_needs_protocol_5():
    with pytest.raises(ValueError):
        ferropickle.dumps(b"x", 4, buffer_callback=list().append)
    with pytest.raises(ValueError):
        ferropickle.dumps(b"x", 2, buffer_callback=list().append)


def test_picklebuffer_at_protocol_4_raises_pickling_error():
    with pytest.raises(pickle.PicklingError) as info:
        ferropickle.dumps(pickle.PickleBuffer(b"x"), 4)
    assert isinstance(info.value, ferropickle.PicklingError)
    assert "PickleBuffer" in str(info.value)


def test_non_contiguous_picklebuffer_raises_pickling_error():
    np = pytest.importorskip("numpy")
    view = np.arange(20).reshape(4, 5)[::2, ::2]
    buf = pickle.PickleBuffer(view)
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(buf, 5, buffer_callback=list().append)  # the reference behaviour
    with pytest.raises(ferropickle.PicklingError, match="contiguous"):
        ferropickle.dumps(buf, 5, buffer_callback=list().append)
    with pytest.raises(ferropickle.PicklingError, match="contiguous"):
        ferropickle.dumps(buf, 5)


def test_non_contiguous_memoryview_picklebuffer_raises():
    buf = pickle.PickleBuffer(memoryview(b"abcdefgh")[::2])
    with pytest.raises(ferropickle.PicklingError):
        ferropickle.dumps(buf, 5)


def test_fortran_contiguous_picklebuffer_goes_out_of_band():
    np = pytest.importorskip("numpy")
    f = np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    buffers: list[pickle.PickleBuffer] = []
    ferropickle.dumps(pickle.PickleBuffer(f), 5, buffer_callback=buffers.append)
    pickle.dumps(pickle.PickleBuffer(f), 5, buffer_callback=(ref := []).append)
    assert [bytes(b.raw()) for b in buffers] == [bytes(b.raw()) for b in ref]


def test_empty_buffers():
    results, buffers = three_way_out_of_band(
        [pickle.PickleBuffer(b""), pickle.PickleBuffer(bytearray())], check=lambda a, b: None
    )
    assert len(buffers) == 2
    for r in results:
        assert [bytes(x) for x in r] == [b"", b""]


def test_large_in_band_buffer_bypasses_frames():
    payload = pickle.PickleBuffer(bytearray(200_000))
    data = ferropickle.dumps(["head", payload, "tail"], 5)
    check_stream(data)
    assert unframed_payloads(data) == ["BYTEARRAY8"]
    assert_like_pickle(["head", payload, "tail"], 5)


def test_too_few_buffers_at_load_time():
    buffers: list[pickle.PickleBuffer] = []
    data = ferropickle.dumps(
        [pickle.PickleBuffer(b"a"), pickle.PickleBuffer(b"b")], 5, buffer_callback=buffers.append
    )
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data, buffers=buffers[:1])
    with pytest.raises(pickle.UnpicklingError):
        ferropickle.loads(data, buffers=buffers[:1])
    with pytest.raises(pickle.UnpicklingError):
        ferropickle.loads(data)


def test_exception_in_callback_propagates():
    def boom(buf):
        raise OSError("disk full")

    with pytest.raises((OSError, ferropickle.PicklingError)) as info:
        ferropickle.dumps(pickle.PickleBuffer(b"x"), 5, buffer_callback=boom)
    err = info.value
    if isinstance(err, ferropickle.PicklingError):
        assert isinstance(err.__cause__, OSError)
