"""`oracle.py` judges every round trip: check it catches what it must (so a passing round trip
means something)."""

from __future__ import annotations

import array
import datetime
import decimal
import math
import pickle

import pytest
from oracle import assert_same, check_stream


class Plain:
    pass


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (1, True),
        (1, 1.0),
        (0.0, -0.0),
        (math.nan, 1.0),
        ("a", b"a"),
        ([1, 2], (1, 2)),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # order matters
        ({1, 2}, {1, 3}),
        ([1, [True]], [1, [1]]),
        (decimal.Decimal("0"), decimal.Decimal("-0")),
        (array.array("i", [1]), array.array("l", [1])),
        (
            datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
            datetime.datetime(2020, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
        ),
        (datetime.datetime(2020, 1, 1), datetime.datetime(2020, 1, 1, fold=1)),
    ],
    ids=repr,
)
def test_assert_same_rejects_differences(expected, actual):
    with pytest.raises(AssertionError):
        assert_same(expected, actual)


def test_assert_same_accepts_copies():
    obj = [1, -0.0, math.nan, "s", {"k": (1, 2)}, {3}, decimal.Decimal("NaN")]
    assert_same(obj, pickle.loads(pickle.dumps(obj)))


def test_assert_same_checks_sharing_and_cycles():
    shared = [1]
    with pytest.raises(AssertionError, match="shared"):
        assert_same([shared, shared], [[1], [1]])
    with pytest.raises(AssertionError, match="distinct"):
        other = [1]
        assert_same([[1], [1]], [other, other])
    cyclic = []
    cyclic.append(cyclic)
    assert_same(cyclic, pickle.loads(pickle.dumps(cyclic)))
    with pytest.raises(AssertionError):
        assert_same(cyclic, [[[]]])


def test_assert_same_compares_instance_state():
    a, b = Plain(), Plain()
    a.x, b.x = 1, 2
    with pytest.raises(AssertionError):
        assert_same(a, b)
    b.x = 1
    assert_same(a, b)


def test_check_stream_rejects_bad_memo_and_frames():
    good = pickle.dumps(["x" * 10, "x" * 10], 5)
    check_stream(good)
    with pytest.raises((AssertionError, ValueError)):
        check_stream(b"\x80\x05h\x00.")  # BINGET 0 before anything is stored
    with pytest.raises((AssertionError, ValueError)):
        check_stream(b"\x80\x05N.junk")
    # a frame that ends in the middle of a SHORT_BINUNICODE
    body = b"\x8c\x03abc."
    bad_frame = b"\x80\x05\x95" + (3).to_bytes(8, "little") + body
    with pytest.raises(AssertionError, match="frame"):
        check_stream(bad_frame)
