"""``python benches/run.py``, the micro-benchmark table of a source checkout: validated
arguments, the rows it leaves out when a baseline is not installed, and the table of repeated
runs. (The measurement is stubbed: timings are never asserted.)"""

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


def test_the_budget_and_the_runs_must_be_positive_numbers():
    for args, message in (
        (("--budget", "-1"), "argument --budget: must be greater than 0, not -1"),
        (("--budget", "0"), "argument --budget: must be greater than 0, not 0"),
        (("--budget", "soon"), "argument --budget: 'soon' is not a number"),
        (("--runs", "0"), "argument --runs: must be greater than 0, not 0"),
        (("--runs", "1.5"), "argument --runs: '1.5' is not a number"),
    ):
        result = run_runner(*args)
        assert result.returncode == 2
        assert result.stderr.startswith("usage: python benches/run.py")
        assert message in result.stderr


def test_it_says_which_rows_it_leaves_out():
    """``sys.modules['pandas'] = None`` makes pandas unimportable, as if not installed; the
    measurement is stubbed (this checks the messages, not the timings)."""
    result = run_runner(
        before=(
            "sys.modules['pandas'] = None\nimport workloads\n"
            "workloads.measure = lambda budget: []\nworkloads.table = lambda runs: 'the table'"
        )
    )
    assert result.returncode == 0, result.stderr
    assert (
        "python benches/run.py: pandas not installed, so both seed Task cases (their function "
        "reads numpy and pandas) are left out" in result.stderr
    )
    assert "cloudpickle" not in result.stderr  # installed: nothing said about it
    assert result.stdout.splitlines()[-2:] == ["Reproduce: python benches/run.py", "the table"]


#: Two runs of two cases, in microseconds: (case, impl, dumps, loads, bytes). ``nan`` dumps is a
#: row that times only loads.
STUB_RUNS = """
import math
from workloads import Timing
STOCK = "pickle.loads(ours)"
RUNS = [
    [("Path", "ferropickle", 1.0, 2.0, 94), ("Path", "pickle", 4.0, 3.0, 94),
     ("seed", "ferropickle", 10.0, 20.0, 1000), ("seed", STOCK, math.nan, 30.0, 1000)],
    [("Path", "ferropickle", 2.0, 2.0, 94), ("Path", "pickle", 6.0, 3.0, 94),
     ("seed", "ferropickle", 10.0, 20.0, 1000), ("seed", STOCK, math.nan, 20.0, 1000)],
]
runs = iter([[Timing(c, i, d / 1e6, l / 1e6, b) for c, i, d, l, b in run] for run in RUNS])
workloads.measure = lambda budget: next(runs)
"""


def test_repeated_runs_give_each_figure_as_a_range():
    """A multiple is taken within its run: pickle's Path dumps is 4x ours in the first run and 3x
    in the second, so "3.00-4.00x", although its time ranges over 4-6 us and ours over 1-2 us."""
    result = run_runner("--runs", "2", before="import workloads\n" + STUB_RUNS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Time per object (best of 5 passes), lowest-highest over 2 runs")
    assert lines[1] == "Reproduce: python benches/run.py --runs 2"
    rows = [line.split() for line in lines[3:]]
    assert rows == [
        ["Path", "ferropickle", "1.00-2.00", "1.00x", "2.00", "1.00x", "94", "1.00x"],
        ["Path", "pickle", "4.00-6.00", "3.00-4.00x", "3.00", "1.50x", "94", "1.00x"],
        ["seed", "ferropickle", "10.00", "1.00x", "20.00", "1.00x", "1000", "1.00x"],
        ["seed", "pickle.loads(ours)", "-", "20.00-30.00", "1.00-1.50x", "1000", "1.00x"],
    ]
