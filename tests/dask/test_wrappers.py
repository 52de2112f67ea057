"""The replacements for distributed's ``dumps``/``loads`` once installed: what goes through
ferropickle, and the safety valve (distributed's own function for whatever ferropickle refuses,
counted every time, logged once per type)."""

from __future__ import annotations

import logging
import operator
import pathlib
import pickle
from collections import Counter
from typing import Any

import numpy as np
import pytest
from dask._task_spec import Task
from plugin_support import STOCK, FailsFirstTime, Opaque, dcore, dpickle

import ferropickle
import ferropickle.dask as ferro_dask
from ferropickle import _demo


class LogsOnce(FailsFirstTime):
    """Used only by the logging test, so its first fallback is logged there."""


class FailsAfterBuffer(FailsFirstTime):
    """Only for the out-of-band buffer test."""


_rebuilds: Counter[str] = Counter()


def rebuild_flaky(token: str, value: int) -> int:
    """Raises the first time it is called for ``token``, then returns ``value``."""
    _rebuilds[token] += 1
    if _rebuilds[token] == 1:
        raise ValueError(f"first rebuild of {token} fails")
    return value


class FlakyOnLoad:
    """Pickles to ``rebuild_flaky(token, value)``: the first unpickling attempt fails."""

    def __init__(self, token: str, value: int) -> None:
        self.token, self.value = token, value

    def __reduce__(self) -> Any:
        return (rebuild_flaky, (self.token, self.value))


def fallbacks(direction: str) -> Counter[str]:
    return Counter(ferro_dask.local_stats()[f"{direction}_fallbacks"])


# --------------------------------------------------------------------------------------------
# What goes through ferropickle once installed
# --------------------------------------------------------------------------------------------


def test_task_message_run_spec_is_written_by_ferropickle(installed):
    """The scheduler's ``compute-task`` message: ``{"run_spec": ToPickle(Task)}``."""
    import msgpack
    from distributed.protocol.serialize import ToPickle

    process = _demo.script_function()
    task = Task("process-0", process, pathlib.Path("/data/in/part-00000.parquet"))
    calls = ferropickle.stats()["dumps_calls"]
    frames = dcore.dumps({"op": "compute-task", "run_spec": ToPickle(task)})
    assert ferropickle.stats()["dumps_calls"] == calls + 1
    assert msgpack.loads(frames[1])["pickled-obj"] == ferropickle.dumps(task)

    ferro_dask.uninstall()  # a stock reader
    msg = dcore.loads(frames)
    assert msg["run_spec"].key == "process-0"
    assert msg["run_spec"]() == process(pathlib.Path("/data/in/part-00000.parquet"))


def test_out_of_band_buffers_go_to_the_callback(installed):
    array = np.arange(1000)
    frames: list[Any] = []
    data = dpickle.dumps(array, buffer_callback=frames.append)
    assert len(frames) == 1
    np.testing.assert_array_equal(pickle.loads(data, buffers=frames), array)
    np.testing.assert_array_equal(dpickle.loads(data, buffers=frames), array)


def test_protocol_4_keeps_buffers_in_band_as_distributed_does(installed):
    frames: list[Any] = []
    data = dpickle.dumps(np.arange(10), buffer_callback=frames.append, protocol=4)
    assert frames == []
    np.testing.assert_array_equal(pickle.loads(data), np.arange(10))


# --------------------------------------------------------------------------------------------
# The safety valve
# --------------------------------------------------------------------------------------------


def test_dumps_falls_back_counts_every_time_and_logs_once_per_type(installed, caplog):
    key = f"{__name__}.LogsOnce"
    before = fallbacks("dumps")[key]
    with caplog.at_level(logging.WARNING, logger="ferropickle.dask"):
        for value in range(3):
            data = dpickle.dumps(LogsOnce(value))
            assert pickle.loads(data).value == value
    assert fallbacks("dumps")[key] == before + 3
    logged = [r for r in caplog.records if r.name == "ferropickle.dask" and key in r.getMessage()]
    assert len(logged) == 1
    assert "refused once" in logged[0].getMessage()


def test_dumps_fallback_never_leaks_buffers_of_the_failed_attempt(installed):
    """ferropickle writes the array out of band, then fails on the next item: only the frames
    of distributed's successful attempt may reach the callback."""
    obj = [np.arange(1000), FailsAfterBuffer(5)]
    frames: list[Any] = []
    data = dpickle.dumps(obj, buffer_callback=frames.append)
    assert len(frames) == 1
    out = pickle.loads(data, buffers=frames)
    np.testing.assert_array_equal(out[0], obj[0])
    assert out[1].value == 5


def test_dumps_of_a_dask_serialize_only_object_falls_back(installed):
    task = Task("k", operator.attrgetter("value"), Opaque(3))
    with pytest.raises(TypeError, match="only travel through dask_serialize"):
        ferropickle.dumps(task)
    before = fallbacks("dumps")["dask._task_spec.Task"]
    data = dpickle.dumps(task)
    assert fallbacks("dumps")["dask._task_spec.Task"] == before + 1
    assert pickle.loads(data)() == 3


def test_dumps_error_from_both_is_distributeds(installed):
    import threading

    with pytest.raises(TypeError, match="lock"):
        dpickle.dumps({"lock": threading.Lock()})


def test_loads_falls_back_to_distributeds(installed):
    data = pickle.dumps(FlakyOnLoad("loads-fallback", 11))
    before = sum(fallbacks("loads").values())
    assert dpickle.loads(data) == 11
    assert _rebuilds["loads-fallback"] == 2  # ferropickle's attempt, then distributed's
    assert sum(fallbacks("loads").values()) == before + 1


def test_loads_error_from_both_is_distributeds(installed):
    garbage = b"\x80\x05\x95\x05\x00\x00\x00\x00\x00\x00\x00garbage"
    with pytest.raises(Exception) as stock:
        STOCK["loads"](garbage)
    with pytest.raises(Exception) as ours:
        dpickle.loads(garbage)
    assert type(ours.value) is type(stock.value)
    assert str(ours.value) == str(stock.value)
