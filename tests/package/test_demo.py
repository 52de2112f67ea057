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
