"""`stats` and `report` in this process: the plugin's counters, the costliest task prefixes and
the table (against a real scheduler: ``cluster/``)."""

from __future__ import annotations

import dask
import distributed
import pytest
from dask._task_spec import Task
from plugin_support import dpickle

import ferropickle
import ferropickle.dask as ferro_dask


def test_local_stats_adds_the_plugins_counters(installed):
    out = ferro_dask.stats()
    assert out.keys() >= ferropickle.stats().keys()
    assert out["installed"] is True
    assert isinstance(out["dumps_fallbacks"], dict)
    assert isinstance(out["loads_fallbacks"], dict)
    assert out["distributed_version"] == distributed.__version__


def test_stats_lists_the_top_prefixes_by_bytes(installed):
    for i in range(3):
        dpickle.dumps(Task(f"small-{i:08x}", int, i))
    dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 10_000))
    top = ferro_dask.stats()["task_prefixes"]
    assert list(top) == ["big", "small"]
    assert top["small"]["dumps"] == 3
    assert top["big"]["bytes"] > 10_000
    assert set(top["big"]) == {"dumps", "bytes", "seconds", "largest"}


def test_the_report_size_is_a_setting():
    with dask.config.set({"ferropickle.report.top": 1}):
        assert ferro_dask.install()
    dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 10_000))
    dpickle.dumps(Task("small-0a1b2c3d", int, 1))
    assert list(ferro_dask.stats()["task_prefixes"]) == ["big"]


def test_report_is_a_table_of_the_costliest_prefixes(installed):
    for i in range(4):
        dpickle.dumps(Task(f"small-{i:08x}", int, i))
    dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 10_000))
    text = ferro_dask.report()
    assert isinstance(text, ferro_dask.Report)
    assert repr(text) == str(text)  # shown as the table at a prompt
    lines = str(text).splitlines()
    assert lines[0].startswith("ferropickle in this process: installed; 5 dumps,")
    assert lines[1].startswith("top 2 by bytes; pickles from 1.00 MiB are explained in the log")
    assert lines[3].split() == [
        "task", "prefix", "dumps", "bytes", "bytes/dumps", "largest", "time", "time/dumps"
    ]  # fmt: skip
    assert lines[4].split()[:2] == ["big", "1"]
    assert lines[5].split()[:2] == ["small", "4"]
    by_calls = str(ferro_dask.report(sort="calls", top=1)).splitlines()
    assert by_calls[1].startswith("top 1 by calls")
    assert by_calls[4].split()[:2] == ["small", "4"]
    assert len(by_calls) == 5


def test_report_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="sort must be one of"):
        ferro_dask.report(sort="size")
    with pytest.raises(ValueError, match="top must be at least 1"):
        ferro_dask.report(top=0)
    assert "(nothing pickled yet)" in ferro_dask.report()


def test_stats_report_and_metrics_agree_to_the_byte(installed):
    prometheus_client = pytest.importorskip("prometheus_client")
    for i in range(3):
        dpickle.dumps(Task(f"inc-{i:08x}", int, i))
    dpickle.dumps(Task("big-0a1b2c3d", len, "x" * 10_000))
    dpickle.dumps({"op": "not a task"})
    totals = ferro_dask.stats()["task_messages"]
    assert totals["dumps"] == 4
    header = str(ferro_dask.report()).splitlines()[0]
    assert f"; 4 dumps, {totals['bytes']:,} bytes (" in header
    samples = [
        sample
        for metric in prometheus_client.REGISTRY.collect()
        if metric.name == "dask_ferropickle_task_prefix_dumps_bytes"
        for sample in metric.samples
        if sample.name.endswith("_total")
    ]
    assert sum(sample.value for sample in samples) == totals["bytes"]
    assert ferro_dask.stats()["task_messages"] == totals  # asking changed nothing


def test_messages_that_are_not_tasks_are_reported_apart(installed):
    dpickle.dumps(Task("inc-0a1b2c3d", int, 1))
    dpickle.dumps({"op": "not a task"})
    lines = str(ferro_dask.report()).splitlines()
    assert lines[0].startswith("ferropickle in this process: installed; 1 dumps, ")
    assert lines[4].split()[:2] == ["inc", "1"]
    assert lines[6] == "messages that are not tasks, apart from the task prefixes above"
    assert lines[8].split()[0] == "message"
    assert lines[9].split()[:2] == ["(dict)", "1"]
    assert ferro_dask.stats()["other_messages"]["(dict)"]["dumps"] == 1


def test_a_decimal_threshold_is_shown_with_its_exact_bytes():
    """dask shows sizes in binary units: "500 kB" would come back as "488.28 kiB" alone."""
    with dask.config.set({"ferropickle.large-pickle-warning": "500 kB"}):
        assert ferro_dask.install()
    dpickle.dumps(Task("inc-0a1b2c3d", int, 1))
    line = str(ferro_dask.report()).splitlines()[1]
    assert (
        line == "top 1 by bytes; pickles from 488.28 kiB (500,000 bytes) are explained in the log"
    )
