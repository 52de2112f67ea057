"""Scheduler and workers preloaded through ``DASK_DISTRIBUTED__*__PRELOAD`` (real processes on
127.0.0.1)."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from cluster_support import check_seed_workload
from plugin_support import SUBPROCESS_ENV, TIMEOUT, Opaque, echo, script

import ferropickle
import ferropickle.dask as ferro_dask
from ferropickle import _demo

pytestmark = pytest.mark.slow


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

        # Data sent with the "ferropickle" family: written here (this process registers the
        # family but does not install, so every dumps call counted is the family's).
        ferro_dask.register_family()
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
