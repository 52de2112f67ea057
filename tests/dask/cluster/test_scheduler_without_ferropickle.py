"""The likeliest deployment mistake: asking for the scheduler's stats or report when the
scheduler cannot import ferropickle (real processes on 127.0.0.1)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_support import process_cluster

import ferropickle.dask as ferro_dask

pytestmark = pytest.mark.slow

HOW = "start the scheduler with --preload ferropickle.dask"


@pytest.fixture(scope="module")
def stock_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Scheduler and worker whose interpreter has no ferropickle (a ``sitecustomize`` makes
    every import of it fail exactly as where it is not installed: ``No module named
    'ferropickle'``; a ``None`` in ``sys.modules`` would fail differently, with an error that
    CPython 3.15's traceback module can't format)."""
    blocker = tmp_path_factory.mktemp("no_ferropickle")
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class NotInstalled:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'ferropickle':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NotInstalled)\n"
    )
    pythonpath = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    with process_cluster(1, env={"PYTHONPATH": pythonpath}) as (_cluster, client):
        yield client


def test_stats_says_the_scheduler_lacks_ferropickle_and_how_to_enable_it(stock_scheduler):
    with pytest.raises(RuntimeError) as error:
        ferro_dask.stats(stock_scheduler)
    message = str(error.value)
    assert message.startswith("the scheduler at tcp://127.0.0.1:")
    assert "does not have ferropickle" in message
    assert HOW in message


def test_report_says_the_scheduler_lacks_ferropickle_and_how_to_enable_it(stock_scheduler):
    with pytest.raises(RuntimeError, match="does not have ferropickle") as error:
        ferro_dask.report(stock_scheduler)
    assert HOW in str(error.value)
