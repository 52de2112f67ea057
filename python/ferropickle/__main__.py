"""``python -m ferropickle bench``: ferropickle against pickle, cloudpickle and distributed."""

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
    args = parser.parse_args(argv)
    if args.command == "bench":
        from ferropickle import _bench

        print("Times per call (best of 5); 'x ours' is that time divided by ferropickle's.")
        print(_bench.table(_bench.measure(args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
