"""Running ``ferropickle.dask`` as an operator does: real ``dask scheduler`` processes
(``ferropickle._demo.ProcessCluster``, loopback only) preloaded and configured by environment
variables only; their log, `stats`, `report` and ``/metrics``."""

from __future__ import annotations

import os
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
from cluster_support import process_cluster
from plugin_support import TIMEOUT

import ferropickle.dask as ferro_dask
from ferropickle import _demo

pytestmark = pytest.mark.slow

#: The scheduler's log line at default log settings.
ACTIVE = re.compile(
    r"ferropickle\.dask - INFO - ferropickle \S+ active in this scheduler "
    rf"\(dask {re.escape(dask.__version__)}, distributed {re.escape(distributed.__version__)}\), "
    r"through the preload: "
    r"distributed\.protocol\.pickle\.dumps, .*distributed\.scheduler\.dumps.* replaced by "
    r"ferropickle's; large-pickle warning from 64\.00 kiB; send-once off; "
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
    with process_cluster(1, env=env) as (cluster, client):
        yield cluster, client


def test_the_scheduler_log_says_ferropickle_is_active(configured):
    cluster, _client = configured
    log = scheduler_log(cluster)
    assert len(ACTIVE.findall(log)) == 1, log
    assert "distributed.protocol.pickle.loads" not in log  # patch-loads: false


def test_the_scheduler_uses_the_settings_from_its_environment(configured):
    _cluster, client = configured
    stats = ferro_dask.stats(client)
    assert stats["installed"] is True
    assert stats["large_pickle_warning"] == 64 * 1024
    assert client.run_on_scheduler(_probe["loads_module"]) == "distributed.protocol.pickle"


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
    # It counts every call in the process, and says so (not "one per task message").
    assert "every call in this process" in help_line
    assert "explain's sizing" in help_line


def test_stats_report_and_metrics_of_a_real_scheduler_agree_to_the_byte(configured):
    pytest.importorskip("prometheus_client")
    _cluster, client = configured
    assert client.gather(client.map(_probe["lookup"], range(5), pure=False)) == [
        str(i) for i in range(5)
    ]
    port = client.run_on_scheduler(_probe["http_port"])
    first = ferro_dask.stats(client)
    text = str(ferro_dask.report(client))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()
    second = ferro_dask.stats(client)
    # Asking (stats, report, run_on_scheduler) added nothing to what is counted.
    assert second["task_messages"] == first["task_messages"]
    assert second["other_messages"] == first["other_messages"]
    totals = first["task_messages"]
    assert f" {totals['dumps']:,} dumps, {totals['bytes']:,} bytes (" in text.splitlines()[0]
    sent = [
        float(line.split()[-1])
        for line in lines
        if line.startswith("myco_ferropickle_task_prefix_dumps_bytes_total{")
    ]
    assert sum(sent) == totals["bytes"]


def test_a_disabled_preload_says_so_and_changes_nothing():
    env = {
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "ferropickle.dask",
        "DASK_FERROPICKLE__ENABLED": "False",
        # Not even read: a disabled preload does not check the other settings.
        "DASK_FERROPICKLE__LARGE_PICKLE_WARNING": "lots",
    }
    with process_cluster(1, env=env) as (cluster, client):
        assert ferro_dask.stats(client)["installed"] is False
        assert client.submit(abs, -3).result(TIMEOUT) == 3
        log = scheduler_log(cluster)
    assert (
        "ferropickle.dask - INFO - ferropickle.dask preload in this scheduler: not installed, "
        "dask config ferropickle.enabled is false" in log
    ), log
    assert not ACTIVE.search(log)
    assert "large-pickle-warning" not in log


def test_a_scheduler_with_invalid_settings_logs_one_line_and_exits_non_zero():
    env = {
        **os.environ,
        "DASK_FERROPICKLE__LARGE_PICKLE_WARNING": "lots",
    }
    args = ["--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"]
    preload = ["--preload", "ferropickle.dask"]
    result = subprocess.run(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", *args, *preload],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if " - ferropickle.dask - " in line]
    assert len(ours) == 1, result.stderr
    assert ours[0].endswith(
        "ferropickle.dask - ERROR - ferropickle.dask preload in this scheduler: not installed: "
        "dask config ferropickle.large-pickle-warning must be a byte size (a number of bytes, "
        "or a number and a unit such as '1 MiB' or '500 kB'; units: B, kB, MB, GB, TB, PB, "
        "KiB, MiB, GiB, TiB, PiB) or false for off, not 'lots'"
    )
    assert "Traceback" not in result.stderr, result.stderr


def test_install_through_run_on_scheduler_logs_the_active_line():
    with process_cluster(1) as (cluster, client):
        assert client.run_on_scheduler(ferro_dask.install) is True
        assert ferro_dask.stats(client)["installed"] is True
        log = wait_for_log(cluster, " active in this scheduler ")
    [line] = [line for line in log.splitlines() if " active in this scheduler " in line]
    assert "ferropickle.dask - INFO - " in line
    assert (
        "through install() run by a client (client.run_on_scheduler or client.run): "
        "distributed.protocol.pickle.dumps, " in line
    )
