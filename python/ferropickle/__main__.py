"""``python -m ferropickle demo``: a real local Dask cluster, stock vs plugin: the seed workload,
or with ``--workload large`` tasks that all carry the same large object.

(The micro-benchmarks need the workloads of a source checkout: ``python benches/run.py``.)
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
from collections.abc import Callable


def _version() -> str:
    """``ferropickle X.Y.Z (CPython 3.N.M)``: the build and the interpreter it runs on."""
    import platform

    import ferropickle

    return (
        f"ferropickle {ferropickle.__version__} "
        f"({platform.python_implementation()} {platform.python_version()})"
    )


#: What the demo imports that ferropickle itself does not need, and the requirement that
#: installs each: the ``demo`` extra of pyproject.toml, which a test keeps equal to this.
_DEMO_NEEDS = {
    "distributed": "dask[distributed]>=2025.7.0,<=2026.8.0",
    "numpy": "numpy>=1.26",
    "pandas": "pandas>=2.1",
    "tqdm": "tqdm>=4.60",
}

#: The demo's default size per workload: the one docs/performance.md's tables were measured
#: with. The large workload's every task carries ~1 MiB (stock sends it with each task).
DEFAULT_TASKS = {"seed": 3000, "large": 300}


def _missing(modules: dict[str, str]) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def _missing_message(prog: str, missing: list[str]) -> str:
    """What to install for the demo. ferropickle is not on the package index, so the hint is
    the requirements themselves, which pip finds wherever ferropickle came from."""
    names = ", ".join(missing)
    verb = "is" if len(missing) == 1 else "are"
    requirements = " ".join(f"'{_DEMO_NEEDS[name]}'" for name in missing)
    return (
        f"{prog} demo needs {names}, which {verb} not installed: "
        f"python -m pip install {requirements} (in a source checkout or an unpacked sdist, "
        "python -m pip install '.[demo]' installs ferropickle with all of them)."
    )


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` greater than 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _prog() -> str:
    """``ferropickle`` when run as the installed command, else ``python -m ferropickle``."""
    name = pathlib.Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "ferropickle" if name.startswith("ferropickle") else "python -m ferropickle"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=_prog())
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="a real local Dask cluster, stock vs --preload ferropickle.dask (needs dask)"
    )
    demo.add_argument(
        "--workload",
        choices=sorted(DEFAULT_TASKS),
        default="seed",
        help="seed: a script function mapped over paths (the default); large: tasks that all "
        "carry the same ~1 MiB object (an array in a partial, a script function's global, "
        "map_blocks, a submit loop), with the scheduler's bytes sent per task",
    )
    demo.add_argument(
        "--tasks",
        type=_positive(int),
        default=None,
        help="tasks per workload (default "
        + ", ".join(f"{n} for {name}" for name, n in DEFAULT_TASKS.items())
        + ")",
    )
    demo.add_argument(
        "--workers", type=_positive(int), default=2, help="worker processes (default 2)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    # "demo" is the one command (argparse requires it).
    missing = _missing(_DEMO_NEEDS)
    if missing:
        print(_missing_message(parser.prog, missing), file=sys.stderr)
        return 2
    tasks = args.tasks or DEFAULT_TASKS[args.workload]
    if args.workload == "large":
        from ferropickle import _demo_large

        return _demo_large.main(tasks, args.workers, progress=not args.no_progress)
    from ferropickle import _demo

    return _demo.main(tasks, args.workers, progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
