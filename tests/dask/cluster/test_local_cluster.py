"""``install()`` in the process that hosts a ``LocalCluster``'s scheduler and its client (the
workers are separate, stock processes): the same results as stock, and a report that keeps
the client's pickles apart from the scheduler's task messages."""

from __future__ import annotations

import functools
import inspect
import operator

import numpy as np
import pytest
from cluster_support import check_graphs, local_cluster, seed_expected
from distributed import Client

import ferropickle
import ferropickle.dask as ferro_dask
from ferropickle import _demo
from ferropickle.dask._state import STATE

pytestmark = pytest.mark.slow


def test_install_in_process_computes_the_same_as_stock():
    """``install()`` in a process that hosts the scheduler (``LocalCluster``; its workers are
    separate, stock processes): the same graphs, with the plugin and after ``uninstall``."""
    with (
        local_cluster() as cluster,
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


def test_a_local_clusters_report_keeps_the_clients_pickles_apart_and_says_so():
    """The client lives in the scheduler's process: its graphs are pickled by the same
    function, but they are not task messages."""
    assert ferro_dask.install()
    with (
        local_cluster() as cluster,
        Client(cluster) as client,
    ):
        process = _demo.script_function()
        paths = _demo.seed_paths(20)
        assert client.gather(client.map(process, paths, pure=False)) == seed_expected(paths)
        stats = ferro_dask.stats(client)
        text = str(ferro_dask.report(client))
    ferro_dask.uninstall()
    assert list(stats["task_prefixes"]) == ["process"]
    assert stats["task_messages"]["dumps"] == 20
    if "expr" in inspect.signature(Client._graph_to_futures).parameters:
        # This distributed's client sends a graph to the scheduler as a dask expression.
        assert any(name.endswith("Expr)") for name in stats["other_messages"]), stats
    else:  # older releases (2025.1.0): the graph itself, wrapped in ToPickle
        assert "(ToPickle)" in stats["other_messages"], stats
    assert (
        "messages that are not tasks, apart from the task prefixes above (a Client lives in "
        "this process too: its graphs and calls are among them)" in text
    ), text


def test_closing_a_local_cluster_lets_go_of_the_pickles_kept_to_recognise_content():
    """While installed, send-once keeps each hoisted pickle (to recognise the same content in a
    later graph) as long as its scheduler has the key; a scheduler that closes, here with the
    futures still held, must not leave them kept until ``uninstall``."""
    assert ferro_dask.install()
    a = np.arange((1 << 20) // 8, dtype=float)
    with local_cluster() as cluster, Client(cluster) as client:
        futures = client.map(functools.partial(operator.getitem, a), range(20))
        assert client.gather(futures) == list(a[:20])
        assert STATE.seen.holds() == 1
    assert ferro_dask.installed()
    assert STATE.seen.holds() == 0
