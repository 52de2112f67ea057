"""``python -m ferropickle demo``: the seed workload on a real local Dask cluster, stock vs plugin.

``python -m ferropickle bench``: ferropickle against pickle, cloudpickle and distributed, with
the workloads in ``benches/workloads.py`` of the source checkout it is run from.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
from collections.abc import Callable
from types import ModuleType


def _bench_workloads() -> ModuleType | None:
    """``benches/workloads.py`` of the checkout in the current directory, if there is one."""
    path = pathlib.Path.cwd() / "benches" / "workloads.py"
    # Named as the benches import it, so its functions pickle by reference the same way there.
    spec = importlib.util.spec_from_file_location("workloads", path)
    if not path.is_file() or spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    # Registered first, as `import` does: its dataclasses look their module up there.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _version() -> str:
    """``ferropickle X.Y.Z (CPython 3.N.M)``: the build and the interpreter it runs on."""
    import platform

    import ferropickle

    return (
        f"ferropickle {ferropickle.__version__} "
        f"({platform.python_implementation()} {platform.python_version()})"
    )


#: What each command imports that ferropickle itself does not need, and the extra naming it.
_DEMO_NEEDS = ("distributed", "numpy", "pandas", "tqdm")
#: bench's rows that need more than ferropickle: (modules, the rows left out without them).
_BENCH_OPTIONAL = (
    (("dask",), "dask Task and both seed Task cases"),
    (("numpy", "pandas"), "both seed Task cases (their function reads numpy and pandas)"),
    (("cloudpickle",), "the cloudpickle rows"),
    (("distributed",), "the distributed rows"),
)


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
    bench = sub.add_parser(
        "bench",
        help="micro-benchmarks against the baselines, as ratios (run from a source checkout)",
    )
    bench.add_argument(
        "--budget", type=_positive(float), default=0.5, help="seconds per measurement (default 0.5)"
    )
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
    if args.command == "demo":
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
    if args.command == "bench":
        workloads = _bench_workloads()
        if workloads is None:
            print(
                f"{parser.prog} bench runs the workloads in benches/workloads.py of a "
                "ferropickle source checkout: run it from the checkout's root directory.",
                file=sys.stderr,
            )
            return 2
        for modules, rows in _BENCH_OPTIONAL:
            missing = _missing(modules)
            if missing:
                print(
                    f"{parser.prog} bench: {', '.join(missing)} not installed, so {rows} are "
                    "left out; python -m pip install '.[test]' installs everything it times.",
                    file=sys.stderr,
                )
        print(
            "Time per object (best of 5 passes) and bytes; 'x ours' divides by ferropickle's.\n"
            f"Reproduce: {parser.prog} bench"
        )
        print(workloads.table(workloads.measure(args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
