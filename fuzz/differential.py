"""Differential check of ``ferropickle.loads`` against ``pickle.loads`` on one input.

Both must agree: the same result (compared by ``repr`` of a safe rebuild), or an exception of
the same class. Inputs that could name a global (``GLOBAL``, ``STACK_GLOBAL``, ``INST``,
``EXT1``-``EXT4``, persistent ids) are skipped before either side reads them: without globals a
stream can only build plain data, so neither side runs anything but the unpickler (the
"restricted find_class" of this harness is: nothing can be found).
"""

from __future__ import annotations

import contextlib
import pickle
import pickletools
import re
import sys

import ferropickle

#: An object's address in a repr ("<... at 0x7f...>"), which differs between any two objects.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

#: Opcodes that reach outside the stream: a global by name, or a persistent id.
_OUTSIDE = {"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}

#: C pickle grows its memo list to the largest index a PUT names, zero-filled: an index past
#: this would make the reference side allocate gigabytes (ours keeps a sparse memo).
_MAX_C_MEMO_INDEX = 1_000_000


def scan(data: bytes) -> tuple[bool, bool]:
    """(reaches outside the stream, hostile to C pickle's memory) for the opcodes the
    unpickler could execute (it stops where `genops` stops)."""
    outside = hostile = False
    end = 0
    try:
        for op, arg, pos in pickletools.genops(data):
            end = pos
            if op.name in _OUTSIDE:
                outside = True
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > _MAX_C_MEMO_INDEX:
                hostile = True
    except Exception:
        # genops gave up at `end`; the unpickler may read further (it accepts a few text
        # arguments genops refuses), so judge the rest by its bytes, conservatively.
        rest = data[end:]
        outside = outside or any(b in rest for b in b"ci\x93\x82\x83\x84PQ")
        hostile = hostile or any(b in rest for b in b"pqr")
    return outside, hostile


def outcome(loads, data: bytes) -> tuple[str, str]:
    """("value", a comparable description) or ("exception", its class name); an allocator's
    refusal of a claimed size is ("exception", "allocation")."""
    try:
        value = loads(data)
    except RecursionError:
        return ("exception", "RecursionError")
    except MemoryError:
        return ("exception", "allocation")
    except OverflowError as e:
        return ("exception", "allocation" if "too large" in str(e) else "OverflowError")
    except Exception as e:  # the class is what is compared
        ours = type(e) is ferropickle.UnpicklingError
        return ("exception", "UnpicklingError" if ours else type(e).__name__)
    if isinstance(value, memoryview):
        # Its repr is its address; what it holds is what must agree.
        return ("value", f"memoryview({value.tobytes()!r}, readonly={value.readonly})")
    if _expanded_size(value) > _MAX_REPR_NODES:
        # A few hundred bytes of DUP and TUPLE2 make a DAG whose repr is gigabytes.
        return ("value", _shared_description(value))
    try:
        return ("value", _canonical_repr(value, set()))
    except Exception:  # e.g. a structure nested deeper than the recursion limit
        return ("value", type(value).__name__)


def _canonical_repr(value: object, open_ids: set[int]) -> str:
    """``repr`` with the items of sets in sorted order: a set's order follows its items'
    hashes, and a NaN's hash is its address (3.10+), so equal sets of two unpicklers may
    iterate differently. A container met again inside itself is ``...``, as repr writes it."""
    if not isinstance(value, _CONTAINERS):
        return _ADDRESS.sub(" at 0x?", repr(value))
    if id(value) in open_ids:
        return "..."
    open_ids.add(id(value))
    try:
        if isinstance(value, dict):
            items = [
                f"{_canonical_repr(k, open_ids)}: {_canonical_repr(v, open_ids)}"
                for k, v in value.items()
            ]
        else:
            items = [_canonical_repr(item, open_ids) for item in value]
            if isinstance(value, (set, frozenset)):
                items.sort()
    finally:
        open_ids.discard(id(value))
    return f"{type(value).__name__}({', '.join(items)})"


#: The containers a stream without globals can build, whose items a description walks.
_CONTAINERS = (list, tuple, dict, set, frozenset)

#: Closes a container in `_shared_description`.
_END = object()

#: Above this many nodes written out in full, a value is compared by `_shared_description`.
_MAX_REPR_NODES = 100_000


def _children(value: object) -> list[object]:
    if isinstance(value, dict):
        return [x for item in value.items() for x in item]
    return list(value) if isinstance(value, _CONTAINERS) else []


def _expanded_size(value: object) -> int:
    """How many nodes ``repr`` would write, counted once per shared object (a DAG), capped
    just above `_MAX_REPR_NODES`; a cycle counts once, as repr writes ``[...]``."""
    sizes: dict[int, int] = {}
    stack: list[tuple[object, bool]] = [(value, False)]
    while stack:
        obj, done = stack.pop()
        key = id(obj)
        if done:
            total = 1 + sum(sizes.get(id(c), 1) for c in _children(obj))
            sizes[key] = min(total, _MAX_REPR_NODES + 1)
        elif key not in sizes:
            sizes[key] = 1  # while open: a cycle back to it counts once
            stack.append((obj, True))
            stack.extend((c, False) for c in _children(obj) if id(c) not in sizes)
    return sizes[id(value)]


def _shared_description(value: object) -> str:
    """A description in linear size: each container once, by type and its items, later
    occurrences as a back reference to its number; other values by repr."""
    numbers: dict[int, int] = {}
    out: list[str] = []
    stack: list[object] = [value]
    while stack:
        obj = stack.pop()
        if obj is _END:
            out.append(")")
            continue
        if not isinstance(obj, _CONTAINERS):
            out.append(_ADDRESS.sub(" at 0x?", repr(obj)))
            continue
        if id(obj) in numbers:
            out.append(f"@{numbers[id(obj)]}")
            continue
        numbers[id(obj)] = len(numbers)
        out.append(f"{type(obj).__name__}(")
        stack.append(_END)
        children = _children(obj)
        if isinstance(obj, (set, frozenset)):
            # In an order that doesn't follow hashes (see `_canonical_repr`); items that are
            # containers by type name only, as describing them here would not be linear.
            children.sort(
                key=lambda c: type(c).__name__ + ("" if isinstance(c, _CONTAINERS) else repr(c))
            )
        stack.extend(reversed(children))
    return " ".join(out)


@contextlib.contextmanager
def printed_errors():
    """The exceptions C code reports with ``PyErr_Print`` (through ``sys.excepthook``) instead
    of raising them, e.g. a bytearray freed while a buffer of it is still exported."""
    printed: list[str] = []
    hook = sys.excepthook
    sys.excepthook = lambda kind, value, tb: printed.append(f"{kind.__name__}: {value}")
    try:
        yield printed
    finally:
        sys.excepthook = hook


def check(data: bytes) -> None:
    """Raises AssertionError when the two unpicklers disagree on `data`, or when loading it
    makes ours report an error pickle's doesn't."""
    outside, hostile = scan(data)
    if outside:
        return
    if hostile:
        # Only ours: whatever it gives, it must give it without crashing or blowing up.
        outcome(ferropickle.loads, data)
        return
    with printed_errors() as their_errors:
        theirs = outcome(pickle.loads, data)
    if theirs == ("exception", "allocation"):
        # C pickle allocates what a length or memo index claims before reading it, and the
        # allocator refused (MemoryError, or "... too large" OverflowError); we check the claim
        # against the input first (bounded memory), so report truncation, or for a sparse memo
        # index, just use it. The deliberate difference (see docs/compatibility.md).
        return
    with printed_errors() as our_errors:
        ours = outcome(ferropickle.loads, data)
    if theirs != ours:
        raise AssertionError(f"{data!r}: pickle {theirs}, ferropickle {ours}")
    if [e for e in our_errors if e not in their_errors]:
        raise AssertionError(f"{data!r}: printed errors: pickle {their_errors}, ours {our_errors}")
