"""Deep comparison of two unpickled object graphs: same values, same types, same sharing."""

import copyreg
import math


def _is_shared_kind(obj):
    """Objects whose identity pickle preserves and callers can observe (mutables, instances)."""
    return isinstance(obj, list | dict | set | bytearray) or hasattr(obj, "__dict__")


def _slot_state(obj):
    return {
        name: getattr(obj, name)
        for name in copyreg._slotnames(type(obj))
        if hasattr(obj, name) and name not in ("__dict__", "__weakref__")
    }


def assert_same(expected, got):
    """Walk both graphs in lockstep (iteratively, cycles allowed).

    Checks exact types, equal scalar values (NaN equal to NaN), equal container contents,
    equal instance state, and that whenever `expected` reuses a mutable object, `got` reuses
    the corresponding one at the same places (and vice versa).
    """
    seen = {}
    seen_got = {}
    todo = [(expected, got, "obj")]
    while todo:
        a, b, path = todo.pop()
        assert type(a) is type(b), f"{path}: {type(a)!r} != {type(b)!r}"
        if _is_shared_kind(a):
            if id(a) in seen:
                assert seen[id(a)] is b, f"{path}: sharing differs"
                continue
            assert id(b) not in seen_got, f"{path}: extra sharing in result"
            seen[id(a)] = b
            seen_got[id(b)] = a
        if type(a).__module__ == "numpy" and type(a).__name__ == "ndarray":
            import numpy as np

            assert a.dtype == b.dtype and a.shape == b.shape, path
            assert a.flags.writeable == b.flags.writeable, path
            assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), path
        elif type(a).__module__.startswith("pandas"):
            import pandas as pd

            pd.testing.assert_frame_equal(a, b)
        elif isinstance(a, float):
            assert (math.isnan(a) and math.isnan(b)) or a == b, f"{path}: {a!r} != {b!r}"
        elif isinstance(a, list | tuple):
            assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
            todo.extend((x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
        elif isinstance(a, dict):
            assert list(a) == list(b) or a.keys() == b.keys(), f"{path}: keys differ"
            todo.extend((a[k], b[k], f"{path}[{k!r}]") for k in a)
        elif isinstance(a, set | frozenset):
            assert a == b, f"{path}: {a!r} != {b!r}"
        elif callable(a) and hasattr(a, "__code__"):
            assert a.__code__.co_code == b.__code__.co_code, path
        elif isinstance(a, type):
            assert a.__qualname__ == b.__qualname__, path
        elif hasattr(a, "__dict__") and type(a).__eq__ is object.__eq__:
            todo.append((vars(a), vars(b), f"{path}.__dict__"))
            todo.append((_slot_state(a), _slot_state(b), f"{path}.<slots>"))
        elif type(a).__eq__ is object.__eq__ and hasattr(type(a), "__slots__"):
            todo.append((_slot_state(a), _slot_state(b), f"{path}.<slots>"))
        else:
            assert a == b, f"{path}: {a!r} != {b!r}"
            if hasattr(a, "__dict__"):
                todo.append((vars(a), vars(b), f"{path}.__dict__"))
