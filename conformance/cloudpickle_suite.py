"""Run cloudpickle's own test suite against the installed cloudpickle, stock and with
``cloudpickle.dumps`` replaced by ``ferropickle.dumps``; report what the swap breaks.

A manual command, never part of CI (it needs a cloudpickle source checkout: the tests are not in
cloudpickle's sdist or wheel)::

    python conformance/cloudpickle_suite.py /path/to/cloudpickle-checkout [--mode both] \
        [--workdir DIR] [-- extra pytest args]

Modes: ``stock``; ``swapped``; ``both`` (stock and swapped, the default).

The checkout's ``tests/`` are copied into a temporary directory *without* the checkout's
``cloudpickle/`` package, so the test process and every child Python the tests start import the
installed cloudpickle (``testutils._make_cwd_env`` points the children's ``PYTHONPATH`` at that
directory). The directory also holds ``_cloudpickle_testpkg`` (upstream pip-installs it), the
swap shim ``cloudpickle_swap.py`` and a ``sitecustomize.py`` that activates the shim when
``FERROPICKLE_CONFORMANCE_SWAP=1``; so in the swapped run, ``cloudpickle.dumps`` is
``ferropickle.dumps`` in the pytest process, in ``subprocess_pickle_echo``'s echo process, in
``assert_run_python_script``'s scripts and in ``subprocess_worker``'s pool (forked).

Each run writes ``<mode>.xml`` (junit) in the work directory; each swapped run is compared with
the stock one (see ``junit_compare.py``) and written as ``report-<mode>.md`` there too. Exit
status: 0 if the swap breaks no test that passes stock, 1 if it does, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import junit_compare

SINGLE_MODES = ("stock", "swapped")
MODES = {"both": SINGLE_MODES}
HERE = Path(__file__).resolve().parent
SHIM = HERE / "cloudpickle_swap.py"
SITECUSTOMIZE = """\
# Written by ferropickle's conformance/cloudpickle_suite.py.
import cloudpickle_swap

if cloudpickle_swap.requested():
    cloudpickle_swap.install_hook()
"""
PYTEST_INI = """\
# Written by ferropickle's conformance/cloudpickle_suite.py: makes this directory pytest's
# rootdir, so no configuration from a parent directory applies.
[pytest]
"""


def prepare(checkout: Path, workdir: Path) -> None:
    tests = checkout / "tests"
    if not (tests / "cloudpickle_test.py").is_file():
        raise SystemExit(f"{checkout} is not a cloudpickle checkout (no tests/cloudpickle_test.py)")
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "tests"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(tests, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    testpkg = tests / "cloudpickle_testpkg" / "_cloudpickle_testpkg"
    if testpkg.is_dir():
        shutil.rmtree(workdir / "_cloudpickle_testpkg", ignore_errors=True)
        shutil.copytree(testpkg, workdir / "_cloudpickle_testpkg")
    shutil.copy2(SHIM, workdir / SHIM.name)
    (workdir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (workdir / "pytest.ini").write_text(PYTEST_INI)


def describe(checkout: Path, python: str, env: dict[str, str]) -> str:
    installed = subprocess.run(
        [python, "-c", "import cloudpickle as c; print(c.__version__, c.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"installed cloudpickle: {installed}\ncheckout: {checkout} {commit or '(not git)'}"


def run(mode: str, workdir: Path, python: str, pytest_args: list[str]) -> Path:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(workdir), str(workdir / "tests")])
    env.pop("PYTHONSTARTUP", None)
    env.pop("FERROPICKLE_CONFORMANCE_SWAP", None)
    if mode == "swapped":
        env["FERROPICKLE_CONFORMANCE_SWAP"] = "1"
    junit = workdir / f"{mode}.xml"
    cmd = [
        python,
        "-m",
        "pytest",
        "-p",
        "cloudpickle_swap",
        "-p",
        "no:cacheprovider",
        "-r",
        "fEs",
        f"--junitxml={junit}",
        "tests",
        *pytest_args,
    ]
    print(f"\n=== {mode}: {' '.join(cmd)}  (cwd {workdir})", flush=True)
    subprocess.run(cmd, cwd=workdir, env=env, check=False)
    if not junit.is_file():
        raise SystemExit(f"pytest wrote no {junit}")
    return junit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Arguments after -- go to pytest (e.g. -- -k closure -x).",
    )
    parser.add_argument("checkout", type=Path, help="a cloudpickle source checkout")
    parser.add_argument("--mode", choices=(*MODES, *SINGLE_MODES), default="both")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--python", default=sys.executable, help="default: this interpreter")
    argv = sys.argv[1:] if argv is None else argv
    pytest_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, pytest_args = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)

    checkout = args.checkout.resolve()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="ferropickle-cloudpickle-"))).resolve()
    prepare(checkout, workdir)
    print(describe(checkout, args.python, dict(os.environ)))
    print(f"work directory: {workdir}")

    modes = MODES.get(args.mode, (args.mode,))
    results = {
        mode: junit_compare.read(run(mode, workdir, args.python, pytest_args)) for mode in modes
    }
    print()
    for mode, result in results.items():
        print(f"{mode}: {junit_compare.counts(result)}")
    if "stock" not in results:
        return 0
    broken = False
    for mode in modes:
        if mode == "stock":
            continue
        labels = ("stock", mode)
        print("\n" + junit_compare.report(results["stock"], results[mode], labels, False))
        markdown = workdir / f"report-{mode}.md"
        markdown.write_text(junit_compare.report(results["stock"], results[mode], labels, True))
        print(f"(Markdown report: {markdown})")
        broken = broken or bool(junit_compare.regressions(results["stock"], results[mode]))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
