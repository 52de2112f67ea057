"""Containers: tuples, lists, dicts, sets, frozensets; batching, order, shared references, cycles.

`pickle` writes list/dict/set items in batches of 1000 (`APPENDS`/`SETITEMS`/`ADDITEMS`), so
sizes around multiples of 1000 are the interesting ones.
"""

from __future__ import annotations

import pickle
import pickletools
import sys

import pytest
from oracle import assert_like_pickle, roundtrip

import ferropickle

SIZES = [0, 1, 2, 999, 1000, 1001, 2500]


@pytest.mark.parametrize("n", range(6))
def test_tuples_of_each_length(protocol, n):
    roundtrip(tuple(range(n)), protocol=protocol)
    roundtrip(tuple(f"s{i}" for i in range(n)), protocol=protocol)


def test_nested_tuples(protocol):
    obj = ((), ((),), (((), ()), (1, (2, (3, (4, (5,)))))), ("a", ("b", ("c",))))
    roundtrip(obj, protocol=protocol)


def test_empty_containers(protocol):
    roundtrip([(), [], {}, set(), frozenset(), "", b"", bytearray()], protocol=protocol)


@pytest.mark.parametrize("n", SIZES)
def test_list_sizes(protocol, n):
    roundtrip(list(range(n)), protocol=protocol)
    roundtrip([f"item{i}" for i in range(n)], protocol=protocol)


@pytest.mark.parametrize("n", SIZES)
def test_dict_sizes(protocol, n):
    roundtrip({f"k{i}": i for i in range(n)}, protocol=protocol)
    roundtrip({i: [i] for i in range(n)}, protocol=protocol)


@pytest.mark.parametrize("n", SIZES)
def test_set_sizes(protocol, n):
    roundtrip(set(range(n)), protocol=protocol)
    roundtrip({f"e{i}" for i in range(n)}, protocol=protocol)


@pytest.mark.parametrize("n", SIZES)
def test_frozenset_sizes(protocol, n):
    roundtrip(frozenset(range(n)), protocol=protocol)


@pytest.mark.parametrize("n", [999, 1000, 1001, 2000, 2001, 2500])
def test_batches_have_at_most_1000_items(n):
    """Same batching as `pickle`: APPENDS/SETITEMS/ADDITEMS of at most 1000 items. Before
    CPython 3.15, a dict or set whose size is a multiple of 1000 gets one more, empty, batch
    (`_pickle.c` looped while a batch came out full); since 3.15 it doesn't, and a list's or
    dict's one item after full batches goes alone (APPEND/SETITEM)."""
    new = sys.version_info >= (3, 15)
    lone = new and n % 1000 == 1
    for obj, op, single, trailing in [
        (list(range(n)), "APPENDS", "APPEND", 0),
        (dict.fromkeys(range(n)), "SETITEMS", "SETITEM", not new and n % 1000 == 0),
        (set(range(n)), "ADDITEMS", None, not new and n % 1000 == 0),
    ]:
        data = ferropickle.dumps(obj)
        ops = [o.name for o, _, _ in pickletools.genops(data)]
        batches = ops.count(op)
        alone = single is not None and lone
        assert batches == -(-n // 1000) + trailing - alone, (type(obj), n)
        assert single is None or ops.count(single) == alone, (type(obj), n)
        assert data == pickle.dumps(obj, 5)


def test_dict_keeps_insertion_order(protocol):
    d = {}
    for k in [5, "z", 1, "a", (3,), -7, 2.5, None]:
        d[k] = str(k)
    del d[1]
    d[1] = "re-added"
    for r in roundtrip(d, protocol=protocol):
        assert list(r) == list(d)


def test_dict_with_mixed_keys(protocol):
    obj = {None: 1, True: 2, 0: 3, 1.5: 4, "s": 5, b"b": 6, (1, "t"): 7, frozenset({1}): 8}
    roundtrip(obj, protocol=protocol)


def test_same_list_twice_is_one_object(protocol):
    inner = [1, 2]
    for r in roundtrip((inner, inner), protocol=protocol):
        assert r[0] is r[1]


def test_distinct_equal_lists_stay_distinct(protocol):
    for r in roundtrip(([1, 2], [1, 2]), protocol=protocol):
        assert r[0] is not r[1]


def test_same_str_twice_is_shared(protocol):
    s = "x" * 50
    for r in roundtrip([s, s], protocol=protocol):
        assert r[0] is r[1]


def test_same_bytes_twice_is_shared(protocol):
    b = b"y" * 50
    for r in roundtrip([b, b, (b,)], protocol=protocol):
        assert r[0] is r[1] is r[2][0]


def test_same_tuple_and_frozenset_twice_are_shared(protocol):
    t = (1, "two", [3])
    f = frozenset({"a", "b"})
    for r in roundtrip({"t1": t, "t2": t, "f1": f, "f2": f, "l": [t, f]}, protocol=protocol):
        assert r["t1"] is r["t2"] is r["l"][0]
        assert r["f1"] is r["f2"] is r["l"][1]


class LookedUpLater:
    """Reduces to a tuple it looks up through `table` only when pickled."""

    def __init__(self, table, key):
        self.table, self.key = table, key

    def __reduce__(self):
        return (tuple, (self.table[self.key],))


def test_object_held_once_but_reached_again_by_python_code_is_shared(protocol):
    """A tuple held by one reference (its dict) was written without a memo entry, as if nothing
    could reach it again; a `__reduce__` looked it up through the dict and it was written a
    second time: more bytes than `pickle`, two tuples after loading where `pickle` gives one,
    and bytes that changed when something unrelated held one more reference to it."""
    table = {"t": tuple(["a", "b"])}
    table["l"] = LookedUpLater(table, "t")
    expected = pickle.dumps(table, protocol)
    assert ferropickle.dumps(table, protocol) == expected
    extra_reference = table["t"]
    assert ferropickle.dumps(table, protocol) == expected
    del extra_reference

    def check(_, loaded):
        assert loaded["t"] == ("a", "b")
        assert loaded["l"] is loaded["t"]

    roundtrip(table, protocol=protocol, check=check)


class ListOfLookedUpLater(LookedUpLater):
    """Reduces to `list([table[key]])`, which keeps the looked-up object's identity."""

    def __reduce__(self):
        return (list, ([self.table[self.key]],))


def test_str_bytes_and_frozenset_held_once_but_reached_again_are_shared(protocol):
    """The same for a str, a bytes and a frozenset, each held by one list."""
    items = ["".join(["s", "tr"]), b"".join([b"by", b"tes"]), frozenset({3, 5})]
    items += [ListOfLookedUpLater(items, i) for i in range(3)]
    assert ferropickle.dumps(items, protocol) == pickle.dumps(items, protocol)

    def check(_, loaded):
        assert loaded[:3] == ["str", b"bytes", frozenset({3, 5})]
        for i in range(3):
            assert loaded[3 + i][0] is loaded[i]

    roundtrip(items, protocol=protocol, check=check)


def test_shared_dict_and_set(protocol):
    d = {"k": 1}
    s = {1, 2}
    for r in roundtrip([d, s, {"again": d}, [s]], protocol=protocol):
        assert r[0] is r[2]["again"]
        assert r[1] is r[3][0]


def test_list_containing_itself(protocol):
    a = [1]
    a.append(a)
    for r in roundtrip(a, protocol=protocol):
        assert r[1] is r


def test_dict_containing_itself(protocol):
    d = {"x": 1}
    d["self"] = d
    for r in roundtrip(d, protocol=protocol):
        assert r["self"] is r


def test_tuple_list_tuple_cycle(protocol):
    t = ([],)
    t[0].append(t)
    for r in roundtrip(t, protocol=protocol):
        assert r[0][0] is r


def test_list_tuple_list_cycle(protocol):
    x = []
    x.append((x, "tail"))
    for r in roundtrip(x, protocol=protocol):
        assert r[0][0] is r


def test_long_tuple_in_a_cycle(protocol):
    holder = []
    t = (1, 2, 3, 4, holder, 6)
    holder.append(t)
    for r in roundtrip([t, holder], protocol=protocol):
        assert r[0][4] is r[1]
        assert r[1][0] is r[0]


def test_cycle_through_a_dict_value_and_key(protocol):
    d = {}
    k = (1, "key")
    d[k] = [d, k]
    for r in roundtrip(d, protocol=protocol):
        (rk,) = r
        assert r[rk][0] is r
        assert r[rk][1] is rk


class Node:
    def __init__(self, name):
        self.name = name
        self.me = self
        self.children = []


def test_object_whose_dict_references_itself(protocol):
    n = Node("root")
    n.children.append(Node("child"))
    n.children[0].parent = n
    for r in roundtrip(n, protocol=protocol):
        assert r.me is r
        assert r.children[0].parent is r


def test_set_of_frozensets(protocol):
    obj = {frozenset(), frozenset({1}), frozenset({"a", (1, 2)}), frozenset({frozenset({2})})}
    roundtrip(obj, protocol=protocol)


def test_frozenset_shared_inside_set_and_list(protocol):
    f = frozenset({"x" * 30})
    roundtrip([{f}, f, frozenset({f})], protocol=protocol)


def test_acyclic_data_is_written_like_pickle():
    """A plain acyclic structure is written exactly as `pickle` writes it, modulo memo entries
    nobody fetches (ferropickle skips memoizing objects referenced once)."""
    obj = {"a": [1, 2.5, "x", b"y", None, True], "t": (1, (2, 3)), "s": {1}, "f": frozenset({2})}
    assert_like_pickle(obj, 5)
    assert_like_pickle(obj, 4)


def test_big_structures(protocol):
    ints = list(range(100_000))
    roundtrip(ints, protocol=protocol)
    roundtrip({"ints": ints, "strs": [str(i) for i in range(20_000)]}, protocol=protocol)


def test_large_stream_spans_many_frames(protocol):
    obj = [f"value-{i}" * 3 for i in range(30_000)]
    data = ferropickle.dumps(obj, protocol)
    frames = [op.name for op, _, _ in pickletools.genops(data) if op.name == "FRAME"]
    assert len(frames) > 5
    roundtrip(obj, protocol=protocol)


def test_deeply_nested_but_within_limits(protocol):
    obj = []
    cur = obj
    for _ in range(400):
        nxt = []
        cur.append(nxt)
        cur = nxt
    # 400 deep, well under the recursion limit; compared with `==` (the structural comparison
    # itself recurses in Python).
    data = ferropickle.dumps(obj, protocol)
    assert pickle.loads(data) == obj
    assert ferropickle.loads(pickle.dumps(obj, protocol)) == obj
    assert ferropickle.loads(data) == obj


def test_mutating_dict_during_pickling_raises():
    class Sneaky:
        def __reduce__(self):
            target["new"] = 1
            return (int, ())

    target = {"a": Sneaky()}
    with pytest.raises((RuntimeError, ferropickle.PicklingError)):
        ferropickle.dumps(target)


def test_a_set_changed_while_pickled_raises_runtime_error_not_a_panic():
    """A set that changes size while it is written raises pickle's `RuntimeError`. PyO3's set
    iterator panicked instead (a `BaseException` that escapes `except Exception`)."""
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


def test_list_growing_during_pickling_is_safe():
    """A list that grows while it is written (from a `__reduce__`) must not crash."""
    lst = []

    class Grower:
        def __reduce__(self):
            if len(lst) < 5:
                lst.append(Grower())
            return (str, ("g",))

    lst.append(Grower())
    r = pickle.loads(ferropickle.dumps(lst))
    assert r == ["g"] * len(r)
    assert 1 <= len(r) <= 5


def test_list_shrinking_during_pickling_is_safe():
    lst = []

    class Shrinker:
        def __reduce__(self):
            lst.clear()
            return (str, ("s",))

    lst.extend([Shrinker(), Shrinker(), Shrinker()])
    r = pickle.loads(ferropickle.dumps(lst))
    assert r == ["s"]
