"""How many times faster ferropickle's ``dumps`` of a path is than ``pickle.dumps``, in one line.

    python benches/path_ratio.py    # e.g. "Path 3.1x, PurePosixPath 3.4x (pickle.dumps / ours)"

Needs only ferropickle. `.ci/run` prints it for each interpreter's venv in its summary: the
native ``Path`` writer is per interpreter (each CPython lays paths out differently), so this is
the one figure that tells whether it is in use there. Reported, never asserted: a timing on a
shared machine is not a test.
"""

from __future__ import annotations

import pathlib
import pickle
import timeit

import ferropickle

#: The paths timed: a task argument as the seed workload has them.
CASES = {
    "Path": pathlib.Path("/data/raw/2026/12/07/part-00042.parquet"),
    "PurePosixPath": pathlib.PurePosixPath("/data/raw/2026/12/07/part-00042.parquet"),
}


def best_seconds(
    dumps_by_name: dict[str, object], obj: object, number: int = 5_000, rounds: int = 40
) -> dict[str, float]:
    """The lowest time per call of each ``dumps`` over ``rounds`` runs of ``number`` calls, the
    implementations taking turns within each round so that a busy spell on a shared machine
    slows both alike. The call is compiled into timeit's loop (no lambda around it), so the
    figure is the call's own cost."""
    timers = {
        name: timeit.Timer("dumps(obj, 5)", globals={"dumps": dumps, "obj": obj})
        for name, dumps in dumps_by_name.items()
    }
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(number) / number)
    return best


def main() -> None:
    ratios = []
    for name, path in CASES.items():
        assert pickle.loads(ferropickle.dumps(path, 5)) == path
        best = best_seconds({"pickle": pickle.dumps, "ours": ferropickle.dumps}, path)
        ratio = best["pickle"] / best["ours"]
        ratios.append(f"{name} {ratio:.1f}x")
    print(", ".join(ratios), "(pickle.dumps / ours)")


if __name__ == "__main__":
    main()
