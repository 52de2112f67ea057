"""Byte-identical output: for every object ``pickle`` can write by reference,
``ferropickle.dumps(x, p) == pickle.dumps(x, p)`` for protocols 4 and 5, fast paths included;
for objects with by-value parts the stream is ``cloudpickle.dumps``'s, byte for byte (see
``test_by_value_state.py``). So the bytes are deterministic, and usable for caching and
tokenizing.
"""

from __future__ import annotations

import collections
import datetime
import fractions
import functools
import operator
import pathlib
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_nested_data_properties import atoms, hashable, text_with_surrogates

import ferropickle

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PROTOCOLS = [4, 5]


def same_bytes(obj) -> None:
    for protocol in PROTOCOLS:
        assert ferropickle.dumps(obj, protocol) == pickle.dumps(obj, protocol), protocol


def reducible(leaves):
    """Objects pickled through `__reduce_ex__`/copyreg, and the native fast paths."""
    parts = st.lists(st.text(st.characters(exclude_characters="/\x00"), min_size=1, max_size=5))
    out = [
        st.builds(complex, st.floats(allow_nan=False), st.floats(allow_nan=False)),
        st.builds(fractions.Fraction, st.integers(), st.integers(min_value=1)),
        st.decimals(allow_nan=False, allow_infinity=False),
        st.datetimes(),
        st.dates(),
        st.timedeltas(),
        st.builds(range, st.integers(-5, 5), st.integers(-5, 50)),
        st.builds(
            collections.OrderedDict, st.dictionaries(st.text(max_size=3), leaves, max_size=3)
        ),
        st.builds(collections.deque, st.lists(leaves, max_size=3)),
        parts.map(lambda p: pathlib.PurePosixPath("/", *p)),
        parts.map(lambda p: pathlib.PurePosixPath(*p)),
        parts.map(lambda p: pathlib.PurePath("/", *p)),
        parts.map(lambda p: pathlib.PureWindowsPath("C:\\", *p)),
        st.builds(functools.partial, st.sampled_from([max, min, operator.add]), leaves),
        st.builds(
            lambda f, a, k: functools.partial(f, *a, **k),
            st.sampled_from([sorted, print]),
            st.lists(leaves, max_size=2),
            st.dictionaries(st.sampled_from(["key", "sep"]), leaves, max_size=2),
        ),
        st.sampled_from([int, type(None), type(...), pathlib.PurePosixPath, len, operator.add]),
    ]
    return st.one_of(out)


def shared_nested(leaves, key_leaves=None):
    """Containers whose parts repeat (the same object reached twice); keys of dicts and items
    of sets are made of `key_leaves` (hashable)."""

    def with_sharing(base):
        return st.tuples(base, st.integers(1, 3)).map(lambda t: [t[0]] * t[1])

    keys = hashable(leaves if key_leaves is None else key_leaves)
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.lists(inner, max_size=5).map(tuple)
            | st.dictionaries(keys, inner, max_size=5)
            | st.sets(keys, max_size=5)
            | st.frozensets(keys, max_size=5)
            | with_sharing(inner)
            | st.builds(bytearray, st.binary(max_size=8))
        ),
        max_leaves=20,
    )


LEAVES = atoms(strings=text_with_surrogates) | st.floats()


@SETTINGS
@given(shared_nested(LEAVES))
def test_plain_data_has_pickles_bytes(obj):
    same_bytes(obj)


@SETTINGS
@given(shared_nested(LEAVES | reducible(atoms()), key_leaves=LEAVES))
def test_reducible_objects_and_fast_paths_have_pickles_bytes(obj):
    same_bytes(obj)


def test_cycles_have_pickles_bytes():
    lst: list = [1]
    lst.append(lst)
    d: dict = {"k": lst}
    d["self"] = d
    t = (lst, d)
    lst.append(t)
    same_bytes([lst, d, t])


def test_dask_nodes_have_pickles_bytes():
    ts = pytest.importorskip("dask._task_spec")
    ref = ts.TaskRef("b")
    nodes = [
        ts.Task("k", max, 1, ref, key=abs),
        ts.Task(("k", 1), functools.partial(min, 2), ts.List(1, ref), ts.Dict(a=ref)),
        ts.DataNode("d", [1, 2]),
        ts.Alias("a", "b"),
        ref,
        ts.Tuple(ref, 3),
        ts.Set(1, 2),
    ]
    same_bytes(nodes)
    for node in nodes:
        same_bytes(node)


def test_a_global_by_reference_has_pickles_bytes():
    """distributed's `test_pickle_by_value_when_registered` compares exactly this."""
    for obj in (operator.add, pathlib.Path, functools.partial, datetime.datetime.fromisoformat):
        same_bytes(obj)


class ListSubclass(list):
    """Pickled through `__reduce_ex__`, whose list items come as an iterator (`batch_list`)."""


@pytest.mark.parametrize("n", [0, 1, 2, 999, 1000, 1001, 2000, 2001, 20_000])
def test_batches_and_frames_of_large_containers_have_pickles_bytes(n):
    """Batches of 1,000 items (with `batch_dict_exact`'s empty trailing batch after a full
    one, and an iterator's last single item as a lone APPEND/SETITEM) and 64 KiB frames that
    start where `save()` starts a new object."""
    words = [f"item-{i:06d}-of-a-long-enough-string" for i in range(n)]
    same_bytes(words)
    same_bytes(dict(zip(words, range(n), strict=True)))
    same_bytes(set(words))
    same_bytes(collections.OrderedDict(zip(words, range(n), strict=True)))
    same_bytes(ListSubclass(words))
    same_bytes([list(range(n)), bytes(n * 40)])
