"""``python benches/run.py``, the micro-benchmark table of a source checkout: validated
arguments, and it says which rows it leaves out when a baseline is not installed. (The timings
themselves are never asserted.)"""

from __future__ import annotations

import pathlib
import subprocess
import sys

RUNNER = pathlib.Path(__file__).resolve().parents[1] / "benches" / "run.py"


def run_runner(*args: str, before: str = "") -> subprocess.CompletedProcess[str]:
    """Runs ``benches/run.py`` with ``args`` in a fresh interpreter, as ``python benches/run.py``
    does (its directory first on ``sys.path``), after ``before`` (which may hide modules or stub
    the measurement)."""
    program = (
        f"import runpy, sys\nsys.path.insert(0, {str(RUNNER.parent)!r})\n{before}\n"
        f"sys.argv = [{str(RUNNER)!r}, *{list(args)!r}]\n"
        f"runpy.run_path({str(RUNNER)!r}, run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )


def test_the_budget_must_be_a_positive_number():
    for value, message in (
        ("-1", "argument --budget: must be greater than 0, not -1"),
        ("0", "argument --budget: must be greater than 0, not 0"),
        ("soon", "argument --budget: 'soon' is not a number"),
    ):
        result = run_runner("--budget", value)
        assert result.returncode == 2
        assert result.stderr.startswith("usage: python benches/run.py")
        assert message in result.stderr


def test_it_says_which_rows_it_leaves_out():
    """``sys.modules['pandas'] = None`` makes pandas unimportable, as if not installed; the
    measurement is stubbed (this checks the messages, not the timings)."""
    result = run_runner(
        before=(
            "sys.modules['pandas'] = None\nimport workloads\n"
            "workloads.measure = lambda budget: []\nworkloads.table = lambda rows: 'the table'"
        )
    )
    assert result.returncode == 0, result.stderr
    assert (
        "python benches/run.py: pandas not installed, so both seed Task cases (their function "
        "reads numpy and pandas) are left out" in result.stderr
    )
    assert "cloudpickle" not in result.stderr  # installed: nothing said about it
    assert result.stdout.splitlines()[-2:] == ["Reproduce: python benches/run.py", "the table"]
