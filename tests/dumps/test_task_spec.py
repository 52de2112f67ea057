"""Dask task nodes: the messages ferropickle exists for.

A scheduler sends each task as a `dask._task_spec.Task`, typically
`Task(key, partial(process, Path(...)))`, where `process` is often defined in the user's script.
These must round-trip three ways, run correctly when rebuilt, carry one copy of the function per
message, and load with stock `pickle` on a worker that has never imported ferropickle.
"""

from __future__ import annotations

import functools
import json
import pathlib
import pickle
import subprocess
import sys

import pytest
from oracle import roundtrip

import ferropickle

ts = pytest.importorskip("dask._task_spec")


def process(path, scale=1, *, suffix=""):
    return f"{path.name}:{scale}{suffix}"


def combine(a, bs, key=abs):
    return key(a) + sum(bs)


def runs_like(expected, actual, values=None):
    """A `check`: same key, same dependencies, and running it gives the same result."""
    assert type(actual) is type(expected)
    assert actual.key == expected.key
    assert actual.dependencies == expected.dependencies
    assert actual(values or {}) == expected(values or {})


def test_task_of_partial_of_path(protocol):
    task = ts.Task("process-0", functools.partial(process, pathlib.Path("/data/part-0.parquet")))
    for r in roundtrip(task, protocol=protocol, check=runs_like):
        assert r() == "part-0.parquet:1"
        assert r.func.func is process
        assert type(r.func.args[0]) is pathlib.PosixPath


def test_task_equality_after_roundtrip(protocol):
    task = ts.Task("k", functools.partial(process, pathlib.Path("/x"), 2), suffix="!")
    roundtrip(task, protocol=protocol)


def test_task_with_dependencies_and_containers(protocol):
    task = ts.Task(
        "combine",
        combine,
        ts.TaskRef("a"),
        ts.List(ts.TaskRef("b"), 1, 2),
        key=abs,
    )
    check = functools.partial(runs_like, values={"a": -7, "b": 3})
    for r in roundtrip(task, protocol=protocol, check=check):
        assert r.dependencies == {"a", "b"}


def test_task_kwargs_and_nested_nodes(protocol):
    task = ts.Task(
        "k",
        dict,
        x=ts.DataNode("data", [1, 2, 3]),
        y=ts.Dict({"p": ts.TaskRef("dep")}),
        z=ts.Task("inner", process, pathlib.Path("/in"), 3),
    )
    roundtrip(task, protocol=protocol, check=functools.partial(runs_like, values={"dep": 9}))


def test_alias_datanode_taskref(protocol):
    nodes = [ts.Alias("a", "b"), ts.DataNode("d", {"x": 1}), ts.TaskRef("r")]
    roundtrip(nodes, protocol=protocol)


def test_many_tasks_share_one_function_and_path_class(protocol):
    tasks = [
        ts.Task(f"process-{i}", functools.partial(process, pathlib.Path(f"/data/part-{i}.parquet")))
        for i in range(200)
    ]
    data = ferropickle.dumps(tasks, protocol)
    assert data.count(b"process") < 250  # the function's name is written once, keys aside
    for r in roundtrip(tasks, protocol=protocol, check=lambda a, b: None):
        assert len({id(t.func.func) for t in r}) == 1
        assert [t() for t in r[:3]] == [f"part-{i}.parquet:1" for i in range(3)]


def test_same_task_twice_is_one_object(protocol):
    task = ts.Task("k", process, pathlib.Path("/p"))
    for r in roundtrip({"a": task, "b": [task]}, protocol=protocol):
        assert r["a"] is r["b"][0]


SCRIPT = """
import math

WEIGHTS = {i: math.sqrt(i) for i in range(2000)}


def process(path, scale=1):
    return round(WEIGHTS[len(path.name)] * scale, 6)
"""


def script_tasks(n):
    ns = {"__name__": "__main__"}
    exec(compile(SCRIPT, "<user script>", "exec"), ns)
    return [
        ts.Task(f"process-{i}", functools.partial(ns["process"], pathlib.Path(f"/d/f{i}.csv")), 2)
        for i in range(n)
    ]


def test_script_defined_task_function(protocol):
    tasks = script_tasks(3)
    for r in roundtrip(tasks, protocol=protocol, check=lambda a, b: None):
        assert [t() for t in r] == [t() for t in tasks]
        assert r[0].func.func is r[2].func.func


def test_script_defined_tasks_run_on_a_worker_without_ferropickle(protocol):
    """The scheduler (ferropickle) -> worker (stock pickle) path, in a fresh process."""
    tasks = script_tasks(5)
    expected = [t() for t in tasks]
    # One message per task, as the scheduler sends them, after the cache is warm.
    messages = [ferropickle.dumps(t, protocol) for t in tasks]
    messages.append(ferropickle.dumps(tasks, protocol))
    child = """
import json, pickle, sys

messages = pickle.loads(sys.stdin.buffer.read())
results = [pickle.loads(m)() for m in messages[:-1]]
batch = pickle.loads(messages[-1])
assert len({id(t.func.func) for t in batch}) == 1
assert "ferropickle" not in sys.modules
print(json.dumps({"results": results, "batch": [t() for t in batch]}))
"""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", child],
        input=pickle.dumps(messages, 5),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == {"results": expected, "batch": expected}
