"""atheris target: ``ferropickle.loads`` against ``pickle.loads`` (see ``differential.py``).

    python fuzz/fuzz_loads.py fuzz/corpus -max_total_time=60     # what .ci/run does
    python fuzz/fuzz_loads.py fuzz/corpus -jobs=2 -workers=2      # a long run, until stopped

The seed corpus is made by ``python fuzz/make_corpus.py``. With the extension built by
``fuzz/build-instrumented``, libFuzzer also sees the edges of the Rust loader (see
``engine.py``). Every input the fuzzer ever found goes into ``fuzz/found/``
(``-artifact_prefix=fuzz/found/``), and ``tests/loads/test_fuzz_regressions.py`` replays each
of them on every test run.
"""

from __future__ import annotations

import pathlib
import sys

import atheris

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import engine

engine.preload()

with atheris.instrument_imports():
    import differential


def one_input(data: bytes) -> None:
    differential.check(data)


def main() -> None:
    # Both unpicklers recurse into nothing, but a hostile stream can build deep structures
    # whose repr() recurses: keep the comparison's own recursion bounded.
    sys.setrecursionlimit(2000)
    engine.fuzz(one_input)


if __name__ == "__main__":
    main()
