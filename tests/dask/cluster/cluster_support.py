"""What the real-cluster tests share: the workloads every deployment must compute as stock Dask
does, and probes sent by value (so asking a worker does not make it import anything of ours)."""

from __future__ import annotations

import contextlib
import functools
import operator
import pathlib
from collections.abc import Iterator
from typing import Any

import dask
import dask.bag as db
from dask.local import get_sync
from distributed import LocalCluster
from plugin_support import TIMEOUT, script

from ferropickle import _demo

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
    """``submit``, ``map``, ``delayed`` and ``bag`` compute what Dask's sync scheduler does.

    The sync scheduler is passed as the function: by name, older dask releases (2025.1.0) warn
    that a distributed client is active (the point here is to compare with it)."""
    square = script("def square(x):\n    return x * x", "square")
    assert client.submit(square, 7).result(timeout=TIMEOUT) == 49
    assert client.gather(client.map(square, range(20))) == [x * x for x in range(20)]

    total = dask.delayed(operator.add)(dask.delayed(square)(3), dask.delayed(square)(4))
    assert client.compute(total).result(timeout=TIMEOUT) == total.compute(scheduler=get_sync) == 25

    bag = db.from_sequence(range(100), npartitions=4).map(square).filter(lambda x: x % 3 == 0)
    expected = bag.sum().compute(scheduler=get_sync)
    assert client.compute(bag.sum()).result(timeout=TIMEOUT) == expected
    assert sorted(client.compute(bag).result(timeout=TIMEOUT)) == sorted(
        bag.compute(scheduler=get_sync)
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


def local_cluster(**scheduler_kwargs: Any) -> LocalCluster:
    """A LocalCluster whose scheduler lives in this process, with two worker processes, all on
    loopback. The HTTP server (/metrics) starts even without a dashboard, on port 8787 by
    default (a warning if taken): a free loopback port instead."""
    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0", **scheduler_kwargs},
    )


@contextlib.contextmanager
def process_cluster(n_workers: int, **kwargs: Any) -> Iterator[tuple[_demo.ProcessCluster, Any]]:
    """A `ferropickle._demo.ProcessCluster` (``dask scheduler`` / ``dask worker`` processes)
    and a client of it, closed in that order."""
    with _demo.ProcessCluster(n_workers, **kwargs) as cluster:
        client = cluster.client()
        try:
            yield cluster, client
        finally:
            client.close()
