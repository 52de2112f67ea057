"""Running ``ferropickle.dask`` as an operator does: settings through Dask's config alone, one
line in the scheduler's log, and ``/metrics``.

The first half reads the settings in this process; the second starts real ``dask scheduler``
processes (``ferropickle._demo.ProcessCluster``, loopback only) configured by environment
variables only, and reads their log and their ``/metrics`` endpoint (marked ``slow``).
"""

from __future__ import annotations

import importlib
import logging
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import dask
import distributed
import pytest

import ferropickle.dask as ferro_dask
from ferropickle import _demo

dpickle = importlib.import_module("distributed.protocol.pickle")
TIMEOUT = 120


@pytest.fixture(autouse=True)
def never_leak_install() -> Iterator[None]:
    yield
    ferro_dask.uninstall()
    ferro_dask._reset_accounting()


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def test_defaults_are_registered_with_dask_config():
    assert dask.config.get("ferropickle.enabled") is True
    assert dask.config.get("ferropickle.patch-loads") is True
    assert dask.config.get("ferropickle.large-pickle-warning") == "1 MiB"
    assert ferro_dask.Settings.from_config() == ferro_dask.Settings(
        enabled=True,
        patch_loads=True,
        large_pickle_warning=2**20,
        report_top=10,
        max_prefixes=1000,
    )
    # It ships in the installed package, where the defaults are read from.
    assert (pathlib.Path(ferro_dask.__file__).with_name("ferropickle.yaml")).is_file()


def test_environment_variables_set_every_option():
    """As an operator of dask-jobqueue or dask-kubernetes would: environment only."""
    env = {
        **os.environ,
        "DASK_FERROPICKLE__ENABLED": "false",
        "DASK_FERROPICKLE__PATCH_LOADS": "False",
        "DASK_FERROPICKLE__LARGE_PICKLE_WARNING": "10 MiB",
        "DASK_FERROPICKLE__REPORT__TOP": "3",
        "DASK_FERROPICKLE__REPORT__MAX_PREFIXES": "50",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import ferropickle.dask as d; print(d.settings())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "Settings(enabled=False, patch_loads=False, large_pickle_warning=10485760, "
        "report_top=3, max_prefixes=50)"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("enabled", "maybe", "ferropickle.enabled must be true or false"),
        ("large-pickle-warning", "lots", "Could not interpret 'lots'"),
        ("large-pickle-warning", -1, "ferropickle.large-pickle-warning must be a byte size"),
        ("report.top", 0, "ferropickle.report.top must be a positive integer"),
        ("report.max-prefixes", "many", "ferropickle.report.max-prefixes must be a positive"),
    ],
)
def test_invalid_settings_say_which_key_is_wrong(key, value, message):
    with dask.config.set({f"ferropickle.{key}": value}), pytest.raises(ValueError, match=message):
        ferro_dask.install()
    assert not ferro_dask.installed()


@pytest.mark.parametrize("off", [False, "false", "off", 0, None])
def test_the_large_pickle_warning_turns_off_however_it_is_spelled(off):
    with dask.config.set({"ferropickle.large-pickle-warning": off}):
        assert ferro_dask.Settings.from_config().large_pickle_warning is None


def test_patch_loads_false_replaces_dumps_only():
    stock_loads = dpickle.loads
    with dask.config.set({"ferropickle.patch-loads": False}):
        assert ferro_dask.install()
    assert dpickle.dumps is ferro_dask.dumps
    assert dpickle.loads is stock_loads
    assert importlib.import_module("distributed.scheduler").loads is stock_loads
    ferro_dask.uninstall()
    assert dpickle.loads is stock_loads


def test_settings_are_read_at_install_not_at_each_call():
    with dask.config.set({"ferropickle.report.top": 2}):
        assert ferro_dask.install()
    assert ferro_dask.settings().report_top == 2
    with dask.config.set({"ferropickle.report.top": 7}):
        assert ferro_dask.settings().report_top == 2


def test_enabled_false_makes_the_preload_a_no_op_but_not_install(caplog):
    server = object()
    with (
        dask.config.set({"ferropickle.enabled": False}),
        caplog.at_level(logging.INFO, logger="ferropickle.dask"),
    ):
        ferro_dask.dask_setup(server)
        assert not ferro_dask.installed()
        assert any("ferropickle.enabled is false" in r.getMessage() for r in caplog.records)
        assert ferro_dask.install()  # explicit: the user asked for it
    ferro_dask.dask_teardown(server)


def test_prometheus_metric_types_and_namespace():
    prometheus_client = pytest.importorskip("prometheus_client")
    assert ferro_dask.install()
    dpickle.dumps(ferro_dask.Task("inc-0a1b2c3d", int, 1))
    with dask.config.set({"distributed.dashboard.prometheus.namespace": "myco"}):
        families = {m.name: m for m in prometheus_client.REGISTRY.collect()}
    ours = {name: m.type for name, m in families.items() if "ferropickle" in name}
    assert all(name.startswith("myco_ferropickle_") for name in ours), ours
    assert ours["myco_ferropickle_dumps_calls"] == "counter"
    assert ours["myco_ferropickle_dumps_seconds"] == "counter"
    assert ours["myco_ferropickle_installed"] == "gauge"
    assert ours["myco_ferropickle_cache_globals_entries"] == "gauge"
    assert ours["myco_ferropickle_cache_code_objects_entries"] == "gauge"
    assert ours["myco_ferropickle_large_pickle_warning_bytes"] == "gauge"
    assert ours["myco_ferropickle_task_prefix_dumps_bytes"] == "counter"
    # Help texts say what is counted, not which dict key it came from.
    assert not any("stats()[" in families[name].documentation for name in ours)
    [sample] = families["myco_ferropickle_task_prefix_dumps"].samples
    assert sample.labels == {"task_prefix_name": "inc"}
    assert sample.value == 1


# --------------------------------------------------------------------------------------------
# Real schedulers, configured by environment variables only
# --------------------------------------------------------------------------------------------

#: The scheduler's log line at default log settings.
ACTIVE = re.compile(
    r"ferropickle\.dask - INFO - ferropickle \S+ active in this scheduler "
    rf"\(distributed {re.escape(distributed.__version__)}\): "
    r"distributed\.protocol\.pickle\.dumps, .*distributed\.scheduler\.dumps.* replaced by "
    r"ferropickle's; large-pickle warning from 64\.00 kiB"
)

# By value, so the scheduler runs them without this test module on its path.
_probe: dict[str, Any] = {"__name__": "__main__"}
exec(
    "import importlib\n"
    "def http_port(dask_scheduler):\n"
    "    return dask_scheduler.http_server.port\n"
    "def loads_module():\n"
    "    return importlib.import_module('distributed.protocol.pickle').loads.__module__\n"
    "TABLE = {i: str(i) for i in range(20_000)}\n"
    "def lookup(i):\n"
    "    return TABLE[i]\n",
    _probe,
)


def scheduler_log(cluster: _demo.ProcessCluster) -> str:
    return (cluster.workdir / "scheduler.log").read_text(errors="replace")


def wait_for_log(cluster: _demo.ProcessCluster, pattern: str) -> str:
    deadline = time.monotonic() + 30
    while pattern not in (text := scheduler_log(cluster)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


@pytest.fixture(scope="module")
def configured() -> Iterator[tuple[_demo.ProcessCluster, Any]]:
    """A scheduler preloaded and configured through environment variables only, one stock
    worker."""
    env = {
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "ferropickle.dask",
        "DASK_FERROPICKLE__LARGE_PICKLE_WARNING": "64 KiB",
        "DASK_FERROPICKLE__PATCH_LOADS": "false",
        "DASK_FERROPICKLE__REPORT__TOP": "2",
        "DASK_DISTRIBUTED__DASHBOARD__PROMETHEUS__NAMESPACE": "myco",
        # What these tests read is the cost of a large part sent with every task.
        "DASK_FERROPICKLE__SEND_ONCE__THRESHOLD": "false",
    }
    with _demo.ProcessCluster(1, env=env) as cluster:
        client = cluster.client()
        try:
            yield cluster, client
        finally:
            client.close()


@pytest.mark.slow
def test_the_scheduler_log_says_ferropickle_is_active(configured):
    cluster, _client = configured
    log = scheduler_log(cluster)
    assert len(ACTIVE.findall(log)) == 1, log
    assert "distributed.protocol.pickle.loads" not in log  # patch-loads: false


@pytest.mark.slow
def test_the_scheduler_uses_the_settings_from_its_environment(configured):
    _cluster, client = configured
    stats = ferro_dask.stats(client)
    assert stats["installed"] is True
    assert stats["large_pickle_warning"] == 64 * 1024
    assert client.run_on_scheduler(_probe["loads_module"]) == "distributed.protocol.pickle"


@pytest.mark.slow
def test_report_and_log_name_what_is_expensive_to_send(configured):
    cluster, client = configured
    lookup, square = _probe["lookup"], (lambda x: x * x)
    # A client.submit loop: the scheduler holds a fresh copy of the function per task.
    assert [client.submit(lookup, i, pure=False).result(TIMEOUT) for i in range(3)] == [
        "0",
        "1",
        "2",
    ]
    assert client.gather(client.map(square, range(10))) == [x * x for x in range(10)]

    log = wait_for_log(cluster, "large-pickle-warning")
    warnings = [line for line in log.splitlines() if "large-pickle-warning" in line]
    assert len(warnings) == 1, log  # once per function, though three tasks were large
    assert "ferropickle.dask - WARNING - " in warnings[0]
    assert "task prefix 'lookup'" in warnings[0]
    assert "Task.func -> lookup.__globals__['TABLE'] -> dict of 20,000 items" in warnings[0]

    stats = ferro_dask.stats(client)
    assert list(stats["task_prefixes"]) == ["lookup", "lambda"]  # top 2 by bytes
    assert stats["task_prefixes"]["lookup"]["dumps"] == 3
    assert stats["task_prefixes"]["lambda"]["dumps"] == 10

    text = str(ferro_dask.report(client))
    lines = text.splitlines()
    assert lines[0].startswith("ferropickle in the scheduler at tcp://127.0.0.1:")
    assert "installed;" in lines[0]
    assert lines[1].startswith("top 2 by bytes; pickles from 64.00 kiB")
    assert lines[4].split()[:2] == ["lookup", "3"]
    assert lines[5].split()[:2] == ["lambda", "10"]


@pytest.mark.slow
def test_metrics_endpoint_of_a_real_scheduler(configured):
    pytest.importorskip("prometheus_client")
    _cluster, client = configured
    client.submit(_probe["lookup"], 5, pure=False).result(TIMEOUT)
    port = client.run_on_scheduler(_probe["http_port"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    lines = text.splitlines()
    # distributed's namespace setting applies to ours too.
    assert any(line.startswith("myco_scheduler_") for line in lines)
    assert not any(line.startswith("ferropickle_") for line in lines)
    assert "myco_ferropickle_installed 1.0" in lines
    assert "myco_ferropickle_loads_patched 0.0" in lines
    assert "myco_ferropickle_large_pickle_warning_bytes 65536.0" in lines
    assert "# TYPE myco_ferropickle_dumps_calls_total counter" in lines
    assert "# TYPE myco_ferropickle_cache_globals_entries gauge" in lines
    assert any(line.startswith('myco_ferropickle_info{distributed_version="') for line in lines)
    bytes_sent = [
        line
        for line in lines
        if line.startswith(
            'myco_ferropickle_task_prefix_dumps_bytes_total{task_prefix_name="lookup"}'
        )
    ]
    assert len(bytes_sent) == 1
    assert float(bytes_sent[0].split()[-1]) > 64 * 1024
    help_line = next(
        line for line in lines if line.startswith("# HELP myco_ferropickle_dumps_calls")
    )
    assert "task message" in help_line


@pytest.mark.slow
def test_a_disabled_preload_says_so_and_changes_nothing():
    env = {
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "ferropickle.dask",
        "DASK_FERROPICKLE__ENABLED": "False",
    }
    with _demo.ProcessCluster(1, env=env) as cluster:
        client = cluster.client()
        try:
            assert ferro_dask.stats(client)["installed"] is False
            assert client.submit(abs, -3).result(TIMEOUT) == 3
        finally:
            client.close()
        log = scheduler_log(cluster)
    assert (
        "ferropickle.dask - INFO - ferropickle.dask preload in this scheduler: not installed, "
        "dask config ferropickle.enabled is false" in log
    ), log
    assert not ACTIVE.search(log)
