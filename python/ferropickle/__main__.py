"""``python -m ferropickle demo``: the seed workload on a real local Dask cluster, stock vs plugin.

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


#: What the demo imports that ferropickle itself does not need (the demo extra installs them).
_DEMO_NEEDS = ("distributed", "numpy", "pandas", "tqdm")


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


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
        "--tasks", type=_positive(int), default=5000, help="tasks to map (default 5000)"
    )
    demo.add_argument(
        "--workers", type=_positive(int), default=2, help="worker processes (default 2)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    # "demo" is the one command (argparse requires it).
    missing = _missing(_DEMO_NEEDS)
    if missing:
        print(
            f"{parser.prog} demo needs {', '.join(missing)}, which is not installed: "
            "install the demo extra, python -m pip install 'ferropickle[demo]' (from a "
            "source checkout: python -m pip install '.[demo]').",
            file=sys.stderr,
        )
        return 2
    from ferropickle import _demo

    return _demo.main(args.tasks, args.workers, progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
