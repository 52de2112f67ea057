"""Property-based round trips over arbitrary nested plain data, and stream validity."""

from __future__ import annotations

import math
import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import assert_like_pickle, assert_same, check_stream, roundtrip

import ferropickle

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # deterministic: the same examples on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Small ints, and big ones from their bytes (LONG1 up to 255 bytes, LONG4 beyond).
big_ints = st.builds(
    lambda data, negative: (
        -int.from_bytes(data, "little") if negative else int.from_bytes(data, "little")
    ),
    st.binary(min_size=8, max_size=270),
    st.booleans(),
)
ints = st.integers() | big_ints
text = st.text(max_size=20) | st.text(min_size=250, max_size=300)
# Lone surrogates are valid in `str` (and `pickle` writes them with "surrogatepass").
text_with_surrogates = st.text(st.characters(exclude_categories=()), max_size=20)
binary = st.binary(max_size=20) | st.binary(min_size=250, max_size=300)


def atoms(floats=None, strings=text):
    if floats is None:
        floats = st.floats(allow_nan=False)
    return st.none() | st.booleans() | ints | floats | strings | binary


def hashable(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
        max_leaves=8,
    )


def nested(leaves):
    keys = hashable(leaves)
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=6)
            | st.lists(inner, max_size=6).map(tuple)
            | st.dictionaries(keys, inner, max_size=6)
            | st.sets(keys, max_size=6)
            | st.frozensets(keys, max_size=6)
            | st.builds(bytearray, binary)
        ),
        max_leaves=30,
    )


plain_data = nested(atoms())


FEWER = settings(SETTINGS, max_examples=75)


@SETTINGS
@given(plain_data)
def test_roundtrip_plain_data(obj):
    for protocol in (4, 5):
        roundtrip(obj, protocol=protocol)


@FEWER
@given(nested(atoms(strings=text_with_surrogates)))
def test_roundtrip_with_surrogates(obj):
    roundtrip(obj, protocol=5)


@SETTINGS
@given(st.lists(st.floats() | st.lists(st.floats(), max_size=3).map(tuple), max_size=10))
def test_roundtrip_floats_including_nan(obj):
    """NaN never equals itself, so floats with NaN only go in lists/tuples (not set items or
    dict keys, where equality decides membership); `assert_same` treats NaN as NaN."""
    roundtrip(obj, protocol=5)


@SETTINGS
@given(st.floats())
def test_floats_are_written_bit_for_bit(x):
    assert ferropickle.dumps(x) == pickle.dumps(x, 5)
    r = pickle.loads(ferropickle.dumps(x))
    assert (
        math.isnan(r) if math.isnan(x) else (r == x and math.copysign(1, r) == math.copysign(1, x))
    )


@FEWER
@given(plain_data)
def test_shared_references_survive(base):
    obj = [base, base, {"again": base}, (base,)]
    roundtrip(obj, protocol=5)


@FEWER
@given(plain_data)
def test_output_is_a_valid_stream(obj):
    """`pickletools.dis` walks it (opcodes, stack, marks, memo), every memo fetch names an
    earlier store, and frames are well formed (see `oracle.check_stream`)."""
    for protocol in (4, 5):
        check_stream(ferropickle.dumps(obj, protocol))


@SETTINGS
@given(plain_data)
def test_same_stream_as_pickle_modulo_unused_memo(obj):
    """After dropping memo entries nobody fetches (`pickletools.optimize`), the stream is exactly
    the one `pickle` writes: same opcodes, same order, same frames."""
    for protocol in (4, 5):
        assert_like_pickle(obj, protocol)


@FEWER
@given(plain_data)
def test_pickle_output_loads_with_ours(obj):
    """Direction 2 on its own, for streams written by both the C and the Python pickler."""
    for data in (pickle.dumps(obj, 5), pickle._dumps(obj, 4)):  # type: ignore[attr-defined]
        assert_same(obj, ferropickle.loads(data))
