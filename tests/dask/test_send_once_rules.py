"""Send-once, one rule at a time, on graphs built by hand (no cluster).

`hoist` rewrites a materialized graph the way the scheduler's copy is rewritten. Each test
builds the graph stock Dask would submit, hoists it, and then runs every task the way a worker
without ferropickle does: the task is pickled as the scheduler sends it, loaded with the
standard library's ``pickle.loads``, and called with its dependencies' values. The results
must be those of the graph as submitted, and each rule says what is hoisted and what is not.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import operator
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import dask
import distributed.scheduler
import numpy as np
import pytest
from dask._task_spec import DataNode, Task, TaskRef

import ferropickle
import ferropickle.dask as ferro_dask
from ferropickle.dask import _hoist, _send_once
from ferropickle.dask._settings import Settings
from ferropickle.dask._state import STATE

THRESHOLD = 64 * 1024
BIG = 1 << 17  # float64 items: a 1 MiB array
TOKEN = "0123456789abcdef" * 2  # as dask names keys: prefix-token


def scale(a: np.ndarray, i: int) -> float:
    return float(a.sum()) + i


def scale_kw(i: int, *, a: np.ndarray) -> float:
    return float(a.sum()) + i


def bump(a: np.ndarray, i: int) -> float:
    """Mutates its argument: a second task must still see the original."""
    a[0] += 1
    return float(a[0])


def same(a: Any, b: Any) -> bool:
    return a is b


def contains(outer: dict[str, Any], inner: list[int]) -> bool:
    return outer["inner"] is inner


async def scale_async(a: np.ndarray, i: int) -> float:
    return float(a.sum()) + i


def script(source: str, name: str) -> Callable[..., Any]:
    """``name`` defined as a user's script defines it (in ``__main__``: pickled by value)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace[name]


BIG_GLOBAL = """
TABLE = {i: str(i) * 8 for i in range(20000)}

def lookup(i):
    TABLE[i] = "changed"       # a task that mutates its global
    return len(TABLE) + len(TABLE[i + 1])
"""


def array(value: float = 1.0) -> np.ndarray:
    return np.full(BIG, value)


def stock_worker(dsk: dict[Any, Any]) -> dict[Any, Any]:
    """Runs ``dsk`` as stock workers do: each node crosses a pickle (written as the scheduler
    writes it, read by the standard library), then runs with its dependencies' values."""
    data: dict[Any, Any] = {}
    pending = dict(dsk)
    while pending:
        ready = [key for key, node in pending.items() if node.dependencies <= data.keys()]
        assert ready, f"a cycle or a missing dependency among {list(pending)}"
        for key in ready:
            node = pickle.loads(ferropickle.dumps(pending.pop(key)))
            data[key] = node({dep: data[dep] for dep in node.dependencies})
    return data


def hoisted_keys(dsk: dict[Any, Any]) -> list[Any]:
    return [key for key in dsk if _hoist.is_send_once_key(key)]


def hoist(dsk: dict[Any, Any]) -> _hoist.Hoisted:
    return _hoist.hoist(dsk, THRESHOLD, STATE.seen)


@pytest.fixture(autouse=True)
def forget_digests() -> Iterator[None]:
    """Each test starts with nothing seen: what one test hoisted can't change another."""
    STATE.seen.clear()
    yield
    STATE.seen.clear()


def check(dsk: dict[Any, Any], keys: list[Any]) -> dict[Any, Any]:
    """Hoists ``dsk`` and checks its tasks compute what they computed before."""
    expected = stock_worker(dict(dsk))
    hoist(dsk)
    got = stock_worker(dsk)
    assert [got[k] for k in keys] == [expected[k] for k in keys]
    return got


# --------------------------------------------------------------------------------------------
# What is hoisted
# --------------------------------------------------------------------------------------------


def test_a_partials_argument_shared_by_tasks_is_one_datanode_of_its_pickle():
    a = array(2.0)
    func = functools.partial(scale, a)
    dsk = {("f", i): Task(("f", i), func, i) for i in range(3)}
    check(dsk, [("f", i) for i in range(3)])
    [key] = hoisted_keys(dsk)
    node = dsk[key]
    assert isinstance(node, DataNode)
    # The stock pickle reads the bytes back; the key names their SHA-256 digest.
    assert np.array_equal(pickle.loads(node.value), a)
    assert key == (f"send-once-{hashlib.sha256(node.value).hexdigest()[:32]}", 0)
    for i in range(3):
        assert dsk[("f", i)].dependencies == {key}
        # The task's own message no longer carries the array.
        assert len(ferropickle.dumps(dsk[("f", i)])) < 2048


def test_a_tasks_argument_and_keyword_argument_shared_by_tasks_are_hoisted():
    a, b = array(1.0), array(3.0)
    dsk = {("f", i): Task(("f", i), scale, a, i) for i in range(2)}
    dsk.update({("k", i): Task(("k", i), scale_kw, i, a=b) for i in range(2)})
    check(dsk, [*dsk])
    assert len(hoisted_keys(dsk)) == 2
    assert dsk[("k", 0)].dependencies == dsk[("k", 1)].dependencies != dsk[("f", 0)].dependencies


def test_a_partials_keyword_shared_by_tasks_is_hoisted():
    func = functools.partial(scale_kw, a=array(5.0))
    dsk = {("k", i): Task(("k", i), func, i) for i in range(2)}
    check(dsk, [*dsk])
    assert len(hoisted_keys(dsk)) == 1


def test_a_by_value_function_with_a_large_global_is_hoisted_whole():
    lookup = script(BIG_GLOBAL, "lookup")
    dsk = {("g", i): Task(("g", i), lookup, i) for i in range(3)}
    got = check(dsk, [*dsk])
    [key] = hoisted_keys(dsk)
    assert all(dsk[("g", i)].dependencies == {key} for i in range(3))
    # Each task mutated its own copy of the global: all saw 20,000 entries and "i + 1" intact.
    assert [got[("g", i)] for i in range(3)] == [20000 + len(str(i + 1)) * 8 for i in range(3)]
    # The scheduler's copy was not touched either.
    assert lookup.__globals__["TABLE"][0] == "0" * 8


@pytest.mark.parametrize(
    "source",
    [
        "def make():\n    big = list(range(30000))\n"
        "    def inner(i):\n        return big[i]\n    return inner\nf = make()\n",
        "def f(i, big=list(range(30000))):\n    return big[i]\n",
    ],
    ids=["closure", "default"],
)
def test_a_by_value_function_with_a_large_closure_or_default_is_hoisted(source):
    f = script(source, "f")
    dsk = {("c", i): Task(("c", i), f, i) for i in range(2)}
    check(dsk, [*dsk])
    assert len(hoisted_keys(dsk)) == 1


def test_a_partials_by_value_function_is_hoisted():
    lookup = script(BIG_GLOBAL, "lookup")
    dsk = {("g", i): Task(("g", i), functools.partial(lookup), i) for i in range(2)}
    check(dsk, [*dsk])
    assert len(hoisted_keys(dsk)) == 1


def test_a_part_inside_a_fused_subgraph_is_hoisted_and_read_as_one_of_its_inputs():
    func = functools.partial(scale_kw, a=array(6.0))
    dsk = {}
    for i in range(3):
        first = Task(("first", i), operator.add, i, 1)
        second = Task(("second", i), func, TaskRef(("first", i)))
        dsk[("second", i)] = Task.fuse(first, second)
    got = check(dsk, [*dsk])
    assert [got[("second", i)] for i in range(3)] == [BIG * 6.0 + i + 1 for i in range(3)]
    [key] = hoisted_keys(dsk)
    assert all(dsk[("second", i)].dependencies == {key} for i in range(3))


def test_fused_tasks_alike_but_for_one_that_holds_the_part_twice_are_decided_apart():
    """The tasks of a fused map share one decision only where they hold the same objects at
    the same places: the one whose second inner task holds the part too keeps it (one object
    serves both places), the others read it by its key."""
    a = array(3.0)
    dsk = {}
    for i in range(3):
        first = Task(("first", i), scale, a, i)
        second = Task(("second", i), same, a if i == 0 else 0.0, TaskRef(("first", i)))
        dsk[("second", i)] = Task.fuse(first, second)
    check(dsk, [*dsk])
    [key] = hoisted_keys(dsk)
    assert dsk[("second", 0)].dependencies == set()
    assert dsk[("second", 1)].dependencies == dsk[("second", 2)].dependencies == {key}


def test_a_fused_subgraph_with_a_node_that_is_not_examined_is_left_as_sent():
    """A fused subgraph's inner ``DataNode`` was not examined, so an object it shares with a
    sibling task was hoisted from that task alone: the task got a copy where it had one
    object twice."""
    big = array(2.0)
    dsk = {}
    for i in range(2):
        data = DataNode(("data", i), big)
        use = Task(("use", i), operator.is_, TaskRef(("data", i)), big)
        dsk[("use", i)] = Task.fuse(data, use)
    got = check(dsk, [*dsk])
    assert [got[("use", i)] for i in range(2)] == [True, True]
    assert hoisted_keys(dsk) == []


def test_a_part_inside_nested_fused_subgraphs_is_read_as_an_input_at_each_level():
    func = functools.partial(scale_kw, a=array(6.0))
    dsk = {}
    for i in range(3):
        first = Task(("first", i), operator.add, i, 1)
        second = Task.fuse(first, Task(("second", i), func, TaskRef(("first", i))))
        dsk[("third", i)] = Task.fuse(
            second, Task(("third", i), operator.neg, TaskRef(("second", i)))
        )
    got = check(dsk, [*dsk])
    assert [got[("third", i)] for i in range(3)] == [-(BIG * 6.0 + i + 1) for i in range(3)]
    [key] = hoisted_keys(dsk)
    assert all(dsk[("third", i)].dependencies == {key} for i in range(3))


# --------------------------------------------------------------------------------------------
# The meaning of each task is unchanged
# --------------------------------------------------------------------------------------------


def test_each_task_gets_its_own_copy():
    a = array(0.0)
    dsk = {("b", i): Task(("b", i), functools.partial(bump, a), i) for i in range(4)}
    got = check(dsk, [*dsk])
    assert [got[("b", i)] for i in range(4)] == [1.0] * 4
    assert a[0] == 0.0


def test_a_part_no_task_reads_by_its_key_keeps_no_pickle():
    """The pickle of a part every task kept (here: twice in each task) stayed in what
    send-once remembers across graphs, held until a sweep that might never run."""
    a = array()
    dsk = {f"twice-{i}": Task(f"twice-{i}", same, a, a) for i in range(2)}
    check(dsk, [*dsk])
    assert hoisted_keys(dsk) == []
    assert STATE.seen.holds() == 0


def test_the_same_object_twice_in_one_task_is_not_hoisted_there():
    a = array()
    dsk = {
        "twice": Task("twice", same, a, a),
        "once-0": Task("once-0", scale, a, 0),
        "once-1": Task("once-1", scale, a, 1),
    }
    got = check(dsk, [*dsk])
    assert got["twice"] is True
    [key] = hoisted_keys(dsk)
    assert dsk["twice"].dependencies == frozenset()
    assert dsk["once-0"].dependencies == dsk["once-1"].dependencies == {key}


def test_a_part_sharing_an_object_with_the_rest_of_its_task_is_not_hoisted():
    inner = list(range(20000))
    outer = {"inner": inner, "pad": np.zeros(BIG)}
    dsk = {("o", i): Task(("o", i), contains, outer, inner) for i in range(2)}
    got = check(dsk, [*dsk])
    assert got[("o", 0)] is got[("o", 1)] is True
    # `inner` is large and shared too, but it is inside `outer`: neither is hoisted.
    assert hoisted_keys(dsk) == []


def test_a_bound_builtin_method_of_a_hoisted_part_keeps_its_object():
    sink: list[int] = list(range(100000, 140000))
    dsk = {("m", i): Task(("m", i), same, sink, sink.append) for i in range(2)}
    hoist(dsk)
    # ``sink.append`` is pickled with ``sink``: hoisting ``sink`` alone would split them.
    assert hoisted_keys(dsk) == []


def test_two_by_value_functions_of_one_module_in_a_task_keep_sharing_their_globals():
    source = BIG_GLOBAL + "\ndef size():\n    return len(TABLE)\n"
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    lookup, size = namespace["lookup"], namespace["size"]
    dsk = {("t", i): Task(("t", i), same, lookup, size) for i in range(2)}
    check(dsk, [*dsk])
    assert hoisted_keys(dsk) == []


def test_a_coroutine_tasks_function_stays_but_its_arguments_may_go():
    a = array()
    dsk = {("a", i): Task(("a", i), functools.partial(scale_async, a), i) for i in range(2)}
    hoist(dsk)
    assert hoisted_keys(dsk) == []
    dsk = {("a", i): Task(("a", i), scale_async, a, i) for i in range(2)}
    hoist(dsk)
    assert len(hoisted_keys(dsk)) == 1
    assert dsk[("a", 0)].func is scale_async
    got = stock_worker(dsk)

    async def both() -> list[float]:
        return [await got[("a", 0)], await got[("a", 1)]]

    assert asyncio.run(both()) == [BIG, BIG + 1]


class TaggedPartial(functools.partial):
    pass


@pytest.mark.parametrize("kind", ["subclass", "attributes", "graph node"])
def test_a_partial_that_a_task_cannot_rebuild_exactly_is_left_whole(kind):
    a = array()
    if kind == "subclass":
        func: Any = TaggedPartial(scale, a)
    elif kind == "attributes":
        func = functools.partial(scale, a)
        func.note = "kept"
    else:
        func = functools.partial(scale, a, TaskRef("x"))
    dsk = {("p", i): Task(("p", i), func) for i in range(2)}
    hoist(dsk)
    assert hoisted_keys(dsk) == []
    assert dsk[("p", 0)].func is func


# --------------------------------------------------------------------------------------------
# What is worth it
# --------------------------------------------------------------------------------------------


def test_a_part_below_the_threshold_is_not_hoisted():
    small = np.ones(THRESHOLD // 8 - 64)
    dsk = {("s", i): Task(("s", i), scale, small, i) for i in range(3)}
    check(dsk, [*dsk])
    assert hoisted_keys(dsk) == []


def test_a_part_of_one_task_is_hoisted_when_a_later_graph_sends_the_same_content():
    first = {"one": Task("one", scale, array(7.0), 1)}
    hoist(first)
    assert hoisted_keys(first) == []  # nothing to share yet
    second = {"two": Task("two", scale, array(7.0), 2)}  # a new copy, as a submit loop sends
    check(second, ["two"])
    third = {"three": Task("three", scale, array(7.0), 3)}
    hoist(third)
    assert hoisted_keys(second) == hoisted_keys(third) != []
    other = {"four": Task("four", scale, array(8.0), 4)}
    hoist(other)
    assert hoisted_keys(other) == []  # other content: not seen before


def test_contents_that_differ_only_where_the_fingerprint_does_not_look_get_their_own_keys():
    a = array(1.0)
    b = a.copy()
    # Between the fingerprint's samples of a 1 MiB buffer (its edges and one byte every 4 KiB).
    b[(8 * 65536 + 1024) // 8] += 1
    first = {("a", i): Task(("a", i), scale, a, i) for i in range(2)}
    second = {("b", i): Task(("b", i), scale, b, i) for i in range(2)}
    hoist(first)
    got = check(second, [*second])
    assert hoisted_keys(first) != hoisted_keys(second)
    assert got[("b", 0)] == scale(b, 0) == scale(a, 0) + 1


def test_a_task_the_scheduler_has_already_is_left_as_it_is():
    a = array()
    dsk = {("f", i): Task(("f", i), scale, a, i) for i in range(3)}
    before = dict(dsk)
    hoist_existing = _hoist.hoist(dsk, THRESHOLD, STATE.seen, lambda key: key == ("f", 0))
    assert dsk[("f", 0)] is before[("f", 0)]
    assert dsk[("f", 1)] is not before[("f", 1)]
    assert [n for _key, _size, n, _path in hoist_existing.parts] == [2]


def test_content_with_several_buffers_is_recognised_only_when_every_buffer_matches():
    def arrays(last: float) -> dict[str, np.ndarray]:
        return {"x": np.arange(BIG // 2, dtype=float), "y": np.full(BIG // 2, last)}

    shared = arrays(1.0)
    first = {("a", i): Task(("a", i), same, shared, i) for i in range(2)}
    hoist(first)
    again = arrays(1.0)
    second = {("b", i): Task(("b", i), same, again, i) for i in range(2)}
    hoist(second)
    assert hoisted_keys(second) == hoisted_keys(first) != []
    # The same DataNode bytes object: recognised without writing the pickle again.
    assert second[hoisted_keys(second)[0]].value is first[hoisted_keys(first)[0]].value
    other = arrays(2.0)
    third = {("c", i): Task(("c", i), same, other, i) for i in range(2)}
    hoist(third)
    assert hoisted_keys(third) != hoisted_keys(first)


def test_the_same_content_in_two_objects_gets_one_key():
    a, b = array(4.0), array(4.0)
    dsk = {("x", i): Task(("x", i), scale, a, i) for i in range(2)}
    dsk.update({("y", i): Task(("y", i), scale, b, i) for i in range(2)})
    result = hoist(dsk)
    assert len(hoisted_keys(dsk)) == 1
    # Two objects, each shared by two tasks: one key that four tasks depend on.
    assert [n for _key, _size, n, _path in result.parts] == [4]


def test_an_unpicklable_part_is_left_for_dask_to_report():
    class Local:  # a local class: neither ferropickle nor pickle can write it by reference
        def __init__(self) -> None:
            self.lock = __import__("threading").Lock()
            self.pad = np.zeros(BIG)

    part = Local()
    dsk = {("u", i): Task(("u", i), same, part, i) for i in range(2)}
    hoist(dsk)
    assert hoisted_keys(dsk) == []


def test_tasks_that_are_not_plain_tasks_are_left_alone():
    a = array()
    dsk: dict[Any, Any] = {("d", i): DataNode(("d", i), a) for i in range(2)}
    hoist(dsk)
    assert hoisted_keys(dsk) == []


# --------------------------------------------------------------------------------------------
# What it says
# --------------------------------------------------------------------------------------------


def test_the_summary_names_the_largest_part_and_counts_per_prefix():
    lookup = script(BIG_GLOBAL, "lookup")
    a = array()
    dsk = {(f"lookup-{TOKEN}", i): Task((f"lookup-{TOKEN}", i), lookup, i) for i in range(3)}
    dsk.update(
        {
            (f"scale-{TOKEN}", i): Task((f"scale-{TOKEN}", i), functools.partial(scale, a), i)
            for i in range(2)
        }
    )
    result = hoist(dsk)
    assert [(n, path) for _key, _size, n, path in result.parts] == [
        (2, "Task.func -> partial.args[0] -> <ndarray 1.00 MiB>"),
        (3, f"Task.func -> <function lookup {dask.utils.format_bytes(result.parts[1][1])}>"),
    ]
    size_a, size_lookup = result.parts[0][1], result.parts[1][1]
    assert result.per_prefix == {
        "lookup": _hoist.SentOnceRow(3, 3, 3 * size_lookup, size_lookup),
        "scale": _hoist.SentOnceRow(2, 2, 2 * size_a, size_a),
    }
    assert result.total == size_a + size_lookup


# --------------------------------------------------------------------------------------------
# Installing: the setting, the patch, the off switch
# --------------------------------------------------------------------------------------------


def test_installing_the_plugin_installs_send_once_with_the_configured_threshold():
    stock_materialize = distributed.scheduler._materialize_graph
    stock_priorities = distributed.scheduler.Scheduler._set_priorities
    ferro_dask.uninstall()
    try:
        with dask.config.set({"ferropickle.send-once.threshold": "1 MiB"}):
            assert ferro_dask.install()
        assert STATE.send_once == 1 << 20
        assert distributed.scheduler._materialize_graph is _send_once._materialize_graph
        assert distributed.scheduler.Scheduler._set_priorities is _send_once._set_priorities
    finally:
        ferro_dask.uninstall()
    assert STATE.send_once is None
    assert distributed.scheduler._materialize_graph is stock_materialize
    assert distributed.scheduler.Scheduler._set_priorities is stock_priorities


@pytest.mark.parametrize("off", [False, "false", 0])
def test_send_once_threshold_false_leaves_graphs_alone(off):
    stock_materialize = distributed.scheduler._materialize_graph
    ferro_dask.uninstall()
    try:
        with dask.config.set({"ferropickle.send-once.threshold": off}):
            assert ferro_dask.install()
        assert STATE.send_once is None
        assert distributed.scheduler._materialize_graph is stock_materialize
    finally:
        ferro_dask.uninstall()


def test_the_default_threshold_is_64_kib_and_the_environment_sets_it(monkeypatch):
    assert dask.config.get("ferropickle.send-once.threshold") == "64 KiB"
    monkeypatch.setenv("DASK_FERROPICKLE__SEND_ONCE__THRESHOLD", "false")
    collected = dask.config.collect(paths=[], env=None)
    from_environment = dask.config.get("ferropickle.send-once.threshold", config=collected)
    with dask.config.set({"ferropickle.send-once.threshold": from_environment}):
        assert Settings.from_config().send_once_threshold is None


def test_an_invalid_threshold_is_refused_before_anything_is_patched():
    stock_materialize = distributed.scheduler._materialize_graph
    ferro_dask.uninstall()
    with (
        dask.config.set({"ferropickle.send-once.threshold": "lots"}),
        pytest.raises(ValueError),
    ):
        ferro_dask.install()
    assert not ferro_dask.installed()
    assert distributed.scheduler._materialize_graph is stock_materialize


def test_the_wrapped_materialization_rewrites_what_distributed_materializes(caplog):
    from distributed.client import _MapExpr

    a = array()
    expr = _MapExpr(
        functools.partial(scale, a), [range(3)], key="scale", pure=False, annotations={}, kwargs={}
    )
    assert _send_once.install(THRESHOLD)
    try:
        with caplog.at_level(logging.INFO, logger="ferropickle.dask"):
            dsk, _annotations = distributed.scheduler._materialize_graph(expr=expr, validate=False)
            # The same graph again: nothing new is hoisted, so nothing more at INFO.
            distributed.scheduler._materialize_graph(expr=expr, validate=False)
    finally:
        _send_once.uninstall()
    [record] = [r for r in caplog.records if r.levelno == logging.INFO]
    assert record.getMessage().startswith(
        "ferropickle send-once: 1 part(s), 1.00 MiB in all, sent once per worker instead of "
        "with each of 3 task(s) of scale; largest Task.func -> partial.args[0] -> "
        "<ndarray 1.00 MiB>, shared by 3 task(s)"
    )
    assert len(hoisted_keys(dsk)) == 1
    assert sorted(stock_worker(dsk)[k] for k in dsk if not _hoist.is_send_once_key(k)) == [
        scale(a, i) for i in range(3)
    ]
    [prefix] = {dask.utils.key_split(k) for k in dsk if not _hoist.is_send_once_key(k)}
    # The graph was materialized twice.
    assert ferro_dask.local_stats()["send_once"]["task_prefixes"][prefix]["tasks"] == 6


def test_prefixes_beyond_the_limit_share_one_row(monkeypatch):
    from distributed.client import _MapExpr

    monkeypatch.setattr(STATE.accounting, "_max_prefixes", 1)
    func = functools.partial(scale, array())
    assert _send_once.install(THRESHOLD)
    try:
        for name in ("first", "second", "third"):
            expr = _MapExpr(func, [range(2)], key=name, pure=False, annotations={}, kwargs={})
            distributed.scheduler._materialize_graph(expr=expr, validate=False)
    finally:
        _send_once.uninstall()
    rows = ferro_dask.local_stats()["send_once"]["task_prefixes"]
    assert {k: v["tasks"] for k, v in rows.items()} == {"first": 2, "(other)": 4}


def test_stats_report_and_metrics_show_the_same_send_once_counts():
    prometheus_client = pytest.importorskip("prometheus_client")
    from distributed.client import _MapExpr

    a = array()
    with dask.config.set({"ferropickle.send-once.threshold": THRESHOLD}):
        assert ferro_dask.install()
    try:
        for key in ("scale", "scale"):  # the second graph's content is the first one's
            expr = _MapExpr(
                functools.partial(scale, a), [range(3)], key=key, pure=False, annotations={},
                kwargs={},
            )  # fmt: skip
            distributed.scheduler._materialize_graph(expr=expr, validate=False)
        stats = ferro_dask.local_stats()["send_once"]
        text = ferro_dask.report()
        families = {m.name: m for m in prometheus_client.REGISTRY.collect()}
    finally:
        ferro_dask.uninstall()
    size = len(ferropickle.dumps(a, 5))
    assert stats["threshold"] == THRESHOLD
    assert stats["task_prefixes"] == {
        # Sent once: the second graph finds the key the first one added.
        "scale": {"tasks": 6, "parts": 6, "bytes_not_sent_per_task": 6 * size,
                  "bytes_sent_once": size},
    }  # fmt: skip
    row = next(line for line in text.splitlines() if line.startswith("scale "))
    assert row.split()[1:3] == ["6", "6"]
    assert dask.utils.format_bytes(6 * size) in row
    assert row.endswith(dask.utils.format_bytes(size))
    metrics = {
        name: {s.labels["task_prefix_name"]: s.value for s in families[name].samples}
        for name in families
        if name.startswith("dask_ferropickle_send_once_") and not name.endswith("threshold_bytes")
    }
    assert metrics == {
        "dask_ferropickle_send_once_tasks": {"scale": 6},
        "dask_ferropickle_send_once_parts": {"scale": 6},
        "dask_ferropickle_send_once_bytes_not_sent_per_task": {"scale": 6 * size},
        "dask_ferropickle_send_once_bytes_sent_once": {"scale": size},
    }
    [threshold] = families["dask_ferropickle_send_once_threshold_bytes"].samples
    assert threshold.value == THRESHOLD


def large_pickle_warnings(caplog: pytest.LogCaptureFixture, *messages: Any) -> list[str]:
    """The large-pickle warnings logged while the plugin pickles ``messages``."""
    with (
        dask.config.set({"ferropickle.large-pickle-warning": "64 KiB"}),
        caplog.at_level(logging.WARNING, logger="ferropickle.dask"),
    ):
        assert ferro_dask.install()
        try:
            for message in messages:
                ferro_dask.dumps(message)
        finally:
            ferro_dask.uninstall()
    return [r.getMessage() for r in caplog.records if "large-pickle-warning" in r.getMessage()]


def test_the_large_pickle_warning_of_a_hoisted_pickle_says_it_is_sent_once_per_worker(caplog):
    data = ferropickle.dumps(array())
    key = _hoist.digest_key(data)[1]
    # What the scheduler sends the first worker that needs it.
    [warned] = large_pickle_warnings(caplog, DataNode(key, data))
    assert "of task prefix 'send-once'" in warned
    assert "send-once pickled once: it is sent once per worker" in warned


def test_the_large_pickle_warning_says_why_a_part_held_by_one_task_stayed_in_it(caplog):
    dsk = {("one", 0): Task(("one", 0), scale, array(), 0)}
    hoist(dsk)
    [warned] = large_pickle_warnings(caplog, dsk[("one", 0)])
    assert "a Task message of task prefix 'one'" in warned
    assert _hoist.ONE_HOLDER in warned


def test_the_large_pickle_warning_says_why_a_part_sharing_objects_stayed_in_it(caplog):
    a = array()
    dsk = {("both", i): Task(("both", i), same, a, [a]) for i in range(2)}
    hoist(dsk)
    assert hoisted_keys(dsk) == []
    [warned] = large_pickle_warnings(caplog, dsk[("both", 0)])
    assert _hoist.SHARES_OBJECTS in warned


def test_the_large_pickle_warning_says_when_send_once_is_off(caplog):
    with dask.config.set({"ferropickle.send-once.threshold": False}):
        [warned] = large_pickle_warnings(caplog, Task("big", scale, array(), 1))
    assert "send-once is off (ferropickle.send-once.threshold: false)" in warned


def test_the_recorded_bytes_are_what_cloudpickle_would_have_carried():
    """What the tasks no longer carry is the part's pickle, as Dask's own pickling writes it."""
    a = array()
    dsk = {("f", i): Task(("f", i), scale, a, i) for i in range(2)}
    result = hoist(dsk)
    assert abs(result.total - len(cloudpickle.dumps(a, protocol=5))) < 256
