"""The `.pyi` stub documents exactly what the compiled module exports (mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_stub_matches_the_compiled_module():
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "ferropickle._ferropickle"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
