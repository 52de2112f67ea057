"""Runs an atheris target under libFuzzer, seeing the Rust code's edges when it can.

``fuzz/build-instrumented`` builds the extension with SanitizerCoverage: its module constructor
registers its edge counters with libFuzzer (``__sanitizer_cov_8bit_counters_init`` and friends),
so those symbols must be global before the extension is loaded. atheris's libFuzzer lives in its
``core_with_libfuzzer`` module, which Python loads with local symbols; preloading it
(``LD_PRELOAD``) makes its symbols global, and ``internal_libfuzzer=True`` makes atheris use that
very copy (by default it would see a preloaded libFuzzer and load its libFuzzer-less core beside
it, two cores that disagree on whether ``Setup`` ran). A target calls :func:`fuzz` first thing:
it re-executes the interpreter with the preload once, then runs libFuzzer. With a plain build the
preload is harmless, and ``cov:`` counts Python edges only.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Callable

import atheris

#: Set in the re-executed process, so it does not re-execute again.
_MARK = "FERROPICKLE_FUZZ_PRELOADED"


def libfuzzer_library() -> str:
    here = pathlib.Path(atheris.__file__).parent
    (library,) = here.glob("core_with_libfuzzer*.so")
    return str(library)


def preload() -> None:
    """Re-executes this interpreter with atheris's libFuzzer preloaded, unless it already is.
    Must run before ferropickle is imported."""
    if os.environ.get(_MARK) == "1":
        # Children of this process (libFuzzer's -jobs workers, through a shell) must not
        # inherit a preload of a Python extension: they re-execute themselves.
        os.environ.pop("LD_PRELOAD", None)
        os.environ.pop(_MARK, None)
        return
    env = dict(os.environ, LD_PRELOAD=libfuzzer_library(), **{_MARK: "1"})
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def fuzz(one_input: Callable[[bytes], None]) -> None:
    atheris.Setup(sys.argv, one_input, internal_libfuzzer=True)
    atheris.Fuzz()
