"""``python -m ferropickle demo``: the seed workload on a real local Dask cluster, stock vs plugin.

``python -m ferropickle bench``: ferropickle against pickle, cloudpickle and distributed, with
the workloads in ``benches/workloads.py`` of the source checkout it is run from.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferropickle")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench",
        help="micro-benchmarks against the baselines, as ratios (run from a source checkout)",
    )
    bench.add_argument(
        "--budget", type=float, default=0.5, help="seconds per measurement (default 0.5)"
    )
    demo = sub.add_parser(
        "demo", help="a real local Dask cluster, stock vs --preload ferropickle.dask (needs dask)"
    )
    demo.add_argument("--tasks", type=int, default=5000, help="tasks to map (default 5000)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ferropickle import _demo

        return _demo.main(args.tasks, args.workers, progress=not args.no_progress)
    if args.command == "bench":
        workloads = _bench_workloads()
        if workloads is None:
            print(
                "python -m ferropickle bench runs the workloads in benches/workloads.py of a "
                "ferropickle source checkout: run it from the checkout's root directory.",
                file=sys.stderr,
            )
            return 2
        print(
            "Time per object (best of 5 passes) and bytes; 'x ours' divides by ferropickle's.\n"
            "Reproduce: python -m ferropickle bench"
        )
        print(workloads.table(workloads.measure(args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
