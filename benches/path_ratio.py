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


def best_seconds(dumps: object, obj: object, number: int = 20_000, repeat: int = 5) -> float:
    """The lowest time per call over ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(lambda: dumps(obj, 5), number=number, repeat=repeat)) / number


def main() -> None:
    ratios = []
    for name, path in CASES.items():
        assert pickle.loads(ferropickle.dumps(path, 5)) == path
        ratio = best_seconds(pickle.dumps, path) / best_seconds(ferropickle.dumps, path)
        ratios.append(f"{name} {ratio:.1f}x")
    print(", ".join(ratios), "(pickle.dumps / ours)")


if __name__ == "__main__":
    main()
