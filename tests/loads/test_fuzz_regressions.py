"""Every input the differential fuzzers or the team ever found, replayed.

``fuzz/found/*`` (``fuzz/fuzz_loads.py``): ``ferropickle.loads`` and ``pickle.loads`` agree on
each (same value, or the same exception class), under the harness's rules
(``fuzz/differential.py``). ``fuzz/found/dumps/*`` (``fuzz/fuzz_dumps.py``): each is a generated
program, replayed through the same generator (``fuzz/differential_dumps.py``); at every step
``ferropickle.dumps`` writes cloudpickle's bytes (pickle's where nothing is by value)."""

from __future__ import annotations

import importlib.util
import pathlib
import pickle
import pickletools
import random

import cloudpickle
import pytest

FUZZ = pathlib.Path(__file__).resolve().parents[2] / "fuzz"
FOUND = sorted(p for p in (FUZZ / "found").iterdir() if p.is_file())
FOUND_DUMPS = sorted((FUZZ / "found" / "dumps").iterdir())

#: Programs that still show a known defect of dumps, by file name: each fails until its defect
#: is fixed, then its entry goes (strict: an unexpected pass fails the run).
KNOWN_DUMPS_DEFECTS: dict[str, str] = {}


def load_harness(name):
    spec = importlib.util.spec_from_file_location(name, FUZZ / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


differential = load_harness("differential")
differential_dumps = load_harness("differential_dumps")


def test_the_regression_corpus_is_there():
    assert len(FOUND) >= 10
    assert len(FOUND_DUMPS) >= 4


@pytest.mark.parametrize("path", FOUND, ids=lambda p: p.name)
def test_found_input(path):
    differential.check(path.read_bytes())


def dumps_case(path):
    reason = KNOWN_DUMPS_DEFECTS.get(path.name)
    xfail = pytest.mark.xfail(strict=True, raises=differential_dumps.Mismatch, reason=reason)
    marks = [xfail] if reason else []
    return pytest.param(path, marks=marks, id=path.name)


@pytest.mark.parametrize("path", [dumps_case(p) for p in FOUND_DUMPS])
def test_found_dumps_program(path):
    assert differential_dumps.run(path.read_bytes()) > 0


def test_the_dumps_harness_sees_a_difference():
    """The comparison is not vacuous: a pickler that loses a shared reference is caught, and
    told apart from one that only writes other bytes."""
    shared = [1]

    def unshared(obj, protocol, **kwargs):
        return pickle.dumps([[1], [1]], protocol, **kwargs)

    with pytest.raises(differential_dumps.Mismatch, match="DIFFERENT MEANING"):
        differential_dumps.compare([shared, shared], "a shared list", set(), dumps=unshared)

    def unframed(obj, protocol, **kwargs):
        return pickle.dumps(obj, 2)

    with pytest.raises(differential_dumps.Mismatch, match="same meaning"):
        differential_dumps.compare([shared, shared], "a shared list", set(), dumps=unframed)
    assert differential_dumps.compare([shared, shared], "a shared list", set()) == 3


def test_the_dumps_generator_reaches_every_kind_of_object_and_change():
    """Random inputs make programs of every kind the fuzzer is meant to cover: the three kinds
    of module, each kind of definition and value, and each change between two calls."""
    rng = random.Random(0)
    seen: set[str] = set()
    for _ in range(500):
        program = differential_dumps.generate(rng.randbytes(rng.randrange(16, 256)))
        seen |= program.tags.union(*program.step_tags)
    assert seen >= {
        *("in-main", "in-module", "in-by-value"),
        *("lambda", "closure", "class", "partial", "reduce", "reduce-name", "shared"),
        *("numpy", "builtin-type", "fresh-tuple", "frozenset", "namespace"),
        *("rebind", "defaults", "cell", "qualname", "module-main", "module-none"),
        *("attribute", "recreate", "partial-dict", "register", "unregister"),
        *("module-renamed", "extra-ref", "frame-mark", "code-shared"),
    }


@pytest.mark.parametrize("mark", [1, 2])
def test_the_dumps_generator_puts_a_frame_mark_inside_the_target(mark):
    """`frame_padded` sizes its fillers so that the first (or second) frame `pickle` writes
    ends inside the target's opcodes, wherever the fraction asks."""
    ns = {"__name__": "__main__"}
    exec("def f(x, y=(1, 2)):\n    return [x, y, len]", ns)
    target = ns["f"]
    fillers = 2 * mark
    ends = set()
    for fraction in range(0, 256, 16):
        stream = cloudpickle.dumps(differential_dumps.frame_padded(target, fraction, mark), 5)
        ops = list(pickletools.genops(stream))
        content = [(op.name, pos) for op, _, pos in ops if op.name != "FRAME"]
        # EMPTY_LIST MEMOIZE MARK, each filler and its MEMOIZE, the target, APPENDS STOP.
        start, end = content[3 + 2 * fillers][1], content[-2][1]
        frame_ends = [pos for op, _, pos in ops if op.name == "FRAME"][1:]
        # A frame ending right before the target has its next FRAME header there.
        assert start - 9 <= frame_ends[mark - 1] < end, fraction
        ends.add(frame_ends[mark - 1] - start)
    assert len(ends) > 8


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
