"""A code object's encoded arguments, kept between calls, leave every stream as cloudpickle's.

``dumps`` keeps the opcodes that write a by-value function's code object (from the second time
it meets that code object) and copies them into later streams. Copied or walked, the stream
must be the one ``cloudpickle.dumps`` writes, byte for byte:

* the memo is pickle's: a name, constant, bytecode or nested code object already written
  earlier in the stream is a memo fetch inside the code, and what the code wrote is fetched by
  what comes after it (indices past 255 included);
* frames close where the walk closes them, also when the code's opcodes would straddle 64 KiB;
* a code object freed and a new one at the same address never share what was kept;
* ``cache_info()["code_segments"]`` counts the code objects kept and ``cache_clear()`` forgets
  them; a code object's entry goes when it is freed.

Every object is pickled several times (the first ``dumps`` of a code object walks it, the
second records and copies, the later ones copy) and checked the three ways.
"""

from __future__ import annotations

import gc
import pickle
import types
from typing import Any

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import check_stream, roundtrip, script

import ferropickle

PROTOCOLS = [4, 5]


SOURCE = """
    import math
    LIMIT = 10
    NAMES = ("alpha", "beta")

    def helper(value):
        return value + LIMIT

    def process(path, scale=2.5, *, label="process"):
        inner = lambda item: (item, "inner constant", math.pi)
        def nested(k):
            return k * scale
        text = "a constant string" + str(path)
        data = b"some bytes"
        big = 123456789012345678901234567890
        return inner(nested(helper(len(text)))), data, big, frozenset({1, 2}), NAMES, label
"""


def same_as_cloudpickle(obj: Any, protocol: int, times: int = 4) -> bytes:
    """Pickles `obj` `times` times (walked, recorded, copied): every stream is cloudpickle's."""
    expected = cloudpickle.dumps(obj, protocol)
    for i in range(times):
        ours = ferropickle.dumps(obj, protocol)
        assert ours == expected, f"dumps #{i + 1} differs from cloudpickle.dumps"
    check_stream(ours)
    return ours


def call_check(expected: Any, actual: Any) -> None:
    """Both are the same structure of functions and values: compared by calling each function."""
    if isinstance(expected, types.FunctionType):
        assert expected("p") == actual("p")
        assert expected.__code__ == actual.__code__
    elif isinstance(expected, (list, tuple)):
        assert type(expected) is type(actual) and len(expected) == len(actual)
        for e, a in zip(expected, actual, strict=True):
            call_check(e, a)
    else:
        assert expected == actual


def test_the_code_is_kept_from_the_second_dumps_and_every_stream_stays_cloudpickles(protocol):
    ns = script(SOURCE)
    process = ns["process"]
    # The first by-value dumps of the process checks the native writer against cloudpickle
    # (with sample functions of its own): done before counting.
    ferropickle.dumps(script("def warm_up(): pass")["warm_up"])
    ferropickle.cache_clear()
    for i in range(4):
        assert ferropickle.dumps(process, protocol) == cloudpickle.dumps(process, protocol)
        kept = ferropickle.cache_info()["code_segments"]
        # The first dumps only notes the code object; the second keeps it.
        assert (kept >= 1) == (i >= 1), (i, kept)
    roundtrip(process, protocol=protocol, check=call_check)


def test_the_same_function_twice_and_two_functions_on_one_code_object(protocol):
    ns = script(SOURCE)
    process = ns["process"]
    twin = types.FunctionType(process.__code__, process.__globals__, "twin", (1.0,))
    twin.__kwdefaults__ = {"label": "twin"}
    obj = [process, twin, process, twin]
    same_as_cloudpickle(obj, protocol)
    same_as_cloudpickle(process, protocol)
    same_as_cloudpickle([twin, process], protocol)
    loaded = pickle.loads(ferropickle.dumps(obj, protocol))
    assert loaded[0] is loaded[2] and loaded[1] is loaded[3]
    assert loaded[0].__code__ is loaded[1].__code__
    roundtrip(obj, protocol=protocol, check=call_check)


def code_parts(code: types.CodeType) -> dict[str, Any]:
    """Objects `_code_reduce` writes as they are (not copies): each one, on its own."""
    parts = {
        "co_code": code.co_code,
        "co_consts": code.co_consts,
        "co_linetable": code.co_linetable,
        "co_filename": code.co_filename,
    }
    parts.update({f"co_consts[{i}]": c for i, c in enumerate(code.co_consts)})
    parts.update({f"co_names[{i}]": n for i, n in enumerate(code.co_names)})
    parts.update({f"co_varnames[{i}]": n for i, n in enumerate(code.co_varnames)})
    if hasattr(code, "co_qualname"):
        parts["co_qualname"] = code.co_qualname
        parts["co_exceptiontable"] = code.co_exceptiontable
    return parts


@pytest.mark.parametrize("where", ["before", "after", "both"])
def test_an_object_of_the_code_elsewhere_in_the_stream_is_one_memo_entry(protocol, where):
    ns = script(SOURCE)
    process = ns["process"]
    same_as_cloudpickle(process, protocol)  # kept from here on
    parts = code_parts(process.__code__)
    nested = [c for c in process.__code__.co_consts if isinstance(c, types.CodeType)]
    assert nested, "the sample has nested code objects"
    for n in nested:
        parts.update({f"nested {n.co_name} {k}": v for k, v in code_parts(n).items()})
    for name, part in parts.items():
        if where == "before":
            obj = [part, process]
        elif where == "after":
            obj = [process, part]
        else:
            obj = [part, process, part]
        ours = ferropickle.dumps(obj, protocol)
        assert ours == cloudpickle.dumps(obj, protocol), name
        loaded = pickle.loads(ours)
        # Shared by identity after loading, as in the stream cloudpickle writes.
        again = pickle.loads(cloudpickle.dumps(obj, protocol))
        assert (loaded[0] is loaded[-1]) == (again[0] is again[-1]), name


def test_a_name_shared_with_an_earlier_object_and_a_global_read_by_the_function(protocol):
    ns = script(SOURCE)
    process = ns["process"]
    same_as_cloudpickle(process, protocol)
    # The same str objects as the code's names: the function's globals dict has them as keys.
    keys = {name: 1 for name in process.__code__.co_names}
    same_as_cloudpickle([keys, process], protocol)
    same_as_cloudpickle([process, keys], protocol)
    same_as_cloudpickle([process.__code__.co_names, process, process.__code__], protocol)
    roundtrip([keys, process], protocol=protocol, check=call_check)


def test_memo_indices_past_255_before_the_code(protocol):
    ns = script(SOURCE)
    process = ns["process"]
    same_as_cloudpickle(process, protocol)
    for n in (200, 250, 254, 255, 256, 300, 70000):
        filler = [f"s{i}" for i in range(n)]
        same_as_cloudpickle([filler, process, process.__code__.co_names], protocol, times=2)


def test_frames_close_where_the_walk_closes_them_around_the_code(protocol):
    """The copied opcodes are framed exactly as the walked ones, wherever the frame's 64 KiB
    mark falls (before, inside or after the code's opcodes, or in the function's state)."""
    ns = script(SOURCE)
    process = ns["process"]
    size = len(ferropickle.dumps(process, protocol))
    for pad in range(64 * 1024 - size - 100, 64 * 1024 + 50, 7):
        obj = [b"x" * (pad // 2), "y" * (pad - pad // 2), process]
        ferropickle.cache_clear()
        walked = ferropickle.dumps(obj, protocol)  # the code object is only noted
        assert ferropickle.cache_info()["code_segments"] == 0
        ferropickle.dumps(obj, protocol)
        assert ferropickle.cache_info()["code_segments"] >= 1
        copied = ferropickle.dumps(obj, protocol)
        assert copied == walked, pad
        check_stream(copied)
        assert pickle.loads(copied)[2]("p") == process("p")


def versioned_code(i: int) -> types.CodeType:
    """A new code object of the same size each time (pickled on its own, as cloudpickle pickles
    a code object: a by-value function's code is also remembered by its equality elsewhere):
    its string and bytes constants carry ``i``, wherever this Python put them in ``co_consts``
    (3.14 keeps no docstring slot, and loads small ints without a constant)."""
    versions = {"version 0000": f"version {i:04d}", b"0000": b"%04d" % i}
    consts = tuple(
        versions.get(c, c) if isinstance(c, (str, bytes)) else c for c in BASE_CODE.co_consts
    )
    return BASE_CODE.replace(co_consts=consts)


BASE_CODE = script("def f(x):\n    return (x, 'version 0000', 0, b'0000')\n")["f"].__code__


def test_a_freed_code_object_and_a_new_one_at_its_address(protocol):
    reused = 0
    # The only reference to the code object in use, so that dropping it frees it.
    held = {0: versioned_code(0)}
    for i in range(1, 100):
        ((version, code),) = held.items()
        same_as_cloudpickle(code, protocol, times=3)
        f = types.FunctionType(pickle.loads(ferropickle.dumps(code, protocol)), {})
        assert f(1) == (1, f"version {version:04d}", 0, b"%04d" % version)
        address = id(code)
        del code, f
        held.clear()
        # A few new code objects: one of them often takes the freed one's memory.
        candidates = {j: versioned_code(j) for j in range(i * 8, i * 8 + 8)}
        at_address = [j for j, c in candidates.items() if id(c) == address]
        reused += bool(at_address)
        version = at_address[0] if at_address else i * 8
        held[version] = candidates[version]
        del candidates
    if not reused:
        pytest.skip("no code object was allocated at a freed one's address in this run")


def test_an_entry_goes_with_its_code_object_and_cache_clear_forgets_them(protocol):
    code = versioned_code(1)
    same_as_cloudpickle(code, protocol)
    assert ferropickle.cache_info()["code_segments"] == 1
    del code
    gc.collect()
    assert ferropickle.cache_info()["code_segments"] == 0
    ns = script(SOURCE)
    same_as_cloudpickle(ns["process"], protocol)
    assert ferropickle.cache_info()["code_segments"] >= 1
    ferropickle.cache_clear()
    assert ferropickle.cache_info()["code_segments"] == 0
    same_as_cloudpickle(ns["process"], protocol)


def test_code_with_constants_that_are_walked_every_time(protocol):
    ns = script(
        """
        def f(a):
            return a[..., 0], 1j, (1, 2.5, None, True, ...)
        """
    )
    same_as_cloudpickle(ns["f"], protocol)
    same_as_cloudpickle([ns["f"].__code__.co_consts, ns["f"]], protocol)
    roundtrip(ns["f"], protocol=protocol, check=lambda e, a: e.__code__ == a.__code__)


def test_protocols_4_and_5_alternate_on_one_code_object():
    ns = script(SOURCE)
    process = ns["process"]
    for _ in range(3):
        for protocol in (5, 4, 5):
            assert ferropickle.dumps(process, protocol) == cloudpickle.dumps(process, protocol)


NS = script(SOURCE)
PROCESS = NS["process"]
TWIN = types.FunctionType(PROCESS.__code__, PROCESS.__globals__, "twin")
POOL = [
    PROCESS,
    TWIN,
    NS["helper"],
    PROCESS.__code__,
    *code_parts(PROCESS.__code__).values(),
    *code_parts(NS["helper"].__code__).values(),
    "a constant string",
    "alpha",
]


@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=8),
    filler=st.integers(0, 300),
    protocol=st.sampled_from(PROTOCOLS),
)
def test_functions_and_parts_of_their_code_in_any_order(picks, filler, protocol):
    obj = [[f"f{i}" for i in range(filler)], *(POOL[i] for i in picks)]
    expected = cloudpickle.dumps(obj, protocol)
    for _ in range(3):
        assert ferropickle.dumps(obj, protocol) == expected
