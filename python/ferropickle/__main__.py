"""``python -m ferropickle bench``: ferropickle against pickle, cloudpickle and distributed.

``python -m ferropickle demo``: the seed workload on a real local Dask cluster, stock vs plugin.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferropickle")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="micro-benchmarks against the baselines, as ratios")
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
        from ferropickle import _bench

        print(
            "Time per object (best of 5 passes) and bytes; 'x ours' divides by ferropickle's.\n"
            "Reproduce: python -m ferropickle bench"
        )
        print(_bench.table(_bench.measure(args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
