"""What is expensive to send: ``ferropickle.dask``'s per-task-prefix accounting, `explain`, the
large-pickle warning and `report`, in this process (the real-scheduler checks are in
``test_dask_config.py``)."""

from __future__ import annotations

import functools
import importlib
import logging
import pathlib
from collections.abc import Iterator
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
from dask._task_spec import DataNode, Task

import ferropickle.dask as ferro_dask

dpickle = importlib.import_module("distributed.protocol.pickle")


def script(source: str, name: str) -> Any:
    """A function defined as in a user's script (``__main__``), so it is pickled by value."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace[name]


TABLE_SCRIPT = "TABLE = {i: str(i) for i in range(20_000)}\ndef lookup(i):\n    return TABLE[i]\n"


@pytest.fixture(autouse=True)
def fresh_accounting() -> Iterator[None]:
    ferro_dask._reset_accounting()
    yield
    ferro_dask.uninstall()
    ferro_dask._reset_accounting()


@pytest.fixture
def installed() -> Iterator[None]:
    assert ferro_dask.install()
    yield
    ferro_dask.uninstall()


def rows() -> dict[str, list[int]]:
    return dict(ferro_dask._prefix_rows())


# --------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------


def test_every_dumps_is_counted_against_its_task_prefix(installed):
    blobs = [dpickle.dumps(Task(f"inc-{i:08x}", int, i)) for i in range(5)]
    blobs.append(dpickle.dumps(Task(("sum-aggregate-0a1b2c3d", 0), sum, [1, 2])))
    blobs.append(dpickle.dumps(DataNode("data-0a1b2c3d", 7)))
    blobs.append(dpickle.dumps({"op": "not a graph node"}))
    counted = rows()
    assert counted["inc"][:2] == [5, sum(len(b) for b in blobs[:5])]
    assert counted["inc"][3] == max(len(b) for b in blobs[:5])  # the largest single pickle
    assert counted["inc"][2] > 0  # nanoseconds
    assert counted["sum-aggregate"][:2] == [1, len(blobs[5])]
    assert counted["data"][:2] == [1, len(blobs[6])]
    assert counted["(dict)"][:2] == [1, len(blobs[7])]


def test_bytes_include_out_of_band_buffers(installed):
    array = np.arange(100_000, dtype=np.int64)
    frames: list[Any] = []
    data = dpickle.dumps(Task("array-0a1b2c3d", len, array), buffer_callback=frames.append)
    assert len(frames) == 1
    assert rows()["array"][1] == len(data) + array.nbytes


def test_fallbacks_are_counted_too(installed):
    class Refused:
        def __reduce_ex__(self, protocol: object) -> Any:
            if not hasattr(self, "tried"):
                self.tried = True
                raise TypeError("refused once")
            return (int, (3,))

    data = dpickle.dumps(Task("refused-0a1b2c3d", int, Refused()))
    assert rows()["refused"][:2] == [1, len(data)]


def test_prefixes_beyond_the_limit_share_the_other_row():
    with dask.config.set({"ferropickle.report.max-prefixes": 2}):
        assert ferro_dask.install()
    for name in ("a", "b", "c", "d"):
        dpickle.dumps(Task(f"{name}-0a1b2c3d", int, 1))
    assert {prefix: row[0] for prefix, row in rows().items()} == {"a": 1, "b": 1, "(other)": 2}


def test_stats_lists_the_top_prefixes_by_bytes(installed):
    for i in range(3):
        dpickle.dumps(Task(f"small-{i:08x}", int, i))
    dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 10_000))
    top = ferro_dask.stats()["task_prefixes"]
    assert list(top) == ["big", "small"]
    assert top["small"]["dumps"] == 3
    assert top["big"]["bytes"] > 10_000
    assert set(top["big"]) == {"dumps", "bytes", "seconds", "largest"}


def test_the_report_size_is_a_setting():
    with dask.config.set({"ferropickle.report.top": 1}):
        assert ferro_dask.install()
    dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 10_000))
    dpickle.dumps(Task("small-0a1b2c3d", int, 1))
    assert list(ferro_dask.stats()["task_prefixes"]) == ["big"]


# --------------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------------


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
    big = {f"key-{i}": i for i in range(ferro_dask._EXPLAIN_MAX_ITEMS + 1)}
    assert ferro_dask.explain(big).startswith(f"dict of {len(big):,} items (")


# --------------------------------------------------------------------------------------------
# The large-pickle warning
# --------------------------------------------------------------------------------------------


def large_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ferropickle.dask" and "large-pickle-warning" in r.getMessage()
    ]


def test_a_large_pickle_is_explained_once_per_function(caplog):
    lookup = script(TABLE_SCRIPT, "lookup")
    with dask.config.set({"ferropickle.large-pickle-warning": "64 KiB"}):
        assert ferro_dask.install()
    with caplog.at_level(logging.WARNING, logger="ferropickle.dask"):
        for i in range(3):
            # A fresh copy of the function per task, as a client.submit loop sends.
            copy = script(TABLE_SCRIPT, "lookup")
            dpickle.dumps(Task(f"lookup-{i:08x}", copy, i))
        dpickle.dumps(Task("lookup-ffffffff", lookup, 9))
        dpickle.dumps(Task("small-0a1b2c3d", int, 1))  # under the threshold: no warning
    [message] = large_warnings(caplog)
    assert "task prefix 'lookup'" in message
    assert "Task.func -> lookup.__globals__['TABLE'] -> dict of 20,000 items" in message
    assert "__main__.lookup" in message
    assert "64.00 kiB" in message


def test_the_warning_can_be_turned_off(caplog):
    with dask.config.set({"ferropickle.large-pickle-warning": False}):
        assert ferro_dask.install()
    with caplog.at_level(logging.WARNING, logger="ferropickle.dask"):
        dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 2_000_000))
    assert large_warnings(caplog) == []
    assert ferro_dask.stats()["large_pickle_warning"] is None


def test_below_the_default_threshold_nothing_is_logged(installed, caplog):
    with caplog.at_level(logging.WARNING, logger="ferropickle.dask"):
        dpickle.dumps(Task("medium-0a1b2c3d", len, "x" * 500_000))
        dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 1_100_000))
    [message] = large_warnings(caplog)
    assert "task prefix 'big'" in message
    assert "Task.args[0] -> <str 1.05 MiB>" in message


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def test_report_is_a_table_of_the_costliest_prefixes(installed):
    for i in range(4):
        dpickle.dumps(Task(f"small-{i:08x}", int, i))
    dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 10_000))
    text = ferro_dask.report()
    assert isinstance(text, ferro_dask.Report)
    assert repr(text) == str(text)  # shown as the table at a prompt
    lines = str(text).splitlines()
    assert lines[0].startswith("ferropickle in this process: installed; 5 dumps,")
    assert lines[1].startswith("top 2 by bytes; pickles from 1.00 MiB are explained in the log")
    assert lines[3].split() == [
        "task", "prefix", "dumps", "bytes", "bytes/dumps", "largest", "time", "time/dumps"
    ]  # fmt: skip
    assert lines[4].split()[:2] == ["big", "1"]
    assert lines[5].split()[:2] == ["small", "4"]
    by_calls = str(ferro_dask.report(sort="calls", top=1)).splitlines()
    assert by_calls[1].startswith("top 1 by calls")
    assert by_calls[4].split()[:2] == ["small", "4"]
    assert len(by_calls) == 5


def test_report_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="sort must be one of"):
        ferro_dask.report(sort="size")
    with pytest.raises(ValueError, match="top must be at least 1"):
        ferro_dask.report(top=0)
    assert "(nothing pickled yet)" in ferro_dask.report()
