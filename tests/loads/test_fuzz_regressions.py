"""Every input the differential fuzzer (``fuzz/fuzz_loads.py``) or the team ever found, replayed:
``ferropickle.loads`` and ``pickle.loads`` agree on each (same value, or the same exception
class), under the harness's rules (``fuzz/differential.py``)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

FUZZ = pathlib.Path(__file__).resolve().parents[2] / "fuzz"
FOUND = sorted((FUZZ / "found").iterdir())


def load_harness():
    spec = importlib.util.spec_from_file_location("differential", FUZZ / "differential.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


differential = load_harness()


def test_the_regression_corpus_is_there():
    assert len(FOUND) >= 10


@pytest.mark.parametrize("path", FOUND, ids=lambda p: p.name)
def test_found_input(path):
    differential.check(path.read_bytes())


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"cos\nsystem\n(S'true'\ntR.", (True, False)),
        (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x93.", (True, False)),
        (b"N\x80\x05r\xff\xff\xff\x7f.", (False, True)),
        (b"K\x01.", (False, False)),
    ],
    ids=repr,
)
def test_the_harness_keeps_both_sides_side_effect_free(data, verdict):
    """Inputs naming a global never reach either unpickler; memo indices that would make C
    pickle allocate gigabytes only reach ours."""
    assert differential.scan(data) == verdict
