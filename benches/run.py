"""The micro-benchmark table: ferropickle against pickle, cloudpickle and distributed, as ratios.

    python benches/run.py              # about 40 s; --budget S changes the seconds per measurement
    python benches/run.py --runs 3     # three runs, each figure as the range across them

Runs from a source checkout (the workloads are ``benches/workloads.py`` beside it) with
ferropickle installed (``python -m pip install ".[test]"`` installs everything it times). Every
case is timed for every implementation in this one process, one after the other; each row is
also given as a multiple of ferropickle's, so the machine's speed cancels out.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

# `python benches/run.py` puts this directory first on sys.path: the workloads import as
# `workloads`, as pytest imports them for the benches, so their functions pickle by reference
# under the same module name in both.
import workloads

from ferropickle.__main__ import _positive

#: Rows that need more than ferropickle: (modules, the rows left out without them).
OPTIONAL = (
    (("dask",), "dask Task and both seed Task cases"),
    (("numpy", "pandas"), "both seed Task cases (their function reads numpy and pandas)"),
    (("cloudpickle",), "the cloudpickle rows"),
    (("distributed",), "the distributed rows"),
)


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benches/run.py",
        description="ferropickle against pickle, cloudpickle and distributed, as ratios",
    )
    parser.add_argument(
        "--budget",
        type=_positive(float),
        default=0.5,
        help="seconds per measurement (default 0.5)",
    )
    parser.add_argument(
        "--runs",
        type=_positive(int),
        default=1,
        help="measure this many times and give each figure as the range across runs (default 1)",
    )
    args = parser.parse_args(argv)
    for modules, rows in OPTIONAL:
        missing = _missing(modules)
        if missing:
            print(
                f"{parser.prog}: {', '.join(missing)} not installed, so {rows} are left out; "
                "python -m pip install '.[test]' installs everything it times.",
                file=sys.stderr,
            )
    command = " ".join([parser.prog, *(argv if argv is not None else sys.argv[1:])])
    over = f", lowest-highest over {args.runs} runs" if args.runs > 1 else ""
    print(
        f"Time per object (best of 5 passes){over}, and bytes; 'x ours' divides by "
        f"ferropickle's in the same run.\nReproduce: {command}"
    )
    print(workloads.table([workloads.measure(args.budget) for _ in range(args.runs)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
