"""The real-cluster benchmark: scheduler CPU per task, stock vs the plugin.

    pytest benches/test_cluster.py --benchmark-only -s

Runs what ``python -m ferropickle demo`` runs: the seed workload (a function defined in
``__main__`` over 5,000 ``Path``s, ``FERROPICKLE_CLUSTER_TASKS`` overrides; once as
``client.map``, once as a ``client.submit`` loop) on a scheduler in its own process with two
worker processes, once stock and once with ``--preload ferropickle.dask`` on the scheduler only,
and prints the demo's tables. The figure
that matters is the scheduler's CPU per task (psutil, user + system), reported as a ratio; the
time pytest-benchmark records is only the wall time of both runs, cluster starts included.
"""

from __future__ import annotations

import os

import pytest

from ferropickle import _demo

pytest.importorskip("distributed")
pytest.importorskip("tqdm")

N_TASKS = int(os.environ.get("FERROPICKLE_CLUSTER_TASKS", "5000"))
N_WORKERS = 2
MODES = ("map", "submit")


def test_scheduler_cpu_per_task(benchmark, capsys):
    process = _demo.script_function()
    runs: dict[str, dict[str, _demo.RunResult]] = {}

    def stock_then_plugin() -> None:
        for label, plugin in (("stock", False), ("ferropickle", True)):
            runs[label] = _demo.run(
                label, N_TASKS, n_workers=N_WORKERS, plugin=plugin, progress=False, process=process
            )

    benchmark.group = f"real cluster, {N_TASKS} tasks (wall of both runs)"
    benchmark.pedantic(stock_then_plugin, rounds=1, iterations=1)
    sizes = _demo.message_sizes(process)
    for mode in MODES:
        stock, ours = runs["stock"][mode], runs["ferropickle"][mode]
        ratio = ours.cpu_per_task_s / stock.cpu_per_task_s
        benchmark.extra_info.update(
            {
                f"{mode}_tasks": N_TASKS,
                f"{mode}_stock_scheduler_cpu_per_task_us": stock.cpu_per_task_s * 1e6,
                f"{mode}_ferropickle_scheduler_cpu_per_task_us": ours.cpu_per_task_s * 1e6,
                f"{mode}_scheduler_cpu_ratio": ratio,
            }
        )
        with capsys.disabled():
            print()
            print(_demo.table(stock, ours, sizes, N_WORKERS, mode))
            print(f"scheduler CPU per task, ferropickle / stock: {ratio:.2f}x")
        assert ours.scheduler_stats["installed"] is True
        assert not stock.scheduler_stats["installed"]
        assert ours.results == stock.results
