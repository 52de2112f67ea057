"""``python -m ferropickle`` / ``ferropickle``: the shipped command runs the demo, with clear
messages, validated arguments and the right program name. (The micro-benchmarks need a source
checkout and are ``benches/run.py``, tested in ``test_bench_runner.py``.)"""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

from ferropickle.__main__ import main


def run_cli(code: str, *args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Runs ``main(args)`` in a fresh interpreter after ``code`` (which hides modules)."""
    program = f"import sys\n{code}\nfrom ferropickle.__main__ import main\nsys.exit(main({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--tasks", "0"], "argument --tasks: must be greater than 0, not 0"),
        (["demo", "--workers", "-2"], "argument --workers: must be greater than 0, not -2"),
        (["demo", "--tasks", "many"], "argument --tasks: 'many' is not a number"),
        (["bench"], "argument command: invalid choice: 'bench'"),
        (["demo", "--workload", "huge"], "argument --workload: invalid choice: 'huge'"),
    ],
)
def test_arguments_are_validated(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_without_its_extra_names_it(tmp_path):
    """``sys.modules[name] = None`` makes ``name`` unimportable, as if not installed."""
    result = run_cli("sys.modules['numpy'] = sys.modules['pandas'] = None", "demo", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "demo needs numpy, pandas, which are not installed" in result.stderr
    # ferropickle is not on the package index: the hint names what pip can find anywhere.
    assert "python -m pip install 'numpy>=1.26' 'pandas>=2.1'" in result.stderr
    assert "ferropickle[demo]" not in result.stderr


def test_demo_without_one_module_says_is(tmp_path):
    result = run_cli("sys.modules['tqdm'] = None", "demo", cwd=tmp_path)
    assert result.returncode == 2
    assert "demo needs tqdm, which is not installed: python -m pip install 'tqdm" in result.stderr


def test_the_missing_module_hint_installs_what_the_demo_extra_does():
    """The requirements the hint names are the ``demo`` extra's, as pip reads the metadata."""
    from ferropickle.__main__ import _DEMO_NEEDS

    extra = {
        req.split(";")[0].strip().replace(" ", "")
        for req in importlib.metadata.requires("ferropickle") or []
        if re.search(r"""extra\s*==\s*["']demo["']""", req)
    }
    assert extra == {req.replace(" ", "") for req in _DEMO_NEEDS.values()}


def test_the_installed_command_calls_itself_ferropickle(tmp_path):
    command = pathlib.Path(sys.executable).with_name("ferropickle")
    if not command.exists():
        pytest.skip("the ferropickle console script is not installed next to this python")
    usage = subprocess.run(
        [str(command), "demo", "--tasks", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: ferropickle demo")


def test_python_dash_m_calls_itself_python_dash_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ferropickle", "demo", "--tasks", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m ferropickle demo")
