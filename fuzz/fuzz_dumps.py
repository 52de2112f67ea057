"""atheris target: ``ferropickle.dumps`` against ``cloudpickle.dumps``/``pickle.dumps`` on
generated programs (see ``differential_dumps.py``).

    python fuzz/make_corpus.py --dumps CORPUS                  # random seed programs
    python fuzz/fuzz_dumps.py CORPUS -max_total_time=60        # what .ci/run does
    python fuzz/fuzz_dumps.py --loop --seconds 60 [--seed N]   # random programs, no atheris
    python fuzz/fuzz_dumps.py --reduce FILE                    # shrinks a saved mismatch

libFuzzer's bytes are the program's decisions, so its mutations steer the generator; with the
extension built by ``fuzz/build-instrumented`` it also sees the Rust code's edges. A mismatch
does not stop the run: its input is saved as ``fuzz/found/dumps/CLASS-SHA1`` (CLASS is
``differential_dumps.classify``'s guess; one file per class and run, none for a class that
already has one), which ``tests/loads/test_fuzz_regressions.py`` replays on every test run. Anything
else that goes wrong (an exception, a crash) stops libFuzzer, which saves the input under its
``-artifact_prefix``. Progress lines (programs/s, comparisons, mismatches by class) go to stderr.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import pathlib
import random
import sys
import time

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

FOUND = pathlib.Path(os.environ.get("FERROPICKLE_FUZZ_FOUND", HERE / "found" / "dumps"))


class Stats:
    def __init__(self):
        self.start = self.last = time.monotonic()
        self.programs = self.comparisons = 0
        self.mismatches: collections.Counter[str] = collections.Counter()
        self.saved: list[pathlib.Path] = []

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        return (
            f"dumps: {self.programs} programs ({self.programs / max(elapsed, 1e-9):.0f}/s), "
            f"{self.comparisons} comparisons, {sum(self.mismatches.values())} mismatches "
            f"{dict(self.mismatches)}, saved {[p.name for p in self.saved]}"
        )

    def tick(self) -> None:
        if time.monotonic() - self.last >= 10:
            self.last = time.monotonic()
            print(self.line(), file=sys.stderr, flush=True)


def save(data: bytes, cls: str, stats: Stats) -> None:
    FOUND.mkdir(parents=True, exist_ok=True)
    if any(p.name.startswith(cls + "-") for p in FOUND.iterdir()):
        return
    path = FOUND / f"{cls}-{hashlib.sha1(data).hexdigest()[:12]}"
    path.write_bytes(data)
    stats.saved.append(path)


def one(differential_dumps, data: bytes, stats: Stats, verbose: bool) -> None:
    stats.programs += 1
    try:
        stats.comparisons += differential_dumps.run(data)
    except differential_dumps.Mismatch as e:
        cls = differential_dumps.classify(e.tags)
        stats.mismatches[cls] += 1
        if verbose and stats.mismatches[cls] == 1:
            print(f"--- first {cls} mismatch:\n{e}", file=sys.stderr)
        save(data, cls, stats)
    stats.tick()


def preload() -> None:
    """Preloads libFuzzer where atheris is installed (an instrumented extension needs its
    hooks); without atheris, the extension can only be a plain build, which needs nothing."""
    try:
        import engine
    except ImportError:
        return
    engine.preload()


def loop(args) -> None:
    preload()
    import differential_dumps

    rng = random.Random(args.seed)
    stats = Stats()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        data = rng.randbytes(rng.randrange(8, 256))
        one(differential_dumps, data, stats, args.verbose)
    print(stats.line(), file=sys.stderr)


def mismatch_class(differential_dumps, data: bytes) -> str | None:
    try:
        differential_dumps.run(data)
    except differential_dumps.Mismatch as e:
        return differential_dumps.classify(e.tags)
    return None


def reduce(path: pathlib.Path) -> None:
    """Shrinks the input in `path` while it keeps a mismatch of the same class: drops chunks of
    bytes, then lowers each byte (a smaller decision is a simpler choice); rewrites the file and
    prints the mismatch."""
    preload()
    import differential_dumps

    data = path.read_bytes()
    cls = mismatch_class(differential_dumps, data)
    if cls is None:
        sys.exit(f"{path}: no mismatch")
    size = len(data) // 2
    while size >= 1:
        i = 0
        while i < len(data):
            candidate = data[:i] + data[i + size :]
            if mismatch_class(differential_dumps, candidate) == cls:
                data = candidate
            else:
                i += size
        size //= 2
    for i in range(len(data)):
        for byte in sorted({0, data[i] // 2, max(data[i] - 1, 0)} - {data[i]}):
            candidate = data[:i] + bytes([byte]) + data[i + 1 :]
            if mismatch_class(differential_dumps, candidate) == cls:
                data = candidate
                break
    path.write_bytes(data)
    try:
        differential_dumps.run(data)
    except differential_dumps.Mismatch as e:
        print(f"{path} ({len(data)} bytes, {cls}):\n{e}")


def fuzz() -> None:
    import atheris
    import engine

    engine.preload()
    with atheris.instrument_imports():
        import differential_dumps

    stats = Stats()
    engine.fuzz(lambda data: one(differential_dumps, data, stats, verbose=False))


def main() -> None:
    if sys.argv[1:2] == ["--reduce"]:
        reduce(pathlib.Path(sys.argv[2]))
        return
    if "--loop" not in sys.argv:
        fuzz()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print each class's first one")
    loop(parser.parse_args())


if __name__ == "__main__":
    main()
