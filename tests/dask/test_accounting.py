"""What is expensive to send: every ``dumps`` counted against its task prefix, and a large
pickle explained in the log once per function (against a real scheduler: ``cluster/``)."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import dask
import numpy as np
import pytest
from dask._task_spec import DataNode, Task
from plugin_support import dpickle, script

import ferropickle.dask as ferro_dask
from ferropickle.dask._accounting import PrefixRow
from ferropickle.dask._report import report_rows
from ferropickle.dask._state import STATE
from ferropickle.dask._stats import stats_reply

TABLE_SCRIPT = "TABLE = {i: str(i) for i in range(20_000)}\ndef lookup(i):\n    return TABLE[i]\n"


def rows() -> dict[str, PrefixRow]:
    return dict(STATE.accounting.tasks())


def messages() -> dict[str, PrefixRow]:
    return dict(STATE.accounting.messages())


# --------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------


def test_every_dumps_is_counted_against_its_task_prefix(installed):
    blobs = [dpickle.dumps(Task(f"inc-{i:08x}", int, i)) for i in range(5)]
    blobs.append(dpickle.dumps(Task(("sum-aggregate-0a1b2c3d", 0), sum, [1, 2])))
    blobs.append(dpickle.dumps(DataNode("data-0a1b2c3d", 7)))
    blobs.append(dpickle.dumps({"op": "not a graph node"}))
    counted = rows()
    inc = counted["inc"]
    assert (inc.dumps, inc.nbytes) == (5, sum(len(b) for b in blobs[:5]))
    assert inc.largest == max(len(b) for b in blobs[:5])  # the largest single pickle
    assert inc.ns > 0
    assert (counted["sum-aggregate"].dumps, counted["sum-aggregate"].nbytes) == (1, len(blobs[5]))
    assert (counted["data"].dumps, counted["data"].nbytes) == (1, len(blobs[6]))
    # A message that is not a graph node is counted apart, under its type.
    assert "(dict)" not in counted
    assert (messages()["(dict)"].dumps, messages()["(dict)"].nbytes) == (1, len(blobs[7]))


def test_bytes_include_out_of_band_buffers(installed):
    array = np.arange(100_000, dtype=np.int64)
    frames: list[Any] = []
    data = dpickle.dumps(Task("array-0a1b2c3d", len, array), buffer_callback=frames.append)
    assert len(frames) == 1
    assert rows()["array"].nbytes == len(data) + array.nbytes


def test_fallbacks_are_counted_too(installed):
    class Refused:
        def __reduce_ex__(self, protocol: object) -> Any:
            if not hasattr(self, "tried"):
                self.tried = True
                raise TypeError("refused once")
            return (int, (3,))

    data = dpickle.dumps(Task("refused-0a1b2c3d", int, Refused()))
    assert (rows()["refused"].dumps, rows()["refused"].nbytes) == (1, len(data))


def test_prefixes_beyond_the_limit_share_the_other_row():
    with dask.config.set({"ferropickle.report.max-prefixes": 2}):
        assert ferro_dask.install()
    for name in ("a", "b", "c", "d"):
        dpickle.dumps(Task(f"{name}-0a1b2c3d", int, 1))
    assert {prefix: row.dumps for prefix, row in rows().items()} == {"a": 1, "b": 1, "(other)": 2}


def test_messages_that_are_not_tasks_never_take_a_task_prefix_slot():
    with dask.config.set({"ferropickle.report.max-prefixes": 2}):
        assert ferro_dask.install()
    dpickle.dumps({"op": "a plugin registration"})
    dpickle.dumps([1, 2, 3])
    for name in ("a", "b", "c"):
        dpickle.dumps(Task(f"{name}-0a1b2c3d", int, 1))
    assert {prefix: row.dumps for prefix, row in rows().items()} == {"a": 1, "b": 1, "(other)": 1}
    assert {name: row.dumps for name, row in messages().items()} == {"(dict)": 1, "(list)": 1}


def test_a_large_pickle_beyond_the_prefix_limit_is_explained_under_its_own_prefix(caplog):
    with dask.config.set(
        {"ferropickle.report.max-prefixes": 1, "ferropickle.large-pickle-warning": "64 KiB"}
    ):
        assert ferro_dask.install()
    dpickle.dumps(Task("small-0a1b2c3d", int, 1))
    with caplog.at_level(logging.WARNING, logger="ferropickle.dask"):
        dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 100_000))
    [message] = large_warnings(caplog)
    assert "task prefix 'big'" in message
    assert list(rows()) == ["small", "(other)"]


def test_a_large_message_that_is_not_a_task_is_not_called_a_task_prefix(caplog):
    with dask.config.set({"ferropickle.large-pickle-warning": "64 KiB"}):
        assert ferro_dask.install()
    with caplog.at_level(logging.WARNING, logger="ferropickle.dask"):
        dpickle.dumps({"payload": "x" * 100_000})
    [message] = large_warnings(caplog)
    assert message.startswith("ferropickle: a dict message (not a task) pickled to ")
    assert "task prefix" not in message.split(";")[0]


def test_the_plugins_own_replies_are_not_counted(installed):
    """What the scheduler sends back for stats() and report(): asking must not change the
    numbers asked for."""
    dpickle.dumps(Task("inc-0a1b2c3d", int, 1))
    before = (rows(), messages())
    dpickle.dumps(stats_reply())
    dpickle.dumps(report_rows(None, "bytes"))
    assert (rows(), messages()) == before
    # The client reads a plain dict, with nothing of ferropickle needed to unpickle it.
    assert type(pickle.loads(dpickle.dumps(stats_reply()))) is dict


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
