"""``install()`` in the process that hosts a ``LocalCluster``'s scheduler (its workers are
separate, stock processes)."""

from __future__ import annotations

import pytest
from cluster_support import check_graphs, seed_expected

import ferropickle
import ferropickle.dask as ferro_dask
from ferropickle import _demo

pytestmark = pytest.mark.slow


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
