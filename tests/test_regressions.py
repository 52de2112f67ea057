"""Regression tests, one per bug found in review; each names what was wrong."""

from __future__ import annotations

import functools
import pickle

import pytest
from helpers import roundtrip

import ferropickle


def test_a_set_changed_while_pickled_raises_runtime_error_not_a_panic():
    """PyO3's set iterator panicked (a BaseException that escapes `except Exception`)."""
    box: set = set()

    class Grow:
        def __reduce__(self):
            box.add(object())
            return (int, ())

    box.update({Grow(), 1, 2})
    with pytest.raises(RuntimeError) as err:
        ferropickle.dumps(box)
    assert "changed size" in str(err.value)
    with pytest.raises(RuntimeError):
        pickle.dumps(box)


def test_a_reducers_shared_argument_tuple_keeps_its_identity():
    """`BaseException.__reduce__` returns `self.args`: it was written as a fresh tuple every
    time it was reached, so the mutable object inside came back as two copies."""
    e = ValueError(bytearray(b"x"))
    for r in roundtrip([e, e.args]):
        exc, args = r
        assert exc.args is args
        assert exc.args[0] is args[0]


def test_a_bytearray_is_one_object_however_it_was_reached():
    data = bytearray(b"abc")
    for r in roundtrip((data,) * 3):
        assert r[0] is r[1] is r[2]


class _Call:
    def __call__(self):
        return 1


def test_a_cycle_through_a_partials_function_keeps_one_partial():
    """The native partial writer memoized the partial without checking whether writing its
    function had already written it."""
    c = _Call()
    p = functools.partial(c)
    c.p = p
    for r in roundtrip(p):
        assert r.func.p is r


def test_a_cycle_through_a_datanode_value_keeps_one_node():
    ts = pytest.importorskip("dask._task_spec")
    value: list = []
    node = ts.DataNode("k", value)
    value.append(node)
    # (Not `roundtrip`: its deep comparison would follow the cycle through DataNode.__eq__.)
    for r in (
        pickle.loads(ferropickle.dumps(node)),
        ferropickle.loads(pickle.dumps(node)),
        ferropickle.loads(ferropickle.dumps(node)),
    ):
        assert r.value[0] is r


def test_a_function_using_a_by_value_class_is_rebuilt():
    """Sharing it would skip the reset of that class's attributes a reload does."""
    ns: dict = {"__name__": "__main__"}
    exec("class Counter:\n    n = 0\ndef bump():\n    Counter.n += 1\n    return Counter.n\n", ns)
    data = ferropickle.dumps(ns["bump"])
    assert [ferropickle.loads(data)(), ferropickle.loads(data)()] == [1, 1]
    assert [pickle.loads(data)(), pickle.loads(data)()] == [1, 1]
    ferropickle.cache_clear()
