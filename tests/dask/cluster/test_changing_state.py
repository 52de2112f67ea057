"""Real clusters give stock Dask's results when the user changes state between submits.

With a ``LocalCluster`` the scheduler runs in the user's process, next to the script that
rebinds its globals; each task must carry its function as it is when the scheduler pickles it.
Every cluster here is real: a scheduler and worker processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("distributed")

from cluster_support import local_cluster
from distributed import Client

import ferropickle.dask as ferro_dask
from ferropickle import _demo

TIMEOUT = 120

pytestmark = pytest.mark.slow


def user_script() -> dict[str, Any]:
    """The user's script: a task function reading a global and a global dict."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    source = """
        X = 1
        CONFIG = {"s": 0}
        def f(i):
            return X + CONFIG["s"] + i
    """
    exec(compile(textwrap.dedent(source), "<user script>", "exec"), ns)
    return ns


def submit_while_changing_state(client: Client, submit: Callable[..., Any]) -> list[int]:
    """submit f(0); X = 100; submit f(1); CONFIG["s"] = 1000; submit f(2) - each waited for."""
    ns = user_script()
    results = [submit(client, ns["f"], 0)]
    ns["X"] = 100
    results.append(submit(client, ns["f"], 1))
    ns["CONFIG"]["s"] = 1000
    results.append(submit(client, ns["f"], 2))
    return results


def one_by_one(client: Client, f: Callable[[int], int], i: int) -> int:
    return client.submit(f, i, pure=False).result(timeout=TIMEOUT)


def mapped(client: Client, f: Callable[[int], int], i: int) -> int:
    [future] = client.map(f, [i], pure=False)
    return future.result(timeout=TIMEOUT)


STOCK = [1, 101, 1102]


@pytest.fixture
def uninstalled() -> Iterator[None]:
    yield
    ferro_dask.uninstall()
    assert not ferro_dask.installed()


@pytest.mark.parametrize("submit", [one_by_one, mapped], ids=["submit", "map"])
def test_stock_local_cluster_sees_each_change(submit):
    with local_cluster() as cluster, Client(cluster) as client:
        assert submit_while_changing_state(client, submit) == STOCK


@pytest.mark.parametrize("submit", [one_by_one, mapped], ids=["submit", "map"])
def test_local_cluster_with_the_preload_in_the_users_process(uninstalled, submit):
    with (
        local_cluster(preload=["ferropickle.dask"]) as cluster,
        Client(cluster) as client,
    ):
        assert ferro_dask.installed()
        calls = ferro_dask.local_stats()["dumps_calls"]
        assert submit_while_changing_state(client, submit) == STOCK
        assert ferro_dask.local_stats()["dumps_calls"] > calls


@pytest.mark.parametrize("submit", [one_by_one, mapped], ids=["submit", "map"])
def test_local_cluster_with_install(uninstalled, submit):
    assert ferro_dask.install()
    with local_cluster() as cluster, Client(cluster) as client:
        by_value = ferro_dask.local_stats()["objects_by_value"]
        assert submit_while_changing_state(client, submit) == STOCK
        assert ferro_dask.local_stats()["objects_by_value"] >= by_value + 3


#: Run on the workers; defined as in a script, so that the workers need nothing of ours to load
#: it (this test module imports ferropickle).
CANNOT_IMPORT = """
def cannot_import_ferropickle():
    try:
        import ferropickle
    except ImportError:
        return True
    return False
"""


def test_workers_that_cannot_import_ferropickle_run_its_tasks(tmp_path):
    """``dask scheduler --preload ferropickle.dask``; the workers' interpreter has no
    ferropickle (a ``sitecustomize`` makes every import of it fail, as in an environment where
    it is not installed)."""
    blocker = tmp_path / "no_ferropickle"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['ferropickle'] = None  # not installed here\n"
    )
    pythonpath = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    with _demo.ProcessCluster(
        2, scheduler_preload=["ferropickle.dask"], worker_env={"PYTHONPATH": pythonpath}
    ) as cluster:
        client = cluster.client()
        try:
            assert ferro_dask.stats(client)["installed"] is True
            ns: dict[str, Any] = {"__name__": "__main__"}
            exec(CANNOT_IMPORT, ns)
            assert set(client.run(ns["cannot_import_ferropickle"]).values()) == {True}
            assert submit_while_changing_state(client, one_by_one) == STOCK
            paths = _demo.seed_paths(20)
            process = _demo.script_function()
            futures = [client.submit(process, p, pure=False) for p in paths]
            expected = [process(p) for p in paths]
            assert client.gather(futures) == expected
            assert ferro_dask.stats(client)["objects_by_value"] >= len(paths)
        finally:
            client.close()
