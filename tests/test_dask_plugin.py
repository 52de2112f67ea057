"""``ferropickle.dask``: the Dask preload / plugin.

The first half checks the wrappers in this process (what `install` patches and restores, the
safety valve, the "ferropickle" serialization family, stats). The second half runs real Dask
processes on 127.0.0.1 - a ``dask scheduler`` with ``--preload ferropickle.dask`` and stock
workers, a cluster preloaded everywhere through environment variables, and an in-process
``LocalCluster`` with worker processes under `install` - and checks that every kind of graph
computes what stock Dask computes. Those are marked ``slow`` (15-50 s in all on 2 cores).

Objects that must be importable in the scheduler and worker processes live at module level:
the subprocesses get this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import operator
import os
import pathlib
import pickle
import sys
import traceback
import types
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dask
import dask.bag as db
import distributed
import distributed.client
import distributed.diagnostics.plugin
import distributed.diagnostics.progressbar
import distributed.scheduler
import distributed.shuffle._scheduler_plugin
import numpy as np
import pytest
from dask._task_spec import Task
from distributed.protocol.serialize import dask_deserialize, dask_serialize, deserialize, serialize

import ferropickle
import ferropickle.dask as ferro_dask
from ferropickle import _demo

dpickle = importlib.import_module("distributed.protocol.pickle")
dcore = importlib.import_module("distributed.protocol.core")

#: Every attribute `install` must replace in distributed 2026.8.0 (found by grepping its source
#: for ``from distributed.protocol.pickle import``), as (module, name).
BY_NAME = [
    (distributed.scheduler, "dumps"),
    (distributed.scheduler, "loads"),
    (distributed.client, "dumps"),
    (distributed.client, "loads"),
    (distributed.shuffle._scheduler_plugin, "dumps"),
    (distributed.diagnostics.plugin, "dumps"),
    (distributed.diagnostics.progressbar, "dumps"),
]
STOCK = {"dumps": ferro_dask._STOCK_DUMPS, "loads": ferro_dask._STOCK_LOADS}

#: The subprocesses import this module (to rebuild `Opaque`); they find it on PYTHONPATH.
SUBPROCESS_ENV = {
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
    )
}
TIMEOUT = 120


# --------------------------------------------------------------------------------------------
# Objects the tests send
# --------------------------------------------------------------------------------------------


class Opaque:
    """Refuses pickle; travels only through a ``dask_serialize`` registration.

    Stock ``distributed.protocol.pickle.dumps`` handles it (its ``_DaskPickler`` consults
    ``dask_serialize``); ferropickle does not, so the plugin must fall back for it.
    """

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("Opaque objects only travel through dask_serialize")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


@dask_serialize.register(Opaque)
def _serialize_opaque(obj: Opaque) -> tuple[dict[str, Any], list[bytes]]:
    return {"value": obj.value}, []


@dask_deserialize.register(Opaque)
def _deserialize_opaque(header: dict[str, Any], frames: list[bytes]) -> Opaque:
    return Opaque(header["value"])


def echo(x: Any) -> Any:
    """By reference (the workers import this module): stock pickle must manage the message,
    as it can't for a lambda next to an `Opaque`."""
    return x


class FailsFirstTime:
    """``__reduce_ex__`` raises on its first call only: ferropickle (first) is refused, and
    distributed's own attempt (second) succeeds."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.calls = 0

    def __reduce_ex__(self, protocol: object) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise TypeError("refused once")
        return (type(self), (self.value,))


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


def script(source: str, name: str) -> Any:
    """A function defined as in a user's script (``__main__``), so it is pickled by value."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace[name]


def fallbacks(direction: str) -> Counter[str]:
    return Counter(ferro_dask.local_stats()[f"{direction}_fallbacks"])


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def assert_stock() -> None:
    assert dpickle.dumps is STOCK["dumps"]
    assert dpickle.loads is STOCK["loads"]
    for module, name in BY_NAME:
        assert getattr(module, name) is STOCK[name], f"{module.__name__}.{name}"
    assert not ferro_dask.installed()


@pytest.fixture(autouse=True)
def never_leak_install() -> Iterator[None]:
    """No test may leave ferropickle installed in this process."""
    yield
    was_installed = ferro_dask.installed()
    ferro_dask.uninstall()
    assert_stock()
    assert not was_installed, "a test left ferropickle.dask installed"


@pytest.fixture
def installed() -> Iterator[None]:
    assert ferro_dask.install() is True
    yield
    ferro_dask.uninstall()


# --------------------------------------------------------------------------------------------
# install / uninstall
# --------------------------------------------------------------------------------------------


def test_install_replaces_the_module_attribute_and_every_by_name_copy(installed):
    assert dpickle.dumps is ferro_dask.dumps
    assert dpickle.loads is ferro_dask.loads
    for module, name in BY_NAME:
        assert getattr(module, name) is getattr(ferro_dask, name), f"{module.__name__}.{name}"
    # The ToPickle path of task messages and the "pickle" family look it up on the module.
    assert dcore.pickle is dpickle
    assert importlib.import_module("distributed.protocol.serialize").pickle is dpickle


def test_uninstall_restores_every_attribute_exactly():
    assert ferro_dask.install()
    ferro_dask.uninstall()
    assert_stock()


def test_install_twice_is_idempotent():
    assert ferro_dask.install() is True
    patched = list(ferro_dask._patches)
    assert ferro_dask.install() is True
    assert ferro_dask._patches == patched
    ferro_dask.uninstall()
    assert_stock()
    ferro_dask.uninstall()  # and so is uninstall
    assert_stock()


def test_module_importing_by_name_while_installed_is_restored_too():
    name = "distributed._ferropickle_test_late_import"
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        assert ferro_dask.install()
        exec("from distributed.protocol.pickle import dumps, loads", module.__dict__)
        assert module.dumps is ferro_dask.dumps
        ferro_dask.uninstall()
        assert module.dumps is STOCK["dumps"]
        assert module.loads is STOCK["loads"]
    finally:
        del sys.modules[name]


def test_unrecognised_layout_warns_and_keeps_stock_behaviour(monkeypatch):
    def dumps(x, protocol=None):  # what a future distributed might look like
        raise AssertionError("never called")

    dumps.__module__ = "distributed.protocol.pickle"
    monkeypatch.setattr(ferro_dask, "_STOCK_DUMPS", dumps)
    with pytest.warns(ferro_dask.UnsupportedLayoutWarning, match="signature"):
        assert ferro_dask.install() is False
    assert not ferro_dask.installed()
    assert dpickle.dumps is STOCK["dumps"]


def test_preload_hooks_install_and_the_last_teardown_uninstalls():
    scheduler, worker = object(), object()  # any server object; only its identity is kept
    ferro_dask.dask_setup(scheduler)
    ferro_dask.dask_setup(worker)
    assert dpickle.dumps is ferro_dask.dumps
    ferro_dask.dask_teardown(scheduler)
    assert ferro_dask.installed()
    ferro_dask.dask_teardown(worker)
    assert_stock()


def test_explicit_install_outlives_preload_teardown():
    server = object()
    ferro_dask.dask_setup(server)
    assert ferro_dask.install()
    ferro_dask.dask_teardown(server)
    assert ferro_dask.installed()
    ferro_dask.uninstall()


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


# --------------------------------------------------------------------------------------------
# The "ferropickle" serialization family
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writeable", [True, False])
def test_family_round_trips_out_of_band_frames_with_their_writeable_flag(writeable):
    array = np.arange(100.0)
    array.flags.writeable = writeable
    header, frames = serialize(array, serializers=["ferropickle"], on_error="raise")
    assert header["serializer"] == "ferropickle"
    assert header["writeable"] == (writeable,)
    assert len(frames) == 2
    out = deserialize(header, [bytes(f) for f in frames])  # as if received: read-only bytes
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable == writeable


def test_family_output_is_what_the_pickle_family_would_read():
    obj = {"paths": [pathlib.Path("/a"), pathlib.Path("/b")], "n": 3}
    header, frames = serialize(obj, serializers=["ferropickle"], on_error="raise")
    header["serializer"] = "pickle"
    assert deserialize(header, frames) == obj


def test_family_falls_back_for_objects_ferropickle_refuses():
    header, frames = serialize(FailsFirstTime(8), serializers=["ferropickle"], on_error="raise")
    assert deserialize(header, frames).value == 8


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------


def test_local_stats_adds_the_plugins_counters(installed):
    out = ferro_dask.stats()
    assert out.keys() >= ferropickle.stats().keys()
    assert out["installed"] is True
    assert isinstance(out["dumps_fallbacks"], dict)
    assert isinstance(out["loads_fallbacks"], dict)
    assert out["distributed_version"] == distributed.__version__


def test_prometheus_collector_lives_while_installed():
    prometheus_client = pytest.importorskip("prometheus_client")
    assert ferro_dask.install()
    dpickle.dumps([1, 2, 3])
    text = prometheus_client.generate_latest().decode()
    assert "dask_ferropickle_dumps_calls_total" in text
    assert "dask_ferropickle_installed 1.0" in text
    ferro_dask.uninstall()
    assert "ferropickle_" not in prometheus_client.generate_latest().decode()


# --------------------------------------------------------------------------------------------
# Real processes
# --------------------------------------------------------------------------------------------

SEED_TASKS = 300


def seed_expected(paths: list[pathlib.Path]) -> list[Any]:
    """The seed workload computed here, with no Dask at all."""
    process = _demo.script_function()
    return [process(p) for p in paths]


# By value (a lambda), so that asking a worker does not make it import this module (and with it
# ferropickle).
worker_imported_ferropickle = script(
    "import sys\ndef imported():\n    return 'ferropickle' in sys.modules", "imported"
)
http_port = script(
    "def http_port(dask_scheduler):\n    return dask_scheduler.http_server.port", "http_port"
)


def check_graphs(client: Any) -> None:
    """``submit``, ``map``, ``delayed`` and ``bag`` compute what Dask's sync scheduler does."""
    square = script("def square(x):\n    return x * x", "square")
    assert client.submit(square, 7).result(timeout=TIMEOUT) == 49
    assert client.gather(client.map(square, range(20))) == [x * x for x in range(20)]

    total = dask.delayed(operator.add)(dask.delayed(square)(3), dask.delayed(square)(4))
    assert client.compute(total).result(timeout=TIMEOUT) == total.compute(scheduler="sync") == 25

    bag = db.from_sequence(range(100), npartitions=4).map(square).filter(lambda x: x % 3 == 0)
    expected = bag.sum().compute(scheduler="sync")
    assert client.compute(bag.sum()).result(timeout=TIMEOUT) == expected
    assert sorted(client.compute(bag).result(timeout=TIMEOUT)) == sorted(
        bag.compute(scheduler="sync")
    )


def check_seed_workload(client: Any) -> None:
    """The seed workload through ``client.map`` and as ``partial``s through ``submit`` and
    ``delayed``, compared with computing it here."""
    paths = _demo.seed_paths(SEED_TASKS)
    process = _demo.script_function()
    expected = seed_expected(paths)
    work = _demo.run_workload(client, process, paths, progress=False)
    assert work.results == expected
    del work

    partials = [functools.partial(process, p) for p in paths[:20]]
    assert [client.submit(f).result(timeout=TIMEOUT) for f in partials[:5]] == expected[:5]
    delayed = [dask.delayed(f)() for f in partials]
    assert list(dask.compute(*delayed, scheduler=client)) == expected[:20]


@pytest.fixture(scope="module")
def scheduler_only() -> Iterator[Any]:
    """``dask scheduler --preload ferropickle.dask`` and two stock workers."""
    with _demo.ProcessCluster(
        2, scheduler_preload=["ferropickle.dask"], env=SUBPROCESS_ENV
    ) as cluster:
        client = cluster.client()
        try:
            yield client
            # Whatever ran on this cluster, the workers never needed ferropickle.
            assert client.run(worker_imported_ferropickle) == dict.fromkeys(
                client.scheduler_info()["workers"], False
            )
        finally:
            client.close()


@pytest.mark.slow
def test_scheduler_only_preload_runs_the_seed_workload_on_stock_workers(scheduler_only):
    client = scheduler_only
    before = ferro_dask.stats(client)
    assert before["installed"] is True
    check_seed_workload(client)
    after = ferro_dask.stats(client)
    assert after["dumps_calls"] - before["dumps_calls"] >= SEED_TASKS
    # Every task message carries its function by value, written natively.
    assert after["objects_by_value"] - before["objects_by_value"] >= SEED_TASKS
    assert not any(
        worker_imported for worker_imported in client.run(worker_imported_ferropickle).values()
    )


@pytest.mark.slow
def test_scheduler_only_preload_computes_every_kind_of_graph(scheduler_only):
    check_graphs(scheduler_only)


@pytest.mark.slow
def test_a_failing_task_reports_its_exception_and_traceback(scheduler_only):
    explode = script("def explode(path):\n    raise ValueError(f'cannot read {path}')\n", "explode")
    future = scheduler_only.submit(explode, pathlib.Path("/data/missing.parquet"))
    with pytest.raises(ValueError, match=r"cannot read /data/missing\.parquet"):
        future.result(timeout=TIMEOUT)
    assert isinstance(future.exception(timeout=TIMEOUT), ValueError)
    frames = traceback.extract_tb(future.traceback(timeout=TIMEOUT))
    assert frames[-1].name == "explode"


@pytest.mark.slow
def test_scheduler_metrics_endpoint_exposes_the_counters(scheduler_only):
    pytest.importorskip("prometheus_client")
    port = scheduler_only.run_on_scheduler(http_port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    assert "dask_ferropickle_dumps_calls_total" in text
    assert "dask_ferropickle_installed 1.0" in text


@pytest.mark.slow
def test_check_family_names_the_workers_that_lack_it(scheduler_only):
    """The scheduler preloads ferropickle.dask, the workers don't: asking must not make them
    import it (the fixture checks that at the end) and the error names each worker."""
    workers = sorted(scheduler_only.scheduler_info()["workers"])
    with pytest.raises(ferro_dask.MissingFamilyError) as error:
        ferro_dask.check_family(scheduler_only)
    message = str(error.value)
    # Exactly the workers: the scheduler preloaded ferropickle.dask, so it is not listed.
    assert message.startswith(f"{', '.join(workers)} cannot read the 'ferropickle'"), message
    assert "--preload ferropickle.dask" in message


@pytest.mark.slow
def test_preload_everywhere_through_environment_variables():
    """Scheduler and workers preloaded through ``DASK_DISTRIBUTED__*__PRELOAD``: the workers
    read with ferropickle too; an object only ``dask_serialize`` can carry still arrives (the
    scheduler falls back to distributed's pickle for that message); and a client can send data
    with the "ferropickle" serialization family."""
    env = {
        **SUBPROCESS_ENV,
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "ferropickle.dask",
        "DASK_DISTRIBUTED__WORKER__PRELOAD": '["ferropickle.dask"]',
    }
    with _demo.ProcessCluster(2, env=env) as cluster:
        client = cluster.client()
        try:
            assert ferro_dask.stats(client)["installed"] is True
            ferro_dask.check_family(client)  # everyone has it: no error
            workers = client.run(ferro_dask.local_stats)
            assert [s["installed"] for s in workers.values()] == [True, True]

            check_seed_workload(client)
            workers = client.run(ferro_dask.local_stats)
            assert all(s["loads_calls"] > 0 for s in workers.values())

            before = ferro_dask.stats(client)["dumps_fallbacks"].get("dask._task_spec.Task", 0)
            value = operator.attrgetter("value")
            assert client.submit(value, Opaque(42)).result(timeout=TIMEOUT) == 42
            assert client.submit(echo, Opaque(7)).result(timeout=TIMEOUT) == Opaque(7)
            after = ferro_dask.stats(client)["dumps_fallbacks"].get("dask._task_spec.Task", 0)
            assert after >= before + 2
        finally:
            client.close()

        # Data sent with the "ferropickle" family: written here (this process has ferropickle
        # imported but not installed, so every dumps call counted is the family's).
        client = cluster.client(
            serializers=["ferropickle", "error"],
            deserializers=["ferropickle", "dask", "pickle", "msgpack", "error"],
        )
        try:
            calls = ferropickle.stats()["dumps_calls"]
            [future] = client.scatter([{"x": np.arange(1000.0), "name": "payload"}])
            assert ferropickle.stats()["dumps_calls"] > calls
            total = script("def total(d):\n    return float(d['x'].sum())", "total")
            assert client.submit(total, future).result(timeout=TIMEOUT) == 499500.0
            assert future.result(timeout=TIMEOUT)["name"] == "payload"
        finally:
            client.close()


@pytest.mark.slow
def test_install_in_process_computes_the_same_as_stock():
    """``install()`` in a process that hosts the scheduler (``LocalCluster``; its workers are
    separate, stock processes): the same graphs, with the plugin and after ``uninstall``."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # The HTTP server (/metrics) starts even without a dashboard, on port 8787 by
            # default (a warning if taken): a free loopback port instead.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        paths = _demo.seed_paths(50)
        process = _demo.script_function()
        for plugin in (True, False):
            if plugin:
                assert ferro_dask.install()
            calls = ferropickle.stats()["dumps_calls"]
            check_graphs(client)
            results = client.gather(client.map(process, paths, pure=False))
            assert results == seed_expected(paths)
            # This process is the scheduler: its task messages went through ferropickle only
            # while installed.
            assert (ferropickle.stats()["dumps_calls"] > calls) is plugin
            ferro_dask.uninstall()
