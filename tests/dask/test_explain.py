"""`explain`: the path to the biggest part of a pickle, named as ferropickle's error paths are."""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import pandas as pd
from dask._task_spec import Task
from plugin_support import script

import ferropickle.dask as ferro_dask
from ferropickle.dask import _explain

TABLE_SCRIPT = "TABLE = {i: str(i) for i in range(20_000)}\ndef lookup(i):\n    return TABLE[i]\n"


def test_explain_names_a_dataframe_argument_by_its_path():
    frame = pd.DataFrame({"x": np.arange(200_000)})
    process = script("def process(frame, path):\n    return len(frame)\n", "process")
    task = Task("process-0", functools.partial(process, frame, pathlib.Path("/a")))
    assert ferro_dask.explain(task).startswith("Task.func -> partial.args[0] -> <DataFrame 1.5"), (
        ferro_dask.explain(task)
    )


def test_explain_names_a_global_of_a_function_pickled_by_value():
    lookup = script(TABLE_SCRIPT, "lookup")
    text = ferro_dask.explain(Task("lookup-0", lookup, 3))
    assert text.startswith("Task.func -> lookup.__globals__['TABLE'] -> dict of 20,000 items ("), (
        text
    )


def test_explain_does_not_blame_globals_of_functions_pickled_by_reference():
    """``np.sum`` is written as a name: numpy's module globals are not in the stream."""
    text = ferro_dask.explain(Task("sum-0", np.sum, list(range(5000))))
    assert text.startswith("Task.args[0] -> list of 5,000 items ("), text


def test_explain_stops_where_no_part_dominates():
    parts = {name: "x" * 10_000 for name in "abcd"}
    assert ferro_dask.explain(parts).startswith("dict of 4 items (")


def test_explain_walks_closures_attributes_and_keywords():
    class Holder:
        def __init__(self, payload: bytes) -> None:
            self.small = 1
            self.payload = payload

    make = script(
        "def make(holder):\n    def inner():\n        return holder\n    return inner\n", "make"
    )
    inner = make(Holder(b"x" * 100_000))
    text = ferro_dask.explain(functools.partial(print, sep=inner))
    assert text.startswith(
        "partial.keywords['sep'] -> inner.__closure__['holder'] -> Holder.payload -> <bytes 97"
    ), text


def test_explain_describes_a_huge_container_as_a_whole():
    big = {f"key-{i}": i for i in range(_explain.MAX_ITEMS + 1)}
    assert ferro_dask.explain(big).startswith(f"dict of {len(big):,} items (")
