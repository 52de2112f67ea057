"""The test oracle: the three-way round trip and the comparison every pickling test relies on
(``test_oracle.py`` checks that it catches what it must).

Every round trip goes three ways, as ``docs/compatibility.md`` promises:

1. ``pickle.loads(ferropickle.dumps(obj))``   -- our streams are standard pickle streams;
2. ``ferropickle.loads(pickle.dumps(obj))``   -- we read what the stdlib (or cloudpickle) writes;
3. ``ferropickle.loads(ferropickle.dumps(obj))``.

Each result is compared with :func:`assert_same`, which checks values *and* types recursively, and
the identity structure: an object reached twice in the input (shared reference, cycle) must be one
object in the output, and distinct mutable objects must stay distinct.

Test modules in every subdirectory import it with ``from oracle import ...``: pytest puts
``tests/``, the directory of the root ``conftest.py``, on ``sys.path`` (its default "prepend"
import mode, which is also why no two test files may share a base name and no test directory
has an ``__init__.py``). The fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import array
import collections
import copyreg
import datetime
import decimal
import functools
import io
import math
import pickle
import pickletools
import sys
import textwrap
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import cloudpickle

import ferropickle

#: The protocols ferropickle writes natively.
NATIVE_PROTOCOLS = (4, 5)
#: Protocols ferropickle delegates to cloudpickle.
LEGACY_PROTOCOLS = (2, 3)


# --------------------------------------------------------------------------------------------
# Stream validity
# --------------------------------------------------------------------------------------------

_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


def check_stream(data: bytes) -> None:
    """Asserts that `data` is one well-formed pickle stream.

    * `pickletools.dis` can walk it (it checks opcodes, arguments, the stack and the marks, and
      that every memo fetch names a stored index);
    * every memo fetch refers to an index stored *earlier* (checked again here, independently of
      `pickletools`), with `MEMOIZE` numbering entries as the unpickler does;
    * frames are well formed: no opcode straddles the end of a frame, frames don't overlap, and
      the stream ends with `STOP` and nothing after it.
    """
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # `dis` prints huge ints in decimal
    try:
        pickletools.dis(data, out=io.StringIO())
    finally:
        sys.set_int_max_str_digits(limit)

    memo: set[int] = set()
    ops = list(pickletools.genops(data))
    assert ops, "empty stream"
    assert ops[-1][0].name == "STOP", "stream must end with STOP"
    frame_end: int | None = None
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "MEMOIZE":
            memo.add(len(memo))
        elif op.name in _PUT_OPS:
            memo.add(arg)
        elif op.name in _GET_OPS:
            assert arg in memo, f"memo fetch of {arg} at byte {pos} before it was stored"
        if frame_end is not None and pos >= frame_end:
            frame_end = None
        if op.name == "FRAME":
            assert frame_end is None, f"frame at byte {pos} starts inside another frame"
            frame_end = end + arg
            assert frame_end <= len(data), f"frame at byte {pos} runs past the end"
        elif frame_end is not None:
            assert end <= frame_end, f"{op.name} at byte {pos} straddles the end of a frame"
    assert ops[-1][2] == len(data) - 1, "bytes after STOP"


def assert_like_pickle(obj: Any, protocol: int = 5, **kwargs: Any) -> None:
    """`ferropickle.dumps(obj)` is the stream `pickle.dumps(obj)` writes, byte for byte: the same
    opcodes, the same memo entries (every one `pickle` makes, whatever an object's reference
    count) and the same frames."""
    ours = ferropickle.dumps(obj, protocol, **kwargs)
    assert ours == pickle.dumps(obj, protocol, **kwargs)


def unframed_payloads(data: bytes, min_size: int = 64 * 1024) -> list[str]:
    """Names of the opcodes whose argument is at least `min_size` long and that sit outside any
    frame (as `pickle` writes big payloads, so readers can take them without a copy)."""
    found = []
    frame_end = -1
    ops = list(pickletools.genops(data))
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "FRAME":
            frame_end = end + arg
        elif pos >= frame_end and isinstance(arg, (str, bytes, bytearray)) and len(arg) >= min_size:
            found.append(op.name)
    return found


# --------------------------------------------------------------------------------------------
# Structural comparison
# --------------------------------------------------------------------------------------------

_ATOMS = (type(None), bool, int, str, bytes)
_UNTRACKED = (type(None), bool, int, float, str)
_MUTABLE = (list, dict, set, bytearray)
_GLOBALS = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.ModuleType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
)


def _importable(obj: Any) -> bool:
    """Whether `obj` is reachable as ``sys.modules[obj.__module__].<qualname>``."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    qualname = getattr(obj, "__qualname__", None)
    if module is None or qualname is None or module.__name__ == "__main__":
        return False
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def same_class(ta: type, tb: type) -> bool:
    """`tb` is `ta`, or both are the same by-value (dynamic) class rebuilt elsewhere."""
    if ta is tb:
        return True
    return (
        not _importable(ta)
        and getattr(ta, "__qualname__", None) == getattr(tb, "__qualname__", None)
        and getattr(ta, "__module__", None) == getattr(tb, "__module__", None)
    )


def _float_same(a: float, b: float) -> bool:
    if math.isnan(a):
        return math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


_UNSET = object()


def _slot_state(obj: Any) -> dict[str, Any]:
    names = copyreg._slotnames(type(obj))  # type: ignore[attr-defined]
    values = {n: getattr(obj, n, _UNSET) for n in names if n not in ("__dict__", "__weakref__")}
    return {n: v for n, v in values.items() if v is not _UNSET}


def _has_own_eq(tp: type) -> bool:
    return tp.__eq__ is not object.__eq__


class _Comparer:
    def __init__(self, identity: bool) -> None:
        self.identity = identity
        # id(a) -> (a, b); id(b) -> (b, a). The objects are kept so ids can't be reused.
        self.seen: dict[int, tuple[Any, Any]] = {}
        self.rev: dict[int, tuple[Any, Any]] = {}

    def fail(self, path: str, msg: str) -> None:
        raise AssertionError(f"at {path}: {msg}")

    def compare(self, a: Any, b: Any, path: str) -> None:
        ta, tb = type(a), type(b)
        if not same_class(ta, tb):
            self.fail(path, f"type {tb!r} != expected {ta!r} (value {b!r:.200})")

        if ta in _ATOMS:
            if a != b:
                self.fail(path, f"{b!r:.200} != expected {a!r:.200}")
            return
        if ta is float:
            if not _float_same(a, b):
                self.fail(path, f"{b!r} != expected {a!r}")
            return

        if ta not in _UNTRACKED:
            prev = self.seen.get(id(a))
            if prev is not None:
                if self.identity and prev[1] is not b:
                    self.fail(path, "shared reference / cycle not preserved")
                return
            if self.identity and (isinstance(a, _MUTABLE) or _is_plain_instance(a)):
                other = self.rev.get(id(b))
                if other is not None and other[1] is not a:
                    self.fail(path, "two distinct objects came back as one")
            self.seen[id(a)] = (a, b)
            self.rev[id(b)] = (b, a)

        self._compare_value(a, b, path)

    def _compare_value(self, a: Any, b: Any, path: str) -> None:
        ta = type(a)
        np = sys.modules.get("numpy")
        pd = sys.modules.get("pandas")

        if pd is not None and isinstance(a, (pd.DataFrame, pd.Series, pd.Index)):
            if isinstance(a, pd.DataFrame):
                pd.testing.assert_frame_equal(a, b)
            elif isinstance(a, pd.Series):
                pd.testing.assert_series_equal(a, b)
            else:
                pd.testing.assert_index_equal(a, b)
            return
        if pd is not None and isinstance(a, pd.Categorical):
            pd.testing.assert_extension_array_equal(a, b)
            return
        if np is not None and isinstance(a, np.ndarray):
            self._compare_ndarray(np, a, b, path)
            return
        if np is not None and isinstance(a, np.generic):
            if a.dtype != b.dtype:
                self.fail(path, f"dtype {b.dtype} != expected {a.dtype}")
            if not (a == b or (a != a and b != b)):
                self.fail(path, f"{b!r} != expected {a!r}")
            return

        if isinstance(a, _GLOBALS):
            if a is not b and _importable(a):
                self.fail(path, f"{b!r} is not the importable {a!r}")
            return

        if isinstance(a, float):
            if not _float_same(float(a), float(b)):
                self.fail(path, f"{b!r} != expected {a!r}")
        elif isinstance(a, complex):
            if not (_float_same(a.real, b.real) and _float_same(a.imag, b.imag)):
                self.fail(path, f"{b!r} != expected {a!r}")
        elif isinstance(a, (int, str, bytes, bytearray)):
            if a != b:
                self.fail(path, f"{b!r:.200} != expected {a!r:.200}")
        elif isinstance(a, (list, tuple)):
            if len(a) != len(b):
                self.fail(path, f"length {len(b)} != expected {len(a)}")
            if len(a) > 64 and all(type(x) in _ATOMS for x in a):
                if [type(x) for x in a] != [type(x) for x in b] or a != b:
                    self.fail(path, "items differ")
            else:
                for i, (x, y) in enumerate(zip(a, b, strict=True)):
                    self.compare(x, y, f"{path}[{i}]")
        elif isinstance(a, dict):
            if len(a) != len(b):
                self.fail(path, f"length {len(b)} != expected {len(a)}")
            for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items(), strict=True)):
                self.compare(ka, kb, f"{path}.keys()[{i}]")
                self.compare(va, vb, f"{path}[{ka!r:.60}]")
            if isinstance(a, collections.defaultdict):
                self.compare(a.default_factory, b.default_factory, f"{path}.default_factory")
        elif isinstance(a, (set, frozenset)):
            if len(a) != len(b):
                self.fail(path, f"length {len(b)} != expected {len(a)}")
            by_value = {y: y for y in b}
            for x in a:
                if x not in by_value:
                    self.fail(path, f"item {x!r:.100} missing")
                self.compare(x, by_value[x], f"{path}{{{x!r:.60}}}")
        elif isinstance(a, collections.deque):
            if a.maxlen != b.maxlen:
                self.fail(path, f"maxlen {b.maxlen} != expected {a.maxlen}")
            self.compare(list(a), list(b), path)
        elif isinstance(a, decimal.Decimal):
            if a.as_tuple() != b.as_tuple():
                self.fail(path, f"{b!r} != expected {a!r}")
        elif isinstance(a, array.array):
            if a.typecode != b.typecode or a != b:
                self.fail(path, f"{b!r:.200} != expected {a!r:.200}")
        elif isinstance(a, (datetime.datetime, datetime.time, datetime.timezone)):
            # `==` ignores the time zone (it compares instants) and `fold`; `repr` shows both.
            if a != b or repr(a) != repr(b):
                self.fail(path, f"{b!r} != expected {a!r}")
        elif isinstance(a, BaseException):
            self.compare(a.args, b.args, f"{path}.args")
        elif isinstance(a, functools.partial):
            self.compare(a.func, b.func, f"{path}.func")
            self.compare(a.args, b.args, f"{path}.args")
            self.compare(a.keywords, b.keywords, f"{path}.keywords")
        elif isinstance(a, types.MethodType):
            self.compare(a.__func__, b.__func__, f"{path}.__func__")
            self.compare(a.__self__, b.__self__, f"{path}.__self__")
        elif _has_own_eq(type(a)):
            if not a == b:
                self.fail(path, f"{b!r:.200} != expected {a!r:.200}")
            return
        elif not (hasattr(a, "__dict__") or _slot_state(a)):
            # An opaque object without state or equality (operator.attrgetter, ...): compare
            # what it reduces to.
            try:
                ra, rb = a.__reduce_ex__(4), b.__reduce_ex__(4)
            except Exception:
                return
            self.compare(ra, rb, f"{path}.__reduce_ex__(4)")
            return

        # Instance state: attributes and slots, for plain objects and builtin subclasses alike.
        if hasattr(a, "__dict__") and not isinstance(a, _GLOBALS):
            self.compare(_state_dict(a), _state_dict(b), f"{path}.__dict__")
        slots_a = _slot_state(a) if ta.__module__ != "builtins" else {}
        if slots_a:
            self.compare(slots_a, _slot_state(b), f"{path}.<slots>")

    def _compare_ndarray(self, np: Any, a: Any, b: Any, path: str) -> None:
        if a.dtype != b.dtype or a.shape != b.shape:
            self.fail(path, f"{b.dtype}{b.shape} != expected {a.dtype}{a.shape}")
        if a.flags.f_contiguous and not a.flags.c_contiguous and not b.flags.f_contiguous:
            self.fail(path, "Fortran order lost")
        if a.dtype.hasobject:
            self.compare(a.tolist(), b.tolist(), f"{path}.tolist()")
        elif not np.array_equal(a, b, equal_nan=a.dtype.kind in "fcmM"):
            self.fail(path, f"arrays differ: {b!r:.200} != expected {a!r:.200}")


def _state_dict(obj: Any) -> dict[str, Any]:
    d = obj.__dict__
    return d if type(d) is dict else dict(d)


def _is_plain_instance(obj: Any) -> bool:
    """An instance of a Python class (not a function, class or module) with a `__dict__`."""
    return hasattr(obj, "__dict__") and not isinstance(
        obj, (*_GLOBALS, types.MethodType, functools.partial)
    )


def assert_same(expected: Any, actual: Any, *, identity: bool = True) -> None:
    """Asserts `actual` is an equal copy of `expected`: same values and types all the way down,
    and (with `identity`) the same pattern of shared references and cycles."""
    _Comparer(identity).compare(expected, actual, "obj")


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


class Results(NamedTuple):
    """What each direction of a round trip gave back."""

    ours_to_pickle: Any
    pickle_to_ours: Any
    ours_to_ours: Any


def reference_dumps(obj: Any, protocol: int, dumper: str | None = None) -> bytes:
    """The stream a stock pickler writes for `obj`: `pickle` when it can, else cloudpickle
    (for objects `pickle` refuses, such as lambdas and locally defined classes)."""
    if dumper == "cloudpickle":
        return cloudpickle.dumps(obj, protocol)
    if dumper == "pickle":
        return pickle.dumps(obj, protocol)
    try:
        return pickle.dumps(obj, protocol)
    except (pickle.PicklingError, TypeError, AttributeError):
        return cloudpickle.dumps(obj, protocol)


def roundtrip(
    obj: Any,
    *,
    protocol: int = 5,
    check: Callable[[Any, Any], None] | None = None,
    identity: bool = True,
    dumper: str | None = None,
) -> Results:
    """Round-trips `obj` the three ways and checks each result against `obj`.

    `check(expected, actual)` replaces :func:`assert_same` (e.g. to call a rebuilt function).
    `dumper` forces the reference pickler for direction 2 (``"pickle"`` or ``"cloudpickle"``).
    Returns the three results for further checks.
    """
    if check is None:
        check = functools.partial(assert_same, identity=identity)

    def checked(direction: str, load: Callable[[], Any]) -> Any:
        result = load()
        try:
            check(obj, result)
        except AssertionError as e:
            raise AssertionError(f"[{direction}, protocol {protocol}] {e}") from e
        return result

    ours = ferropickle.dumps(obj, protocol)
    check_stream(ours)
    r1 = checked("ferropickle.dumps -> pickle.loads", lambda: pickle.loads(ours))
    theirs = reference_dumps(obj, protocol, dumper)
    r2 = checked("pickle.dumps -> ferropickle.loads", lambda: ferropickle.loads(theirs))
    r3 = checked("ferropickle.dumps -> ferropickle.loads", lambda: ferropickle.loads(ours))
    return Results(r1, r2, r3)


def ours_to_pickle(obj: Any, *, protocol: int = 5, identity: bool = True) -> Any:
    """Only direction 1 (for checks that don't involve our reader)."""
    data = ferropickle.dumps(obj, protocol)
    check_stream(data)
    result = pickle.loads(data)
    assert_same(obj, result, identity=identity)
    return result


def script(source: str) -> dict[str, Any]:
    """Runs `source` as the user's script would run, so its functions go by value."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<user script>", "exec"), ns)
    return ns
