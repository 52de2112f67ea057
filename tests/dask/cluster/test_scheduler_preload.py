"""``dask scheduler --preload ferropickle.dask`` with stock workers (real processes on
127.0.0.1): every kind of graph computes what stock Dask computes, a failing task keeps its
traceback, ``/metrics`` shows the counters and `check_family` names the workers that lack the
family; the workers never import ferropickle.
"""

from __future__ import annotations

import pathlib
import traceback
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_support import (
    SEED_TASKS,
    check_graphs,
    check_seed_workload,
    http_port,
    process_cluster,
    worker_imported_ferropickle,
)
from plugin_support import SUBPROCESS_ENV, TIMEOUT, script

import ferropickle.dask as ferro_dask
from ferropickle import _demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scheduler_only() -> Iterator[Any]:
    """``dask scheduler --preload ferropickle.dask`` and two stock workers."""
    with process_cluster(2, scheduler_preload=["ferropickle.dask"], env=SUBPROCESS_ENV) as (
        _cluster,
        client,
    ):
        yield client
        # Whatever ran on this cluster, the workers never needed ferropickle.
        assert client.run(worker_imported_ferropickle) == dict.fromkeys(
            client.scheduler_info()["workers"], False
        )


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


def test_scheduler_only_preload_computes_every_kind_of_graph(scheduler_only):
    check_graphs(scheduler_only)


def test_a_failing_task_reports_its_exception_and_traceback(scheduler_only):
    explode = script("def explode(path):\n    raise ValueError(f'cannot read {path}')\n", "explode")
    future = scheduler_only.submit(explode, pathlib.Path("/data/missing.parquet"))
    with pytest.raises(ValueError, match=r"cannot read /data/missing\.parquet"):
        future.result(timeout=TIMEOUT)
    assert isinstance(future.exception(timeout=TIMEOUT), ValueError)
    frames = traceback.extract_tb(future.traceback(timeout=TIMEOUT))
    assert frames[-1].name == "explode"


def test_scheduler_metrics_endpoint_exposes_the_counters(scheduler_only):
    pytest.importorskip("prometheus_client")
    port = scheduler_only.run_on_scheduler(http_port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    assert "dask_ferropickle_dumps_calls_total" in text
    assert "dask_ferropickle_installed 1.0" in text


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
    # In this deployment nothing is wrong: the error says the family is optional.
    assert "This matters only for data sent with serializers=[..., 'ferropickle']" in message


def test_the_demos_progress_bar_writes_nothing_when_stderr_is_not_a_terminal(
    scheduler_only, capsys
):
    """Under pytest, stderr is captured (not a terminal), as in a CI log or a file."""
    paths = _demo.seed_paths(20)
    work = _demo.run_workload(scheduler_only, _demo.script_function(), paths, progress=True)
    assert len(work.results) == len(paths)
    assert "\r" not in capsys.readouterr().err
