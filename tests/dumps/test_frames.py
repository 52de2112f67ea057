"""Frames close where `pickle` closes them, wherever the 64 KiB mark falls.

The C pickler ends a frame at the start of the first `save()` once the open frame holds 64 KiB
(`_Pickler_OpcodeBoundary`). That includes every object a reduction builds for the stream alone:
cloudpickle's `_make_function` argument tuple, its `None`s, the closure's empty cells and their
`()` arguments, the function's state tuple, attribute dict, slot dict, submodule list and
globals dict, a code object's argument tuple and its copied name tuples, a path's argument
tuple, a partial's state tuple, the argument tuple of `NEWOBJ`, a dask node's state, a reducer's
shared argument tuple fetched from the memo. So the stream must be `cloudpickle.dumps`'s (or
`pickle.dumps`'s) byte for byte whichever of those objects the mark falls on.

Each target is written after fillers sized so that the mark (the first one at 64 KiB, or the
second one, ~128 KiB into the stream) falls exactly at each of the target's opcodes in turn,
and after a fresh `cache_clear()` three times: walked, recorded and copied (`code_cache.rs`).
"""

from __future__ import annotations

import collections
import functools
import pathlib
import pickle
import pickletools
import textwrap
from typing import Any

import cloudpickle
import pytest

import ferropickle

PROTOCOLS = [4, 5]
MARK = 64 * 1024

SCRIPT = """
import math
import collections.abc

TABLE = {i: str(i) for i in range(40)}
LIMIT = 10

def helper(value):
    return value + LIMIT

class Box:
    size = 3

    def __init__(self, n):
        self.n = n

    def get(self):
        return self.n + self.size + LIMIT

def process(path, scale=2.5, kind=type(None), *, label="process", flag=True) -> str:
    "Processes a path."
    inner = lambda item: (item, "inner constant", math.pi, TABLE[1])
    return helper(len(str(path))) * scale, label, inner(1), Box, collections.abc.Sized, kind

process.version = (1, 2, 3, 4)
process.tags = {"owner": "me", "retries": [1, 2]}

def make_closure(a, b, c, d):
    def combine(x):
        return (x, a, b, c, d, LIMIT)
    return combine

def make_fib():
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)
    return fib

square = lambda x: x * x
"""


def script() -> dict[str, Any]:
    """Runs SCRIPT as a user's `__main__` runs, so its functions and classes go by value."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(SCRIPT), "<user script>", "exec"), ns)
    return ns


class FourArgs:
    """Reduced through `copyreg.__newobj__` with four arguments: `MARK ... TUPLE NEWOBJ`."""

    def __init__(self, a, b, c, d):
        self.args = (a, b, c, d)

    def __getnewargs__(self):
        return self.args

    def __eq__(self, other):
        return type(other) is FourArgs and other.args == self.args


def shared_args_error() -> list[Any]:
    """A reducer returning a tuple the stream already holds: its `save()` is a memo fetch."""
    args = ("shared", "args", "of", "an", "error")
    error = ValueError()
    error.args = args
    return [args, error]


def by_value_targets() -> dict[str, Any]:
    ns = script()
    return {
        "function": ns["process"],
        "closure": ns["make_closure"](1, "b", [3], {"d": 4}),
        "recursive closure": ns["make_fib"](),
        "lambda": ns["square"],
        "class": ns["Box"],
        "instance": ns["Box"](7),
        "partial of by-value function": functools.partial(
            ns["process"], pathlib.PurePosixPath("/d/e/f/g"), 1, 2, label="x"
        ),
    }


def pickle_targets() -> dict[str, Any]:
    targets: dict[str, Any] = {
        "path": pathlib.PurePosixPath("/data/year/month/day/part-0.parquet"),
        "partial": functools.partial(max, 1, 2, 3, 4, key=abs),
        "newobj": FourArgs(1, "two", 3.0, [4]),
        "shared reduce args": shared_args_error(),
        "bytearray": bytearray(b"abc"),
        "ordered dict": collections.OrderedDict(a=1, b=[2], c=(3, 4, 5, 6)),
    }
    ts = pytest.importorskip("dask._task_spec")
    targets["task"] = ts.Task(
        "process-0",
        functools.partial(pathlib.PurePosixPath, "/a/b/c/d"),
        ts.TaskRef("a"),
        ts.List(ts.TaskRef("b"), 1, 2, 3),
        ts.Dict({"p": ts.TaskRef("dep")}),
        extra=ts.DataNode("d", {"x": 1}),
    )
    return targets


def fillers(pad: int, second_mark: bool) -> list[Any]:
    """Bytes and str of `pad` bytes in all (each below 64 KiB, so each sits in a frame); for the
    second mark, after two that close the first frame at a fixed place."""
    half = pad // 2
    items: list[Any] = [b"x" * half, "y" * (pad - half)]
    if second_mark:
        items = [b"a" * (MARK // 2), "b" * (MARK // 2), *items]
    return items


def target_opcodes(stream: bytes, n_fillers: int) -> tuple[int, list[int]]:
    """Where the target starts in its open frame's payload, and its opcodes' offsets from there,
    read from a stream of `[*fillers, target]` whose target sits inside one frame."""
    ops = list(pickletools.genops(stream))
    payload_start = 0
    content = []
    for op, _, pos in ops:
        if op.name == "FRAME":
            payload_start = pos + 9
        else:
            content.append((pos, payload_start))
    # EMPTY_LIST MEMOIZE MARK, then each filler and its MEMOIZE; the list closes with
    # APPENDS and the stream with STOP.
    first = 3 + 2 * n_fillers
    start, frame = content[first]
    offsets = [pos - start for pos, _ in content[first:-2]]
    return start - frame, offsets


def pads_across_mark(target: Any, protocol: int, reference, second_mark: bool) -> list[int]:
    """The pads that put the mark exactly at each of the target's opcodes."""
    base = 2 * 1024
    n_fillers = len(fillers(base, second_mark))
    stream = reference([*fillers(base, second_mark), target], protocol)
    at, offsets = target_opcodes(stream, n_fillers)
    return [base + MARK - at - offset for offset in offsets]


def check_across_mark(target: Any, protocol: int, reference, second_mark: bool) -> None:
    mismatches = []
    for pad in pads_across_mark(target, protocol, reference, second_mark):
        obj = [*fillers(pad, second_mark), target]
        expected = reference(obj, protocol)
        ferropickle.cache_clear()
        # Walked, recorded, then copied from the code-segment cache.
        for attempt in range(3):
            if ferropickle.dumps(obj, protocol) != expected:
                mismatches.append((pad, attempt))
    assert not mismatches


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: f"proto{p}")
@pytest.mark.parametrize("second_mark", [False, True], ids=["64KiB", "128KiB"])
@pytest.mark.parametrize("name", list(by_value_targets()))
def test_by_value_parts_frame_as_cloudpickle(name, second_mark, protocol):
    target = by_value_targets()[name]
    check_across_mark(target, protocol, cloudpickle.dumps, second_mark)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: f"proto{p}")
@pytest.mark.parametrize("second_mark", [False, True], ids=["64KiB", "128KiB"])
@pytest.mark.parametrize(
    "name", ["path", "partial", "newobj", "shared reduce args", "bytearray", "ordered dict", "task"]
)
def test_pickle_parts_frame_as_pickle(name, second_mark, protocol):
    target = pickle_targets()[name]
    check_across_mark(target, protocol, pickle.dumps, second_mark)


def test_the_sweep_puts_the_mark_on_every_opcode_of_the_target():
    """Each pad puts the 64 KiB mark exactly where one of the target's opcodes starts, a
    different one for each pad: the first frame either ends right there or holds an opcode
    starting there."""
    target = by_value_targets()["function"]
    pads = pads_across_mark(target, 5, cloudpickle.dumps, False)
    assert len(pads) > 50
    assert len(set(pads)) == len(pads)
    for pad in pads:
        stream = cloudpickle.dumps([*fillers(pad, False), target], 5)
        ops = list(pickletools.genops(stream))
        assert ops[1][0].name == "FRAME"
        payload_start = ops[1][2] + 9
        starts = {pos - payload_start for op, _, pos in ops[2:] if pos - payload_start <= MARK}
        assert ops[1][1] == MARK or MARK in starts, pad
