"""The README's main job, `python -m pip install ".[demo]" && python -m ferropickle demo`."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_demo_extra_installs_what_the_demo_imports():
    """A fresh machine gets only what `.[demo]` names: the demo's task function reads numpy and
    pandas, and its progress bar is tqdm."""
    # What the installed package declares, as pip reads it.
    names = {
        re.match(r"[A-Za-z0-9_.-]+(\[[^\]]*\])?", req).group(0).lower()
        for req in importlib.metadata.requires("ferropickle") or []
        if re.search(r"""extra\s*==\s*["']demo["']""", req)
    }
    assert {"dask[distributed]", "tqdm", "numpy", "pandas"} <= names
    assert (
        'python -m pip install ".[demo]" && python -m ferropickle demo'
        in (ROOT / "README.md").read_text()
    )


@pytest.mark.slow
def test_the_demo_runs_a_real_cluster_twice_and_gets_identical_results():
    result = subprocess.run(
        [sys.executable, "-m", "ferropickle", "demo", "--tasks", "300", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"results identical\s+yes", result.stdout), result.stdout
    assert "scheduler CPU per task" in result.stdout


@pytest.mark.slow
def test_the_large_demo_prints_the_bytes_per_task_of_each_workload():
    """``--workload large``: stock and plugin runs of the four large-object workloads, the
    scheduler's bytes sent per task side by side, and the same results."""
    result = subprocess.run(
        [
            sys.executable, "-m", "ferropickle", "demo", "--workload", "large", "--tasks", "20",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    from ferropickle._demo_large import WORKLOADS

    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in result.stdout.splitlines()
        if line.startswith("| ") and "workload" not in line
    }
    assert set(rows) == set(WORKLOADS), result.stdout
    for name, cells in rows.items():
        assert cells[-1].strip(" |") == "yes", name
        stock, ours = (int(cell.replace(",", "")) for cell in cells[1:3])
        # Each task carries the object (0.9 to 1 MiB pickled) in stock's messages; with
        # send-once it crosses the scheduler's sockets about once for the 20 tasks.
        assert stock > 900_000, name
        assert ours < stock / 4, name
    assert "20 tasks per workload" in result.stdout


#: Defined as in a script, so that it is pickled by value: the workers can't import this module.
CAN_IMPORT_FERROPICKLE = """
def process():
    try:
        import ferropickle
    except ImportError:
        return False
    return True
"""


@pytest.mark.slow
def test_the_demo_workers_cannot_import_ferropickle():
    """The demo says its workers run without ferropickle: they share its environment, so it
    starts them with ferropickle made unimportable, and they still run the plugin's tasks."""
    from ferropickle import _demo

    with _demo.ProcessCluster(
        2, scheduler_preload=["ferropickle.dask"], workers_without_ferropickle=True
    ) as cluster:
        client = cluster.client()
        try:
            probe = _demo.script_function(CAN_IMPORT_FERROPICKLE)
            assert client.run_on_scheduler(probe) is True
            assert set(client.run(probe).values()) == {False}
            process = _demo.script_function()
            paths = _demo.seed_paths(20)
            assert client.gather(client.map(process, paths)) == [process(p) for p in paths]
        finally:
            client.close()
