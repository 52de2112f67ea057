"""Prometheus: the collector lives while the plugin is installed, its names follow distributed's
namespace and its types say what each metric is (a real scheduler's ``/metrics`` is checked in
``cluster/``)."""

from __future__ import annotations

import dask
import pytest
from dask._task_spec import Task
from plugin_support import dpickle

import ferropickle.dask as ferro_dask


def test_prometheus_collector_lives_while_installed():
    prometheus_client = pytest.importorskip("prometheus_client")
    assert ferro_dask.install()
    dpickle.dumps([1, 2, 3])
    text = prometheus_client.generate_latest().decode()
    assert "dask_ferropickle_dumps_calls_total" in text
    assert "dask_ferropickle_installed 1.0" in text
    ferro_dask.uninstall()
    assert "ferropickle_" not in prometheus_client.generate_latest().decode()


def test_prometheus_metric_types_and_namespace():
    prometheus_client = pytest.importorskip("prometheus_client")
    assert ferro_dask.install()
    dpickle.dumps(Task("inc-0a1b2c3d", int, 1))
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
