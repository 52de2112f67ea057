"""The by-value caches and their documented semantics.

`dumps` pickles a by-value function once and reuses those bytes while the very same object is
alive, so its globals are a snapshot taken the first time it is pickled; `configure(cache=False)`
or `cache_clear()` gives fresh bytes. `loads` may reuse a function it already rebuilt.
"""

from __future__ import annotations

import pickle

import pytest

import ferropickle

SCRIPT = """
TABLE = {1: "old"}

def look(k):
    return TABLE[k]

def make_counter():
    count = 0
    def bump():
        nonlocal count
        count += 1
        return count
    return bump
"""


@pytest.fixture
def script():
    ns: dict = {"__name__": "__main__"}
    exec(SCRIPT, ns)
    return ns


def test_globals_are_a_snapshot_while_the_function_lives(script):
    f = script["look"]
    assert pickle.loads(ferropickle.dumps(f))(1) == "old"
    script["TABLE"][1] = "new"
    assert pickle.loads(ferropickle.dumps(f))(1) == "old"


def test_cache_hits_are_counted(script):
    f = script["look"]
    ferropickle.dumps(f)
    hits = ferropickle.cache_info()["hits"]
    ferropickle.dumps([f, f])  # one message: one lookup (the second is a memo fetch)
    ferropickle.dumps(f)
    assert ferropickle.cache_info()["hits"] >= hits + 2


def test_cache_clear_takes_a_new_snapshot(script):
    f = script["look"]
    ferropickle.dumps(f)
    script["TABLE"][1] = "new"
    ferropickle.cache_clear()
    assert pickle.loads(ferropickle.dumps(f))(1) == "new"


def test_cache_can_be_turned_off(script):
    ferropickle.configure(cache=False)
    assert ferropickle.cache_info()["enabled"] is False
    f = script["look"]
    assert pickle.loads(ferropickle.dumps(f))(1) == "old"
    script["TABLE"][1] = "new"
    assert pickle.loads(ferropickle.dumps(f))(1) == "new"


def test_tiny_byte_budget_still_pickles_correctly(script):
    ferropickle.configure(cache_max_bytes=1)
    funcs = []
    for i in range(20):
        ns: dict = {"__name__": "__main__"}
        exec(f"def f():\n    return {i}\n", ns)
        funcs.append(ns["f"])
    for _ in range(2):
        assert [pickle.loads(ferropickle.dumps(f))() for f in funcs] == list(range(20))
    info = ferropickle.cache_info()
    assert info["bytes"] <= info["max_bytes"] == 1


def test_loads_cache_off_rebuilds_each_time(script):
    ferropickle.configure(loads_cache=False)
    data = ferropickle.dumps(script["make_counter"]())
    a, b = ferropickle.loads(data), ferropickle.loads(data)
    assert a is not b
    assert [a(), b()] == [1, 1]


def test_loads_cache_reuses_stateless_functions(script):
    """What the loads cache is for: the same function in many messages is rebuilt once."""
    ferropickle.configure(loads_cache=True)
    f = script["look"]
    a = ferropickle.loads(ferropickle.dumps(f))
    b = ferropickle.loads(ferropickle.dumps({"again": f}))["again"]
    assert a(1) == b(1) == "old"
